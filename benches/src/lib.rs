//! The one seeded workload generator every bench uses.
//!
//! A workload is a database's genesis plus `changes` signed changes from
//! `authors` authors over rows of 5-20 fields, with concurrent writes to the
//! same fields, deletes and counter increments. Concurrency is realistic:
//! before each commit an author has seen every change older than a random
//! lag (0 to 2 x authors changes), so deps name the others' latest seen
//! changes and lamports follow the rule. The same logical ops can also be
//! produced as automerge changes (one document per table, flat keys
//! `row/field` in the root map: see benches/README.md for why) and as Loro
//! updates (one map per table, the same flat keys, a `LoroCounter` for
//! counters), each author a document of its own that has imported what the
//! author has seen.

use peers_engine::{
    Author, CHANGE_FORMAT_VERSION, Change, ChangeBody, ChangeHash, DEPS_MAX, DatabaseId, Identity,
    Op, Role, Value,
};

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Authors (3 to 100).
    pub authors: usize,
    /// Changes after the genesis.
    pub changes: usize,
    /// Rows the changes write to (per table): a quarter of `changes` by
    /// default.
    pub rows: usize,
    /// Seed of the generator.
    pub seed: u64,
    /// Also produce the automerge changes of the same ops.
    pub automerge: bool,
    /// Also produce the Loro updates of the same ops.
    pub loro: bool,
    /// A members-only database: the genesis says so, change 1 is the
    /// owner's grant of `Writer` to every other author, and each other
    /// author's first change names it (neither automerge nor Loro has an
    /// equivalent, so not with them).
    pub members_only: bool,
}

impl Spec {
    /// `changes` changes from `authors` authors, seeded as every bench seeds
    /// them, Peers only, in an open database.
    pub fn new(changes: usize, authors: usize) -> Spec {
        Spec {
            authors,
            changes,
            rows: (changes / 4).max(4),
            seed: 0x9ee7_5eed,
            automerge: false,
            loro: false,
            members_only: false,
        }
    }
}

/// A generated workload.
pub struct Workload {
    /// The database id.
    pub database: DatabaseId,
    /// The genesis change (author 0's seq 1).
    pub genesis: Change,
    /// The changes, in a causal order (generation order).
    pub changes: Vec<Change>,
    /// The same ops as automerge changes, encoded (none unless asked); an
    /// empty entry where the ops commit nothing in automerge (see
    /// [`Workload::automerge_changes`]).
    pub automerge: Vec<Vec<u8>>,
    /// The same ops as Loro updates, one per change (empty unless asked).
    pub loro: Vec<Vec<u8>>,
    /// Total ops in `changes`.
    pub ops: usize,
}

impl Workload {
    /// The automerge changes of `range` of the workload's changes, decoded
    /// (the empty entries of changes that do nothing in automerge left out).
    pub fn automerge_changes(&self, range: std::ops::Range<usize>) -> Vec<automerge::Change> {
        self.automerge[range]
            .iter()
            .filter(|bytes| !bytes.is_empty())
            .map(|bytes| automerge::Change::from_bytes(bytes.clone()).expect("decodes"))
            .collect()
    }

    /// Genesis then changes, encoded.
    pub fn encoded(&self) -> Vec<Vec<u8>> {
        std::iter::once(&self.genesis)
            .chain(&self.changes)
            .map(|change| change.bytes().to_vec())
            .collect()
    }
}

/// splitmix64: small, seeded, good enough for workloads.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

struct AuthorChain {
    identity: Identity,
    /// (global index, hash, lamport) of each change, in seq order.
    changes: Vec<(usize, ChangeHash, u64)>,
    automerge: Option<automerge::AutoCommit>,
    /// Global changes applied to `automerge` so far (own ones are there anyway).
    automerge_seen: usize,
    loro: Option<loro::LoroDoc>,
    /// Global changes imported into `loro` so far.
    loro_seen: usize,
}

const TABLE: &str = "items";

/// Generates a workload (deterministic for a spec).
pub fn generate(spec: Spec) -> Workload {
    assert!(spec.authors >= 1, "at least one author");
    let mut rng = Rng::new(spec.seed);
    let mut authors: Vec<AuthorChain> = (0..spec.authors)
        .map(|index| {
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
            secret[8..16].copy_from_slice(&spec.seed.to_le_bytes());
            let identity = Identity::from_secret_bytes(secret);
            let automerge = spec.automerge.then(|| {
                automerge::AutoCommit::new()
                    .with_actor(automerge::ActorId::from(identity.author().0.to_vec()))
            });
            let loro = spec.loro.then(|| {
                let document = loro::LoroDoc::new();
                document
                    .set_peer_id(index as u64 + 1)
                    .expect("a peer id other than PeerID::MAX");
                document
            });
            AuthorChain {
                identity,
                changes: Vec::new(),
                automerge,
                automerge_seen: 0,
                loro,
                loro_seen: 0,
            }
        })
        .collect();
    assert!(
        !(spec.members_only && (spec.automerge || spec.loro)),
        "members-only workloads have no automerge or Loro equivalent"
    );
    let nonce = Op::Genesis {
        nonce: spec
            .seed
            .to_le_bytes()
            .repeat(2)
            .try_into()
            .expect("16 bytes"),
    };
    let genesis_ops = if spec.members_only {
        vec![nonce, Op::MembersOnly]
    } else {
        vec![nonce]
    };
    let genesis = authors[0].identity.sign(ChangeBody {
        version: CHANGE_FORMAT_VERSION,
        database: DatabaseId::GENESIS,
        author: authors[0].identity.author(),
        seq: 1,
        prev: None,
        deps: Vec::new(),
        lamport: 1,
        wall_ms: 1_764_288_000_000,
        ops: genesis_ops,
    });
    let database = DatabaseId(genesis.hash().0);
    authors[0].changes.push((0, genesis.hash(), 1));
    let rows = spec.rows.max(1);
    let mut changes = Vec::with_capacity(spec.changes);
    let mut automerge_changes = Vec::new();
    let mut loro_changes = Vec::new();
    let mut ops_total = 0;
    let mut grant = None;
    for index in 1..=spec.changes {
        if spec.members_only && index == 1 {
            let ops: Vec<Op> = authors[1..]
                .iter()
                .map(|chain| Op::Grant {
                    key: chain.identity.author(),
                    role: Role::Writer,
                })
                .collect();
            ops_total += ops.len();
            let change = peers_commit(&mut authors, 0, index, 1, database, ops, None);
            grant = Some((change.hash(), change.lamport()));
            changes.push(change);
            continue;
        }
        let writer = rng.below(spec.authors);
        let lag = rng.below(2 * spec.authors + 1);
        let seen = index.saturating_sub(lag).max(1);
        let ops = ops_for(&mut rng, rows);
        ops_total += ops.len();
        if spec.automerge {
            let encoded = automerge_commit(&mut authors, writer, seen, &automerge_changes, &ops);
            automerge_changes.push(encoded);
        }
        if spec.loro {
            let encoded = loro_commit(&mut authors, writer, seen, &loro_changes, &ops);
            loro_changes.push(encoded);
        }
        let names_grant = grant.filter(|_| writer != 0 && authors[writer].changes.is_empty());
        let change = peers_commit(
            &mut authors,
            writer,
            index,
            seen,
            database,
            ops,
            names_grant,
        );
        changes.push(change);
    }
    Workload {
        database,
        genesis,
        changes,
        automerge: automerge_changes,
        loro: loro_changes,
        ops: ops_total,
    }
}

/// One to three ops on a row with 5-20 fields; sets dominate, with counter
/// increments and the odd delete.
fn ops_for(rng: &mut Rng, rows: usize) -> Vec<Op> {
    let row_index = rng.below(rows);
    let row = format!("row{row_index:06}");
    let fields = 5 + (row_index * 7919) % 16;
    let count = 1 + rng.below(3);
    (0..count)
        .map(|_| {
            let roll = rng.below(100);
            if roll < 3 {
                Op::Delete {
                    table: TABLE.into(),
                    row: row.clone(),
                }
            } else if roll < 18 {
                Op::Increment {
                    table: TABLE.into(),
                    row: row.clone(),
                    field: "count".into(),
                    delta: 1 + rng.below(5) as i64,
                }
            } else {
                let field = format!("f{}", rng.below(fields));
                let value = if rng.below(2) == 0 {
                    Value::Int(rng.next_u64() as i64 >> 20)
                } else {
                    Value::Str(format!("value-{}", rng.below(1_000_000)))
                };
                Op::Set {
                    table: TABLE.into(),
                    row: row.clone(),
                    field,
                    value,
                }
            }
        })
        .collect()
}

/// Signs `writer`'s next change after the `seen` prefix. `grant` (hash,
/// lamport) is a grant it must name: it takes the place of the owner's
/// latest seen change among the deps.
fn peers_commit(
    authors: &mut [AuthorChain],
    writer: usize,
    index: usize,
    seen: usize,
    database: DatabaseId,
    ops: Vec<Op>,
    grant: Option<(ChangeHash, u64)>,
) -> Change {
    let author: Author = authors[writer].identity.author();
    let mut deps: Vec<(u64, ChangeHash)> = Vec::new();
    for (other, chain) in authors.iter().enumerate() {
        if other == writer || (other == 0 && grant.is_some()) {
            continue;
        }
        let visible = chain
            .changes
            .partition_point(|(global, _, _)| *global < seen);
        if visible > 0 {
            let (_, hash, lamport) = chain.changes[visible - 1];
            deps.push((lamport, hash));
        }
    }
    deps.sort_unstable_by(|a, b| b.cmp(a));
    deps.truncate(DEPS_MAX - usize::from(grant.is_some()));
    deps.extend(grant.map(|(hash, lamport)| (lamport, hash)));
    let chain = &authors[writer];
    let prev = chain
        .changes
        .last()
        .map(|(_, hash, lamport)| (*hash, *lamport));
    let lamport = 1 + deps
        .iter()
        .map(|(lamport, _)| *lamport)
        .chain(prev.map(|(_, l)| l))
        .max()
        .unwrap_or(0);
    let mut dep_hashes: Vec<ChangeHash> = deps.into_iter().map(|(_, hash)| hash).collect();
    dep_hashes.sort_unstable();
    let change = chain.identity.sign(ChangeBody {
        version: CHANGE_FORMAT_VERSION,
        database,
        author,
        seq: chain.changes.len() as u64 + 1,
        prev: prev.map(|(hash, _)| hash),
        deps: dep_hashes,
        lamport,
        wall_ms: 1_764_288_000_000 + index as u64,
        ops,
    });
    authors[writer]
        .changes
        .push((index, change.hash(), lamport));
    change
}

/// What an author's competitor document must import before its next commit:
/// the indexes `k` (workload change `k + 1`) from `start` that the author has
/// now seen and did not write, and the index to start from next time.
fn newly_seen(chain: &AuthorChain, start: usize, seen: usize) -> (Vec<usize>, usize) {
    let end = seen.saturating_sub(1).max(start);
    let own = |k: &usize| {
        chain
            .changes
            .binary_search_by_key(&(k + 1), |(global, _, _)| *global)
            .is_ok()
    };
    ((start..end).filter(|k| !own(k)).collect(), end)
}

/// The same ops by the same author, after the same seen prefix, in automerge.
fn automerge_commit(
    authors: &mut [AuthorChain],
    writer: usize,
    seen: usize,
    global: &[Vec<u8>],
    ops: &[Op],
) -> Vec<u8> {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc, ScalarValue};
    let chain = &mut authors[writer];
    let (unseen, end) = newly_seen(chain, chain.automerge_seen, seen);
    let document = chain.automerge.as_mut().expect("automerge requested");
    let incoming: Vec<automerge::Change> = unseen
        .into_iter()
        .filter(|k| !global[*k].is_empty())
        .map(|k| automerge::Change::from_bytes(global[k].clone()).expect("own encoding"))
        .collect();
    document.apply_changes(incoming).expect("causal order");
    chain.automerge_seen = end;
    for op in ops {
        match op {
            Op::Set {
                row, field, value, ..
            } => {
                document
                    .put(
                        ROOT,
                        format!("{row}/{field}"),
                        ScalarValue::from(value.clone()),
                    )
                    .expect("put");
            }
            Op::Increment {
                row, field, delta, ..
            } => {
                let key = format!("{row}/{field}");
                let is_counter = matches!(document.get(ROOT, &key), Ok(Some((automerge::Value::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Counter(_)));
                if is_counter {
                    document.increment(ROOT, &key, *delta).expect("increment");
                } else {
                    document
                        .put(ROOT, &key, ScalarValue::counter(*delta))
                        .expect("put counter");
                }
            }
            Op::Delete { row, .. } => {
                let prefix = format!("{row}/");
                let keys: Vec<String> = document
                    .keys(ROOT)
                    .filter(|key| key.starts_with(&prefix))
                    .collect();
                for key in keys {
                    document.delete(ROOT, key.as_str()).expect("delete");
                }
            }
            _ => {}
        }
    }
    // Ops that do nothing in automerge (the delete of a row with no keys)
    // commit no change: an empty entry keeps the indexes aligned.
    if document.commit().is_none() {
        return Vec::new();
    }
    document
        .get_last_local_change()
        .expect("just committed")
        .raw_bytes()
        .to_vec()
}

/// The same ops by the same author, after the same seen prefix, in Loro.
fn loro_commit(
    authors: &mut [AuthorChain],
    writer: usize,
    seen: usize,
    global: &[Vec<u8>],
    ops: &[Op],
) -> Vec<u8> {
    let chain = &mut authors[writer];
    let (unseen, end) = newly_seen(chain, chain.loro_seen, seen);
    let document = chain.loro.as_ref().expect("Loro requested");
    let incoming: Vec<Vec<u8>> = unseen.into_iter().map(|k| global[k].clone()).collect();
    if !incoming.is_empty() {
        document.import_batch(&incoming).expect("causal order");
    }
    chain.loro_seen = end;
    let before = document.oplog_vv();
    let map = document.get_map(TABLE);
    for op in ops {
        match op {
            Op::Set {
                row, field, value, ..
            } => {
                let key = format!("{row}/{field}");
                let value: loro::LoroValue = match value {
                    Value::Int(int) => (*int).into(),
                    Value::Str(text) => text.as_str().into(),
                    other => unreachable!("the generator sets ints and strings, not {other:?}"),
                };
                map.insert(&key, value).expect("insert");
            }
            Op::Increment {
                row, field, delta, ..
            } => {
                let key = format!("{row}/{field}");
                // Concurrent first increments merge into one counter, as
                // Peers' and automerge's do.
                let counter = map
                    .ensure_mergeable_counter(&key)
                    .or_else(|_| map.insert_container(&key, loro::LoroCounter::new()))
                    .expect("a counter");
                counter.increment(*delta as f64).expect("increment");
            }
            Op::Delete { row, .. } => {
                let prefix = format!("{row}/");
                let keys: Vec<String> = map
                    .keys()
                    .filter(|key| key.starts_with(&prefix))
                    .map(|key| key.to_string())
                    .collect();
                for key in keys {
                    map.delete(&key).expect("delete");
                }
            }
            _ => {}
        }
    }
    document.commit();
    document
        .export(loro::ExportMode::updates(&before))
        .expect("export")
}

/// Applies encoded changes to `db` in batches of 8192 (as a received
/// catch-up arrives) and requires every one to be accepted, none pending.
pub fn apply_all(db: &peers_engine::Db, encoded: &[Vec<u8>]) {
    for batch in encoded.chunks(8192) {
        let report = db.apply_encoded(batch).expect("apply");
        assert!(
            report.refused.is_empty() && report.pending.is_empty(),
            "workload applies cleanly: {report:?}"
        );
    }
}

/// Commits `per_thread` transactions of one set from each of `threads`
/// threads at once into `db`, each thread on rows of its own: the load of
/// `local_commit/relaxed/1_ops/N_threads` and of `merge_profile`'s
/// `COMMITS`.
pub fn commit_from_threads(db: &peers_engine::Db, threads: u64, per_thread: u64) {
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                for i in 0..per_thread {
                    let mut tx = db.transaction();
                    tx.set("items", &format!("t{thread}r{}", i % 10_000), "f", i as i64);
                    tx.commit().expect("commit");
                }
            });
        }
    });
}

/// A line of this process's /proc/self/status (`"VmRSS:"`, `"VmHWM:"`), in
/// KiB; 0 where there is none (not Linux).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_only_workload_applies_cleanly_and_is_members_only() {
        let workload = generate(Spec {
            members_only: true,
            ..Spec::new(400, 5)
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let db = peers_engine::Db::join(
            dir.path(),
            workload.database,
            peers_engine::Options::default(),
        )
        .expect("join");
        apply_all(&db, &workload.encoded());
        assert_eq!(db.is_members_only(), Some(true));
        assert_eq!(db.log().expect("log").count(), 401, "all accepted");
        let Op::Grant { key, role } = &workload.changes[0].ops()[0] else {
            panic!("change 1 grants");
        };
        assert_eq!((db.role_of(key), *role), (Some(Role::Writer), Role::Writer));
    }

    #[test]
    fn competitor_documents_hold_every_change() {
        let workload = generate(Spec {
            automerge: true,
            loro: true,
            ..Spec::new(300, 4)
        });
        assert_eq!(workload.loro.len(), 300);
        let document = loro::LoroDoc::new();
        let status = document.import_batch(&workload.loro).expect("imports");
        assert!(status.pending.is_none(), "every update's deps are there");
        let changes = workload.automerge_changes(0..300);
        assert!(changes.len() > 290, "{} automerge changes", changes.len());
        let count = changes.len();
        let mut document = automerge::AutoCommit::new();
        document.apply_changes(changes).expect("applies");
        assert_eq!(
            document.get_changes(&[]).len(),
            count,
            "none waits for a dep"
        );
    }
}

//! Runs authorization scripts: grants, revocations, writes and syncs by a few
//! keys, each on its own replica of one members-only database, and changes
//! signed by hand past the checks of the local API ([`Forgery`]: grants and
//! revocations by any key, writes naming any grant, forks). Shared by the
//! proptest in tests/authorization.rs and the fuzz target
//! [`crate::fuzz_targets::authorization_model`], which both check the result
//! against [`crate::authorization_model`]; each builds its own scripts
//! (strategies, byte decoding) and makes its own assertions.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use peers_engine::{
    ApplyReport, Author, CHANGE_FORMAT_VERSION, Change, ChangeBody, ChangeHash, DatabaseId, Db,
    Error, Op, Options, Role,
};
use tempfile::TempDir;

use crate::authorization_model::{Model, admission, applied};
use crate::{SplitMix, all_changes, exchange, shuffle, transaction_with};

/// One step of a script, run on the replica of `actor` (a key index).
#[derive(Clone, Debug)]
pub enum Step {
    /// `actor` grants `role` to `target`.
    Grant {
        /// The granting key.
        actor: usize,
        /// The key granted.
        target: usize,
        /// The role granted.
        role: Role,
    },
    /// `actor` revokes `target` (as of the last change it holds).
    Revoke {
        /// The revoking key.
        actor: usize,
        /// The key revoked.
        target: usize,
    },
    /// `actor` commits `ops` (Set, Delete, Increment) as one transaction.
    Write {
        /// The writing key.
        actor: usize,
        /// The ops of the transaction.
        ops: Vec<Op>,
    },
    /// `to` receives what `from` holds (sync in one direction).
    Sync {
        /// The key whose replica serves.
        from: usize,
        /// The key whose replica receives.
        to: usize,
    },
    /// A change signed by hand, whatever the rules say (see [`Forgery`]).
    Forge(Forgery),
}

/// A change that `actor` signs by hand on what its replica holds, past the
/// checks of the local API, then hands, with everything its replica holds,
/// to `to`'s replica, which must give it the verdict of
/// [`crate::authorization_model::admission`]: refused with that refusal
/// (held nowhere), or held (valid or inert, as evaluation decides).
#[derive(Clone, Debug)]
pub struct Forgery {
    /// The signing key.
    pub actor: usize,
    /// The key whose replica receives it.
    pub to: usize,
    /// `None`: the change extends the actor's chain (its highest seq held,
    /// plus one). `Some(back)`: a second change at seq `head - back % head`
    /// of that chain (a fork; at seq 1 if the chain is empty).
    pub fork: Option<u64>,
    /// Its ops (at least one).
    pub ops: Vec<ForgedOp>,
    /// Whether it names, in `deps`, the latest held change of every other key.
    pub names_heads: bool,
    /// Names the held grant to the actor of this index (modulo their
    /// count; none if there is none), standing or not.
    pub names_grant: Option<usize>,
    /// Whether it names the latest held revocation of the actor.
    pub names_revocation: bool,
}

/// An op of a [`Forgery`].
#[derive(Clone, Debug)]
pub enum ForgedOp {
    /// A row op (Set, Delete, Increment).
    Row(Op),
    /// Grants `role` to key `target`.
    Grant {
        /// The key granted.
        target: usize,
        /// The role granted.
        role: Role,
    },
    /// Revokes key `target` after its highest seq held minus `back`.
    Revoke {
        /// The key revoked.
        target: usize,
        /// How far below the target's head the revocation cuts.
        back: u64,
    },
}

/// Which errors of the local API a script skips as refusals by the rules;
/// any other error fails the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusals {
    /// Only `NotAllowed`: every replica is open and synced from the start.
    NotAllowed,
    /// `NotAllowed`, `NotSynced` and `IdentityCut`: for scripts (fuzz bytes)
    /// that reach any state.
    AnyRule,
}

/// Whether a local operation was done (`true`) or refused by the rules as
/// `refusals` allows (`false`, a skipped step); panics on any other error.
pub fn allowed(result: peers_engine::Result<ChangeHash>, refusals: Refusals) -> bool {
    match (result, refusals) {
        (Ok(_), _) => true,
        (Err(Error::NotAllowed(_)), _) => false,
        // An increment of a field that holds a non-counter value does
        // nothing, so its replica refuses to sign it.
        (Err(Error::NotACounter { .. }), _) => false,
        (Err(Error::NotSynced | Error::IdentityCut { .. }), Refusals::AnyRule) => false,
        (Err(other), _) => panic!("a local operation failed: {other}"),
    }
}

/// Every change in a script was admitted by its author's replica, and
/// admission depends only on the change and what it names: nobody refuses it
/// (past a revocation or a limit it is held inert).
pub fn check_report(report: &ApplyReport) {
    assert!(report.refused.is_empty(), "refused: {report:?}");
}

/// The key replicas of one script.
///
/// # Invariants
///
/// Replica `i` signs as `keys[i]`; an open replica holds at least what the
/// owner's held after the initial grants.
pub struct Replicas {
    /// `None` until first used. Declared before `dir`: databases close first.
    replicas: Vec<Option<Db>>,
    /// Options of each key's replica (each signs as its key).
    options: Vec<Options>,
    /// What every replica holds when it opens: the genesis, the initial grants.
    initial: Vec<Change>,
    keys: Vec<Author>,
    database: DatabaseId,
    refusals: Refusals,
    /// Forgeries signed so far (their wall clocks differ, so a fork is never
    /// a copy of the change it forks).
    forged: u64,
    dir: TempDir,
}

impl Replicas {
    /// Key replicas with options `options` (one per key, index 0 the owner,
    /// each with an identity) in `dir`, from `owner` (key 0's replica at
    /// `dir/k0`, holding its database's genesis), which first grants
    /// `initial_roles[k - 1]` to key k. Other replicas open on first use.
    pub fn new(
        dir: TempDir,
        owner: Db,
        options: Vec<Options>,
        initial_roles: &[Option<Role>],
        refusals: Refusals,
    ) -> Replicas {
        assert_eq!(
            initial_roles.len() + 1,
            options.len(),
            "a role per key but the owner"
        );
        let keys: Vec<Author> = options
            .iter()
            .map(|options| options.identity.as_ref().expect("a signing key").author())
            .collect();
        for (key, role) in keys[1..].iter().zip(initial_roles) {
            if let Some(role) = role {
                owner.grant(*key, *role).expect("the owner grants");
            }
        }
        let initial = all_changes(&owner);
        let database = owner.database_id();
        let mut replicas: Vec<Option<Db>> = (0..keys.len()).map(|_| None).collect();
        replicas[0] = Some(owner);
        Replicas {
            replicas,
            options,
            initial,
            keys,
            database,
            refusals,
            forged: 0,
            dir,
        }
    }

    /// The keys, by index (0: the owner).
    pub fn keys(&self) -> &[Author] {
        &self.keys
    }

    /// The database the replicas share.
    pub fn database(&self) -> DatabaseId {
        self.database
    }

    /// The directory the replicas (and any others of the run) live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Key `index`'s replica, opened (and given the initial changes) on
    /// first use.
    pub fn replica(&mut self, index: usize) -> &Db {
        let (dir, initial, database) = (&self.dir, &self.initial, self.database);
        let options = &self.options[index];
        self.replicas[index].get_or_insert_with(|| {
            let path = dir.path().join(format!("k{index}"));
            let db = Db::join(path, database, options.clone()).expect("join");
            check_report(
                &db.apply(initial.clone())
                    .expect("apply the initial changes"),
            );
            db
        })
    }

    /// Opens every key's replica.
    pub fn open_all(&mut self) {
        for index in 0..self.keys.len() {
            self.replica(index);
        }
    }

    /// The open replicas with their key indexes, in index order.
    pub fn open(&self) -> impl Iterator<Item = (usize, &Db)> {
        let replicas = self.replicas.iter().enumerate();
        replicas.filter_map(|(index, db)| Some((index, db.as_ref()?)))
    }

    /// Runs `step`, skipping what the local rules refuse.
    pub fn step(&mut self, step: &Step) {
        let refusals = self.refusals;
        match step {
            Step::Grant {
                actor,
                target,
                role,
            } => {
                let key = self.keys[*target];
                allowed(self.replica(*actor).grant(key, *role), refusals);
            }
            Step::Revoke { actor, target } => {
                let key = self.keys[*target];
                allowed(self.replica(*actor).revoke(key), refusals);
            }
            Step::Write { actor, ops } => {
                allowed(
                    transaction_with(self.replica(*actor), ops).commit(),
                    refusals,
                );
            }
            // A replica not opened yet holds nothing the other lacks.
            Step::Sync { from, to } if from != to && self.replicas[*from].is_some() => {
                self.replica(*to);
                let (Some(from), Some(to)) = (&self.replicas[*from], &self.replicas[*to]) else {
                    unreachable!("both replicas are open");
                };
                check_report(&exchange(from, to));
            }
            Step::Sync { .. } => {}
            Step::Forge(forgery) => self.forge(forgery),
        }
    }

    /// Runs a [`Step::Forge`]: signs the change, hands it to `to`'s
    /// replica (with everything the actor's holds) and checks the verdict
    /// against the model's.
    fn forge(&mut self, forgery: &Forgery) {
        let identity = self.options[forgery.actor].identity.clone();
        let identity = identity.expect("a signing key");
        let author = identity.author();
        let held = all_changes(self.replica(forgery.actor));
        let latest = |key: &Author| {
            let of_key = held.iter().filter(|change| change.author() == *key);
            of_key.max_by_key(|change| (change.seq(), std::cmp::Reverse(change.hash())))
        };
        let at = |seq: u64| {
            let of_key = held.iter().filter(|change| change.author() == author);
            of_key
                .filter(|change| change.seq() == seq)
                .min_by_key(|change| change.hash())
        };
        let head = latest(&author).map_or(0, Change::seq);
        let seq = match forgery.fork {
            None => head + 1,
            Some(back) if head > 0 => head - back % head,
            Some(_) => 1,
        };
        let prev = (seq > 1).then(|| at(seq - 1).expect("every seq below the head is held"));
        let mut deps: Vec<&Change> = Vec::new();
        if forgery.names_heads {
            let others = self.keys.iter().filter(|key| **key != author);
            deps.extend(others.filter_map(latest));
        }
        let to_actor = |change: &&Change, revokes: bool| {
            change.author() != author
                && change.ops().iter().any(|op| match op {
                    Op::Grant { key, .. } => !revokes && *key == author,
                    Op::Revoke { key, .. } => revokes && *key == author,
                    _ => false,
                })
        };
        if let Some(index) = forgery.names_grant {
            let mut grants: Vec<&Change> = held.iter().filter(|c| to_actor(c, false)).collect();
            grants.sort_by_key(|change| change.hash());
            if !grants.is_empty() {
                deps.push(grants[index % grants.len()]);
            }
        }
        if forgery.names_revocation {
            let revocations = held.iter().filter(|c| to_actor(c, true));
            deps.extend(revocations.max_by_key(|change| (change.lamport(), change.hash())));
        }
        let ops: Vec<Op> = forgery
            .ops
            .iter()
            .map(|op| match op {
                ForgedOp::Row(op) => op.clone(),
                ForgedOp::Grant { target, role } => Op::Grant {
                    key: self.keys[*target],
                    role: *role,
                },
                ForgedOp::Revoke { target, back } => {
                    let key = self.keys[*target];
                    let last_seq = latest(&key).map_or(0, Change::seq).saturating_sub(*back);
                    Op::Revoke { key, last_seq }
                }
            })
            .collect();
        assert!(!ops.is_empty(), "a forgery has an op");
        let lamport = prev.iter().chain(&deps).map(|c| c.lamport()).max();
        let mut dep_hashes: Vec<ChangeHash> = deps.iter().map(|change| change.hash()).collect();
        dep_hashes.sort_unstable();
        dep_hashes.dedup();
        self.forged += 1;
        let change = identity.sign(ChangeBody {
            version: CHANGE_FORMAT_VERSION,
            database: self.database,
            author,
            seq,
            prev: prev.map(Change::hash),
            deps: dep_hashes,
            lamport: lamport.unwrap_or(0) + 1,
            wall_ms: 1_600_000_000_000 + self.forged,
            ops,
        });
        let named: HashMap<ChangeHash, Change> = held
            .iter()
            .map(|change| (change.hash(), change.clone()))
            .collect();
        let expected = admission(&change, &named, self.keys[0]);
        let to = self.replica(forgery.to);
        if forgery.to != forgery.actor {
            check_report(&to.apply(held.clone()).expect("apply the actor's log"));
        }
        let report = to.apply(vec![change.clone()]).expect("apply the forgery");
        match expected {
            Err(refusal) => {
                let refused = vec![(Some(change.hash()), refusal)];
                assert_eq!(report.refused, refused, "{change:?}: {report:?}");
                assert!(report.accepted.is_empty(), "{report:?}");
            }
            Ok(()) => {
                assert!(report.refused.is_empty(), "{change:?}: {report:?}");
                assert_eq!(report.accepted, vec![change.hash()], "{report:?}");
            }
        }
    }

    /// Every change any replica holds, deduplicated, in a causal order that
    /// does not depend on the hashes (wall clocks are in them, and an order
    /// that is the same on every run lets proptest shrink): lamport, author,
    /// seq.
    pub fn changes(&self) -> Vec<Change> {
        let mut seen = BTreeSet::new();
        let mut changes: Vec<Change> = self
            .open()
            .flat_map(|(_, db)| all_changes(db))
            .filter(|change| seen.insert(change.hash()))
            .collect();
        changes.sort_by_key(|change| (change.lamport(), change.author(), change.seq()));
        changes
    }

    /// Delivers `changes` to a fresh replica at `dir/name` with `options`:
    /// shuffled by `random`, some twice, in batches of 1 to a random maximum
    /// (or one change per apply if `one_per_apply`, the hardest case for
    /// verdicts taken per group); then all once more in causal order (a
    /// change refused as Revoked while a revocation stood gets a second
    /// chance once that revocation fell).
    pub fn deliver(
        &self,
        name: &str,
        options: Options,
        changes: &[Change],
        random: &mut SplitMix,
        one_per_apply: bool,
    ) -> Db {
        let path = self.dir.path().join(name);
        let db = Db::join(path, self.database, options).expect("join");
        let mut shuffled = changes.to_vec();
        for _ in 0..random.below(changes.len() / 4 + 1) {
            shuffled.push(changes[random.below(changes.len())].clone());
        }
        shuffle(&mut shuffled, random.next_u64());
        let batch_max = if one_per_apply {
            1
        } else {
            1 + random.below(8)
        };
        let mut rest = shuffled.as_slice();
        while !rest.is_empty() {
            let size = (1 + random.below(batch_max)).min(rest.len());
            let (batch, tail) = rest.split_at(size);
            check_report(&db.apply(batch.to_vec()).expect("apply"));
            rest = tail;
        }
        let again = db.apply(changes.to_vec());
        check_report(&again.expect("apply again, in causal order"));
        db
    }
}

/// `changes`, one a line, for a failure message: key index (by `keys`) and
/// seq, lamport, what it names, its ops, the model's verdict and each of
/// `replicas`' (held, applied).
pub fn describe(
    keys: &[Author],
    changes: &[Change],
    model: &Model,
    replicas: &[(&str, &Db)],
) -> String {
    let key_of = |author: &Author| keys.iter().position(|key| key == author).unwrap_or(9);
    let name_of = |hash: &ChangeHash| {
        let change = changes.iter().find(|change| change.hash() == *hash);
        change.map_or("?".to_owned(), |change| {
            format!("k{}/{}", key_of(&change.author()), change.seq())
        })
    };
    let mut out = String::new();
    for change in changes {
        let deps: Vec<String> = change.body().deps.iter().map(name_of).collect();
        let ops: Vec<String> = change
            .ops()
            .iter()
            .map(|op| match op {
                Op::Grant { key, role } => format!("grant k{} {role}", key_of(key)),
                Op::Revoke { key, last_seq } => format!("revoke k{} after {last_seq}", key_of(key)),
                Op::Genesis { .. } | Op::MembersOnly => "genesis".to_owned(),
                other => format!("{:?}", other.row().unwrap_or(("", ""))),
            })
            .collect();
        let verdicts: Vec<String> = replicas
            .iter()
            .map(|(name, db)| {
                let held = db.get_change(&change.hash()).expect("lookup").is_some();
                let valid = applied(db, std::slice::from_ref(change))
                    .get(&change.hash())
                    .copied();
                format!("{name}: held {held} applied {valid:?}")
            })
            .collect();
        out += &format!(
            "{} lamport {} deps {deps:?} ops {ops:?} model-valid {} | {}\n",
            name_of(&change.hash()),
            change.lamport(),
            model.valid.contains(&change.hash()),
            verdicts.join(", ")
        );
    }
    out
}

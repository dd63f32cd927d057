//! Ingest: admitting changes (the validity rules), applying them to the view
//! in groups, equivocation cuts, and replay of the log.
//!
//! Every path that adds a change to the view goes through [`Writer::ingest`]:
//! local commits, received changes, crash replay and rebuild. A group of
//! changes is first admitted and applied into an in-memory [`Group`], then
//! made durable in the wal (new changes only), then written to RocksDB as one
//! `WriteBatch` together with the applied log position.

use std::collections::{BTreeSet, VecDeque};

use crate::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, RwLock};

use peers_wal::Position;
use rocksdb::DB;

use crate::access::{self, Access, Verdicts};
use crate::change::{Author, Change, ChangeHash, DatabaseId, Op, Role};
use crate::checkpoint::{Hashes, Standing};
use crate::error::{Error, Refusal, Result};
use crate::keys::{self, Stamp};
use crate::log::{self, Log, corrupt_at};
use crate::pending::Pending;
use crate::records::{self, AuthorState, ChangeMeta, POSITION_UNKNOWN, Settled};
use crate::signature;
use crate::view::{self, Carried, Group, decode, encode};

/// Records a replay reads from the log at a time: they are decoded (and
/// verified) in jobs on every core while this thread applies the jobs
/// already done, and each batch starts that pipeline again (one job done
/// before anything is applied), so a batch is not small: 2,048 made `peers
/// verify` of 100k changes 20% slower (benches/README.md "2026-12-05").
const REPLAY_BATCH_CHANGES: usize = 4096;

/// Changes per applied group of a replay that does not check signatures
/// (open, rebuild): each group's RocksDB write runs on its own thread while
/// the next group is applied, and the two groups' overlays are in memory
/// together: groups of 4,096 peaked at 134 MiB in `peers rebuild` of 1M
/// changes, of 2,048 at 123 MiB, as fast. A replay that checks signatures
/// (verify) has every core busy verifying: it applies whole batches and
/// writes each at once, as a write thread only slowed it.
pub const REPLAY_GROUP_CHANGES: usize = 2048;

/// A long operation's progress: `(done, total)` in log bytes.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// A change handed to [`Writer::ingest`], with its frame in the log when it
/// is read back from there ([`Source::Log`]).
pub(crate) type Entry = (Change, Option<Range<Position>>);

/// How an admitted change enters the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Applied to the view.
    Valid,
    /// A second change for an (author, seq): evidence; cuts the author.
    Fork,
    /// Past its author's cut: kept, never applied.
    Inert,
}

/// The verdict on one change.
pub(crate) enum Admission {
    /// Accepted as `Kind`, with the author's named role after it.
    Accept(Kind, Option<Role>),
    Duplicate,
    Wait(ChangeHash),
    Refuse(Refusal),
}

/// What happened to each change handed to [`Writer::ingest`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Newly held changes, in the order they entered the log.
    pub accepted: Vec<ChangeHash>,
    /// Of `accepted`, those that are not applied: fork evidence and changes
    /// past their author's cut.
    pub inert: Vec<ChangeHash>,
    /// Already held (or already pending): nothing to do.
    pub duplicates: Vec<ChangeHash>,
    /// Waiting for a predecessor, in the pending set.
    pub pending: Vec<ChangeHash>,
    /// Refused, with the reason; `None` when the bytes had no hash.
    pub refused: Vec<(Option<ChangeHash>, Refusal)>,
}

/// Which changes of the log a replay applies.
#[derive(Clone, Copy)]
pub(crate) enum Select<'a> {
    /// Every change.
    All,
    /// Only these (a causally closed set: a checkpoint's closure).
    Only(&'a Hashes),
    /// All but these (changes off a standing checkpoint's frontier, and
    /// every change that names one: also causally closed).
    Except(&'a HashSet<ChangeHash>),
}

impl Select<'_> {
    fn includes(&self, hash: &ChangeHash) -> bool {
        match self {
            Select::All => true,
            Select::Only(set) => set.contains(hash),
            Select::Except(set) => !set.contains(hash),
        }
    }
}

/// Where the changes of a group come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// New to this replica: append to the log after admitting.
    New,
    /// Read back from the log at known positions (replay, rebuild, verify).
    Log,
}

/// The writer side of a database: owned by one thread at a time.
pub(crate) struct Writer {
    pub log: Log,
    pub view: Arc<DB>,
    pub database: DatabaseId,
    pub pending: Pending,
    /// Changes that no held change names yet: lamport and author.
    pub heads: HashMap<ChangeHash, (u64, Author)>,
    /// Every author's state, mirrored from the view (authors are few).
    authors: HashMap<Author, AuthorState>,
    /// Every author's `head_seq` as of the last group applied, for readers
    /// without the writer: a change past its author's head is not held
    /// ([`Writer::may_hold`]), so they need not look it up. (During a replay
    /// the last group's write may not have landed: a change a reader then
    /// misses in the view is verified for nothing and found a duplicate on
    /// admission.)
    pub shared_head_seqs: Arc<RwLock<HashMap<Author, u64>>>,
    /// Metadata of recently applied changes, the ones new changes name as
    /// prev and deps. Bounded: cleared when full.
    recent: HashMap<ChangeHash, ChangeMeta>,
    /// Authorization facts (mirrored in the view under META_ACCESS).
    pub access: Access,
    /// The standing checkpoint (mirrored in the view under META_STANDING).
    pub standing: Option<Standing>,
    /// What it settles, by author.
    settled: HashMap<Author, Settled>,
    /// The last evaluation of `access`.
    pub verdicts: Verdicts,
    /// Grows whenever `verdicts` is decided anew, so `Db` republishes its
    /// membership snapshot only then.
    pub access_generation: u64,
    /// Held changes that the last group made valid again (an authorization
    /// limit rose): `Db` publishes them to subscribers like new ones.
    pub revived: Vec<Change>,
    /// Set when a group failed after its changes started to reach the log:
    /// the view and the in-memory state no longer match the log, and only
    /// a reopen (which replays the log) can make them match. Every later
    /// ingest is refused with [`Error::Poisoned`] until then.
    pub poisoned: Option<String>,
    /// Whether the group being finished has started to append to the log.
    appending: bool,
    /// A trimmed generation's snapshot file: where a recomputed row's
    /// settled entries are (FORMAT.md "Settlement" point 3).
    pub snapshot_rows: Option<Arc<crate::snapshot::SnapshotRows>>,
    /// The last group's write into RocksDB while it is still going on (a
    /// replay only): the next group reads through its writes. `None`
    /// whenever a method returns to a caller outside this file.
    in_flight: Option<InFlight>,
    /// Whether a replayed group is written on a thread of its own (set by
    /// [`Writer::replay`] when it checks no signatures).
    background_writes: bool,
}

/// A group's RocksDB write on its own thread, so that a replay applies the
/// next group meanwhile (`peers rebuild` on 2 cores: 0.98-1.01 s against
/// 1.09-1.14 s at 100k changes, benches/README.md "2026-12-05").
struct InFlight {
    write: std::thread::JoinHandle<Result<()>>,
    carried: Arc<Carried>,
}

/// Most entries in [`Writer::recent`] before it is cleared: ~1 MiB. A new
/// change names its author's last change and other authors' heads, which
/// are among the last few hundred applied unless authors are many (a miss
/// is a RocksDB read). 65,536 held 13-15 MiB of a rebuild's peak at 1M
/// changes, and merged no faster (benches/README.md "Memory").
const RECENT_CHANGES_MAX: usize = 8_192;

/// Per-group state: the overlay and the changes admitted so far.
struct Batch<'a> {
    group: Group<'a>,
    fresh: HashMap<ChangeHash, Change>,
    /// Named roles of the fresh changes (their metas are written at finish).
    fresh_roles: HashMap<ChangeHash, Option<Role>>,
    admitted: Vec<Entry>,
    /// Whether this group changed what authorization depends on.
    access_changed: bool,
    /// Authors whose state this group changed: written once, at finish.
    authors_changed: BTreeSet<Author>,
}

impl<'a> Batch<'a> {
    fn new(view: &'a DB, carried: Option<Arc<Carried>>) -> Batch<'a> {
        Batch {
            group: Group::after(view, carried),
            fresh: HashMap::default(),
            fresh_roles: HashMap::default(),
            admitted: Vec::new(),
            access_changed: false,
            authors_changed: BTreeSet::new(),
        }
    }
}

impl Writer {
    pub fn new(
        log: Log,
        view: Arc<DB>,
        database: DatabaseId,
        pending_max: usize,
    ) -> Result<Writer> {
        let mut engine = Writer {
            log,
            view,
            database,
            pending: Pending::new(pending_max),
            heads: HashMap::default(),
            authors: HashMap::default(),
            shared_head_seqs: Arc::default(),
            recent: HashMap::default(),
            access: Access::default(),
            standing: None,
            settled: HashMap::default(),
            verdicts: Verdicts::default(),
            access_generation: 0,
            revived: Vec::new(),
            poisoned: None,
            appending: false,
            snapshot_rows: None,
            in_flight: None,
            background_writes: false,
        };
        engine.reload_heads()?;
        Ok(engine)
    }

    /// Every author's state as of the last applied group.
    pub fn authors(&self) -> impl Iterator<Item = (Author, AuthorState)> + '_ {
        self.authors.iter().map(|(author, state)| (*author, *state))
    }

    /// An author's state as of the last applied group.
    pub fn author(&self, author: &Author) -> Option<AuthorState> {
        self.authors.get(author).copied()
    }

    /// A held change's metadata, outside any group.
    pub(crate) fn held_meta(&self, hash: &ChangeHash) -> Result<Option<ChangeMeta>> {
        debug_assert!(self.in_flight.is_none(), "read past a group's write");
        if let Some(meta) = self.recent.get(hash) {
            return Ok(Some(*meta));
        }
        records::change_meta(&Group::new(&self.view), hash)
    }

    /// A standing grant of `role` to `author` for its next change to name:
    /// the one in the lowest-hash valid change that holds such a grant.
    pub(crate) fn grant_to_name(&self, author: &Author, role: Role) -> Option<ChangeHash> {
        self.access
            .records
            .iter()
            .filter(|record| record.grants.contains(&(*author, role)))
            .filter(|record| {
                self.authors
                    .get(&record.author)
                    .is_some_and(|state| state.is_valid(record.seq))
            })
            .map(|record| record.hash)
            .min()
    }

    /// Reloads the in-memory heads from the view.
    pub fn reload_heads(&mut self) -> Result<()> {
        self.settle()?;
        self.heads.clear();
        self.recent.clear();
        self.authors.clear();
        let group = Group::new(&self.view);
        for (key, value) in group.scan_prefix(&[keys::AUTHORS])? {
            self.authors
                .insert(records::author_of_key(&key)?, decode(&value, &key)?);
        }
        let key = keys::meta(keys::META_ACCESS);
        self.access = match group.get(&key)? {
            Some(bytes) => decode(&bytes, &key)?,
            None => Access::default(),
        };
        self.standing = Standing::load(&self.view)?;
        self.settled = self
            .standing
            .iter()
            .flat_map(|standing| standing.settled.iter().copied())
            .collect();
        self.verdicts = self.evaluate();
        self.access_generation += 1;
        *self
            .shared_head_seqs
            .write()
            .unwrap_or_else(|p| p.into_inner()) = self
            .authors
            .iter()
            .map(|(author, state)| (*author, state.head_seq))
            .collect();
        let key = keys::meta(keys::META_HEADS);
        if let Some(bytes) = group.get(&key)? {
            let heads: Vec<(ChangeHash, u64, Author)> = decode(&bytes, &key)?;
            self.heads = heads
                .into_iter()
                .map(|(hash, lamport, author)| (hash, (lamport, author)))
                .collect();
        }
        Ok(())
    }

    /// Refuses every later ingest until a reopen replays the log: the view
    /// may hold what the log does not, or the reverse.
    pub fn poison(&mut self, reason: String) {
        tracing::error!(%reason, "the log failed; the database must be reopened");
        self.poisoned.get_or_insert(reason);
    }

    /// Applies the log from `from` (a record's start) to the view, in
    /// groups of [`REPLAY_GROUP_CHANGES`], each written while the next is
    /// applied; with `verify_signatures`, every signature is checked again
    /// first (on every core), in groups of [`REPLAY_BATCH_CHANGES`] written
    /// at once. `select` names the changes replayed (see [`Select`]).
    /// Returns the changes replayed.
    pub fn replay(
        &mut self,
        from: Position,
        verify_signatures: bool,
        select: Select<'_>,
        progress: Progress<'_>,
    ) -> Result<u64> {
        self.background_writes = !verify_signatures;
        let replayed = self.replay_groups(from, verify_signatures, select, progress);
        self.background_writes = false;
        // Each group's write overlaps the next group; the last one lands
        // here (also after a failure, before the error is returned).
        let settled = self.settle();
        let replayed = replayed?;
        settled?;
        Ok(replayed)
    }

    fn replay_groups(
        &mut self,
        from: Position,
        verify_signatures: bool,
        select: Select<'_>,
        progress: Progress<'_>,
    ) -> Result<u64> {
        let start = self.log.start().0;
        let end = self.log.end().0;
        let mut replayed = 0;
        let mut records = self.log.changes_from(from)?;
        // Each batch of records is decoded (and verified) in jobs on every
        // core while this thread applies the jobs already done, in order.
        let check = |job: Vec<(Range<Position>, Vec<u8>)>| -> Result<Vec<Entry>> {
            let mut entries = Vec::with_capacity(job.len());
            for (frame, bytes) in job {
                let change = log::decode_at(frame.start, &bytes)?;
                if select.includes(&change.hash()) {
                    entries.push((change, Some(frame)));
                }
            }
            if verify_signatures {
                let changes = entries.iter().map(|(change, _)| change.clone()).collect();
                let mut refused = Vec::new();
                signature::verify(changes, &mut refused);
                if let Some((hash, refusal)) = refused.into_iter().next() {
                    let frame = entries
                        .iter()
                        .find(|(change, _)| Some(change.hash()) == hash)
                        .and_then(|(_, frame)| frame.clone());
                    return Err(corrupt_in_log(frame, refusal));
                }
            }
            Ok(entries)
        };
        let weight = |entries: &Result<Vec<Entry>>| entries.as_ref().map_or(0, Vec::len);
        loop {
            let batch = records
                .records()
                .take(REPLAY_BATCH_CHANGES)
                .collect::<Result<Vec<_>>>()?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            let reached = last.end.0;
            let group_max = if verify_signatures {
                REPLAY_BATCH_CHANGES
            } else {
                REPLAY_GROUP_CHANGES
            };
            signature::in_order(batch, check, weight, group_max, |run| {
                let mut group = Vec::new();
                for entries in run {
                    group.extend(entries?);
                }
                let mut report = ApplyReport::default();
                replayed += self.ingest(group, Source::Log, &mut report)?.len() as u64;
                Ok::<(), Error>(())
            })?;
            progress(reached.saturating_sub(start), end.saturating_sub(start));
        }
        progress(end.saturating_sub(start), end.saturating_sub(start));
        Ok(replayed)
    }

    /// Admits and applies `changes` as one group. `positions` is given for
    /// [`Source::Log`] (one per change). Returns what happened to each, and
    /// the accepted changes for subscribers.
    pub fn ingest(
        &mut self,
        changes: Vec<Entry>,
        source: Source,
        report: &mut ApplyReport,
    ) -> Result<Vec<Change>> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        self.appending = false;
        let view = Arc::clone(&self.view);
        let carried = self.in_flight.as_ref().map(|f| Arc::clone(&f.carried));
        let mut batch = Batch::new(&view, carried);
        let before = (report.accepted.len(), report.inert.len());
        self.revived.clear();
        let outcome = self.admit_all(&mut batch, changes, report, source);
        let outcome = outcome.and_then(|()| self.reevaluate(&mut batch));
        let outcome = outcome.and_then(|()| self.finish(batch, source));
        if let Err(error) = &outcome
            && self.appending
        {
            // Part of the group may be in the log: reloading the heads from
            // the view would let the next commit reuse a seq that is in the
            // log with another hash (a fork of our own key). Refuse every
            // later ingest until a reopen replays the log.
            self.poison(error.to_string());
            self.revived.clear();
            report.accepted.truncate(before.0);
            report.inert.truncate(before.1);
            return outcome;
        }
        if outcome.is_err() {
            // Nothing of the group reached RocksDB: forget its in-memory effects.
            self.revived.clear();
            self.reload_heads()?;
            report.accepted.truncate(before.0);
            report.inert.truncate(before.1);
        }
        let accepted = outcome?;
        report.accepted.extend(accepted.iter().map(Change::hash));
        // Inert is decided once the whole group is in: a change applied
        // early in the group may be cut by a fork found later in it.
        report.inert.extend(accepted.iter().filter_map(|change| {
            let valid = self
                .authors
                .get(&change.author())
                .is_some_and(|state| state.is_valid(change.seq()));
            (!valid).then(|| change.hash())
        }));
        Ok(accepted)
    }

    fn admit_all(
        &mut self,
        batch: &mut Batch<'_>,
        changes: Vec<Entry>,
        report: &mut ApplyReport,
        source: Source,
    ) -> Result<()> {
        let mut queue: VecDeque<Entry> = changes.into();
        while let Some((change, frame)) = queue.pop_front() {
            match self.admit(batch, &change, source)? {
                Admission::Accept(kind, role) => {
                    self.accept(batch, &change, kind, role)?;
                    for released in self.pending.release(&change.hash()) {
                        report.pending.retain(|hash| *hash != released.hash());
                        queue.push_back((released, None));
                    }
                    batch.admitted.push((change, frame));
                }
                Admission::Duplicate => report.duplicates.push(change.hash()),
                Admission::Wait(missing) if source == Source::New => {
                    match self.pending.insert(change.clone(), missing) {
                        Ok(()) => report.pending.push(change.hash()),
                        Err(refusal) => report.refused.push((Some(change.hash()), refusal)),
                    }
                }
                Admission::Wait(missing) => {
                    return Err(corrupt_in_log(
                        frame,
                        Refusal::MissingPredecessor { missing },
                    ));
                }
                Admission::Refuse(refusal) if source == Source::New => {
                    report.refused.push((Some(change.hash()), refusal))
                }
                Admission::Refuse(refusal) => return Err(corrupt_in_log(frame, refusal)),
            }
        }
        Ok(())
    }

    /// Looks a change up among those held or admitted in this group.
    fn meta(&self, batch: &Batch<'_>, hash: &ChangeHash) -> Result<Option<ChangeMeta>> {
        if let Some(change) = batch.fresh.get(hash) {
            return Ok(Some(ChangeMeta {
                position: POSITION_UNKNOWN,
                author: change.author(),
                seq: change.seq(),
                lamport: change.lamport(),
                role: batch.fresh_roles.get(hash).copied().flatten(),
            }));
        }
        if let Some(meta) = self.recent.get(hash) {
            return Ok(Some(*meta));
        }
        records::change_meta(&batch.group, hash)
    }

    /// Whether `change` is held (in the view or in this group). An author's
    /// held changes take every seq from 1 to its `head_seq` (each names its
    /// prev), so a change past its author's head is not held and costs no
    /// lookup: only one at or below it (a duplicate, or fork evidence) is
    /// looked up by hash.
    fn held(&self, batch: &Batch<'_>, change: &Change) -> Result<bool> {
        if !self.may_hold(change) {
            return Ok(false);
        }
        Ok(self.meta(batch, &change.hash())?.is_some())
    }

    /// False when `change` is certainly not held: its seq is past its
    /// author's head (see [`Writer::held`]).
    pub(crate) fn may_hold(&self, change: &Change) -> bool {
        self.authors
            .get(&change.author())
            .is_some_and(|state| change.seq() <= state.head_seq)
    }

    /// The validity rules of docs/DESIGN.md "Changes", in order. The signature was
    /// checked before (in a batch) for new changes.
    fn admit(&self, batch: &Batch<'_>, change: &Change, source: Source) -> Result<Admission> {
        if self.pending.contains(&change.hash()) || self.held(batch, change)? {
            return Ok(Admission::Duplicate);
        }
        let hash = change.hash();
        let body = change.body();
        let database_ok = if change.is_genesis() {
            hash.0 == self.database.0
        } else {
            body.database == self.database
        };
        if !database_ok {
            let actual = if change.is_genesis() {
                DatabaseId(hash.0)
            } else {
                body.database
            };
            return Ok(Admission::Refuse(Refusal::WrongDatabase {
                expected: self.database,
                actual,
            }));
        }
        if source == Source::New
            && let Some(standing) = &self.standing
            && (self.settled.get(&body.author).is_some_and(|settled| {
                body.seq <= settled.seq
                    || (body.seq == settled.seq + 1 && body.prev != Some(settled.hash))
            }) || (self.access.owner == Some(body.author)
                && body.seq <= standing.seq
                && hash != standing.checkpoint))
        {
            // Not held (that was checked first), yet at a settled seq, or
            // not continuing the settled chain: off the frontier.
            return Ok(Admission::Refuse(Refusal::OffCheckpoint {
                author: body.author,
                seq: body.seq,
                checkpoint: standing.checkpoint,
            }));
        }
        let mut lamport_max = 0;
        let mut prev_role = None;
        if let Some(prev) = body.prev {
            let Some(meta) = self.meta(batch, &prev)? else {
                return Ok(Admission::Wait(prev));
            };
            prev_role = meta.role;
            if meta.author != body.author || meta.seq + 1 != body.seq {
                let refusal = Refusal::BrokenChain {
                    author: body.author,
                    seq: body.seq,
                    expected_seq: body.seq - 1,
                };
                return Ok(Admission::Refuse(refusal));
            }
            lamport_max = meta.lamport;
        }
        for dep in &body.deps {
            let Some(meta) = self.meta(batch, dep)? else {
                return Ok(Admission::Wait(*dep));
            };
            if meta.author == body.author {
                return Ok(Admission::Refuse(Refusal::OwnDep {
                    author: body.author,
                    seq: body.seq,
                    dep: *dep,
                }));
            }
            lamport_max = lamport_max.max(meta.lamport);
        }
        let expected = lamport_max.saturating_add(1);
        if body.lamport != expected {
            return Ok(Admission::Refuse(Refusal::Lamport {
                expected,
                actual: body.lamport,
            }));
        }
        // Before the genesis a replica cannot know who may write: a change
        // waits for it (bounded pending set). Log replay keeps the order
        // the log has, which older builds did not constrain.
        if self.access.owner.is_none() && !change.is_genesis() && source == Source::New {
            return Ok(Admission::Wait(ChangeHash(self.database.0)));
        }
        let role = self.named_role(prev_role, change);
        if let Some(owner) = self.access.owner.filter(|_| self.access.members_only)
            && let Err(refusal) = access::check_admission(body.author, role, owner, &body.ops)
        {
            return Ok(Admission::Refuse(refusal));
        }
        if let Some(owner) = self.access.owner
            && body.author != owner
            // Only a change of format 3 may hold one (a structural rule).
            && body.version >= crate::change::CHECKPOINT_FORMAT_VERSION
            && body
                .ops
                .iter()
                .any(|op| matches!(op, Op::Checkpoint { .. }))
        {
            return Ok(Admission::Refuse(Refusal::NotTheOwner {
                author: body.author,
            }));
        }
        // Past a revocation (or any other limit) a change is held inert, as
        // after a fork (docs/DESIGN.md "Authorization"): never applied, never
        // forwarded on its own, but held so that a valid change naming it
        // can be checked, and so that the verdict depends only on the set.
        let state = self.authors.get(&body.author);
        // An author's held changes form a tree rooted at seq 1 (each names
        // its prev), so every seq up to head_seq is taken: a new hash at
        // such a seq is a second change for it, a fork.
        if state.is_some_and(|state| state.head_seq >= body.seq) {
            return Ok(Admission::Accept(Kind::Fork, role));
        }
        if state.is_some_and(|state| !state.is_valid(body.seq)) {
            return Ok(Admission::Accept(Kind::Inert, role));
        }
        Ok(Admission::Accept(Kind::Valid, role))
    }

    /// Records an admitted change in the indexes and, if valid, the view.
    fn accept(
        &mut self,
        batch: &mut Batch<'_>,
        change: &Change,
        kind: Kind,
        role: Option<Role>,
    ) -> Result<()> {
        let hash = change.hash();
        let body = change.body();
        write_chain_and_history(&mut batch.group, change, POSITION_UNKNOWN);
        for predecessor in change.predecessors() {
            self.heads.remove(&predecessor);
        }
        self.heads.insert(hash, (body.lamport, body.author));
        let state = self.authors.get(&body.author).copied();
        let mut state = state.unwrap_or(AuthorState {
            head_seq: 0,
            head_hash: hash,
            head_lamport: 0,
            cut: None,
            limit: None,
            revoked: None,
        });
        if body.seq > state.head_seq {
            state.head_seq = body.seq;
            state.head_hash = hash;
            state.head_lamport = body.lamport;
        }
        self.store_author(batch, body.author, state);
        batch.fresh.insert(hash, change.clone());
        batch.fresh_roles.insert(hash, role);
        if change.checkpoint().is_some() {
            // Only the owner's are admitted.
            batch
                .group
                .put(keys::checkpoint(body.seq, &hash), Vec::new());
        }
        if change.is_genesis() {
            self.access.owner = Some(body.author);
            self.access.members_only = body.ops.contains(&Op::MembersOnly);
            batch.access_changed = true;
        }
        let named = self.named_grants(change);
        if self
            .access
            .record(hash, body.author, body.seq, &body.ops, &named)
        {
            batch.access_changed = true;
        }
        if kind == Kind::Fork {
            batch.access_changed = true;
        }
        match kind {
            Kind::Valid => {
                for (index, op) in body.ops.iter().enumerate() {
                    let op_index = u32::try_from(index).expect("OPS_MAX fits in u32");
                    let stamp = Stamp {
                        lamport: body.lamport,
                        author: body.author,
                        op_index,
                    };
                    view::apply_op(&mut batch.group, stamp, op)?;
                }
            }
            Kind::Fork => self.cut(batch, body.author, body.seq - 1, state)?,
            Kind::Inert => {}
        }
        Ok(())
    }

    /// Records `author`'s new state in memory (the group writes it at
    /// finish): the one place it changes, so its invariants are checked
    /// here. An author's head only moves forward, and its `cut` (set by fork
    /// evidence) is never lifted or raised: a cut that moved up would bring
    /// back changes every other replica has cut.
    fn store_author(&mut self, batch: &mut Batch<'_>, author: Author, state: AuthorState) {
        if let Some(previous) = self.authors.get(&author) {
            debug_assert!(
                state.head_seq >= previous.head_seq,
                "{author}: head moved back from {} to {}",
                previous.head_seq,
                state.head_seq
            );
            debug_assert!(
                previous
                    .cut
                    .is_none_or(|before| state.cut.is_some_and(|cut| cut <= before)),
                "{author}: cut moved from {:?} to {:?}",
                previous.cut,
                state.cut
            );
        }
        batch.authors_changed.insert(author);
        self.authors.insert(author, state);
    }

    /// Cuts `author`'s chain after `cut_seq`: the changes past it leave the
    /// view, and only the rows they touched are recomputed.
    fn cut(
        &mut self,
        batch: &mut Batch<'_>,
        author: Author,
        cut_seq: u64,
        mut state: AuthorState,
    ) -> Result<()> {
        let valid_until = state.valid_until();
        if state.cut.is_some_and(|cut| cut <= cut_seq) {
            return Ok(());
        }
        let rows = self.rows_touched(batch, &author, cut_seq + 1, valid_until)?;
        state.cut = Some(cut_seq);
        self.store_author(batch, author, state);
        // Published with the membership: sync pushes fork evidence by it.
        self.access_generation += 1;
        tracing::warn!(%author, cut_seq, rows = rows.len(), "equivocation: author's chain cut");
        for (table, row) in rows {
            self.recompute_row(batch, &table, &row)?;
        }
        Ok(())
    }

    /// The rows that `author`'s changes at seqs `from..=to` touch.
    fn rows_touched(
        &self,
        batch: &Batch<'_>,
        author: &Author,
        from: u64,
        to: u64,
    ) -> Result<BTreeSet<(String, String)>> {
        let mut rows = BTreeSet::new();
        for seq in from..=to {
            for (key, _) in batch.group.scan_prefix(&keys::chain_prefix(author, seq))? {
                let (_, _, hash) = keys::parse_chain(&key)
                    .ok_or_else(|| Error::ViewCorrupt { key: key.clone() })?;
                let change = self.load(batch, &hash)?;
                rows.extend(
                    change
                        .ops()
                        .iter()
                        .filter_map(|op| op.row())
                        .map(|(t, r)| (t.to_owned(), r.to_owned())),
                );
            }
        }
        Ok(rows)
    }

    /// Remembers the held changes of `author` at seqs `from..=to` that were
    /// held before this group (fresh ones are published as accepted).
    fn collect_revived(
        &mut self,
        batch: &Batch<'_>,
        author: &Author,
        from: u64,
        to: u64,
    ) -> Result<()> {
        for seq in from..=to {
            for (key, _) in batch.group.scan_prefix(&keys::chain_prefix(author, seq))? {
                let (_, _, hash) = keys::parse_chain(&key)
                    .ok_or_else(|| Error::ViewCorrupt { key: key.clone() })?;
                if !batch.fresh.contains_key(&hash) {
                    let change = self.load(batch, &hash)?;
                    self.revived.push(change);
                }
            }
        }
        Ok(())
    }

    /// The grants for `change`'s author in the changes it names: (grant
    /// change, role).
    fn named_grants(&self, change: &Change) -> Vec<(ChangeHash, Role)> {
        let author = change.author();
        let mut named = Vec::new();
        for dep in &change.body().deps {
            if let Some(record) = self.access.records.iter().find(|r| r.hash == *dep) {
                for (key, role) in &record.grants {
                    if *key == author {
                        named.push((*dep, *role));
                    }
                }
            }
        }
        named
    }

    /// The author's named role after `change`.
    fn named_role(&self, prev_role: Option<Role>, change: &Change) -> Option<Role> {
        let named = self.named_grants(change);
        access::named_role(prev_role, named.into_iter().map(|(_, role)| role))
    }

    pub(crate) fn fork_cuts(&self) -> HashMap<Author, u64> {
        self.authors
            .iter()
            .filter_map(|(author, state)| state.cut.map(|cut| (*author, cut)))
            .collect()
    }

    /// Authorization's verdicts on the held facts, settlement included.
    fn evaluate(&self) -> Verdicts {
        self.access
            .evaluate(&self.fork_cuts(), &self.head_seqs(), &self.settled)
    }

    fn head_seqs(&self) -> HashMap<Author, u64> {
        self.authors
            .iter()
            .map(|(author, state)| (*author, state.head_seq))
            .collect()
    }

    /// Re-decides authorization when the group changed what it depends on,
    /// and moves each author's limit: rows of the changes that left or
    /// re-entered the valid range are recomputed.
    fn reevaluate(&mut self, batch: &mut Batch<'_>) -> Result<()> {
        if !batch.access_changed {
            return Ok(());
        }
        batch
            .group
            .put(keys::meta(keys::META_ACCESS), encode(&self.access));
        let verdicts = self.evaluate();
        let mut authors: Vec<Author> = self.authors.keys().copied().collect();
        authors.sort_unstable();
        for author in authors {
            let mut state = self.authors[&author];
            let limit = verdicts.limits.get(&author).copied();
            let revoked = verdicts.revoked.get(&author).copied();
            if state.limit == limit && state.revoked == revoked {
                continue;
            }
            let before = state.valid_until();
            state.limit = limit;
            state.revoked = revoked;
            let after = state.valid_until();
            let rows = match before.cmp(&after) {
                std::cmp::Ordering::Equal => BTreeSet::new(),
                std::cmp::Ordering::Greater => {
                    self.rows_touched(batch, &author, after + 1, before)?
                }
                std::cmp::Ordering::Less => {
                    self.collect_revived(batch, &author, before + 1, after)?;
                    self.rows_touched(batch, &author, before + 1, after)?
                }
            };
            self.store_author(batch, author, state);
            if !rows.is_empty() {
                tracing::info!(%author, before, after, rows = rows.len(), "authorization moved a chain's valid range");
            }
            for (table, row) in rows {
                self.recompute_row(batch, &table, &row)?;
            }
        }
        self.verdicts = verdicts;
        self.access_generation += 1;
        Ok(())
    }

    /// Rebuilds one row from its remaining valid history (on a trimmed
    /// replica, from its snapshot entries and the history above them).
    fn recompute_row(&self, batch: &mut Batch<'_>, table: &str, row: &str) -> Result<()> {
        view::clear_row(&mut batch.group, table, row)?;
        if let Some(snapshot) = &self.snapshot_rows {
            for family in [keys::FIELDS, keys::TOMBSTONES, keys::INCREMENTS] {
                let prefix = keys::row_prefix(family, table, row);
                for (key, value) in snapshot.entries_with_prefix(&prefix)? {
                    batch.group.put_entry(key, value)?;
                }
            }
        }
        for (key, _) in batch
            .group
            .scan_prefix(&keys::row_prefix(keys::HISTORY, table, row))?
        {
            let hash =
                keys::trailing_hash(&key).ok_or_else(|| Error::ViewCorrupt { key: key.clone() })?;
            let meta = self
                .meta(batch, &hash)?
                .ok_or(Error::MissingChange { hash })?;
            let state = self
                .authors
                .get(&meta.author)
                .ok_or(Error::MissingChange { hash })?;
            if !state.is_valid(meta.seq) {
                continue;
            }
            let change = self.load(batch, &hash)?;
            for (index, op) in change.ops().iter().enumerate() {
                if op.row() == Some((table, row)) {
                    let op_index = u32::try_from(index).expect("OPS_MAX fits in u32");
                    let stamp = Stamp {
                        lamport: change.lamport(),
                        author: change.author(),
                        op_index,
                    };
                    view::apply_op(&mut batch.group, stamp, op)?;
                }
            }
        }
        Ok(())
    }

    /// Reads a held change: from this group, else from the log.
    fn load(&self, batch: &Batch<'_>, hash: &ChangeHash) -> Result<Change> {
        if let Some(change) = batch.fresh.get(hash) {
            return Ok(change.clone());
        }
        let meta = self
            .meta(batch, hash)?
            .ok_or(Error::MissingChange { hash: *hash })?;
        self.log.read(meta.position, hash)
    }

    /// Makes the group durable (new changes), then writes it to RocksDB.
    fn finish(&mut self, mut batch: Batch<'_>, source: Source) -> Result<Vec<Change>> {
        if batch.admitted.is_empty() {
            return Ok(Vec::new());
        }
        let frames: Vec<Range<Position>> = match source {
            Source::New => {
                self.appending = true;
                let changes: Vec<Change> = batch
                    .admitted
                    .iter()
                    .map(|(change, _)| change.clone())
                    .collect();
                self.log.append(&changes)?
            }
            Source::Log => batch
                .admitted
                .iter()
                .map(|(_, frame)| frame.clone().expect("log changes come with their frame"))
                .collect(),
        };
        let mut applied_end = 0;
        for ((change, _), frame) in batch.admitted.iter().zip(&frames) {
            let body = change.body();
            let meta = ChangeMeta {
                position: frame.start.0,
                author: body.author,
                seq: body.seq,
                lamport: body.lamport,
                role: batch.fresh_roles.get(&change.hash()).copied().flatten(),
            };
            batch.group.put(keys::change(&change.hash()), encode(&meta));
            batch.group.put(
                keys::chain(&body.author, body.seq, &change.hash()),
                frame.start.0.to_be_bytes().to_vec(),
            );
            if self.recent.len() >= RECENT_CHANGES_MAX {
                self.recent.clear();
            }
            self.recent.insert(change.hash(), meta);
            applied_end = applied_end.max(frame.end.0);
        }
        self.put_authors(&mut batch);
        batch.group.put(
            keys::meta(keys::META_APPLIED),
            applied_end.to_be_bytes().to_vec(),
        );
        // The heads are few (about one per author) and change with almost
        // every change: one value per group, not a key per head.
        let mut heads: Vec<(ChangeHash, u64, Author)> = self
            .heads
            .iter()
            .map(|(hash, (lamport, author))| (*hash, *lamport, *author))
            .collect();
        heads.sort_unstable();
        batch
            .group
            .put(keys::meta(keys::META_HEADS), encode(&heads));
        let accepted: Vec<Change> = batch
            .admitted
            .into_iter()
            .map(|(change, _)| change)
            .collect();
        self.write_view(batch.group, source)?;
        let mut head_seqs = self
            .shared_head_seqs
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for author in &batch.authors_changed {
            head_seqs.insert(*author, self.authors[author].head_seq);
        }
        Ok(accepted)
    }

    /// Writes the records of the authors `batch` changed into it.
    fn put_authors(&self, batch: &mut Batch<'_>) {
        for author in &batch.authors_changed {
            batch
                .group
                .put(keys::author(author), encode(&self.authors[author]));
        }
    }

    /// Writes a group's overlay to RocksDB, as one batch: at once for new
    /// changes (their caller reads them next), and for a replay that checks
    /// no signatures on a thread of its own once the write before it has
    /// landed, the next group reading through it until [`Writer::settle`].
    fn write_view(&mut self, group: Group<'_>, source: Source) -> Result<()> {
        self.settle()?;
        let carried = group.into_carried();
        if source == Source::New || !self.background_writes {
            return write_batch(&self.view, &carried);
        }
        let carried = Arc::new(carried);
        let view = Arc::clone(&self.view);
        let write = std::thread::Builder::new()
            .name("peers-view-write".to_owned())
            .spawn({
                let carried = Arc::clone(&carried);
                move || write_batch(&view, &carried)
            })
            .map_err(|source| Error::Io {
                path: std::path::PathBuf::from("view"),
                source,
            })?;
        self.in_flight = Some(InFlight { write, carried });
        Ok(())
    }

    /// Waits for the last group's write to land. A write that failed
    /// poisons the writer: the groups after it were applied over it.
    fn settle(&mut self) -> Result<()> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        let outcome = match in_flight.write.join() {
            Ok(outcome) => outcome,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if let Err(error) = &outcome {
            self.poison(error.to_string());
        }
        outcome
    }

    /// Makes `standing` the standing checkpoint (FORMAT.md "Settlement"):
    /// records it, and moves each author's valid range to what the clamps
    /// of its settled authors now give, recomputing the rows of the changes
    /// that leave or re-enter it (those re-entering are in `revived`).
    /// The caller has checked that no held change is off its frontier.
    pub(crate) fn stand(&mut self, standing: Standing) -> Result<()> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        self.settle()?;
        let view = Arc::clone(&self.view);
        let mut batch = Batch::new(&view, None);
        self.revived.clear();
        batch
            .group
            .put(keys::meta(keys::META_STANDING), encode(&standing));
        self.settled = standing.settled.iter().copied().collect();
        self.standing = Some(standing);
        batch.access_changed = true;
        let outcome = self.reevaluate(&mut batch).and_then(|()| {
            self.put_authors(&mut batch);
            self.write_view(batch.group, Source::New)
        });
        if outcome.is_err() {
            // Nothing reached RocksDB: forget the in-memory effects.
            self.revived.clear();
            self.reload_heads()?;
        }
        outcome
    }

    /// The held changes a replay leaves out: those off the standing
    /// checkpoint's frontier.
    pub(crate) fn off_frontier(&self) -> HashSet<ChangeHash> {
        self.standing
            .iter()
            .flat_map(|standing| standing.off.iter().copied())
            .collect()
    }

    /// Whether a held change of a settled author may be off the frontier
    /// of `standing`: the author forked at or below its entry (every held
    /// change off the frontier is one of the two changes of such a fork, or
    /// names one). Settling then needs a replay that leaves them out.
    pub(crate) fn holds_off_frontier(&self, standing: &Standing) -> bool {
        standing.settled.iter().any(|(author, settled)| {
            self.authors
                .get(author)
                .and_then(|state| state.cut)
                .is_some_and(|cut| cut < settled.seq)
        })
    }
}

/// Writes a group's batch to RocksDB (without RocksDB's own WAL: the log
/// is ours, and the applied position says how far the view got).
fn write_batch(view: &DB, carried: &Carried) -> Result<()> {
    fail::fail_point!("engine::view-write", |_| Err(Error::Io {
        path: std::path::PathBuf::from("view"),
        source: std::io::Error::other("failpoint engine::view-write"),
    }));
    let mut write_options = rocksdb::WriteOptions::default();
    write_options.disable_wal(true);
    view.write_opt(carried.batch(), &write_options)?;
    Ok(())
}

/// A change read from the log that the rules refuse.
fn corrupt_in_log(frame: Option<Range<Position>>, refusal: Refusal) -> Error {
    let position = frame.map_or(Position(POSITION_UNKNOWN), |frame| frame.start);
    corrupt_at(position, refusal)
}

/// Indexes a change by (author, seq) and by every row it touches. The
/// position is filled in (chain rewritten) once the change is in the log.
fn write_chain_and_history(group: &mut Group<'_>, change: &Change, position: u64) {
    let body = change.body();
    let hash = change.hash();
    group.put(
        keys::chain(&body.author, body.seq, &hash),
        position.to_be_bytes().to_vec(),
    );
    let rows: BTreeSet<(&str, &str)> = body.ops.iter().filter_map(|op| op.row()).collect();
    for (table, row) in rows {
        group.put(
            keys::history(table, row, body.lamport, &body.author, &hash),
            Vec::new(),
        );
    }
}

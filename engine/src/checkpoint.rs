//! Checkpoints (FORMAT.md "Checkpoints, trimming and snapshots"): the
//! settled chains of a frontier, the snapshot state of its closure and its
//! hash, and the three checks that confirm a checkpoint or make it void.
//!
//! Built: making a checkpoint ([`crate::Db::checkpoint`]), judging one
//! ([`crate::Db::checkpoint_verdict`]), and settlement ([`Standing`],
//! [`Settled`]; [`crate::Db::settle`]): what a standing checkpoint keeps
//! valid for ever, and the changes it refuses.

use crate::{HashMap, HashSet};

use bincode::{Decode, Encode};
use rocksdb::{DB, Direction, IteratorMode};

use crate::access::Access;
use crate::change::{Author, Change, ChangeHash, DatabaseId, FrontierEntry, Op, SnapshotHash};
use crate::error::{Error, Result};
use crate::keys;
use crate::records::{AuthorState, ChangeMeta, Settled};
use crate::view::{decode, encode};

/// blake3 derive-key context of the snapshot hash.
pub const SNAPSHOT_HASH_CONTEXT: &str = "peers 2026-12-03 snapshot v1";

/// What a replica concludes about a checkpoint (FORMAT.md "Confirming a
/// checkpoint").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointVerdict {
    /// Every check passed.
    Confirmed,
    /// The replica does not hold this change of the frontier (by hash, with
    /// the entry's author and seq), so it cannot judge the checkpoint yet.
    Unconfirmed {
        /// The first change of the frontier found missing.
        missing: ChangeHash,
    },
    /// A check failed: the checkpoint never has an effect.
    Void(VoidReason),
}

impl std::fmt::Display for CheckpointVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointVerdict::Confirmed => write!(f, "confirmed"),
            CheckpointVerdict::Unconfirmed { missing } => {
                write!(f, "unconfirmed: this replica lacks {missing}")
            }
            CheckpointVerdict::Void(reason) => write!(f, "void: {reason}"),
        }
    }
}

/// Why a checkpoint is void, in the order the checks run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoidReason {
    /// A change of the closure names a change off the frontier's chains.
    #[error("not closed: {change} names {names}, which is not at or below the frontier")]
    NotClosed {
        /// The naming change.
        change: ChangeHash,
        /// What it names.
        names: ChangeHash,
    },
    /// The owner's previous checkpoint names a change outside this closure.
    #[error("regresses: the previous checkpoint {previous} names {missing}, outside this frontier")]
    Regresses {
        /// The previous checkpoint.
        previous: ChangeHash,
        /// A change it names that this frontier lacks.
        missing: ChangeHash,
    },
    /// The owner's previous checkpoint is void, so no later one stands.
    #[error("after void: the previous checkpoint {previous} is void")]
    AfterVoid {
        /// The previous checkpoint.
        previous: ChangeHash,
    },
    /// The snapshot hash of the closure is not the one the checkpoint signs.
    #[error("the state at the frontier hashes to {actual}, not {expected}")]
    StateMismatch {
        /// The checkpoint's.
        expected: SnapshotHash,
        /// The closure's.
        actual: SnapshotHash,
    },
}

/// The standing checkpoint, as the view records it under
/// `keys::META_STANDING`: its hash, and what it settles, per author of its
/// frontier.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub(crate) struct Standing {
    /// The checkpoint.
    pub checkpoint: ChangeHash,
    /// Its seq on the owner's chain.
    pub seq: u64,
    /// Per author of its frontier, in author order.
    pub settled: Vec<(Author, Settled)>,
    /// The held changes off its frontier (or an earlier standing one's),
    /// sorted: they stay in the log, ignored by every rule; a replay of
    /// the log leaves them out. Empty unless an author forked below a
    /// frontier before the checkpoint stood here.
    pub off: Vec<ChangeHash>,
}

/// What a checkpoint of `frontier` settles, read from `view`, a view that
/// holds exactly the snapshot state of the frontier (a closure's scratch
/// view, or one loaded from its snapshot file): `L(a)` is each frontier
/// author's highest valid seq there.
pub(crate) fn settled_in(view: &DB, frontier: &[FrontierEntry]) -> Result<Vec<(Author, Settled)>> {
    let mut settled = Vec::with_capacity(frontier.len());
    for entry in frontier {
        let key = keys::author(&entry.author);
        let state: AuthorState = match view.get(&key)? {
            Some(bytes) => decode(&bytes, &key)?,
            None => return Err(Error::ViewCorrupt { key }),
        };
        // A closure's head is its entry; a snapshot state that says
        // otherwise was signed wrong (by the owner: only a replica that
        // bootstraps from it can meet one) and is refused.
        if state.head_seq != entry.seq {
            return Err(Error::Snapshot(crate::SnapshotError::FrontierMismatch {
                author: entry.author,
            }));
        }
        settled.push((
            entry.author,
            Settled {
                seq: entry.seq,
                hash: entry.hash,
                valid_until: state.valid_until().min(entry.seq),
            },
        ));
    }
    Ok(settled)
}

impl Standing {
    /// The standing checkpoint `view` records, if any.
    pub(crate) fn load(view: &DB) -> Result<Option<Standing>> {
        let key = keys::meta(keys::META_STANDING);
        view.get(&key)?
            .map(|bytes| decode(&bytes, &key))
            .transpose()
    }
}

/// Records in `view` that `checkpoint` stands, where `view` holds exactly
/// its snapshot state (a view just loaded from its snapshot file: trimming
/// and bootstrap). Nothing changes validity there: the snapshot state is
/// already what the checkpoint settles.
pub(crate) fn record_standing(view: &DB, checkpoint: &Change) -> Result<Standing> {
    let (frontier, _) = checkpoint.checkpoint().ok_or(Error::NotACheckpoint {
        hash: checkpoint.hash(),
    })?;
    let standing = Standing {
        checkpoint: checkpoint.hash(),
        seq: checkpoint.seq(),
        settled: settled_in(view, frontier)?,
        off: Vec::new(),
    };
    view.put(keys::meta(keys::META_STANDING), encode(&standing))?;
    Ok(standing)
}

/// Decides, for the changes of a log in log order (a causal order), which
/// are off a standing checkpoint's frontier (FORMAT.md "Settlement", rule
/// 2): a frontier author's change at or below its entry that is not in the
/// closure, an owner's change at or below the checkpoint's seq other than
/// the checkpoint, and every change that names one of these.
pub(crate) struct OffFrontier {
    /// The checkpoint's closure (from [`settled_chains`]).
    pub closure: Hashes,
    settled: crate::HashMap<Author, u64>,
    owner: Author,
    checkpoint: ChangeHash,
    checkpoint_seq: u64,
    /// The changes found off the frontier so far.
    pub off: HashSet<ChangeHash>,
}

impl OffFrontier {
    /// For `checkpoint` (the owner's), whose closure is `closure`.
    pub(crate) fn new(checkpoint: &Change, closure: Hashes) -> Result<OffFrontier> {
        let (frontier, _) = checkpoint.checkpoint().ok_or(Error::NotACheckpoint {
            hash: checkpoint.hash(),
        })?;
        Ok(OffFrontier {
            closure,
            settled: frontier
                .iter()
                .map(|entry| (entry.author, entry.seq))
                .collect(),
            owner: checkpoint.author(),
            checkpoint: checkpoint.hash(),
            checkpoint_seq: checkpoint.seq(),
            off: HashSet::default(),
        })
    }

    /// Whether `change`, the next of the log outside the closure, is off
    /// the frontier (remembered if so, for the changes after it).
    pub(crate) fn is_off(&mut self, change: &Change) -> bool {
        let hash = change.hash();
        let settled_seq = if change.author() == self.owner {
            Some(self.checkpoint_seq)
        } else {
            self.settled.get(&change.author()).copied()
        };
        let off = (settled_seq.is_some_and(|seq| change.seq() <= seq)
            && hash != self.checkpoint
            && !self.closure.contains(&hash))
            || change.predecessors().any(|named| self.off.contains(&named));
        if off {
            self.off.insert(hash);
        }
        off
    }
}

/// The settled chains of a frontier, when the replica holds all of them and
/// they are closed.
pub(crate) struct Closure {
    /// Every change of the closure.
    pub changes: Hashes,
    /// The owner's latest checkpoint in the closure (its hash and frontier).
    pub previous: Option<(ChangeHash, Vec<FrontierEntry>)>,
    /// On a trimmed replica, the checkpoint it trimmed at, when a walk
    /// reached a change that checkpoint settled: the rest of the closure is
    /// that checkpoint's, held as its snapshot state, and `changes` holds
    /// only what lies above it.
    pub base: Option<ChangeHash>,
}

/// Walks each entry's chain down to seq 1 (`read` looks a held change up)
/// and checks that every change of it names only changes of the walked
/// chains (check 1, "closed"). `Err` is the verdict when the walk cannot
/// confirm: a change missing, or not closed. On a trimmed replica, `read`
/// of a change settled by the checkpoint it trimmed at is
/// [`Error::Trimmed`]: a walk stops there (that change and its causal past
/// are in that checkpoint's closure), and a change that names one is
/// closed; [`Closure::base`] says so.
pub(crate) fn settled_chains(
    frontier: &[FrontierEntry],
    owner: Author,
    mut read: impl FnMut(&ChangeHash) -> Result<Option<Change>>,
) -> Result<std::result::Result<Closure, CheckpointVerdict>> {
    use std::collections::BinaryHeap;
    let mut changes = Vec::new();
    // Each named change not walked yet, with the first walked change that
    // names it. The chains are walked together, highest lamport first: a
    // change's lamport is above every change it names, so a named change
    // is always walked after the change naming it, and only the names that
    // cross the walk's lamport stay here (walked chain by chain, every
    // change's names stayed: 537 MB of them at 1M changes of 10 authors).
    let mut named: HashMap<ChangeHash, ChangeHash> = HashMap::default();
    let mut previous = None;
    let mut base = None;
    // The next change of each chain (none once it ends), by its lamport.
    let mut walks = BinaryHeap::new();
    for entry in frontier {
        let next = (entry.author, entry.hash, entry.seq);
        if let Some(missing) = follow(&mut read, next, &mut walks, &mut base)? {
            return Ok(Err(CheckpointVerdict::Unconfirmed { missing }));
        }
    }
    while let Some(Walk(change)) = walks.pop() {
        let hash = change.hash();
        changes.push(hash);
        named.remove(&hash);
        for dep in &change.body().deps {
            named.entry(*dep).or_insert(hash);
        }
        if change.author() == owner
            && previous.is_none()
            && let [Op::Checkpoint { frontier, .. }] = change.ops()
        {
            previous = Some((hash, frontier.clone()));
        }
        if let Some(prev) = change.body().prev {
            let next = (change.author(), prev, change.seq() - 1);
            if let Some(missing) = follow(&mut read, next, &mut walks, &mut base)? {
                return Ok(Err(CheckpointVerdict::Unconfirmed { missing }));
            }
        }
    }
    let changes = Hashes::from(changes);
    // What is left is named and outside the chains: settled by the
    // checkpoint this replica trimmed at, or the closure is not closed.
    // (A held change names only lower lamports, so none of these was
    // walked; the filter keeps the check exact even if one were.)
    let mut left: Vec<(ChangeHash, ChangeHash)> = named
        .into_iter()
        .filter(|(names, _)| !changes.contains(names))
        .map(|(names, change)| (change, names))
        .collect();
    left.sort_unstable();
    for (change, names) in left {
        match read(&names) {
            Err(Error::Trimmed { checkpoint, .. }) => base = Some(checkpoint),
            Err(error) => return Err(error),
            Ok(_) => {
                return Ok(Err(CheckpointVerdict::Void(VoidReason::NotClosed {
                    change,
                    names,
                })));
            }
        }
    }
    Ok(Ok(Closure {
        changes,
        previous,
        base,
    }))
}

/// A set of change hashes held sorted, looked up by binary search: 32
/// bytes a change, where a hash set took 69 MB for a closure of 1M.
pub(crate) struct Hashes(Vec<ChangeHash>);

impl Hashes {
    pub(crate) fn contains(&self, hash: &ChangeHash) -> bool {
        self.0.binary_search(hash).is_ok()
    }
}

impl From<Vec<ChangeHash>> for Hashes {
    fn from(mut hashes: Vec<ChangeHash>) -> Hashes {
        hashes.sort_unstable();
        hashes.dedup();
        hashes.shrink_to_fit();
        Hashes(hashes)
    }
}

/// A chain's next change in [`settled_chains`]' walk, ordered by lamport
/// (then hash, so that the order is total).
struct Walk(Change);

impl PartialEq for Walk {
    fn eq(&self, other: &Self) -> bool {
        self.0.hash() == other.0.hash()
    }
}

impl Eq for Walk {}

impl PartialOrd for Walk {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Walk {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.lamport(), self.0.hash()).cmp(&(other.0.lamport(), other.0.hash()))
    }
}

/// Reads `author`'s change `hash` at `seq`, the next of its chain in
/// [`settled_chains`]' walk: queued in `walks`; or, settled by the
/// checkpoint this replica trimmed at, the chain ends there (`base`).
/// Returns the hash when it is not held, or not that author's at `seq`.
fn follow(
    read: &mut impl FnMut(&ChangeHash) -> Result<Option<Change>>,
    (author, hash, seq): (Author, ChangeHash, u64),
    walks: &mut std::collections::BinaryHeap<Walk>,
    base: &mut Option<ChangeHash>,
) -> Result<Option<ChangeHash>> {
    match read(&hash) {
        Ok(Some(change)) if change.author() == author && change.seq() == seq => {
            walks.push(Walk(change));
            Ok(None)
        }
        Err(Error::Trimmed { checkpoint, .. }) => {
            *base = Some(checkpoint);
            Ok(None)
        }
        Ok(_) => Ok(Some(hash)),
        Err(error) => Err(error),
    }
}

/// Calls `each` with every entry of the snapshot state of `view` (a view
/// built from a closure alone), in key order: the view less `history` and
/// the meta keys but `access` and `heads`, with log positions written as 0
/// and the access record's lists sorted (FORMAT.md "Frontier, closure,
/// snapshot hash").
pub(crate) fn snapshot_entries_each(view: &DB, mut each: impl FnMut(&[u8], &[u8])) -> Result<()> {
    for item in view.iterator(IteratorMode::From(&[keys::META], Direction::Forward)) {
        let (key, value) = item?;
        match key.first().copied() {
            Some(keys::META) => {
                let name = &key[1..];
                if name == keys::META_HEADS {
                    each(&key, &value);
                } else if name == keys::META_ACCESS {
                    let mut access: Access = decode(&value, &key)?;
                    access
                        .records
                        .sort_by_key(|record| (record.author, record.seq, record.hash));
                    access
                        .steps
                        .sort_by_key(|step| (step.author, step.seq, step.grant));
                    each(&key, &encode(&access));
                }
            }
            Some(keys::CHANGES) => {
                let mut meta: ChangeMeta = decode(&value, &key)?;
                meta.position = 0;
                each(&key, &encode(&meta));
            }
            Some(keys::CHAIN) => each(&key, &0u64.to_be_bytes()),
            Some(keys::HISTORY | keys::CHECKPOINTS) => {}
            _ => each(&key, &value),
        }
    }
    Ok(())
}

/// The snapshot hash, fed one entry at a time (FORMAT.md "Frontier,
/// closure, snapshot hash"): the one computation behind a checkpoint and a
/// snapshot file.
pub(crate) struct SnapshotHasher(blake3::Hasher);

impl SnapshotHasher {
    pub(crate) fn new(database: DatabaseId, frontier: &[FrontierEntry]) -> SnapshotHasher {
        let mut hasher = blake3::Hasher::new_derive_key(SNAPSHOT_HASH_CONTEXT);
        hasher.update(&database.0);
        hasher.update(&encode(&frontier.to_vec()));
        SnapshotHasher(hasher)
    }

    pub(crate) fn entry(&mut self, key: &[u8], value: &[u8]) {
        self.0.update(&(key.len() as u64).to_le_bytes());
        self.0.update(key);
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value);
    }

    pub(crate) fn finish(&self) -> SnapshotHash {
        SnapshotHash(*self.0.finalize().as_bytes())
    }
}

/// The snapshot hash of `view` (built from the closure of `frontier` alone).
pub(crate) fn snapshot_hash(
    view: &DB,
    database: DatabaseId,
    frontier: &[FrontierEntry],
) -> Result<SnapshotHash> {
    let mut hasher = SnapshotHasher::new(database, frontier);
    snapshot_entries_each(view, |key, value| hasher.entry(key, value))?;
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closure's set, built from hashes in any order with repeats, holds
    /// exactly those hashes.
    #[test]
    fn hashes_hold_exactly_what_they_were_built_from() {
        let hash = |n: u8| ChangeHash([n; 32]);
        let set = Hashes::from(vec![hash(9), hash(3), hash(9), hash(200), hash(0)]);
        for n in [0, 3, 9, 200] {
            assert!(set.contains(&hash(n)), "{n}");
        }
        for n in [1, 4, 10, 255] {
            assert!(!set.contains(&hash(n)), "{n}");
        }
    }
}

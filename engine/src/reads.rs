//! Reads of the view: scans, history, changes since a version vector, and
//! the state hash.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::{HashMap, HashSet};
use std::sync::Arc;

use rocksdb::{DB, DBIteratorWithThreadMode, Direction, IteratorMode};

use crate::change::{Author, Change, ChangeHash, Op, StateHash};
use crate::error::{Error, Result};
use crate::keys;
use crate::log::Log;
use crate::records::{self, AuthorState, ChangeMeta, author_of_key};
use crate::version_vector::{Head, VersionVector};
use crate::view::{FieldState, Group, decode};

/// A row: field name to value.
pub type Row = std::collections::BTreeMap<String, crate::Value>;

/// Streams rows of a table (or of one row prefix) from RocksDB, grouping
/// field entries by row id. Holds one RocksDB iterator; never the table.
pub struct Scan<'a> {
    iter: DBIteratorWithThreadMode<'a, DB>,
    prefix: Vec<u8>,
    table_prefix_bytes: usize,
    current: Option<(String, Row)>,
    done: bool,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(view: &'a DB, prefix: Vec<u8>, table_prefix_bytes: usize) -> Self {
        let iter = view.iterator(IteratorMode::From(&prefix, Direction::Forward));
        Scan {
            iter,
            prefix,
            table_prefix_bytes,
            current: None,
            done: false,
        }
    }

    fn entry(&self, key: &[u8], value: &[u8]) -> Result<(String, String, Option<crate::Value>)> {
        let corrupt = || Error::ViewCorrupt { key: key.to_vec() };
        let (row, rest) =
            keys::take_component(&key[self.table_prefix_bytes..]).ok_or_else(corrupt)?;
        let (field, rest) = keys::take_component(rest).ok_or_else(corrupt)?;
        if !rest.is_empty() {
            return Err(corrupt());
        }
        let state: FieldState = decode(value, key)?;
        Ok((row, field, state.value()))
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(String, Row)>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(item) = self.iter.next() else {
                self.done = true;
                break;
            };
            let (key, value) = match item {
                Ok(pair) => pair,
                Err(error) => return Some(Err(error.into())),
            };
            if !key.starts_with(&self.prefix) {
                self.done = true;
                break;
            }
            let (row, field, value) = match self.entry(&key, &value) {
                Ok(entry) => entry,
                Err(error) => return Some(Err(error)),
            };
            let Some(value) = value else { continue };
            match &mut self.current {
                Some((current_row, fields)) if *current_row == row => {
                    fields.insert(field, value);
                }
                _ => {
                    let finished = self.current.replace((row, Row::from([(field, value)])));
                    if finished.is_some() {
                        return finished.map(Ok);
                    }
                }
            }
        }
        self.current.take().map(Ok)
    }
}

/// One change in a row's history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The change.
    pub hash: ChangeHash,
    /// Its author.
    pub author: Author,
    /// Its seq.
    pub seq: u64,
    /// Its lamport.
    pub lamport: u64,
    /// Its wall clock (informational).
    pub wall_ms: u64,
    /// Whether it counts in the view (false past its author's cut).
    pub valid: bool,
    /// Its ops on this row.
    pub ops: Vec<Op>,
}

pub(crate) fn history(view: &DB, log: &Log, table: &str, row: &str) -> Result<Vec<HistoryEntry>> {
    let group = Group::new(view);
    let mut entries = Vec::new();
    for (key, _) in group.scan_prefix(&keys::row_prefix(keys::HISTORY, table, row))? {
        let hash =
            keys::trailing_hash(&key).ok_or_else(|| Error::ViewCorrupt { key: key.clone() })?;
        let meta = change_meta(&group, &hash)?;
        let state =
            records::author_state(&group, &meta.author)?.ok_or(Error::MissingChange { hash })?;
        let change = log.read(meta.position, &hash)?;
        entries.push(HistoryEntry {
            hash,
            author: meta.author,
            seq: meta.seq,
            lamport: meta.lamport,
            wall_ms: change.body().wall_ms,
            valid: state.is_valid(meta.seq),
            ops: change
                .ops()
                .iter()
                .filter(|op| op.row() == Some((table, row)))
                .cloned()
                .collect(),
        });
    }
    Ok(entries)
}

/// A held change's record; [`Error::MissingChange`] if it is not held.
fn change_meta(group: &Group<'_>, hash: &ChangeHash) -> Result<ChangeMeta> {
    records::change_meta(group, hash)?.ok_or(Error::MissingChange { hash: *hash })
}

/// Every author's advertised head (see [`crate::Db::version_vector`]): its
/// highest seq held, or, once it is cut for a fork, its cut. The change at
/// the cut is the same on every replica (the chain below the first fork is
/// one chain); a fork at seq 1 is advertised as seq 0 with the zero hash.
pub(crate) fn version_vector(view: &DB) -> Result<VersionVector> {
    let mut vector = VersionVector::new();
    heads_between(view, &Author([0; 32]), None, &mut |author, head| {
        vector.insert(author, head);
        true
    })?;
    Ok(vector)
}

/// The advertised heads of the authors whose keys are at least `from` and
/// below `until` (`None`: to the last), in key order, until `visit` returns
/// false. Holds one RocksDB iterator, never the vector.
pub(crate) fn heads_between(
    view: &DB,
    from: &Author,
    until: Option<&Author>,
    visit: &mut dyn FnMut(Author, Head) -> bool,
) -> Result<()> {
    let start = keys::author(from);
    for item in view.iterator(IteratorMode::From(&start, Direction::Forward)) {
        let (key, value) = item?;
        if key.first() != Some(&keys::AUTHORS) {
            break;
        }
        let author = author_of_key(&key)?;
        if until.is_some_and(|until| author >= *until) {
            break;
        }
        let state: AuthorState = decode(&value, &key)?;
        if !visit(author, advertised_head(view, &author, &state)?) {
            break;
        }
    }
    Ok(())
}

/// An author's head as sync advertises it.
fn advertised_head(view: &DB, author: &Author, state: &AuthorState) -> Result<Head> {
    Ok(match state.cut {
        None => Head {
            seq: state.head_seq,
            hash: state.head_hash,
        },
        Some(0) => Head {
            seq: 0,
            hash: ChangeHash([0; 32]),
        },
        Some(cut) => Head {
            seq: cut,
            hash: chain_entry(view, author, cut)?.ok_or(Error::ViewCorrupt {
                key: keys::chain_prefix(author, cut),
            })?,
        },
    })
}

/// The hash of `author`'s change at `seq` (the lowest, if several).
fn chain_entry(view: &DB, author: &Author, seq: u64) -> Result<Option<ChangeHash>> {
    let prefix = keys::chain_prefix(author, seq);
    let Some(item) = view
        .iterator(IteratorMode::From(&prefix, Direction::Forward))
        .next()
    else {
        return Ok(None);
    };
    let (key, _) = item?;
    if !key.starts_with(&prefix) {
        return Ok(None);
    }
    let (_, _, hash) =
        keys::parse_chain(&key).ok_or_else(|| Error::ViewCorrupt { key: key.to_vec() })?;
    Ok(Some(hash))
}

/// Changes a replica lacks, in log order, read lazily from the log: a merge
/// of per-author cursors over the chain index, so memory grows with the
/// number of authors that have something to send, not with the number of
/// changes, and dropping it stops the work at once (a peer that hangs up
/// costs nothing more).
pub struct ChangesSince {
    view: Arc<DB>,
    log: Log,
    /// The next chain entry of every range with something left, by log
    /// position.
    heads: BinaryHeap<Reverse<(u64, ChangeHash, usize)>>,
    ranges: Vec<ChainRange>,
    /// Per author with a boundary (cut or authorization limit): the last seq
    /// sent on its own; past it a change goes only when a sent change names
    /// it.
    boundaries: HashMap<Author, u64>,
    /// Per cut author, the seq of its fork evidence (sent by a cursor).
    evidence: HashMap<Author, u64>,
    /// Cut changes queued because a change being sent names them.
    named: HashSet<ChangeHash>,
    /// Read changes waiting for their turn, by log position.
    ready: BTreeMap<u64, Change>,
    /// An upper bound of what remains (the named cut changes aside).
    remaining: usize,
}

/// The seqs `first..=last` of one author's chain (both branches of a fork,
/// when there are two changes at a seq).
struct ChainRange {
    author: Author,
    last: u64,
}

impl ChangesSince {
    /// How many changes remain, at most (a chain whose changes were held
    /// twice at a seq counts once per seq; the cut changes that sent ones
    /// name come on top).
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Takes the next chain entry of `range` after `after` (a chain key).
    fn advance(&mut self, range: usize, after: &[u8]) -> Result<()> {
        let author = self.ranges[range].author;
        let last = self.ranges[range].last;
        let mut iter = self
            .view
            .iterator(IteratorMode::From(after, Direction::Forward));
        for item in iter.by_ref() {
            let (key, value) = item?;
            if &key[..] == after {
                continue;
            }
            let Some((key_author, seq, hash)) = keys::parse_chain(&key) else {
                return Ok(());
            };
            if key_author != author || seq > last {
                return Ok(());
            }
            let position: [u8; 8] = value
                .as_ref()
                .try_into()
                .map_err(|_| Error::ViewCorrupt { key: key.to_vec() })?;
            self.heads
                .push(Reverse((u64::from_be_bytes(position), hash, range)));
            return Ok(());
        }
        Ok(())
    }

    /// Queues the cut changes `change` names that the peer is not sent on
    /// their own, and, recursively, the ones those name.
    fn queue_named(&mut self, change: &Change) -> Result<()> {
        if self.boundaries.is_empty() {
            return Ok(());
        }
        let group = Group::new(&self.view);
        let mut stack: Vec<ChangeHash> = change.predecessors().collect();
        while let Some(named) = stack.pop() {
            if self.named.contains(&named) {
                continue;
            }
            let Ok(meta) = change_meta(&group, &named) else {
                continue;
            };
            let past = self
                .boundaries
                .get(&meta.author)
                .is_some_and(|boundary| meta.seq > *boundary);
            // Fork evidence has a cursor of its own.
            let evidence = self.evidence.get(&meta.author) == Some(&meta.seq);
            if !past || evidence {
                continue;
            }
            self.named.insert(named);
            let cut_change = self.log.read(meta.position, &named)?;
            stack.extend(cut_change.predecessors());
            self.ready.insert(meta.position, cut_change);
        }
        Ok(())
    }
}

impl Iterator for ChangesSince {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        // A queued change goes first when no chain entry comes before it.
        let next_chain = self.heads.peek().map(|Reverse((position, ..))| *position);
        if let Some((&position, _)) = self.ready.first_key_value()
            && next_chain.is_none_or(|chain| position < chain)
        {
            return self.ready.pop_first().map(|(_, change)| Ok(change));
        }
        let Reverse((position, hash, range)) = self.heads.pop()?;
        self.remaining = self.remaining.saturating_sub(1);
        let step = (|| {
            let change = self.log.read(position, &hash)?;
            let key = keys::chain(&change.author(), change.seq(), &hash);
            self.advance(range, &key)?;
            self.queue_named(&change)?;
            Ok(change)
        })();
        match step {
            Ok(change) => {
                self.ready.insert(position, change);
                self.ready.pop_first().map(|(_, change)| Ok(change))
            }
            Err(error) => {
                // A failed read ends the stream.
                self.heads.clear();
                self.ready.clear();
                Some(Err(error))
            }
        }
    }
}

/// The held changes a replica at `since` lacks, in log order:
/// - per author, the valid changes past the replica's head, or all of them
///   when its head hash is not one this replica holds (the two diverged),
///   and then also the inert ones up to the replica's head seq (our branch
///   of the fork, so the replica finds it);
/// - for a cut author, the changes at `cut + 1`: the fork evidence, always,
///   so every replica learns of the fork;
/// - any other cut change only when a change being sent names it (with the
///   chain below it), so the receiver can check that change's lamport.
///
/// Setting it up costs one look at each author; each change then costs a
/// seek in the chain index and a read of the log (and, when some author is
/// cut, a lookup of each change it names).
pub(crate) fn changes_since(
    view: &Arc<DB>,
    log: &Log,
    since: &VersionVector,
) -> Result<ChangesSince> {
    let group = Group::new(view);
    let mut stream = ChangesSince::empty(view, log);
    for (key, value) in group.scan_prefix(&[keys::AUTHORS])? {
        let author = author_of_key(&key)?;
        let state: AuthorState = decode(&value, &key)?;
        stream.add_author(&group, author, &state, since.get(&author))?;
    }
    Ok(stream)
}

/// [`changes_since`] for the listed authors only, each with the peer's
/// advertised head (`None`: it holds none of that author's changes); the
/// authors not listed are the peer's business (range reconciliation found
/// them equal). An author this replica does not hold is skipped.
pub(crate) fn changes_since_heads(
    view: &Arc<DB>,
    log: &Log,
    heads: &[(Author, Option<Head>)],
) -> Result<ChangesSince> {
    let group = Group::new(view);
    let mut stream = ChangesSince::empty(view, log);
    for (author, head) in heads {
        let Some(state) = records::author_state(&group, author)? else {
            continue;
        };
        stream.add_author(&group, *author, &state, head.as_ref())?;
    }
    Ok(stream)
}

impl ChangesSince {
    fn empty(view: &Arc<DB>, log: &Log) -> ChangesSince {
        ChangesSince {
            view: Arc::clone(view),
            log: log.clone(),
            heads: BinaryHeap::new(),
            ranges: Vec::new(),
            boundaries: HashMap::default(),
            evidence: HashMap::default(),
            named: HashSet::default(),
            ready: BTreeMap::new(),
            remaining: 0,
        }
    }

    /// Adds what a peer at `head` lacks of `author`'s chain.
    fn add_author(
        &mut self,
        group: &Group<'_>,
        author: Author,
        state: &AuthorState,
        head: Option<&Head>,
    ) -> Result<()> {
        // The last seq sent whatever its validity: when the peer's head is
        // a change we do not hold at a seq we hold one at, the two chains
        // forked at or below it. Our branch goes up to that seq, inert
        // changes too, so the peer finds the fork at once: were only valid
        // changes sent, a branch inert on both sides (past a revocation one
        // side has not heard of yet) would never come to light, and a
        // change naming it would wait for ever.
        let mut diverged_until = 0;
        let from_seq = match head {
            None => 1,
            Some(head) if group.contains(&keys::change(&head.hash))? => head.seq + 1,
            // Ahead of us on a chain we do not know: nothing of ours is new to
            // them unless they forked, and then their side sends us their
            // branch (our head is unknown to them, at a seq they hold), we
            // cut, and the evidence goes back below. The boundary still
            // counts: a change past it that a sent change names goes with
            // it, or the peer would wait on it for ever.
            Some(head) if head.seq > state.head_seq && state.cut.is_none() => u64::MAX,
            // Our heads differ at a seq we both hold: the chains diverged
            // somewhere below; send ours whole (the receiver drops duplicates).
            Some(head) => {
                diverged_until = head.seq.min(state.head_seq);
                1
            }
        };
        let mut ranges = vec![(from_seq, state.valid_until().max(diverged_until))];
        if let Some(cut) = state.cut
            && cut + 1 > diverged_until
        {
            ranges.push((cut + 1, cut + 1));
            self.evidence.insert(author, cut + 1);
        }
        for (first, last) in ranges {
            if first > last {
                continue;
            }
            self.remaining += usize::try_from(last - first + 1).unwrap_or(usize::MAX);
            self.ranges.push(ChainRange { author, last });
            let range = self.ranges.len() - 1;
            // The entry before `first` does not exist: start the cursor at
            // the prefix of `first` itself.
            let start = keys::chain_prefix(&author, first);
            self.advance(range, &start)?;
        }
        let boundary = state
            .cut
            .map(|cut| cut + 1)
            .into_iter()
            .chain(state.limit)
            .min();
        if let Some(boundary) = boundary {
            self.boundaries.insert(author, boundary.max(diverged_until));
        }
        Ok(())
    }
}

/// Calls `each` with every materialized entry (fields, tombstones,
/// increments) in key order: what the state hash covers. Indexes are left
/// out: they hold log positions, which differ between replicas that received
/// the same changes in other orders.
fn state_entries_each(view: &DB, mut each: impl FnMut(&[u8], &[u8])) -> Result<()> {
    for item in view.iterator(IteratorMode::From(&[keys::FIELDS], Direction::Forward)) {
        let (key, value) = item?;
        if key[0] > keys::INCREMENTS {
            break;
        }
        each(&key, &value);
    }
    Ok(())
}

/// blake3 over the entries of [`state_entries_each`], each as its key and
/// value with their lengths.
pub(crate) fn state_hash(view: &DB) -> Result<StateHash> {
    let mut hasher = blake3::Hasher::new_derive_key("peers 2026-11-28 state hash v1");
    state_entries_each(view, |key, value| {
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(key);
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value);
    })?;
    Ok(StateHash(*hasher.finalize().as_bytes()))
}

/// The entries [`state_hash`] covers, in the order it hashes them (tests
/// compare them with a fixture's).
#[cfg(feature = "testing")]
pub(crate) fn state_entries(view: &DB) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut entries = Vec::new();
    state_entries_each(view, |key, value| {
        entries.push((key.to_vec(), value.to_vec()))
    })?;
    Ok(entries)
}

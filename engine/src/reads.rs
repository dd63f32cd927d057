//! Reads of the view: scans, history, changes since a version vector, and
//! the state hash.

use std::collections::{BTreeMap, HashMap};

use peers_wal::Wal;
use rocksdb::{DB, DBIteratorWithThreadMode, Direction, IteratorMode};

use crate::change::{Author, Change, ChangeHash, Op, StateHash};
use crate::db::{Row, read_change};
use crate::engine::{AuthorState, ChangeMeta, Engine};
use crate::error::{Error, Result};
use crate::keys;
use crate::version_vector::{Head, VersionVector};
use crate::view::{FieldState, Group, decode};

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

pub(crate) fn history(view: &DB, wal: &Wal, table: &str, row: &str) -> Result<Vec<HistoryEntry>> {
    let group = Group::new(view);
    let mut entries = Vec::new();
    for (key, _) in group.scan_prefix(&keys::row_prefix(keys::HISTORY, table, row))? {
        let hash =
            keys::trailing_hash(&key).ok_or_else(|| Error::ViewCorrupt { key: key.clone() })?;
        let meta = change_meta(&group, &hash)?;
        let state =
            Engine::author_state(&group, &meta.author)?.ok_or(Error::MissingChange { hash })?;
        let change = read_change(wal, meta.position, &hash)?;
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

fn change_meta(group: &Group<'_>, hash: &ChangeHash) -> Result<ChangeMeta> {
    let key = keys::change(hash);
    let bytes = group
        .get(&key)?
        .ok_or(Error::MissingChange { hash: *hash })?;
    decode(&bytes, &key)
}

/// Every author's advertised head (see [`crate::Db::version_vector`]): its
/// highest seq held, or, once it is cut for a fork, its cut. The change at
/// the cut is the same on every replica (the chain below the first fork is
/// one chain); a fork at seq 1 is advertised as seq 0 with the zero hash.
pub(crate) fn version_vector(view: &DB) -> Result<VersionVector> {
    let group = Group::new(view);
    let mut vector = VersionVector::new();
    for (key, value) in group.scan_prefix(&[keys::AUTHORS])? {
        let author = Author(
            key[1..]
                .try_into()
                .map_err(|_| Error::ViewCorrupt { key: key.clone() })?,
        );
        let state: AuthorState = decode(&value, &key)?;
        let head = match state.cut {
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
                hash: chain_entry(view, &author, cut)?.ok_or(Error::ViewCorrupt {
                    key: keys::chain_prefix(&author, cut),
                })?,
            },
        };
        vector.insert(author, head);
    }
    Ok(vector)
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

/// Changes a replica lacks, in log order, read lazily from the log.
pub struct ChangesSince {
    wal: Wal,
    positions: std::vec::IntoIter<(u64, ChangeHash)>,
}

impl ChangesSince {
    /// How many changes remain.
    pub fn remaining(&self) -> usize {
        self.positions.len()
    }
}

impl Iterator for ChangesSince {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        let (position, hash) = self.positions.next()?;
        Some(read_change(&self.wal, position, &hash))
    }
}

/// The held changes a replica at `since` lacks, in log order:
/// - per author, the valid changes past the replica's head, or all of them
///   when its head hash is not one this replica holds (the two diverged);
/// - for a cut author, the changes at `cut + 1`: the fork evidence, always,
///   so every replica learns of the fork;
/// - any other cut change only when a change being sent names it (with the
///   chain below it), so the receiver can check that change's lamport.
///
/// Cost is O(changes sent), plus reading them when some author is cut.
pub(crate) fn changes_since(view: &DB, wal: &Wal, since: &VersionVector) -> Result<ChangesSince> {
    let group = Group::new(view);
    let mut send: BTreeMap<u64, ChangeHash> = BTreeMap::new();
    let mut cuts: HashMap<Author, u64> = HashMap::new();
    for (key, value) in group.scan_prefix(&[keys::AUTHORS])? {
        let author = Author(
            key[1..]
                .try_into()
                .map_err(|_| Error::ViewCorrupt { key: key.clone() })?,
        );
        let state: AuthorState = decode(&value, &key)?;
        let from_seq = match since.get(&author) {
            None => 1,
            Some(head) if group.contains(&keys::change(&head.hash))? => head.seq + 1,
            // Ahead of us on a chain we do not know: nothing of ours is new to
            // them unless they forked, and then their side sends us their
            // branch (our head is unknown to them), we cut, and the evidence
            // goes back below.
            Some(head) if head.seq > state.head_seq && state.cut.is_none() => continue,
            // Our heads differ at a seq we both hold: the chains diverged
            // somewhere below; send ours whole (the receiver drops duplicates).
            Some(_) => 1,
        };
        let last_valid = state.valid_until();
        collect_chain(view, &author, from_seq, last_valid, &mut send)?;
        if let Some(cut) = state.cut {
            collect_chain(view, &author, cut + 1, cut + 1, &mut send)?;
        }
        // Past this seq a change goes only when a sent change names it.
        let boundary = state
            .cut
            .map(|cut| cut + 1)
            .into_iter()
            .chain(state.limit)
            .min();
        if let Some(boundary) = boundary {
            cuts.insert(author, boundary);
        }
    }
    if !cuts.is_empty() {
        add_named_cut_changes(&group, wal, &cuts, &mut send)?;
    }
    Ok(ChangesSince {
        wal: wal.clone(),
        positions: send.into_iter().collect::<Vec<_>>().into_iter(),
    })
}

/// Adds every chain entry of `author` with seq in `first..=last`.
fn collect_chain(
    view: &DB,
    author: &Author,
    first: u64,
    last: u64,
    send: &mut BTreeMap<u64, ChangeHash>,
) -> Result<()> {
    if first > last {
        return Ok(());
    }
    let start = keys::chain_prefix(author, first);
    let author_prefix = &start[..33];
    for item in view.iterator(IteratorMode::From(&start, Direction::Forward)) {
        let (key, value) = item?;
        if !key.starts_with(author_prefix) {
            break;
        }
        let (_, seq, hash) =
            keys::parse_chain(&key).ok_or_else(|| Error::ViewCorrupt { key: key.to_vec() })?;
        if seq > last {
            break;
        }
        let position: [u8; 8] = value
            .as_ref()
            .try_into()
            .map_err(|_| Error::ViewCorrupt { key: key.to_vec() })?;
        send.insert(u64::from_be_bytes(position), hash);
    }
    Ok(())
}

/// Closes `send` over invalid changes (past the fork evidence, or past an
/// authorization limit) that a change in it names (as a dep, or as the prev
/// of such a change). `cuts`: per author, the last seq sent on its own.
fn add_named_cut_changes(
    group: &Group<'_>,
    wal: &Wal,
    cuts: &HashMap<Author, u64>,
    send: &mut BTreeMap<u64, ChangeHash>,
) -> Result<()> {
    let mut queue: Vec<(u64, ChangeHash)> = send.iter().map(|(p, h)| (*p, *h)).collect();
    while let Some((position, hash)) = queue.pop() {
        let change = read_change(wal, position, &hash)?;
        for named in change.predecessors() {
            let Ok(meta) = change_meta(group, &named) else {
                continue;
            };
            let past_evidence = cuts
                .get(&meta.author)
                .is_some_and(|boundary| meta.seq > *boundary);
            if past_evidence && send.insert(meta.position, named).is_none() {
                queue.push((meta.position, named));
            }
        }
    }
    Ok(())
}

/// blake3 over every materialized entry (fields, tombstones, increments) in
/// key order. Indexes are left out: they hold log positions, which differ
/// between replicas that received the same changes in other orders.
pub(crate) fn state_hash(view: &DB) -> Result<StateHash> {
    let mut hasher = blake3::Hasher::new_derive_key("peers 2026-11-28 state hash v1");
    for item in view.iterator(IteratorMode::From(&[keys::FIELDS], Direction::Forward)) {
        let (key, value) = item?;
        if key[0] > keys::INCREMENTS {
            break;
        }
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(&key);
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(&value);
    }
    Ok(StateHash(*hasher.finalize().as_bytes()))
}

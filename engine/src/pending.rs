//! The bounded set of verified changes waiting for a missing predecessor.

use crate::HashMap;

use crate::change::{Change, ChangeHash};
use crate::error::Refusal;

/// Default most changes held waiting ([`crate::Options::pending_changes_max`]).
pub const PENDING_CHANGES_MAX: usize = 10_000;
/// Most bytes held waiting, whatever the change count.
pub const PENDING_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Changes whose `prev` or a dep is not yet held, keyed by what they wait on.
///
/// # Invariants
/// Every change in `changes` appears exactly once in `waiting`, under the
/// hash it waits on; `bytes` is the sum of their encoded sizes.
#[derive(Default)]
pub(crate) struct Pending {
    changes: HashMap<ChangeHash, Change>,
    waiting: HashMap<ChangeHash, Vec<ChangeHash>>,
    bytes: usize,
    limit: usize,
}

impl Pending {
    pub fn new(limit: usize) -> Self {
        Pending {
            limit,
            ..Pending::default()
        }
    }

    pub fn contains(&self, hash: &ChangeHash) -> bool {
        self.changes.contains_key(hash)
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Holds `change` until `missing` is held. Refuses past the limits.
    pub fn insert(&mut self, change: Change, missing: ChangeHash) -> Result<(), Refusal> {
        if self.changes.len() >= self.limit || self.bytes + change.bytes().len() > PENDING_BYTES_MAX
        {
            return Err(Refusal::PendingFull { limit: self.limit });
        }
        // A second insert of one change would list it twice in `waiting`
        // and count its bytes twice: ingest checks `contains` first.
        debug_assert!(
            !self.contains(&change.hash()),
            "{} is already pending",
            change.hash()
        );
        self.bytes += change.bytes().len();
        self.waiting.entry(missing).or_default().push(change.hash());
        self.changes.insert(change.hash(), change);
        self.check_invariants();
        Ok(())
    }

    /// The invariants that cost O(1) to check, on every change of the set
    /// (the full ones, every change listed once under what it waits on and
    /// `bytes` their sum, would cost O(n) each time): empty exactly when
    /// nothing is counted, and nothing waited on without a waiter.
    fn check_invariants(&self) {
        debug_assert_eq!(
            self.changes.is_empty(),
            self.bytes == 0,
            "pending bytes {} for {} changes",
            self.bytes,
            self.changes.len()
        );
        debug_assert_eq!(
            self.changes.is_empty(),
            self.waiting.is_empty(),
            "{} changes wait on {} hashes",
            self.changes.len(),
            self.waiting.len()
        );
        debug_assert!(self.waiting.len() <= self.changes.len());
    }

    /// Removes and returns every change that waited on `hash`.
    pub fn release(&mut self, hash: &ChangeHash) -> Vec<Change> {
        let Some(waiters) = self.waiting.remove(hash) else {
            return Vec::new();
        };
        let released: Vec<Change> = waiters
            .iter()
            .filter_map(|waiter| self.changes.remove(waiter))
            .collect();
        self.bytes -= released
            .iter()
            .map(|change| change.bytes().len())
            .sum::<usize>();
        self.check_invariants();
        released
    }

    /// Drops the named changes if they are still waiting (a peer that sent
    /// them misbehaved and was dropped). Returns how many were dropped.
    pub fn discard(&mut self, hashes: &[ChangeHash]) -> usize {
        let mut dropped = 0;
        for hash in hashes {
            let Some(change) = self.changes.remove(hash) else {
                continue;
            };
            self.bytes -= change.bytes().len();
            dropped += 1;
        }
        if dropped > 0 {
            let changes = &self.changes;
            self.waiting.retain(|_, waiters| {
                waiters.retain(|waiter| changes.contains_key(waiter));
                !waiters.is_empty()
            });
        }
        self.check_invariants();
        dropped
    }

    /// Hashes that some pending change waits on (what a peer should send).
    pub fn missing(&self) -> Vec<ChangeHash> {
        self.waiting.keys().copied().collect()
    }
}

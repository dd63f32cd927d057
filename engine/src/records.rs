//! What the view records of every held change and every author
//! (FORMAT.md "View"), and their lookups.

use bincode::{Decode, Encode};

use crate::change::{Author, ChangeHash, Role};
use crate::error::{Error, Result};
use crate::keys;
use crate::view::{Group, decode};

/// What the view records of every held change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub(crate) struct ChangeMeta {
    /// Where its record starts in the log ([`POSITION_UNKNOWN`] while its
    /// group is not in the log yet).
    pub position: u64,
    pub author: Author,
    pub seq: u64,
    pub lamport: u64,
    /// The author's named role after this change (FORMAT.md
    /// "Authorization"): the highest role granted to it by a change it or
    /// an earlier change of its chain names, from grants alone. `None` for
    /// a chain that names no grant, the owner's included; grants count the
    /// same way in an open database, where nothing reads the role.
    pub role: Option<Role>,
}

/// Position written for a change admitted in a group that is not yet in the log.
pub(crate) const POSITION_UNKNOWN: u64 = u64::MAX;

/// What the view records of every author.
///
/// # Invariants
/// `head_seq` is the highest seq held; `cut` (equivocation), once set, only
/// decreases; `limit` (authorization) is what the last evaluation decided
/// and moves both ways. A change of this author is valid (in the view) iff
/// its seq is at most both. (Checked where it is stored:
/// `ingest::Writer::store_author`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub(crate) struct AuthorState {
    pub head_seq: u64,
    pub head_hash: ChangeHash,
    pub head_lamport: u64,
    pub cut: Option<u64>,
    pub limit: Option<u64>,
    /// `last_seq` of an effective revocation of this author.
    pub revoked: Option<u64>,
}

impl AuthorState {
    pub fn is_valid(&self, seq: u64) -> bool {
        self.cut.is_none_or(|cut| seq <= cut) && self.limit.is_none_or(|limit| seq <= limit)
    }

    /// The highest valid seq.
    pub(crate) fn valid_until(&self) -> u64 {
        self.head_seq
            .min(self.cut.unwrap_or(u64::MAX))
            .min(self.limit.unwrap_or(u64::MAX))
    }
}

/// What a standing checkpoint settles of one author of its frontier
/// (FORMAT.md "Settlement").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub(crate) struct Settled {
    /// `F(a)`: the frontier entry's seq.
    pub seq: u64,
    /// The frontier entry's hash: the author's next change names it as `prev`.
    pub hash: ChangeHash,
    /// `L(a)`: the highest valid seq of the author in the snapshot state
    /// (at most `seq`).
    pub valid_until: u64,
}

impl Settled {
    /// The author's authorization limit once settled, from the `limit` the
    /// rules give (`u64::MAX`: none): its settled verdicts stay, so a limit
    /// below `L(a)` is raised to it; past an inert settled change (`L(a) <
    /// F(a)`) nothing is valid again, whatever the rules say.
    pub(crate) fn clamp(&self, limit: u64) -> u64 {
        if self.valid_until < self.seq {
            self.valid_until
        } else {
            limit.max(self.valid_until)
        }
    }
}

/// The author an author record's key names (`keys::author`).
pub(crate) fn author_of_key(key: &[u8]) -> Result<Author> {
    key.get(1..)
        .and_then(|bytes| bytes.try_into().ok())
        .map(Author)
        .ok_or_else(|| Error::ViewCorrupt { key: key.to_vec() })
}

/// A held change's record, read through `group`.
pub(crate) fn change_meta(group: &Group<'_>, hash: &ChangeHash) -> Result<Option<ChangeMeta>> {
    let key = keys::change(hash);
    group
        .get(&key)?
        .map(|bytes| decode(&bytes, &key))
        .transpose()
}

/// An author's record, read through `group`.
pub(crate) fn author_state(group: &Group<'_>, author: &Author) -> Result<Option<AuthorState>> {
    let key = keys::author(author);
    group
        .get(&key)?
        .map(|bytes| decode(&bytes, &key))
        .transpose()
}

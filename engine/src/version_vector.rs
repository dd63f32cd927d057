//! Version vectors: for each author, the highest seq held and its hash.

use std::collections::BTreeMap;

use crate::change::{Author, ChangeHash};

/// One author's entry in a [`VersionVector`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Highest seq held.
    pub seq: u64,
    /// Hash of that change.
    pub hash: ChangeHash,
}

/// What a replica holds, per author. Sync compares two of these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector {
    heads: BTreeMap<Author, Head>,
}

impl VersionVector {
    /// An empty vector (holds nothing).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets an author's head.
    pub fn insert(&mut self, author: Author, head: Head) {
        self.heads.insert(author, head);
    }
    /// An author's head, if any of its changes is held.
    pub fn get(&self, author: &Author) -> Option<&Head> {
        self.heads.get(author)
    }
    /// Highest seq held for `author` (0 for none).
    pub fn seq(&self, author: &Author) -> u64 {
        self.heads.get(author).map_or(0, |head| head.seq)
    }
    /// Entries in author order.
    pub fn iter(&self) -> impl Iterator<Item = (&Author, &Head)> {
        self.heads.iter()
    }
    /// Number of authors.
    pub fn len(&self) -> usize {
        self.heads.len()
    }
    /// Whether no author is held.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
    /// A digest of the whole vector: equal digests, equal vectors.
    pub fn digest(&self) -> [u8; 32] {
        let mut digest = VectorDigest::new();
        for (author, head) in &self.heads {
            digest.push(author, head);
        }
        digest.finish()
    }
}

/// [`VersionVector::digest`] built one author at a time, in author order,
/// so a replica of many authors never holds its whole vector to digest it.
pub struct VectorDigest {
    hasher: blake3::Hasher,
}

impl Default for VectorDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl VectorDigest {
    /// The digest of an empty vector, so far.
    pub fn new() -> Self {
        VectorDigest {
            hasher: blake3::Hasher::new_derive_key("peers 2026-11-28 version vector digest v1"),
        }
    }

    /// Adds the next author (authors must come in byte order).
    pub fn push(&mut self, author: &Author, head: &Head) {
        self.hasher.update(&author.0);
        self.hasher.update(&head.seq.to_le_bytes());
        self.hasher.update(&head.hash.0);
    }

    /// The digest.
    pub fn finish(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }
}

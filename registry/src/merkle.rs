//! The log's Merkle tree: RFC 6962 (section 2.1) hashing, inclusion and
//! consistency proofs, and their verification as RFC 9162 section 2.1.3.2 and
//! 2.1.4.2 state it (the same tree C2SP tlog-tiles serves as tiles).
//!
//! `leaf hash = SHA-256(0x00 || leaf)`, `node hash = SHA-256(0x01 || left || right)`,
//! the root of the empty tree is `SHA-256("")`. A tree of `n` leaves splits at
//! the largest power of two below `n`.
//!
//! # Invariants
//! [`Tree`] keeps `levels[0]` = every leaf hash and `levels[k][i]` = the hash of
//! the complete subtree of `2^k` leaves starting at leaf `i * 2^k`: exactly the
//! hashes tlog-tiles' tiles hold. Every subtree hash a proof needs is then one
//! lookup, or the combination of at most 64 of them along the right edge.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Bytes of a [`Hash`].
pub const HASH_BYTES: usize = 32;
/// The most hashes a proof may hold (a tree of 2^64 leaves needs fewer than 128;
/// any proof longer than this is refused before it is read).
pub const PROOF_HASHES_MAX: usize = 128;

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// A Merkle tree kept in memory, level by level.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Appends a leaf (its data, hashed here); returns its index.
    pub fn push(&mut self, leaf: &[u8]) -> u64 {
        self.push_hash(leaf_hash(leaf))
    }

    /// Appends a leaf by its leaf hash; returns its index.
    pub fn push_hash(&mut self, hash: Hash) -> u64 {
        let index = self.size();
        let mut hash = hash;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            if row.len() % 2 == 1 {
                break;
            }
            let left = &row[row.len() - 2];
            hash = node_hash(left, &hash);
            level += 1;
        }
        index
    }

    /// The hash of leaves `start .. start + count` (`count >= 1`, inside the tree).
    fn subtree(&self, start: u64, count: u64) -> Hash {
        debug_assert!(count >= 1 && start + count <= self.size());
        if count.is_power_of_two() && start.is_multiple_of(count) {
            let level = count.trailing_zeros() as usize;
            return self.levels[level][(start / count) as usize];
        }
        let k = split(count);
        node_hash(&self.subtree(start, k), &self.subtree(start + k, count - k))
    }

    /// The root of the first `size` leaves (`size <= self.size()`).
    pub fn root(&self, size: u64) -> Hash {
        assert!(size <= self.size(), "a root past the tree's end");
        if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        }
    }

    /// RFC 6962 `PATH(index, D[0:size])`: the audit path of leaf `index` in
    /// the tree of the first `size` leaves, leaf side first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Vec<Hash> {
        assert!(
            index < size && size <= self.size(),
            "an inclusion proof outside the tree"
        );
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        proof
    }

    fn path(&self, index: u64, start: u64, count: u64, proof: &mut Vec<Hash>) {
        if count <= 1 {
            return;
        }
        let k = split(count);
        if index < k {
            self.path(index, start, k, proof);
            proof.push(self.subtree(start + k, count - k));
        } else {
            self.path(index - k, start + k, count - k, proof);
            proof.push(self.subtree(start, k));
        }
    }

    /// RFC 6962 `PROOF(old, D[0:new])`: that the tree of `old` leaves is a
    /// prefix of the tree of `new` leaves (`0 < old <= new <= size`; empty
    /// when `old == new`).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Vec<Hash> {
        assert!(
            0 < old && old <= new && new <= self.size(),
            "a consistency proof outside the tree"
        );
        let mut proof = Vec::new();
        if old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        proof
    }

    fn subproof(&self, old: u64, start: u64, count: u64, whole: bool, proof: &mut Vec<Hash>) {
        if old == count {
            if !whole {
                proof.push(self.subtree(start, count));
            }
            return;
        }
        let k = split(count);
        if old <= k {
            self.subproof(old, start, k, whole, proof);
            proof.push(self.subtree(start + k, count - k));
        } else {
            self.subproof(old - k, start + k, count - k, false, proof);
            proof.push(self.subtree(start, k));
        }
    }
}

/// Checks an inclusion proof (RFC 9162 section 2.1.3.2): that the leaf with
/// hash `leaf` is at `index` in the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size || proof.len() > PROOF_HASHES_MAX {
        return false;
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// Checks a consistency proof (RFC 9162 section 2.1.4.2): that the tree of
/// `old` leaves with root `old_root` is a prefix of the tree of `new` leaves
/// with root `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> bool {
    if old > new || proof.len() > PROOF_HASHES_MAX {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        // Every tree extends the empty one; there is nothing to prove.
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let mut f_n = old - 1;
    let mut s_n = new - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = *first;
    let mut s_r = *first;
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    f_r == *old_root && s_r == *new_root && s_n == 0
}

/// A proof as bytes: its hashes, concatenated.
pub fn encode_proof(proof: &[Hash]) -> Vec<u8> {
    proof.concat()
}

/// Hashes from bytes: a multiple of [`HASH_BYTES`], at most [`PROOF_HASHES_MAX`] of them.
pub fn decode_proof(bytes: &[u8]) -> Option<Vec<Hash>> {
    if !bytes.len().is_multiple_of(HASH_BYTES) || bytes.len() / HASH_BYTES > PROOF_HASHES_MAX {
        return None;
    }
    Some(
        bytes
            .chunks_exact(HASH_BYTES)
            .map(|chunk| {
                let mut hash = [0u8; HASH_BYTES];
                hash.copy_from_slice(chunk);
                hash
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves of the Certificate Transparency reference tests
    /// (RFC 6962's reference implementation, also golang.org/x/mod/sumdb/tlog).
    const CT_LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    /// Their roots for 1 to 8 leaves.
    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn ct_tree() -> Tree {
        let mut tree = Tree::new();
        for leaf in CT_LEAVES {
            tree.push(leaf);
        }
        tree
    }

    /// The roots are those of the CT reference vectors, and of the empty tree.
    #[test]
    fn rfc6962_reference_roots() {
        let tree = ct_tree();
        for (size, expected) in (1u64..).zip(CT_ROOTS) {
            assert_eq!(hex::encode(tree.root(size)), expected, "size {size}");
        }
        assert_eq!(
            hex::encode(tree.root(0)),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// The CT reference inclusion and consistency proofs (from the same tests).
    #[test]
    fn rfc6962_reference_proofs() {
        let tree = ct_tree();
        let hexes = |proof: Vec<Hash>| proof.iter().map(hex::encode).collect::<Vec<_>>();
        assert_eq!(
            hexes(tree.inclusion_proof(0, 8)),
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        );
        assert_eq!(
            hexes(tree.inclusion_proof(5, 8)),
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        );
        assert_eq!(
            hexes(tree.consistency_proof(1, 8)),
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        );
        assert_eq!(
            hexes(tree.consistency_proof(6, 8)),
            [
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        );
    }

    /// Every proof in trees of up to 40 leaves verifies, and fails for the
    /// wrong leaf, index, size, root or a flipped byte.
    #[test]
    fn every_proof_verifies_and_no_wrong_one_does() {
        let mut tree = Tree::new();
        for leaf in 0u32..40 {
            tree.push(&leaf.to_le_bytes());
        }
        for size in 1..=40u64 {
            let root = tree.root(size);
            for index in 0..size {
                let leaf = leaf_hash(&(index as u32).to_le_bytes());
                let proof = tree.inclusion_proof(index, size);
                assert!(verify_inclusion(&leaf, index, size, &proof, &root));
                assert!(!verify_inclusion(
                    &leaf_hash(b"x"),
                    index,
                    size,
                    &proof,
                    &root
                ));
                if index + 1 < size {
                    assert!(!verify_inclusion(&leaf, index + 1, size, &proof, &root));
                }
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert_ne!(&bad[0], first);
                    assert!(!verify_inclusion(&leaf, index, size, &bad, &root));
                }
            }
            for old in 1..=size {
                let proof = tree.consistency_proof(old, size);
                let old_root = tree.root(old);
                assert!(verify_consistency(old, size, &proof, &old_root, &root));
                assert!(!verify_consistency(
                    old,
                    size,
                    &proof,
                    &root_of(b"x"),
                    &root
                ));
                if old < size {
                    assert!(!verify_consistency(old, size, &proof, &old_root, &old_root));
                    let mut bad = proof.clone();
                    bad[0][31] ^= 0x80;
                    assert!(!verify_consistency(old, size, &bad, &old_root, &root));
                    assert!(!verify_consistency(
                        old,
                        size,
                        &proof[1..],
                        &old_root,
                        &root
                    ));
                }
            }
        }
    }

    fn root_of(leaf: &[u8]) -> Hash {
        leaf_hash(leaf)
    }

    /// Proof bytes round trip; a ragged or oversized one is refused.
    #[test]
    fn proof_bytes() {
        let proof = vec![[1u8; 32], [2u8; 32]];
        assert_eq!(decode_proof(&encode_proof(&proof)), Some(proof));
        assert_eq!(decode_proof(&[0; 33]), None);
        assert_eq!(decode_proof(&vec![0; 32 * (PROOF_HASHES_MAX + 1)]), None);
        assert_eq!(decode_proof(&[]), Some(vec![]));
    }
}

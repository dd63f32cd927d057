//! The test vectors of docs/SERVICES.md "Public key registry: test
//! vectors", checked against this crate and against
//! scripts/registry-vectors.py.

use peers_engine::Identity;

use crate::entry::{Discoverability, Entry, Signer};
use crate::merkle::{Tree, encode_proof, leaf_hash};
use crate::note::{Checkpoint, key_id, origin_for, verifier_key};
use crate::wire::{Message, tag, u64_field};

/// The vectors, as docs/SERVICES.md lists them (hex, but the verifier key).
const VECTORS: &[(&str, &str)] = &[
    (
        "claim",
        "010105616c6963658a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c
         0100d2496b0000000001ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac87
         37d1000000000000000000000000000000000000000000000000000000000000000001ddfffdc07e
         eeab4417712e4b0d965efa1d23198809bf450fe17ae3b0a1363fd58321d43bb2f46a95e6e8d8a654
         755b14d33cf388cf9cd63c3e5cad437fb6fa01",
    ),
    (
        "claim_hash",
        "cb5c49718d11c388a5813094573c36a24a26c88d70415ecd6631228abc5fb350",
    ),
    (
        "rotate",
        "010205616c6963658139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394
         0200b33f710000000000cb5c49718d11c388a5813094573c36a24a26c88d70415ecd6631228abc5f
         b3500136da3f3f9496aa3558a1297305382a215b63c7462bf93295aa2b9a3270bf3884262f80b7fb
         aadf0e28d8376e292ac8d0128c9a16a194707aa7b41803af7d3f06",
    ),
    (
        "revoke",
        "010305616c6963650000000000000000000000000000000000000000000000000000000000000000
         02000000000000000000685ea3ba72ea7d95e2011d0c5ec7eaf6a81782ba17174b19b48fb0a5ada2
         0efd025fcbdea71a24a83107f3d252332cf199f98595c35a2476b384095b0f67bc0f39beb180d2af
         ed7294e84101500590db91c4e694074f4405b5d28a09f7a900ab01",
    ),
    (
        "leaf_hashes",
        "92959af3116f689464be5fe5c672feb08e56979bca99c0a9b4752ba0cdb9c0d96909c35c27895722
         aaea13750549fa8c77a69e225f1f737fe06baec7e57c664779956b6a8f25d7dba1f045f63d1e1b3f
         f77f2b5db6b6b9ed836740994862dffe",
    ),
    (
        "root",
        "00f28a043033d14173489f66bfefc3604888f7c05d502129441268b41ef69071",
    ),
    (
        "inclusion_1_of_3",
        "92959af3116f689464be5fe5c672feb08e56979bca99c0a9b4752ba0cdb9c0d979956b6a8f25d7db
         a1f045f63d1e1b3ff77f2b5db6b6b9ed836740994862dffe",
    ),
    (
        "consistency_2_to_3",
        "79956b6a8f25d7dba1f045f63d1e1b3ff77f2b5db6b6b9ed836740994862dffe",
    ),
    ("key_id", "c0c2a113"),
    (
        "verifier_key",
        "peers-registry/ea4a6c63e29c520a+c0c2a113+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mk
         URtIs",
    ),
    (
        "checkpoint",
        "70656572732d72656769737472792f656134613663363365323963353230610a330a41504b4b4244
         417a3055467a534a396d762b2f4459456949393842645543457052424a6f744237326b48453d0a0a
         e280942070656572732d72656769737472792f6561346136633633653239633532306120774d4b68
         45356e75483165316547624f613648563677594a68474f56305150794d395a4d474c417567697175
         336e6f7a42502f5a4f4573384c50393372765158775a35336937316c57666e7773735351536d3148
         656b386c6e51633d0a",
    ),
    (
        "lookup_frame",
        "1500000001030500616c696365000008000300000000000000",
    ),
];

fn vector(label: &str) -> String {
    peers_wal::testing::vector(VECTORS, label)
}

/// What this crate computes for each vector's inputs.
fn computed() -> Vec<(&'static str, String)> {
    let alice = Identity::from_secret_bytes([1; 32]);
    let laptop = Identity::from_secret_bytes([2; 32]);
    let recovery = Identity::from_secret_bytes([3; 32]);
    let operator = Identity::from_secret_bytes([7; 32]);
    let claim = Entry::claim(
        &alice,
        "alice",
        Discoverability::Public,
        1_800_000_000,
        Some(recovery.author().0),
    )
    .expect("claim");
    let rotate = Entry::rotate(
        &alice,
        Signer::Key,
        "alice",
        claim.hash(),
        laptop.author().0,
        Discoverability::LookupOnly,
        1_900_000_000,
    )
    .expect("rotation");
    let revoke = Entry::revoke(
        &recovery,
        Signer::Recovery,
        "alice",
        rotate.hash(),
        Discoverability::LookupOnly,
    )
    .expect("revocation");
    let leaves = [claim.leaf(), rotate.leaf(), revoke.leaf()];
    let mut tree = Tree::new();
    for leaf in &leaves {
        tree.push(leaf);
    }
    let key = operator.author().0;
    let origin = origin_for(&key);
    let note = Checkpoint {
        origin: origin.clone(),
        size: 3,
        root: tree.root(3),
    }
    .sign(&operator);
    let lookup = Message::new(
        tag::LOOKUP,
        vec![b"alice".to_vec(), Vec::new(), u64_field(3)],
    )
    .encode();
    let mut frame = (lookup.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&lookup);
    vec![
        ("claim", hex::encode(claim.encode())),
        ("claim_hash", hex::encode(claim.hash())),
        ("rotate", hex::encode(rotate.encode())),
        ("revoke", hex::encode(revoke.encode())),
        (
            "leaf_hashes",
            hex::encode(
                leaves
                    .iter()
                    .map(|leaf| leaf_hash(leaf))
                    .collect::<Vec<_>>()
                    .concat(),
            ),
        ),
        ("root", hex::encode(tree.root(3))),
        (
            "inclusion_1_of_3",
            hex::encode(encode_proof(&tree.inclusion_proof(1, 3))),
        ),
        (
            "consistency_2_to_3",
            hex::encode(encode_proof(&tree.consistency_proof(2, 3))),
        ),
        ("key_id", hex::encode(key_id(&origin, &key))),
        ("verifier_key", verifier_key(&origin, &key)),
        ("checkpoint", hex::encode(note.as_bytes())),
        ("lookup_frame", hex::encode(frame)),
    ]
}

/// The crate's bytes equal the vectors docs/SERVICES.md lists, and the doc
/// lists the same.
#[test]
fn vectors_match_services_doc() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SERVICES.md"),
    )
    .expect("docs/SERVICES.md");
    let doc: String = doc.split_whitespace().collect();
    for (label, value) in computed() {
        assert_eq!(value, vector(label), "{label}");
        assert!(doc.contains(&value), "docs/SERVICES.md lacks {label}");
    }
}

/// Runs scripts/registry-vectors.py (independent of this crate) and
/// compares each line with the vectors; says why when it cannot run.
#[test]
fn python_vectors_agree() {
    peers_wal::testing::python_vectors_match(
        "python_vectors_agree",
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/registry-vectors.py"),
        VECTORS.len(),
        vector,
    );
}

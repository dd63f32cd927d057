//! The test vectors of docs/FORMAT.md, checked against the code: a known key,
//! a known change, its exact bytes, hash and signature; a genesis change; a
//! view key. If this test fails, either the code changed the format (bump the
//! version and update FORMAT.md) or FORMAT.md is wrong.

use peers_engine::{
    Author, CHANGE_FORMAT_VERSION, Change, ChangeBody, ChangeHash, DatabaseId, FormatError,
    Identity, Op, Role, Value, verify_signature,
};

fn vector_identity() -> Identity {
    Identity::from_secret_bytes([1; 32])
}

/// Change format version 1: still read, and its bytes must not move.
fn vector_body(identity: &Identity) -> ChangeBody {
    ChangeBody {
        version: 1,
        database: DatabaseId([0xAA; 32]),
        author: identity.author(),
        seq: 2,
        prev: Some(ChangeHash([0xBB; 32])),
        deps: vec![ChangeHash([0xCC; 32])],
        lamport: 300,
        wall_ms: 1_764_288_000_000,
        ops: vec![
            Op::Set {
                table: "t".into(),
                row: "r".into(),
                field: "f".into(),
                value: Value::Str("hi".into()),
            },
            Op::Increment {
                table: "t".into(),
                row: "r".into(),
                field: "n".into(),
                delta: -2,
            },
            Op::Delete {
                table: "t".into(),
                row: "x".into(),
            },
        ],
    }
}

const AUTHOR_HEX: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
const BODY_HEX: &str = concat!(
    "01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aa8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f",
    "5c0201bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "bbbbbb01cccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
    "ccccccccfb2c01fd0070c2c79a01000003000174017201660502686902017401",
    "72016e030101740178",
);
const SIGNATURE_HEX: &str = concat!(
    "0ed48d4649b9bfb31c566431fdda66109b0b1ca64cf34a6aa51534eae290809b",
    "457635944214f9d346ba8b1d21e68e4222913879444b2f657994533375a2e807",
);
const HASH_HEX: &str = "8c2ba046a1aef73325f8796dabb8f0a54ffa073c28773cb234e2a44a9c61834f";

#[test]
fn change_vector() {
    let identity = vector_identity();
    let change = identity.sign(vector_body(&identity));
    assert_eq!(
        identity.author(),
        Author::from_hex(AUTHOR_HEX).expect("hex")
    );
    let (body, signature) = change.bytes().split_at(change.bytes().len() - 64);
    assert_eq!(hex::encode(body), BODY_HEX);
    assert_eq!(hex::encode(signature), SIGNATURE_HEX);
    assert_eq!(change.hash().to_hex(), HASH_HEX);
    let bytes = hex::decode(format!("{BODY_HEX}{SIGNATURE_HEX}")).expect("hex");
    let decoded = Change::decode(&bytes).expect("decodes");
    assert_eq!(decoded.body(), &vector_body(&identity));
    verify_signature(&decoded).expect("signature verifies");
}

/// Change format version 2: the membership ops (FORMAT.md "Test vector: a
/// membership change").
fn membership_body(identity: &Identity) -> ChangeBody {
    ChangeBody {
        version: CHANGE_FORMAT_VERSION,
        database: DatabaseId([0xAA; 32]),
        author: identity.author(),
        seq: 3,
        prev: Some(ChangeHash([0xBB; 32])),
        deps: Vec::new(),
        lamport: 4,
        wall_ms: 1_764_288_000_000,
        ops: vec![
            Op::Grant {
                key: Author([0x11; 32]),
                role: Role::Writer,
            },
            Op::Revoke {
                key: Author([0x22; 32]),
                last_seq: 7,
            },
        ],
    }
}

#[test]
fn membership_change_vector() {
    let identity = vector_identity();
    let change = identity.sign(membership_body(&identity));
    let (body, signature) = change.bytes().split_at(change.bytes().len() - 64);
    assert_eq!(hex::encode(body), MEMBERSHIP_BODY_HEX);
    assert_eq!(hex::encode(signature), MEMBERSHIP_SIGNATURE_HEX);
    assert_eq!(change.hash().to_hex(), MEMBERSHIP_HASH_HEX);
    let decoded = Change::decode(change.bytes()).expect("decodes");
    assert_eq!(decoded.body(), &membership_body(&identity));
}

/// A version 1 change may not carry a version 2 op.
#[test]
fn membership_op_in_version_1_refused() {
    let identity = vector_identity();
    let mut body = membership_body(&identity);
    body.version = 1;
    let mut bytes = identity.sign(membership_body(&identity)).bytes().to_vec();
    assert_eq!(bytes[0], 2, "the version is the first byte");
    bytes[0] = 1;
    assert!(matches!(
        Change::decode(&bytes),
        Err(FormatError::Invalid { .. })
    ));
    assert_eq!(body.version, 1);
}

const MEMBERSHIP_BODY_HEX: &str = concat!(
    "02aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aa8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f",
    "5c0301bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "bbbbbb0004fd0070c2c79a010000020411111111111111111111111111111111",
    "1111111111111111111111111111111101052222222222222222222222222222",
    "22222222222222222222222222222222222207",
);
const MEMBERSHIP_SIGNATURE_HEX: &str = concat!(
    "1272b602fcc9a004352d01677576d218a4d2a8679f825e973535e1f5b4bce2ad",
    "cfe1543e880f9e1f2015522cea480739e24bb0591c48449bcfd1d5c3b17cca04",
);
const MEMBERSHIP_HASH_HEX: &str =
    "25c69f28cb7509165c74be96abfa8592bfd9a4e51e37c156bad332a61fed2670";

//! The change test vectors of docs/FORMAT.md, checked against the code: a
//! known key; a known change (format 1), a membership change and a genesis
//! change (format 2), each with its exact bytes, hash and signature. (The view
//! key vector is `field_key_vector` in engine/src/keys.rs.)
//!
//! The hex constants below were not taken from the engine: they are the output
//! of `scripts/format-vectors.py`, which builds each body from FORMAT.md's byte
//! layout alone and hashes and signs it with Python's `blake3` and
//! `cryptography`. `python_vectors_agree` runs that script again when python3
//! and both modules are present (it says why when it skips), and
//! `format_doc_states_the_vectors` checks FORMAT.md shows the same hex. If a
//! test here fails, either the code changed the format (bump the version and
//! update FORMAT.md) or FORMAT.md is wrong.

use std::path::Path;

use peers_engine::{
    Author, CHANGE_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION, Change, ChangeBody, ChangeHash,
    DatabaseId, FormatError, FrontierEntry, Identity, Op, Role, SnapshotHash, SnapshotReader,
    SnapshotWriter, Value, verify_signature,
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

// Computed by scripts/format-vectors.py (lines `author`, `change.body`,
// `change.signature`, `change.hash`), independently of the engine.
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

// Computed by scripts/format-vectors.py (lines `membership.*`).
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

/// A genesis change of a members-only database (FORMAT.md "Test vector: a
/// genesis change"): database 32 zero bytes, seq 1, no prev, no deps, lamport
/// 1, ops `[Genesis{nonce: [7; 16]}, MembersOnly]`.
fn genesis_body(identity: &Identity) -> ChangeBody {
    ChangeBody {
        version: CHANGE_FORMAT_VERSION,
        database: DatabaseId([0; 32]),
        author: identity.author(),
        seq: 1,
        prev: None,
        deps: Vec::new(),
        lamport: 1,
        wall_ms: 1_764_288_000_000,
        ops: vec![Op::Genesis { nonce: [7; 16] }, Op::MembersOnly],
    }
}

#[test]
fn genesis_change_vector() {
    let identity = vector_identity();
    let change = identity.sign(genesis_body(&identity));
    let (body, signature) = change.bytes().split_at(change.bytes().len() - 64);
    assert_eq!(hex::encode(body), GENESIS_BODY_HEX);
    assert_eq!(hex::encode(signature), GENESIS_SIGNATURE_HEX);
    assert_eq!(change.hash().to_hex(), GENESIS_HASH_HEX);
    let bytes = hex::decode(format!("{GENESIS_BODY_HEX}{GENESIS_SIGNATURE_HEX}")).expect("hex");
    let decoded = Change::decode(&bytes).expect("decodes");
    assert_eq!(decoded.body(), &genesis_body(&identity));
    verify_signature(&decoded).expect("signature verifies");
}

// Computed by scripts/format-vectors.py (lines `genesis.*`).
const GENESIS_BODY_HEX: &str = concat!(
    "0200000000000000000000000000000000000000000000000000000000000000",
    "008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f",
    "5c01000001fd0070c2c79a01000002030707070707070707070707070707070706",
);
const GENESIS_SIGNATURE_HEX: &str = concat!(
    "507f3dbaaba2819975f0d7dbfd1a45209c1f4abb0a5cecbedec80e53aa4054db",
    "8cef2a85e1cf787890ca8c96580f24ae757f32f52abb885c54e3ab70bc52400c",
);
const GENESIS_HASH_HEX: &str = "e869133df7fb7f47d676bc530de836107a3b528a197e359112061bbfd56d5108";

/// The owner of the genesis vector checkpoints it (FORMAT.md "Test vector: a
/// checkpoint change (format 3)"): seq 2 after the genesis, lamport 2, a
/// frontier of one entry (the genesis) and a snapshot hash of 32 bytes `0x5A`.
fn checkpoint_body(identity: &Identity) -> ChangeBody {
    let genesis = ChangeHash::from_hex(GENESIS_HASH_HEX).expect("hex");
    ChangeBody {
        version: CHECKPOINT_FORMAT_VERSION,
        database: DatabaseId(genesis.0),
        author: identity.author(),
        seq: 2,
        prev: Some(genesis),
        deps: Vec::new(),
        lamport: 2,
        wall_ms: 1_764_288_000_000,
        ops: vec![Op::Checkpoint {
            frontier: vec![FrontierEntry {
                author: identity.author(),
                seq: 1,
                hash: genesis,
            }],
            snapshot: SnapshotHash([0x5A; 32]),
        }],
    }
}

#[test]
fn checkpoint_change_vector() {
    let identity = vector_identity();
    let change = identity.sign(checkpoint_body(&identity));
    let (body, signature) = change.bytes().split_at(change.bytes().len() - 64);
    assert_eq!(hex::encode(body), CHECKPOINT_BODY_HEX);
    assert_eq!(hex::encode(signature), CHECKPOINT_SIGNATURE_HEX);
    assert_eq!(change.hash().to_hex(), CHECKPOINT_HASH_HEX);
    let decoded = Change::decode(change.bytes()).expect("decodes");
    assert_eq!(decoded.body(), &checkpoint_body(&identity));
    verify_signature(&decoded).expect("signature verifies");
}

/// FORMAT.md "Test vector: a snapshot file": two arbitrary entries (the
/// vector is of the file's layout, not of a view) in one block, after a
/// header holding the genesis vector and a checkpoint of it (as
/// `checkpoint_body`) that signs those entries' snapshot hash.
fn snapshot_entries() -> Vec<(Vec<u8>, Vec<u8>)> {
    let genesis = ChangeHash::from_hex(GENESIS_HASH_HEX).expect("hex");
    let mut changes_key = vec![0x05];
    changes_key.extend_from_slice(&genesis.0);
    vec![
        (b"\x02t\x00r\x00f".to_vec(), b"\x01hi".to_vec()),
        (changes_key, vec![0x2a]),
    ]
}

#[test]
fn snapshot_file_vector() {
    let identity = vector_identity();
    let genesis = identity.sign(genesis_body(&identity));
    let mut body = checkpoint_body(&identity);
    let Op::Checkpoint { snapshot, .. } = &mut body.ops[0] else {
        unreachable!("checkpoint_body holds a checkpoint")
    };
    *snapshot = SnapshotHash::from_hex(SNAPSHOT_HASH_HEX).expect("hex");
    let checkpoint = identity.sign(body);
    assert_eq!(checkpoint.hash().to_hex(), SNAPSHOT_CHECKPOINT_HEX);

    let mut writer = SnapshotWriter::new(Vec::new(), &genesis, &checkpoint).expect("header");
    for (key, value) in snapshot_entries() {
        writer.entry(&key, &value).expect("entry");
    }
    let (file, entries, hash) = writer.finish().expect("finish");
    assert_eq!((entries, hash.to_hex()), (2, SNAPSHOT_HASH_HEX.to_owned()));
    assert_eq!(hex::encode(&file), SNAPSHOT_FILE_HEX);
    assert_eq!(
        blake3::hash(&file).to_hex().as_str(),
        SNAPSHOT_FILE_BLAKE3_HEX
    );

    let bytes = hex::decode(SNAPSHOT_FILE_HEX).expect("hex");
    let mut reader = SnapshotReader::open(bytes.as_slice()).expect("header accepted");
    assert_eq!(reader.checkpoint().hash(), checkpoint.hash());
    assert_eq!(reader.genesis().hash(), genesis.hash());
    assert_eq!(
        reader.next_block().expect("block"),
        Some(snapshot_entries())
    );
    assert_eq!(reader.next_block().expect("end"), None);
    assert_eq!(reader.finish().expect("hash matches the checkpoint"), 2);
}

// Computed by scripts/format-vectors.py (lines `snapshot.*`).
const SNAPSHOT_HASH_HEX: &str = "916e2a375b430e2ce1fab09790e6156b16ece324c3f1797162e60b6f70935ac8";
const SNAPSHOT_CHECKPOINT_HEX: &str =
    "4b41cb502586ad389f26fb9377077e45ead156d65c7b6d04daa06076b9e10900";
const SNAPSHOT_FILE_BLAKE3_HEX: &str =
    "8cb8d3247051ec8f578b870cc91b7c5133a8ee0766fd8c5dcbc668fe7c7cfd41";
const SNAPSHOT_FILE_HEX: &str = concat!(
    "50454552534e41500100000000000000e869133df7fb7f47d676bc530de83610",
    "7a3b528a197e359112061bbfd56d51081201000003e869133df7fb7f47d676bc",
    "530de836107a3b528a197e359112061bbfd56d51088a88e3dd7409f195fd52db",
    "2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c0201e869133df7fb7f47d6",
    "76bc530de836107a3b528a197e359112061bbfd56d51080002fd0070c2c79a01",
    "00000107018a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf37488",
    "01b40f6f5c01e869133df7fb7f47d676bc530de836107a3b528a197e35911206",
    "1bbfd56d5108916e2a375b430e2ce1fab09790e6156b16ece324c3f1797162e6",
    "0b6f70935ac80a7d9cc3cb4dfc58a3b58e40a2f6b7bed07f4f40b380a4d6a1ca",
    "71101f9fcfc54322d1141729f97368c05a5443e097149c19bdaa6e63c53d9fa8",
    "4f35c3862d0ba100000002000000000000000000000000000000000000000000",
    "00000000000000000000008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d",
    "94121bf3748801b40f6f5c01000001fd0070c2c79a0100000203070707070707",
    "0707070707070707070706507f3dbaaba2819975f0d7dbfd1a45209c1f4abb0a",
    "5cecbedec80e53aa4054db8cef2a85e1cf787890ca8c96580f24ae757f32f52a",
    "bb885c54e3ab70bc52400c0a94618030000000f12eca03020602740072006603",
    "0168692105e869133df7fb7f47d676bc530de836107a3b528a197e359112061b",
    "bfd56d5108012a000000000200000000000000134f18b9",
);

/// Encodes and signs `body` whatever rules it breaks (`Identity::sign`
/// refuses to): FORMAT.md's encoding, hash and signature message.
fn sign_unchecked(identity: &Identity, body: &ChangeBody) -> Vec<u8> {
    let mut bytes =
        bincode::encode_to_vec(body, bincode::config::standard()).expect("encodes into a Vec");
    let hash = blake3::Hasher::new_derive_key(peers_engine::HASH_CONTEXT)
        .update(&bytes)
        .finalize();
    let mut message = peers_engine::SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(hash.as_bytes());
    bytes.extend_from_slice(&identity.sign_bytes(&message));
    bytes
}

/// Each structural rule of a checkpoint (FORMAT.md "The Checkpoint op"),
/// broken alone, is refused with that rule; a version 2 change may not carry
/// the op.
#[test]
fn checkpoint_structural_rules() {
    let identity = vector_identity();
    let refused = |body: ChangeBody| -> &'static str {
        // Sign through bytes a correct build never produces: encode the
        // good change, then decode a re-signed copy of the altered body.
        match Change::decode(&sign_unchecked(&identity, &body)) {
            Err(FormatError::Invalid { rule }) => rule,
            other => panic!("expected a structural refusal, got {other:?}"),
        }
    };
    let entry = |author: Author, seq: u64, hash: ChangeHash| FrontierEntry { author, seq, hash };
    let with = |edit: &dyn Fn(&mut ChangeBody)| {
        let mut body = checkpoint_body(&identity);
        edit(&mut body);
        body
    };
    fn frontier(body: &mut ChangeBody) -> &mut Vec<FrontierEntry> {
        match &mut body.ops[0] {
            Op::Checkpoint { frontier, .. } => frontier,
            _ => unreachable!("the checkpoint body holds one checkpoint"),
        }
    }
    assert_eq!(
        refused(with(&|body| body.version = 2)),
        "an op newer than the change's format version"
    );
    assert_eq!(
        refused(with(&|body| body.ops.push(Op::Delete {
            table: "t".into(),
            row: "r".into()
        }))),
        "a Checkpoint is the only op of its change"
    );
    assert_eq!(
        refused(with(&|body| frontier(body).clear())),
        "a frontier holds 1 to FRONTIER_MAX entries"
    );
    let other = Author([0xFF; 32]);
    assert_eq!(
        refused(with(&|body| {
            let own = frontier(body)[0];
            *frontier(body) = vec![entry(other, 1, own.hash), own];
        })),
        "a frontier is sorted by author, one entry each"
    );
    assert_eq!(
        refused(with(&|body| {
            let own = frontier(body)[0];
            frontier(body).push(entry(other, 0, own.hash));
        })),
        "a frontier entry's seq starts at 1"
    );
    assert_eq!(
        refused(with(&|body| frontier(body)[0].seq = 2)),
        "a checkpoint's frontier names its signer's prev"
    );
    assert_eq!(
        refused(with(&|body| frontier(body)[0].author = other)),
        "a checkpoint's frontier names its signer's prev"
    );
    assert_eq!(
        refused(with(&|body| frontier(body)[0].hash = ChangeHash([1; 32]))),
        "a checkpoint's frontier names its signer's prev"
    );
    // A frontier of many authors is fine, the signer's entry among them.
    let many = with(&|body| {
        let own = frontier(body)[0];
        let mut entries: Vec<FrontierEntry> = (0..100u8)
            .map(|i| entry(Author([i; 32]), 5, ChangeHash([i; 32])))
            .chain([own])
            .collect();
        entries.sort();
        *frontier(body) = entries;
    });
    Change::decode(&sign_unchecked(&identity, &many)).expect("a frontier of 101 authors decodes");
}

/// Every value the script prints, with the constant it must equal.
const SCRIPT_LINES: [(&str, &str); 17] = [
    ("author", AUTHOR_HEX),
    ("change.body", BODY_HEX),
    ("change.hash", HASH_HEX),
    ("change.signature", SIGNATURE_HEX),
    ("membership.body", MEMBERSHIP_BODY_HEX),
    ("membership.hash", MEMBERSHIP_HASH_HEX),
    ("membership.signature", MEMBERSHIP_SIGNATURE_HEX),
    ("genesis.body", GENESIS_BODY_HEX),
    ("genesis.hash", GENESIS_HASH_HEX),
    ("genesis.signature", GENESIS_SIGNATURE_HEX),
    ("checkpoint.body", CHECKPOINT_BODY_HEX),
    ("checkpoint.hash", CHECKPOINT_HASH_HEX),
    ("checkpoint.signature", CHECKPOINT_SIGNATURE_HEX),
    ("snapshot.hash", SNAPSHOT_HASH_HEX),
    ("snapshot.checkpoint", SNAPSHOT_CHECKPOINT_HEX),
    ("snapshot.file", SNAPSHOT_FILE_HEX),
    ("snapshot.file_blake3", SNAPSHOT_FILE_BLAKE3_HEX),
];

// Computed by scripts/format-vectors.py (lines `checkpoint.*`).
const CHECKPOINT_BODY_HEX: &str = concat!(
    "03e869133df7fb7f47d676bc530de836107a3b528a197e359112061bbfd56d51",
    "088a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f",
    "5c0201e869133df7fb7f47d676bc530de836107a3b528a197e359112061bbfd5",
    "6d51080002fd0070c2c79a0100000107018a88e3dd7409f195fd52db2d3cba5d",
    "72ca6709bf1d94121bf3748801b40f6f5c01e869133df7fb7f47d676bc530de8",
    "36107a3b528a197e359112061bbfd56d51085a5a5a5a5a5a5a5a5a5a5a5a5a5a",
    "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
);
const CHECKPOINT_SIGNATURE_HEX: &str = concat!(
    "cd37c7a0d3aae97312e2de93bc132a24b52aa770bf95ac6e8874d15d8ff9e634",
    "ac2f6632cfb00fb064118611a5a4eb4ba6e0a42b427c69beab1eecb794c1670e",
);
const CHECKPOINT_HASH_HEX: &str =
    "fdb47f5c3c35afeef08ec3b870759f43bf2031c44e9746bf53d100c53ae9f282";

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the engine crate is in the workspace")
}

/// Runs scripts/format-vectors.py and compares every value it prints with the
/// constants above. Skips (saying why) without python3 or its modules; with
/// `PEERS_REQUIRE_PYTHON_VECTORS=1` a skip is a failure.
#[test]
fn python_vectors_agree() {
    let script = workspace_root().join("scripts/format-vectors.py");
    let Some(stdout) = peers_wal::testing::python_vectors("python_vectors_agree", &script) else {
        return;
    };
    let printed: Vec<(&str, &str)> = stdout
        .lines()
        .map(|line| line.split_once(' ').expect("`name hex` lines"))
        .collect();
    assert_eq!(
        printed, SCRIPT_LINES,
        "scripts/format-vectors.py (from FORMAT.md) and the constants disagree"
    );
}

/// FORMAT.md shows the same author, hashes and signatures as the constants
/// (a signature may be split over two lines, at its middle).
#[test]
fn format_doc_states_the_vectors() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/FORMAT.md")).expect("FORMAT.md");
    for (name, hex) in SCRIPT_LINES {
        if name.ends_with(".body") || name.ends_with(".file") {
            continue; // shown annotated, not as one string
        }
        let halves = if name.ends_with(".signature") {
            vec![&hex[..64], &hex[64..]]
        } else {
            vec![hex]
        };
        for half in halves {
            assert!(doc.contains(half), "FORMAT.md lacks {name} {half}");
        }
    }
}

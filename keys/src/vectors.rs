//! The test vectors of docs/SERVICES.md "Managed keys: test vectors",
//! checked against this crate and against scripts/keys-vectors.py.

use crate::envelope::{RecoveryCode, Slot, seal, seal_key};
use crate::wire::{Direction, Message, Session, tag};

/// The vectors, as docs/SERVICES.md lists them.
const VECTORS: &[(&str, &str)] = &[
    (
        "seal_key",
        "6e6bb80fdc0823e394671efee340f629d88831d736c2f0b826d402fea8567d86",
    ),
    (
        "envelope",
        "0101000102030405060708090a0b0c0d0e0f10111213141516170e1cc5619204de5d0a2c4709c4110ed9
         35cfa9901d35c4338a0bc738ee4dfdc720c2a199d8d9c8e68dff5532aede11a1",
    ),
    (
        "login_start_frame",
        "6e00000003030500616c6963650100016000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "mac_key",
        "bb84ee5adee1cb57216b99a5c0568125ca813ab07ed5e6f78db056a25c7a9fb2",
    ),
    (
        "forget_sealed",
        "070120003c658eae63e464c3cca0aabbf2f03f4caafc8076e360a872939fdc075afe16f7",
    ),
    ("recovery_code", "AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO-B4IB-CEQT"),
];

fn vector(label: &str) -> String {
    peers_wal::testing::vector(VECTORS, label)
}

/// What this crate computes for each vector's inputs.
fn computed() -> Vec<(&'static str, String)> {
    let export: [u8; 64] = std::array::from_fn(|index| index as u8);
    let nonce: [u8; 24] = std::array::from_fn(|index| index as u8);
    let envelope = seal(&export, "alice", Slot::Password, &[0x22; 32], nonce);
    let login_start = Message::new(
        tag::LOGIN_START,
        vec![b"alice".to_vec(), vec![1], vec![0xAA; 96]],
    )
    .encode();
    let mut frame = (login_start.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&login_start);
    let session_key = [0x55; 64];
    let mut session = Session::new(&session_key, Direction::ToServer);
    let forget = session.seal(Message::new(tag::FORGET, vec![]));
    let code = RecoveryCode::from_bytes(std::array::from_fn(|index| index as u8));
    vec![
        ("seal_key", hex::encode(seal_key(&export))),
        ("envelope", hex::encode(envelope)),
        ("login_start_frame", hex::encode(frame)),
        (
            "mac_key",
            hex::encode(blake3::derive_key(
                "peers-keys v1 session mac key",
                &session_key,
            )),
        ),
        ("forget_sealed", hex::encode(forget.encode())),
        ("recovery_code", code.to_string()),
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
        // The frame's 96 bytes of 0xAA are written "then 96 × aa" there.
        let listed = if label == "login_start_frame" {
            value.get(..36).expect("a header")
        } else {
            value.as_str()
        };
        assert!(doc.contains(listed), "docs/SERVICES.md lacks {label}");
    }
}

/// Runs scripts/keys-vectors.py (independent of this crate) and compares
/// each line with the vectors; says why when it cannot run.
#[test]
fn python_vectors_agree() {
    peers_wal::testing::python_vectors_match(
        "python_vectors_agree",
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/keys-vectors.py"),
        VECTORS.len(),
        vector,
    );
}

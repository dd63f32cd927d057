//! The `registry_message` target: what a registry client or server reads
//! from the other side (peers-registry's wire protocol, docs/SERVICES.md
//! "Public key registry"): frame bodies, entries, proofs, checkpoints and
//! verifier keys, and a client's state file.

use peers_registry::merkle::{self, PROOF_HASHES_MAX};
use peers_registry::note::{Checkpoint, parse_verifier_key};
use peers_registry::wire::{FRAME_BYTES_MAX, Message};
use peers_registry::{ENTRY_BYTES_MAX, Entry, HandleState};

/// The operator key and origin checkpoints are opened with.
fn operator() -> ([u8; 32], String) {
    let key = peers_engine::Identity::from_secret_bytes([7; 32])
        .author()
        .0;
    (key, peers_registry::note::origin_for(&key))
}

/// Every decoder of the registry never panics on any bytes; an entry that
/// decodes re-encodes to the same bytes (one layout per entry) and is at
/// most `ENTRY_BYTES_MAX`; a proof decodes only from whole hashes, at most
/// `PROOF_HASHES_MAX`, and verifying it against any sizes never panics; a
/// checkpoint opens only if it parses and carries the operator's
/// signature; each field of a message is tried as each of these.
pub fn registry_message(data: &[u8]) {
    decode_all(data);
    if let Ok(message) = Message::decode(data) {
        assert!(data.len() <= FRAME_BYTES_MAX);
        assert_eq!(message.encode(), data);
        for field in &message.fields {
            decode_all(field);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = serde_json::from_str::<peers_registry::State>(text);
    }
}

fn decode_all(data: &[u8]) {
    if let Ok(entry) = Entry::decode(data) {
        assert!(data.len() <= ENTRY_BYTES_MAX);
        assert_eq!(entry.encode(), data);
        let _ = HandleState::apply(None, &entry);
        let _ = entry.leaf();
    }
    if let Some(proof) = merkle::decode_proof(data) {
        assert!(proof.len() <= PROOF_HASHES_MAX);
        assert_eq!(proof.len() * merkle::HASH_BYTES, data.len());
        let size = data.len() as u64 / 3 + 1;
        let root = [0u8; 32];
        let _ = merkle::verify_inclusion(&root, size / 2, size, &proof, &root);
        let _ = merkle::verify_consistency(size / 2, size, &proof, &root, &root);
        let _ = merkle::verify_consistency(size, u64::MAX, &proof, &root, &root);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (key, origin) = operator();
        if let Ok(checkpoint) = Checkpoint::open(text, &origin, &key) {
            assert_eq!(checkpoint.origin, origin);
            assert!(Checkpoint::parse_body(&checkpoint.body()).is_ok());
        }
        let _ = Checkpoint::parse_body(text);
        if let Ok((name, key)) = parse_verifier_key(text) {
            assert_eq!(peers_registry::note::verifier_key(&name, &key), text);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The committed seeds decode: mutations start from accepted inputs.
    #[test]
    fn committed_seeds_decode() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/registry_message");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("seeds") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("reads");
            let decodes = peers_registry::wire::Message::decode(&bytes).is_ok()
                || peers_registry::Entry::decode(&bytes).is_ok()
                || std::str::from_utf8(&bytes).is_ok_and(|text| {
                    peers_registry::note::Checkpoint::parse_body(
                        text.split_inclusive('\n')
                            .take(3)
                            .collect::<String>()
                            .as_str(),
                    )
                    .is_ok()
                });
            assert!(decodes);
            seen += 1;
        }
        assert!(seen >= 4);
    }
}

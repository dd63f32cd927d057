//! The `keys_message` target: a frame body a key client or server reads
//! (peers-keys' wire protocol), and an envelope a hostile key server serves.

/// `Message::decode` never panics, refuses bodies over the frame limit,
/// and what it accepts re-encodes to the same bytes (one layout per
/// message); `open` never panics on any envelope bytes, and never opens one
/// that is not exactly an envelope's size.
pub fn keys_message(data: &[u8]) {
    use peers_keys::wire::{FIELDS_MAX, FRAME_BYTES_MAX, Message};
    if let Ok(message) = Message::decode(data) {
        assert!(data.len() <= FRAME_BYTES_MAX);
        assert!(message.fields.len() <= FIELDS_MAX);
        assert_eq!(message.encode(), data);
    }
    let opened = peers_keys::open(&[7; 64], "alice", peers_keys::Slot::Password, data);
    if opened.is_ok() {
        assert_eq!(data.len(), peers_keys::ENVELOPE_BYTES);
    }
}

#[cfg(test)]
mod tests {
    /// The committed seeds decode: mutations start from accepted messages.
    #[test]
    fn committed_seeds_decode() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/keys_message");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("seeds") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("reads");
            assert!(peers_keys::wire::Message::decode(&bytes).is_ok());
            seen += 1;
        }
        assert!(seen >= 3);
    }
}

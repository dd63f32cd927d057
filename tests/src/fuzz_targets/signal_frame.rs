//! The `signal_frame` target: one signaling frame.

/// A signaling frame (docs/PROTOCOL.md "Signaling") never panics the
/// decoder, and what decodes encodes back to the same bytes.
pub fn signal_frame(data: &[u8]) {
    if let Ok(frame) = peers_signal::Frame::decode(data) {
        assert_eq!(frame.encode(), data, "{frame:?} has a second encoding");
    }
}

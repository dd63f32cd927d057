//! The `rendezvous_decode` target: one rendezvous message of the WebRTC
//! transport, as a node reads it from signaling.

/// A rendezvous message (the body of a sealed signaling payload between two
/// nodes, docs/PROTOCOL.md "WebRTC transport") never panics the decoder, and
/// what decodes encodes back to the same bytes (the layout has one form).
pub fn rendezvous_decode(data: &[u8]) {
    use peers_net::webrtc::Rendezvous;
    if let Ok(message) = Rendezvous::decode(data) {
        let again = message.encode().expect("a decoded message encodes");
        assert_eq!(again, data, "{message:?} has a second encoding");
    }
}

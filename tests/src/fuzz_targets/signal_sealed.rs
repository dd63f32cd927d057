//! The `signal_sealed` target: a sealed payload from a hostile signaling
//! server, also read as a STUN datagram.

/// Bytes a hostile signaling server delivers as a sealed payload: opening
/// them never panics and never succeeds (nobody but the sender's key makes
/// a payload that opens); the STUN responder and the STUN answer parser
/// never panic on them either, and a response is never more than 2.2 times
/// the request (no amplification).
pub fn signal_sealed(data: &[u8]) {
    let ours = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let sender = ed25519_dalek::SigningKey::from_bytes(&[9; 32])
        .verifying_key()
        .to_bytes();
    let mut replay = peers_signal::ReplayGuard::new(16);
    let opened = peers_signal::open(&ours, &sender, data, 1_800_000_000_000, &mut replay);
    assert!(
        opened.is_err(),
        "a payload forged without the sender's key opened"
    );
    let source = std::net::SocketAddr::from(([192, 0, 2, 1], 4000));
    if let Some(answer) = peers_signal::stun::answer(data, source) {
        assert!(
            answer.len() * 5 <= data.len() * 11,
            "{} -> {} bytes",
            data.len(),
            answer.len()
        );
    }
    let _ = peers_signal::stun::binding_response(data, &[1; 12]);
}

//! The `handshake_respond` target: what a hostile initiator writes to a
//! responder, then EOF.

use peers_net::{CHANNEL_VERSION, CHANNEL_VERSION_MIN, NOISE_MESSAGE_BYTES_MAX, SecureChannel};
use tokio::io::AsyncWriteExt;

use super::fixtures::identity;
use super::net::{PIPE_SLACK_BYTES, block_on, expect_frame, net_options};

/// The initiator's ephemeral key, in clear at the start of handshake message 1.
const EPHEMERAL_KEY_BYTES: usize = 32;
/// Message 1's payload: `version_min: u16 LE | version_max: u16 LE`.
const OFFER_BYTES: usize = 4;

/// A responder (`SecureChannel::accept`) reading `data` then EOF: always an
/// error (message 3 must be encrypted for the responder's fresh keys, which
/// no input knows), never a panic or a hang, and the error the protocol
/// calls for: the framing's (closed, torn, oversized), then message 1's
/// (under 32 bytes of ephemeral key: Noise; an offer that is not 4 bytes:
/// `MalformedHandshake`; no common version: `UnsupportedVersion` naming the
/// highest offered), then message 3's framing or a Noise error.
pub fn handshake_respond(data: &[u8]) {
    use peers_net::Error;
    let result = block_on(async {
        let (mut initiator, responder) = tokio::io::duplex(data.len() + PIPE_SLACK_BYTES);
        initiator
            .write_all(data)
            .await
            .expect("the pipe holds the input");
        // Half-close: the responder reads EOF after the input, and its
        // message 2 still has somewhere to go.
        initiator.shutdown().await.expect("half-close the pipe");
        let result = SecureChannel::accept(responder, &identity(1), net_options()).await;
        drop(initiator);
        result
    });
    let error = match result {
        Ok(channel) => panic!("a handshake completed with bytes fixed in advance: {channel:?}"),
        Err(error) => error,
    };
    assert!(!matches!(error, Error::Timeout { .. }), "hung: {error:?}");
    let max = NOISE_MESSAGE_BYTES_MAX;
    let Some((first, rest)) = expect_frame(data, max, &error, "message 1") else {
        return;
    };
    let Some(offer) = first.get(EPHEMERAL_KEY_BYTES..) else {
        assert!(matches!(error, Error::Noise(_)), "short key: {error:?}");
        return;
    };
    if offer.len() != OFFER_BYTES {
        assert!(
            matches!(
                error,
                Error::MalformedHandshake { message: 1, bytes, expected }
                    if bytes == offer.len() as u64 && expected == OFFER_BYTES as u64
            ),
            "offer of {} bytes: {error:?}",
            offer.len()
        );
        return;
    }
    let offered_min = u16::from_le_bytes([offer[0], offer[1]]);
    let offered_max = u16::from_le_bytes([offer[2], offer[3]]);
    let common = (offered_min..=offered_max)
        .any(|version| (CHANNEL_VERSION_MIN..=CHANNEL_VERSION).contains(&version));
    if !common {
        assert!(
            matches!(error, Error::UnsupportedVersion { found, .. } if found == offered_max),
            "offer {offered_min}..={offered_max}: {error:?}"
        );
        return;
    }
    if expect_frame(rest, max, &error, "message 3").is_some() {
        assert!(matches!(error, Error::Noise(_)), "message 3: {error:?}");
    }
}

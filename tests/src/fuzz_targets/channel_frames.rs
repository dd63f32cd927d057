//! The `channel_frames` target: raw bytes a peer writes after an honest
//! handshake, then EOF.

use peers_net::FRAME_BYTES_MAX;

use super::net::{NOISE_TAG_BYTES, PIPE_SLACK_BYTES, block_on, channel_pair, expect_frame};

/// After an honest handshake between two in-memory ends, one side writes
/// `data` raw into the stream (`SecureChannel::test_write_raw`) and closes;
/// the other's `recv` must refuse the first frame with the error the frame
/// layout calls for: the framing's (closed, torn, oversized), a
/// `MalformedFrame` for a body no longer than a tag, else a Noise error.
/// No frame can authenticate (the keys are fresh per run), so the first
/// `recv` always errs: a receive loop would stop there, and an `Ok` is a bug.
pub fn channel_frames(data: &[u8]) {
    use peers_net::Error;
    let error = block_on(async {
        let (initiator, responder) = tokio::io::duplex(data.len() + PIPE_SLACK_BYTES);
        let (mut sender, mut receiver) = channel_pair(initiator, responder).await;
        sender
            .test_write_raw(data)
            .await
            .expect("the pipe holds the input");
        drop(sender);
        match receiver.recv().await {
            Ok(message) => panic!("a frame forged without the keys opened: {message:?}"),
            Err(error) => error,
        }
    });
    assert!(!matches!(error, Error::Timeout { .. }), "hung: {error:?}");
    let Some((body, _)) = expect_frame(data, FRAME_BYTES_MAX, &error, "frame") else {
        return;
    };
    if body.len() <= NOISE_TAG_BYTES {
        assert!(
            matches!(error, Error::MalformedFrame { bytes } if bytes == body.len() as u64),
            "a frame of {} bytes: {error:?}",
            body.len()
        );
    } else {
        assert!(
            matches!(error, Error::Noise(_)),
            "a forged frame: {error:?}"
        );
    }
}

//! What the network targets ([`sync_message`](super::sync_message),
//! [`handshake_respond`](super::handshake_respond),
//! [`channel_frames`](super::channel_frames)) and their seeds share: real
//! `peers_net` channels over in-memory `tokio::io::duplex` pipes on a
//! current-thread runtime (no sockets, no sleeps, and every input ends in
//! EOF, so nothing waits for a timer), and the reference reading of a
//! stream of frames.

use std::time::Duration;

use peers_net::{ChannelOptions, SecureChannel};
use tokio::io::{AsyncRead, AsyncWrite};

use super::fixtures::identity;

/// The limit of every channel in the network targets. Every input ends in
/// EOF, so no read waits for a timer: a [`peers_net::Error::Timeout`] means
/// a hang, and the targets refuse it. Generous for ASan on a busy machine,
/// well under libFuzzer's `-timeout`.
pub const NET_TIMEOUT: Duration = Duration::from_secs(5);
/// Room in each direction of a pipe beyond the input, so that no handshake
/// message (a few hundred bytes) waits for a reader.
pub const PIPE_SLACK_BYTES: usize = 64 * 1024;
/// A frame's length header: `u32` big endian (docs/PROTOCOL.md).
pub const FRAME_HEADER_BYTES: usize = 4;
/// ChaChaPoly's tag on every encrypted Noise message.
pub const NOISE_TAG_BYTES: usize = 16;

/// Options of every channel here: [`NET_TIMEOUT`] for each step.
pub fn net_options() -> ChannelOptions {
    ChannelOptions {
        handshake_timeout: NET_TIMEOUT,
        recv_timeout: NET_TIMEOUT,
        send_timeout: NET_TIMEOUT,
    }
}

/// Runs `future` on a new current-thread runtime with timers (the channels'
/// timeouts need them): one thread, so a target's run depends on its input
/// alone (and on the fresh Noise keys, which change no outcome).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}

/// An honest handshake over `initiator` and `responder` (the two ends of a
/// pipe): fixture identity 0 dials, 1 accepts.
pub async fn channel_pair<A, B>(initiator: A, responder: B) -> (SecureChannel<A>, SecureChannel<B>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (dialer, listener) = (identity(0), identity(1));
    let (dialed, accepted) = tokio::join!(
        SecureChannel::initiate(initiator, &dialer, Some(listener.author()), net_options()),
        SecureChannel::accept(responder, &listener, net_options()),
    );
    (
        dialed.expect("an honest initiator over a pipe connects"),
        accepted.expect("an honest responder over a pipe connects"),
    )
}

/// The front of a stream of frames (`u32 BE length | body`), as a reader
/// limited to `max` body bytes must see it before EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRead<'a> {
    /// No bytes: the peer closed between frames.
    End,
    /// EOF inside a header.
    TornHeader,
    /// A header over the limit (refused before its body arrives).
    TooLarge(u32),
    /// EOF inside a body, after `read` of its bytes.
    TornBody {
        /// Body bytes that arrived.
        read: usize,
    },
    /// A whole frame's body, and the bytes after it.
    Frame(&'a [u8], &'a [u8]),
}

/// The reference reading of `stream`'s first frame (docs/PROTOCOL.md "Secure
/// channel": the header is checked before the body is buffered).
pub fn read_frame(stream: &[u8], max: usize) -> FrameRead<'_> {
    let Some((header, rest)) = stream.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return match stream.is_empty() {
            true => FrameRead::End,
            false => FrameRead::TornHeader,
        };
    };
    let announced = u32::from_be_bytes(*header);
    let length = usize::try_from(announced).expect("a u32 fits in usize");
    if length > max {
        FrameRead::TooLarge(announced)
    } else if rest.len() < length {
        FrameRead::TornBody { read: rest.len() }
    } else {
        let (body, after) = rest.split_at(length);
        FrameRead::Frame(body, after)
    }
}

/// Checks `error` against what a reader limited to `max` must report when
/// `stream` holds no whole frame at its front; returns that frame otherwise
/// (its body decides the error). `what` names the step for messages.
pub(super) fn expect_frame<'a>(
    stream: &'a [u8],
    max: usize,
    error: &peers_net::Error,
    what: &str,
) -> Option<(&'a [u8], &'a [u8])> {
    use peers_net::Error;
    let read = read_frame(stream, max);
    let fits = match read {
        FrameRead::Frame(body, after) => return Some((body, after)),
        FrameRead::End => matches!(error, Error::Closed),
        FrameRead::TornHeader | FrameRead::TornBody { read: 1.. } => matches!(error, Error::Io(_)),
        // EOF after a whole header is inside a frame: `Io`, like any tear.
        FrameRead::TornBody { read: 0 } => matches!(error, Error::Io(_)),
        FrameRead::TooLarge(announced) => matches!(
            error,
            Error::FrameTooLarge { bytes, max: limit }
                if *bytes == u64::from(announced) && *limit == max as u64
        ),
    };
    assert!(fits, "{what}: {read:?} gave {error:?}");
    None
}

//! Framing and the encryption of one application message.
//!
//! On the wire every handshake message and every application message is one
//! frame: `u32 BE length | bytes` (tokio-util's `LengthDelimitedCodec`
//! defaults). [`FrameCodec`] reads the length itself first so that an
//! oversized frame is a typed [`Error::FrameTooLarge`] before any buffer grows.
//!
//! A Noise transport message holds at most [`NOISE_MESSAGE_BYTES_MAX`] bytes,
//! so one application message is sealed as several Noise messages inside one
//! frame. Format of the plaintext body: `{ message length: u32 LE | message }`,
//! cut into chunks of [`CHUNK_PLAINTEXT_BYTES_MAX`]; each chunk is encrypted
//! into `chunk + 16` bytes and the ciphertexts are concatenated. The receiver
//! cuts the frame at every [`NOISE_MESSAGE_BYTES_MAX`] bytes, so no inner
//! lengths are needed; the authenticated length in the first chunk catches a
//! frame whose tail chunks were cut off.

use bytes::{Buf, Bytes, BytesMut};
use peers_engine::CHANGE_BYTES_MAX;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::error::{Error, Result};

/// The largest Noise message (the Noise spec's limit, snow's `MAXMSGLEN`).
pub const NOISE_MESSAGE_BYTES_MAX: usize = 65_535;
/// The authentication tag each encrypted Noise message carries.
pub(crate) const NOISE_TAG_BYTES: usize = 16;
/// Plaintext bytes in one full chunk.
pub(crate) const CHUNK_PLAINTEXT_BYTES_MAX: usize = NOISE_MESSAGE_BYTES_MAX - NOISE_TAG_BYTES;
/// The authenticated message length that opens every body.
const BODY_LENGTH_BYTES: usize = 4;
/// The frame length header (`LengthDelimitedCodec`'s default: u32 big endian).
const FRAME_HEADER_BYTES: usize = 4;

/// The largest application message [`crate::SecureChannel::send`] takes:
/// one change of [`CHANGE_BYTES_MAX`] plus 64 KiB for the sync message around
/// it, so a maximal change never needs to be split by the sync layer.
pub const MESSAGE_BYTES_MAX: usize = CHANGE_BYTES_MAX + 64 * 1024;
/// The largest encrypted frame after the handshake (header excluded): a
/// [`MESSAGE_BYTES_MAX`] message with its length prefix and one tag per chunk.
pub const FRAME_BYTES_MAX: usize = sealed_bytes(MESSAGE_BYTES_MAX);
/// The largest frame during the handshake: one Noise message.
pub(crate) const HANDSHAKE_FRAME_BYTES_MAX: usize = NOISE_MESSAGE_BYTES_MAX;

const _: () = assert!(MESSAGE_BYTES_MAX < FRAME_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// The ciphertext length of a message of `message_bytes`.
pub(crate) const fn sealed_bytes(message_bytes: usize) -> usize {
    let body = message_bytes + BODY_LENGTH_BYTES;
    let chunks = body.div_ceil(CHUNK_PLAINTEXT_BYTES_MAX);
    body + chunks * NOISE_TAG_BYTES
}

/// `LengthDelimitedCodec` with a limit that is checked, with a typed error,
/// before the frame is buffered.
///
/// # Invariants
/// `in_body` is true exactly when `inner` has consumed a frame header and
/// waits for its body: then the next bytes are body, not a header to check.
pub(crate) struct FrameCodec {
    inner: LengthDelimitedCodec,
    frame_bytes_max: usize,
    in_body: bool,
}

impl FrameCodec {
    pub(crate) fn new(frame_bytes_max: usize) -> FrameCodec {
        let mut codec = FrameCodec {
            inner: LengthDelimitedCodec::new(),
            frame_bytes_max: 0,
            in_body: false,
        };
        codec.set_frame_bytes_max(frame_bytes_max);
        codec
    }

    pub(crate) fn set_frame_bytes_max(&mut self, frame_bytes_max: usize) {
        assert!(!self.in_body, "the limit changes between frames only");
        self.frame_bytes_max = frame_bytes_max;
        self.inner.set_max_frame_length(frame_bytes_max);
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = Error;

    fn decode(&mut self, source: &mut BytesMut) -> Result<Option<BytesMut>> {
        let header_available = self.in_body || source.len() >= FRAME_HEADER_BYTES;
        if !self.in_body && header_available {
            let mut header = &source[..FRAME_HEADER_BYTES];
            let bytes = header.get_u32();
            if u64::from(bytes) > self.frame_bytes_max as u64 {
                return Err(Error::FrameTooLarge {
                    bytes: u64::from(bytes),
                    max: self.frame_bytes_max as u64,
                });
            }
        }
        let frame = self.inner.decode(source)?;
        self.in_body = header_available && frame.is_none();
        Ok(frame)
    }

    /// At EOF, a frame whose header was read is cut off: an I/O error, not
    /// the clean close between frames that the default reports when the
    /// remaining buffer is empty (the header was consumed already).
    fn decode_eof(&mut self, source: &mut BytesMut) -> Result<Option<BytesMut>> {
        if let Some(frame) = self.decode(source)? {
            return Ok(Some(frame));
        }
        if self.in_body || !source.is_empty() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside a frame",
            )));
        }
        Ok(None)
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: Bytes, destination: &mut BytesMut) -> Result<()> {
        // A bug, not the world: callers size frames from our own limits.
        assert!(
            frame.len() <= self.frame_bytes_max,
            "frame over our own limit"
        );
        Ok(self.inner.encode(frame, destination)?)
    }
}

/// Encrypts `message` into one frame (see the module doc for the layout).
/// `nonce` counts the Noise messages sent so far; it advances by one per chunk.
pub(crate) fn seal(
    transport: &snow::StatelessTransportState,
    nonce: &mut u64,
    message: &[u8],
) -> Result<Bytes> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(Error::MessageTooLarge {
            bytes: message.len() as u64,
            max: MESSAGE_BYTES_MAX as u64,
        });
    }
    let length = u32::try_from(message.len()).expect("MESSAGE_BYTES_MAX fits in u32");
    let mut body = Vec::with_capacity(BODY_LENGTH_BYTES + message.len());
    body.extend_from_slice(&length.to_le_bytes());
    body.extend_from_slice(message);
    let sealed_len = sealed_bytes(message.len());
    let mut frame = vec![0u8; sealed_len];
    let mut written = 0;
    for chunk in body.chunks(CHUNK_PLAINTEXT_BYTES_MAX) {
        written += transport.write_message(*nonce, chunk, &mut frame[written..])?;
        *nonce += 1;
    }
    assert_eq!(written, sealed_len, "sealed length matches its formula");
    Ok(Bytes::from(frame))
}

/// Decrypts one frame made by [`seal`]; refuses any other layout. `nonce`
/// counts the Noise messages received so far.
pub(crate) fn open(
    transport: &snow::StatelessTransportState,
    nonce: &mut u64,
    frame: &[u8],
) -> Result<Vec<u8>> {
    let malformed = || Error::MalformedFrame {
        bytes: frame.len() as u64,
    };
    debug_assert!(
        frame.len() <= FRAME_BYTES_MAX,
        "the codec checked the limit"
    );
    let mut body = vec![0u8; frame.len()];
    let mut read = 0;
    for chunk in frame.chunks(NOISE_MESSAGE_BYTES_MAX) {
        // Every chunk carries at least one plaintext byte (the body is never
        // empty), so a chunk of a bare tag or less is not something we send.
        if chunk.len() <= NOISE_TAG_BYTES {
            return Err(malformed());
        }
        read += transport.read_message(*nonce, chunk, &mut body[read..])?;
        *nonce += 1;
    }
    body.truncate(read);
    if body.len() < BODY_LENGTH_BYTES {
        return Err(malformed());
    }
    let mut length_bytes = [0u8; BODY_LENGTH_BYTES];
    length_bytes.copy_from_slice(&body[..BODY_LENGTH_BYTES]);
    let length = u32::from_le_bytes(length_bytes);
    if u64::from(length) != (body.len() - BODY_LENGTH_BYTES) as u64 {
        return Err(malformed());
    }
    body.drain(..BODY_LENGTH_BYTES);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sealed length formula agrees with the chunk boundaries: a body
    /// exactly one chunk long takes one tag, one byte more takes two.
    #[test]
    fn sealed_bytes_at_chunk_boundaries() {
        assert_eq!(sealed_bytes(0), 4 + 16);
        let one_chunk = CHUNK_PLAINTEXT_BYTES_MAX - BODY_LENGTH_BYTES;
        assert_eq!(sealed_bytes(one_chunk), NOISE_MESSAGE_BYTES_MAX);
        assert_eq!(
            sealed_bytes(one_chunk + 1),
            NOISE_MESSAGE_BYTES_MAX + 1 + 16
        );
    }

    /// The limits docs/PROTOCOL.md states as numbers.
    #[test]
    fn limits_match_protocol_doc() {
        assert_eq!(MESSAGE_BYTES_MAX, 4_259_840);
        assert_eq!(FRAME_BYTES_MAX, 4_260_900);
        assert_eq!(CHUNK_PLAINTEXT_BYTES_MAX, 65_519);
    }

    /// An oversized header is refused as soon as its 4 bytes arrive, before
    /// the body is buffered.
    #[test]
    fn oversized_header_refused_before_body() {
        let mut codec = FrameCodec::new(100);
        let mut source = BytesMut::from(&101u32.to_be_bytes()[..]);
        match codec.decode(&mut source) {
            Err(Error::FrameTooLarge {
                bytes: 101,
                max: 100,
            }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        let mut source = BytesMut::from(&100u32.to_be_bytes()[..]);
        assert!(
            matches!(codec.decode(&mut source), Ok(None)),
            "waits for body"
        );
    }

    /// EOF after a whole header but before the body is a torn frame (I/O
    /// error), not a clean close; EOF between frames is a clean close.
    #[test]
    fn eof_inside_a_frame_is_an_error() {
        let mut codec = FrameCodec::new(100);
        let mut source = BytesMut::from(&5u32.to_be_bytes()[..]);
        assert!(matches!(codec.decode(&mut source), Ok(None)));
        assert!(matches!(codec.decode_eof(&mut source), Err(Error::Io(_))));
        let mut codec = FrameCodec::new(100);
        let mut source = BytesMut::new();
        assert!(matches!(codec.decode_eof(&mut source), Ok(None)));
        let mut source = BytesMut::from(&[0u8, 0][..]);
        assert!(matches!(codec.decode_eof(&mut source), Err(Error::Io(_))));
    }

    /// A header and its body arriving in separate reads: body bytes are
    /// never mistaken for a header (a bug once seen over TCP).
    #[test]
    fn split_header_and_body() {
        let mut codec = FrameCodec::new(100);
        let mut source = BytesMut::from(&5u32.to_be_bytes()[..]);
        assert!(matches!(codec.decode(&mut source), Ok(None)));
        source.extend_from_slice(&[0xFF; 3]);
        assert!(matches!(codec.decode(&mut source), Ok(None)));
        source.extend_from_slice(&[0xFF; 2]);
        let frame = codec.decode(&mut source).expect("decodes").expect("whole");
        assert_eq!(&frame[..], &[0xFF; 5]);
        source.extend_from_slice(&[0, 0]);
        assert!(
            matches!(codec.decode(&mut source), Ok(None)),
            "half a header"
        );
        source.extend_from_slice(&[0, 1, 7]);
        let frame = codec.decode(&mut source).expect("decodes").expect("whole");
        assert_eq!(&frame[..], &[7]);
    }
}

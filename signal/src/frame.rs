//! Frames: one WebSocket binary message is one frame. Layouts are in
//! `docs/PROTOCOL.md` "Signaling"; integers are little endian.
//!
//! ```text
//! Challenge  { 0x01 | version u16 | nonce [32] }                 35 bytes, server -> client
//! Register   { 0x02 | version u16 | key [32] | signature [64] }  99 bytes, client -> server
//! Registered { 0x03 | message_bytes_max u32 }                     5 bytes, server -> client
//! Refused    { 0x04 | reason u8 }                                 2 bytes, server -> client
//! Send       { 0x05 | id u64 | to [32] | payload }          41 + n bytes, client -> server
//! Deliver    { 0x06 | from [32] | payload }                 33 + n bytes, server -> client
//! Result     { 0x07 | id u64 | status u8 }                       10 bytes, server -> client
//! ```

use crate::error::FrameError;

/// The signaling protocol version this build speaks (`Challenge.version`, `Register.version`).
pub const PROTOCOL_VERSION: u16 = 1;

/// Domain tag of the registration signature: ed25519 over this tag followed by the
/// `Challenge` nonce (25 bytes; the last is 0x00).
pub const REGISTER_DOMAIN: &[u8] = b"peers signal register v1\0";

/// Frame type bytes.
mod kind {
    pub const CHALLENGE: u8 = 0x01;
    pub const REGISTER: u8 = 0x02;
    pub const REGISTERED: u8 = 0x03;
    pub const REFUSED: u8 = 0x04;
    pub const SEND: u8 = 0x05;
    pub const DELIVER: u8 = 0x06;
    pub const RESULT: u8 = 0x07;
}

/// Length of a `Challenge` frame.
pub const CHALLENGE_BYTES: usize = 1 + 2 + 32;
/// Length of a `Register` frame.
pub const REGISTER_BYTES: usize = 1 + 2 + 32 + 64;
/// Length of a `Registered` frame.
pub const REGISTERED_BYTES: usize = 1 + 4;
/// Length of a `Refused` frame.
pub const REFUSED_BYTES: usize = 1 + 1;
/// Length of a `Send` frame before its payload.
pub const SEND_HEADER_BYTES: usize = 1 + 8 + 32;
/// Length of a `Deliver` frame before its payload.
pub const DELIVER_HEADER_BYTES: usize = 1 + 32;
/// Length of a `Result` frame.
pub const RESULT_BYTES: usize = 1 + 8 + 1;

/// Why the server refused a registration (`Refused.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefuseReason {
    /// 1: `Register.version` is not the server's.
    UnsupportedVersion,
    /// 2: the signature does not verify under the key over this connection's nonce
    /// (forged, replayed from another connection, or a key that is not a strong ed25519 key).
    BadProof,
    /// 3: the key already has `REGISTRATIONS_PER_KEY_MAX` registered connections.
    TooManyRegistrations,
    /// 4: too many connections from this IP address.
    TooManyConnections,
    /// 5: the server holds its maximum number of clients.
    ServerFull,
    /// 6: no valid `Register` within the registration timeout.
    Timeout,
    /// 7: the first frame was not a well-formed `Register`.
    Malformed,
}

impl RefuseReason {
    fn code(self) -> u8 {
        match self {
            Self::UnsupportedVersion => 1,
            Self::BadProof => 2,
            Self::TooManyRegistrations => 3,
            Self::TooManyConnections => 4,
            Self::ServerFull => 5,
            Self::Timeout => 6,
            Self::Malformed => 7,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::UnsupportedVersion,
            2 => Self::BadProof,
            3 => Self::TooManyRegistrations,
            4 => Self::TooManyConnections,
            5 => Self::ServerFull,
            6 => Self::Timeout,
            7 => Self::Malformed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnsupportedVersion => "protocol version not supported; upgrade the older side",
            Self::BadProof => "the key proof did not verify",
            Self::TooManyRegistrations => {
                "this key is already registered from too many connections; close one"
            }
            Self::TooManyConnections => {
                "too many connections from this address; close some or use another server"
            }
            Self::ServerFull => "the server is full; retry later or use another server",
            Self::Timeout => "registration took too long",
            Self::Malformed => "the registration frame was malformed",
        })
    }
}

/// What the server did with a `Send` (`Result.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// 0: queued on at least one of the recipient's registered connections.
    Delivered,
    /// 1: the recipient has no registered connection.
    Offline,
    /// 2: the frame is over the server's `message_bytes_max`.
    TooLarge,
    /// 3: this connection's rate limit was reached; nothing was forwarded.
    RateLimited,
    /// 4: every registered connection of the recipient has a full queue.
    Busy,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Self::Delivered => 0,
            Self::Offline => 1,
            Self::TooLarge => 2,
            Self::RateLimited => 3,
            Self::Busy => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Delivered,
            1 => Self::Offline,
            2 => Self::TooLarge,
            3 => Self::RateLimited,
            4 => Self::Busy,
            _ => return None,
        })
    }
}

/// One frame of the signaling protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Server's first frame: the version it speaks and a fresh nonce to sign.
    Challenge {
        /// Protocol version.
        version: u16,
        /// Fresh random nonce, new for every connection.
        nonce: [u8; 32],
    },
    /// Client's proof of its key.
    Register {
        /// Protocol version.
        version: u16,
        /// The client's ed25519 public key.
        key: [u8; 32],
        /// ed25519 by `key` over [`REGISTER_DOMAIN`] || nonce.
        signature: [u8; 64],
    },
    /// The registration is accepted.
    Registered {
        /// The largest frame the server accepts from this client.
        message_bytes_max: u32,
    },
    /// The registration is refused; the server closes the connection.
    Refused {
        /// Why.
        reason: RefuseReason,
    },
    /// Forward `payload` to `to`'s registered connections.
    Send {
        /// The client's id for this send, echoed in `Result`.
        id: u64,
        /// The recipient's key.
        to: [u8; 32],
        /// Opaque bytes (a sealed payload).
        payload: Vec<u8>,
    },
    /// A payload from `from` (the key that registered the sending connection).
    Deliver {
        /// The sender's registered key.
        from: [u8; 32],
        /// Opaque bytes as the sender sent them.
        payload: Vec<u8>,
    },
    /// What became of the `Send` with this `id`.
    Result {
        /// The `Send.id`.
        id: u64,
        /// What the server did.
        status: Status,
    },
}

/// Reads fixed-size fields from a frame whose length has already been checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        out
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// Checks that a frame of type `kind` is between `min` and `max` bytes long.
fn check_length(kind: u8, bytes: usize, min: usize, max: usize) -> Result<(), FrameError> {
    if bytes < min {
        return Err(FrameError::Truncated {
            kind,
            bytes,
            expected: min,
        });
    }
    if bytes > max {
        return Err(FrameError::TrailingBytes {
            kind,
            bytes,
            expected: max,
        });
    }
    Ok(())
}

/// Reads a `version` field (bytes 1..3) before the length is checked, so a later
/// version's longer frame gets the version error.
fn check_version(kind: u8, bytes: &[u8]) -> Result<(), FrameError> {
    let Some(field) = bytes.get(1..3) else {
        return Err(FrameError::Truncated {
            kind,
            bytes: bytes.len(),
            expected: 3,
        });
    };
    let version = u16::from_le_bytes([field[0], field[1]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion { version });
    }
    Ok(())
}

impl Frame {
    /// Decodes one frame. Never panics; every length is checked against its type.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let Some(&kind) = bytes.first() else {
            return Err(FrameError::Empty);
        };
        let length = bytes.len();
        let mut reader = Reader { bytes: &bytes[1..] };
        match kind {
            kind::CHALLENGE => {
                check_version(kind, bytes)?;
                check_length(kind, length, CHALLENGE_BYTES, CHALLENGE_BYTES)?;
                let version = u16::from_le_bytes(reader.take());
                Ok(Frame::Challenge {
                    version,
                    nonce: reader.take(),
                })
            }
            kind::REGISTER => {
                check_version(kind, bytes)?;
                check_length(kind, length, REGISTER_BYTES, REGISTER_BYTES)?;
                let version = u16::from_le_bytes(reader.take());
                let key = reader.take();
                Ok(Frame::Register {
                    version,
                    key,
                    signature: reader.take(),
                })
            }
            kind::REGISTERED => {
                check_length(kind, length, REGISTERED_BYTES, REGISTERED_BYTES)?;
                Ok(Frame::Registered {
                    message_bytes_max: u32::from_le_bytes(reader.take()),
                })
            }
            kind::REFUSED => {
                check_length(kind, length, REFUSED_BYTES, REFUSED_BYTES)?;
                let [value] = reader.take();
                let reason = RefuseReason::from_code(value)
                    .ok_or(FrameError::UnknownCode { kind, value })?;
                Ok(Frame::Refused { reason })
            }
            kind::SEND => {
                check_length(kind, length, SEND_HEADER_BYTES, usize::MAX)?;
                let id = u64::from_le_bytes(reader.take());
                let to = reader.take();
                Ok(Frame::Send {
                    id,
                    to,
                    payload: reader.rest().to_vec(),
                })
            }
            kind::DELIVER => {
                check_length(kind, length, DELIVER_HEADER_BYTES, usize::MAX)?;
                let from = reader.take();
                Ok(Frame::Deliver {
                    from,
                    payload: reader.rest().to_vec(),
                })
            }
            kind::RESULT => {
                check_length(kind, length, RESULT_BYTES, RESULT_BYTES)?;
                let id = u64::from_le_bytes(reader.take());
                let [value] = reader.take();
                let status =
                    Status::from_code(value).ok_or(FrameError::UnknownCode { kind, value })?;
                Ok(Frame::Result { id, status })
            }
            kind => Err(FrameError::UnknownType { kind }),
        }
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Challenge { version, nonce } => {
                let mut out = Vec::with_capacity(CHALLENGE_BYTES);
                out.push(kind::CHALLENGE);
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(nonce);
                out
            }
            Frame::Register {
                version,
                key,
                signature,
            } => {
                let mut out = Vec::with_capacity(REGISTER_BYTES);
                out.push(kind::REGISTER);
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(signature);
                out
            }
            Frame::Registered { message_bytes_max } => {
                let mut out = Vec::with_capacity(REGISTERED_BYTES);
                out.push(kind::REGISTERED);
                out.extend_from_slice(&message_bytes_max.to_le_bytes());
                out
            }
            Frame::Refused { reason } => vec![kind::REFUSED, reason.code()],
            Frame::Send { id, to, payload } => encode_send(*id, to, payload),
            Frame::Deliver { from, payload } => encode_deliver(from, payload),
            Frame::Result { id, status } => {
                let mut out = Vec::with_capacity(RESULT_BYTES);
                out.push(kind::RESULT);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(status.code());
                out
            }
        }
    }
}

/// Encodes a `Send` without building a [`Frame`] first.
pub(crate) fn encode_send(id: u64, to: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEND_HEADER_BYTES + payload.len());
    out.push(kind::SEND);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(to);
    out.extend_from_slice(payload);
    out
}

/// Encodes a `Deliver` without building a [`Frame`] first.
pub(crate) fn encode_deliver(from: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DELIVER_HEADER_BYTES + payload.len());
    out.push(kind::DELIVER);
    out.extend_from_slice(from);
    out.extend_from_slice(payload);
    out
}

/// The `Send` header fields read from a frame without copying its payload: the
/// server forwards the payload as a slice.
pub(crate) fn split_send(bytes: &[u8]) -> Result<(u64, [u8; 32], &[u8]), FrameError> {
    let Some(&kind) = bytes.first() else {
        return Err(FrameError::Empty);
    };
    if kind != kind::SEND {
        return Err(FrameError::Unexpected { kind });
    }
    check_length(kind, bytes.len(), SEND_HEADER_BYTES, usize::MAX)?;
    let mut reader = Reader { bytes: &bytes[1..] };
    let id = u64::from_le_bytes(reader.take());
    let to = reader.take();
    Ok((id, to, reader.rest()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Challenge {
                version: PROTOCOL_VERSION,
                nonce: [0x11; 32],
            },
            Frame::Register {
                version: PROTOCOL_VERSION,
                key: [0x22; 32],
                signature: [0x33; 64],
            },
            Frame::Registered {
                message_bytes_max: 65_536,
            },
            Frame::Refused {
                reason: RefuseReason::BadProof,
            },
            Frame::Send {
                id: 7,
                to: [0x44; 32],
                payload: b"sealed".to_vec(),
            },
            Frame::Send {
                id: u64::MAX,
                to: [0x44; 32],
                payload: Vec::new(),
            },
            Frame::Deliver {
                from: [0x55; 32],
                payload: b"sealed".to_vec(),
            },
            Frame::Deliver {
                from: [0x55; 32],
                payload: Vec::new(),
            },
            Frame::Result {
                id: 9,
                status: Status::RateLimited,
            },
        ]
    }

    /// Every frame decodes to itself.
    #[test]
    fn round_trip() {
        for frame in all_frames() {
            assert_eq!(
                Frame::decode(&frame.encode()),
                Ok(frame.clone()),
                "{frame:?}"
            );
        }
        for code in 1..=7 {
            let reason = RefuseReason::from_code(code).expect("a known code");
            let frame = Frame::Refused { reason };
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
        for code in 0..=4 {
            let status = Status::from_code(code).expect("a known code");
            let frame = Frame::Result { id: 1, status };
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
    }

    /// Every proper prefix of a frame is refused with a typed error, never a panic.
    #[test]
    fn truncation_is_an_error() {
        for frame in all_frames() {
            let bytes = frame.encode();
            let fixed = match frame {
                Frame::Send { .. } => SEND_HEADER_BYTES,
                Frame::Deliver { .. } => DELIVER_HEADER_BYTES,
                _ => bytes.len(),
            };
            for cut in 0..fixed {
                let error = Frame::decode(&bytes[..cut]).expect_err("a truncated frame");
                if cut == 0 {
                    assert_eq!(error, FrameError::Empty);
                } else {
                    assert!(
                        matches!(error, FrameError::Truncated { .. }),
                        "{frame:?} at {cut}: {error:?}"
                    );
                }
            }
        }
    }

    /// A fixed-size frame with a byte more is refused; Send and Deliver take it as payload.
    #[test]
    fn trailing_bytes_are_an_error() {
        for frame in all_frames() {
            let mut bytes = frame.encode();
            bytes.push(0);
            match frame {
                Frame::Send { .. } | Frame::Deliver { .. } => {
                    assert!(Frame::decode(&bytes).is_ok())
                }
                _ => assert!(
                    matches!(Frame::decode(&bytes), Err(FrameError::TrailingBytes { .. })),
                    "{frame:?}"
                ),
            }
        }
    }

    /// Unknown types, codes and versions are typed errors.
    #[test]
    fn bad_type_code_and_version() {
        for kind in [0x00, 0x08, 0x80, 0xff] {
            assert_eq!(
                Frame::decode(&[kind, 0, 0]),
                Err(FrameError::UnknownType { kind })
            );
        }
        assert_eq!(
            Frame::decode(&[0x04, 0]),
            Err(FrameError::UnknownCode {
                kind: 0x04,
                value: 0
            })
        );
        assert_eq!(
            Frame::decode(&[0x04, 8]),
            Err(FrameError::UnknownCode {
                kind: 0x04,
                value: 8
            })
        );
        let mut result = Frame::Result {
            id: 1,
            status: Status::Busy,
        }
        .encode();
        result[9] = 5;
        assert_eq!(
            Frame::decode(&result),
            Err(FrameError::UnknownCode {
                kind: 0x07,
                value: 5
            })
        );
        // A later version's longer Challenge gets the version error, not a length error.
        let mut challenge = vec![0x01, 2, 0];
        challenge.extend_from_slice(&[0; 40]);
        assert_eq!(
            Frame::decode(&challenge),
            Err(FrameError::UnsupportedVersion { version: 2 })
        );
        let mut register = Frame::Register {
            version: 1,
            key: [0; 32],
            signature: [0; 64],
        }
        .encode();
        register[1] = 0;
        assert_eq!(
            Frame::decode(&register),
            Err(FrameError::UnsupportedVersion { version: 0 })
        );
    }

    /// Byte-exact layouts (see docs/PROTOCOL.md "Signaling"). The Register vector's
    /// signature is checked in `seal::tests::register_vector` against
    /// `tests/vectors/signal_vectors.py`.
    #[test]
    fn frame_vectors() {
        let cases: [(Frame, &str); 6] = [
            (
                Frame::Challenge {
                    version: 1,
                    nonce: [0x11; 32],
                },
                "010100 1111111111111111111111111111111111111111111111111111111111111111",
            ),
            (
                Frame::Registered {
                    message_bytes_max: 65_536,
                },
                "03 00000100",
            ),
            (
                Frame::Refused {
                    reason: RefuseReason::TooManyRegistrations,
                },
                "04 03",
            ),
            (
                Frame::Send {
                    id: 0x0102,
                    to: [0xaa; 32],
                    payload: vec![0xde, 0xad],
                },
                "05 0201000000000000 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa dead",
            ),
            (
                Frame::Deliver {
                    from: [0xbb; 32],
                    payload: vec![0xbe, 0xef],
                },
                "06 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb beef",
            ),
            (
                Frame::Result {
                    id: 0x0102,
                    status: Status::Offline,
                },
                "07 0201000000000000 01",
            ),
        ];
        for (frame, expected) in cases {
            let expected = expected.replace(' ', "");
            assert_eq!(hex::encode(frame.encode()), expected, "{frame:?}");
        }
    }

    /// Any first byte with any short tail decodes or fails with a typed error, never a panic.
    #[test]
    fn short_inputs_never_panic() {
        for kind in 0..=u8::MAX {
            for length in 0..=REGISTER_BYTES + 2 {
                for fill in [0x00, 0x01, 0xff] {
                    let mut bytes = vec![fill; length];
                    if let Some(first) = bytes.first_mut() {
                        *first = kind;
                    }
                    if let Ok(frame) = Frame::decode(&bytes) {
                        assert_eq!(
                            frame.encode(),
                            bytes,
                            "what decodes encodes back to the same bytes"
                        );
                    }
                }
            }
        }
    }

    /// `split_send` agrees with `decode` and refuses other frames.
    #[test]
    fn split_send_matches_decode() {
        let bytes = encode_send(5, &[1; 32], b"abc");
        assert_eq!(split_send(&bytes), Ok((5, [1; 32], &b"abc"[..])));
        assert_eq!(
            split_send(&bytes[..40]),
            Err(FrameError::Truncated {
                kind: 5,
                bytes: 40,
                expected: 41
            })
        );
        assert_eq!(
            split_send(&[0x06; 50]),
            Err(FrameError::Unexpected { kind: 6 })
        );
        assert_eq!(split_send(&[]), Err(FrameError::Empty));
    }
}

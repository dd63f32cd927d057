//! The rendezvous messages two nodes exchange through a signaling server to
//! open a WebRTC connection (docs/PROTOCOL.md "WebRTC transport"). They
//! travel as the body of a sealed signaling payload, so only the two peers
//! read them; this decoder still treats every byte as hostile.
//!
//! ```text
//! message    = kind: u8 | version: u8 (1) | session: [16] | fields
//! Offer  (1) = database_proof: [32] | ice | candidates
//! Answer (2) = ice | candidates
//! Trickle(3) = candidates
//! Refuse (4) = reason: u8
//! Hangup (5) = (nothing)
//! Join   (6) = database_proof: [32] | invite: [16] | ice | candidates   (an Offer that redeems an invite)
//! ice        = ufrag: u8 len + UTF-8 | password: u8 len + UTF-8 | fingerprint: [32] (SHA-256 of the DTLS certificate)
//! candidates = count: u8 (<= 16) | count x candidate
//! candidate  = type: u8 (0 host, 1 server-reflexive) | family: u8 (4, 6) | ip: [4 or 16] | port: u16 BE
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version byte of every rendezvous message this build writes and reads.
pub const RENDEZVOUS_VERSION: u8 = 1;
/// Most candidates in one message (and kept from one peer in all).
pub const CANDIDATES_MAX: usize = 16;
/// Longest ICE username fragment or password accepted (RFC 8839 allows
/// 256 characters; str0m makes 8 and 24).
pub const ICE_TEXT_BYTES_MAX: usize = 128;
/// The length of a session id, chosen at random by the dialer.
pub const SESSION_ID_BYTES: usize = 16;
/// Bytes of a DTLS certificate fingerprint (SHA-256).
pub const FINGERPRINT_BYTES: usize = 32;

/// A connection attempt's id: random, chosen by the dialer.
pub type SessionId = [u8; SESSION_ID_BYTES];

/// One side's ICE credentials and DTLS certificate fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceParams {
    /// ICE username fragment.
    pub ufrag: String,
    /// ICE password.
    pub password: String,
    /// SHA-256 of the DTLS certificate.
    pub fingerprint: [u8; FINGERPRINT_BYTES],
}

/// What kind of address a candidate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateType {
    /// An address of one of the peer's interfaces.
    Host,
    /// The peer's address as a STUN server saw it (its NAT's public side).
    ServerReflexive,
}

/// One way to reach a peer over UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireCandidate {
    /// Host or server-reflexive.
    pub kind: CandidateType,
    /// The address.
    pub address: SocketAddr,
}

/// Why an acceptor refused an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The offer does not prove knowing our database's id.
    OtherDatabase,
    /// The dialer's key holds no role in our members-only database.
    NotAMember,
    /// We hold the most connections we run at once.
    Busy,
    /// We are shutting down.
    ShuttingDown,
    /// A `Join` named no invite we hold.
    InviteUnknown,
    /// A `Join` named an expired invite.
    InviteExpired,
    /// A `Join` named an invite whose uses are spent.
    InviteUsed,
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefuseReason::OtherDatabase => "it syncs another database",
            RefuseReason::NotAMember => {
                "our key is not a member of its database (ask its owner or an admin for a grant, or an invite)"
            }
            RefuseReason::Busy => "it is busy (too many connections); try again later",
            RefuseReason::ShuttingDown => "it is shutting down",
            RefuseReason::InviteUnknown => {
                "it knows no such invite (a forged ticket, or one from another replica)"
            }
            RefuseReason::InviteExpired => "the invite has expired; ask for a new one",
            RefuseReason::InviteUsed => "the invite was already used; ask for a new one",
        })
    }
}

/// A rendezvous message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendezvous {
    /// The dialer's first message.
    Offer {
        /// The attempt.
        session: SessionId,
        /// See [`crate::webrtc::offer_proof`].
        database_proof: [u8; 32],
        /// The dialer's ICE credentials and fingerprint.
        ice: IceParams,
        /// The dialer's candidates known so far.
        candidates: Vec<WireCandidate>,
        /// The invite the dialer redeems (`crate::invite::invite_id`): then
        /// the message's kind is `Join` (6), and the gate admits a key
        /// without a role while the invite is open.
        invite: Option<[u8; 16]>,
    },
    /// The acceptor's reply.
    Answer {
        /// The attempt.
        session: SessionId,
        /// The acceptor's ICE credentials and fingerprint.
        ice: IceParams,
        /// The acceptor's candidates known so far.
        candidates: Vec<WireCandidate>,
    },
    /// Candidates found later (server-reflexive ones, after STUN answers).
    Trickle {
        /// The attempt.
        session: SessionId,
        /// The new candidates.
        candidates: Vec<WireCandidate>,
    },
    /// The acceptor will not connect.
    Refuse {
        /// The attempt.
        session: SessionId,
        /// Why.
        reason: RefuseReason,
    },
    /// The dialer gave up on the attempt.
    Hangup {
        /// The attempt.
        session: SessionId,
    },
}

/// Why a rendezvous message did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RendezvousError {
    /// The message ends before a field it announces.
    #[error("rendezvous message truncated")]
    Truncated,
    /// Bytes follow the last field.
    #[error("{0} bytes after the end of a rendezvous message")]
    TrailingBytes(usize),
    /// Another version of the rendezvous messages.
    #[error("rendezvous version {0}, this build speaks {RENDEZVOUS_VERSION}")]
    UnsupportedVersion(u8),
    /// An unknown message kind, candidate type, address family or reason.
    #[error("unknown {what} {value} in a rendezvous message")]
    Unknown {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u8,
    },
    /// More candidates than [`CANDIDATES_MAX`], or an ICE text longer than
    /// [`ICE_TEXT_BYTES_MAX`] or not UTF-8.
    #[error("rendezvous field {what} out of bounds")]
    OutOfBounds {
        /// Which field.
        what: &'static str,
    },
}

const KIND_OFFER: u8 = 1;
const KIND_ANSWER: u8 = 2;
const KIND_TRICKLE: u8 = 3;
const KIND_REFUSE: u8 = 4;
const KIND_HANGUP: u8 = 5;
const KIND_JOIN: u8 = 6;

impl Rendezvous {
    /// The attempt this message belongs to.
    pub fn session(&self) -> &SessionId {
        match self {
            Rendezvous::Offer { session, .. }
            | Rendezvous::Answer { session, .. }
            | Rendezvous::Trickle { session, .. }
            | Rendezvous::Refuse { session, .. }
            | Rendezvous::Hangup { session } => session,
        }
    }

    /// The bytes on the wire. Candidates beyond [`CANDIDATES_MAX`] and ICE
    /// texts beyond [`ICE_TEXT_BYTES_MAX`] are never made by this build;
    /// encoding them is refused rather than truncated.
    pub fn encode(&self) -> Result<Vec<u8>, RendezvousError> {
        let mut out = Vec::with_capacity(128);
        let kind = match self {
            Rendezvous::Offer { invite: None, .. } => KIND_OFFER,
            Rendezvous::Offer {
                invite: Some(_), ..
            } => KIND_JOIN,
            Rendezvous::Answer { .. } => KIND_ANSWER,
            Rendezvous::Trickle { .. } => KIND_TRICKLE,
            Rendezvous::Refuse { .. } => KIND_REFUSE,
            Rendezvous::Hangup { .. } => KIND_HANGUP,
        };
        out.push(kind);
        out.push(RENDEZVOUS_VERSION);
        out.extend_from_slice(self.session());
        match self {
            Rendezvous::Offer {
                database_proof,
                ice,
                candidates,
                invite,
                ..
            } => {
                out.extend_from_slice(database_proof);
                if let Some(invite) = invite {
                    out.extend_from_slice(invite);
                }
                encode_ice(&mut out, ice)?;
                encode_candidates(&mut out, candidates)?;
            }
            Rendezvous::Answer {
                ice, candidates, ..
            } => {
                encode_ice(&mut out, ice)?;
                encode_candidates(&mut out, candidates)?;
            }
            Rendezvous::Trickle { candidates, .. } => encode_candidates(&mut out, candidates)?,
            Rendezvous::Refuse { reason, .. } => out.push(match reason {
                RefuseReason::OtherDatabase => 1,
                RefuseReason::NotAMember => 2,
                RefuseReason::Busy => 3,
                RefuseReason::ShuttingDown => 4,
                RefuseReason::InviteUnknown => 5,
                RefuseReason::InviteExpired => 6,
                RefuseReason::InviteUsed => 7,
            }),
            Rendezvous::Hangup { .. } => {}
        }
        Ok(out)
    }

    /// Parses one message; every length is checked before it is used.
    pub fn decode(bytes: &[u8]) -> Result<Rendezvous, RendezvousError> {
        let mut reader = Reader { bytes };
        let kind = reader.u8()?;
        let version = reader.u8()?;
        if version != RENDEZVOUS_VERSION {
            return Err(RendezvousError::UnsupportedVersion(version));
        }
        let session: SessionId = reader.array()?;
        let message = match kind {
            KIND_OFFER => Rendezvous::Offer {
                session,
                database_proof: reader.array()?,
                invite: None,
                ice: reader.ice()?,
                candidates: reader.candidates()?,
            },
            KIND_JOIN => Rendezvous::Offer {
                session,
                database_proof: reader.array()?,
                invite: Some(reader.array()?),
                ice: reader.ice()?,
                candidates: reader.candidates()?,
            },
            KIND_ANSWER => Rendezvous::Answer {
                session,
                ice: reader.ice()?,
                candidates: reader.candidates()?,
            },
            KIND_TRICKLE => Rendezvous::Trickle {
                session,
                candidates: reader.candidates()?,
            },
            KIND_REFUSE => Rendezvous::Refuse {
                session,
                reason: match reader.u8()? {
                    1 => RefuseReason::OtherDatabase,
                    2 => RefuseReason::NotAMember,
                    3 => RefuseReason::Busy,
                    4 => RefuseReason::ShuttingDown,
                    5 => RefuseReason::InviteUnknown,
                    6 => RefuseReason::InviteExpired,
                    7 => RefuseReason::InviteUsed,
                    value => {
                        return Err(RendezvousError::Unknown {
                            what: "refusal reason",
                            value,
                        });
                    }
                },
            },
            KIND_HANGUP => Rendezvous::Hangup { session },
            value => {
                return Err(RendezvousError::Unknown {
                    what: "message kind",
                    value,
                });
            }
        };
        if !reader.bytes.is_empty() {
            return Err(RendezvousError::TrailingBytes(reader.bytes.len()));
        }
        Ok(message)
    }
}

fn encode_ice(out: &mut Vec<u8>, ice: &IceParams) -> Result<(), RendezvousError> {
    for (text, what) in [(&ice.ufrag, "ufrag"), (&ice.password, "password")] {
        if text.len() > ICE_TEXT_BYTES_MAX {
            return Err(RendezvousError::OutOfBounds { what });
        }
        out.push(text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(&ice.fingerprint);
    Ok(())
}

/// `family: u8 (4 or 6) | ip: [4 or 16] | port: u16 BE`, the address layout of
/// rendezvous candidates and of tickets.
pub(crate) fn encode_address(out: &mut Vec<u8>, address: &SocketAddr) {
    match address.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&address.port().to_be_bytes());
}

fn encode_candidates(
    out: &mut Vec<u8>,
    candidates: &[WireCandidate],
) -> Result<(), RendezvousError> {
    if candidates.len() > CANDIDATES_MAX {
        return Err(RendezvousError::OutOfBounds { what: "candidates" });
    }
    out.push(candidates.len() as u8);
    for candidate in candidates {
        out.push(match candidate.kind {
            CandidateType::Host => 0,
            CandidateType::ServerReflexive => 1,
        });
        encode_address(out, &candidate.address);
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], RendezvousError> {
        if self.bytes.len() < count {
            return Err(RendezvousError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RendezvousError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RendezvousError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn text(&mut self, what: &'static str) -> Result<String, RendezvousError> {
        let length = usize::from(self.u8()?);
        if length > ICE_TEXT_BYTES_MAX {
            return Err(RendezvousError::OutOfBounds { what });
        }
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RendezvousError::OutOfBounds { what })
    }

    fn ice(&mut self) -> Result<IceParams, RendezvousError> {
        Ok(IceParams {
            ufrag: self.text("ufrag")?,
            password: self.text("password")?,
            fingerprint: self.array()?,
        })
    }

    fn candidates(&mut self) -> Result<Vec<WireCandidate>, RendezvousError> {
        let count = usize::from(self.u8()?);
        if count > CANDIDATES_MAX {
            return Err(RendezvousError::OutOfBounds { what: "candidates" });
        }
        let mut candidates = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = match self.u8()? {
                0 => CandidateType::Host,
                1 => CandidateType::ServerReflexive,
                value => {
                    return Err(RendezvousError::Unknown {
                        what: "candidate type",
                        value,
                    });
                }
            };
            let ip = match self.u8()? {
                4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
                6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
                value => {
                    return Err(RendezvousError::Unknown {
                        what: "address family",
                        value,
                    });
                }
            };
            let port = u16::from_be_bytes(self.array()?);
            candidates.push(WireCandidate {
                kind,
                address: SocketAddr::new(ip, port),
            });
        }
        Ok(candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Rendezvous {
        Rendezvous::Offer {
            session: [7; SESSION_ID_BYTES],
            database_proof: [9; 32],
            invite: None,
            ice: IceParams {
                ufrag: "abcd".into(),
                password: "p".repeat(24),
                fingerprint: [3; FINGERPRINT_BYTES],
            },
            candidates: vec![
                WireCandidate {
                    kind: CandidateType::Host,
                    address: "192.0.2.1:5000".parse().expect("address"),
                },
                WireCandidate {
                    kind: CandidateType::ServerReflexive,
                    address: "[2001:db8::1]:6000".parse().expect("address"),
                },
            ],
        }
    }

    #[test]
    fn every_message_round_trips() {
        let session = [1; SESSION_ID_BYTES];
        let join = match offer() {
            Rendezvous::Offer {
                session,
                database_proof,
                ice,
                candidates,
                ..
            } => Rendezvous::Offer {
                session,
                database_proof,
                invite: Some([5; 16]),
                ice,
                candidates,
            },
            _ => unreachable!("offer() makes an Offer"),
        };
        let bytes = join.encode().expect("encodes");
        assert_eq!(bytes[0], 6, "an offer with an invite is a Join");
        assert_eq!(&bytes[2 + 16 + 32..2 + 16 + 32 + 16], &[5; 16]);
        let messages = [
            join,
            offer(),
            Rendezvous::Answer {
                session,
                ice: IceParams {
                    ufrag: String::new(),
                    password: "x".into(),
                    fingerprint: [0; FINGERPRINT_BYTES],
                },
                candidates: Vec::new(),
            },
            Rendezvous::Trickle {
                session,
                candidates: vec![WireCandidate {
                    kind: CandidateType::Host,
                    address: "10.0.0.1:1".parse().expect("address"),
                }],
            },
            Rendezvous::Refuse {
                session,
                reason: RefuseReason::NotAMember,
            },
            Rendezvous::Hangup { session },
        ];
        for message in messages {
            let bytes = message.encode().expect("encodes");
            assert_eq!(Rendezvous::decode(&bytes), Ok(message));
        }
    }

    /// The offer above, laid out by hand from the module's grammar.
    #[test]
    fn offer_bytes_match_the_spec() {
        let mut expected = vec![1u8, 1];
        expected.extend([7; 16]);
        expected.extend([9; 32]);
        expected.push(4);
        expected.extend(b"abcd");
        expected.push(24);
        expected.extend([b'p'; 24]);
        expected.extend([3; 32]);
        expected.extend([2, 0, 4, 192, 0, 2, 1, 0x13, 0x88, 1, 6]);
        expected.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend([0x17, 0x70]);
        assert_eq!(offer().encode().expect("encodes"), expected);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = offer().encode().expect("encodes");
        for end in 0..bytes.len() {
            assert_eq!(
                Rendezvous::decode(&bytes[..end]),
                Err(RendezvousError::Truncated),
                "{end}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Rendezvous::decode(&longer),
            Err(RendezvousError::TrailingBytes(1))
        );
        let mut version = bytes.clone();
        version[1] = 2;
        assert_eq!(
            Rendezvous::decode(&version),
            Err(RendezvousError::UnsupportedVersion(2))
        );
        let mut many = vec![3u8, 1];
        many.extend([0; 16]);
        many.push(17);
        assert_eq!(
            Rendezvous::decode(&many),
            Err(RendezvousError::OutOfBounds { what: "candidates" })
        );
        let mut family = vec![3u8, 1];
        family.extend([0; 16]);
        family.extend([1, 0, 5]);
        assert_eq!(
            Rendezvous::decode(&family),
            Err(RendezvousError::Unknown {
                what: "address family",
                value: 5
            })
        );
    }
}

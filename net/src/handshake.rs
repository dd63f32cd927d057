//! The Noise XX handshake with an ed25519 identity proof (docs/PROTOCOL.md
//! "Secure channel").
//!
//! Each side makes a fresh X25519 static key per connection and proves its
//! long-lived ed25519 identity by signing `IDENTITY_PROOF_DOMAIN || static key`
//! inside its encrypted handshake payload (message 2 for the responder,
//! message 3 for the initiator), as libp2p-noise does. The receiver verifies
//! that signature against the static key Noise itself authenticated, so a
//! proof cannot be lifted from another connection.
//!
//! ```text
//! -> e                 payload: Offer  { version_min: u16 LE | version_max: u16 LE }   (plaintext)
//! <- e, ee, s, es      payload: Proof  { version: u16 LE | author: [32] | signature: [64] }
//! -> s, se             payload: Proof
//! ```

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use peers_engine::{Author, Identity, verify_ed25519_strict};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::error::{Error, Result};
use crate::frame::{FrameCodec, NOISE_MESSAGE_BYTES_MAX};

/// The Noise protocol name; both sides must use exactly this.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Mixed into the handshake hash: a peer of another protocol fails message 2.
pub(crate) const PROLOGUE: &[u8] = b"peers secure channel";
/// Prefixed to the Noise static key before signing, so this signature never
/// verifies as a change signature or any other protocol's.
pub const IDENTITY_PROOF_DOMAIN: &[u8] = b"peers noise static key v1\0";
/// The channel protocol version this build speaks (docs/PROTOCOL.md
/// "Version changes").
pub const CHANNEL_VERSION: u16 = 1;
/// The oldest channel protocol version this build still speaks.
pub const CHANNEL_VERSION_MIN: u16 = 1;

const _: () = assert!(CHANNEL_VERSION_MIN <= CHANNEL_VERSION);

const X25519_KEY_BYTES: usize = 32;
const OFFER_BYTES: usize = 2 + 2;
const PROOF_VERSION_OFFSET: usize = 0;
const PROOF_AUTHOR_OFFSET: usize = 2;
const PROOF_SIGNATURE_OFFSET: usize = PROOF_AUTHOR_OFFSET + 32;
const PROOF_BYTES: usize = PROOF_SIGNATURE_OFFSET + 64;

/// What one side proves about itself.
pub(crate) struct Local<'a> {
    /// The identity named in the proof.
    pub(crate) identity: &'a Identity,
    /// The key that signs the proof: `identity` except in forging tests.
    pub(crate) proof_signer: &'a Identity,
}

/// The outcome of a handshake.
pub(crate) struct Established {
    pub(crate) transport: snow::StatelessTransportState,
    pub(crate) remote: Author,
    pub(crate) version: u16,
    /// Noise's handshake hash `h`: the same on both sides, different for
    /// every connection (both sides' ephemeral keys are in it).
    pub(crate) handshake_hash: [u8; HANDSHAKE_HASH_BYTES],
}

/// The length of Noise's handshake hash with BLAKE2s.
pub const HANDSHAKE_HASH_BYTES: usize = 32;

type Wire<S> = Framed<S, FrameCodec>;

/// Runs the initiator's side. Refuses before sending message 3 (and so
/// before revealing who we are) if `expected` is set and the responder
/// proves another key.
pub(crate) async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    local: Local<'_>,
    expected: Option<Author>,
    binding: &[u8],
) -> Result<Established> {
    let (mut state, static_public) = new_state(true, binding)?;
    let mut offer = [0u8; OFFER_BYTES];
    offer[..2].copy_from_slice(&CHANNEL_VERSION_MIN.to_le_bytes());
    offer[2..].copy_from_slice(&CHANNEL_VERSION.to_le_bytes());
    write_message(wire, &mut state, &offer).await?;

    let payload = read_message(wire, &mut state).await?;
    let proof = Proof::decode(&payload, 2)?;
    if !(CHANNEL_VERSION_MIN..=CHANNEL_VERSION).contains(&proof.version) {
        return Err(unsupported(proof.version));
    }
    let remote = proof.verify(&state)?;
    if let Some(expected) = expected
        && expected != remote
    {
        return Err(Error::UnexpectedKey {
            expected,
            actual: remote,
        });
    }
    let mine = Proof::make(proof.version, &local, &static_public);
    write_message(wire, &mut state, &mine.encode()).await?;
    finish(state, remote, proof.version)
}

/// Runs the responder's side: picks the highest version both speak.
pub(crate) async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    local: Local<'_>,
    binding: &[u8],
) -> Result<Established> {
    let (mut state, static_public) = new_state(false, binding)?;
    let offer = read_message(wire, &mut state).await?;
    if offer.len() != OFFER_BYTES {
        return Err(malformed(1, offer.len(), OFFER_BYTES));
    }
    let offered_min = u16::from_le_bytes([offer[0], offer[1]]);
    let offered_max = u16::from_le_bytes([offer[2], offer[3]]);
    let version = offered_max.min(CHANNEL_VERSION);
    if version < offered_min.max(CHANNEL_VERSION_MIN) {
        return Err(unsupported(offered_max));
    }
    let mine = Proof::make(version, &local, &static_public);
    write_message(wire, &mut state, &mine.encode()).await?;

    let payload = read_message(wire, &mut state).await?;
    let proof = Proof::decode(&payload, 3)?;
    if proof.version != version {
        return Err(unsupported(proof.version));
    }
    let remote = proof.verify(&state)?;
    finish(state, remote, version)
}

/// `binding` is appended to [`PROLOGUE`]: what the transport below knows
/// about this connection that both sides must agree on (over WebRTC, both
/// DTLS fingerprints; nothing over TCP).
fn new_state(
    initiator: bool,
    binding: &[u8],
) -> Result<(snow::HandshakeState, [u8; X25519_KEY_BYTES])> {
    let params: snow::params::NoiseParams = NOISE_PARAMS.parse()?;
    let builder = snow::Builder::new(params);
    let keypair = builder.generate_keypair()?;
    let mut static_public = [0u8; X25519_KEY_BYTES];
    static_public.copy_from_slice(&keypair.public);
    let prologue = [PROLOGUE, binding].concat();
    let builder = builder
        .local_private_key(&keypair.private)?
        .prologue(&prologue)?;
    let state = if initiator {
        builder.build_initiator()?
    } else {
        builder.build_responder()?
    };
    Ok((state, static_public))
}

fn finish(state: snow::HandshakeState, remote: Author, version: u16) -> Result<Established> {
    assert!(
        state.is_handshake_finished(),
        "XX has exactly three messages"
    );
    let mut handshake_hash = [0u8; HANDSHAKE_HASH_BYTES];
    handshake_hash.copy_from_slice(state.get_handshake_hash());
    Ok(Established {
        transport: state.into_stateless_transport_mode()?,
        remote,
        version,
        handshake_hash,
    })
}

async fn write_message<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    state: &mut snow::HandshakeState,
    payload: &[u8],
) -> Result<()> {
    let mut message = vec![0u8; NOISE_MESSAGE_BYTES_MAX];
    let written = state.write_message(payload, &mut message)?;
    message.truncate(written);
    wire.send(Bytes::from(message)).await
}

async fn read_message<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    state: &mut snow::HandshakeState,
) -> Result<Vec<u8>> {
    let frame = wire.next().await.ok_or(Error::Closed)??;
    let mut payload = vec![0u8; frame.len()];
    let read = state.read_message(&frame, &mut payload)?;
    payload.truncate(read);
    Ok(payload)
}

fn unsupported(found: u16) -> Error {
    Error::UnsupportedVersion {
        found,
        supported_min: CHANNEL_VERSION_MIN,
        supported_max: CHANNEL_VERSION,
    }
}

fn malformed(message: u8, bytes: usize, expected: usize) -> Error {
    Error::MalformedHandshake {
        message,
        bytes: bytes as u64,
        expected: expected as u64,
    }
}

/// The bytes an identity signs: `IDENTITY_PROOF_DOMAIN || static key`.
fn signed_bytes(static_public: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(IDENTITY_PROOF_DOMAIN.len() + static_public.len());
    message.extend_from_slice(IDENTITY_PROOF_DOMAIN);
    message.extend_from_slice(static_public);
    message
}

/// The payload of messages 2 and 3.
///
/// Format: `{ version: u16 LE | author: [32] | signature: [64] }` (98 bytes).
struct Proof {
    version: u16,
    author: Author,
    signature: [u8; 64],
}

impl Proof {
    fn make(version: u16, local: &Local<'_>, static_public: &[u8; X25519_KEY_BYTES]) -> Proof {
        Proof {
            version,
            author: local.identity.author(),
            signature: local.proof_signer.sign_bytes(&signed_bytes(static_public)),
        }
    }

    fn encode(&self) -> [u8; PROOF_BYTES] {
        let mut bytes = [0u8; PROOF_BYTES];
        bytes[PROOF_VERSION_OFFSET..PROOF_AUTHOR_OFFSET]
            .copy_from_slice(&self.version.to_le_bytes());
        bytes[PROOF_AUTHOR_OFFSET..PROOF_SIGNATURE_OFFSET].copy_from_slice(&self.author.0);
        bytes[PROOF_SIGNATURE_OFFSET..].copy_from_slice(&self.signature);
        bytes
    }

    /// Reads the version first, so a peer of a later version whose payload
    /// grew gets `UnsupportedVersion` rather than a length complaint.
    fn decode(bytes: &[u8], message: u8) -> Result<Proof> {
        if bytes.len() < PROOF_AUTHOR_OFFSET {
            return Err(malformed(message, bytes.len(), PROOF_BYTES));
        }
        let version = u16::from_le_bytes([bytes[0], bytes[1]]);
        if !(CHANNEL_VERSION_MIN..=CHANNEL_VERSION).contains(&version) {
            return Err(unsupported(version));
        }
        if bytes.len() != PROOF_BYTES {
            return Err(malformed(message, bytes.len(), PROOF_BYTES));
        }
        let mut author = [0u8; 32];
        author.copy_from_slice(&bytes[PROOF_AUTHOR_OFFSET..PROOF_SIGNATURE_OFFSET]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[PROOF_SIGNATURE_OFFSET..]);
        Ok(Proof {
            version,
            author: Author(author),
            signature,
        })
    }

    /// Checks the signature over the static key Noise authenticated for the
    /// peer; returns the proven author.
    fn verify(&self, state: &snow::HandshakeState) -> Result<Author> {
        let remote_static = state
            .get_remote_static()
            .expect("XX delivers the remote static key before its payload");
        let message = signed_bytes(remote_static);
        verify_ed25519_strict(&[(&message, &self.author.0, &self.signature)]).map_err(
            |(_, fault)| Error::BadIdentityProof {
                author: self.author,
                fault,
            },
        )?;
        Ok(self.author)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proof payload layout of docs/PROTOCOL.md, byte by byte.
    #[test]
    fn proof_layout_vector() {
        let proof = Proof {
            version: 0x0102,
            author: Author([0xAA; 32]),
            signature: [0xBB; 64],
        };
        let bytes = proof.encode();
        assert_eq!(bytes.len(), 98);
        assert_eq!(&bytes[..2], &[0x02, 0x01]);
        assert_eq!(&bytes[2..34], &[0xAA; 32]);
        assert_eq!(&bytes[34..], &[0xBB; 64]);
    }

    /// Decode inverts encode; a short, long or unknown-version payload is a
    /// typed error.
    #[test]
    fn proof_round_trip_and_refusals() {
        let identity = Identity::from_secret_bytes([7; 32]);
        let local = Local {
            identity: &identity,
            proof_signer: &identity,
        };
        let proof = Proof::make(CHANNEL_VERSION, &local, &[9; 32]);
        let bytes = proof.encode();
        let back = Proof::decode(&bytes, 2).expect("decodes");
        assert_eq!(back.encode(), bytes);
        assert!(matches!(
            Proof::decode(&bytes[..97], 2),
            Err(Error::MalformedHandshake {
                message: 2,
                bytes: 97,
                expected: 98
            })
        ));
        let mut future = bytes.to_vec();
        future[..2].copy_from_slice(&(CHANNEL_VERSION + 1).to_le_bytes());
        future.push(0);
        assert!(matches!(
            Proof::decode(&future, 3),
            Err(Error::UnsupportedVersion { found, .. }) if found == CHANNEL_VERSION + 1
        ));
    }

    /// The signed bytes are the domain tag then the raw static key.
    #[test]
    fn signed_bytes_layout() {
        let bytes = signed_bytes(&[1; 32]);
        assert_eq!(&bytes[..26], b"peers noise static key v1\0");
        assert_eq!(&bytes[26..], &[1; 32]);
    }

    /// A responder offered only versions it does not speak refuses with
    /// `UnsupportedVersion`, naming the highest version offered.
    #[tokio::test]
    async fn responder_refuses_unknown_versions() {
        let (a, b) = tokio::io::duplex(4096);
        let identity = Identity::generate();
        let responder = async {
            let mut wire = Framed::new(b, FrameCodec::new(NOISE_MESSAGE_BYTES_MAX));
            let local = Local {
                identity: &identity,
                proof_signer: &identity,
            };
            respond(&mut wire, local, &[]).await
        };
        let initiator = async {
            let mut wire = Framed::new(a, FrameCodec::new(NOISE_MESSAGE_BYTES_MAX));
            let (mut state, _) = new_state(true, &[]).expect("state");
            let future = CHANNEL_VERSION + 1;
            let mut offer = future.to_le_bytes().to_vec();
            offer.extend_from_slice(&future.to_le_bytes());
            write_message(&mut wire, &mut state, &offer).await
        };
        let (refused, sent) = tokio::join!(responder, initiator);
        sent.expect("offer sent");
        assert!(matches!(
            refused,
            Err(Error::UnsupportedVersion { found, supported_min: 1, supported_max: 1 })
                if found == CHANNEL_VERSION + 1
        ));
    }
}

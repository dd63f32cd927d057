//! Peers across networks: a WebRTC data channel as the byte stream under the
//! secure channel, set up through signaling servers that see only sealed
//! payloads (docs/PROTOCOL.md "WebRTC transport").
//!
//! A dialer sends an [`Rendezvous::Offer`] to the peer's key through a
//! signaling server; the acceptor checks the offer (it proves knowing the
//! database id, and the dialer holds a role if the database is
//! members-only) before it binds a socket, and answers. Both trickle the
//! server-reflexive candidates STUN reveals. When the data channel opens,
//! the Noise handshake runs over it with both DTLS fingerprints in its
//! prologue, then the sync session, exactly as over TCP.

mod driver;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use peers_engine::{Author, DatabaseId, Identity};
use peers_signal::Client;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

pub use driver::{
    CHANNEL_BUFFERED_HIGH, CHANNEL_BUFFERED_LOW, CHANNEL_MESSAGE_BYTES_MAX, DISCONNECTED_GRACE,
    RECEIVED_PENDING_MAX, WebRtcConfig,
};
use driver::{Control, Driver, Report};
pub(crate) use wire::encode_address;
pub use wire::{
    CANDIDATES_MAX, CandidateType, FINGERPRINT_BYTES, ICE_TEXT_BYTES_MAX, IceParams,
    RENDEZVOUS_VERSION, RefuseReason, Rendezvous, RendezvousError, SESSION_ID_BYTES, SessionId,
    WireCandidate,
};

use crate::error::{Error, Result};

/// How long a WebRTC connection may take from the offer to an open data
/// channel before the attempt is given up.
pub const WEBRTC_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Prefixed to the offer's database proof (see [`offer_proof`]).
pub const OFFER_PROOF_DOMAIN: &[u8] = b"peers webrtc offer v1\0";
/// Appended to the Noise prologue on a WebRTC connection, before the
/// dialer's and the acceptor's DTLS fingerprints.
pub const WEBRTC_BINDING_DOMAIN: &[u8] = b"\0webrtc v1\0";
/// Rendezvous messages queued for one attempt.
const ROUTE_QUEUE: usize = 16;
/// Attempts in progress at once (both directions).
const ATTEMPTS_MAX: usize = 64;

/// Proves to the acceptor that the dialer knows the database id, for this
/// attempt between these two keys only.
pub fn offer_proof(
    database: DatabaseId,
    session: &SessionId,
    dialer: &Author,
    acceptor: &Author,
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(&database.0);
    hasher.update(OFFER_PROOF_DOMAIN);
    hasher.update(session);
    hasher.update(&dialer.0);
    hasher.update(&acceptor.0);
    *hasher.finalize().as_bytes()
}

/// The Noise prologue suffix of a WebRTC connection.
fn binding(dialer: &[u8; FINGERPRINT_BYTES], acceptor: &[u8; FINGERPRINT_BYTES]) -> Vec<u8> {
    [WEBRTC_BINDING_DOMAIN, dialer, acceptor].concat()
}

/// An open data channel, ready for the secure channel's handshake.
pub(crate) struct Opened {
    pub(crate) stream: DuplexStream,
    /// The address the peer's packets come from.
    pub(crate) remote: SocketAddr,
    /// See [`binding`].
    pub(crate) binding: Vec<u8>,
}

/// [`peers_signal::Keys`] over an engine identity: the secret stays inside.
pub(crate) struct IdentityKeys(pub(crate) Identity);

impl peers_signal::Keys for IdentityKeys {
    fn public(&self) -> [u8; 32] {
        self.0.author().0
    }
    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign_bytes(message)
    }
    fn agree(&self, public: &[u8; 32]) -> [u8; 32] {
        self.0.agree_x25519(public)
    }
}

/// The signaling servers a node is registered with, and the attempts in
/// progress that rendezvous messages are routed to.
#[derive(Default)]
pub(crate) struct Signaling {
    clients: Mutex<Vec<Client>>,
    routes: Mutex<HashMap<(Author, SessionId), mpsc::Sender<Rendezvous>>>,
}

/// An attempt's place in the routing table, removed when dropped.
struct Route<'a> {
    signaling: &'a Signaling,
    key: (Author, SessionId),
    messages: mpsc::Receiver<Rendezvous>,
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        self.signaling
            .routes
            .lock()
            .expect("routes lock")
            .remove(&self.key);
    }
}

impl Signaling {
    pub(crate) fn add(&self, client: Client) {
        self.clients.lock().expect("clients lock").push(client);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.clients.lock().expect("clients lock").is_empty()
    }

    /// The servers' addresses, for `peers peers` and errors.
    pub(crate) fn urls(&self) -> Vec<String> {
        let clients = self.clients.lock().expect("clients lock");
        clients
            .iter()
            .map(|client| client.url().to_owned())
            .collect()
    }

    /// Sends `message` to `to` through the first server that delivers it.
    pub(crate) async fn send(&self, to: Author, message: &Rendezvous) -> Result<()> {
        let body = message.encode().map_err(Error::Rendezvous)?;
        let clients: Vec<Client> = self.clients.lock().expect("clients lock").clone();
        if clients.is_empty() {
            return Err(Error::NoSignaling);
        }
        let mut last = None;
        for client in clients {
            match client.send(to.0, &body).await {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
        }
        Err(match last {
            Some(peers_signal::Error::Offline { .. }) => Error::PeerOffline { peer: to },
            Some(error) => Error::Signal(error),
            None => Error::NoSignaling,
        })
    }

    /// Hands a received rendezvous message to its attempt; `false` if no
    /// attempt waits for it.
    pub(crate) fn route(&self, from: Author, message: Rendezvous) -> bool {
        let sender = {
            let routes = self.routes.lock().expect("routes lock");
            routes.get(&(from, *message.session())).cloned()
        };
        match sender {
            Some(sender) => sender.try_send(message).is_ok(),
            None => false,
        }
    }

    fn open_route(&self, peer: Author, session: SessionId) -> Result<Route<'_>> {
        let messages = self.reserve(peer, session)?;
        Ok(Route {
            signaling: self,
            key: (peer, session),
            messages,
        })
    }

    /// Opens the route of an attempt at once, so that what the peer sends
    /// right after its offer (a trickle) is not lost while the answering
    /// task starts; [`Signaling::answer`] takes the receiver.
    pub(crate) fn reserve(
        &self,
        peer: Author,
        session: SessionId,
    ) -> Result<mpsc::Receiver<Rendezvous>> {
        let (sender, messages) = mpsc::channel(ROUTE_QUEUE);
        let mut routes = self.routes.lock().expect("routes lock");
        // One key holds at most `SESSIONS_PER_KEY_MAX` attempts: a member
        // cannot take every connection slot with offers it never finishes.
        let of_peer = routes.keys().filter(|(key, _)| *key == peer).count();
        if routes.len() >= ATTEMPTS_MAX
            || of_peer >= crate::SESSIONS_PER_KEY_MAX
            || routes.contains_key(&(peer, session))
        {
            return Err(Error::Busy);
        }
        routes.insert((peer, session), sender);
        Ok(messages)
    }

    /// Dials `peer`: offers (a `Join` when redeeming `invite`), waits for
    /// the answer, trickles candidates, and returns once the data channel is
    /// open.
    pub(crate) async fn dial(
        &self,
        database: DatabaseId,
        ours: Author,
        peer: Author,
        invite: Option<[u8; 16]>,
        config: &WebRtcConfig,
        timeout: Duration,
    ) -> Result<Opened> {
        let mut session = [0u8; SESSION_ID_BYTES];
        getrandom::fill(&mut session).map_err(|error| Error::Io(std::io::Error::other(error)))?;
        let mut route = self.open_route(peer, session)?;
        let mut driver = Driver::start(config, true).await?;
        let offer = Rendezvous::Offer {
            session,
            database_proof: offer_proof(database, &session, &ours, &peer),
            invite,
            ice: driver.local.clone(),
            candidates: driver.host_candidates.clone(),
        };
        let attempt = async {
            self.send(peer, &offer).await?;
            let mut remote_fingerprint = None;
            loop {
                tokio::select! {
                    message = route.messages.recv() => match message {
                        Some(Rendezvous::Answer { ice, candidates, .. }) if remote_fingerprint.is_none() => {
                            remote_fingerprint = Some(ice.fingerprint);
                            let _ = driver.control.send(Control::Remote { ice, candidates }).await;
                        }
                        Some(Rendezvous::Trickle { candidates, .. }) => {
                            let _ = driver.control.send(Control::Candidates(candidates)).await;
                        }
                        Some(Rendezvous::Refuse { reason, .. }) => {
                            return Err(Error::Refused { peer, reason });
                        }
                        Some(other) => tracing::debug!(%peer, ?other, "unexpected rendezvous message; ignored"),
                        None => return Err(Error::ShuttingDown),
                    },
                    report = driver.reports.recv() => match report {
                        Some(Report::LocalCandidates(candidates)) => {
                            let trickle = Rendezvous::Trickle { session, candidates };
                            if let Err(error) = self.send(peer, &trickle).await {
                                tracing::debug!(%peer, %error, "trickle not delivered");
                            }
                        }
                        Some(Report::Open { remote }) => {
                            let Some(theirs) = remote_fingerprint else {
                                return Err(Error::NoPath { peer, reason: "the channel opened before the answer".into() });
                            };
                            return Ok((remote, binding(&driver.local.fingerprint, &theirs)));
                        }
                        Some(Report::Ended(reason)) => {
                            return Err(Error::NoPath { peer, reason: reason.unwrap_or_else(|| "closed".into()) });
                        }
                        None => return Err(Error::NoPath { peer, reason: "the connection task ended".into() }),
                    },
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok((remote, binding))) => Ok(Opened {
                stream: driver.stream,
                remote,
                binding,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => {
                let _ = self.send(peer, &Rendezvous::Hangup { session }).await;
                Err(Error::NoPath {
                    peer,
                    reason: format!("no path within {} s", timeout.as_secs()),
                })
            }
        }
    }

    /// Answers an offer that passed the node's gate: binds, answers,
    /// trickles, and returns once the data channel is open.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn answer(
        &self,
        peer: Author,
        session: SessionId,
        messages: mpsc::Receiver<Rendezvous>,
        ice: IceParams,
        candidates: Vec<WireCandidate>,
        config: &WebRtcConfig,
        timeout: Duration,
    ) -> Result<Opened> {
        let mut route = Route {
            signaling: self,
            key: (peer, session),
            messages,
        };
        let mut driver = Driver::start(config, false).await?;
        let theirs = ice.fingerprint;
        let _ = driver
            .control
            .send(Control::Remote { ice, candidates })
            .await;
        let answer = Rendezvous::Answer {
            session,
            ice: driver.local.clone(),
            candidates: driver.host_candidates.clone(),
        };
        let attempt = async {
            self.send(peer, &answer).await?;
            loop {
                tokio::select! {
                    message = route.messages.recv() => match message {
                        Some(Rendezvous::Trickle { candidates, .. }) => {
                            let _ = driver.control.send(Control::Candidates(candidates)).await;
                        }
                        Some(Rendezvous::Hangup { .. }) => {
                            return Err(Error::NoPath { peer, reason: "the dialer gave up".into() });
                        }
                        Some(other) => tracing::debug!(%peer, ?other, "unexpected rendezvous message; ignored"),
                        None => return Err(Error::ShuttingDown),
                    },
                    report = driver.reports.recv() => match report {
                        Some(Report::LocalCandidates(candidates)) => {
                            let trickle = Rendezvous::Trickle { session, candidates };
                            if let Err(error) = self.send(peer, &trickle).await {
                                tracing::debug!(%peer, %error, "trickle not delivered");
                            }
                        }
                        Some(Report::Open { remote }) => return Ok(remote),
                        Some(Report::Ended(reason)) => {
                            return Err(Error::NoPath { peer, reason: reason.unwrap_or_else(|| "closed".into()) });
                        }
                        None => return Err(Error::NoPath { peer, reason: "the connection task ended".into() }),
                    },
                }
            }
        };
        let remote =
            tokio::time::timeout(timeout, attempt)
                .await
                .map_err(|_| Error::NoPath {
                    peer,
                    reason: format!("no path within {} s", timeout.as_secs()),
                })??;
        Ok(Opened {
            stream: driver.stream,
            remote,
            binding: binding(&theirs, &driver.local.fingerprint),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed with Python's `blake3` package, independently of this code:
    /// `blake3.blake3(b"peers webrtc offer v1\0" + bytes([7]*16) +
    /// bytes([1]*32) + bytes([2]*32), key=bytes([0x11]*32)).hexdigest()`.
    #[test]
    fn offer_proof_vector() {
        let proof = offer_proof(
            DatabaseId([0x11; 32]),
            &[7; SESSION_ID_BYTES],
            &Author([1; 32]),
            &Author([2; 32]),
        );
        assert_eq!(
            hex::encode(proof),
            "e93ef8b0173376e76d550359345862f7bb356f4f97e43c25cfa5fa0b805c27a7"
        );
        let other = offer_proof(
            DatabaseId([0x11; 32]),
            &[7; SESSION_ID_BYTES],
            &Author([2; 32]),
            &Author([1; 32]),
        );
        assert_ne!(proof, other, "a proof names its direction");
    }

    /// The Noise prologue of a WebRTC connection, byte for byte (PROTOCOL.md
    /// "WebRTC transport").
    #[test]
    fn binding_layout() {
        let prologue = [
            crate::handshake::PROLOGUE,
            &binding(&[0xaa; 32], &[0xbb; 32]),
        ]
        .concat();
        let expected = format!(
            "706565727320736563757265206368616e6e656c0077656272746320763100{}{}",
            "aa".repeat(32),
            "bb".repeat(32)
        );
        assert_eq!(hex::encode(prologue), expected);
    }
}

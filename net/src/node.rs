//! [`Node`]: the embedder's handle on sync. It listens for peers, dials
//! them (once with [`Node::sync_once`], or live with reconnects through
//! [`Node::connect`]), optionally finds them on the LAN, and reports what
//! happens as a stream of [`Event`]s.
//!
//! Every connection is a [`SecureChannel`] and runs the session state
//! machine of docs/PROTOCOL.md "Sync protocol". Received changes go through
//! the engine's full verification; a peer that sends a refused change is
//! disconnected. Shutdown stops accepting, ends every session with
//! `Bye(Shutdown)`, and waits for the batches being applied: a change the
//! node acknowledged (applied) is in the log before `shutdown` returns.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use peers_engine::{Author, Db};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, lookup_host};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{ChannelOptions, SecureChannel};
use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::invite::{InviteError, InviteOptions, InviteRefusal, Invites, Ticket};
use crate::known_peers::{How, KnownPeers};
use crate::message::{ByeReason, Message};
use crate::session::{self, Observer, SessionConfig, SyncReport};
use crate::webrtc::{
    IdentityKeys, Opened, RefuseReason, Rendezvous, Signaling, WEBRTC_CONNECT_TIMEOUT,
    WebRtcConfig, offer_proof,
};

/// Most inbound TCP connections a node holds in their handshake at once
/// (not yet authenticated). When all are taken, a new connection ends the
/// oldest handshake in progress and takes its place, so connections that
/// never finish their handshake cannot keep anyone out for long. Sessions
/// and dials have their own limits.
pub const HANDSHAKES_MAX: usize = 32;
/// Most inbound handshakes from one IP address at once: one host cannot
/// take every handshake slot.
pub const HANDSHAKES_PER_ADDRESS_MAX: usize = 4;
/// Most inbound sessions (peers that proved a key, over TCP or WebRTC) a
/// node runs at once.
pub const INBOUND_SESSIONS_MAX: usize = 64;
/// Most outbound connections (dials, TCP or WebRTC) a node runs at once;
/// inbound load never takes these.
pub const OUTBOUND_MAX: usize = 64;
/// A live session sends a keepalive after this long without sending; it
/// must be well under the peer's [`crate::RECV_TIMEOUT`].
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// First wait before redialing a live peer; it doubles on every failure...
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(250);
/// ...up to this.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(30);
/// Most inbound sessions one key may hold with a node at once: a member (or
/// a stranger, in an open database) cannot multiply the catch-ups it makes
/// us serve beyond this.
pub const SESSIONS_PER_KEY_MAX: usize = 4;
/// A peer found by LAN discovery is dialed until this many attempts in a
/// row fail; then the node stops (a stale or spoofed announcement cannot
/// keep a loop dialing a dead address), and a new announcement starts over.
pub const DISCOVERED_DIAL_FAILURES_MAX: u32 = 5;
/// Events buffered for a slow [`Node::events`] receiver before it lags.
pub const EVENTS_BUFFER: usize = 1024;
/// Most peers a node keeps statistics of ([`Node::stats`]). Past it, the
/// peer without a session that was last active longest ago is forgotten
/// (sessions are bounded far below it, so a connected peer never is).
pub const PEER_STATS_MAX: usize = 1024;

const _: () = assert!(KEEPALIVE_INTERVAL.as_secs() * 2 < crate::RECV_TIMEOUT.as_secs());

/// How a node runs. `Default` listens nowhere and uses the named constants.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Address to accept peers on (`None`: dial only). Port 0 picks one;
    /// [`Node::local_addr`] says which.
    pub listen: Option<SocketAddr>,
    /// Timeouts of every connection.
    pub channel: ChannelOptions,
    /// See [`KEEPALIVE_INTERVAL`].
    pub keepalive: Duration,
    /// See [`RECONNECT_DELAY_MIN`].
    pub reconnect_delay_min: Duration,
    /// See [`RECONNECT_DELAY_MAX`].
    pub reconnect_delay_max: Duration,
    /// Announce this node on the LAN and dial the peers of the same
    /// database found there (needs `listen`).
    pub discover: bool,
    /// Signaling servers (`ws://HOST:PORT`) to stay registered with: peers
    /// dial this node by key through them ([`Node::connect_key`]), and it
    /// accepts WebRTC offers from keys that may sync this database.
    pub signal: Vec<String>,
    /// Sockets and STUN servers of WebRTC connections.
    pub webrtc: WebRtcConfig,
    /// See [`WEBRTC_CONNECT_TIMEOUT`].
    pub webrtc_connect_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: None,
            channel: ChannelOptions::default(),
            keepalive: KEEPALIVE_INTERVAL,
            reconnect_delay_min: RECONNECT_DELAY_MIN,
            reconnect_delay_max: RECONNECT_DELAY_MAX,
            discover: false,
            signal: Vec::new(),
            webrtc: WebRtcConfig::default(),
            webrtc_connect_timeout: WEBRTC_CONNECT_TIMEOUT,
        }
    }
}

/// Something that happened on a node, for logs and UIs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A peer finished the handshake.
    Connected {
        /// Its verified key.
        peer: Author,
        /// Its address.
        address: SocketAddr,
        /// Whether we dialed it (else it dialed us).
        dialed: bool,
    },
    /// The peer's catch-up reached us.
    CaughtUp {
        /// The peer.
        peer: Author,
    },
    /// New changes from a peer were verified and applied.
    Received {
        /// The peer.
        peer: Author,
        /// How many.
        changes: u64,
    },
    /// Changes were sent to a peer.
    Sent {
        /// The peer.
        peer: Author,
        /// How many.
        changes: u64,
    },
    /// A session ended cleanly.
    Disconnected {
        /// The peer.
        peer: Author,
        /// Its address.
        address: SocketAddr,
    },
    /// A connection failed or a peer misbehaved; it was dropped.
    PeerError {
        /// The address dialed or accepted.
        address: SocketAddr,
        /// The peer's key, if the handshake got that far.
        peer: Option<Author>,
        /// What went wrong.
        error: Arc<Error>,
    },
    /// The node stopped dialing a peer that LAN discovery found, after
    /// [`DISCOVERED_DIAL_FAILURES_MAX`] failed attempts in a row; a new
    /// announcement of it starts over.
    StoppedDialing {
        /// The peer.
        peer: Author,
        /// The address last dialed.
        address: SocketAddr,
        /// Failed attempts in a row.
        failures: u32,
    },
    /// A peer trimmed history this replica lacks and sent its snapshot
    /// file instead (sync version 5): checked, kept at `path`, to install
    /// when nothing holds the database ([`peers_engine::Db::install_snapshot`];
    /// `peers` installs it when it next opens the database itself). Until
    /// then, sessions with that peer end at the snapshot.
    SnapshotReceived {
        /// The peer.
        peer: Author,
        /// The snapshot's checkpoint.
        checkpoint: peers_engine::ChangeHash,
        /// Where the file waits.
        path: std::path::PathBuf,
    },
    /// The node registered with a signaling server (again, after a
    /// reconnect).
    Registered {
        /// The server.
        url: String,
    },
    /// LAN discovery found a peer of this database.
    Discovered {
        /// The key it announced (the handshake will prove it).
        peer: Author,
        /// Where it listens.
        addresses: Vec<SocketAddr>,
    },
}

/// What a node did since it started, and its peers' state ([`Node::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// New changes received from peers (verified and applied), in all.
    pub changes_received: u64,
    /// Changes sent to peers, in all.
    pub changes_sent: u64,
    /// The peers met since the node started (at most [`PEER_STATS_MAX`]),
    /// ordered by key.
    pub peers: Vec<PeerStats>,
}

impl NodeStats {
    /// Peers with at least one session open now.
    pub fn peers_connected(&self) -> usize {
        self.peers.iter().filter(|peer| peer.sessions > 0).count()
    }
}

/// One peer as a node sees it ([`NodeStats::peers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Its verified key.
    pub peer: Author,
    /// Sessions open with it now (dialed and accepted, TCP and WebRTC).
    pub sessions: usize,
    /// New changes received from it.
    pub changes_received: u64,
    /// Changes sent to it.
    pub changes_sent: u64,
    /// Whether a session with it is open and in sync: both catch-ups are
    /// done (its reached us, and it confirmed it applied ours), and from
    /// then on every change is pushed as it commits.
    pub in_sync: bool,
    /// When a session with it was last in sync: now, while one is; else
    /// when the last session that got in sync ended. `None`: no session
    /// got in sync since the node started.
    pub last_in_sync: Option<SystemTime>,
    /// When its first session since the node started opened.
    pub first_connected: SystemTime,
}

impl PeerStats {
    /// Replication lag at `now`: zero while in sync, else the time since
    /// the peer was last in sync (or, never in sync, since it first
    /// connected). This node's view: a change pushed on a live session is
    /// counted as delivered.
    pub fn lag(&self, now: SystemTime) -> Duration {
        if self.in_sync {
            return Duration::ZERO;
        }
        let since = self.last_in_sync.unwrap_or(self.first_connected);
        now.duration_since(since).unwrap_or(Duration::ZERO)
    }
}

/// The counters behind [`Node::stats`].
#[derive(Default)]
struct Stats {
    changes_received: u64,
    changes_sent: u64,
    peers: HashMap<Author, PeerEntry>,
}

struct PeerEntry {
    sessions: usize,
    /// Open sessions that got in sync.
    in_sync_sessions: usize,
    changes_received: u64,
    changes_sent: u64,
    last_in_sync: Option<SystemTime>,
    first_connected: SystemTime,
    /// When a session last opened or closed (which entry to forget first).
    last_active: SystemTime,
}

impl Stats {
    fn opened(&mut self, peer: Author) {
        let now = SystemTime::now();
        if !self.peers.contains_key(&peer) && self.peers.len() >= PEER_STATS_MAX {
            let idle = self
                .peers
                .iter()
                .filter(|(_, entry)| entry.sessions == 0)
                .min_by_key(|(_, entry)| entry.last_active)
                .map(|(author, _)| *author);
            if let Some(idle) = idle {
                self.peers.remove(&idle);
            }
        }
        let entry = self.peers.entry(peer).or_insert(PeerEntry {
            sessions: 0,
            in_sync_sessions: 0,
            changes_received: 0,
            changes_sent: 0,
            last_in_sync: None,
            first_connected: now,
            last_active: now,
        });
        entry.sessions += 1;
        entry.last_active = now;
    }

    fn closed(&mut self, peer: Author, was_in_sync: bool) {
        let now = SystemTime::now();
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.sessions = entry.sessions.saturating_sub(1);
            entry.last_active = now;
            if was_in_sync {
                entry.in_sync_sessions = entry.in_sync_sessions.saturating_sub(1);
                entry.last_in_sync = Some(now);
            }
        }
    }

    fn snapshot(&self) -> NodeStats {
        let now = SystemTime::now();
        let mut peers: Vec<PeerStats> = self
            .peers
            .iter()
            .map(|(peer, entry)| PeerStats {
                peer: *peer,
                sessions: entry.sessions,
                changes_received: entry.changes_received,
                changes_sent: entry.changes_sent,
                in_sync: entry.in_sync_sessions > 0,
                last_in_sync: if entry.in_sync_sessions > 0 {
                    Some(now)
                } else {
                    entry.last_in_sync
                },
                first_connected: entry.first_connected,
            })
            .collect();
        peers.sort_by_key(|peer| peer.peer);
        NodeStats {
            changes_received: self.changes_received,
            changes_sent: self.changes_sent,
            peers,
        }
    }
}

/// One session's observer: counts into the node's [`Stats`] and emits the
/// events; the session is counted open while it lives.
struct Tracked<'a> {
    shared: &'a Shared,
    peer: Author,
    in_sync: AtomicBool,
}

impl<'a> Tracked<'a> {
    fn new(shared: &'a Shared, peer: Author) -> Tracked<'a> {
        shared.stats().opened(peer);
        Tracked {
            shared,
            peer,
            in_sync: AtomicBool::new(false),
        }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        let was_in_sync = self.in_sync.load(Ordering::Relaxed);
        self.shared.stats().closed(self.peer, was_in_sync);
    }
}

impl Observer for Tracked<'_> {
    fn received(&self, peer: Author, changes: u64) {
        {
            let mut stats = self.shared.stats();
            stats.changes_received += changes;
            if let Some(entry) = stats.peers.get_mut(&peer) {
                entry.changes_received += changes;
            }
        }
        let _ = self.shared.events.send(Event::Received { peer, changes });
    }
    fn sent(&self, peer: Author, changes: u64) {
        {
            let mut stats = self.shared.stats();
            stats.changes_sent += changes;
            if let Some(entry) = stats.peers.get_mut(&peer) {
                entry.changes_sent += changes;
            }
        }
        let _ = self.shared.events.send(Event::Sent { peer, changes });
    }
    fn caught_up(&self, peer: Author) {
        let _ = self.shared.events.send(Event::CaughtUp { peer });
    }
    fn in_sync(&self, peer: Author) {
        if !self.in_sync.swap(true, Ordering::Relaxed)
            && let Some(entry) = self.shared.stats().peers.get_mut(&peer)
        {
            entry.in_sync_sessions += 1;
        }
    }
}

/// A running sync node on a [`Db`]. Cheap handles are not provided: keep the
/// node, call [`Node::shutdown`] to stop it.
pub struct Node {
    shared: Arc<Shared>,
    tasks: TaskTracker,
    local_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("author", &self.shared.db.author())
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

struct Shared {
    db: Db,
    config: NodeConfig,
    events: broadcast::Sender<Event>,
    stop: CancellationToken,
    /// Inbound TCP connections in their handshake ([`HANDSHAKES_MAX`]).
    handshakes: Arc<Semaphore>,
    /// Handshakes in progress, oldest first, each with what ends it.
    handshaking: Mutex<std::collections::VecDeque<(u64, CancellationToken)>>,
    /// Numbers the handshakes in `handshaking`.
    handshake_ids: std::sync::atomic::AtomicU64,
    /// Inbound handshakes per IP address ([`HANDSHAKES_PER_ADDRESS_MAX`]).
    handshakes_per_address: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// Inbound sessions, TCP and WebRTC ([`INBOUND_SESSIONS_MAX`]).
    inbound: Arc<Semaphore>,
    /// Dials, TCP and WebRTC ([`OUTBOUND_MAX`]).
    outbound: Arc<Semaphore>,
    /// Peers found by discovery with a live dial loop, and the address the
    /// loop dials next (a new announcement updates it), so discovery does
    /// not start two.
    dialing: Mutex<HashMap<Author, Arc<Mutex<SocketAddr>>>>,
    /// Inbound sessions per key (see [`SESSIONS_PER_KEY_MAX`]).
    sessions: Mutex<HashMap<Author, usize>>,
    known: Mutex<KnownPeers>,
    signaling: Signaling,
    /// Open invites (`DIR/invites`), redeemed by accepted sessions.
    invites: Arc<Mutex<Invites>>,
    /// Counters and peers ([`Node::stats`]).
    stats: Mutex<Stats>,
}

impl Node {
    /// Starts a node: binds `config.listen` (if set), and starts LAN
    /// discovery (if `config.discover`).
    pub async fn start(db: Db, config: NodeConfig) -> Result<Node> {
        let (events, _) = broadcast::channel(EVENTS_BUFFER);
        let known = KnownPeers::load(db.dir());
        let db_dir = &db.dir().to_path_buf();
        let shared = Arc::new(Shared {
            db,
            config,
            events,
            stop: CancellationToken::new(),
            handshakes: Arc::new(Semaphore::new(HANDSHAKES_MAX)),
            handshaking: Mutex::new(std::collections::VecDeque::new()),
            handshake_ids: std::sync::atomic::AtomicU64::new(0),
            handshakes_per_address: Mutex::new(HashMap::new()),
            inbound: Arc::new(Semaphore::new(INBOUND_SESSIONS_MAX)),
            outbound: Arc::new(Semaphore::new(OUTBOUND_MAX)),
            dialing: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            known: Mutex::new(known),
            signaling: Signaling::default(),
            invites: Invites::shared(db_dir),
            stats: Mutex::new(Stats::default()),
        });
        let tasks = TaskTracker::new();
        let mut local_addr = None;
        if let Some(listen) = shared.config.listen {
            let listener = TcpListener::bind(listen).await?;
            let address = listener.local_addr()?;
            tracing::info!(%address, "listening");
            local_addr = Some(address);
            tasks.spawn(accept_loop(Arc::clone(&shared), tasks.clone(), listener));
        }
        if shared.config.discover {
            let Some(address) = local_addr else {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "LAN discovery needs a listen address",
                )));
            };
            let discovery =
                Discovery::start(shared.db.database_id(), shared.db.author(), address.port())?;
            tasks.spawn(discovery_loop(
                Arc::clone(&shared),
                tasks.clone(),
                discovery,
            ));
        }
        let urls = shared.config.signal.clone();
        let registering = urls.into_iter().map(|url| {
            let (shared, tasks) = (Arc::clone(&shared), tasks.clone());
            async move { register(shared, tasks, url).await }
        });
        futures_util::future::join_all(registering).await;
        Ok(Node {
            shared,
            tasks,
            local_addr,
        })
    }

    /// Dials `peer` by its key through the signaling servers (over WebRTC),
    /// falling back to the addresses it was last reached at directly; syncs
    /// both ways once and hangs up.
    pub async fn sync_key(&self, peer: Author) -> Result<SyncReport> {
        let session = self.shared.session(false, true);
        dial_key(&self.shared, peer, &session).await
    }

    /// Keeps a live session with `peer`, dialed by key as in
    /// [`Node::sync_key`], redialing with backoff until shutdown. Returns at
    /// once.
    pub async fn connect_key(&self, peer: Author) -> Result<()> {
        let target = Target {
            via: Via::Key,
            expected: Some(peer),
            how: How::WebRtc,
            give_up_after: None,
        };
        self.tasks
            .spawn(live_loop(Arc::clone(&self.shared), target));
        Ok(())
    }

    /// Makes an invite and returns its ticket (give the joiner
    /// `ticket.encode()`, or a QR code of it). Without signaling servers in
    /// `options`, the ticket names the node's. The node honours the invite
    /// while it runs, and later runs honour it too (`DIR/invites`).
    pub fn invite(&self, options: &InviteOptions) -> Result<Ticket, InviteError> {
        let mut options = options.clone();
        if options.signal.is_empty() {
            options.signal.clone_from(&self.shared.config.signal);
        }
        self.shared
            .invites
            .lock()
            .expect("invites lock")
            .create(&self.shared.db, &options)
    }

    /// Redeems `ticket`: dials the inviter at the ticket's addresses (the
    /// inviter's key pinned), then through this node's signaling servers,
    /// proves the invite's secret, and syncs once; the inviter grants the
    /// role first, so the first sync brings the grant with everything else.
    /// The node's database must be the ticket's (see `Db::join`), and its
    /// signaling servers should include the ticket's.
    pub async fn redeem(&self, ticket: &Ticket) -> Result<SyncReport> {
        if ticket.database != self.shared.db.database_id() {
            return Err(Error::WrongDatabase {
                ours: self.shared.db.database_id(),
            });
        }
        if ticket.is_expired() {
            return Err(Error::InviteRefused {
                reason: InviteRefusal::Expired,
            });
        }
        let mut session = self.shared.session(false, true);
        session.redeem = Some((ticket.id(), ticket.secret));
        let mut last = None;
        for address in &ticket.addresses {
            match dial(
                &self.shared,
                *address,
                Some(ticket.inviter),
                &session,
                How::Dialed,
            )
            .await
            {
                Ok(report) => return Ok(report),
                Err(Error::ShuttingDown) => return Err(Error::ShuttingDown),
                // The inviter answered and said no: no other way will differ.
                Err(error @ Error::PeerBye { .. }) => return Err(error),
                Err(error) => {
                    tracing::debug!(%address, %error, "invite: direct dial failed");
                    last = Some(error);
                }
            }
        }
        if !self.shared.signaling.is_empty() {
            match dial_webrtc(&self.shared, ticket.inviter, Some(ticket.id()), &session).await {
                Ok(report) => return Ok(report),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(Error::NoSignaling))
    }

    /// The signaling servers this node is registered with now.
    pub fn signaling_servers(&self) -> Vec<String> {
        self.shared.signaling.urls()
    }

    /// The address the node accepts peers on, if it listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The database this node syncs.
    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    /// Counters since the node started (changes in and out, in all and per
    /// peer) and each peer's sessions and replication lag.
    pub fn stats(&self) -> NodeStats {
        self.shared.stats().snapshot()
    }

    /// Events from now on. A receiver that falls [`EVENTS_BUFFER`] behind
    /// gets `Lagged` and skips ahead.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Dials `address`, syncs both ways once, and hangs up. With `expected`
    /// set, a peer that proves another key is refused before we reveal ours.
    pub async fn sync_once(&self, address: &str, expected: Option<Author>) -> Result<SyncReport> {
        let address = resolve(address).await?;
        let session = self.shared.session(false, true);
        // Errors go to the caller, not to the log or the event stream.
        dial(&self.shared, address, expected, &session, How::Dialed).await
    }

    /// Keeps a live session with `address`: dials it now, and again with
    /// backoff whenever the connection ends, until shutdown. Returns at once.
    pub async fn connect(&self, address: &str, expected: Option<Author>) -> Result<()> {
        let address = resolve(address).await?;
        let target = Target {
            via: Via::Address(Arc::new(Mutex::new(address))),
            expected,
            how: How::Dialed,
            give_up_after: None,
        };
        self.tasks
            .spawn(live_loop(Arc::clone(&self.shared), target));
        Ok(())
    }

    /// Peers this node has dialed, accepted or discovered (also kept in the
    /// database directory across restarts).
    pub fn known_peers(&self) -> Vec<crate::known_peers::KnownPeer> {
        self.shared.known.lock().expect("known peers lock").list()
    }

    /// Stops accepting and dialing, ends every session with `Bye`, and
    /// waits until the batches being applied are in the log.
    pub async fn shutdown(self) {
        self.shared.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        tracing::info!("node stopped");
    }
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        // The counters stay usable even if a holder panicked.
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn peer_error(&self, address: SocketAddr, peer: Option<Author>, error: &Error) {
        if matches!(error, Error::ShuttingDown) {
            return;
        }
        tracing::warn!(%address, ?peer, %error, "peer dropped");
    }

    /// Tells of the snapshot file a session received, if it did.
    fn received_snapshot(&self, peer: Author, report: &SyncReport) {
        if let Some(received) = &report.snapshot_received {
            tracing::info!(%peer, checkpoint = %received.checkpoint, path = %received.path.display(), "received a snapshot of history the peer trimmed; it is installed when nothing holds the database (peers installs it when it next opens it)");
            let _ = self.events.send(Event::SnapshotReceived {
                peer,
                checkpoint: received.checkpoint,
                path: received.path.clone(),
            });
        }
    }

    fn emit_error(&self, address: SocketAddr, peer: Option<Author>, error: Error) {
        self.peer_error(address, peer, &error);
        let _ = self.events.send(Event::PeerError {
            address,
            peer,
            error: Arc::new(error),
        });
    }

    fn remember(&self, peer: Author, address: SocketAddr, how: How) {
        let mut known = self.known.lock().expect("known peers lock");
        if let Err(error) = known.record(self.db.dir(), peer, address, how) {
            tracing::warn!(%error, "could not save the known peers");
        }
    }

    /// A session's configuration; `initiator` when we dialed.
    fn session(&self, live: bool, initiator: bool) -> SessionConfig {
        SessionConfig {
            live,
            keepalive: self.config.keepalive,
            stop: self.stop.clone(),
            initiator,
            redeem: None,
            invites: (!initiator).then(|| Arc::clone(&self.invites)),
        }
    }
}

async fn resolve(address: &str) -> Result<SocketAddr> {
    lookup_host(address).await?.next().ok_or_else(|| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{address} resolves to no address"),
        ))
    })
}

/// Dials, handshakes and runs one session. Emits the events; errors are
/// returned (the caller decides how to report them).
async fn dial(
    shared: &Arc<Shared>,
    address: SocketAddr,
    expected: Option<Author>,
    session: &SessionConfig,
    how: How,
) -> Result<SyncReport> {
    let _slot = shared
        .outbound
        .acquire()
        .await
        .map_err(|_| Error::ShuttingDown)?;
    let identity = shared.db.identity();
    let channel = tokio::select! {
        channel = SecureChannel::connect(address, identity, expected, shared.config.channel) => channel?,
        () = shared.stop.cancelled() => return Err(Error::ShuttingDown),
    };
    run_dialed(shared, channel, address, session, how).await
}

/// Runs one session on a channel we dialed.
async fn run_dialed<S: AsyncRead + AsyncWrite + Unpin + Send>(
    shared: &Arc<Shared>,
    channel: SecureChannel<S>,
    address: SocketAddr,
    session: &SessionConfig,
    how: How,
) -> Result<SyncReport> {
    let peer = channel.remote_author();
    tracing::info!(%peer, %address, live = session.live, "connected");
    let _ = shared.events.send(Event::Connected {
        peer,
        address,
        dialed: true,
    });
    // Remembered once the peer proved its key (a discovery alone is not
    // enough to take a place among the known peers).
    shared.remember(peer, address, how);
    let tracked = Tracked::new(shared, peer);
    let report = session::run(channel, &shared.db, session, &tracked).await?;
    drop(tracked);
    shared.received_snapshot(peer, &report);
    tracing::info!(
        %peer, sent = report.changes_sent, received = report.changes_received,
        bytes_sent = report.bytes_sent, bytes_received = report.bytes_received, "session ended"
    );
    let _ = shared.events.send(Event::Disconnected { peer, address });
    Ok(report)
}

async fn accept_loop(shared: Arc<Shared>, tasks: TaskTracker, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.stop.cancelled() => return,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            let Some(claim) = Claim::new(
                &shared.handshakes_per_address,
                address.ip(),
                HANDSHAKES_PER_ADDRESS_MAX,
            ) else {
                tracing::warn!(%address, limit = HANDSHAKES_PER_ADDRESS_MAX, "too many handshakes from one address; refused");
                return;
            };
            let Some(slot) = HandshakeSlot::take(&shared, claim).await else {
                tracing::warn!(%address, limit = HANDSHAKES_MAX, "too many handshakes; refused");
                return;
            };
            if let Err((peer, error)) = serve(&shared, stream, address, slot).await {
                shared.emit_error(address, peer, error);
            }
        });
    }
}

/// An inbound handshake's place: a handshake slot, its address's claim,
/// and its entry among the handshakes in progress (until dropped).
struct HandshakeSlot<'a> {
    shared: &'a Shared,
    _permit: OwnedSemaphorePermit,
    _claim: Claim<'a, std::net::IpAddr>,
    id: u64,
    /// Cancelled when a newer connection needs the slot.
    evicted: CancellationToken,
}

impl<'a> HandshakeSlot<'a> {
    /// A free slot; when none is, the oldest handshake in progress is
    /// ended to make room (`None` if none frees up in time).
    async fn take(
        shared: &'a Shared,
        claim: Claim<'a, std::net::IpAddr>,
    ) -> Option<HandshakeSlot<'a>> {
        let permit = match Arc::clone(&shared.handshakes).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let oldest = shared
                    .handshaking
                    .lock()
                    .expect("handshaking lock")
                    .pop_front();
                if let Some((_, evicted)) = oldest {
                    evicted.cancel();
                }
                tokio::time::timeout(
                    Duration::from_millis(500),
                    Arc::clone(&shared.handshakes).acquire_owned(),
                )
                .await
                .ok()?
                .ok()?
            }
        };
        let id = shared
            .handshake_ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evicted = CancellationToken::new();
        shared
            .handshaking
            .lock()
            .expect("handshaking lock")
            .push_back((id, evicted.clone()));
        Some(HandshakeSlot {
            shared,
            _permit: permit,
            _claim: claim,
            id,
            evicted,
        })
    }
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        let mut handshaking = self.shared.handshaking.lock().expect("handshaking lock");
        handshaking.retain(|(id, _)| *id != self.id);
    }
}

/// Runs one inbound connection, holding `handshake` (its handshake slot)
/// until the peer proved its key; then it takes an inbound session slot.
/// The session is live if the dialer asks.
async fn serve(
    shared: &Arc<Shared>,
    stream: TcpStream,
    address: SocketAddr,
    handshake: HandshakeSlot<'_>,
) -> Result<(), (Option<Author>, Error)> {
    let _ = stream.set_nodelay(true);
    let handshaking = SecureChannel::accept(stream, shared.db.identity(), shared.config.channel);
    let channel = tokio::select! {
        channel = handshaking => channel.map_err(|error| (None, error))?,
        () = handshake.evicted.cancelled() => {
            tracing::debug!(%address, "handshake ended to make room for a newer one");
            return Ok(());
        }
        () = shared.stop.cancelled() => return Ok(()),
    };
    drop(handshake);
    let Ok(_slot) = Arc::clone(&shared.inbound).try_acquire_owned() else {
        let peer = channel.remote_author();
        tracing::warn!(%peer, %address, limit = INBOUND_SESSIONS_MAX, "too many inbound sessions; refused");
        return Err((
            Some(peer),
            Error::NodeBusy {
                limit: INBOUND_SESSIONS_MAX,
            },
        ));
    };
    serve_channel(shared, channel, address, How::Inbound).await
}

/// Runs the session of an inbound channel.
async fn serve_channel<S: AsyncRead + AsyncWrite + Unpin + Send>(
    shared: &Arc<Shared>,
    mut channel: SecureChannel<S>,
    address: SocketAddr,
    how: How,
) -> Result<(), (Option<Author>, Error)> {
    let peer = channel.remote_author();
    let Some(_session) = Claim::new(&shared.sessions, peer, SESSIONS_PER_KEY_MAX) else {
        tracing::warn!(%peer, %address, limit = SESSIONS_PER_KEY_MAX, "too many sessions for one key; refused");
        if let Ok(bye) = Message::Bye(ByeReason::TooManySessions).encode() {
            let _ = tokio::time::timeout(Duration::from_secs(1), channel.send(&bye)).await;
        }
        return Err((Some(peer), Error::TooManySessions { peer }));
    };
    tracing::info!(%peer, %address, "accepted");
    let _ = shared.events.send(Event::Connected {
        peer,
        address,
        dialed: false,
    });
    shared.remember(peer, address, how);
    let tracked = Tracked::new(shared, peer);
    let report = session::run(channel, &shared.db, &shared.session(true, false), &tracked)
        .await
        .map_err(|error| (Some(peer), error))?;
    drop(tracked);
    shared.received_snapshot(peer, &report);
    tracing::info!(
        %peer, sent = report.changes_sent, received = report.changes_received, "session ended"
    );
    let _ = shared.events.send(Event::Disconnected { peer, address });
    Ok(())
}

/// One of the things counted per key (a key's inbound sessions, an IP
/// address's handshakes), counted while it lives.
struct Claim<'a, K: std::hash::Hash + Eq + Copy> {
    counts: &'a Mutex<HashMap<K, usize>>,
    key: K,
}

impl<'a, K: std::hash::Hash + Eq + Copy> Claim<'a, K> {
    /// Counts one for `key`, or `None` when it holds `max` already.
    fn new(counts: &'a Mutex<HashMap<K, usize>>, key: K, max: usize) -> Option<Claim<'a, K>> {
        let mut map = counts.lock().expect("claims lock");
        let count = map.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Claim { counts, key })
    }
}

impl<K: std::hash::Hash + Eq + Copy> Drop for Claim<'_, K> {
    fn drop(&mut self) {
        let mut map = self.counts.lock().expect("claims lock");
        if let Some(count) = map.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// How a live loop reaches its peer.
enum Via {
    /// At an address, read before every dial: discovery updates it when the
    /// peer announces another one.
    Address(Arc<Mutex<SocketAddr>>),
    /// By key ([`Target::expected`]), see [`dial_key`].
    Key,
}

/// Whom a live loop dials.
struct Target {
    via: Via,
    expected: Option<Author>,
    how: How,
    /// Stop after this many failed attempts in a row (`None`: never).
    give_up_after: Option<u32>,
}

/// Keeps a live session with one peer, redialing with exponential backoff.
async fn live_loop(shared: Arc<Shared>, target: Target) {
    let mut delay = shared.config.reconnect_delay_min;
    let mut failures = 0;
    while !shared.stop.is_cancelled() {
        let session = shared.session(true, true);
        let started = tokio::time::Instant::now();
        let (address, outcome) = match (&target.via, target.expected) {
            (Via::Address(address), expected) => {
                let address = *address.lock().expect("target lock");
                let outcome = dial(&shared, address, expected, &session, target.how).await;
                (address, outcome)
            }
            (Via::Key, Some(peer)) => (UNKNOWN_ADDRESS, dial_key(&shared, peer, &session).await),
            (Via::Key, None) => break,
        };
        match outcome {
            // Only a session that did work resets the backoff: one that
            // ended at once (a peer that says `Bye(Shutdown)` on every
            // connection, say) keeps backing off like a failure.
            Ok(report) if did_work(&report, started.elapsed(), &shared.config) => {
                delay = shared.config.reconnect_delay_min;
                failures = 0;
            }
            Ok(_) => failures = 0,
            Err(Error::ShuttingDown) => break,
            Err(error) => {
                failures += 1;
                shared.emit_error(address, target.expected, error);
            }
        }
        if target.give_up_after.is_some_and(|most| failures >= most) {
            tracing::info!(peer = ?target.expected, %address, failures, "stopped dialing a discovered peer");
            if let Some(peer) = target.expected {
                let _ = shared.events.send(Event::StoppedDialing {
                    peer,
                    address,
                    failures,
                });
            }
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.stop.cancelled() => break,
        }
        delay = (delay * 2).min(shared.config.reconnect_delay_max);
    }
    if let Some(peer) = target.expected
        && target.how == How::Discovered
    {
        shared.dialing.lock().expect("dialing lock").remove(&peer);
    }
}

/// Whether a live session that ended cleanly did enough to reset the
/// reconnect backoff: it moved a change, or it stayed up at least as long as
/// the longest backoff.
fn did_work(report: &SyncReport, lasted: Duration, config: &NodeConfig) -> bool {
    report.changes_sent + report.changes_received > 0 || lasted >= config.reconnect_delay_max
}

/// The address reported for a WebRTC attempt that failed before any path
/// opened.
const UNKNOWN_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
/// How long [`Node::start`] waits for a signaling server before going on
/// (it keeps trying in the background).
const REGISTER_WAIT: Duration = Duration::from_secs(5);

/// Registers with one signaling server (waiting up to [`REGISTER_WAIT`]),
/// then serves the offers it delivers; a failed first registration is
/// retried in the background with backoff.
async fn register(shared: Arc<Shared>, tasks: TaskTracker, url: String) {
    let keys: Arc<dyn peers_signal::Keys> = Arc::new(IdentityKeys(shared.db.identity().clone()));
    let first = tokio::time::timeout(
        REGISTER_WAIT,
        peers_signal::Client::connect(&url, Arc::clone(&keys)),
    )
    .await;
    let connected = match first {
        Ok(Ok(connected)) => Some(connected),
        Ok(Err(error)) => {
            tracing::warn!(%url, %error, "signaling server unavailable; retrying in the background");
            None
        }
        Err(_) => {
            tracing::warn!(%url, "signaling server did not answer; retrying in the background");
            None
        }
    };
    if let Some((client, _)) = &connected {
        // Usable as soon as `Node::start` returns.
        shared.signaling.add(client.clone());
        tracing::info!(%url, "registered with the signaling server");
        let _ = shared.events.send(Event::Registered { url: url.clone() });
    }
    let task_shared = Arc::clone(&shared);
    tasks.clone().spawn(async move {
        let shared = task_shared;
        let mut delay = shared.config.reconnect_delay_min;
        let (client, incoming) = match connected {
            Some(connected) => connected,
            None => {
                let connected = loop {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shared.stop.cancelled() => return,
                    }
                    delay = (delay * 2).min(shared.config.reconnect_delay_max);
                    match peers_signal::Client::connect(&url, Arc::clone(&keys)).await {
                        Ok(connected) => break connected,
                        Err(error) => {
                            tracing::debug!(%url, %error, "signaling server still unavailable")
                        }
                    }
                };
                tracing::info!(%url, "registered with the signaling server");
                let _ = shared.events.send(Event::Registered { url: url.clone() });
                shared.signaling.add(connected.0.clone());
                connected
            }
        };
        signal_loop(&shared, &tasks, incoming).await;
        client.close().await;
    });
}

/// Serves what one signaling server delivers until shutdown: offers are
/// answered (after the gate), other rendezvous messages go to their attempt.
async fn signal_loop(
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    mut incoming: peers_signal::Incoming,
) {
    loop {
        let delivery = tokio::select! {
            delivery = incoming.recv() => delivery,
            () = shared.stop.cancelled() => return,
        };
        let Some(delivery) = delivery else { return };
        let (from, body) = match delivery {
            peers_signal::Delivery::Message { from, body } => (Author(from), body),
            peers_signal::Delivery::Rejected { from, error } => {
                tracing::warn!(from = %Author(from), %error, "signaling payload rejected");
                continue;
            }
        };
        let message = match Rendezvous::decode(&body) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%from, %error, "rendezvous message refused");
                continue;
            }
        };
        let Rendezvous::Offer {
            session,
            database_proof,
            ice,
            candidates,
            invite,
        } = message
        else {
            if !shared.signaling.route(from, message) {
                tracing::debug!(%from, "rendezvous message for no attempt; ignored");
            }
            continue;
        };
        // The gate, before a socket is bound: the offer proves the database
        // id, the key may sync, and there is a connection slot.
        let expected = offer_proof(
            shared.db.database_id(),
            &session,
            &from,
            &shared.db.author(),
        );
        let refusal = if blake3::Hash::from(expected) != blake3::Hash::from(database_proof) {
            Some(RefuseReason::OtherDatabase)
        } else if session::check_member(&shared.db, &from).is_err() {
            // A stranger passes only with an open invite it names; the
            // session checks its proof of the secret.
            match invite.map(|id| shared.invites.lock().expect("invites lock").check(&id)) {
                None => Some(RefuseReason::NotAMember),
                Some(Ok(_)) => None,
                Some(Err(InviteRefusal::Unknown)) => Some(RefuseReason::InviteUnknown),
                Some(Err(InviteRefusal::Expired)) => Some(RefuseReason::InviteExpired),
                Some(Err(InviteRefusal::Used)) => Some(RefuseReason::InviteUsed),
            }
        } else {
            None
        };
        let slot = match refusal {
            None => Arc::clone(&shared.inbound).try_acquire_owned().ok(),
            Some(_) => None,
        };
        let Some(slot) = slot else {
            let reason = refusal.unwrap_or(RefuseReason::Busy);
            tracing::info!(peer = %from, ?reason, "WebRTC offer refused");
            let shared = Arc::clone(shared);
            tasks.spawn(async move {
                let _ = shared
                    .signaling
                    .send(from, &Rendezvous::Refuse { session, reason })
                    .await;
            });
            continue;
        };
        let messages = match shared.signaling.reserve(from, session) {
            Ok(messages) => messages,
            Err(error) => {
                tracing::debug!(peer = %from, %error, "offer refused");
                let shared = Arc::clone(shared);
                tasks.spawn(async move {
                    let refuse = Rendezvous::Refuse {
                        session,
                        reason: RefuseReason::Busy,
                    };
                    let _ = shared.signaling.send(from, &refuse).await;
                });
                continue;
            }
        };
        let shared = Arc::clone(shared);
        tasks.spawn(async move {
            let _slot = slot;
            let opened = tokio::select! {
                opened = shared.signaling.answer(from, session, messages, ice, candidates, &shared.config.webrtc, shared.config.webrtc_connect_timeout) => opened,
                () = shared.stop.cancelled() => return,
            };
            let result = match opened {
                Ok(opened) => serve_webrtc(&shared, from, opened).await,
                Err(error) => Err((Some(from), error)),
            };
            if let Err((peer, error)) = result {
                shared.emit_error(UNKNOWN_ADDRESS, peer, error);
            }
        });
    }
}

/// The handshake and session of an answered WebRTC connection: the key the
/// Noise handshake proves must be the one that signed the offer.
async fn serve_webrtc(
    shared: &Arc<Shared>,
    from: Author,
    opened: Opened,
) -> Result<(), (Option<Author>, Error)> {
    let Opened {
        stream,
        remote,
        binding,
    } = opened;
    let handshake = SecureChannel::accept_bound(
        stream,
        shared.db.identity(),
        shared.config.channel,
        &binding,
    );
    let channel = tokio::select! {
        channel = handshake => channel.map_err(|error| (Some(from), error))?,
        () = shared.stop.cancelled() => return Ok(()),
    };
    if channel.remote_author() != from {
        return Err((
            Some(from),
            Error::UnexpectedKey {
                expected: from,
                actual: channel.remote_author(),
            },
        ));
    }
    serve_channel(shared, channel, remote, How::WebRtc).await
}

/// Dials `peer` by key: over WebRTC through the signaling servers, then at
/// the addresses it was last dialed at directly. The last error is returned
/// if every way fails.
async fn dial_key(
    shared: &Arc<Shared>,
    peer: Author,
    session: &SessionConfig,
) -> Result<SyncReport> {
    let mut last = None;
    if !shared.signaling.is_empty() {
        match dial_webrtc(shared, peer, None, session).await {
            Ok(report) => return Ok(report),
            Err(Error::ShuttingDown) => return Err(Error::ShuttingDown),
            Err(error) => {
                tracing::debug!(%peer, %error, "WebRTC dial failed");
                last = Some(error);
            }
        }
    }
    let direct: Vec<SocketAddr> = {
        let known = shared.known.lock().expect("known peers lock");
        known
            .list()
            .into_iter()
            .filter(|known| {
                known.author == peer && matches!(known.how, How::Dialed | How::Discovered)
            })
            .map(|known| known.address)
            .collect()
    };
    for address in direct {
        match dial(shared, address, Some(peer), session, How::Dialed).await {
            Ok(report) => return Ok(report),
            Err(Error::ShuttingDown) => return Err(Error::ShuttingDown),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or(Error::NoSignaling))
}

/// One WebRTC dial: rendezvous, the bound handshake, the session.
async fn dial_webrtc(
    shared: &Arc<Shared>,
    peer: Author,
    invite: Option<[u8; 16]>,
    session: &SessionConfig,
) -> Result<SyncReport> {
    let _slot = shared
        .outbound
        .acquire()
        .await
        .map_err(|_| Error::ShuttingDown)?;
    let rendezvous = shared.signaling.dial(
        shared.db.database_id(),
        shared.db.author(),
        peer,
        invite,
        &shared.config.webrtc,
        shared.config.webrtc_connect_timeout,
    );
    let opened = tokio::select! {
        opened = rendezvous => opened?,
        () = shared.stop.cancelled() => return Err(Error::ShuttingDown),
    };
    let Opened {
        stream,
        remote,
        binding,
    } = opened;
    let identity = shared.db.identity();
    let channel = tokio::select! {
        channel = SecureChannel::initiate_bound(stream, identity, Some(peer), shared.config.channel, &binding) => channel?,
        () = shared.stop.cancelled() => return Err(Error::ShuttingDown),
    };
    run_dialed(shared, channel, remote, session, How::WebRtc).await
}

/// Dials every peer discovery finds, once per peer. Of two nodes that find
/// each other, only the one with the smaller key dials, so they keep one
/// connection, not two.
async fn discovery_loop(shared: Arc<Shared>, tasks: TaskTracker, mut discovery: Discovery) {
    let ours = shared.db.author();
    loop {
        let found = tokio::select! {
            found = discovery.next() => found,
            () = shared.stop.cancelled() => break,
        };
        let Some(found) = found else { break };
        let _ = shared.events.send(Event::Discovered {
            peer: found.author,
            addresses: found.addresses.clone(),
        });
        let Some(address) = dial_address(&found.addresses, &local_networks()) else {
            tracing::debug!(peer = %found.author, addresses = ?found.addresses, "discovered, but no on-link address");
            continue;
        };
        if ours >= found.author {
            continue;
        }
        let target = {
            let mut dialing = shared.dialing.lock().expect("dialing lock");
            if let Some(current) = dialing.get(&found.author) {
                // A new announcement: the running loop dials it next time.
                *current.lock().expect("target lock") = address;
                continue;
            }
            let current = Arc::new(Mutex::new(address));
            dialing.insert(found.author, Arc::clone(&current));
            Target {
                via: Via::Address(current),
                expected: Some(found.author),
                how: How::Discovered,
                give_up_after: Some(DISCOVERED_DIAL_FAILURES_MAX),
            }
        };
        tracing::info!(peer = %found.author, %address, "discovered; dialing");
        tasks.spawn(live_loop(Arc::clone(&shared), target));
    }
    discovery.shutdown();
}

/// Which of a discovered peer's addresses to dial: only on-link ones (an
/// IPv6 link-local address with its scope, or an address inside the subnet
/// of one of our interfaces other than loopback), so an announcement
/// cannot make us dial loopback or an arbitrary host; IPv4 before IPv6 (an
/// IPv6 link-local address needs its scope, and many listeners bind IPv4
/// only). Port 0 is a `peers peers --scan` that listens nowhere: never
/// dialed.
fn dial_address(addresses: &[SocketAddr], networks: &[(IpAddr, IpAddr)]) -> Option<SocketAddr> {
    addresses
        .iter()
        .copied()
        .filter(|address| address.port() != 0 && on_link(address, networks))
        .min_by_key(|address| address.is_ipv6())
}

/// Whether `address` is on one of `networks` (interface address, netmask).
fn on_link(address: &SocketAddr, networks: &[(IpAddr, IpAddr)]) -> bool {
    let ip = address.ip();
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    if let SocketAddr::V6(v6) = address
        && v6.ip().is_unicast_link_local()
    {
        return v6.scope_id() != 0;
    }
    networks
        .iter()
        .any(|(network, mask)| match (ip, network, mask) {
            (IpAddr::V4(ip), IpAddr::V4(network), IpAddr::V4(mask)) => {
                !network.is_loopback()
                    && u32::from(ip) & u32::from(*mask) == u32::from(*network) & u32::from(*mask)
            }
            (IpAddr::V6(ip), IpAddr::V6(network), IpAddr::V6(mask)) => {
                !network.is_loopback()
                    && u128::from(ip) & u128::from(*mask)
                        == u128::from(*network) & u128::from(*mask)
            }
            _ => false,
        })
}

/// This machine's interface addresses and netmasks (empty if they cannot be
/// read: then only scoped link-local IPv6 addresses are dialed).
fn local_networks() -> Vec<(IpAddr, IpAddr)> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .into_iter()
            .map(|interface| match interface.addr {
                if_addrs::IfAddr::V4(v4) => (IpAddr::V4(v4.ip), IpAddr::V4(v4.netmask)),
                if_addrs::IfAddr::V6(v6) => (IpAddr::V6(v6.ip), IpAddr::V6(v6.netmask)),
            })
            .collect(),
        Err(error) => {
            tracing::debug!(%error, "cannot list the interfaces");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An announcement names loopback, a host elsewhere, a LAN neighbour, a
    /// scoped and an unscoped link-local IPv6 address: only the neighbour
    /// and the scoped one are on-link, and IPv4 is preferred.
    #[test]
    fn only_on_link_addresses_are_dialed() {
        let networks = [
            (
                "127.0.0.1".parse().expect("ip"),
                "255.0.0.0".parse().expect("ip"),
            ),
            (
                "192.168.7.20".parse().expect("ip"),
                "255.255.255.0".parse().expect("ip"),
            ),
        ];
        let address = |text: &str| -> SocketAddr { text.parse().expect("address") };
        let offers = [
            address("127.0.0.1:7000"),
            address("203.0.113.9:7000"),
            address("[fe80::1]:7000"),
            address("[fe80::2%3]:7000"),
            address("192.168.7.44:7000"),
            address("192.168.7.45:0"),
        ];
        for offer in &offers {
            let expected = matches!(
                offer.to_string().as_str(),
                "[fe80::2%3]:7000" | "192.168.7.44:7000" | "192.168.7.45:0"
            );
            assert_eq!(on_link(offer, &networks), expected, "{offer}");
        }
        assert_eq!(
            dial_address(&offers, &networks),
            Some(address("192.168.7.44:7000"))
        );
        assert_eq!(
            dial_address(&offers[..4], &networks),
            Some(address("[fe80::2%3]:7000"))
        );
        assert_eq!(dial_address(&offers[..2], &networks), None);
    }
}

//! The signaling server: registers connections by key and forwards `Send`
//! payloads to the recipient's registered connections. It keeps no queue and no
//! store; an offline recipient is an error to the sender.
//!
//! One tokio task per connection. Its state is the WebSocket (a
//! [`CONNECTION_READ_BUFFER_BYTES`] read buffer, an empty write buffer), a bounded
//! queue of encoded `Deliver` frames, a token bucket and a timer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::frame::{self, Frame, PROTOCOL_VERSION, REGISTER_DOMAIN, RefuseReason, Status};
use crate::stun;

/// Largest frame a client may send, in bytes (`Send` header included).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Sustained `Send` frames per second per connection.
pub const MESSAGES_PER_SECOND: u32 = 50;
/// Token bucket depth: `Send` frames a connection may send at once.
pub const MESSAGES_BURST: u32 = 100;
/// Connections (registered or not) per client IP address.
pub const CONNECTIONS_PER_IP_MAX: u32 = 64;
/// Connections (registered or not) in total.
pub const CLIENTS_MAX: usize = 100_000;
/// Registered connections per key: a person's `peers serve` and `peers sync` share a key.
pub const REGISTRATIONS_PER_KEY_MAX: usize = 4;
/// From TCP accept to `Registered`.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// A registered connection that sends nothing (not even a ping) this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// `Deliver` frames queued per connection before senders get `Busy`. tokio's
/// channel allocates its slots 32 at a time, so fewer would save no memory.
pub const DELIVERIES_QUEUED_MAX: usize = 32;
/// Connections being refused (over a limit) at once; beyond it they are dropped
/// without a `Refused` frame.
pub const REFUSING_MAX: usize = 64;
/// The WebSocket read buffer per connection. tungstenite allocates it up front
/// (its default is 128 KiB); it grows for a larger message.
pub const CONNECTION_READ_BUFFER_BYTES: usize = 2 * 1024;
/// How long a connection being refused gets for the WebSocket handshake and the `Refused` frame.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The server's limits. `Limits::default()` uses the constants of this module.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame accepted from a client; a bigger `Send` gets `Result(TooLarge)`,
    /// a WebSocket message over twice this closes the connection.
    pub message_bytes_max: usize,
    /// Sustained `Send` frames per second per connection.
    pub messages_per_second: u32,
    /// Token bucket depth.
    pub burst: u32,
    /// Connections per client IP address.
    pub connections_per_ip: u32,
    /// Connections in total.
    pub clients_max: usize,
    /// Registered connections per key.
    pub registrations_per_key: usize,
    /// From TCP accept to `Registered`.
    pub registration_timeout: Duration,
    /// Silence after which a registered connection is closed.
    pub idle_timeout: Duration,
    /// `Deliver` frames queued per connection.
    pub deliveries_queued: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            message_bytes_max: MESSAGE_BYTES_MAX,
            messages_per_second: MESSAGES_PER_SECOND,
            burst: MESSAGES_BURST,
            connections_per_ip: CONNECTIONS_PER_IP_MAX,
            clients_max: CLIENTS_MAX,
            registrations_per_key: REGISTRATIONS_PER_KEY_MAX,
            registration_timeout: REGISTRATION_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            deliveries_queued: DELIVERIES_QUEUED_MAX,
        }
    }
}

/// Where the server listens and its limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The WebSocket TCP address.
    pub listen: SocketAddr,
    /// The STUN UDP address; `None` runs no STUN responder.
    pub stun: Option<SocketAddr>,
    /// Limits.
    pub limits: Limits,
}

impl ServerConfig {
    /// WebSocket on `listen`, no STUN, default limits.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            stun: None,
            limits: Limits::default(),
        }
    }

    /// Adds a STUN responder on `stun`.
    pub fn with_stun(mut self, stun: SocketAddr) -> Self {
        self.stun = Some(stun);
        self
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// One registered connection of a key: where its `Deliver` frames go.
struct Registration {
    connection: u64,
    deliveries: mpsc::Sender<Bytes>,
}

struct Shared {
    limits: Limits,
    registry: Mutex<HashMap<[u8; 32], Vec<Registration>>>,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    connections: AtomicUsize,
    refusing: AtomicUsize,
    registered: AtomicUsize,
    next_connection: AtomicU64,
}

impl Shared {
    fn lock_registry(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Vec<Registration>>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an accepted connection, or says which limit it is over.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, RefuseReason> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if self.connections.load(Ordering::Relaxed) >= self.limits.clients_max {
            return Err(RefuseReason::ServerFull);
        }
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.limits.connections_per_ip {
            return Err(RefuseReason::TooManyConnections);
        }
        *count += 1;
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Admission {
            shared: Arc::clone(self),
            ip,
        })
    }
}

/// An admitted connection's place in the counters, given back on drop.
struct Admission {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut per_ip = self
            .shared
            .per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A registration in the registry, removed on drop.
struct Registered {
    shared: Arc<Shared>,
    key: [u8; 32],
    connection: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut registry = self.shared.lock_registry();
        if let Some(entries) = registry.get_mut(&self.key) {
            entries.retain(|entry| entry.connection != self.connection);
            if entries.is_empty() {
                registry.remove(&self.key);
            }
        }
        self.shared.registered.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running signaling server.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stun_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the WebSocket listener (and the STUN socket if configured) and starts serving.
    pub async fn start(config: ServerConfig) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let stun_socket = match config.stun {
            Some(address) => Some(UdpSocket::bind(address).await?),
            None => None,
        };
        let stun_addr = stun_socket
            .as_ref()
            .map(UdpSocket::local_addr)
            .transpose()?;
        let shared = Arc::new(Shared {
            limits: config.limits,
            registry: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            registered: AtomicUsize::new(0),
            next_connection: AtomicU64::new(0),
        });
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown_receiver.clone(),
        ))];
        if let Some(socket) = stun_socket {
            tasks.push(tokio::spawn(stun_loop(socket, shutdown_receiver)));
        }
        tracing::info!(%local_addr, ?stun_addr, "signaling server started");
        Ok(Server {
            shared,
            local_addr,
            stun_addr,
            shutdown,
            tasks,
        })
    }

    /// The WebSocket TCP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The STUN UDP address, if a responder runs.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// Registered connections now.
    pub fn clients(&self) -> usize {
        self.shared.registered.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection, and returns once the listening
    /// sockets are closed and the connections are gone (or after 5 s).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "signaling accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        match shared.admit(peer.ip()) {
            Ok(admission) => {
                tokio::spawn(serve_connection(stream, admission, shutdown.clone()));
            }
            Err(reason) => {
                if shared.refusing.fetch_add(1, Ordering::Relaxed) >= REFUSING_MAX {
                    shared.refusing.fetch_sub(1, Ordering::Relaxed);
                    continue; // dropped: too many being refused already
                }
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        REFUSE_TIMEOUT,
                        refuse(stream, reason, shared.limits.message_bytes_max),
                    )
                    .await;
                    shared.refusing.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }
}

fn websocket_config(message_bytes_max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(CONNECTION_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * message_bytes_max)
        // Up to twice the limit is read and answered with Result(TooLarge); beyond, the connection closes.
        .max_message_size(Some(2 * message_bytes_max))
        .max_frame_size(Some(2 * message_bytes_max))
}

/// Completes the WebSocket handshake to say why the connection is refused, then closes.
async fn refuse(stream: TcpStream, reason: RefuseReason, message_bytes_max: usize) {
    if let Ok(mut socket) = tokio_tungstenite::accept_async_with_config(
        stream,
        Some(websocket_config(message_bytes_max)),
    )
    .await
    {
        let _ = socket
            .send(Message::Binary(Frame::Refused { reason }.encode().into()))
            .await;
        let _ = socket.close(None).await;
    }
}

type Socket = WebSocketStream<TcpStream>;

async fn serve_connection(
    stream: TcpStream,
    admission: Admission,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::clone(&admission.shared);
    let limits = &shared.limits;
    let deadline = Instant::now() + limits.registration_timeout;
    let registration = tokio::select! {
        registration = register(stream, &shared, deadline) => registration,
        _ = shutdown.changed() => return,
    };
    let Some((socket, key, deliveries, guard)) = registration else {
        return;
    };
    relay(socket, key, deliveries, &shared, &mut shutdown).await;
    drop(guard);
    drop(admission);
}

/// Challenge, Register, checks, Registered, all before `deadline`. `None` when
/// refused (the `Refused` frame is sent here) or when the connection failed.
async fn register(
    stream: TcpStream,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Option<(Socket, [u8; 32], mpsc::Receiver<Bytes>, Registered)> {
    let limits = &shared.limits;
    let handshake = tokio_tungstenite::accept_async_with_config(
        stream,
        Some(websocket_config(limits.message_bytes_max)),
    );
    let mut socket = tokio::time::timeout_at(deadline, handshake)
        .await
        .ok()?
        .ok()?;
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).expect("the operating system's random source is available");
    socket
        .send(Message::Binary(
            Frame::Challenge {
                version: PROTOCOL_VERSION,
                nonce,
            }
            .encode()
            .into(),
        ))
        .await
        .ok()?;
    let read_first = async {
        loop {
            match socket.next().await?.ok()? {
                Message::Binary(bytes) => return Some(bytes),
                Message::Ping(_) | Message::Pong(_) => continue,
                _ => return None,
            }
        }
    };
    let first = match tokio::time::timeout_at(deadline, read_first).await {
        Ok(first) => first?,
        Err(_elapsed) => {
            send_refused(&mut socket, RefuseReason::Timeout).await;
            return None;
        }
    };
    let key = match verify_registration(&first, &nonce) {
        Ok(key) => key,
        Err(reason) => {
            send_refused(&mut socket, reason).await;
            return None;
        }
    };
    let connection = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let (sender, deliveries) = mpsc::channel(limits.deliveries_queued);
    let guard = {
        let mut registry = shared.lock_registry();
        let entries = registry.entry(key).or_default();
        if entries.len() >= limits.registrations_per_key {
            None
        } else {
            entries.push(Registration {
                connection,
                deliveries: sender,
            });
            shared.registered.fetch_add(1, Ordering::Relaxed);
            Some(Registered {
                shared: Arc::clone(shared),
                key,
                connection,
            })
        }
    };
    let Some(guard) = guard else {
        send_refused(&mut socket, RefuseReason::TooManyRegistrations).await;
        return None;
    };
    let message_bytes_max = u32::try_from(limits.message_bytes_max).unwrap_or(u32::MAX);
    socket
        .send(Message::Binary(
            Frame::Registered { message_bytes_max }.encode().into(),
        ))
        .await
        .ok()?;
    tracing::debug!(key = %hex::encode(key), connection, "registered");
    Some((socket, key, deliveries, guard))
}

async fn send_refused(socket: &mut Socket, reason: RefuseReason) {
    let _ = socket
        .send(Message::Binary(Frame::Refused { reason }.encode().into()))
        .await;
    let _ = socket.close(None).await;
}

/// The registration checks, in order: a well-formed `Register`, our version, a
/// valid strong ed25519 key, and its signature (`verify_strict`) over the domain
/// tag and this connection's nonce.
fn verify_registration(bytes: &[u8], nonce: &[u8; 32]) -> Result<[u8; 32], RefuseReason> {
    let (key, signature) = match Frame::decode(bytes) {
        Ok(Frame::Register { key, signature, .. }) => (key, signature),
        Err(crate::FrameError::UnsupportedVersion { .. }) => {
            return Err(RefuseReason::UnsupportedVersion);
        }
        _ => return Err(RefuseReason::Malformed),
    };
    let verifying = VerifyingKey::from_bytes(&key).map_err(|_| RefuseReason::BadProof)?;
    if verifying.is_weak() {
        return Err(RefuseReason::BadProof);
    }
    let mut message = [0u8; 25 + 32];
    message[..REGISTER_DOMAIN.len()].copy_from_slice(REGISTER_DOMAIN);
    message[REGISTER_DOMAIN.len()..].copy_from_slice(nonce);
    verifying
        .verify_strict(&message, &Signature::from_bytes(&signature))
        .map_err(|_| RefuseReason::BadProof)?;
    Ok(key)
}

const _: () = assert!(REGISTER_DOMAIN.len() == 25);

/// A token bucket in thousandths of a token.
struct Bucket {
    tokens_milli: u64,
    updated: Instant,
}

impl Bucket {
    fn take(&mut self, limits: &Limits) -> bool {
        let now = Instant::now();
        let elapsed_ms =
            u64::try_from(now.duration_since(self.updated).as_millis()).unwrap_or(u64::MAX);
        self.updated = now;
        let refill = elapsed_ms.saturating_mul(u64::from(limits.messages_per_second));
        let depth = u64::from(limits.burst) * 1000;
        self.tokens_milli = self.tokens_milli.saturating_add(refill).min(depth);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// The registered phase: forward `Send` frames, write queued `Deliver` frames.
async fn relay(
    mut socket: Socket,
    key: [u8; 32],
    mut deliveries: mpsc::Receiver<Bytes>,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) {
    let limits = &shared.limits;
    let mut bucket = Bucket {
        tokens_milli: u64::from(limits.burst) * 1000,
        updated: Instant::now(),
    };
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            message = socket.next() => {
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                let bytes = match message {
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => break, // close, text, error, end of stream
                };
                let Some(reply) = forward(&bytes, &key, &mut bucket, shared) else {
                    break; // not a Send: a protocol violation
                };
                if socket.send(Message::Binary(reply.into())).await.is_err() {
                    break;
                }
            }
            Some(frame) = deliveries.recv() => {
                if socket.send(Message::Binary(frame)).await.is_err() {
                    break;
                }
            }
            () = &mut idle => break,
            _ = shutdown.changed() => break,
        }
    }
    let _ = socket.close(None).await;
}

/// Handles one frame from a registered client: the `Result` to send back, or
/// `None` if the frame is not a `Send`.
fn forward(bytes: &[u8], from: &[u8; 32], bucket: &mut Bucket, shared: &Shared) -> Option<Vec<u8>> {
    let (id, to, payload) = frame::split_send(bytes).ok()?;
    let status = if !bucket.take(&shared.limits) {
        Status::RateLimited
    } else if bytes.len() > shared.limits.message_bytes_max {
        Status::TooLarge
    } else {
        deliver(from, &to, payload, shared)
    };
    Some(Frame::Result { id, status }.encode())
}

fn deliver(from: &[u8; 32], to: &[u8; 32], payload: &[u8], shared: &Shared) -> Status {
    let frame = Bytes::from(frame::encode_deliver(from, payload));
    let registry = shared.lock_registry();
    let Some(entries) = registry.get(to) else {
        return Status::Offline;
    };
    let mut delivered = false;
    for entry in entries {
        // try_send: a slow recipient never blocks the sender's task.
        delivered |= entry.deliveries.try_send(frame.clone()).is_ok();
    }
    if delivered {
        Status::Delivered
    } else {
        Status::Busy
    }
}

async fn stun_loop(socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; stun::MESSAGE_BYTES_MAX + 1];
    loop {
        let (length, source) = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(%error, "STUN receive failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        if let Some(response) = stun::answer(&buffer[..length], source) {
            let _ = socket.send_to(&response, source).await;
        }
    }
}

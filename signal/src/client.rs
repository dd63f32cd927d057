//! The signaling client: a cheap [`Client`] handle over a background task that
//! owns the WebSocket, stays registered (redialing with backoff), seals outgoing
//! bodies and opens incoming payloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{Error, FrameError, Result, SealError};
use crate::frame::{self, Frame, PROTOCOL_VERSION, REGISTER_DOMAIN, Status};
use crate::seal::{self, Freshness, Keys, ReplayGuard};

/// First redial delay after a connection drops; it doubles up to [`REDIAL_DELAY_MAX`].
pub const REDIAL_DELAY_MIN: Duration = Duration::from_millis(250);
/// Longest redial delay.
pub const REDIAL_DELAY_MAX: Duration = Duration::from_secs(30);
/// How long `send` waits for the server's `Result`.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialing and registering may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The client pings the server this often, so the server's idle timeout never fires.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// With no frame from the server this long, the client drops the connection and redials.
pub const SERVER_SILENCE_MAX: Duration = Duration::from_secs(75);
/// Verified deliveries waiting for [`Incoming::recv`]; beyond it they are dropped with a warning.
pub const INCOMING_QUEUED_MAX: usize = 256;
/// Sends waiting for their `Result`; beyond it `send` waits for a slot.
pub const PENDING_SENDS_MAX: usize = 256;
/// Largest WebSocket message the client reads from the server.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 1024 * 1024;

/// One delivery from the server, after the checks of [`crate::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Authentic (signed by `from`), addressed to us, fresh, in order.
    Message {
        /// The sender's key.
        from: [u8; 32],
        /// The body it sealed.
        body: Vec<u8>,
    },
    /// A payload that failed verification (tampered, forged, replayed, reordered,
    /// stale, undecodable): dropped, reported so the caller can log or count it.
    Rejected {
        /// The key the server said it came from.
        from: [u8; 32],
        /// Why it was rejected.
        error: SealError,
    },
}

/// The receiving end of verified deliveries.
#[derive(Debug)]
pub struct Incoming {
    deliveries: mpsc::Receiver<Delivery>,
}

impl Incoming {
    /// The next delivery; `None` once the client is closed (every handle dropped or `close`d).
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.deliveries.recv().await
    }
}

enum Command {
    Send {
        to: [u8; 32],
        body: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

struct Inner {
    url: String,
    commands: mpsc::Sender<Command>,
    registered: Arc<AtomicBool>,
}

/// A handle on a signaling connection; clones share it. The connection closes
/// when `close` is called or the last handle is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.url)
            .field("registered", &self.is_registered())
            .finish()
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Client {
    /// Connects to `url` (`ws://host:port`), registers (proves our key over the
    /// server's nonce), and returns once registered. The task stays registered:
    /// when the connection drops it redials with backoff (250 ms doubling to 30 s)
    /// until `close` or all handles dropped. If this first dial or registration
    /// fails, the error is returned and nothing is retried.
    pub async fn connect(url: &str, keys: Arc<dyn Keys>) -> Result<(Client, Incoming)> {
        if !url.starts_with("ws://") {
            let reason = if url.starts_with("wss://") {
                "wss:// is not supported by this build; use ws:// (payloads are sealed end to end) or a local TLS proxy"
            } else {
                "the scheme must be ws://"
            };
            return Err(Error::Url {
                url: url.to_owned(),
                reason,
            });
        }
        let (socket, message_bytes_max) = dial(url, keys.as_ref()).await?;
        let (commands, command_receiver) = mpsc::channel(PENDING_SENDS_MAX);
        let (incoming, deliveries) = mpsc::channel(INCOMING_QUEUED_MAX);
        let registered = Arc::new(AtomicBool::new(true));
        let mut instance = [0u8; 16];
        getrandom::fill(&mut instance).expect("the operating system's random source is available");
        let task = Task {
            url: url.to_owned(),
            keys,
            instance,
            counter: 0,
            next_id: 0,
            replay: ReplayGuard::default(),
            commands: command_receiver,
            incoming,
            registered: Arc::clone(&registered),
            message_bytes_max,
        };
        tokio::spawn(task.run(socket));
        let inner = Arc::new(Inner {
            url: url.to_owned(),
            commands,
            registered,
        });
        Ok((Client { inner }, Incoming { deliveries }))
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Seals `body` to `to` and sends it; resolves when the server confirms it
    /// handed it to the recipient's connection(s), or with [`Error::Offline`],
    /// [`Error::Busy`], [`Error::RateLimited`], [`Error::TooLarge`],
    /// [`Error::Disconnected`], [`Error::Closed`] or [`Error::Timeout`].
    pub async fn send(&self, to: [u8; 32], body: &[u8]) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Send {
            to,
            body: body.to_vec(),
            reply,
        };
        let exchange = async {
            self.inner
                .commands
                .send(command)
                .await
                .map_err(|_| Error::Closed)?;
            answer.await.map_err(|_| Error::Closed)?
        };
        tokio::time::timeout(SEND_TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Timeout {
                ms: duration_ms(SEND_TIMEOUT),
            })?
    }

    /// Whether the task is registered with the server right now.
    pub fn is_registered(&self) -> bool {
        self.inner.registered.load(Ordering::Relaxed)
    }

    /// Closes the connection and stops redialing, for every handle. Returns once the task is gone.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Close { done })
            .await
            .is_ok()
        {
            let _ = finished.await;
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_ms)
}

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(CLIENT_MESSAGE_BYTES_MAX))
        .max_frame_size(Some(CLIENT_MESSAGE_BYTES_MAX))
}

/// Dials, reads the Challenge, registers; the server's `message_bytes_max` on success.
async fn dial(url: &str, keys: &dyn Keys) -> Result<(Socket, usize)> {
    let attempt = async {
        let (mut socket, _response) =
            tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true)
                .await
                .map_err(|error| Error::Connect {
                    url: url.to_owned(),
                    detail: error.to_string(),
                })?;
        let nonce = match next_frame(&mut socket, url).await? {
            Frame::Challenge { nonce, .. } => nonce,
            Frame::Refused { reason } => return Err(Error::Refused { reason }),
            other => {
                return Err(Error::Protocol(FrameError::Unexpected {
                    kind: other.encode()[0],
                }));
            }
        };
        let mut message = REGISTER_DOMAIN.to_vec();
        message.extend_from_slice(&nonce);
        let register = Frame::Register {
            version: PROTOCOL_VERSION,
            key: keys.public(),
            signature: keys.sign(&message),
        };
        socket
            .send(Message::Binary(register.encode().into()))
            .await
            .map_err(|error| Error::Connect {
                url: url.to_owned(),
                detail: error.to_string(),
            })?;
        match next_frame(&mut socket, url).await? {
            Frame::Registered { message_bytes_max } => Ok((
                socket,
                usize::try_from(message_bytes_max).unwrap_or(usize::MAX),
            )),
            Frame::Refused { reason } => Err(Error::Refused { reason }),
            other => Err(Error::Protocol(FrameError::Unexpected {
                kind: other.encode()[0],
            })),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| Error::Timeout {
            ms: duration_ms(CONNECT_TIMEOUT),
        })?
}

/// The next binary frame during registration, decoded.
async fn next_frame(socket: &mut Socket, url: &str) -> Result<Frame> {
    loop {
        let message = socket.next().await.ok_or_else(|| Error::Connect {
            url: url.to_owned(),
            detail: "the server closed the connection".to_owned(),
        })?;
        match message.map_err(|error| Error::Connect {
            url: url.to_owned(),
            detail: error.to_string(),
        })? {
            Message::Binary(bytes) => {
                return Frame::decode(&bytes).map_err(|error| match error {
                    FrameError::UnsupportedVersion { version } => Error::UnsupportedVersion {
                        ours: PROTOCOL_VERSION,
                        theirs: version,
                    },
                    other => Error::Protocol(other),
                });
            }
            Message::Text(_) => return Err(Error::Protocol(FrameError::Text)),
            Message::Close(_) => {
                return Err(Error::Connect {
                    url: url.to_owned(),
                    detail: "the server closed the connection".to_owned(),
                });
            }
            _ => continue,
        }
    }
}

/// A `Send` waiting for its `Result`.
struct Pending {
    to: [u8; 32],
    bytes: usize,
    reply: oneshot::Sender<Result<()>>,
}

/// The background task's state; it outlives connections.
struct Task {
    url: String,
    keys: Arc<dyn Keys>,
    instance: [u8; 16],
    counter: u64,
    next_id: u64,
    replay: ReplayGuard,
    commands: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Delivery>,
    registered: Arc<AtomicBool>,
    message_bytes_max: usize,
}

/// Why `serve` returned.
enum Ended {
    /// `close` or every handle dropped: stop.
    Closed,
    /// The connection broke: redial.
    Dropped,
}

impl Task {
    async fn run(mut self, socket: Socket) {
        let mut socket = Some(socket);
        loop {
            if let Some(connected) = socket.take() {
                self.registered.store(true, Ordering::Relaxed);
                let ended = self.serve(connected).await;
                self.registered.store(false, Ordering::Relaxed);
                if let Ended::Closed = ended {
                    return;
                }
            }
            match self.redial().await {
                Some(connected) => socket = Some(connected),
                None => return,
            }
        }
    }

    /// Redials with backoff until registered; `None` when closed meanwhile. Sends
    /// made meanwhile fail with `Disconnected`.
    async fn redial(&mut self) -> Option<Socket> {
        let mut delay = REDIAL_DELAY_MIN;
        loop {
            let wake = Instant::now() + jittered(delay);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    command = self.commands.recv() => match command {
                        None => return None,
                        Some(Command::Close { done }) => {
                            let _ = done.send(());
                            return None;
                        }
                        Some(Command::Send { reply, .. }) => {
                            let _ = reply.send(Err(Error::Disconnected));
                        }
                    },
                }
            }
            match dial(&self.url, self.keys.as_ref()).await {
                Ok((socket, message_bytes_max)) => {
                    tracing::debug!(url = %self.url, "signaling client registered again");
                    self.message_bytes_max = message_bytes_max;
                    return Some(socket);
                }
                Err(error) => {
                    tracing::debug!(url = %self.url, %error, ?delay, "signaling redial failed")
                }
            }
            delay = (delay * 2).min(REDIAL_DELAY_MAX);
        }
    }

    /// Serves one registered connection until it drops or the client closes.
    async fn serve(&mut self, mut socket: Socket) -> Ended {
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let silence = tokio::time::sleep(SERVER_SILENCE_MAX);
        tokio::pin!(silence);
        let ended = loop {
            tokio::select! {
                command = self.commands.recv(), if pending.len() < PENDING_SENDS_MAX => match command {
                    None => break Ended::Closed,
                    Some(Command::Close { done }) => {
                        let _ = socket.close(None).await;
                        self.registered.store(false, Ordering::Relaxed);
                        let _ = done.send(());
                        break Ended::Closed;
                    }
                    Some(Command::Send { to, body, reply }) => {
                        if let Err(error) = self.start_send(&mut socket, &mut pending, to, &body, reply).await {
                            tracing::debug!(url = %self.url, %error, "signaling connection lost");
                            break Ended::Dropped;
                        }
                    }
                },
                message = socket.next() => {
                    silence.as_mut().reset(Instant::now() + SERVER_SILENCE_MAX);
                    match message {
                        Some(Ok(Message::Binary(bytes))) => {
                            if let Err(error) = self.receive(&bytes, &mut pending) {
                                tracing::warn!(url = %self.url, %error, "signaling server broke the protocol");
                                break Ended::Dropped;
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Ok(Message::Text(_) | Message::Close(_))) | Some(Err(_)) | None => break Ended::Dropped,
                    }
                }
                _ = ping.tick() => {
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break Ended::Dropped;
                    }
                }
                () = &mut silence => break Ended::Dropped,
            }
        };
        for (_, Pending { reply, .. }) in pending.drain() {
            let _ = reply.send(Err(Error::Disconnected));
        }
        ended
    }

    /// Seals and writes one `Send`. `Err` only when the connection is broken; a
    /// refused send is answered on `reply`.
    async fn start_send(
        &mut self,
        socket: &mut Socket,
        pending: &mut HashMap<u64, Pending>,
        to: [u8; 32],
        body: &[u8],
        reply: oneshot::Sender<Result<()>>,
    ) -> std::result::Result<(), tokio_tungstenite::tungstenite::Error> {
        let freshness = Freshness {
            instance: self.instance,
            counter: self.counter + 1,
            timestamp_ms: now_ms(),
        };
        let sealed = match seal::seal(self.keys.as_ref(), &to, freshness, body) {
            Ok(sealed) => sealed,
            Err(source) => {
                let _ = reply.send(Err(Error::Recipient { to, source }));
                return Ok(());
            }
        };
        let bytes = frame::SEND_HEADER_BYTES + sealed.len();
        if bytes > self.message_bytes_max {
            let _ = reply.send(Err(Error::TooLarge {
                bytes,
                max: self.message_bytes_max,
            }));
            return Ok(());
        }
        self.counter += 1;
        let id = self.next_id;
        self.next_id += 1;
        pending.insert(id, Pending { to, bytes, reply });
        socket
            .send(Message::Binary(frame::encode_send(id, &to, &sealed).into()))
            .await
    }

    /// Handles one frame from the server.
    fn receive(
        &mut self,
        bytes: &[u8],
        pending: &mut HashMap<u64, Pending>,
    ) -> std::result::Result<(), FrameError> {
        match Frame::decode(bytes)? {
            Frame::Result { id, status } => {
                // An unknown id (a late answer) is ignored.
                if let Some(Pending {
                    to,
                    bytes: sent_bytes,
                    reply,
                }) = pending.remove(&id)
                {
                    let result = match status {
                        Status::Delivered => Ok(()),
                        Status::Offline => Err(Error::Offline { to }),
                        Status::Busy => Err(Error::Busy { to }),
                        Status::RateLimited => Err(Error::RateLimited),
                        Status::TooLarge => Err(Error::TooLarge {
                            bytes: sent_bytes,
                            max: self.message_bytes_max,
                        }),
                    };
                    let _ = reply.send(result);
                }
                Ok(())
            }
            Frame::Deliver { from, payload } => {
                let delivery = match seal::open(
                    self.keys.as_ref(),
                    &from,
                    &payload,
                    now_ms(),
                    &mut self.replay,
                ) {
                    Ok(opened) => Delivery::Message {
                        from,
                        body: opened.body,
                    },
                    Err(error) => {
                        tracing::debug!(from = %hex::encode(from), %error, "signaling payload rejected");
                        Delivery::Rejected { from, error }
                    }
                };
                if let Err(mpsc::error::TrySendError::Full(_)) = self.incoming.try_send(delivery) {
                    tracing::warn!(from = %hex::encode(from), "signaling delivery dropped: Incoming is not being read");
                }
                Ok(())
            }
            other => Err(FrameError::Unexpected {
                kind: other.encode()[0],
            }),
        }
    }
}

/// `delay` plus up to a quarter more, so many clients of a restarted server do not redial in step.
fn jittered(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    delay + delay / 4 * u32::from(byte[0]) / 255
}

//! The health and metrics endpoint of `peers serve --metrics ADDR`: a small
//! HTTP/1.1 responder (GET or HEAD of `/health` and `/metrics`, one request
//! per connection) that answers from the nodes' counters
//! ([`peers_net::Node::stats`]) and the backup configuration, in
//! Prometheus's text exposition format (version 0.0.4). Bounded: a request
//! head of at most [`REQUEST_BYTES_MAX`], [`CONNECTIONS_MAX`] connections
//! at once, each ended after [`CONNECTION_TIMEOUT`]. The metrics are
//! specified in docs/SERVICES.md "Always-on peer".

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peers_net::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

/// Largest request head read (request line and headers); a larger one is
/// answered 431.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Connections served at once; more wait in the listen queue.
pub const CONNECTIONS_MAX: usize = 16;
/// A connection is closed this long after it was accepted, answered or not.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes served, each with its label (its directory when there are
/// several).
pub(crate) type Nodes = Arc<Vec<(Option<String>, Node)>>;

/// A running endpoint; [`Endpoint::shutdown`] stops it.
pub(crate) struct Endpoint {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Binds `address` and serves until shut down.
    pub(crate) async fn start(address: SocketAddr, nodes: Nodes) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, nodes, stopped));
        Ok(Endpoint {
            address,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting, ends the connections in progress, and returns once
    /// nothing holds the nodes any more.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, nodes: Nodes, mut stopped: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            _ = &mut stopped => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let nodes = Arc::clone(&nodes);
        connections.spawn(async move {
            let _slot = slot;
            let answered = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &nodes)).await;
            if let Ok(Err(error)) = answered {
                tracing::debug!(%error, "metrics: connection failed");
            }
        });
    }
    connections.shutdown().await;
}

/// Reads one request head and answers it; closes the connection.
async fn answer(mut stream: TcpStream, nodes: &Nodes) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = find(&head, b"\r\n\r\n") {
            break end;
        }
        if head.len() >= REQUEST_BYTES_MAX {
            return respond(&mut stream, false, 431, "request head too large\n").await;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(chunk.get(..read).unwrap_or_default());
    };
    let head = head.get(..end).unwrap_or_default();
    let (status, head_only, body) = match parse_request(head) {
        Ok(Request::Metrics { head_only }) => (200, head_only, render(nodes, SystemTime::now())),
        Ok(Request::Health { head_only }) => {
            let connected: usize = nodes
                .iter()
                .map(|(_, node)| node.stats().peers_connected())
                .sum();
            let body = format!(
                "ok: serving {} databases, {connected} peers connected\n",
                nodes.len()
            );
            (200, head_only, body)
        }
        Err(refusal) => (refusal.status(), false, format!("{refusal}\n")),
    };
    respond(&mut stream, head_only, status, &body).await
}

/// A request the endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (or `HEAD`: headers only).
    Metrics {
        /// `HEAD`.
        head_only: bool,
    },
    /// `GET /health` (or `HEAD`).
    Health {
        /// `HEAD`.
        head_only: bool,
    },
}

/// Why a request is refused; [`Refusal::status`] is its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not `METHOD TARGET VERSION`.
    #[error("bad request line")]
    BadRequest,
    /// Not HTTP/1.x.
    #[error("HTTP/1.x only")]
    Version,
    /// A method other than GET or HEAD on a known path.
    #[error("GET or HEAD only")]
    Method,
    /// A path other than /metrics and /health.
    #[error("not found: /metrics or /health")]
    NotFound,
}

impl Refusal {
    /// The HTTP status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest | Refusal::Version => 400,
            Refusal::Method => 405,
            Refusal::NotFound => 404,
        }
    }
}

/// Reads a request head (the bytes before the blank line, at most
/// [`REQUEST_BYTES_MAX`] of them when it comes from the endpoint): only its
/// request line matters; headers are ignored, a query string too.
pub fn parse_request(head: &[u8]) -> Result<Request, Refusal> {
    let line = head
        .split(|byte| *byte == b'\r' || *byte == b'\n')
        .next()
        .unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| Refusal::BadRequest)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Refusal::Version);
    }
    let head_only = method == "HEAD";
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Ok(Request::Metrics { head_only }),
        ("GET" | "HEAD", "/health") => Ok(Request::Health { head_only }),
        (_, "/metrics" | "/health") => Err(Refusal::Method),
        _ => Err(Refusal::NotFound),
    }
}

/// Writes a response with `body` (its headers only, for HEAD) and closes.
async fn respond(
    stream: &mut TcpStream,
    head_only: bool,
    status: u16,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let content_type = if status == 200 && body.starts_with('#') {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// One metric family: its help, type and samples.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, String)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels = labels
            .iter()
            .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
            .collect::<Vec<_>>()
            .join(",");
        self.samples.push((labels, value.to_string()));
    }
}

/// A label value escaped as the exposition format wants.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The exposition text for `nodes` at `now`.
pub(crate) fn render(nodes: &Nodes, now: SystemTime) -> String {
    let mut info = Family::new(
        "peers_database_info",
        "gauge",
        "A database this process serves (always 1): its directory and this replica's public key.",
    );
    let mut connected = Family::new(
        "peers_peers_connected",
        "gauge",
        "Peers with at least one session open now.",
    );
    let mut received = Family::new(
        "peers_changes_received_total",
        "counter",
        "New changes received from peers (verified and applied) since the process started.",
    );
    let mut sent = Family::new(
        "peers_changes_sent_total",
        "counter",
        "Changes sent to peers since the process started.",
    );
    let mut peer_sessions = Family::new(
        "peers_peer_sessions",
        "gauge",
        "Sessions open with a peer now.",
    );
    let mut peer_received = Family::new(
        "peers_peer_changes_received_total",
        "counter",
        "New changes received from a peer since the process started.",
    );
    let mut peer_sent = Family::new(
        "peers_peer_changes_sent_total",
        "counter",
        "Changes sent to a peer since the process started.",
    );
    let mut peer_in_sync = Family::new(
        "peers_peer_in_sync",
        "gauge",
        "1 while a session with the peer has finished both catch-ups (every change is then pushed as it commits), else 0.",
    );
    let mut peer_lag = Family::new(
        "peers_peer_lag_seconds",
        "gauge",
        "Replication lag: 0 while in sync, else seconds since the peer was last in sync (never in sync: since it first connected).",
    );
    let mut backup_run = Family::new(
        "peers_backup_last_run",
        "gauge",
        "The number of this replica's last completed backup run (0: none yet).",
    );
    let mut backup_time = Family::new(
        "peers_backup_last_run_timestamp_seconds",
        "gauge",
        "When the last backup run completed (Unix time).",
    );
    let mut backup_age = Family::new(
        "peers_backup_age_seconds",
        "gauge",
        "Seconds since the last backup run completed.",
    );
    for (_, node) in nodes.iter() {
        let db = node.db();
        let database = db.database_id().to_hex();
        let database = database.as_str();
        info.add(
            &[
                ("database", database),
                ("dir", &db.dir().display().to_string()),
                ("public_key", &db.author().to_hex()),
            ],
            1,
        );
        let stats = node.stats();
        connected.add(&[("database", database)], stats.peers_connected());
        received.add(&[("database", database)], stats.changes_received);
        sent.add(&[("database", database)], stats.changes_sent);
        for peer in &stats.peers {
            let key = peer.peer.to_hex();
            let labels = [("database", database), ("peer", key.as_str())];
            peer_sessions.add(&labels, peer.sessions);
            peer_received.add(&labels, peer.changes_received);
            peer_sent.add(&labels, peer.changes_sent);
            peer_in_sync.add(&labels, u8::from(peer.in_sync));
            peer_lag.add(&labels, peer.lag(now).as_secs_f64());
        }
        match peers_backup::last_run(db) {
            Ok(None) => backup_run.add(&[("database", database)], 0),
            Ok(Some(last)) => {
                backup_run.add(&[("database", database)], last.run);
                backup_time.add(&[("database", database)], seconds(last.completed));
                let age = now.duration_since(last.completed).unwrap_or(Duration::ZERO);
                backup_age.add(&[("database", database)], age.as_secs_f64());
            }
            Err(peers_backup::Error::NotConfigured { .. }) => {}
            Err(error) => tracing::warn!(%error, "metrics: reading the backup configuration"),
        }
    }
    let mut text = String::new();
    for family in [
        info,
        connected,
        received,
        sent,
        peer_sessions,
        peer_received,
        peer_sent,
        peer_in_sync,
        peer_lag,
        backup_run,
        backup_time,
        backup_age,
    ] {
        let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind);
        for (labels, value) in &family.samples {
            let _ = writeln!(text, "{}{{{labels}}} {value}", family.name);
        }
    }
    text
}

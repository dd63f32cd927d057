//! One WebRTC connection: a tokio task owns the UDP sockets and str0m's
//! sans-IO [`Rtc`], and bridges one reliable, ordered data channel to a
//! [`DuplexStream`] that the secure channel reads and writes like a TCP
//! stream (docs/PROTOCOL.md "WebRTC transport").
//!
//! Both sides use str0m's direct API: the parameters an SDP offer would
//! carry (ICE credentials, the DTLS fingerprint, candidates) travel in our
//! own rendezvous messages, and the data channel is pre-negotiated (stream
//! 0), so no SDP is parsed. The dialer is ICE-controlling, the DTLS client
//! and the SCTP client.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::channel::{ChannelConfig, ChannelId};
use str0m::config::Fingerprint;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::wire::{CANDIDATES_MAX, CandidateType, FINGERPRINT_BYTES, IceParams, WireCandidate};

/// Largest data-channel message we write: str0m's SCTP advertises more than
/// it accepts in one message, and bulk transfer stalls above this.
pub const CHANNEL_MESSAGE_BYTES_MAX: usize = 16 * 1024;
/// We read more from the application while the channel buffers less than
/// this...
pub const CHANNEL_BUFFERED_HIGH: usize = 64 * 1024;
/// ...and str0m tells us when it drains below this.
pub const CHANNEL_BUFFERED_LOW: usize = 32 * 1024;
/// Received data waiting for the application: above this the driver stops
/// reading its sockets, so the sender's SCTP backs off (there is no other
/// back-pressure from reader to writer on a data channel).
pub const RECEIVED_PENDING_MAX: usize = 8 * 1024 * 1024;
/// After ICE reports the path disconnected, the connection ends if it has
/// not recovered within this long (the live loop then redials with fresh
/// candidates).
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(8);
/// The buffer between the driver and the secure channel.
const DUPLEX_BYTES: usize = 64 * 1024;
/// Datagrams queued between the socket readers and the driver.
const DATAGRAMS_QUEUED: usize = 256;
/// Most remote candidates kept in all (offer, answer and trickles).
const REMOTE_CANDIDATES_MAX: usize = 2 * CANDIDATES_MAX;
/// STUN binding requests to each server are sent again after these delays.
const STUN_RETRIES: [Duration; 4] = [
    Duration::from_millis(0),
    Duration::from_millis(300),
    Duration::from_millis(900),
    Duration::from_millis(2100),
];
/// How long the answer to the last STUN request is waited for.
const STUN_ANSWER_WAIT: Duration = Duration::from_secs(3);
/// The pre-negotiated data channel's SCTP stream.
const CHANNEL_STREAM: u16 = 0;
/// The data channel's label (informational: the channel is pre-negotiated).
const CHANNEL_LABEL: &str = "peers";

/// What the caller tells a running driver.
#[derive(Debug)]
pub(crate) enum Control {
    /// The other side's parameters and first candidates (once).
    Remote {
        ice: IceParams,
        candidates: Vec<WireCandidate>,
    },
    /// More of the other side's candidates.
    Candidates(Vec<WireCandidate>),
}

/// What a driver reports.
#[derive(Debug)]
pub(crate) enum Report {
    /// New local candidates (server-reflexive ones) to trickle.
    LocalCandidates(Vec<WireCandidate>),
    /// The data channel is open: the stream is usable.
    Open {
        /// The address the peer's packets came from last.
        remote: SocketAddr,
    },
    /// The connection ended or failed; `None` for a clean close.
    Ended(Option<String>),
}

/// Where a driver binds and whom it asks for its public address.
#[derive(Clone, Debug, Default)]
pub struct WebRtcConfig {
    /// Interface addresses to offer as host candidates (`None`: every
    /// interface that is up, loopback only if there is nothing else).
    pub interfaces: Option<Vec<IpAddr>>,
    /// STUN servers asked for server-reflexive candidates.
    pub stun_servers: Vec<SocketAddr>,
}

/// A driver task: its handles and what is known before it runs.
pub(crate) struct Driver {
    /// Commands to the task.
    pub(crate) control: mpsc::Sender<Control>,
    /// Reports from the task.
    pub(crate) reports: mpsc::Receiver<Report>,
    /// Our ICE credentials and fingerprint, for the offer or answer.
    pub(crate) local: IceParams,
    /// Our host candidates, for the offer or answer.
    pub(crate) host_candidates: Vec<WireCandidate>,
    /// The application's end of the data channel. The task ends when the
    /// control sender is dropped before the channel opens, or when this
    /// stream is dropped after (once what was written is delivered).
    pub(crate) stream: DuplexStream,
}

impl Driver {
    /// Binds one UDP socket per interface address and starts the task.
    /// `dialer` picks the roles (ICE controlling, DTLS and SCTP client).
    pub(crate) async fn start(config: &WebRtcConfig, dialer: bool) -> std::io::Result<Driver> {
        let addresses = match &config.interfaces {
            Some(addresses) => addresses.clone(),
            None => interface_addresses(),
        };
        let mut rtc = Rtc::builder().build(Instant::now());
        let mut sockets = Vec::new();
        let mut host_candidates = Vec::new();
        for ip in addresses {
            let socket = match UdpSocket::bind(SocketAddr::new(ip, 0)).await {
                Ok(socket) => socket,
                Err(error) => {
                    tracing::debug!(%ip, %error, "cannot bind a WebRTC socket");
                    continue;
                }
            };
            let address = socket.local_addr()?;
            match Candidate::host(address, "udp") {
                Ok(candidate) => {
                    rtc.add_local_candidate(candidate);
                    host_candidates.push(WireCandidate {
                        kind: CandidateType::Host,
                        address,
                    });
                    sockets.push(Arc::new(socket));
                }
                Err(error) => tracing::debug!(%address, %error, "not a usable host candidate"),
            }
            if host_candidates.len() == CANDIDATES_MAX / 2 {
                break;
            }
        }
        if sockets.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                "no interface address to bind a WebRTC socket on",
            ));
        }
        let fingerprint = rtc.direct_api().local_dtls_fingerprint().clone();
        let creds = rtc.direct_api().local_ice_credentials();
        let local = IceParams {
            ufrag: creds.ufrag,
            password: creds.pass,
            fingerprint: fingerprint_bytes(&fingerprint).ok_or_else(|| {
                std::io::Error::other("str0m made a DTLS fingerprint that is not SHA-256")
            })?,
        };
        rtc.direct_api().set_ice_controlling(dialer);
        let (control_tx, control_rx) = mpsc::channel(16);
        let (report_tx, report_rx) = mpsc::channel(16);
        let (stream, app) = tokio::io::duplex(DUPLEX_BYTES);
        let task = Task {
            rtc,
            sockets,
            dialer,
            stun_servers: config.stun_servers.clone(),
            control: control_rx,
            reports: report_tx,
            remote_candidates: 0,
            channel: None,
        };
        tokio::spawn(task.run(app));
        Ok(Driver {
            control: control_tx,
            reports: report_rx,
            local,
            host_candidates,
            stream,
        })
    }
}

/// A str0m fingerprint as our 32 bytes, if it is SHA-256.
fn fingerprint_bytes(fingerprint: &Fingerprint) -> Option<[u8; FINGERPRINT_BYTES]> {
    if !fingerprint.hash_func.eq_ignore_ascii_case("sha-256") {
        return None;
    }
    fingerprint.bytes.as_slice().try_into().ok()
}

/// Interface addresses a host candidate can use: every interface that is up
/// but loopback and IPv4 link-local (str0m refuses those) and IPv6
/// link-local (it would need a scope); loopback alone if nothing else.
fn interface_addresses() -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|interfaces| {
            interfaces
                .into_iter()
                .map(|interface| interface.ip())
                .filter(|ip| {
                    !ip.is_loopback()
                        && match ip {
                            IpAddr::V4(v4) => !v4.is_link_local(),
                            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                        }
                })
                .collect()
        })
        .unwrap_or_default();
    if addresses.is_empty() {
        addresses.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    addresses
}

struct Datagram {
    data: Vec<u8>,
    source: SocketAddr,
    destination: SocketAddr,
}

struct Task {
    rtc: Rtc,
    sockets: Vec<Arc<UdpSocket>>,
    dialer: bool,
    stun_servers: Vec<SocketAddr>,
    control: mpsc::Receiver<Control>,
    reports: mpsc::Sender<Report>,
    remote_candidates: usize,
    channel: Option<ChannelId>,
}

/// A STUN binding request we sent and wait an answer for.
struct StunAsk {
    transaction: [u8; 12],
    request: Vec<u8>,
    socket: usize,
    server: SocketAddr,
    sent: usize,
    next: tokio::time::Instant,
}

impl Task {
    async fn run(mut self, app: DuplexStream) {
        let (packets, readers) = self.spawn_readers();
        let outcome = self.drive(app, packets).await;
        tracing::debug!(?outcome, "WebRTC: driver ended");
        for reader in readers {
            reader.abort();
        }
        let _ = self.reports.send(Report::Ended(outcome.err())).await;
    }

    fn spawn_readers(&self) -> (mpsc::Receiver<Datagram>, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(DATAGRAMS_QUEUED);
        let readers = self
            .sockets
            .iter()
            .map(|socket| {
                let socket = Arc::clone(socket);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(destination) = socket.local_addr() else {
                        return;
                    };
                    let mut buffer = vec![0u8; 2048];
                    loop {
                        let (length, source) = match socket.recv_from(&mut buffer).await {
                            Ok(received) => received,
                            // An ICMP error surfaced on a later receive.
                            Err(_) => continue,
                        };
                        let datagram = Datagram {
                            data: buffer[..length].to_vec(),
                            source,
                            destination,
                        };
                        if tx.send(datagram).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        (rx, readers)
    }

    fn stun_asks(&self) -> Vec<StunAsk> {
        let now = tokio::time::Instant::now();
        let mut asks = Vec::new();
        for (index, socket) in self.sockets.iter().enumerate() {
            let Ok(local) = socket.local_addr() else {
                continue;
            };
            for server in &self.stun_servers {
                if server.is_ipv4() != local.is_ipv4() || local.ip().is_loopback() {
                    continue;
                }
                let (transaction, request) = peers_signal::stun::binding_request();
                asks.push(StunAsk {
                    transaction,
                    request,
                    socket: index,
                    server: *server,
                    sent: 0,
                    next: now,
                });
            }
        }
        asks
    }

    async fn drive(
        &mut self,
        app: DuplexStream,
        mut packets: mpsc::Receiver<Datagram>,
    ) -> Result<(), String> {
        let (mut app_read, mut app_write) = tokio::io::split(app);
        let mut asks = self.stun_asks();
        let mut received: VecDeque<Vec<u8>> = VecDeque::new();
        let mut received_bytes = 0usize;
        let mut outgoing: Option<Vec<u8>> = None;
        let mut app_closed = false;
        let mut control_closed = false;
        let mut open = false;
        let mut last_remote: Option<SocketAddr> = None;
        let mut disconnected_since: Option<tokio::time::Instant> = None;
        let mut read_buffer = vec![0u8; CHANNEL_MESSAGE_BYTES_MAX];
        loop {
            let timeout = loop {
                match self.rtc.poll_output().map_err(|error| error.to_string())? {
                    Output::Timeout(at) => break at,
                    Output::Transmit(transmit) => self.transmit(transmit).await,
                    Output::Event(event) => match event {
                        Event::ChannelOpen(id, _) if Some(id) == self.channel => {
                            if let Some(mut channel) = self.rtc.channel(id) {
                                channel.set_buffered_amount_low_threshold(CHANNEL_BUFFERED_LOW);
                            }
                            open = true;
                            let remote = last_remote.unwrap_or_else(|| {
                                SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)
                            });
                            let _ = self.reports.send(Report::Open { remote }).await;
                        }
                        Event::ChannelData(data) if Some(data.id) == self.channel => {
                            received_bytes += data.data.len();
                            received.push_back(data.data);
                        }
                        Event::ChannelClose(id) if Some(id) == self.channel => {
                            tracing::debug!("WebRTC: the peer closed the channel");
                            deliver_rest(&mut app_write, received).await;
                            return Ok(());
                        }
                        Event::Closed => {
                            tracing::debug!("WebRTC: the connection closed");
                            deliver_rest(&mut app_write, received).await;
                            return Ok(());
                        }
                        Event::IceConnectionStateChange(state) => {
                            tracing::debug!(?state, "ICE state");
                            match state {
                                IceConnectionState::Disconnected => {
                                    disconnected_since
                                        .get_or_insert_with(tokio::time::Instant::now);
                                }
                                _ => disconnected_since = None,
                            }
                        }
                        _ => {}
                    },
                }
            };
            if let Some(since) = disconnected_since
                && since.elapsed() >= DISCONNECTED_GRACE
            {
                return Err(format!(
                    "the WebRTC path stayed disconnected for {} s",
                    DISCONNECTED_GRACE.as_secs()
                ));
            }
            let channel = self.channel;
            let mut buffered = 0;
            if let (true, Some(id)) = (open, channel)
                && let Some(mut channel) = self.rtc.channel(id)
            {
                if let Some(chunk) = &outgoing
                    && channel
                        .write(true, chunk)
                        .map_err(|error| error.to_string())?
                {
                    outgoing = None;
                    // Written: let str0m packetize it before waiting.
                    continue;
                }
                buffered = channel.buffered_amount();
            }
            if app_closed && outgoing.is_none() && buffered == 0 {
                // Everything the application wrote is acknowledged.
                self.hang_up().await;
                return Ok(());
            }
            let read_app =
                open && outgoing.is_none() && !app_closed && buffered < CHANNEL_BUFFERED_HIGH;
            let stun_at = asks.iter().map(|ask| ask.next).min();
            let rtc_at = tokio::time::Instant::from_std(timeout);
            tokio::select! {
                datagram = packets.recv(), if received_bytes < RECEIVED_PENDING_MAX => {
                    let Some(datagram) = datagram else {
                        return Err("the WebRTC sockets closed".to_owned());
                    };
                    if self.stun_answer(&datagram, &mut asks).await {
                        continue;
                    }
                    let Ok(receive) = Receive::new(
                        Protocol::Udp,
                        datagram.source,
                        datagram.destination,
                        &datagram.data,
                    ) else {
                        continue;
                    };
                    let input = Input::Receive(Instant::now(), receive);
                    if self.rtc.accepts(&input) {
                        last_remote = Some(datagram.source);
                        if let Err(error) = self.rtc.handle_input(input) {
                            // Off-path garbage must not end the connection.
                            tracing::debug!(%error, "WebRTC input refused");
                        }
                    }
                }
                read = app_read.read(&mut read_buffer), if read_app => match read {
                    Ok(0) | Err(_) => app_closed = true,
                    Ok(length) => outgoing = Some(read_buffer[..length].to_vec()),
                },
                written = app_write.write(received.front().map_or(&[][..], Vec::as_slice)), if !received.is_empty() => {
                    match written {
                        Ok(length) => {
                            received_bytes -= length;
                            if let Some(front) = received.front_mut() {
                                if length >= front.len() {
                                    received.pop_front();
                                } else {
                                    front.drain(..length);
                                }
                            }
                        }
                        // The application dropped its end: hang up, so
                        // that the peer learns it now and not only when
                        // its ICE checks go unanswered.
                        Err(_) => {
                            self.hang_up().await;
                            return Ok(());
                        }
                    }
                }
                command = self.control.recv(), if !control_closed => match command {
                    Some(Control::Remote { ice, candidates }) => self.set_remote(ice, candidates)?,
                    Some(Control::Candidates(candidates)) => self.add_remote(candidates),
                    None if !open => return Err("the attempt was abandoned".to_owned()),
                    None => control_closed = true,
                },
                () = sleep_until_some(stun_at) => self.resend_stun(&mut asks).await,
                () = tokio::time::sleep_until(rtc_at) => {
                    self.rtc
                        .handle_input(Input::Timeout(Instant::now()))
                        .map_err(|error| error.to_string())?;
                }
            }
        }
    }

    /// Applies the other side's parameters: credentials, fingerprint,
    /// candidates; then starts DTLS and SCTP and the data channel.
    fn set_remote(&mut self, ice: IceParams, candidates: Vec<WireCandidate>) -> Result<(), String> {
        if self.channel.is_some() {
            return Err("the peer sent its parameters twice".to_owned());
        }
        let mut api = self.rtc.direct_api();
        api.set_remote_ice_credentials(IceCreds {
            ufrag: ice.ufrag,
            pass: ice.password,
        });
        api.set_remote_fingerprint(Fingerprint {
            hash_func: "sha-256".to_owned(),
            bytes: ice.fingerprint.to_vec(),
        });
        api.start_dtls(self.dialer)
            .map_err(|error| error.to_string())?;
        api.start_sctp(self.dialer);
        let id = api.create_data_channel(ChannelConfig {
            label: CHANNEL_LABEL.to_owned(),
            negotiated: Some(CHANNEL_STREAM),
            ..ChannelConfig::default()
        });
        self.channel = Some(id);
        self.add_remote(candidates);
        Ok(())
    }

    fn add_remote(&mut self, candidates: Vec<WireCandidate>) {
        for candidate in candidates {
            if self.remote_candidates >= REMOTE_CANDIDATES_MAX {
                tracing::debug!("more remote candidates than we keep; ignored");
                return;
            }
            let made = match candidate.kind {
                CandidateType::Host => Candidate::host(candidate.address, "udp"),
                CandidateType::ServerReflexive => {
                    Candidate::server_reflexive(candidate.address, candidate.address, "udp")
                }
            };
            match made {
                Ok(made) => {
                    self.rtc.add_remote_candidate(made);
                    self.remote_candidates += 1;
                }
                Err(error) => tracing::debug!(%error, "remote candidate refused"),
            }
        }
    }

    /// Sends one datagram from the socket str0m chose.
    async fn transmit(&self, transmit: str0m::net::Transmit) {
        let local = |socket: &&Arc<UdpSocket>| socket.local_addr().ok();
        let socket = self
            .sockets
            .iter()
            .find(|socket| local(socket) == Some(transmit.source))
            .or_else(|| {
                // A source we hold no socket for (str0m names a candidate's
                // base; a server-reflexive one's is ours): the first socket
                // of the same family.
                tracing::debug!(source = %transmit.source, "no socket at this source");
                self.sockets.iter().find(|socket| {
                    local(socket)
                        .is_some_and(|address| address.is_ipv4() == transmit.destination.is_ipv4())
                })
            });
        let Some(socket) = socket else { return };
        if let Err(error) = socket
            .send_to(&transmit.contents, transmit.destination)
            .await
        {
            tracing::debug!(destination = %transmit.destination, %error, "WebRTC send failed");
        }
    }

    /// Closes the data channel, then the whole connection, and sends the
    /// closes. The peer learns of it from whichever arrives: the channel's
    /// stream reset, the SCTP shutdown or the DTLS close_notify (each ends
    /// its driver). Without them it would learn only when its ICE checks
    /// had gone unanswered for ~20 s.
    async fn hang_up(&mut self) {
        tracing::debug!("WebRTC: hanging up");
        if let Some(id) = self.channel {
            self.rtc.direct_api().close_data_channel(id);
        }
        self.flush().await;
        // SCTP sends the stream reset on its next tick: give it one.
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.flush().await;
        // str0m sends the SCTP shutdown and the DTLS close_notify without
        // waiting for replies: what `flush` drains is all there is to send.
        if let Err(error) = self.rtc.close() {
            tracing::debug!(%error, "WebRTC: closing the connection");
        }
        self.flush().await;
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.flush().await;
    }

    /// Sends what str0m still has to send (a close), without waiting for more.
    async fn flush(&mut self) {
        while let Ok(output) = self.rtc.poll_output() {
            match output {
                Output::Transmit(transmit) => self.transmit(transmit).await,
                Output::Event(_) => {}
                Output::Timeout(_) => return,
            }
        }
    }

    /// If `datagram` answers one of our STUN binding requests, adds the
    /// server-reflexive candidate it reveals and reports it.
    async fn stun_answer(&mut self, datagram: &Datagram, asks: &mut Vec<StunAsk>) -> bool {
        let Some(position) = asks.iter().position(|ask| {
            ask.server == datagram.source
                && self.sockets[ask.socket]
                    .local_addr()
                    .is_ok_and(|local| local == datagram.destination)
        }) else {
            return false;
        };
        let Some(mapped) =
            peers_signal::stun::binding_response(&datagram.data, &asks[position].transaction)
        else {
            return false;
        };
        asks.remove(position);
        let base = datagram.destination;
        if mapped == base {
            // Not behind a NAT: the host candidate is the same address.
            return true;
        }
        match Candidate::server_reflexive(mapped, base, "udp") {
            Ok(candidate) => {
                self.rtc.add_local_candidate(candidate);
                tracing::debug!(%mapped, %base, "server-reflexive candidate");
                let found = vec![WireCandidate {
                    kind: CandidateType::ServerReflexive,
                    address: mapped,
                }];
                let _ = self.reports.send(Report::LocalCandidates(found)).await;
            }
            Err(error) => tracing::debug!(%mapped, %error, "server-reflexive candidate refused"),
        }
        true
    }

    /// Sends the requests that are due; a request sent
    /// `STUN_RETRIES.len()` times is given up [`STUN_ANSWER_WAIT`] later.
    async fn resend_stun(&mut self, asks: &mut Vec<StunAsk>) {
        let now = tokio::time::Instant::now();
        asks.retain(|ask| ask.next > now || ask.sent < STUN_RETRIES.len());
        for ask in asks.iter_mut().filter(|ask| ask.next <= now) {
            let socket = &self.sockets[ask.socket];
            let _ = socket.send_to(&ask.request, ask.server).await;
            ask.sent += 1;
            ask.next = now
                + STUN_RETRIES
                    .get(ask.sent)
                    .copied()
                    .unwrap_or(STUN_ANSWER_WAIT);
        }
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long the application gets to take what arrived before the peer
/// closed (at most `RECEIVED_PENDING_MAX` bytes).
const DELIVER_REST_WAIT: Duration = Duration::from_secs(10);

/// The peer closed the channel: hands the application what arrived before
/// the close and is still queued (the peer's last messages, often its
/// farewell), then ends the application's stream. Without this a session
/// that finished on the peer's side could end with `Closed` on ours.
async fn deliver_rest(
    app_write: &mut tokio::io::WriteHalf<DuplexStream>,
    received: VecDeque<Vec<u8>>,
) {
    let deliver = async {
        for chunk in received {
            app_write.write_all(&chunk).await?;
        }
        app_write.shutdown().await
    };
    // An error means the application dropped its end; a timeout, that it
    // stopped reading: either way there is no one left to deliver to.
    let _ = tokio::time::timeout(DELIVER_REST_WAIT, deliver).await;
}

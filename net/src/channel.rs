//! [`SecureChannel`]: a mutually authenticated, encrypted, framed connection
//! between two identities (docs/PROTOCOL.md "Secure channel").

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use peers_engine::{Author, Identity};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

use crate::error::{Error, Result, Stage};
use crate::frame::{self, FRAME_BYTES_MAX, FrameCodec, HANDSHAKE_FRAME_BYTES_MAX};
use crate::handshake::{self, HANDSHAKE_HASH_BYTES, Local};

/// Default limit for the whole handshake, TCP connect included.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for one [`SecureChannel::recv`]. The live sync protocol keeps
/// an idle connection open by sending a keepalive more often than this.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit for one [`SecureChannel::send`] (a peer that stops reading
/// must not stall us for ever).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeouts of a channel. `Default` gives the named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelOptions {
    /// See [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`RECV_TIMEOUT`].
    pub recv_timeout: Duration,
    /// See [`SEND_TIMEOUT`].
    pub send_timeout: Duration,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            recv_timeout: RECV_TIMEOUT,
            send_timeout: SEND_TIMEOUT,
        }
    }
}

/// An established channel: the peer proved `remote_author`, and every
/// message is encrypted and authenticated with Noise transport keys.
///
/// # Invariants
/// - `remote` is the ed25519 key whose signature over the peer's Noise static
///   key verified during the handshake.
/// - The codec's limit is [`FRAME_BYTES_MAX`] (it was the handshake limit
///   until the handshake finished).
/// - `sent` and `received` count the Noise messages sealed and opened: they
///   are the next nonces of each direction.
/// - After any error the cipher state may be out of step: drop the channel.
pub struct SecureChannel<S> {
    wire: Framed<S, FrameCodec>,
    transport: Arc<snow::StatelessTransportState>,
    sent: u64,
    received: u64,
    sent_bytes: u64,
    received_bytes: u64,
    remote: Author,
    version: u16,
    handshake_hash: [u8; HANDSHAKE_HASH_BYTES],
    options: ChannelOptions,
}

/// The sending half of a [`SecureChannel`] (see [`SecureChannel::split`]).
pub struct SendHalf<S> {
    sink: SplitSink<Framed<S, FrameCodec>, Bytes>,
    transport: Arc<snow::StatelessTransportState>,
    sent: u64,
    sent_bytes: u64,
    remote: Author,
    options: ChannelOptions,
}

/// The receiving half of a [`SecureChannel`] (see [`SecureChannel::split`]).
pub struct RecvHalf<S> {
    stream: SplitStream<Framed<S, FrameCodec>>,
    transport: Arc<snow::StatelessTransportState>,
    received: u64,
    received_bytes: u64,
    remote: Author,
    options: ChannelOptions,
}

impl<S> std::fmt::Debug for SendHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendHalf")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for RecvHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvHalf")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for SecureChannel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureChannel")
            .field("remote", &self.remote)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl SecureChannel<TcpStream> {
    /// Dials `address` and runs the handshake as initiator. With `expected`
    /// set, a peer that proves any other key is refused with
    /// [`Error::UnexpectedKey`] before we reveal our own identity.
    pub async fn connect(
        address: impl ToSocketAddrs,
        identity: &Identity,
        expected: Option<Author>,
        options: ChannelOptions,
    ) -> Result<SecureChannel<TcpStream>> {
        let timeout = options.handshake_timeout;
        let dial = async {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok::<_, Error>(stream)
        };
        let stream = within(Stage::Handshake, timeout, dial).await?;
        SecureChannel::initiate(stream, identity, expected, options).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SecureChannel<S> {
    /// Runs the handshake as initiator over a connected stream.
    pub async fn initiate(
        stream: S,
        identity: &Identity,
        expected: Option<Author>,
        options: ChannelOptions,
    ) -> Result<SecureChannel<S>> {
        let local = Local {
            identity,
            proof_signer: identity,
        };
        Self::establish(stream, local, Some(expected), options, &[]).await
    }

    /// Runs the handshake as responder over an accepted stream. The caller
    /// decides from [`SecureChannel::remote_author`] whom to serve.
    pub async fn accept(
        stream: S,
        identity: &Identity,
        options: ChannelOptions,
    ) -> Result<SecureChannel<S>> {
        let local = Local {
            identity,
            proof_signer: identity,
        };
        Self::establish(stream, local, None, options, &[]).await
    }

    /// [`SecureChannel::initiate`] on a transport that binds `binding` into
    /// the handshake (docs/PROTOCOL.md "WebRTC transport").
    pub(crate) async fn initiate_bound(
        stream: S,
        identity: &Identity,
        expected: Option<Author>,
        options: ChannelOptions,
        binding: &[u8],
    ) -> Result<SecureChannel<S>> {
        let local = Local {
            identity,
            proof_signer: identity,
        };
        Self::establish(stream, local, Some(expected), options, binding).await
    }

    /// [`SecureChannel::accept`] on a transport that binds `binding` into
    /// the handshake.
    pub(crate) async fn accept_bound(
        stream: S,
        identity: &Identity,
        options: ChannelOptions,
        binding: &[u8],
    ) -> Result<SecureChannel<S>> {
        let local = Local {
            identity,
            proof_signer: identity,
        };
        Self::establish(stream, local, None, options, binding).await
    }

    /// `initiator` is `Some(expected)` for the initiator, `None` for the
    /// responder.
    async fn establish(
        stream: S,
        local: Local<'_>,
        initiator: Option<Option<Author>>,
        options: ChannelOptions,
        binding: &[u8],
    ) -> Result<SecureChannel<S>> {
        let mut wire = Framed::new(stream, FrameCodec::new(HANDSHAKE_FRAME_BYTES_MAX));
        let run = async {
            match initiator {
                Some(expected) => handshake::initiate(&mut wire, local, expected, binding).await,
                None => handshake::respond(&mut wire, local, binding).await,
            }
        };
        let established = within(Stage::Handshake, options.handshake_timeout, run).await?;
        wire.codec_mut().set_frame_bytes_max(FRAME_BYTES_MAX);
        Ok(SecureChannel {
            wire,
            transport: Arc::new(established.transport),
            sent: 0,
            received: 0,
            sent_bytes: 0,
            received_bytes: 0,
            remote: established.remote,
            version: established.version,
            handshake_hash: established.handshake_hash,
            options,
        })
    }

    /// The peer's verified identity.
    pub fn remote_author(&self) -> Author {
        self.remote
    }

    /// The channel protocol version both sides agreed on.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Noise's handshake hash: both sides hold the same value, no other
    /// connection has it, and nobody outside the connection learns it. The
    /// sync protocol binds its proof of the database id to it (PROTOCOL.md
    /// "Hello").
    pub fn handshake_hash(&self) -> [u8; HANDSHAKE_HASH_BYTES] {
        self.handshake_hash
    }

    /// Encrypts and sends one message of at most [`crate::MESSAGE_BYTES_MAX`]
    /// bytes.
    pub async fn send(&mut self, message: &[u8]) -> Result<()> {
        let direction = Direction {
            transport: &self.transport,
            nonce: &mut self.sent,
            bytes: &mut self.sent_bytes,
            options: &self.options,
        };
        send_on(&mut self.wire, direction, message).await
    }

    /// Receives and decrypts one message. [`Error::Closed`] if the peer
    /// closed the connection between messages.
    pub async fn recv(&mut self) -> Result<Vec<u8>> {
        let direction = Direction {
            transport: &self.transport,
            nonce: &mut self.received,
            bytes: &mut self.received_bytes,
            options: &self.options,
        };
        recv_on(&mut self.wire, direction).await
    }

    /// Bytes written to the stream since the handshake (frame headers
    /// included).
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Bytes read from the stream since the handshake (frame headers
    /// included).
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Splits the channel so that one task sends while another receives
    /// (a live sync connection must read while it writes, or two peers that
    /// both send a lot would block each other on full socket buffers).
    pub fn split(self) -> (SendHalf<S>, RecvHalf<S>) {
        let (sink, stream) = self.wire.split();
        let send = SendHalf {
            sink,
            transport: Arc::clone(&self.transport),
            sent: self.sent,
            sent_bytes: self.sent_bytes,
            remote: self.remote,
            options: self.options,
        };
        let recv = RecvHalf {
            stream,
            transport: self.transport,
            received: self.received,
            received_bytes: self.received_bytes,
            remote: self.remote,
            options: self.options,
        };
        (send, recv)
    }

    /// The underlying stream, for tests that misbehave on purpose.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn test_write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let stream = self.wire.get_mut();
        stream.write_all(bytes).await?;
        Ok(stream.flush().await?)
    }

    /// Like [`SecureChannel::initiate`], but the identity proof is signed by
    /// `proof_signer` while claiming `identity`: a forger, for tests.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn test_initiate_forged(
        stream: S,
        identity: &Identity,
        proof_signer: &Identity,
        options: ChannelOptions,
    ) -> Result<SecureChannel<S>> {
        let local = Local {
            identity,
            proof_signer,
        };
        Self::establish(stream, local, Some(None), options, &[]).await
    }

    /// Like [`SecureChannel::accept`], with a forged proof (see
    /// [`SecureChannel::test_initiate_forged`]).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn test_accept_forged(
        stream: S,
        identity: &Identity,
        proof_signer: &Identity,
        options: ChannelOptions,
    ) -> Result<SecureChannel<S>> {
        let local = Local {
            identity,
            proof_signer,
        };
        Self::establish(stream, local, None, options, &[]).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SendHalf<S> {
    /// See [`SecureChannel::send`] (both are safe to cancel).
    pub async fn send(&mut self, message: &[u8]) -> Result<()> {
        let direction = Direction {
            transport: &self.transport,
            nonce: &mut self.sent,
            bytes: &mut self.sent_bytes,
            options: &self.options,
        };
        send_on(&mut self.sink, direction, message).await
    }

    /// See [`SecureChannel::sent_bytes`].
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// The peer's verified identity.
    pub fn remote_author(&self) -> Author {
        self.remote
    }

    /// Flushes and shuts down the write side (the peer reads EOF after the
    /// last message).
    pub async fn close(&mut self) -> Result<()> {
        let sink = &mut self.sink;
        within(Stage::Send, self.options.send_timeout, sink.close()).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RecvHalf<S> {
    /// See [`SecureChannel::recv`].
    pub async fn recv(&mut self) -> Result<Vec<u8>> {
        let direction = Direction {
            transport: &self.transport,
            nonce: &mut self.received,
            bytes: &mut self.received_bytes,
            options: &self.options,
        };
        recv_on(&mut self.stream, direction).await
    }

    /// See [`SecureChannel::received_bytes`].
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// The peer's verified identity.
    pub fn remote_author(&self) -> Author {
        self.remote
    }
}

/// One direction of a channel's state: the cipher, its next nonce, and
/// the bytes counted so far.
struct Direction<'a> {
    transport: &'a snow::StatelessTransportState,
    nonce: &'a mut u64,
    bytes: &'a mut u64,
    options: &'a ChannelOptions,
}

/// Seals and sends one message on a whole channel's or a send half's sink.
/// Safe to cancel: the message is sealed (and its nonces used) only once
/// the sink has room for it, so a send dropped while waiting leaves no gap
/// in the nonce sequence, and a message handed to the sink goes out with
/// the next send or close.
async fn send_on<T>(sink: &mut T, direction: Direction<'_>, message: &[u8]) -> Result<()>
where
    T: futures_util::Sink<Bytes, Error = Error> + Unpin,
{
    let Direction {
        transport,
        nonce,
        bytes,
        options,
    } = direction;
    let send = async {
        std::future::poll_fn(|context| sink.poll_ready_unpin(context)).await?;
        let frame = frame::seal(transport, nonce, message)?;
        let size = wire_bytes(&frame);
        sink.start_send_unpin(frame)?;
        std::future::poll_fn(|context| sink.poll_flush_unpin(context)).await?;
        Ok(size)
    };
    *bytes += within(Stage::Send, options.send_timeout, send).await?;
    Ok(())
}

/// Receives and opens one message from a whole channel's or a receive
/// half's stream.
async fn recv_on<T>(stream: &mut T, direction: Direction<'_>) -> Result<Vec<u8>>
where
    T: futures_util::Stream<Item = Result<bytes::BytesMut>> + Unpin,
{
    let next = async { stream.next().await.ok_or(Error::Closed)? };
    let frame = within(Stage::Recv, direction.options.recv_timeout, next).await?;
    *direction.bytes += wire_bytes(&frame);
    frame::open(direction.transport, direction.nonce, &frame)
}

/// A frame's size on the wire: its body and the 4-byte length header.
fn wire_bytes(frame: &[u8]) -> u64 {
    u64::try_from(frame.len()).unwrap_or(u64::MAX) + 4
}

/// Runs `work` with a time limit, reporting which stage ran out.
async fn within<T>(
    stage: Stage,
    limit: Duration,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            stage,
            after_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

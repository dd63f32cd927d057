//! The wire protocol between a client and `peers keys serve`: frames over
//! TCP, each a message of a tag and a few length-prefixed fields
//! (docs/SERVICES.md "Managed keys: wire protocol").

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};

/// The largest frame body, bytes (the largest message is under 600).
pub const FRAME_BYTES_MAX: usize = 4096;
/// The most fields a message has.
pub const FIELDS_MAX: usize = 8;
/// A session MAC, bytes.
pub const MAC_BYTES: usize = 32;

const MAC_KEY_CONTEXT: &str = "peers-keys v1 session mac key";

/// Message tags. Client to server below 64; server to client from 64.
pub mod tag {
    /// `[user, password request, recovery request]`
    pub const REGISTER_START: u8 = 1;
    /// `[password upload, password envelope, recovery upload, recovery envelope]`
    pub const REGISTER_FINISH: u8 = 2;
    /// `[user, slot, credential request]`
    pub const LOGIN_START: u8 = 3;
    /// `[credential finalization]`
    pub const LOGIN_FINISH: u8 = 4;
    /// `[registration request, mac]` (in a session)
    pub const PASSWORD_START: u8 = 5;
    /// `[registration upload, envelope, mac]` (in a session)
    pub const PASSWORD_FINISH: u8 = 6;
    /// `[mac]` (in a session)
    pub const FORGET: u8 = 7;
    /// `[password response, recovery response]`
    pub const REGISTERED_START: u8 = 64;
    /// `[]`
    pub const REGISTERED: u8 = 65;
    /// `[credential response]`
    pub const CHALLENGE: u8 = 66;
    /// `[envelope, mac]`
    pub const ENVELOPE: u8 = 67;
    /// `[registration response, mac]`
    pub const PASSWORD_RESPONSE: u8 = 68;
    /// `[mac]`
    pub const DONE: u8 = 69;
    /// `[code, retry after (u32 LE seconds)]`
    pub const ERROR: u8 = 70;
}

/// Error codes in an `ERROR` message.
pub mod code {
    /// Wrong user or password (the same for a user that does not exist).
    pub const LOGIN_FAILED: u8 = 1;
    /// Rate-limited; the second field says for how long.
    pub const LIMITED: u8 = 2;
    /// Registration of a taken name.
    pub const TAKEN: u8 = 3;
    /// A message out of order or malformed.
    pub const BAD_REQUEST: u8 = 4;
    /// The server failed (its store).
    pub const INTERNAL: u8 = 5;
}

/// A decoded message: its tag and fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// What it is ([`tag`]).
    pub tag: u8,
    /// Its fields, in order.
    pub fields: Vec<Vec<u8>>,
}

impl Message {
    /// A message from its tag and fields.
    pub fn new(tag: u8, fields: Vec<Vec<u8>>) -> Message {
        Message { tag, fields }
    }

    /// The body: tag, field count, then each field as u16 LE length and bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = vec![self.tag, self.fields.len() as u8];
        for field in &self.fields {
            body.extend_from_slice(&(field.len() as u16).to_le_bytes());
            body.extend_from_slice(field);
        }
        body
    }

    /// Decodes a body, refusing anything but the exact layout.
    pub fn decode(body: &[u8]) -> Result<Message> {
        let bad = Error::Protocol;
        if body.len() > FRAME_BYTES_MAX {
            return Err(bad("frame over the limit"));
        }
        let (&tag, rest) = body.split_first().ok_or(bad("empty frame"))?;
        let (&count, mut rest) = rest.split_first().ok_or(bad("no field count"))?;
        if usize::from(count) > FIELDS_MAX {
            return Err(bad("too many fields"));
        }
        let mut fields = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let (length, after) = rest.split_at_checked(2).ok_or(bad("truncated field"))?;
            let length = usize::from(u16::from_le_bytes([length[0], length[1]]));
            let (field, after) = after
                .split_at_checked(length)
                .ok_or(bad("truncated field"))?;
            fields.push(field.to_vec());
            rest = after;
        }
        if !rest.is_empty() {
            return Err(bad("bytes after the last field"));
        }
        Ok(Message { tag, fields })
    }

    /// The fields, if the message has this tag and this many of them.
    pub fn expect(self, tag: u8, count: usize) -> Result<Vec<Vec<u8>>> {
        if self.tag == tag::ERROR {
            return Err(error_from(&self.fields));
        }
        if self.tag != tag || self.fields.len() != count {
            return Err(Error::Protocol("an unexpected message"));
        }
        Ok(self.fields)
    }

    /// An `ERROR` message.
    pub fn error(code: u8, retry_after_secs: u32) -> Message {
        Message::new(
            tag::ERROR,
            vec![vec![code], retry_after_secs.to_le_bytes().to_vec()],
        )
    }
}

/// The client's error for an `ERROR` message's fields.
fn error_from(fields: &[Vec<u8>]) -> Error {
    let code = fields.first().and_then(|field| field.first().copied());
    let retry_after_secs = fields
        .get(1)
        .and_then(|field| <[u8; 4]>::try_from(field.as_slice()).ok())
        .map_or(0, u32::from_le_bytes);
    match code {
        Some(code::LOGIN_FAILED) => Error::LoginFailed,
        Some(code::LIMITED) => Error::Limited { retry_after_secs },
        Some(code::TAKEN) => Error::Taken(String::new()),
        Some(code::BAD_REQUEST) => Error::Refused("a request out of order or malformed"),
        Some(code::INTERNAL) => Error::Refused("the server failed; try again later"),
        _ => Error::Refused("an unknown error code"),
    }
}

/// Reads one frame (u32 LE length, then the body) and decodes it.
pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Message> {
    let mut length = [0u8; 4];
    reader.read_exact(&mut length).await?;
    let length = u32::from_le_bytes(length) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(Error::Protocol("frame over the limit"));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    Message::decode(&body)
}

/// Writes one message as a frame.
pub async fn write<W: AsyncWrite + Unpin>(writer: &mut W, message: &Message) -> Result<()> {
    let body = message.encode();
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Who sent a MACed message.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// The client.
    ToServer = 1,
    /// The server.
    ToClient = 2,
}

/// A logged-in session's MAC state: the key from OPAQUE's session key, and
/// a counter per direction (a replayed or reordered message fails).
pub struct Session {
    key: [u8; 32],
    sent: u64,
    received: u64,
    outgoing: Direction,
}

impl Session {
    /// From OPAQUE's session key, for the side that sends `outgoing`.
    pub fn new(session_key: &[u8], outgoing: Direction) -> Session {
        Session {
            key: blake3::derive_key(MAC_KEY_CONTEXT, session_key),
            sent: 0,
            received: 0,
            outgoing,
        }
    }

    fn mac(&self, direction: Direction, counter: u64, message: &Message) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&[direction as u8]);
        hasher.update(&counter.to_le_bytes());
        hasher.update(&message.encode());
        *hasher.finalize().as_bytes()
    }

    /// Appends the MAC field to `message`.
    pub fn seal(&mut self, mut message: Message) -> Message {
        let mac = self.mac(self.outgoing, self.sent, &message);
        self.sent += 1;
        message.fields.push(mac.to_vec());
        message
    }

    /// Checks and removes the last field, the MAC.
    pub fn open(&mut self, mut message: Message) -> Result<Message> {
        let incoming = match self.outgoing {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        };
        let mac = message.fields.pop().ok_or(Error::Unauthenticated)?;
        let expected = self.mac(incoming, self.received, &message);
        // blake3's Hash compares in constant time.
        let matches = <[u8; 32]>::try_from(mac.as_slice())
            .is_ok_and(|mac| blake3::Hash::from_bytes(mac) == blake3::Hash::from_bytes(expected));
        if !matches {
            return Err(Error::Unauthenticated);
        }
        self.received += 1;
        Ok(message)
    }
}

/// Accepts connections on `listener` until it fails, serving each on its
/// own task with `serve`, at most `connections_max` at once (the next
/// accept waits for a slot). What a connection's `serve` returns is logged
/// at debug level as `what`: one client's failure is not the server's. The
/// one accept loop of the services on this framing (keys, registry).
pub async fn accept_bounded<S, F, E>(
    listener: TcpListener,
    connections_max: usize,
    what: &'static str,
    serve: S,
) -> std::io::Result<()>
where
    S: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(connections_max));
    loop {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(|_| std::io::Error::other("the connection semaphore closed"))?;
        let (stream, peer) = listener.accept().await?;
        let connection = serve(stream, peer);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "{what} connection ended");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message decodes to itself; every truncation and trailing byte is refused.
    #[test]
    fn round_trip_and_exact_layout() {
        let message = Message::new(3, vec![b"alice".to_vec(), vec![1], vec![9; 96]]);
        let body = message.encode();
        assert_eq!(Message::decode(&body).expect("decodes"), message);
        for cut in 0..body.len() {
            assert!(Message::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(Message::decode(&longer).is_err());
        assert!(Message::decode(&[1, 9]).is_err(), "too many fields");
    }

    /// A sealed message opens once, in order, on the other side only.
    #[test]
    fn session_mac_detects_alteration_and_replay() {
        let mut client = Session::new(&[5; 64], Direction::ToServer);
        let mut server = Session::new(&[5; 64], Direction::ToClient);
        let first = client.seal(Message::new(tag::FORGET, vec![]));
        assert!(server.open(first.clone()).is_ok());
        assert!(server.open(first.clone()).is_err(), "a replay fails");
        let second = client.seal(Message::new(tag::FORGET, vec![]));
        let mut altered = second.clone();
        altered.tag = tag::PASSWORD_START;
        assert!(server.open(altered).is_err());
        // A message the server sealed does not open as the client's.
        let mut other = Session::new(&[5; 64], Direction::ToClient);
        let reflected = other.seal(Message::new(tag::FORGET, vec![]));
        assert!(server.open(reflected).is_err());
        assert!(server.open(second).is_ok());
        let mut wrong_key = Session::new(&[6; 64], Direction::ToClient);
        let third = client.seal(Message::new(tag::FORGET, vec![]));
        assert!(wrong_key.open(third).is_err());
    }
}

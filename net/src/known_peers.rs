//! The peers a node has met, kept in the database directory so that
//! `peers --db DIR peers` can list them from another process.
//!
//! Format of `DIR/known-peers` (text, one peer per line, newest first, at
//! most [`KNOWN_PEERS_MAX`] lines):
//! `{author: 64 hex} {address: ip:port} {how: dialed|inbound|discovered|webrtc} {last_seen_ms: decimal}`.
//! It is a convenience, not a credential: a line that does not parse is
//! skipped with a warning, and the file is rewritten whole (via a temporary
//! file and a rename) on every change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use peers_engine::Author;

/// File name inside the database directory.
pub const KNOWN_PEERS_FILE: &str = "known-peers";
/// Most peers remembered; the least recently seen are forgotten first.
pub const KNOWN_PEERS_MAX: usize = 256;

/// How a peer was met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// We dialed it and it proved its key.
    Dialed,
    /// It dialed us and proved its key (the address is its outgoing one).
    Inbound,
    /// LAN discovery announced it, and it proved its key when dialed.
    Discovered,
    /// Over WebRTC, through a signaling server, either way (the address is
    /// where its packets came from).
    WebRtc,
}

impl How {
    fn as_str(self) -> &'static str {
        match self {
            How::Dialed => "dialed",
            How::Inbound => "inbound",
            How::Discovered => "discovered",
            How::WebRtc => "webrtc",
        }
    }

    fn parse(text: &str) -> Option<How> {
        match text {
            "dialed" => Some(How::Dialed),
            "inbound" => Some(How::Inbound),
            "discovered" => Some(How::Discovered),
            "webrtc" => Some(How::WebRtc),
            _ => None,
        }
    }
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One remembered peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownPeer {
    /// Its key.
    pub author: Author,
    /// Where it was met.
    pub address: SocketAddr,
    /// How.
    pub how: How,
    /// When, in ms since the Unix epoch.
    pub last_seen_ms: u64,
}

/// The list, newest first.
#[derive(Debug, Default)]
pub(crate) struct KnownPeers {
    peers: Vec<KnownPeer>,
}

impl KnownPeers {
    /// Reads the file in `dir`; a missing or unreadable file is an empty list.
    pub(crate) fn load(dir: &Path) -> KnownPeers {
        KnownPeers {
            peers: known_peers(dir),
        }
    }

    pub(crate) fn list(&self) -> Vec<KnownPeer> {
        self.peers.clone()
    }

    /// Puts `(author, how)` first with `address` and the current time, and
    /// saves the file.
    pub(crate) fn record(
        &mut self,
        dir: &Path,
        author: Author,
        address: SocketAddr,
        how: How,
    ) -> std::io::Result<()> {
        self.peers
            .retain(|peer| !(peer.author == author && peer.how == how));
        let last_seen_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        self.peers.insert(
            0,
            KnownPeer {
                author,
                address,
                how,
                last_seen_ms,
            },
        );
        self.peers.truncate(KNOWN_PEERS_MAX);
        let mut text = String::new();
        for peer in &self.peers {
            text.push_str(&format!(
                "{} {} {} {}\n",
                peer.author, peer.address, peer.how, peer.last_seen_ms
            ));
        }
        let path = file(dir);
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, &path)
    }
}

fn file(dir: &Path) -> PathBuf {
    dir.join(KNOWN_PEERS_FILE)
}

/// The peers remembered in database directory `dir`, newest first.
pub fn known_peers(dir: &Path) -> Vec<KnownPeer> {
    let path = file(dir);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let mut peers = Vec::new();
    for (number, line) in text.lines().enumerate().take(KNOWN_PEERS_MAX) {
        match parse_line(line) {
            Some(peer) => peers.push(peer),
            None => {
                tracing::warn!(path = %path.display(), line = number + 1, "skipping a line that does not parse")
            }
        }
    }
    peers
}

fn parse_line(line: &str) -> Option<KnownPeer> {
    let mut parts = line.split(' ');
    let author = Author::from_hex(parts.next()?).ok()?;
    let address = parts.next()?.parse().ok()?;
    let how = How::parse(parts.next()?)?;
    let last_seen_ms = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(KnownPeer {
        author,
        address,
        how,
        last_seen_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `record` writes, `known_peers` reads back, newest first, one
    /// line per (author, how); junk lines are skipped.
    #[test]
    fn round_trip_and_junk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut known = KnownPeers::load(dir.path());
        let a = Author([1; 32]);
        let b = Author([2; 32]);
        let address: SocketAddr = "127.0.0.1:7001".parse().expect("address");
        known
            .record(dir.path(), a, address, How::Dialed)
            .expect("saves");
        known
            .record(dir.path(), b, address, How::Inbound)
            .expect("saves");
        known
            .record(dir.path(), a, address, How::Dialed)
            .expect("saves");
        let read = known_peers(dir.path());
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].author, a);
        assert_eq!(read[1].how, How::Inbound);
        let path = dir.path().join(KNOWN_PEERS_FILE);
        let mut text = std::fs::read_to_string(&path).expect("reads");
        text.push_str("not a peer\n");
        std::fs::write(&path, text).expect("writes");
        assert_eq!(known_peers(dir.path()).len(), 2);
    }
}

//! LAN discovery: devices of the same database on one subnet find each other
//! through mDNS / DNS-SD (RFC 6762, RFC 6763), with no configuration.
//!
//! # What is announced
//!
//! Each node registers one service instance of [`SERVICE_TYPE`] on every
//! interface, and a new one every [`DISCOVERY_EPOCH_SECONDS`].
//! docs/PROTOCOL.md "LAN discovery" specifies it byte for byte:
//!
//! - the instance and host name: the hex of a random nonce, new with each
//!   registration;
//! - the SRV port: the node's TCP sync listener;
//! - A/AAAA records: the interface addresses, which any packet reveals anyway;
//! - three TXT properties: [`TXT_KEY_NONCE`], [`TXT_KEY_TOKEN`] (a MAC of the
//!   nonce under a key derived from the database id and the epoch) and
//!   [`TXT_KEY_AUTHOR`] (the node's public key, encrypted under that key).
//!
//! # Why it leaks nothing
//!
//! Without the database id an observer sees random bytes that change every
//! epoch: it cannot tell which database, nor which key, nor link today's
//! announcement of a device to yesterday's. A member derives the key, checks
//! the token and recovers the author. No change, field, name or host name of
//! the machine is announced.
//!
//! # What a discovery is worth
//!
//! A hint, never a credential: anyone on the link can replay an announcement
//! with other addresses. The caller dials the [`Discovered`] addresses, the
//! secure channel's identity proof (pinned to [`Discovered::author`]) is
//! what authenticates the peer, and a node updates a peer's address when it
//! announces again and stops dialing one that keeps failing.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use mdns_sd::{ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use peers_engine::{Author, DatabaseId};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// The DNS-SD service type every Peers node registers and browses.
pub const SERVICE_TYPE: &str = "_peers._tcp.local.";

/// blake3 `derive_key` context of [`discovery_key`].
pub const DISCOVERY_KEY_CONTEXT: &str = "peers 2026-12-02 lan discovery key v2";

/// An announcement's key changes every this many seconds of Unix time; a
/// node re-registers with a fresh nonce when it does, and accepts the
/// previous and the next epoch too (clock skew).
pub const DISCOVERY_EPOCH_SECONDS: u64 = 3600;

/// Length of an announcement's nonce and of its token.
pub const DISCOVERY_TOKEN_BYTES: usize = 16;

/// TXT key of the announcement's random nonce, 32 hex digits.
pub const TXT_KEY_NONCE: &str = "nonce";

/// TXT key of the announcement's token, 32 hex digits: it tells members of
/// the database that the announcement is theirs.
pub const TXT_KEY_TOKEN: &str = "token";

/// TXT key of the announcing node's public key, encrypted: 64 hex digits.
pub const TXT_KEY_AUTHOR: &str = "author";

/// Discoveries waiting for [`Discovery::next`]; more are dropped (and logged)
/// until the caller catches up. mDNS repeats announcements, so a dropped
/// one comes back.
pub const DISCOVERIES_QUEUED_MAX: usize = 64;

/// How often the forwarding thread checks that its [`Discovery`] still exists
/// while no mDNS event arrives.
const FORWARD_POLL_INTERVAL: Duration = Duration::from_millis(500);

// The instance name, the nonce's hex digits, is one DNS label.
const _: () = assert!(DISCOVERY_TOKEN_BYTES * 2 <= 63);

/// The key of `database`'s announcements during `epoch` (Unix seconds /
/// [`DISCOVERY_EPOCH_SECONDS`]): `blake3::derive_key(DISCOVERY_KEY_CONTEXT,
/// database id (32) || epoch (u64 LE))`.
pub fn discovery_key(database: &DatabaseId, epoch: u64) -> [u8; 32] {
    let mut material = [0u8; 40];
    material[..32].copy_from_slice(&database.0);
    material[32..].copy_from_slice(&epoch.to_le_bytes());
    blake3::derive_key(DISCOVERY_KEY_CONTEXT, &material)
}

/// The current discovery epoch.
fn current_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / DISCOVERY_EPOCH_SECONDS)
}

/// A node of the same database that announced itself on the link. A hint to
/// dial, not a proof: see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The key the node announced; pin it when dialing.
    pub author: Author,
    /// Its sync listener on each address it announced, sorted. IPv6
    /// link-local addresses carry the scope of the interface they came from.
    pub addresses: Vec<SocketAddr>,
}

/// Announces this node on the LAN and reports the other nodes of the same
/// database. Dropping it (or [`Discovery::shutdown`]) withdraws the
/// announcement.
///
/// A node may be reported more than once (mDNS re-resolves on changes and
/// repeats); callers skip peers they are already connected to.
pub struct Discovery {
    daemon: ServiceDaemon,
    /// The registered instance's full name, to unregister it (the
    /// forwarding thread replaces it every epoch).
    fullname: Arc<Mutex<String>>,
    discovered: mpsc::Receiver<Discovered>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Starts announcing `author` with sync listener `port` for `database`,
    /// and browsing for other nodes of `database`. Needs no tokio runtime:
    /// mDNS runs on its own thread, and another forwards what it finds.
    ///
    /// # Errors
    /// [`Error::Discovery`] if the mDNS daemon cannot start or refuses the
    /// service; [`Error::Io`] if the forwarding thread cannot be spawned.
    /// A link without multicast is not an error here: nothing is found.
    pub fn start(database: DatabaseId, author: Author, port: u16) -> Result<Discovery> {
        let daemon = ServiceDaemon::new().map_err(Error::Discovery)?;
        let own = Own {
            database,
            author,
            port,
        };
        let epoch = current_epoch();
        let info = own.service_info(epoch)?;
        let fullname = Arc::new(Mutex::new(info.get_fullname().to_owned()));
        // From here on, dropping `discovery` unregisters and stops the daemon.
        let (sender, discovered) = mpsc::channel(DISCOVERIES_QUEUED_MAX);
        let discovery = Discovery {
            daemon,
            fullname: Arc::clone(&fullname),
            discovered,
        };
        let events = discovery
            .daemon
            .browse(SERVICE_TYPE)
            .map_err(Error::Discovery)?;
        discovery.daemon.register(info).map_err(Error::Discovery)?;
        let announcer = Announcer {
            daemon: discovery.daemon.clone(),
            fullname,
            epoch,
            own,
        };
        thread::Builder::new()
            .name("peers-discovery".to_owned())
            .spawn(move || forward(events, sender, announcer))?;
        Ok(discovery)
    }

    /// The next node of the same database, never this node itself. `None`
    /// once discovery has stopped (the mDNS daemon exited). Cancel safe.
    pub async fn next(&mut self) -> Option<Discovered> {
        self.discovered.recv().await
    }

    /// Withdraws the announcement (mDNS goodbye packets) and stops browsing.
    /// Dropping does the same.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        // Commands run in order: the goodbye goes out before the daemon exits.
        let fullname = self
            .fullname
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Err(error) = self.daemon.unregister(&fullname) {
            tracing::debug!(%error, %fullname, "discovery: unregister failed");
        }
        if let Err(error) = self.daemon.shutdown() {
            tracing::debug!(%error, "discovery: mDNS daemon shutdown failed");
        }
    }
}

/// What this node announces.
struct Own {
    database: DatabaseId,
    author: Author,
    port: u16,
}

impl Own {
    /// The service this node registers during `epoch`, under a fresh nonce:
    /// see the module doc and PROTOCOL.md.
    fn service_info(&self, epoch: u64) -> Result<ServiceInfo> {
        let mut nonce = [0u8; DISCOVERY_TOKEN_BYTES];
        getrandom::fill(&mut nonce).map_err(|error| {
            Error::Io(std::io::Error::other(format!(
                "the operating system's random source: {error}"
            )))
        })?;
        let announcement = Announcement::seal(&self.database, epoch, nonce, &self.author);
        service_info(&announcement, self.port)
    }
}

/// The service for `announcement`: instance and host named after its nonce.
fn service_info(announcement: &Announcement, port: u16) -> Result<ServiceInfo> {
    let nonce_hex = hex::encode(announcement.nonce);
    // A host name of our own: the machine's would tell who owns the device.
    let host = format!("{nonce_hex}.local.");
    let token_hex = hex::encode(announcement.token);
    let sealed_hex = hex::encode(announcement.sealed_author);
    let properties = [
        (TXT_KEY_NONCE, nonce_hex.as_str()),
        (TXT_KEY_TOKEN, token_hex.as_str()),
        (TXT_KEY_AUTHOR, sealed_hex.as_str()),
    ];
    let info = ServiceInfo::new(SERVICE_TYPE, &nonce_hex, &host, "", port, &properties[..])
        .map_err(Error::Discovery)?;
    Ok(info.enable_addr_auto())
}

/// The forwarding thread's half of the announcement: it re-registers under a
/// new nonce when the epoch changes.
struct Announcer {
    daemon: ServiceDaemon,
    fullname: Arc<Mutex<String>>,
    epoch: u64,
    own: Own,
}

impl Announcer {
    fn rotate_if_due(&mut self) {
        let epoch = current_epoch();
        if epoch == self.epoch {
            return;
        }
        let info = match self.own.service_info(epoch) {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "discovery: new announcement refused");
                return;
            }
        };
        let mut fullname = self
            .fullname
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = self.daemon.unregister(&fullname);
        *fullname = info.get_fullname().to_owned();
        if let Err(error) = self.daemon.register(info) {
            tracing::debug!(%error, "discovery: re-registering failed");
        }
        self.epoch = epoch;
    }

    /// The service as a [`Discovered`] if it is another node of our
    /// database (announced in this epoch or the one before or after).
    fn accept(&self, service: &ResolvedService) -> Option<Discovered> {
        let properties: Vec<(&str, Option<&[u8]>)> = service
            .txt_properties
            .iter()
            .map(|property| (property.key(), property.val()))
            .collect();
        let announcement = match Announcement::parse(&properties) {
            Ok(announcement) => announcement,
            Err(fault) => {
                tracing::debug!(fullname = %service.fullname, %fault, "discovery: ignored");
                return None;
            }
        };
        let Some(author) = announcement.open(&self.own.database, current_epoch()) else {
            tracing::debug!(fullname = %service.fullname, "discovery: not ours, ignored");
            return None;
        };
        if author == self.own.author {
            return None;
        }
        let mut addresses: Vec<SocketAddr> = service
            .addresses
            .iter()
            .map(|address| socket_address(address, service.port))
            .collect();
        addresses.sort_unstable();
        if addresses.is_empty() {
            tracing::debug!(fullname = %service.fullname, "discovery: no address, ignored");
            return None;
        }
        Some(Discovered { author, addresses })
    }
}

/// Runs on its own thread until the daemon stops or the [`Discovery`] is
/// dropped: turns resolved services into [`Discovered`], bounded, and
/// re-announces every epoch.
fn forward(
    events: mdns_sd::Receiver<ServiceEvent>,
    sender: mpsc::Sender<Discovered>,
    mut announcer: Announcer,
) {
    loop {
        announcer.rotate_if_due();
        let event = match events.recv_timeout(FORWARD_POLL_INTERVAL) {
            Ok(event) => event,
            Err(mdns_sd::RecvTimeoutError::Timeout) if !sender.is_closed() => continue,
            Err(_) => return,
        };
        let ServiceEvent::ServiceResolved(service) = event else {
            continue;
        };
        let Some(discovered) = announcer.accept(&service) else {
            continue;
        };
        match sender.try_send(discovered) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(dropped)) => {
                tracing::debug!(
                    author = %dropped.author,
                    max = DISCOVERIES_QUEUED_MAX,
                    "discovery: queue full, dropped"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

fn socket_address(address: &ScopedIp, port: u16) -> SocketAddr {
    match (address, address.to_ip_addr()) {
        (ScopedIp::V6(scoped), IpAddr::V6(ip)) if ip.is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scoped.scope_id().index))
        }
        (_, ip) => SocketAddr::new(ip, port),
    }
}

/// The TXT properties of an announcement: a nonce, a token that members
/// recognise, and the author encrypted under the epoch's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announcement {
    nonce: [u8; DISCOVERY_TOKEN_BYTES],
    token: [u8; DISCOVERY_TOKEN_BYTES],
    sealed_author: [u8; 32],
}

impl Announcement {
    /// `author`'s announcement for `database` during `epoch`:
    /// `token = keyed_hash(key, "token" || nonce)[0..16]`,
    /// `sealed_author = author XOR keyed_hash(key, "author" || nonce)`, with
    /// `key = discovery_key(database, epoch)`.
    pub(crate) fn seal(
        database: &DatabaseId,
        epoch: u64,
        nonce: [u8; DISCOVERY_TOKEN_BYTES],
        author: &Author,
    ) -> Announcement {
        let key = discovery_key(database, epoch);
        let (token, pad) = Self::token_and_pad(&key, &nonce);
        let mut sealed_author = author.0;
        for (byte, pad) in sealed_author.iter_mut().zip(pad) {
            *byte ^= pad;
        }
        Announcement {
            nonce,
            token,
            sealed_author,
        }
    }

    /// The author, if the announcement is of `database` in the epoch
    /// before, at or after `epoch`.
    pub(crate) fn open(&self, database: &DatabaseId, epoch: u64) -> Option<Author> {
        [epoch.wrapping_sub(1), epoch, epoch.wrapping_add(1)]
            .into_iter()
            .find_map(|epoch| {
                let key = discovery_key(database, epoch);
                let (token, pad) = Self::token_and_pad(&key, &self.nonce);
                (token == self.token).then(|| {
                    let mut author = self.sealed_author;
                    for (byte, pad) in author.iter_mut().zip(pad) {
                        *byte ^= pad;
                    }
                    Author(author)
                })
            })
    }

    fn token_and_pad(
        key: &[u8; 32],
        nonce: &[u8; DISCOVERY_TOKEN_BYTES],
    ) -> ([u8; DISCOVERY_TOKEN_BYTES], [u8; 32]) {
        let mut token_input = b"token".to_vec();
        token_input.extend_from_slice(nonce);
        let mut pad_input = b"author".to_vec();
        pad_input.extend_from_slice(nonce);
        let mut token = [0u8; DISCOVERY_TOKEN_BYTES];
        token.copy_from_slice(
            &blake3::keyed_hash(key, &token_input).as_bytes()[..DISCOVERY_TOKEN_BYTES],
        );
        (token, *blake3::keyed_hash(key, &pad_input).as_bytes())
    }
}

/// Why an announcement's TXT properties were refused (logged, never
/// returned: a bad announcement is someone else's problem).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TxtFault {
    Missing {
        key: &'static str,
    },
    NoValue {
        key: &'static str,
    },
    NotHex {
        key: &'static str,
    },
    WrongLength {
        key: &'static str,
        digits: usize,
        expected: usize,
    },
}

impl std::fmt::Display for TxtFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxtFault::Missing { key } => write!(f, "TXT key {key:?} missing"),
            TxtFault::NoValue { key } => write!(f, "TXT key {key:?} has no value"),
            TxtFault::NotHex { key } => write!(f, "TXT key {key:?} is not hex"),
            TxtFault::WrongLength {
                key,
                digits,
                expected,
            } => write!(
                f,
                "TXT key {key:?} has {digits} hex digits, expected {expected}"
            ),
        }
    }
}

impl Announcement {
    /// Reads [`TXT_KEY_NONCE`], [`TXT_KEY_TOKEN`] and [`TXT_KEY_AUTHOR`]
    /// from `(key, value)` pairs. Keys compare case-insensitively and the
    /// first occurrence counts (RFC 6763 section 6.4); unknown keys are
    /// ignored so a later version can add some.
    fn parse(properties: &[(&str, Option<&[u8]>)]) -> Result<Announcement, TxtFault> {
        let nonce = hex_property::<DISCOVERY_TOKEN_BYTES>(properties, TXT_KEY_NONCE)?;
        let token = hex_property::<DISCOVERY_TOKEN_BYTES>(properties, TXT_KEY_TOKEN)?;
        let sealed_author = hex_property::<32>(properties, TXT_KEY_AUTHOR)?;
        Ok(Announcement {
            nonce,
            token,
            sealed_author,
        })
    }
}

/// The first value of `key` as exactly `N` bytes in hex.
fn hex_property<const N: usize>(
    properties: &[(&str, Option<&[u8]>)],
    key: &'static str,
) -> Result<[u8; N], TxtFault> {
    let (_, value) = properties
        .iter()
        .find(|(found, _)| found.eq_ignore_ascii_case(key))
        .ok_or(TxtFault::Missing { key })?;
    let value = value.ok_or(TxtFault::NoValue { key })?;
    if value.len() != N * 2 {
        return Err(TxtFault::WrongLength {
            key,
            digits: value.len(),
            expected: N * 2,
        });
    }
    let mut bytes = [0u8; N];
    hex::decode_to_slice(value, &mut bytes).map_err(|_| TxtFault::NotHex { key })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed vector, computed with the Python `blake3` package from the bytes
    /// PROTOCOL.md lists: changing the context, the layout or the truncation
    /// breaks every deployed node's discovery, so it must show up here.
    #[test]
    fn announcement_vector() {
        let key = discovery_key(&DatabaseId([7u8; 32]), 5);
        assert_eq!(
            hex::encode(key),
            "91cc1ce0852df1bccbc56632cb8b2895e0747794ff7a82b15394840ffb394ac1",
        );
        let announcement =
            Announcement::seal(&DatabaseId([7u8; 32]), 5, [1u8; 16], &Author([2u8; 32]));
        assert_eq!(
            hex::encode(announcement.token),
            "d04dd1627d728a5c8e73c705eae43fe3"
        );
        assert_eq!(
            hex::encode(announcement.sealed_author),
            "ae6d96b35d206e7281eb45b5051d2f19b87afc7f98a45096478f2e632dea2355"
        );
    }

    /// A member opens announcements of this epoch and the next and previous
    /// ones; another database, or an epoch further away, opens nothing.
    /// Two announcements of one key (another nonce, another epoch) share no
    /// TXT value, so a non-member cannot link them.
    #[test]
    fn announcements_open_for_members_only_and_do_not_link() {
        let database = DatabaseId([7u8; 32]);
        let author = Author([2u8; 32]);
        let first = Announcement::seal(&database, 100, [1u8; 16], &author);
        for epoch in [99, 100, 101] {
            assert_eq!(first.open(&database, epoch), Some(author), "epoch {epoch}");
        }
        assert_eq!(first.open(&database, 102), None);
        assert_eq!(first.open(&DatabaseId([8u8; 32]), 100), None);
        let later = Announcement::seal(&database, 101, [3u8; 16], &author);
        assert_eq!(later.open(&database, 101), Some(author));
        assert_ne!(first.nonce, later.nonce);
        assert_ne!(first.token, later.token);
        assert_ne!(first.sealed_author, later.sealed_author);
        assert_ne!(first.sealed_author, author.0);
        // Same nonce, next epoch: still unrelated values.
        let same_nonce = Announcement::seal(&database, 101, [1u8; 16], &author);
        assert_ne!(first.token, same_nonce.token);
        assert_ne!(first.sealed_author, same_nonce.sealed_author);
    }

    fn good() -> (String, String, String) {
        (
            hex::encode([1u8; 16]),
            hex::encode([4u8; 16]),
            hex::encode([2u8; 32]),
        )
    }

    /// TXT `(key, value)` pairs as text.
    type Pairs<'a> = &'a [(&'a str, Option<&'a str>)];

    fn parse(pairs: Pairs<'_>) -> Result<Announcement, TxtFault> {
        let pairs: Vec<(&str, Option<&[u8]>)> = pairs
            .iter()
            .map(|(key, value)| (*key, value.map(str::as_bytes)))
            .collect();
        Announcement::parse(&pairs)
    }

    #[test]
    fn txt_parses_and_ignores_unknown_keys() {
        let (nonce, token, author) = good();
        let parsed = parse(&[
            ("future", Some("x")),
            ("AUTHOR", Some(&author)),
            ("Nonce", Some(&nonce)),
            ("token", Some(&token)),
            ("token", Some("garbage after the first occurrence")),
        ]);
        assert_eq!(
            parsed,
            Ok(Announcement {
                nonce: [1u8; 16],
                token: [4u8; 16],
                sealed_author: [2u8; 32],
            })
        );
    }

    #[test]
    fn txt_malformed_is_refused() {
        let (nonce, token, author) = good();
        let cases: [(Pairs<'_>, TxtFault); 6] = [
            (
                &[("nonce", Some(&nonce)), ("author", Some(&author))],
                TxtFault::Missing { key: TXT_KEY_TOKEN },
            ),
            (
                &[("token", Some(&token)), ("author", Some(&author))],
                TxtFault::Missing { key: TXT_KEY_NONCE },
            ),
            (
                &[
                    ("nonce", Some(&nonce)),
                    ("token", None),
                    ("author", Some(&author)),
                ],
                TxtFault::NoValue { key: TXT_KEY_TOKEN },
            ),
            (
                &[
                    ("nonce", Some(&nonce)),
                    ("token", Some(&token[..30])),
                    ("author", Some(&author)),
                ],
                TxtFault::WrongLength {
                    key: TXT_KEY_TOKEN,
                    digits: 30,
                    expected: 32,
                },
            ),
            (
                &[
                    ("nonce", Some(&nonce)),
                    ("token", Some(&token)),
                    ("author", Some(&"zz".repeat(32))),
                ],
                TxtFault::NotHex {
                    key: TXT_KEY_AUTHOR,
                },
            ),
            (
                &[
                    ("nonce", Some(&nonce)),
                    ("token", Some(&token)),
                    ("author", Some(&format!("{author}00"))),
                ],
                TxtFault::WrongLength {
                    key: TXT_KEY_AUTHOR,
                    digits: 66,
                    expected: 64,
                },
            ),
        ];
        for (pairs, fault) in cases {
            assert_eq!(parse(pairs), Err(fault), "{pairs:?}");
        }
    }

    #[test]
    fn instance_name_is_the_nonce() {
        let announcement =
            Announcement::seal(&DatabaseId([7u8; 32]), 5, [0xab; 16], &Author([1; 32]));
        let info = service_info(&announcement, 4242).expect("valid service");
        assert_eq!(
            info.get_fullname(),
            format!("{}.{SERVICE_TYPE}", "ab".repeat(16))
        );
        assert_eq!(info.get_port(), 4242);
        assert_eq!(info.get_properties().len(), 3);
    }
}

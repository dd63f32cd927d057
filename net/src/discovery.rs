//! LAN discovery: devices of the same database on one subnet find each other
//! through mDNS / DNS-SD (RFC 6762, RFC 6763), with no configuration.
//!
//! # What is announced
//!
//! Each node registers one service instance of [`SERVICE_TYPE`] on every
//! interface. docs/PROTOCOL.md "LAN discovery" specifies it byte for byte:
//!
//! - the instance and host name: 32 hex digits of the node's [`Author`] and 16
//!   of its discovery token (so the same key in two databases gives two names);
//! - the SRV port: the node's TCP sync listener;
//! - A/AAAA records: the interface addresses, which any packet reveals anyway;
//! - two TXT properties: [`TXT_KEY_TOKEN`], the [`discovery_token`] of the
//!   database, and [`TXT_KEY_AUTHOR`], the node's public key, both hex.
//!
//! # Why it leaks nothing else
//!
//! The token is a keyed one-way function (blake3 `derive_key`) of the
//! [`DatabaseId`]: an observer learns that two nodes share a database, not
//! which database, and cannot turn the token back into the id that the sync
//! protocol asks for. The public key is what the secure channel proves
//! anyway. No change, field, name or host name of the machine is announced:
//! the mDNS host name is derived from the key and token too.
//!
//! # What a discovery is worth
//!
//! A hint, never a credential: anyone on the link can announce any token and
//! any key. The caller dials the [`Discovered`] addresses, and the secure
//! channel's identity proof (pinned to [`Discovered::author`]) is what
//! authenticates the peer.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::thread;
use std::time::Duration;

use mdns_sd::{ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use peers_engine::{Author, DatabaseId};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// The DNS-SD service type every Peers node registers and browses.
pub const SERVICE_TYPE: &str = "_peers._tcp.local.";

/// blake3 `derive_key` context of [`discovery_token`].
pub const DISCOVERY_TOKEN_CONTEXT: &str = "peers 2026-11-28 lan discovery token v1";

/// Length of a [`discovery_token`]: the first bytes of the derived key.
pub const DISCOVERY_TOKEN_BYTES: usize = 16;

/// TXT key of the database's discovery token, 32 hex digits.
pub const TXT_KEY_TOKEN: &str = "token";

/// TXT key of the announcing node's public key, 64 hex digits.
pub const TXT_KEY_AUTHOR: &str = "author";

/// Discoveries waiting for [`Discovery::next`]; more are dropped (and logged)
/// until the caller catches up. mDNS repeats announcements, so a dropped
/// one comes back.
pub const DISCOVERIES_QUEUED_MAX: usize = 64;

/// How often the forwarding thread checks that its [`Discovery`] still exists
/// while no mDNS event arrives.
const FORWARD_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Hex digits of the author and of the token in the instance name; together
/// with the `-` they must fit one DNS label (63 bytes).
const INSTANCE_AUTHOR_HEX_DIGITS: usize = 32;
const INSTANCE_TOKEN_HEX_DIGITS: usize = 16;
const _: () = assert!(INSTANCE_AUTHOR_HEX_DIGITS + 1 + INSTANCE_TOKEN_HEX_DIGITS <= 63);
const _: () = assert!(INSTANCE_TOKEN_HEX_DIGITS <= DISCOVERY_TOKEN_BYTES * 2);

/// The token a node of `database` announces: the first
/// [`DISCOVERY_TOKEN_BYTES`] of `blake3::derive_key(DISCOVERY_TOKEN_CONTEXT,
/// database)`. It names the database on the link without revealing its id.
pub fn discovery_token(database: &DatabaseId) -> [u8; DISCOVERY_TOKEN_BYTES] {
    let key = blake3::derive_key(DISCOVERY_TOKEN_CONTEXT, &database.0);
    let mut token = [0u8; DISCOVERY_TOKEN_BYTES];
    token.copy_from_slice(&key[..DISCOVERY_TOKEN_BYTES]);
    token
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
    /// The registered instance's full name, to unregister it.
    fullname: String,
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
        let token = discovery_token(&database);
        let daemon = ServiceDaemon::new().map_err(Error::Discovery)?;
        let info = service_info(&token, &author, port)?;
        let fullname = info.get_fullname().to_owned();
        // From here on, dropping `discovery` unregisters and stops the daemon.
        let (sender, discovered) = mpsc::channel(DISCOVERIES_QUEUED_MAX);
        let discovery = Discovery {
            daemon,
            fullname,
            discovered,
        };
        let events = discovery
            .daemon
            .browse(SERVICE_TYPE)
            .map_err(Error::Discovery)?;
        discovery.daemon.register(info).map_err(Error::Discovery)?;
        let filter = Filter { token, own: author };
        thread::Builder::new()
            .name("peers-discovery".to_owned())
            .spawn(move || forward(events, sender, filter))?;
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
        if let Err(error) = self.daemon.unregister(&self.fullname) {
            tracing::debug!(%error, fullname = %self.fullname, "discovery: unregister failed");
        }
        if let Err(error) = self.daemon.shutdown() {
            tracing::debug!(%error, "discovery: mDNS daemon shutdown failed");
        }
    }
}

/// The service this node registers: see the module doc and PROTOCOL.md.
fn service_info(
    token: &[u8; DISCOVERY_TOKEN_BYTES],
    author: &Author,
    port: u16,
) -> Result<ServiceInfo> {
    let token_hex = hex::encode(token);
    let author_hex = author.to_hex();
    let instance = instance_name(&token_hex, &author_hex);
    // A host name of our own: the machine's would tell who owns the device.
    let host = format!("{instance}.local.");
    let properties = [
        (TXT_KEY_TOKEN, token_hex.as_str()),
        (TXT_KEY_AUTHOR, author_hex.as_str()),
    ];
    let info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, "", port, &properties[..])
        .map_err(Error::Discovery)?;
    Ok(info.enable_addr_auto())
}

/// `<32 hex digits of the author>-<16 hex digits of the token>`.
fn instance_name(token_hex: &str, author_hex: &str) -> String {
    assert_eq!(token_hex.len(), DISCOVERY_TOKEN_BYTES * 2);
    assert_eq!(author_hex.len(), 64);
    format!(
        "{}-{}",
        &author_hex[..INSTANCE_AUTHOR_HEX_DIGITS],
        &token_hex[..INSTANCE_TOKEN_HEX_DIGITS]
    )
}

/// What the forwarding thread keeps: our database's token and our own key.
struct Filter {
    token: [u8; DISCOVERY_TOKEN_BYTES],
    own: Author,
}

/// Runs on its own thread until the daemon stops or the [`Discovery`] is
/// dropped: turns resolved services into [`Discovered`], bounded.
fn forward(
    events: mdns_sd::Receiver<ServiceEvent>,
    sender: mpsc::Sender<Discovered>,
    filter: Filter,
) {
    loop {
        let event = match events.recv_timeout(FORWARD_POLL_INTERVAL) {
            Ok(event) => event,
            Err(mdns_sd::RecvTimeoutError::Timeout) if !sender.is_closed() => continue,
            Err(_) => return,
        };
        let ServiceEvent::ServiceResolved(service) = event else {
            continue;
        };
        let Some(discovered) = filter.accept(&service) else {
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

impl Filter {
    /// The service as a [`Discovered`] if it is another node of our database.
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
        if announcement.token != self.token {
            tracing::debug!(fullname = %service.fullname, "discovery: other database, ignored");
            return None;
        }
        if announcement.author == self.own {
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
        Some(Discovered {
            author: announcement.author,
            addresses,
        })
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

/// The TXT properties of an announcement, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Announcement {
    token: [u8; DISCOVERY_TOKEN_BYTES],
    author: Author,
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
    /// Reads [`TXT_KEY_TOKEN`] and [`TXT_KEY_AUTHOR`] from `(key, value)`
    /// pairs. Keys compare case-insensitively and the first occurrence
    /// counts (RFC 6763 section 6.4); unknown keys are ignored so a later
    /// version can add some.
    fn parse(properties: &[(&str, Option<&[u8]>)]) -> Result<Announcement, TxtFault> {
        let token = hex_property::<DISCOVERY_TOKEN_BYTES>(properties, TXT_KEY_TOKEN)?;
        let author = hex_property::<32>(properties, TXT_KEY_AUTHOR)?;
        Ok(Announcement {
            token,
            author: Author(author),
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

    /// Fixed vector: changing the context or the truncation breaks every
    /// deployed node's discovery, so it must show up here.
    #[test]
    fn token_vector() {
        let token = discovery_token(&DatabaseId([7u8; 32]));
        assert_eq!(hex::encode(token), "5c2c0dba5f2b34be8cc6859ebb41dff2");
        let full = blake3::derive_key(DISCOVERY_TOKEN_CONTEXT, &[7u8; 32]);
        assert_eq!(token[..], full[..DISCOVERY_TOKEN_BYTES]);
        assert_ne!(token, discovery_token(&DatabaseId([8u8; 32])));
    }

    fn good() -> (String, String) {
        (hex::encode([1u8; 16]), hex::encode([2u8; 32]))
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
        let (token, author) = good();
        let parsed = parse(&[
            ("future", Some("x")),
            ("AUTHOR", Some(&author)),
            ("token", Some(&token)),
            ("token", Some("garbage after the first occurrence")),
        ]);
        assert_eq!(
            parsed,
            Ok(Announcement {
                token: [1u8; 16],
                author: Author([2u8; 32]),
            })
        );
    }

    #[test]
    fn txt_malformed_is_refused() {
        let (token, author) = good();
        let cases: [(Pairs<'_>, TxtFault); 6] = [
            (
                &[("author", Some(&author))],
                TxtFault::Missing { key: TXT_KEY_TOKEN },
            ),
            (
                &[("token", Some(&token))],
                TxtFault::Missing {
                    key: TXT_KEY_AUTHOR,
                },
            ),
            (
                &[("token", None), ("author", Some(&author))],
                TxtFault::NoValue { key: TXT_KEY_TOKEN },
            ),
            (
                &[("token", Some(&token[..30])), ("author", Some(&author))],
                TxtFault::WrongLength {
                    key: TXT_KEY_TOKEN,
                    digits: 30,
                    expected: 32,
                },
            ),
            (
                &[("token", Some(&token)), ("author", Some(&"zz".repeat(32)))],
                TxtFault::NotHex {
                    key: TXT_KEY_AUTHOR,
                },
            ),
            (
                &[
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
    fn instance_name_fits_a_label() {
        let token = discovery_token(&DatabaseId([7u8; 32]));
        let info = service_info(&token, &Author([0xab; 32]), 4242).expect("valid service");
        let instance = instance_name(&hex::encode(token), &Author([0xab; 32]).to_hex());
        assert_eq!(instance.len(), 49);
        assert!(instance.starts_with(&"ab".repeat(16)));
        assert_eq!(info.get_fullname(), format!("{instance}.{SERVICE_TYPE}"));
        assert_eq!(info.get_port(), 4242);
        assert_eq!(info.get_properties().len(), 2);
    }
}

//! Invites by ticket (docs/PROTOCOL.md "Invites"): a short string (and a QR
//! code of it) that carries what a new device needs to join a database: the
//! database id, the inviter's key, how to reach the inviter, and a one-time
//! secret. The joiner proves the secret to the inviter inside the secure
//! channel, bound to that channel's handshake, and the inviter's node grants
//! the role with a signed `Grant` before the first sync.
//!
//! The inviter keeps its open invites in `DIR/invites` (text, one invite per
//! line, mode 0600 where the platform has modes):
//! `{id: 32 hex} {secret: 64 hex} {role} {expires_ms} {uses_left}`.
//! The file is rewritten whole, through a temporary file and a rename, and
//! a use is written down before the grant it pays for.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peers_engine::{Author, DatabaseId, Db, Role};

/// The ticket layout's version (its first byte).
pub const TICKET_VERSION: u8 = 1;
/// What every ticket's text starts with.
pub const TICKET_PREFIX: &str = "PEERS";
/// Addresses a ticket carries at most.
pub const TICKET_ADDRESSES_MAX: usize = 8;
/// Signaling servers a ticket carries at most.
pub const TICKET_SIGNALS_MAX: usize = 4;
/// Longest signaling server URL in a ticket, in bytes.
pub const TICKET_URL_BYTES_MAX: usize = 200;
/// Bytes of an invite's secret.
pub const INVITE_SECRET_BYTES: usize = 32;
/// Bytes of an invite's id (derived from the secret, see [`invite_id`]).
pub const INVITE_ID_BYTES: usize = 16;
/// Bytes of the checksum that ends a ticket.
pub const TICKET_CHECKSUM_BYTES: usize = 4;
/// File name of the inviter's open invites inside the database directory.
pub const INVITES_FILE: &str = "invites";
/// Invites kept at most; creating one more drops the oldest expired or spent
/// ones first, and is refused when all are open.
pub const INVITES_MAX: usize = 256;
/// How long a spent or expired invite is remembered past its expiry.
pub const INVITES_KEPT_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;
/// Context of [`invite_id`]'s keyed hash.
pub const INVITE_ID_DOMAIN: &[u8] = b"peers invite id v1";
/// Context of [`redeem_proof`]'s keyed hash.
pub const REDEEM_PROOF_DOMAIN: &[u8] = b"peers invite redeem v1";

/// An invite's id: names the invite to the inviter without revealing the
/// secret. `BLAKE3-keyed(key = secret, INVITE_ID_DOMAIN)`, first 16 bytes.
pub fn invite_id(secret: &[u8; INVITE_SECRET_BYTES]) -> [u8; INVITE_ID_BYTES] {
    let hash = blake3::keyed_hash(secret, INVITE_ID_DOMAIN);
    let mut id = [0; INVITE_ID_BYTES];
    id.copy_from_slice(&hash.as_bytes()[..INVITE_ID_BYTES]);
    id
}

/// What the joiner sends to prove the secret: `BLAKE3-keyed(key = secret,
/// REDEEM_PROOF_DOMAIN || handshake hash || joiner key)`. Bound to one
/// secure channel, it is worthless on any other, and the secret never
/// travels.
pub fn redeem_proof(
    secret: &[u8; INVITE_SECRET_BYTES],
    handshake_hash: &[u8; 32],
    joiner: &Author,
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(secret);
    hasher.update(REDEEM_PROOF_DOMAIN);
    hasher.update(handshake_hash);
    hasher.update(&joiner.0);
    *hasher.finalize().as_bytes()
}

/// Why a ticket's text does not decode.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TicketError {
    /// It does not start with [`TICKET_PREFIX`].
    #[error("not a Peers ticket (a ticket starts with {TICKET_PREFIX}; `peers invite` prints one)")]
    NotATicket,
    /// A character is not base32, or the checksum does not match: the text
    /// was changed or cut while being copied.
    #[error("the ticket is damaged (a character was changed, added or lost while copying it)")]
    Damaged,
    /// A layout this build does not read.
    #[error(
        "ticket version {0} is not supported by this build (it reads version {TICKET_VERSION})"
    )]
    UnsupportedVersion(u8),
    /// The checksum matches but the layout is wrong (a forged ticket).
    #[error("the ticket is malformed: {0}")]
    Malformed(&'static str),
}

/// An invite as the joiner holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The database to join.
    pub database: DatabaseId,
    /// The inviter's key: the joiner pins it, so nobody else can take the
    /// redemption.
    pub inviter: Author,
    /// The role the invite grants (the inviter's record decides).
    pub role: Role,
    /// When the invite expires, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// TCP addresses the inviter may listen at.
    pub addresses: Vec<SocketAddr>,
    /// Signaling servers the inviter stays registered with (ws:// URLs).
    pub signal: Vec<String>,
    /// The one-time secret.
    pub secret: [u8; INVITE_SECRET_BYTES],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("database", &self.database)
            .field("inviter", &self.inviter)
            .field("role", &self.role)
            .field("expires_ms", &self.expires_ms)
            .field("addresses", &self.addresses)
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Reader => 1,
        Role::Writer => 2,
        Role::Admin => 3,
        Role::Owner => 4,
    }
}

fn role_from_byte(byte: u8) -> Option<Role> {
    match byte {
        1 => Some(Role::Reader),
        2 => Some(Role::Writer),
        3 => Some(Role::Admin),
        _ => None,
    }
}

impl Ticket {
    /// The invite's id (see [`invite_id`]).
    pub fn id(&self) -> [u8; INVITE_ID_BYTES] {
        invite_id(&self.secret)
    }

    /// The ticket's bytes (docs/PROTOCOL.md "Ticket"). Addresses, servers
    /// and URL lengths over their limits are cut to them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![TICKET_VERSION];
        bytes.extend_from_slice(&self.database.0);
        bytes.extend_from_slice(&self.inviter.0);
        bytes.extend_from_slice(&self.secret);
        bytes.push(role_byte(self.role));
        bytes.extend_from_slice(&self.expires_ms.to_be_bytes());
        let addresses = &self.addresses[..self.addresses.len().min(TICKET_ADDRESSES_MAX)];
        bytes.push(addresses.len() as u8);
        for address in addresses {
            crate::webrtc::encode_address(&mut bytes, address);
        }
        let signal: Vec<&String> = self
            .signal
            .iter()
            .filter(|url| !url.is_empty() && url.len() <= TICKET_URL_BYTES_MAX)
            .take(TICKET_SIGNALS_MAX)
            .collect();
        bytes.push(signal.len() as u8);
        for url in signal {
            bytes.push(url.len() as u8);
            bytes.extend_from_slice(url.as_bytes());
        }
        let checksum = blake3::hash(&bytes);
        bytes.extend_from_slice(&checksum.as_bytes()[..TICKET_CHECKSUM_BYTES]);
        bytes
    }

    /// Reads a ticket's bytes: the checksum first (a damaged copy), then
    /// the layout, refusing anything over a limit and any trailing byte.
    pub fn from_bytes(bytes: &[u8]) -> Result<Ticket, TicketError> {
        if bytes.len() < TICKET_CHECKSUM_BYTES {
            return Err(TicketError::Damaged);
        }
        let (body, checksum) = bytes.split_at(bytes.len() - TICKET_CHECKSUM_BYTES);
        if blake3::hash(body).as_bytes()[..TICKET_CHECKSUM_BYTES] != *checksum {
            return Err(TicketError::Damaged);
        }
        let mut reader = Reader(body);
        let version = reader.byte()?;
        if version != TICKET_VERSION {
            return Err(TicketError::UnsupportedVersion(version));
        }
        let database = DatabaseId(reader.array()?);
        let inviter = Author(reader.array()?);
        let secret = reader.array()?;
        let role = role_from_byte(reader.byte()?).ok_or(TicketError::Malformed("unknown role"))?;
        let expires_ms = u64::from_be_bytes(reader.array()?);
        let count = usize::from(reader.byte()?);
        if count > TICKET_ADDRESSES_MAX {
            return Err(TicketError::Malformed("too many addresses"));
        }
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match reader.byte()? {
                4 => IpAddr::V4(Ipv4Addr::from(reader.array::<4>()?)),
                6 => IpAddr::V6(Ipv6Addr::from(reader.array::<16>()?)),
                _ => return Err(TicketError::Malformed("unknown address family")),
            };
            let port = u16::from_be_bytes(reader.array()?);
            addresses.push(SocketAddr::new(ip, port));
        }
        let count = usize::from(reader.byte()?);
        if count > TICKET_SIGNALS_MAX {
            return Err(TicketError::Malformed("too many signaling servers"));
        }
        let mut signal = Vec::with_capacity(count);
        for _ in 0..count {
            let length = usize::from(reader.byte()?);
            if length == 0 || length > TICKET_URL_BYTES_MAX {
                return Err(TicketError::Malformed(
                    "a signaling URL's length is out of range",
                ));
            }
            let url = std::str::from_utf8(reader.take(length)?)
                .map_err(|_| TicketError::Malformed("a signaling URL is not UTF-8"))?;
            signal.push(url.to_owned());
        }
        if !reader.0.is_empty() {
            return Err(TicketError::Malformed("trailing bytes"));
        }
        Ok(Ticket {
            database,
            inviter,
            role,
            expires_ms,
            addresses,
            signal,
            secret,
        })
    }

    /// Reads a ticket's text: [`TICKET_PREFIX`] then base32 (RFC 4648, no
    /// padding). Case, spaces and line breaks are ignored, so a ticket
    /// survives being retyped or wrapped.
    pub fn decode(text: &str) -> Result<Ticket, TicketError> {
        let cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let Some(encoded) = cleaned.strip_prefix(TICKET_PREFIX) else {
            return Err(TicketError::NotATicket);
        };
        let bytes = data_encoding::BASE32_NOPAD
            .decode(encoded.as_bytes())
            .map_err(|_| TicketError::Damaged)?;
        Ticket::from_bytes(&bytes)
    }

    /// The ticket's text: [`TICKET_PREFIX`] and the bytes in base32, all
    /// upper case (a QR code holds it in its compact alphanumeric mode).
    pub fn encode(&self) -> String {
        format!(
            "{TICKET_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&self.to_bytes())
        )
    }

    /// Whether the ticket's expiry has passed (the inviter's record is what
    /// counts; this lets the joiner say so without dialing).
    pub fn is_expired(&self) -> bool {
        now_ms() >= self.expires_ms
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], TicketError> {
        if self.0.len() < count {
            return Err(TicketError::Malformed("too short"));
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TicketError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn byte(&mut self) -> Result<u8, TicketError> {
        Ok(self.take(1)?[0])
    }
}

/// Why an inviter refuses a redemption (or an offer that names an invite).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InviteRefusal {
    /// No invite has this id, or the proof does not match its secret (a
    /// forged or mistyped ticket, or one made for another replica).
    #[error("the inviter knows no such invite (a forged ticket, or one from another replica)")]
    Unknown,
    /// The invite expired.
    #[error("the invite has expired; ask for a new one")]
    Expired,
    /// Every use of the invite was spent.
    #[error("the invite was already used; ask for a new one")]
    Used,
}

/// One open invite, as the inviter keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// See [`invite_id`].
    pub id: [u8; INVITE_ID_BYTES],
    /// The one-time secret the ticket carries.
    pub secret: [u8; INVITE_SECRET_BYTES],
    /// The role a redemption grants.
    pub role: Role,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// Redemptions left.
    pub uses_left: u32,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite")
            .field("id", &hex::encode(self.id))
            .field("role", &self.role)
            .field("expires_ms", &self.expires_ms)
            .field("uses_left", &self.uses_left)
            .finish_non_exhaustive()
    }
}

/// What a new invite grants and for how long.
#[derive(Clone, Debug)]
pub struct InviteOptions {
    /// The role to grant (reader, writer or admin; an admin invite needs the
    /// owner).
    pub role: Role,
    /// How long the invite stays valid.
    pub expires: Duration,
    /// How many devices may redeem it.
    pub uses: u32,
    /// TCP addresses to put in the ticket (where the inviter will listen).
    pub addresses: Vec<SocketAddr>,
    /// Signaling servers to put in the ticket.
    pub signal: Vec<String>,
}

impl Default for InviteOptions {
    fn default() -> Self {
        InviteOptions {
            role: Role::Writer,
            expires: Duration::from_secs(24 * 3600),
            uses: 1,
            addresses: Vec::new(),
            signal: Vec::new(),
        }
    }
}

/// Why an invite cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    /// The replica's key cannot grant that role.
    #[error(
        "this replica's key is {held}, which cannot grant {role} (the owner grants any role, an admin grants reader and writer)"
    )]
    CannotGrant {
        /// The role asked for.
        role: Role,
        /// What our key holds ("no role", "reader", ...).
        held: String,
    },
    /// An open database needs no invite to read or write; it still takes
    /// grants, so this is only refused for an unsynced replica.
    #[error("this replica has not synced its database yet, so it cannot grant roles")]
    NotSynced,
    /// The ticket would not say how to reach the inviter.
    #[error(
        "a ticket must say how to reach this replica: give a signaling server (--signal ws://HOST:PORT) or an address it will listen at (--address HOST:PORT)"
    )]
    NoWayToReach,
    /// Zero uses, or a zero duration.
    #[error("an invite needs at least one use and a duration above zero")]
    Empty,
    /// [`INVITES_MAX`] invites are open.
    #[error("{INVITES_MAX} invites are open already; wait for some to expire")]
    TooMany,
    /// The invites file could not be written.
    #[error("writing the invites file: {0}")]
    Io(#[from] std::io::Error),
}

/// The inviter's open invites, loaded from and saved to `DIR/invites`.
#[derive(Debug, Default)]
pub struct Invites {
    path: PathBuf,
    entries: Vec<Invite>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Invites {
    /// The invites of the database in `dir`, one copy shared by everything
    /// in this process that uses them (its nodes, and `peers invite` run
    /// through the control socket): one process holds a database directory,
    /// so an invite made by one is honoured by the others, and no copy
    /// saves over another's.
    pub fn shared(dir: &Path) -> Arc<Mutex<Invites>> {
        type Books = HashMap<PathBuf, Weak<Mutex<Invites>>>;
        static BOOKS: OnceLock<Mutex<Books>> = OnceLock::new();
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        let mut books = BOOKS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        books.retain(|_, book| book.strong_count() > 0);
        if let Some(book) = books.get(&key).and_then(Weak::upgrade) {
            return book;
        }
        let book = Arc::new(Mutex::new(Invites::load(dir)));
        books.insert(key, Arc::downgrade(&book));
        book
    }

    /// The invites kept in database directory `dir` (none when the file is
    /// missing; a line that does not parse is skipped with a warning).
    /// Within a process, use [`Invites::shared`].
    pub fn load(dir: &Path) -> Invites {
        let path = dir.join(INVITES_FILE);
        let mut entries = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for (number, line) in text.lines().enumerate().take(INVITES_MAX) {
                match parse_line(line) {
                    Some(invite) => entries.push(invite),
                    None => tracing::warn!(
                        path = %path.display(), line = number + 1,
                        "skipping an invite line that does not parse"
                    ),
                }
            }
        }
        Invites { path, entries }
    }

    /// Whether no invite is remembered (open, spent or expired): then a
    /// stranger's session ends at once, without reading from it.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes an invite for `db`'s key and returns its ticket. Checks that
    /// our key may grant the role and that the ticket says how to reach us.
    pub fn create(&mut self, db: &Db, options: &InviteOptions) -> Result<Ticket, InviteError> {
        if options.uses == 0 || options.expires.is_zero() {
            return Err(InviteError::Empty);
        }
        if options.addresses.is_empty() && options.signal.is_empty() {
            return Err(InviteError::NoWayToReach);
        }
        if db.is_members_only().is_none() {
            return Err(InviteError::NotSynced);
        }
        let held = db.role_of(&db.author());
        let allowed = matches!(
            (held, options.role),
            (Some(Role::Owner), Role::Reader | Role::Writer | Role::Admin)
                | (Some(Role::Admin), Role::Reader | Role::Writer)
        );
        if !allowed {
            return Err(InviteError::CannotGrant {
                role: options.role,
                held: held.map_or_else(|| "no role".to_owned(), |role| role.to_string()),
            });
        }
        let now = now_ms();
        // Spent and expired invites are kept a while, so that their holders
        // hear "used" or "expired" rather than "unknown"; when the book is
        // full they go first.
        self.entries
            .retain(|invite| now < invite.expires_ms.saturating_add(INVITES_KEPT_AFTER_MS));
        while self.entries.len() >= INVITES_MAX {
            let closed = self
                .entries
                .iter()
                .position(|invite| invite.uses_left == 0 || now >= invite.expires_ms);
            match closed {
                Some(index) => {
                    self.entries.remove(index);
                }
                None => return Err(InviteError::TooMany),
            }
        }
        let mut secret = [0; INVITE_SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|error| std::io::Error::other(error.to_string()))?;
        let expires_ms =
            now.saturating_add(u64::try_from(options.expires.as_millis()).unwrap_or(u64::MAX));
        self.entries.push(Invite {
            id: invite_id(&secret),
            secret,
            role: options.role,
            expires_ms,
            uses_left: options.uses,
        });
        self.save()?;
        Ok(Ticket {
            database: db.database_id(),
            inviter: db.author(),
            role: options.role,
            expires_ms,
            addresses: options.addresses.clone(),
            signal: options.signal.clone(),
            secret,
        })
    }

    /// Whether the invite `id` can be redeemed now (the gate on a WebRTC
    /// offer that names it).
    pub fn check(&self, id: &[u8; INVITE_ID_BYTES]) -> Result<Role, InviteRefusal> {
        let invite = self.find(id)?;
        Ok(invite.role)
    }

    fn find(&self, id: &[u8; INVITE_ID_BYTES]) -> Result<&Invite, InviteRefusal> {
        let invite = self
            .entries
            .iter()
            .find(|invite| invite.id == *id)
            .ok_or(InviteRefusal::Unknown)?;
        if now_ms() >= invite.expires_ms {
            return Err(InviteRefusal::Expired);
        }
        if invite.uses_left == 0 {
            return Err(InviteRefusal::Used);
        }
        Ok(invite)
    }

    /// Spends one use of invite `id` if `proof` proves its secret on the
    /// channel with `handshake_hash` for `joiner`, and writes the use down
    /// before returning the role to grant. A wrong proof is `Unknown`.
    pub fn redeem(
        &mut self,
        id: &[u8; INVITE_ID_BYTES],
        proof: &[u8; 32],
        handshake_hash: &[u8; 32],
        joiner: &Author,
    ) -> Result<Role, InviteRefusal> {
        let invite = self.find(id)?;
        let expected = redeem_proof(&invite.secret, handshake_hash, joiner);
        // Constant time: blake3's Hash compares so.
        if blake3::Hash::from(expected) != blake3::Hash::from(*proof) {
            return Err(InviteRefusal::Unknown);
        }
        let role = invite.role;
        let index = self
            .entries
            .iter()
            .position(|invite| invite.id == *id)
            .ok_or(InviteRefusal::Unknown)?;
        self.entries[index].uses_left -= 1;
        if let Err(error) = self.save() {
            // Not written down: not spent, and not granted.
            self.entries[index].uses_left += 1;
            tracing::warn!(%error, "could not write the invites file; redemption refused");
            return Err(InviteRefusal::Unknown);
        }
        Ok(role)
    }

    fn save(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for invite in &self.entries {
            text.push_str(&format!(
                "{} {} {} {} {}\n",
                hex::encode(invite.id),
                hex::encode(invite.secret),
                invite.role,
                invite.expires_ms,
                invite.uses_left
            ));
        }
        let temporary = self.path.with_extension("tmp");
        write_private(&temporary, text.as_bytes())?;
        std::fs::rename(&temporary, &self.path)
    }
}

/// Writes `bytes` to a new file readable by its owner only (it holds
/// secrets).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn parse_line(line: &str) -> Option<Invite> {
    let mut fields = line.split(' ');
    let id = hex::decode(fields.next()?).ok()?.try_into().ok()?;
    let secret: [u8; INVITE_SECRET_BYTES] = hex::decode(fields.next()?).ok()?.try_into().ok()?;
    let role = fields.next()?.parse().ok()?;
    let expires_ms = fields.next()?.parse().ok()?;
    let uses_left = fields.next()?.parse().ok()?;
    if fields.next().is_some() || invite_id(&secret) != id {
        return None;
    }
    Some(Invite {
        id,
        secret,
        role,
        expires_ms,
        uses_left,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            database: DatabaseId([0x11; 32]),
            inviter: Author([0x22; 32]),
            role: Role::Writer,
            expires_ms: 1_800_000_000_000,
            addresses: vec!["192.0.2.1:7000".parse().expect("address")],
            signal: vec!["ws://203.0.113.7:7400".to_owned()],
            secret: [0x33; 32],
        }
    }

    #[test]
    fn ticket_round_trips_and_ignores_case_and_spaces() {
        let ticket = ticket();
        let text = ticket.encode();
        assert!(text.starts_with("PEERS"));
        assert_eq!(Ticket::decode(&text), Ok(ticket.clone()));
        let mangled = format!(" {}\n{} ", &text[..20].to_lowercase(), &text[20..]);
        assert_eq!(Ticket::decode(&mangled), Ok(ticket));
    }

    #[test]
    fn a_changed_character_is_damage() {
        let text = ticket().encode();
        let mut chars: Vec<char> = text.chars().collect();
        let at = chars.len() / 2;
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        let changed: String = chars.into_iter().collect();
        assert_eq!(Ticket::decode(&changed), Err(TicketError::Damaged));
        assert_eq!(
            Ticket::decode(&text[..text.len() - 3]),
            Err(TicketError::Damaged)
        );
        assert_eq!(Ticket::decode("hello"), Err(TicketError::NotATicket));
    }

    #[test]
    fn a_forged_layout_with_a_good_checksum_is_malformed() {
        let mut bytes = ticket().to_bytes();
        bytes.truncate(bytes.len() - TICKET_CHECKSUM_BYTES);
        bytes.push(0); // a trailing byte
        let checksum = blake3::hash(&bytes);
        bytes.extend_from_slice(&checksum.as_bytes()[..TICKET_CHECKSUM_BYTES]);
        assert_eq!(
            Ticket::from_bytes(&bytes),
            Err(TicketError::Malformed("trailing bytes"))
        );
    }

    /// The layout of docs/PROTOCOL.md "Ticket", and the vector computed
    /// there with Python's blake3 and base64.b32encode.
    #[test]
    fn ticket_bytes_match_the_spec() {
        let bytes = ticket().to_bytes();
        let mut expected = vec![1];
        expected.extend([0x11; 32]);
        expected.extend([0x22; 32]);
        expected.extend([0x33; 32]);
        expected.push(2);
        expected.extend(1_800_000_000_000u64.to_be_bytes());
        expected.extend([1, 4, 192, 0, 2, 1, 0x1b, 0x58]);
        expected.push(1);
        expected.push(21);
        expected.extend(b"ws://203.0.113.7:7400");
        assert_eq!(&bytes[..bytes.len() - 4], expected.as_slice());
        assert_eq!(
            hex::encode(&bytes[bytes.len() - 4..]),
            TICKET_CHECKSUM_VECTOR
        );
        assert_eq!(ticket().encode(), TICKET_TEXT_VECTOR);
    }

    const TICKET_CHECKSUM_VECTOR: &str = "30fcff96";
    const TICKET_TEXT_VECTOR: &str = "PEERSAEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCEIRCGMZTGMZTGMZTGMZTGMZTGMZTGMZTGMZTGMZTGMZTGMZTGMZTGMZQEAAAAGRRQXCQAAAQJQAAAIARWWABCV3XGORPF4ZDAMZOGAXDCMJTFY3TUNZUGAYDB7H7SY";

    #[test]
    fn id_and_proof_vectors() {
        let secret = [0x33; 32];
        assert_eq!(hex::encode(invite_id(&secret)), INVITE_ID_VECTOR);
        let proof = redeem_proof(&secret, &[0x44; 32], &Author([0x55; 32]));
        assert_eq!(hex::encode(proof), REDEEM_PROOF_VECTOR);
    }

    const INVITE_ID_VECTOR: &str = "c01f4969a7a2b0761512ad06ae1c00f5";
    const REDEEM_PROOF_VECTOR: &str =
        "283d99a9d0b69c09f7832fe12f3c0bd76ffd2d732b36e84a6ab815fffa4e65ea";
}

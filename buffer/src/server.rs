//! The buffer server: keeps envelopes in an object store, under their
//! space's tag and three levels of time buckets, named by when it received
//! them, their hash and their expiry; answers puts (signed by the space's
//! key) and gets (by cursor: a get lists the cursor's buckets and the ones
//! after, never the space before them); enforces quotas per space and per
//! client; deletes what expired.
//!
//! It is stateless but for caches: any number of servers may front one
//! bucket. Each keeps, per space it served a put for, the hashes and bytes
//! it holds (loaded by listing the space), to refuse duplicates and hold
//! the quota; so with several servers a space can hold up to their number
//! times its quota.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::format::{
    Answer, Cursor, ENVELOPE_BYTES_MAX, ENVELOPE_BYTES_MIN, FRAME_BYTES_MAX, GET_ANSWER_BYTES_SOFT,
    Refused, Request, Stored, check_envelope, envelope_hash, put_message,
};
use crate::wire;

/// Most envelopes a space may hold (its byte quota usually binds first).
pub const SPACE_ENVELOPES_MAX: usize = 1 << 18;
/// Most spaces whose state a server caches (the least recently used is
/// dropped, and listed again when it is next written).
pub const SPACES_CACHED_MAX: usize = 4096;
/// Most clients whose hourly writes a server counts at once.
pub const CLIENTS_COUNTED_MAX: usize = 1 << 16;
/// How long a connection may sit between requests, and a request take to
/// arrive, before the server hangs up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of request bodies a server holds at once, all connections
/// together (a request waits for its share).
pub const REQUEST_BYTES_IN_FLIGHT_MAX: usize = 256 * 1024 * 1024;
const _: () = assert!(FRAME_BYTES_MAX <= REQUEST_BYTES_IN_FLIGHT_MAX);

/// A server's settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long an envelope is kept (its expiry is its arrival plus this).
    pub keep: Duration,
    /// Most bytes of envelopes one space may hold.
    pub space_bytes_max: u64,
    /// Most bytes one client (IP address) may write per hour.
    pub client_bytes_per_hour: u64,
    /// Most connections served at once.
    pub connections_max: usize,
    /// How often expired envelopes are deleted.
    pub sweep_every: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            keep: Duration::from_secs(14 * 86_400),
            space_bytes_max: 64 * 1024 * 1024,
            client_bytes_per_hour: 256 * 1024 * 1024,
            connections_max: 256,
            sweep_every: Duration::from_secs(600),
        }
    }
}

/// Opens the store a buffer keeps envelopes in: `s3://BUCKET/PREFIX`
/// (credentials, region and endpoint from the usual `AWS_*` environment
/// variables), `file:///PATH`, or a local directory (created if missing).
pub fn open_store(url: &str) -> Result<(Arc<dyn ObjectStore>, StorePath)> {
    let refuse = |reason: String| Error::StoreUrl {
        url: url.to_owned(),
        reason,
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(refuse("no bucket: expected s3://BUCKET/PREFIX".into()));
        }
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|error| refuse(error.to_string()))?;
        let prefix = StorePath::parse(prefix.trim_matches('/'))
            .map_err(|error| refuse(error.to_string()))?;
        return Ok((Arc::new(store), prefix));
    }
    let path = match url.strip_prefix("file://") {
        Some(path) => std::path::PathBuf::from(path),
        None if url.contains("://") => {
            return Err(refuse(
                "a buffer stores envelopes in s3://BUCKET/PREFIX or a local directory".into(),
            ));
        }
        None => std::path::PathBuf::from(url),
    };
    if path.as_os_str().is_empty() {
        return Err(refuse("empty path".into()));
    }
    std::fs::create_dir_all(&path).map_err(Error::io(format!("creating {}", path.display())))?;
    // Deleting a bucket's last envelope removes its emptied directories, so
    // a get never walks the buckets of envelopes long expired.
    let store = LocalFileSystem::new_with_prefix(&path)
        .map_err(|error| refuse(error.to_string()))?
        .with_automatic_cleanup(true);
    Ok((Arc::new(store), StorePath::default()))
}

/// What a server knows of a space it wrote to.
struct SpaceState {
    bytes: u64,
    hashes: HashSet<[u8; 32]>,
    touched: Instant,
}

/// One stored envelope's name, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Name {
    received_ms: u64,
    hash: [u8; 32],
    expiry_ms: u64,
}

impl Name {
    fn leaf(&self) -> String {
        format!(
            "{:016x}-{}-{:016x}",
            self.received_ms,
            hex::encode(self.hash),
            self.expiry_ms
        )
    }

    fn parse(leaf: &str) -> Option<Name> {
        let mut parts = leaf.split('-');
        let (received, hash, expiry) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || received.len() != 16 || expiry.len() != 16 {
            return None;
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hash, &mut bytes).ok()?;
        Some(Name {
            received_ms: u64::from_str_radix(received, 16).ok()?,
            hash: bytes,
            expiry_ms: u64::from_str_radix(expiry, 16).ok()?,
        })
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            received_ms: self.received_ms,
            hash: self.hash,
        }
    }

    /// Its path in `space`: under its buckets.
    fn path(&self, space: &StorePath) -> StorePath {
        let [first, second, third] = buckets(self.received_ms);
        space
            .child(first)
            .child(second)
            .child(third)
            .child(self.leaf())
    }
}

/// The three time buckets an envelope received at `received_ms` is filed
/// under: its received time as 16 hex digits, cut after the 10th, the
/// 12th and the 14th (`received_ms >> 24`, about 4.7 hours; then the next
/// 8 bits, 65.5 s each; then the next 8, 256 ms each). Each bucket holds
/// at most 256 of the next, and a leaf bucket what arrived in 256 ms.
fn buckets(received_ms: u64) -> [String; 3] {
    let hex = format!("{received_ms:016x}");
    [
        hex[..10].to_owned(),
        hex[10..12].to_owned(),
        hex[12..14].to_owned(),
    ]
}

/// Where a server files an envelope, under its store's prefix (SERVICES.md
/// "Blind sync buffer", "Storage"):
/// `{hex(tag)}/{buckets of received_ms}/{received_ms:016x}-{hex(hash)}-{expiry_ms:016x}`.
pub fn object_name(tag: &[u8; 32], received_ms: u64, hash: &[u8; 32], expiry_ms: u64) -> String {
    Name {
        received_ms,
        hash: *hash,
        expiry_ms,
    }
    .path(&StorePath::from(hex::encode(tag)))
    .to_string()
}

/// Counters a server keeps (for its log and the figures).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Envelopes stored.
    pub stored: u64,
    /// Envelopes a put carried that the space already held.
    pub duplicates: u64,
    /// Envelopes served by gets.
    pub served: u64,
    /// Requests refused.
    pub refused: u64,
    /// Envelopes deleted as expired.
    pub expired: u64,
}

/// A buffer server over one store.
pub struct Server {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    config: ServerConfig,
    spaces: Mutex<HashMap<[u8; 32], SpaceState>>,
    clients: Mutex<HashMap<IpAddr, (u64, u64)>>,
    counters: Mutex<Counters>,
    in_flight: Semaphore,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("prefix", &self.prefix)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn refused(reason: Refused, message: impl Into<String>) -> Answer {
    Answer::Refused {
        reason,
        message: message.into(),
    }
}

impl Server {
    /// A server over `store` under `prefix`. Gets walk the store's time
    /// buckets with `list_with_delimiter`; a local directory should remove
    /// emptied directories when it deletes (as [`open_store`]'s does), or
    /// gets walk the empty buckets of expired envelopes too.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: StorePath, config: ServerConfig) -> Server {
        Server::with_clock(store, prefix, config, Box::new(now_ms))
    }

    /// [`Server::new`] with another clock (tests of expiry).
    pub fn with_clock(
        store: Arc<dyn ObjectStore>,
        prefix: StorePath,
        config: ServerConfig,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Server {
        Server {
            store,
            prefix,
            config,
            spaces: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            counters: Mutex::new(Counters::default()),
            in_flight: Semaphore::new(REQUEST_BYTES_IN_FLIGHT_MAX / 1024),
            clock,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Its counters so far.
    pub fn counters(&self) -> Counters {
        *lock(&self.counters)
    }

    /// How many spaces' states it caches.
    pub fn spaces_cached(&self) -> usize {
        lock(&self.spaces).len()
    }

    fn space_path(&self, tag: &[u8; 32]) -> StorePath {
        self.prefix.child(hex::encode(tag))
    }

    /// Accepts connections on `listener` and serves them, until the future
    /// is dropped; deletes expired envelopes every `sweep_every`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> Result<()> {
        let connections = Arc::new(Semaphore::new(self.config.connections_max.max(1)));
        let sweeper = {
            let server = Arc::clone(&self);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(server.config.sweep_every);
                loop {
                    ticks.tick().await;
                    if let Err(error) = server.sweep().await {
                        tracing::warn!(%error, "buffer: sweeping expired envelopes failed");
                    }
                }
            })
        };
        let _stop_sweeper = AbortOnDrop(sweeper);
        loop {
            let (stream, peer) = listener
                .accept()
                .await
                .map_err(Error::io("accepting a connection"))?;
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                // Over the limit: answer "busy" and hang up.
                let mut stream = stream;
                let body = refused(Refused::Busy, "too many connections").encode();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        wire::write_frame(&mut stream, &body),
                    )
                    .await;
                });
                continue;
            };
            let server = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(error) = server.connection(stream, peer).await {
                    tracing::debug!(%peer, %error, "buffer: connection ended");
                }
                drop(permit);
            });
        }
    }

    async fn connection(&self, mut stream: tokio::net::TcpStream, peer: SocketAddr) -> Result<()> {
        let _ = stream.set_nodelay(true);
        loop {
            let length =
                match tokio::time::timeout(IDLE_TIMEOUT, wire::read_length(&mut stream)).await {
                    Err(_) | Ok(Ok(None)) => return Ok(()),
                    Ok(Ok(Some(length))) => length,
                    Ok(Err(error)) => {
                        let body = refused(Refused::Malformed, error.to_string()).encode();
                        let _ = wire::write_frame(&mut stream, &body).await;
                        return Err(Error::io("reading a request")(error));
                    }
                };
            // Hold the body's share of the memory budget while it is read
            // and handled.
            let kib = u32::try_from(length.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
            let _budget = self
                .in_flight
                .acquire_many(kib)
                .await
                .map_err(|_| Error::Unexpected)?;
            let body = match tokio::time::timeout(
                IDLE_TIMEOUT,
                wire::read_body(&mut stream, length),
            )
            .await
            {
                Err(_) => return Ok(()),
                Ok(body) => body.map_err(Error::io("reading a request"))?,
            };
            let answer = self.handle(peer.ip(), &body).await;
            if matches!(answer, Answer::Refused { .. }) {
                lock(&self.counters).refused += 1;
            }
            wire::write_frame(&mut stream, &answer.encode())
                .await
                .map_err(Error::io("writing an answer"))?;
        }
    }

    /// Answers one request body from `client`.
    pub async fn handle(&self, client: IpAddr, body: &[u8]) -> Answer {
        let request = match Request::decode(body) {
            Ok(request) => request,
            Err(crate::WireError::Version { found }) => {
                return refused(
                    Refused::Version,
                    format!(
                        "wire version {found}; this buffer speaks {}",
                        crate::BUFFER_FORMAT_VERSION
                    ),
                );
            }
            Err(error) => return refused(Refused::Malformed, error.to_string()),
        };
        match request {
            Request::Put {
                tag,
                envelopes,
                signature,
            } => self.put(client, tag, envelopes, signature).await,
            Request::Get { tag, after, max } => self.get(tag, after, max).await,
        }
    }

    async fn put(
        &self,
        client: IpAddr,
        tag: [u8; 32],
        envelopes: Vec<Vec<u8>>,
        signature: [u8; 64],
    ) -> Answer {
        for (index, envelope) in envelopes.iter().enumerate() {
            if let Err(fault) = check_envelope(envelope) {
                return refused(Refused::Envelope, format!("envelope {index}: {fault}"));
            }
        }
        let message = put_message(&tag, envelopes.iter().map(Vec::as_slice));
        if peers_engine::verify_ed25519_strict(&[(&message, &tag, &signature)]).is_err() {
            return refused(
                Refused::Capability,
                "the signature does not verify for this space: writing needs the space's key",
            );
        }
        let total: u64 = envelopes.iter().map(|envelope| envelope.len() as u64).sum();
        let now = (self.clock)();
        if let Err(answer) = self.charge_client(client, total, now) {
            return answer;
        }
        if let Err(error) = self.load_space(&tag, now).await {
            return refused(Refused::Store, error.to_string());
        }
        // Reserve: which are new, and do they fit.
        let mut fresh = Vec::new();
        let mut duplicates = 0u16;
        {
            let mut spaces = lock(&self.spaces);
            let Some(space) = spaces.get_mut(&tag) else {
                return refused(Refused::Store, "the space's state was dropped; retry");
            };
            space.touched = Instant::now();
            let mut seen = HashSet::new();
            let mut bytes = 0u64;
            for envelope in &envelopes {
                let hash = envelope_hash(envelope);
                if space.hashes.contains(&hash) || !seen.insert(hash) {
                    duplicates += 1;
                } else {
                    bytes += envelope.len() as u64;
                    fresh.push((hash, envelope));
                }
            }
            if space.bytes + bytes > self.config.space_bytes_max
                || space.hashes.len() + fresh.len() > SPACE_ENVELOPES_MAX
            {
                return refused(
                    Refused::SpaceQuota,
                    format!(
                        "the space holds {} bytes in {} envelopes; {} more would pass its quota of {} bytes",
                        space.bytes,
                        space.hashes.len(),
                        bytes,
                        self.config.space_bytes_max
                    ),
                );
            }
            space.bytes += bytes;
            for (hash, _) in &fresh {
                space.hashes.insert(*hash);
            }
        }
        let expiry_ms =
            now.saturating_add(u64::try_from(self.config.keep.as_millis()).unwrap_or(u64::MAX));
        let space_path = self.space_path(&tag);
        let mut written = 0usize;
        let mut failure = None;
        for (hash, envelope) in &fresh {
            let name = Name {
                received_ms: now,
                hash: *hash,
                expiry_ms,
            };
            let path = name.path(&space_path);
            match self
                .store
                .put(&path, PutPayload::from((*envelope).clone()))
                .await
            {
                Ok(_) => written += 1,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if let Some(error) = failure {
            // Release what was not written.
            let mut spaces = lock(&self.spaces);
            if let Some(space) = spaces.get_mut(&tag) {
                for (hash, envelope) in &fresh[written..] {
                    space.hashes.remove(hash);
                    space.bytes = space.bytes.saturating_sub(envelope.len() as u64);
                }
            }
            return refused(Refused::Store, error.to_string());
        }
        let mut counters = lock(&self.counters);
        counters.stored += fresh.len() as u64;
        counters.duplicates += u64::from(duplicates);
        Answer::Stored {
            stored: fresh.len() as u16,
            duplicates,
        }
    }

    /// Counts `bytes` against `client`'s hourly quota, or refuses.
    fn charge_client(&self, client: IpAddr, bytes: u64, now: u64) -> Result<(), Answer> {
        const HOUR_MS: u64 = 3_600_000;
        let mut clients = lock(&self.clients);
        if clients.len() >= CLIENTS_COUNTED_MAX && !clients.contains_key(&client) {
            clients.retain(|_, (start, _)| now.saturating_sub(*start) < HOUR_MS);
            if clients.len() >= CLIENTS_COUNTED_MAX {
                return Err(refused(Refused::Busy, "too many clients this hour"));
            }
        }
        let entry = clients.entry(client).or_insert((now, 0));
        if now.saturating_sub(entry.0) >= HOUR_MS {
            *entry = (now, 0);
        }
        if entry.1 + bytes > self.config.client_bytes_per_hour {
            return Err(refused(
                Refused::ClientQuota,
                format!(
                    "this client wrote {} bytes this hour, its quota is {}",
                    entry.1, self.config.client_bytes_per_hour
                ),
            ));
        }
        entry.1 += bytes;
        Ok(())
    }

    /// Lists a whole space (at most [`SPACE_ENVELOPES_MAX`] names,
    /// unexpired), in no order.
    async fn list_space(&self, tag: &[u8; 32], now: u64) -> Result<Vec<(Name, u64)>> {
        let mut stream = self.store.list(Some(&self.space_path(tag)));
        let mut names = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            let Some(name) = meta.location.filename().and_then(Name::parse) else {
                continue;
            };
            if name.expiry_ms <= now {
                continue;
            }
            if names.len() >= SPACE_ENVELOPES_MAX {
                break;
            }
            names.push((name, meta.size));
        }
        Ok(names)
    }

    /// One level of a space's buckets: the buckets under `path` (sorted,
    /// `width` hex digits each) and the objects in it.
    async fn list_level(
        &self,
        path: &StorePath,
        width: usize,
    ) -> Result<(Vec<String>, Vec<object_store::ObjectMeta>)> {
        let listing = match self.store.list_with_delimiter(Some(path)).await {
            Ok(listing) => listing,
            // Swept (and its directory removed) since its parent was listed.
            Err(object_store::Error::NotFound { .. }) => return Ok((Vec::new(), Vec::new())),
            Err(error) => return Err(error.into()),
        };
        let mut buckets: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|prefix| prefix.filename())
            .filter(|bucket| {
                bucket.len() == width
                    && bucket
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
            .map(str::to_owned)
            .collect();
        buckets.sort_unstable();
        Ok((buckets, listing.objects))
    }

    /// The unexpired envelopes of a space strictly after `after`, in
    /// order: every one of the buckets it lists, and it lists the cursor's
    /// buckets and those after them, leaf bucket by leaf bucket, until it
    /// holds more than `want` (so the caller knows there are more). A get
    /// costs the listing of the cursor's buckets and of what it returns,
    /// however many envelopes the space holds before the cursor.
    async fn names_after(
        &self,
        tag: &[u8; 32],
        after: Cursor,
        now: u64,
        want: usize,
    ) -> Result<Vec<(Name, u64)>> {
        let space = self.space_path(tag);
        // The zero cursor asks for all: no bucket is before it.
        let from = (after != Cursor::default()).then(|| buckets(after.received_ms));
        let mut names = Vec::new();
        let (firsts, _) = self.list_level(&space, 10).await?;
        for first in &firsts {
            // Buckets before the cursor's are skipped unlisted; within the
            // cursor's own bucket, so are the ones before its next level.
            let in_first = match &from {
                Some(from) if *first < from[0] => continue,
                Some(from) => *first == from[0],
                None => false,
            };
            let first_path = space.child(first.as_str());
            let (seconds, _) = self.list_level(&first_path, 2).await?;
            for second in &seconds {
                let in_second = match &from {
                    Some(from) if in_first && *second < from[1] => continue,
                    Some(from) => in_first && *second == from[1],
                    None => false,
                };
                let second_path = first_path.child(second.as_str());
                let (thirds, _) = self.list_level(&second_path, 2).await?;
                for third in &thirds {
                    if let Some(from) = &from
                        && in_second
                        && *third < from[2]
                    {
                        continue;
                    }
                    let leaf = second_path.child(third.as_str());
                    let (_, objects) = self.list_level(&leaf, 2).await?;
                    let mut found = Vec::new();
                    for meta in objects {
                        let Some(name) = meta.location.filename().and_then(Name::parse) else {
                            continue;
                        };
                        // Filed under its own buckets (the order depends on
                        // it), unexpired, after the cursor.
                        if buckets(name.received_ms) != [first, second, third].map(String::as_str)
                            || name.expiry_ms <= now
                            || name.cursor() <= after
                        {
                            continue;
                        }
                        found.push((name, meta.size));
                    }
                    found.sort_unstable();
                    names.append(&mut found);
                    if names.len() > want {
                        return Ok(names);
                    }
                }
            }
        }
        Ok(names)
    }

    /// Loads a space's state (if not cached) by listing it.
    async fn load_space(&self, tag: &[u8; 32], now: u64) -> Result<()> {
        if let Some(space) = lock(&self.spaces).get_mut(tag) {
            space.touched = Instant::now();
            return Ok(());
        }
        let names = self.list_space(tag, now).await?;
        let state = SpaceState {
            bytes: names.iter().map(|(_, bytes)| bytes).sum(),
            hashes: names.iter().map(|(name, _)| name.hash).collect(),
            touched: Instant::now(),
        };
        let mut spaces = lock(&self.spaces);
        if !spaces.contains_key(tag) && spaces.len() >= SPACES_CACHED_MAX {
            let oldest = spaces
                .iter()
                .min_by_key(|(_, space)| space.touched)
                .map(|(tag, _)| *tag);
            if let Some(oldest) = oldest {
                spaces.remove(&oldest);
            }
        }
        spaces.entry(*tag).or_insert(state);
        Ok(())
    }

    async fn get(&self, tag: [u8; 32], after: Cursor, max: u16) -> Answer {
        let now = (self.clock)();
        let names = match self.names_after(&tag, after, now, usize::from(max)).await {
            Ok(names) => names,
            Err(error) => return refused(Refused::Store, error.to_string()),
        };
        let folder = self.space_path(&tag);
        let mut envelopes = Vec::new();
        let mut bytes = 0usize;
        let mut taken = 0usize;
        for (name, size) in &names {
            if envelopes.len() >= max as usize
                || (!envelopes.is_empty() && bytes >= GET_ANSWER_BYTES_SOFT)
            {
                break;
            }
            taken += 1;
            // A size the store lists out of bounds is not an envelope.
            if *size > ENVELOPE_BYTES_MAX as u64 || *size < ENVELOPE_BYTES_MIN as u64 {
                continue;
            }
            let envelope = match self.store.get(&name.path(&folder)).await {
                Ok(result) => match result.bytes().await {
                    Ok(body) => body,
                    Err(error) => return refused(Refused::Store, error.to_string()),
                },
                // Swept since it was listed.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(error) => return refused(Refused::Store, error.to_string()),
            };
            if envelope.len() > ENVELOPE_BYTES_MAX {
                continue;
            }
            bytes += envelope.len();
            envelopes.push(Stored {
                received_ms: name.received_ms,
                expiry_ms: name.expiry_ms,
                envelope: envelope.to_vec(),
            });
        }
        lock(&self.counters).served += envelopes.len() as u64;
        Answer::Envelopes {
            envelopes,
            more: taken < names.len(),
        }
    }

    /// Deletes every expired envelope in the store (by name, unread) and
    /// drops the cached spaces' states (the next put lists them again).
    /// Returns how many were deleted.
    pub async fn sweep(&self) -> Result<u64> {
        let now = (self.clock)();
        let mut stream = self.store.list(Some(&self.prefix));
        let mut expired = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            if let Some(name) = meta.location.filename().and_then(Name::parse)
                && name.expiry_ms <= now
            {
                expired.push(meta.location);
            }
        }
        drop(stream);
        let mut deleted = 0u64;
        for path in expired {
            match self.store.delete(&path).await {
                Ok(()) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        lock(&self.spaces).clear();
        lock(&self.counters).expired += deleted;
        Ok(deleted)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order() {
        let name = Name {
            received_ms: 1_764_288_000_000,
            hash: [0xab; 32],
            expiry_ms: 1_765_497_600_000,
        };
        assert_eq!(Name::parse(&name.leaf()), Some(name));
        assert_eq!(Name::parse("x"), None);
        assert_eq!(Name::parse(&format!("{}-0", name.leaf())), None);
        // Buckets: the received time's hex digits cut after the 10th, 12th
        // and 14th; paths sort as (received, hash) do, across buckets too.
        assert_eq!(buckets(0x0000_019a_c7c2_7000), ["0000019ac7", "c2", "70"]);
        let space = StorePath::from("space");
        let mut names = vec![name];
        for received_ms in [
            name.received_ms + 1,
            name.received_ms + 256,
            name.received_ms + 65_536,
            name.received_ms + (1 << 24),
            name.received_ms - 1,
        ] {
            names.push(Name {
                received_ms,
                hash: [0; 32],
                expiry_ms: 0,
            });
            names.push(Name {
                received_ms,
                hash: [0xff; 32],
                expiry_ms: u64::MAX,
            });
        }
        let mut by_path = names.clone();
        by_path.sort_by_key(|name| name.path(&space).to_string());
        names.sort_unstable();
        assert_eq!(by_path, names);
        assert_eq!(
            object_name(&[1; 32], name.received_ms, &name.hash, name.expiry_ms),
            format!("{}/0000019ac7/c2/70/{}", hex::encode([1; 32]), name.leaf())
        );
    }
}

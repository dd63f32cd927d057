//! `peers registry serve`: checks each submitted entry against its handle's
//! chain, appends it to the log (RocksDB, one synced write per entry),
//! signs a new checkpoint, and answers lookups with proofs.
//!
//! The directory holds `operator.key` (the operator's ed25519 key, as
//! [`Identity::save`] writes it: whoever holds it can sign checkpoints) and
//! `log/` (the store). The tree, the handles' states and the current
//! checkpoint live in memory and are rebuilt from the stored entries on
//! open, each entry checked again as it was when accepted.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use peers_engine::Identity;
use tokio::net::{TcpListener, TcpStream};

use crate::entry::{Discoverability, ENTRIES_PER_HANDLE_MAX, EXPIRY_SECS_MAX, Entry, HandleState};
use crate::error::{Error, Refusal, Result};
use crate::merkle::{Tree, encode_proof};
use crate::note::{Checkpoint, origin_for, verifier_key};
use crate::wire::{self, FIELDS_MAX, Message, code, read_u64, tag, u64_field};

/// Requests one connection may make before it is closed.
pub const REQUESTS_PER_CONNECTION_MAX: usize = 256;
/// Connections served at once; more wait for the listener.
pub const CONNECTIONS_MAX: usize = 256;
/// How long the server waits for a client's next request.
pub const IDLE_SECS: u64 = 30;
/// Lookups that find nothing (absent, or private and not named by a key)
/// one client address may make per [`MISS_WINDOW_SECS`]; then every lookup
/// from it is refused until the window ends. Guessing lookup-only handles
/// online is the only way to find them; this bounds its speed.
pub const LOOKUP_MISSES_PER_WINDOW_MAX: u32 = 30;
/// The miss-counting window, seconds.
pub const MISS_WINDOW_SECS: u64 = 60;
/// Client addresses whose misses are counted at once; when full, windows
/// that ended are dropped, and if none has, an unknown address is refused
/// (fail closed) until one ends.
pub const MISS_ADDRESSES_MAX: usize = 65_536;

const OPERATOR_KEY_FILE: &str = "operator.key";
const STORE_DIR: &str = "log";
const ENTRY_PREFIX: &[u8] = b"entry-1/";

/// A registry server over its directory.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    db: rocksdb::DB,
    operator: Identity,
    origin: String,
    verifier: String,
    log: Mutex<Log>,
    /// Per client address (IPv4, or IPv6 /64): misses in the current window
    /// and when it started (Unix seconds).
    misses: Mutex<HashMap<Vec<u8>, (u32, u64)>>,
}

/// The log in memory.
///
/// # Invariants
/// `tree.size() == entries.len()`; `handles[h].indexes` lists, in order, the
/// indexes of `h`'s entries, and `handles[h].state` is the chain's state
/// after them; `public` holds the handles whose state is public;
/// `note` is the checkpoint of the whole tree, signed.
struct Log {
    tree: Tree,
    entries: Vec<Entry>,
    handles: HashMap<String, Handle>,
    public: BTreeSet<String>,
    note: String,
}

struct Handle {
    indexes: Vec<u64>,
    state: HandleState,
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn entry_key(index: u64) -> Vec<u8> {
    let mut key = ENTRY_PREFIX.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

impl Log {
    /// Appends an entry that follows its handle's chain (`state` is the
    /// chain's state after it).
    fn append(
        &mut self,
        entry: Entry,
        state: HandleState,
        operator: &Identity,
        origin: &str,
    ) -> u64 {
        let index = self.tree.push(&entry.leaf());
        let handle = self
            .handles
            .entry(entry.handle.clone())
            .or_insert_with(|| Handle {
                indexes: Vec::new(),
                state: state.clone(),
            });
        handle.indexes.push(index);
        if state.discoverability == Discoverability::Public && !state.revoked {
            self.public.insert(entry.handle.clone());
        } else {
            self.public.remove(&entry.handle);
        }
        handle.state = state;
        self.entries.push(entry);
        debug_assert_eq!(self.tree.size(), self.entries.len() as u64);
        self.note = Checkpoint {
            origin: origin.to_owned(),
            size: self.tree.size(),
            root: self.tree.root(self.tree.size()),
        }
        .sign(operator);
        index
    }
}

impl Server {
    /// Opens (or creates) the registry in `dir`: a new one gets a new
    /// operator key in `dir/operator.key`.
    pub fn open(dir: &Path) -> Result<Server> {
        std::fs::create_dir_all(dir)?;
        let key_file = dir.join(OPERATOR_KEY_FILE);
        let operator = if key_file.exists() {
            Identity::load(&key_file)?
        } else {
            let operator = Identity::generate();
            operator.save(&key_file)?;
            operator
        };
        let key = operator.author().0;
        let origin = origin_for(&key);
        let verifier = verifier_key(&origin, &key);
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, dir.join(STORE_DIR))?;
        let mut log = Log {
            tree: Tree::new(),
            entries: Vec::new(),
            handles: HashMap::new(),
            public: BTreeSet::new(),
            note: Checkpoint {
                origin: origin.clone(),
                size: 0,
                root: crate::merkle::empty_root(),
            }
            .sign(&operator),
        };
        for item in db.prefix_iterator(ENTRY_PREFIX) {
            let (key, value) = item?;
            if !key.starts_with(ENTRY_PREFIX) {
                break;
            }
            if *key != *entry_key(log.tree.size()) {
                return Err(Error::Corrupt("a gap in the stored entries"));
            }
            let entry = Entry::decode(&value).map_err(|_| Error::Corrupt("a stored entry"))?;
            let before = log.handles.get(&entry.handle).map(|handle| &handle.state);
            let state = HandleState::apply(before, &entry).map_err(|_| {
                Error::Corrupt("a stored entry that does not follow its handle's chain")
            })?;
            log.append(entry, state, &operator, &origin);
        }
        tracing::info!(entries = log.tree.size(), %verifier, "registry opened");
        Ok(Server {
            inner: Arc::new(Inner {
                db,
                operator,
                origin,
                verifier,
                log: Mutex::new(log),
                misses: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The operator's verifier key (signed-note form): clients may pin it
    /// (`--registry-key`) instead of trusting the first one they see.
    pub fn verifier_key(&self) -> &str {
        &self.inner.verifier
    }

    /// The current signed checkpoint.
    pub fn checkpoint(&self) -> String {
        self.lock().note.clone()
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self, listener: TcpListener) -> Result<()> {
        wire::accept_bounded(
            listener,
            CONNECTIONS_MAX,
            "registry client",
            move |stream, peer| {
                let server = self.clone();
                async move { server.connection(stream, peer).await }
            },
        )
        .await?;
        Ok(())
    }

    /// Serves one connection: at most [`REQUESTS_PER_CONNECTION_MAX`]
    /// requests, each within [`IDLE_SECS`].
    async fn connection(&self, mut stream: TcpStream, peer: SocketAddr) -> Result<()> {
        stream.set_nodelay(true)?;
        for _ in 0..REQUESTS_PER_CONNECTION_MAX {
            let request =
                match tokio::time::timeout(Duration::from_secs(IDLE_SECS), wire::read(&mut stream))
                    .await
                {
                    Ok(Ok(request)) => request,
                    Ok(Err(peers_keys::Error::Io(error)))
                        if error.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        return Ok(());
                    }
                    Ok(Err(error)) => {
                        let _ =
                            wire::write(&mut stream, &wire::error(code::BAD_REQUEST, None)).await;
                        return Err(error.into());
                    }
                    Err(_) => return Err(Error::Timeout(IDLE_SECS)),
                };
            let answers = match self.answer(request, peer.ip()) {
                Ok(answers) => answers,
                Err(error) => {
                    tracing::warn!(%peer, %error, "registry failed a request");
                    vec![wire::error(code::INTERNAL, None)]
                }
            };
            for answer in &answers {
                wire::write(&mut stream, answer).await?;
            }
        }
        Ok(())
    }

    /// The answer to one request from `address`. `Err` is the server's own
    /// failure (its store); a client's mistake is an `ERROR` answer.
    pub fn answer(&self, request: Message, address: IpAddr) -> Result<Vec<Message>> {
        let bad = || Ok(vec![wire::error(code::BAD_REQUEST, None)]);
        match request.tag {
            tag::LOOKUP => {
                let Ok([handle, known, seen]) = <[Vec<u8>; 3]>::try_from(request.fields) else {
                    return bad();
                };
                let (Ok(handle), Some(seen)) = (String::from_utf8(handle), read_u64(&seen)) else {
                    return bad();
                };
                let known = match known.len() {
                    0 => None,
                    32 => <[u8; 32]>::try_from(known.as_slice()).ok(),
                    _ => return bad(),
                };
                let address = address_key(address);
                if let Err(retry_after_secs) = self.check_misses(&address, false) {
                    return Ok(vec![wire::limited(retry_after_secs)]);
                }
                let log = self.lock();
                let found = log
                    .handles
                    .get(&handle)
                    .filter(|found| found.state.answers(known.as_ref()));
                match found {
                    Some(found) => Ok(self.state_answer(&log, &found.indexes, seen)),
                    None => {
                        drop(log);
                        let _ = self.check_misses(&address, true);
                        Ok(vec![wire::error(code::NOT_FOUND, None)])
                    }
                }
            }
            tag::SUBMIT => {
                let Ok([entry, seen]) = <[Vec<u8>; 2]>::try_from(request.fields) else {
                    return bad();
                };
                let (Ok(entry), Some(seen)) = (Entry::decode(&entry), read_u64(&seen)) else {
                    return bad();
                };
                self.submit(entry, seen)
            }
            tag::CONSISTENCY => {
                let Ok([old, new]) = <[Vec<u8>; 2]>::try_from(request.fields) else {
                    return bad();
                };
                let (Some(old), Some(new)) = (read_u64(&old), read_u64(&new)) else {
                    return bad();
                };
                let log = self.lock();
                if old == 0 || old > new || new > log.tree.size() {
                    return bad();
                }
                let proof = encode_proof(&log.tree.consistency_proof(old, new));
                Ok(vec![Message::new(tag::PROOF, vec![proof])])
            }
            tag::LEAVES => {
                let Ok([start]) = <[Vec<u8>; 1]>::try_from(request.fields) else {
                    return bad();
                };
                let Some(start) = read_u64(&start) else {
                    return bad();
                };
                let log = self.lock();
                let leaves = (start..log.tree.size())
                    .take(FIELDS_MAX)
                    .map(|index| log.entries[index as usize].leaf())
                    .collect();
                Ok(vec![Message::new(tag::LEAF_DATA, leaves)])
            }
            tag::LIST => {
                let Ok([after]) = <[Vec<u8>; 1]>::try_from(request.fields) else {
                    return bad();
                };
                let Ok(after) = String::from_utf8(after) else {
                    return bad();
                };
                let log = self.lock();
                let handles = log
                    .public
                    .range::<String, _>((
                        std::ops::Bound::Excluded(&after),
                        std::ops::Bound::Unbounded,
                    ))
                    .take(FIELDS_MAX)
                    .map(|handle| handle.as_bytes().to_vec())
                    .collect();
                Ok(vec![Message::new(tag::HANDLES, handles)])
            }
            _ => bad(),
        }
    }

    /// Checks `entry` against its handle's chain and the clock, logs it,
    /// and answers with the handle's state as a lookup would.
    fn submit(&self, entry: Entry, seen: u64) -> Result<Vec<Message>> {
        let refuse = |refusal| Ok(vec![wire::error(code::REFUSED, Some(refusal))]);
        let now = now_secs();
        let dated = matches!(entry.kind, crate::Kind::Claim | crate::Kind::Rotate);
        if dated && (entry.expires <= now || entry.expires > now.saturating_add(EXPIRY_SECS_MAX)) {
            return refuse(Refusal::BadExpiry);
        }
        let mut log = self.lock();
        let before = log.handles.get(&entry.handle).map(|handle| &handle.state);
        let state = match HandleState::apply(before, &entry) {
            Ok(state) => state,
            Err(refusal) => return refuse(refusal),
        };
        debug_assert!(state.entries <= ENTRIES_PER_HANDLE_MAX);
        let index = log.tree.size();
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        self.inner
            .db
            .put_opt(entry_key(index), entry.encode(), &write)?;
        let handle = entry.handle.clone();
        let appended = log.append(entry, state, &self.inner.operator, &self.inner.origin);
        debug_assert_eq!(appended, index);
        tracing::info!(%handle, index, "logged");
        let indexes = log.handles[&handle].indexes.clone();
        Ok(self.state_answer(&log, &indexes, seen))
    }

    /// `STATE` then one `ENTRY` per index: the checkpoint, a consistency
    /// proof from `seen` (none when `seen` is 0 or not below the size), and
    /// each entry with its inclusion proof.
    fn state_answer(&self, log: &Log, indexes: &[u64], seen: u64) -> Vec<Message> {
        let size = log.tree.size();
        let consistency = if seen > 0 && seen < size {
            encode_proof(&log.tree.consistency_proof(seen, size))
        } else {
            Vec::new()
        };
        let count = u8::try_from(indexes.len()).expect("at most ENTRIES_PER_HANDLE_MAX entries");
        let mut answers = vec![Message::new(
            tag::STATE,
            vec![
                self.inner.verifier.as_bytes().to_vec(),
                log.note.as_bytes().to_vec(),
                consistency,
                vec![count],
            ],
        )];
        for &index in indexes {
            answers.push(Message::new(
                tag::ENTRY,
                vec![
                    u64_field(index),
                    log.entries[index as usize].encode(),
                    encode_proof(&log.tree.inclusion_proof(index, size)),
                ],
            ));
        }
        answers
    }

    /// Whether `address` may look up now, or in how many seconds; with
    /// `miss`, counts one miss first.
    fn check_misses(&self, address: &[u8], miss: bool) -> std::result::Result<(), u64> {
        let now = now_secs();
        let mut misses = self
            .inner
            .misses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ended = |start: u64| now.saturating_sub(start) >= MISS_WINDOW_SECS;
        if !misses.contains_key(address) && misses.len() >= MISS_ADDRESSES_MAX {
            misses.retain(|_, (_, start)| !ended(*start));
            if misses.len() >= MISS_ADDRESSES_MAX {
                return Err(MISS_WINDOW_SECS);
            }
        }
        let (count, start) = misses.entry(address.to_vec()).or_insert((0, now));
        if ended(*start) {
            *count = 0;
            *start = now;
        }
        if miss {
            *count = count.saturating_add(1);
        }
        if *count >= LOOKUP_MISSES_PER_WINDOW_MAX && !miss {
            return Err(MISS_WINDOW_SECS
                .saturating_sub(now.saturating_sub(*start))
                .max(1));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.inner
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Misses are counted per IPv4 address and per IPv6 /64 (one host usually
/// holds a whole /64), as the key server's login limits are.
fn address_key(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets()[..8].to_vec(),
        },
    }
}

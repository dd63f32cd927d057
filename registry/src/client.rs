//! The client: submit entries, look handles up, and believe an answer only
//! after its proofs verify against the checkpoints this client has seen.
//!
//! Every answer carries the registry's latest signed checkpoint. The client
//! checks, in order: the operator's key is the one pinned for the address
//! (the first one seen, or `--registry-key`); the note is signed by it; the
//! new tree extends the last one this client saw (a consistency proof, or
//! equal roots at equal sizes); every entry of the handle's chain is in the
//! tree (an inclusion proof each); the chain follows the rules from its
//! claim on ([`HandleState::apply`]); and it still contains the latest entry
//! this client saw for the handle. Only then is the state file updated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use peers_engine::Identity;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::entry::{Discoverability, ENTRIES_PER_HANDLE_MAX, Entry, HandleState, Signer};
use crate::error::{Error, Result};
use crate::merkle::{Hash, decode_proof, leaf_hash, verify_consistency, verify_inclusion};
use crate::note::{Checkpoint, parse_verifier_key};
use crate::wire::{self, FIELDS_MAX, Message, read_u64, tag, u64_field};

/// How long the client waits for the registry, seconds.
pub const TIMEOUT_SECS: u64 = 10;
/// The largest state file a client reads, bytes.
pub const STATE_BYTES_MAX: u64 = 16 << 20;
/// The state file's format version.
pub const STATE_VERSION: u32 = 1;

/// What a client remembers, per registry address: the operator's verifier
/// key, the latest checkpoint it verified, and per handle it looked up the
/// latest entry it saw (docs/SERVICES.md "Public key registry: client state").
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// By address (HOST:PORT).
    pub registries: BTreeMap<String, RegistryState>,
}

/// What a client remembers of one registry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistryState {
    /// The operator's verifier key (signed-note form).
    pub key: String,
    /// The latest checkpoint verified (the signed note).
    pub checkpoint: String,
    /// Per handle: the latest entry seen.
    pub handles: BTreeMap<String, SeenEntry>,
}

/// The latest entry seen for a handle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeenEntry {
    /// Its index in the log.
    pub index: u64,
    /// Its hash (hex).
    pub hash: String,
}

impl State {
    /// Reads the state file (an absent file is an empty state).
    pub fn load(path: &Path) -> Result<State> {
        let fail = |what: String| Error::State {
            path: path.display().to_string(),
            what,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: STATE_VERSION,
                    registries: BTreeMap::new(),
                });
            }
            Err(error) => return Err(fail(error.to_string())),
        };
        if bytes.len() as u64 > STATE_BYTES_MAX {
            return Err(fail("larger than a state file may be".to_owned()));
        }
        let state: State =
            serde_json::from_slice(&bytes).map_err(|error| fail(error.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(fail(format!(
                "format version {} is not {STATE_VERSION}",
                state.version
            )));
        }
        Ok(state)
    }

    /// Writes the state file: a temporary file beside it, synced, then renamed over it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let fail = |error: std::io::Error| Error::State {
            path: path.display().to_string(),
            what: error.to_string(),
        };
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        let text = serde_json::to_vec_pretty(self).map_err(|error| Error::State {
            path: path.display().to_string(),
            what: error.to_string(),
        })?;
        let temporary = path.with_extension("tmp");
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&temporary).map_err(fail)?;
            file.write_all(&text).map_err(fail)?;
            file.sync_all().map_err(fail)?;
        }
        std::fs::rename(&temporary, path).map_err(fail)
    }
}

/// A handle's verified state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The chain's state after its last entry.
    pub state: HandleState,
    /// The index of its last entry.
    pub index: u64,
    /// The last entry.
    pub latest: Entry,
    /// The size of the checkpoint the proofs verified against.
    pub size: u64,
}

impl Resolved {
    /// The handle's key, if it is neither revoked nor expired at `now` (Unix seconds).
    pub fn usable_key(&self, now: u64) -> Result<[u8; 32]> {
        if self.state.revoked {
            return Err(Error::Revoked(self.state.handle.clone()));
        }
        if self.state.expires <= now {
            return Err(Error::Expired {
                handle: self.state.handle.clone(),
                expires: self.state.expires,
            });
        }
        Ok(self.state.key)
    }
}

/// A client of the registry at one address, remembering in one state file.
#[derive(Clone, Debug)]
pub struct Client {
    address: String,
    state: PathBuf,
    pinned: Option<String>,
    timeout_secs: u64,
}

struct Connection {
    stream: TcpStream,
    timeout_secs: u64,
}

impl Connection {
    async fn send(&mut self, message: &Message) -> Result<()> {
        Ok(wire::write(&mut self.stream, message).await?)
    }

    async fn receive(&mut self) -> Result<Message> {
        tokio::time::timeout(
            Duration::from_secs(self.timeout_secs),
            wire::read(&mut self.stream),
        )
        .await
        .map_err(|_| Error::Timeout(self.timeout_secs))?
        .map_err(Error::from)
    }
}

impl Client {
    /// A client of the registry at `address` (HOST:PORT) keeping what it has
    /// verified in `state` (a JSON file, created when first needed).
    pub fn new(address: &str, state: &Path) -> Client {
        Client {
            address: address.to_owned(),
            state: state.to_owned(),
            pinned: None,
            timeout_secs: TIMEOUT_SECS,
        }
    }

    /// Requires the operator's verifier key to be `key` (instead of
    /// trusting the first one this client sees).
    pub fn pin(mut self, key: &str) -> Result<Client> {
        parse_verifier_key(key)?;
        self.pinned = Some(key.to_owned());
        Ok(self)
    }

    async fn connect(&self) -> Result<Connection> {
        let stream = tokio::time::timeout(
            Duration::from_secs(self.timeout_secs),
            TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| Error::Timeout(self.timeout_secs))??;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            timeout_secs: self.timeout_secs,
        })
    }

    /// The size of the latest checkpoint seen from this registry (0: none).
    fn seen_size(&self, state: &State) -> Result<u64> {
        match state.registries.get(&self.address) {
            Some(registry) => Ok(Checkpoint::parse_body(body_of(&registry.checkpoint)?)?.size),
            None => Ok(0),
        }
    }

    /// Looks `handle` up and verifies the answer; `known_key` lets a
    /// private handle answer (one of its keys, or its recovery key).
    pub async fn lookup(&self, handle: &str, known_key: Option<[u8; 32]>) -> Result<Resolved> {
        crate::entry::check_handle(handle)?;
        let mut state = State::load(&self.state)?;
        let seen = self.seen_size(&state)?;
        let mut connection = self.connect().await?;
        connection
            .send(&Message::new(
                tag::LOOKUP,
                vec![
                    handle.as_bytes().to_vec(),
                    known_key.map_or(Vec::new(), |key| key.to_vec()),
                    u64_field(seen),
                ],
            ))
            .await?;
        let resolved = self
            .verify_answer(&mut connection, &mut state, handle)
            .await?;
        state.save(&self.state)?;
        Ok(resolved)
    }

    /// Submits `entry` and verifies that the registry logged it: the answer
    /// is the handle's chain, which must end with it.
    pub async fn submit(&self, entry: &Entry) -> Result<Resolved> {
        let mut state = State::load(&self.state)?;
        let seen = self.seen_size(&state)?;
        let mut connection = self.connect().await?;
        connection
            .send(&Message::new(
                tag::SUBMIT,
                vec![entry.encode(), u64_field(seen)],
            ))
            .await?;
        let resolved = self
            .verify_answer(&mut connection, &mut state, &entry.handle)
            .await?;
        if resolved.latest != *entry {
            return Err(Error::Protocol(
                "the registry answered a submission without the entry",
            ));
        }
        state.save(&self.state)?;
        Ok(resolved)
    }

    /// Claims `handle` for `identity`.
    pub async fn claim(
        &self,
        identity: &Identity,
        handle: &str,
        discoverability: Discoverability,
        expires: u64,
        recovery: Option<[u8; 32]>,
    ) -> Result<Resolved> {
        self.submit(&Entry::claim(
            identity,
            handle,
            discoverability,
            expires,
            recovery,
        )?)
        .await
    }

    /// Rotates `handle` to `key` (or renews it: the same key, a new
    /// expiry), signed by `identity` as `signer`; keeps the discoverability
    /// unless `discoverability` is given.
    pub async fn rotate(
        &self,
        identity: &Identity,
        signer: Signer,
        handle: &str,
        key: [u8; 32],
        discoverability: Option<Discoverability>,
        expires: u64,
    ) -> Result<Resolved> {
        let current = self.lookup(handle, Some(identity.author().0)).await?;
        let entry = Entry::rotate(
            identity,
            signer,
            handle,
            current.state.latest,
            key,
            discoverability.unwrap_or(current.state.discoverability),
            expires,
        )?;
        self.submit(&entry).await
    }

    /// Revokes `handle` for good, signed by `identity` as `signer`.
    pub async fn revoke(
        &self,
        identity: &Identity,
        signer: Signer,
        handle: &str,
    ) -> Result<Resolved> {
        let current = self.lookup(handle, Some(identity.author().0)).await?;
        let entry = Entry::revoke(
            identity,
            signer,
            handle,
            current.state.latest,
            current.state.discoverability,
        )?;
        self.submit(&entry).await
    }

    /// Checks another party's checkpoint `note` (e.g. another client's)
    /// against the one this client holds: the smaller must be a prefix of
    /// the larger, which the registry must prove. Catches a split view once
    /// two clients compare what they were shown.
    pub async fn compare(&self, note: &str) -> Result<()> {
        let state = State::load(&self.state)?;
        let registry = state
            .registries
            .get(&self.address)
            .ok_or_else(|| Error::State {
                path: self.state.display().to_string(),
                what: format!(
                    "no checkpoint of {} yet: look a handle up first",
                    self.address
                ),
            })?;
        let (origin, key) = parse_verifier_key(&registry.key)?;
        let mine = Checkpoint::open(&registry.checkpoint, &origin, &key)?;
        let theirs = Checkpoint::open(note, &origin, &key)?;
        let (old, new) = if mine.size <= theirs.size {
            (&mine, &theirs)
        } else {
            (&theirs, &mine)
        };
        if old.size == new.size || old.size == 0 {
            return check_extends(old, new, &[]);
        }
        let mut connection = self.connect().await?;
        connection
            .send(&Message::new(
                tag::CONSISTENCY,
                vec![u64_field(old.size), u64_field(new.size)],
            ))
            .await?;
        let fields = match wire::expect(connection.receive().await?, tag::PROOF, 1, "") {
            Ok(fields) => fields,
            Err(Error::Server(_)) => {
                return Err(Error::Unproven {
                    old: old.size,
                    new: new.size,
                });
            }
            Err(error) => return Err(error),
        };
        let proof = decode_proof(&fields[0]).ok_or(Error::Protocol("a malformed proof"))?;
        check_extends(old, new, &proof)
    }

    /// The log's leaves from `start`, up to 8 (what a monitor reads).
    pub async fn leaves(&self, start: u64) -> Result<Vec<Vec<u8>>> {
        let mut connection = self.connect().await?;
        connection
            .send(&Message::new(tag::LEAVES, vec![u64_field(start)]))
            .await?;
        let message = connection.receive().await?;
        if message.tag != tag::LEAF_DATA {
            return Err(Error::Protocol("an unexpected message"));
        }
        Ok(message.fields)
    }

    /// Public handles after `after` in order, up to 8.
    pub async fn list(&self, after: &str) -> Result<Vec<String>> {
        let mut connection = self.connect().await?;
        connection
            .send(&Message::new(tag::LIST, vec![after.as_bytes().to_vec()]))
            .await?;
        let message = connection.receive().await?;
        if message.tag != tag::HANDLES || message.fields.len() > FIELDS_MAX {
            return Err(Error::Protocol("an unexpected message"));
        }
        message
            .fields
            .into_iter()
            .map(|field| {
                String::from_utf8(field).map_err(|_| Error::Protocol("a handle that is not UTF-8"))
            })
            .collect()
    }

    /// Reads a `STATE` answer and its entries, verifies all of it against
    /// `state`, and records the new checkpoint and the handle's latest
    /// entry in `state` (the caller saves it).
    async fn verify_answer(
        &self,
        connection: &mut Connection,
        state: &mut State,
        handle: &str,
    ) -> Result<Resolved> {
        let fields = wire::expect(connection.receive().await?, tag::STATE, 4, handle)?;
        let [verifier, note, consistency, count]: [Vec<u8>; 4] = fields
            .try_into()
            .map_err(|_| Error::Protocol("a STATE of four fields"))?;
        let verifier = String::from_utf8(verifier)
            .map_err(|_| Error::Protocol("a verifier key that is not UTF-8"))?;
        let note = String::from_utf8(note).map_err(|_| Error::BadCheckpoint("not UTF-8"))?;
        let count = match count.as_slice() {
            [count] if (1..=ENTRIES_PER_HANDLE_MAX).contains(&usize::from(*count)) => {
                usize::from(*count)
            }
            _ => return Err(Error::Protocol("an entry count out of range")),
        };
        let consistency = decode_proof(&consistency).ok_or(Error::Protocol("a malformed proof"))?;
        let checkpoint = self.check_checkpoint(state, &verifier, &note, &consistency)?;
        let mut chain: Option<HandleState> = None;
        let mut last: Option<(u64, Entry)> = None;
        let mut seen_in_chain: Vec<(u64, String)> = Vec::with_capacity(count);
        for position in 0..count {
            let fields = wire::expect(connection.receive().await?, tag::ENTRY, 3, handle)?;
            let index = read_u64(&fields[0]).ok_or(Error::Protocol("an index of 8 bytes"))?;
            let entry = Entry::decode(&fields[1])?;
            let proof = decode_proof(&fields[2]).ok_or(Error::Protocol("a malformed proof"))?;
            if entry.handle != handle {
                return Err(Error::Protocol("an entry of another handle"));
            }
            if last
                .as_ref()
                .is_some_and(|(previous, _)| index <= *previous)
            {
                return Err(Error::Protocol("entries out of log order"));
            }
            let leaf = leaf_hash(&entry.leaf());
            if !verify_inclusion(&leaf, index, checkpoint.size, &proof, &checkpoint.root) {
                return Err(Error::NotIncluded {
                    index,
                    size: checkpoint.size,
                });
            }
            let next =
                HandleState::apply(chain.as_ref(), &entry).map_err(|refusal| Error::BadChain {
                    handle: handle.to_owned(),
                    position,
                    refusal,
                })?;
            seen_in_chain.push((index, hex_of(&next.latest)));
            chain = Some(next);
            last = Some((index, entry));
        }
        let (Some(chain), Some((index, latest))) = (chain, last) else {
            return Err(Error::Protocol("an answer without entries"));
        };
        let registry = state.registries.entry(self.address.clone()).or_default();
        if let Some(seen) = registry.handles.get(handle) {
            // The chain must still hold the entry this client saw last.
            let still_there = seen_in_chain
                .iter()
                .any(|(at, hash)| *at == seen.index && *hash == seen.hash);
            if !still_there {
                return Err(Error::HandleRollback {
                    handle: handle.to_owned(),
                    index: seen.index,
                });
            }
        }
        registry.key = verifier;
        registry.checkpoint = note;
        registry.handles.insert(
            handle.to_owned(),
            SeenEntry {
                index,
                hash: hex_of(&chain.latest),
            },
        );
        Ok(Resolved {
            state: chain,
            index,
            latest,
            size: checkpoint.size,
        })
    }

    /// Checks the note against the pinned key and the last checkpoint seen.
    fn check_checkpoint(
        &self,
        state: &State,
        verifier: &str,
        note: &str,
        consistency: &[Hash],
    ) -> Result<Checkpoint> {
        let previous = state.registries.get(&self.address);
        let pinned = self
            .pinned
            .as_deref()
            .or(previous.map(|registry| registry.key.as_str()));
        if let Some(pinned) = pinned.filter(|pinned| *pinned != verifier) {
            return Err(Error::OperatorKeyChanged {
                address: self.address.clone(),
                pinned: pinned.to_owned(),
                offered: verifier.to_owned(),
                state: self.state.display().to_string(),
            });
        }
        let (origin, key) = parse_verifier_key(verifier)?;
        let checkpoint = Checkpoint::open(note, &origin, &key)?;
        if let Some(previous) = previous {
            let old = Checkpoint::open(&previous.checkpoint, &origin, &key)?;
            check_extends(&old, &checkpoint, consistency)?;
        }
        Ok(checkpoint)
    }
}

/// That `new` extends `old`, by `proof`; the error names what failed.
fn check_extends(old: &Checkpoint, new: &Checkpoint, proof: &[Hash]) -> Result<()> {
    if new.size < old.size {
        return Err(Error::Rollback {
            seen: old.size,
            offered: new.size,
        });
    }
    if new.size == old.size {
        if new.root != old.root {
            return Err(Error::Fork {
                size: new.size,
                seen: hex_of(&old.root),
                offered: hex_of(&new.root),
            });
        }
        return Ok(());
    }
    if old.size == 0 {
        return Ok(());
    }
    if !verify_consistency(old.size, new.size, proof, &old.root, &new.root) {
        return Err(Error::Inconsistent {
            old: old.size,
            new: new.size,
        });
    }
    Ok(())
}

/// The body of a note (up to and including the first blank line's newline).
fn body_of(note: &str) -> Result<&str> {
    let split = note
        .find("\n\n")
        .ok_or(Error::BadCheckpoint("no blank line"))?;
    Ok(&note[..split + 1])
}

fn hex_of(hash: &Hash) -> String {
    hex::encode(hash)
}

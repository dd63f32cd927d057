//! The embedder's API: [`Db`], [`Options`], [`Transaction`] and reads.
//!
//! `Db` is a thin layer: opening a directory (`directory`), local commits
//! (`commit`), transactions (`transaction`) and automerge documents
//! (`automerge`) are its submodules; every change reaches the view through
//! the one writer (`crate::ingest::Writer`), and reads go to `crate::reads`.

mod automerge;
mod checkpoint;
mod commit;
mod directory;
mod generation;
mod transaction;
mod trim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use peers_wal::{Position, SegmentInfo as LogSegment, SyncMode};
use rocksdb::DB;
use tokio::sync::broadcast;

use crate::Value;
use crate::access::Membership;
use crate::change::{
    Author, CHANGE_FORMAT_VERSION, Change, ChangeBody, ChangeHash, DatabaseId, Op, Role, StateHash,
};
use crate::checkpoint::Standing;
use crate::error::{Refusal, Result};
use crate::identity::Identity;
use crate::ingest::{ApplyReport, Progress, Select, Source, Writer};
use crate::keys;
use crate::log::{Log, OpenLog, REAL_DISK};
use crate::pending::PENDING_CHANGES_MAX;
use crate::reads::{self, Row};
use crate::records::ChangeMeta;
use crate::signature;
use crate::version_vector::VersionVector;
use crate::view::{FieldState, decode};
use commit::{Chain, CommitRequest, now_ms};
pub(crate) use directory::VIEW_DIR;
use directory::{
    IDENTITY_FILE, applied_position, io_error, lock_dir, open_view, prepare_new,
    read_database_file, reset_view, write_database_file,
};
pub use directory::{LOCK_FILE, RECEIVED_SNAPSHOT_FILE};
pub use generation::RECEIVING_SNAPSHOT_PREFIX;
use generation::{log_dir, read_generation, remove_other_generations, snapshot_file, view_dir};
pub use transaction::Transaction;
pub use trim::{TrimReport, TrimStep};

/// Changes buffered per subscriber before it lags.
pub const SUBSCRIBE_BUFFER_CHANGES: usize = 4096;
/// Most changes applied as one group by `Db::apply` (one log append each).
const PIPELINE_CHUNK_CHANGES: usize = 2048;

/// One job of `Db::apply`'s pipeline: its changes decoded, looked up and
/// verified.
#[derive(Default)]
struct Checked {
    verified: Vec<Change>,
    duplicates: Vec<ChangeHash>,
    refused: signature::Refused,
}

/// How a database is opened.
#[derive(Clone, Debug)]
pub struct Options {
    /// `Always` (default): a commit returns once fsynced, sharing the fsync
    /// with every commit waiting at that moment. `Relaxed`: once written to
    /// the OS; a power loss may lose recent commits, a process crash does not.
    pub sync: SyncMode,
    /// Size at which the log starts a new segment file.
    pub segment_bytes_max: u64,
    /// Most received changes held waiting for a missing predecessor.
    pub pending_changes_max: usize,
    /// Identity for a new database or replica; generated when `None`.
    pub identity: Option<Identity>,
    /// For [`Db::create`]: `true` (default), only keys the owner or an
    /// admin granted may write (FORMAT.md "Authorization"); `false`, any
    /// key that knows the database id may write.
    pub members_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Always,
            segment_bytes_max: 64 * 1024 * 1024,
            pending_changes_max: PENDING_CHANGES_MAX,
            identity: None,
            members_only: true,
        }
    }
}

/// What [`Db::open`] found and repaired after a crash or a power loss
/// ([`Db::recovery`]). A clean shutdown leaves nothing to repair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// A log tail cut because its last write was torn (never acknowledged).
    pub torn_tail: Option<peers_wal::TornTail>,
    /// The view held changes the log had lost (relaxed commits the power
    /// took with it) and was rebuilt from the log.
    pub view_rebuilt: bool,
    /// Changes replayed from the log into the view.
    pub replayed: u64,
}

/// One entry of [`Db::members`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The key.
    pub key: Author,
    /// Its role now; `None` once revoked.
    pub role: Option<Role>,
    /// For a revoked key: its last change that stays valid.
    pub revoked_after: Option<u64>,
}

/// The writer lock. Letting go of it after a change to the writer's state
/// publishes what a reservation reads of that state ([`commit::Basis`]),
/// so that local commits reserve without it.
struct WriterGuard<'a> {
    db: &'a Db,
    guard: MutexGuard<'a, Writer>,
    /// No change since the basis was last published: every change goes
    /// through `deref_mut`, which clears it.
    published: bool,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Writer;

    fn deref(&self) -> &Writer {
        &self.guard
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        self.published = false;
        &mut self.guard
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if !self.published {
            self.db.publish_basis(&self.guard);
        }
    }
}

struct Inner {
    dir: PathBuf,
    database: DatabaseId,
    identity: Identity,
    log: Log,
    view: Arc<DB>,
    writer: Mutex<Writer>,
    /// Who holds which role, as of the last applied group; replaced (never
    /// held across I/O) after each group that changed it, before the
    /// group's changes are published to subscribers.
    membership: RwLock<Arc<Membership>>,
    /// [`Writer::shared_head_seqs`].
    head_seqs: Arc<RwLock<crate::HashMap<Author, u64>>>,
    /// Signed local changes waiting for a group commit (`commit.rs`).
    queue: Mutex<Vec<CommitRequest>>,
    /// This replica's chain as reserved by commits in flight, and what a
    /// reservation reads of the writer's state (`commit.rs`). Taken while
    /// `writer` is held, or alone; never held while taking `writer`.
    chain: Mutex<Chain>,
    events: broadcast::Sender<Change>,
    /// [`Options::pending_changes_max`].
    pending_changes_max: usize,
    /// What the open had to repair.
    recovery: Recovery,
    /// Checkpoint verdicts computed so far (confirmed or void: a function of
    /// the checkpoint and its closure, so they never change), so that
    /// judging a chain of checkpoints judges each once.
    verdicts: Mutex<crate::HashMap<ChangeHash, crate::CheckpointVerdict>>,
    /// What each confirmed checkpoint of `verdicts` settles.
    settlements: Mutex<crate::HashMap<ChangeHash, crate::checkpoint::Standing>>,
    /// Held while settling, so that one settlement runs at a time.
    settling: Mutex<()>,
    /// Whether a checkpoint may be waiting to stand: set at open and when a
    /// group brings an owner's checkpoint, cleared by [`Db::settle`] when
    /// no later checkpoint waits for its frontier.
    settle_due: std::sync::atomic::AtomicBool,
    /// The generation in use (FORMAT.md "Trimming"; 0: never trimmed).
    generation: u64,
    /// A trimmed generation's checkpoint (its snapshot file's).
    trimmed: Option<Change>,
    /// Held (locked) while open; unlocked when the last clone drops, after
    /// the fields above (it is declared last, so dropped last: the view and
    /// log are closed before another process may open them). Shared with
    /// [`Db::trim`], which holds it beyond its `Db`.
    _lock: Arc<std::fs::File>,
}

/// An open database. Cheap to clone; `Send + Sync`; commits from many
/// threads share group commits.
///
/// ```
/// use peers_engine::{Db, Options, Value};
/// # fn main() -> Result<(), peers_engine::Error> {
/// let dir = tempfile::tempdir().expect("temp dir");
/// let db = Db::create(dir.path().join("notes"), Options::default())?;
/// let mut tx = db.transaction();
/// tx.set("notes", "n1", "title", "Hello");
/// tx.increment("notes", "n1", "views", 1);
/// tx.commit()?;
/// assert_eq!(db.get_field("notes", "n1", "title")?, Some(Value::Str("Hello".into())));
/// for row in db.scan("notes") {
///     let (id, fields) = row?;
///     println!("{id}: {fields:?}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.inner.dir)
            .field("database", &self.inner.database)
            .finish()
    }
}

impl Db {
    /// Creates a new database (and its genesis change) in a new directory.
    pub fn create(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        Db::create_on(dir.as_ref(), options, REAL_DISK)
    }

    pub(crate) fn create_on(dir: &Path, options: Options, open_log: OpenLog<'_>) -> Result<Db> {
        let identity = prepare_new(dir, &options)?;
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let genesis = Change::sign(
            ChangeBody {
                version: CHANGE_FORMAT_VERSION,
                database: DatabaseId::GENESIS,
                author: identity.author(),
                seq: 1,
                prev: None,
                deps: Vec::new(),
                lamport: 1,
                wall_ms: now_ms(),
                ops: if options.members_only {
                    vec![Op::Genesis { nonce }, Op::MembersOnly]
                } else {
                    vec![Op::Genesis { nonce }]
                },
            },
            identity.signing_key(),
        );
        let database = DatabaseId(genesis.hash().0);
        write_database_file(dir, database)?;
        let db = Db::open_on(dir, options, open_log)?;
        let report = db.apply(vec![genesis])?;
        // The genesis is durable whatever the sync mode: lost, it could not
        // be made again (its hash is the database id), and the directory
        // would never be writable.
        db.sync()?;
        assert_eq!(
            report.accepted.len(),
            1,
            "a fresh database accepts its genesis: {report:?}"
        );
        Ok(db)
    }

    /// Creates an empty replica of an existing database, with a new identity
    /// (or `options.identity`). Sync or import to fill it.
    pub fn join(dir: impl AsRef<Path>, database: DatabaseId, options: Options) -> Result<Db> {
        Db::join_on(dir.as_ref(), database, options, REAL_DISK)
    }

    pub(crate) fn join_on(
        dir: &Path,
        database: DatabaseId,
        options: Options,
        open_log: OpenLog<'_>,
    ) -> Result<Db> {
        prepare_new(dir, &options)?;
        write_database_file(dir, database)?;
        Db::open_on(dir, options, open_log)
    }

    /// Opens an existing database directory, replaying any log the view has
    /// not applied yet (after a crash).
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        Db::open_on(dir.as_ref(), options, REAL_DISK)
    }

    pub(crate) fn open_on(dir: &Path, options: Options, open_log: OpenLog<'_>) -> Result<Db> {
        Db::open_with(dir, options, open_log, None)
    }

    /// [`Db::open_on`], with the directory's lock already taken (`lock`) or
    /// not (`None`).
    pub(crate) fn open_with(
        dir: &Path,
        options: Options,
        open_log: OpenLog<'_>,
        lock: Option<Arc<std::fs::File>>,
    ) -> Result<Db> {
        let dir = dir.to_owned();
        let database = read_database_file(&dir)?;
        let identity = Identity::load(&dir.join(IDENTITY_FILE))?;
        // The lock makes this process the directory's only user: take it
        // before the wal's recovery may cut a "torn" tail that is in fact
        // another process's append in flight. (RocksDB's LOCK is a second,
        // inner guard of the view alone.)
        let lock = match lock {
            Some(lock) => lock,
            None => Arc::new(lock_dir(&dir)?),
        };
        checkpoint::remove_scratch_views(&dir)?;
        let generation = read_generation(&dir)?;
        remove_other_generations(&dir, generation)?;
        let snapshot = snapshot_file(&dir, generation);
        let trimmed = match &snapshot {
            Some(path) => Some(trim::snapshot_checkpoint(path, database)?),
            None => None,
        };
        let view = Arc::new(open_view(&view_dir(&dir, generation), database)?);
        let wal_options = peers_wal::Options {
            segment_bytes_max: options.segment_bytes_max,
            sync: options.sync,
        };
        let (wal, report) = open_log(&log_dir(&dir, generation), wal_options)?;
        let log = Log::new(wal, trimmed.as_ref().map(Change::hash));
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(segment = %torn.segment.display(), offset = torn.offset, bytes = torn.bytes_cut, "cut a torn log tail");
        }
        let mut applied = applied_position(&view)?;
        let mut view_rebuilt = false;
        if applied.is_some_and(|applied| applied > log.end()) {
            // The view holds groups the log lost: written without an fsync
            // (`SyncMode::Relaxed`), they reached the view, RocksDB flushed
            // it, then the power failed. Kept, the view would name changes
            // the log cannot serve and our next commit would reuse a seq of
            // ours with another hash (a fork of our own key). The log is the
            // truth: rebuild the view from it (docs/DESIGN.md "Storage").
            tracing::warn!(
                applied = applied.map_or(0, |applied| applied.0),
                log_end = log.end().0,
                "the view is ahead of the log (power lost after a relaxed commit): rebuilding it"
            );
            reset_view(&view, database)?;
            applied = None;
            view_rebuilt = true;
        }
        let applied = match (applied, &snapshot) {
            (Some(applied), _) => applied,
            (None, None) => log.start(),
            (None, Some(path)) => {
                // A trimmed generation's view starts from its snapshot; one
                // without an applied position is new, or its load failed.
                if !view_rebuilt {
                    reset_view(&view, database)?;
                }
                trim::load_snapshot(&view, path, database, log.start())?;
                log.start()
            }
        };
        let mut writer = Writer::new(
            log.clone(),
            Arc::clone(&view),
            database,
            options.pending_changes_max,
        )?;
        writer.snapshot_rows = snapshot.clone().map(trim::snapshot_rows);
        let off = writer.off_frontier();
        let replayed = writer.replay(applied, false, Select::Except(&off), &mut |_, _| {})?;
        let recovery = Recovery {
            torn_tail: report.torn_tail,
            view_rebuilt,
            replayed,
        };
        let (events, _) = broadcast::channel(SUBSCRIBE_BUFFER_CHANGES);
        let membership = Membership::new(
            writer.access_generation,
            &writer.access,
            &writer.verdicts,
            writer.fork_cuts(),
        );
        let settlements = writer
            .standing
            .iter()
            .map(|standing| (standing.checkpoint, standing.clone()))
            .collect();
        let inner = Inner {
            dir,
            database,
            identity,
            log,
            view,
            membership: RwLock::new(Arc::new(membership)),
            head_seqs: Arc::clone(&writer.shared_head_seqs),
            writer: Mutex::new(writer),
            queue: Mutex::new(Vec::new()),
            chain: Mutex::new(Chain::default()),
            events,
            pending_changes_max: options.pending_changes_max,
            recovery,
            verdicts: Mutex::default(),
            settlements: Mutex::new(settlements),
            settling: Mutex::default(),
            settle_due: std::sync::atomic::AtomicBool::new(true),
            generation,
            trimmed,
            _lock: lock,
        };
        let db = Db {
            inner: Arc::new(inner),
        };
        db.publish_basis(&db.writer());
        Ok(db)
    }

    /// The generation of the directory in use (FORMAT.md "Trimming"): 0
    /// until the first [`Db::trim`].
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// The checkpoint this replica's log was trimmed at (its snapshot
    /// file's), if it was: the changes it settles are in the view, not in
    /// the log.
    pub fn trimmed_at(&self) -> Option<&Change> {
        self.inner.trimmed.as_ref()
    }

    /// The database's id (its genesis change's hash).
    pub fn database_id(&self) -> DatabaseId {
        self.inner.database
    }

    /// Makes every change committed or applied so far durable: one fsync of
    /// the log. With [`SyncMode::Always`] every commit already is; with
    /// [`SyncMode::Relaxed`] a power loss keeps what was committed before
    /// the last `sync` that returned `Ok` and may lose what came after.
    /// If the fsync fails, the changes it was to cover are cut from the log
    /// and the database refuses writes until reopened
    /// ([`crate::Error::Poisoned`]).
    pub fn sync(&self) -> Result<()> {
        let result = self.inner.log.sync();
        if let Err(error) = &result {
            self.writer().poison(error.to_string());
        }
        result
    }

    /// What opening this database found and repaired after a crash or a
    /// power loss.
    pub fn recovery(&self) -> &Recovery {
        &self.inner.recovery
    }

    /// This replica's author key.
    pub fn author(&self) -> Author {
        self.inner.identity.author()
    }

    /// This replica's identity: the key that signs its changes and proves
    /// who it is to peers (the network layer's handshake needs it).
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Starts a transaction: its ops become one signed change on commit.
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction {
            db: self,
            ops: Vec::new(),
        }
    }

    fn writer(&self) -> WriterGuard<'_> {
        let guard = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        WriterGuard {
            db: self,
            guard,
            published: true,
        }
    }

    /// Publishes what a reservation reads of `writer`'s state
    /// ([`commit::Basis`]).
    fn publish_basis(&self, writer: &Writer) {
        let basis = self.basis(writer);
        self.chain().basis = basis;
    }

    fn publish(&self, writer: &mut Writer, accepted: &[Change], report: &ApplyReport) {
        // Membership first: a subscriber that sees a revocation and then
        // checks the revoked key must find it revoked.
        self.publish_membership(writer);
        let membership = self.membership();
        for change in accepted {
            // Fork evidence is inert but travels: live peers learn of the
            // fork at once.
            if !report.inert.contains(&change.hash()) || membership.is_fork_evidence(change) {
                // No subscriber is not an error.
                let _ = self.inner.events.send(change.clone());
            }
        }
        // Changes an authorization limit let back in reach subscribers (and
        // so live peers) too.
        for change in writer.revived.drain(..) {
            let _ = self.inner.events.send(change);
        }
    }

    /// Replaces the membership snapshot if authorization was decided anew
    /// since it was taken.
    fn publish_membership(&self, writer: &Writer) {
        let current = self.membership().generation;
        if current != writer.access_generation {
            let fresh = Membership::new(
                writer.access_generation,
                &writer.access,
                &writer.verdicts,
                writer.fork_cuts(),
            );
            *self
                .inner
                .membership
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(fresh);
        }
    }

    fn membership(&self) -> Arc<Membership> {
        Arc::clone(
            &self
                .inner
                .membership
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Verifies and applies encoded changes from anywhere (a peer, a file).
    /// Each is checked on its own; see [`ApplyReport`] for the verdicts.
    pub fn apply_encoded<B: AsRef<[u8]> + Sync>(&self, encoded: &[B]) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let items: Vec<&B> = encoded.iter().collect();
        self.apply_items(items, |bytes| Change::decode(bytes.as_ref()), &mut report)?;
        Ok(report)
    }

    /// Verifies and applies decoded changes (signatures are checked here).
    pub fn apply(&self, changes: Vec<Change>) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        self.apply_items(changes, Ok, &mut report)?;
        Ok(report)
    }

    /// Decodes, checks and applies `items` as a pipeline: jobs of a few
    /// hundred are decoded, looked up and verified on every core while this
    /// thread applies the verified ones in order, in groups of at most
    /// [`PIPELINE_CHUNK_CHANGES`] (one log append each), and verifies too
    /// whenever it would wait ([`signature::in_order`]).
    fn apply_items<T: Send>(
        &self,
        items: Vec<T>,
        decode: impl Fn(T) -> std::result::Result<Change, crate::FormatError> + Sync,
        report: &mut ApplyReport,
    ) -> Result<()> {
        // Held changes are not verified again: each at or below its
        // author's head (as of the last group written; a held author's
        // changes take every seq up to it) is looked up by hash in its job,
        // not against the writer's state, which the applying thread holds.
        // A change that this call makes held is found a duplicate when
        // admitted.
        let view = &self.inner.view;
        let head_seqs = &self.inner.head_seqs;
        let may_be_held = |change: &Change| {
            head_seqs
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&change.author())
                .is_some_and(|head| change.seq() <= *head)
        };
        let check = |job: Vec<T>| -> Result<Checked> {
            let mut checked = Checked::default();
            let mut fresh = Vec::with_capacity(job.len());
            for item in job {
                let change = match decode(item) {
                    Ok(change) => change,
                    Err(error) => {
                        checked.refused.push((None, Refusal::Malformed(error)));
                        continue;
                    }
                };
                if may_be_held(&change) && view.get_pinned(keys::change(&change.hash()))?.is_some()
                {
                    checked.duplicates.push(change.hash());
                } else {
                    fresh.push(change);
                }
            }
            checked.verified = signature::verify(fresh, &mut checked.refused);
            Ok(checked)
        };
        let weight = |checked: &Result<Checked>| checked.as_ref().map_or(0, |c| c.verified.len());
        signature::in_order(items, check, weight, PIPELINE_CHUNK_CHANGES, |run| {
            let mut verified = Vec::new();
            for checked in run {
                let checked = checked?;
                report.refused.extend(checked.refused);
                report.duplicates.extend(checked.duplicates);
                verified.extend(checked.verified);
            }
            self.ingest_verified(verified, report)
        })
    }

    fn ingest_verified(&self, verified: Vec<Change>, report: &mut ApplyReport) -> Result<()> {
        let mut writer = self.writer();
        let entries = verified.into_iter().map(|change| (change, None)).collect();
        let accepted = writer.ingest(entries, Source::New, report)?;
        self.publish(&mut writer, &accepted, report);
        drop(writer);
        use std::sync::atomic::Ordering;
        if accepted.iter().any(|change| change.checkpoint().is_some()) {
            self.inner.settle_due.store(true, Ordering::Relaxed);
        }
        if !accepted.is_empty() && self.inner.settle_due.load(Ordering::Relaxed) {
            // A checkpoint's frontier may be complete now: judge it (once)
            // and settle (FORMAT.md "Settlement").
            self.settle(&mut |_, _| {})?;
        }
        Ok(())
    }

    /// Grants `role` to `key` in a members-only database, as one signed
    /// change. Only the owner and admins grant, and only below their own
    /// role ([`Error::NotAllowed`] otherwise). The grantee's next change
    /// names this one and is valid from then on.
    pub fn grant(&self, key: Author, role: Role) -> Result<ChangeHash> {
        self.commit(vec![Op::Grant { key, role }])
    }

    /// Revokes `key`: its changes up to the last one this replica holds stay
    /// valid, every later one is invalid on every replica, and sync stops
    /// serving it. Owner and admins only; an admin may not revoke an admin.
    pub fn revoke(&self, key: Author) -> Result<ChangeHash> {
        let last_seq = self.writer().author(&key).map_or(0, |state| state.head_seq);
        self.commit(vec![Op::Revoke { key, last_seq }])
    }

    /// `key`'s role now: `None` for a stranger or a revoked key. In an open
    /// database every key is a writer (and the genesis author the owner);
    /// before the genesis is held, nobody is known. As of the last applied
    /// group, from a snapshot: it never waits for a commit, an fsync or a
    /// rebuild in progress, so a network task may call it.
    pub fn role_of(&self, key: &Author) -> Option<Role> {
        self.membership().role_of(key)
    }

    /// The last valid seq of `author` when it is cut for a fork (it signed
    /// two changes at the next seq), from the same snapshot as
    /// [`Db::role_of`].
    pub fn fork_cut(&self, author: &Author) -> Option<u64> {
        self.membership().fork_cuts.get(author).copied()
    }

    /// Whether `change` is fork evidence: a change at the seq right after
    /// its author's cut, which sync forwards although it is not applied.
    pub fn is_fork_evidence(&self, change: &Change) -> bool {
        self.membership().is_fork_evidence(change)
    }

    /// Whether the database is members-only (`None` until the genesis
    /// change is held). Like [`Db::role_of`], it never waits for a commit
    /// or a rebuild in progress.
    pub fn is_members_only(&self) -> Option<bool> {
        self.membership().is_members_only()
    }

    /// Every key that holds or held a role, the owner first, then by role
    /// and key.
    pub fn members(&self) -> Vec<Member> {
        let writer = self.writer();
        let mut members: BTreeMap<Author, Member> = BTreeMap::new();
        for (key, role) in &writer.verdicts.roles {
            members.insert(
                *key,
                Member {
                    key: *key,
                    role: Some(*role),
                    revoked_after: None,
                },
            );
        }
        for (key, last_seq) in &writer.verdicts.revoked {
            members.insert(
                *key,
                Member {
                    key: *key,
                    role: None,
                    revoked_after: Some(*last_seq),
                },
            );
        }
        if let Some(owner) = writer.access.owner {
            members.entry(owner).or_insert(Member {
                key: owner,
                role: Some(Role::Owner),
                revoked_after: None,
            });
        }
        let mut members: Vec<Member> = members.into_values().collect();
        members.sort_by(|a, b| b.role.cmp(&a.role).then(a.key.cmp(&b.key)));
        members
    }

    /// Subscribes to changes as they are applied (local and received), and
    /// to fork evidence as it arrives (not applied: [`Db::is_fork_evidence`]
    /// tells it apart), so that sync forwards it.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.events.subscribe()
    }

    /// How many fsyncs the change log has made since open (a statistic:
    /// with group commit, concurrent commits share them).
    pub fn log_fsync_count(&self) -> u64 {
        self.inner.log.fsync_count()
    }

    /// Number of received changes waiting for a missing predecessor.
    pub fn pending_len(&self) -> usize {
        self.writer().pending.len()
    }

    /// Most received changes held waiting, as opened
    /// ([`Options::pending_changes_max`]): the sync layer gives each peer a
    /// share of it.
    pub fn pending_changes_max(&self) -> usize {
        self.inner.pending_changes_max
    }

    /// Keeps in `hashes` only the changes still waiting in the pending set
    /// (the others were applied, or dropped): what a peer still holds of it.
    pub fn retain_pending(&self, hashes: &mut Vec<ChangeHash>) {
        let writer = self.writer();
        hashes.retain(|hash| writer.pending.contains(hash));
    }

    /// Drops the named changes from the pending set if they still wait
    /// there: the sync layer calls it for what a peer it dropped for
    /// misbehaving had parked, so one hostile peer cannot keep the shared
    /// set full. Returns how many were dropped.
    pub fn discard_pending(&self, hashes: &[ChangeHash]) -> usize {
        self.writer().pending.discard(hashes)
    }

    /// Hashes that pending changes wait for.
    pub fn missing(&self) -> Vec<ChangeHash> {
        self.writer().pending.missing()
    }

    /// One field's value, if the row has it.
    pub fn get_field(&self, table: &str, row: &str, field: &str) -> Result<Option<Value>> {
        let key = keys::field(table, row, field);
        match self.inner.view.get(&key)? {
            Some(bytes) => Ok(decode::<FieldState>(&bytes, &key)?.value()),
            None => Ok(None),
        }
    }

    /// A row's visible fields; `None` if the row has none.
    pub fn get_row(&self, table: &str, row: &str) -> Result<Option<Row>> {
        let prefix = keys::row_prefix(keys::FIELDS, table, row);
        let table_prefix_bytes = keys::table_prefix(keys::FIELDS, table).len();
        let mut scan = reads::Scan::new(&self.inner.view, prefix, table_prefix_bytes);
        match scan.next() {
            Some(result) => result.map(|(_, fields)| Some(fields)),
            None => Ok(None),
        }
    }

    /// The table's rows in row-id byte order, streamed from RocksDB.
    pub fn scan(&self, table: &str) -> reads::Scan<'_> {
        let prefix = keys::table_prefix(keys::FIELDS, table);
        let length = prefix.len();
        reads::Scan::new(&self.inner.view, prefix, length)
    }

    /// The signed changes that touched a row, oldest stamp first.
    pub fn history(&self, table: &str, row: &str) -> Result<Vec<reads::HistoryEntry>> {
        reads::history(&self.inner.view, &self.inner.log, table, row)
    }

    /// A held change by hash (applied, pending excluded, or inert).
    pub fn get_change(&self, hash: &ChangeHash) -> Result<Option<Change>> {
        let key = keys::change(hash);
        let Some(bytes) = self.inner.view.get(&key)? else {
            return Ok(None);
        };
        let meta: ChangeMeta = decode(&bytes, &key)?;
        self.inner.log.read(meta.position, hash).map(Some)
    }

    /// The held changes among `hashes`, whatever their validity (inert ones
    /// too), in log order; hashes not held are skipped. What a peer whose
    /// changes wait on these asks for (PROTOCOL.md "Want"): sync sends the
    /// changes a peer lacks, but once a change is delivered nothing else
    /// would ever send what it names. Settled changes a trim dropped are not
    /// held (FORMAT.md "Trimming"). The caller bounds `hashes`.
    pub fn changes_by_hash(&self, hashes: &[ChangeHash]) -> Result<Vec<Change>> {
        let mut held = Vec::with_capacity(hashes.len());
        for hash in hashes {
            let key = keys::change(hash);
            if let Some(bytes) = self.inner.view.get(&key)? {
                let meta: ChangeMeta = decode(&bytes, &key)?;
                // Position 0: settled and trimmed from the log (FORMAT.md
                // "Trimming"); no longer held as a change.
                if meta.position != 0 {
                    held.push((meta.position, *hash));
                }
            }
        }
        held.sort_unstable();
        held.dedup();
        held.into_iter()
            .map(|(position, hash)| self.inner.log.read(position, &hash))
            .collect()
    }

    /// Per author: the highest seq held and its hash; for an author cut
    /// for a fork, its cut and the hash of its change there (FORMAT.md
    /// "Version vector"), so replicas that hold the same fork, on whatever
    /// branch tips, advertise the same vector.
    pub fn version_vector(&self) -> Result<VersionVector> {
        reads::version_vector(&self.inner.view)
    }

    /// [`VersionVector::digest`] of [`Db::version_vector`], computed without
    /// holding the vector (a replica may have millions of authors).
    pub fn version_digest(&self) -> Result<[u8; 32]> {
        let mut digest = crate::VectorDigest::new();
        reads::heads_between(
            &self.inner.view,
            &Author([0; 32]),
            None,
            &mut |author, head| {
                digest.push(&author, &head);
                true
            },
        )?;
        Ok(digest.finish())
    }

    /// The advertised heads ([`Db::version_vector`]) of the authors whose
    /// keys are at least `from` and below `until` (`None`: to the last), in
    /// key order, until `visit` returns false. Range-based reconciliation
    /// reads the vector this way, one range at a time.
    pub fn heads_between(
        &self,
        from: &Author,
        until: Option<&Author>,
        visit: &mut dyn FnMut(Author, crate::Head) -> bool,
    ) -> Result<()> {
        reads::heads_between(&self.inner.view, from, until, visit)
    }

    /// Whether a peer at `heads` (as for [`Db::changes_since_heads`]: the
    /// authors whose heads differ, with the peer's) lacks changes this
    /// replica has trimmed: below its checkpoint's frontier, some author's
    /// head is lower than the frontier's. Then this replica cannot send
    /// them, only its snapshot file, which this returns (FORMAT.md
    /// "Bootstrap"): its path and checkpoint.
    pub fn snapshot_for(
        &self,
        heads: &[(Author, Option<crate::Head>)],
    ) -> Option<(PathBuf, ChangeHash)> {
        let checkpoint = self.inner.trimmed.as_ref()?;
        let (frontier, _) = checkpoint.checkpoint()?;
        let lacks = heads.iter().any(|(author, theirs)| {
            frontier.iter().any(|entry| {
                entry.author == *author && theirs.is_none_or(|head| head.seq < entry.seq)
            })
        });
        let path = generation::snapshot_file(&self.inner.dir, self.inner.generation)?;
        lacks.then(|| (path, checkpoint.hash()))
    }

    /// [`Db::changes_since`] for the listed authors only, each with the
    /// peer's advertised head (`None`: it holds none of that author's
    /// changes): what range-based reconciliation found to differ.
    pub fn changes_since_heads(
        &self,
        heads: &[(Author, Option<crate::Head>)],
    ) -> Result<reads::ChangesSince> {
        // Tests hold a session's catch-up here (tests/tests/bootstrap.rs).
        fail::fail_point!("engine::changes-since-heads");
        reads::changes_since_heads(&self.inner.view, &self.inner.log, heads)
    }

    /// The held changes that a replica at `since` lacks, in log order (a
    /// causal order), read lazily from the log.
    pub fn changes_since(&self, since: &VersionVector) -> Result<reads::ChangesSince> {
        reads::changes_since(&self.inner.view, &self.inner.log, since)
    }

    /// Every change in the log, in log order.
    pub fn log(&self) -> Result<impl Iterator<Item = Result<(Position, Change)>> + '_> {
        self.log_from(self.inner.log.start())
    }

    /// Where the next change will be appended: every change read from the
    /// log at or past this position was appended after this call.
    pub fn log_end(&self) -> Position {
        self.inner.log.end()
    }

    /// The log's changes from `position` (a record's start, or
    /// [`Db::log_end`]), in log order.
    pub fn log_from(
        &self,
        position: Position,
    ) -> Result<impl Iterator<Item = Result<(Position, Change)>> + '_> {
        let changes = self.inner.log.changes_from(position)?;
        Ok(changes.map(|item| item.map(|(frame, change)| (frame.start, change))))
    }

    /// The log's segment files as of now, in base order (FORMAT.md "Change
    /// log (wal)"): every sealed segment, whose bytes never change again, and
    /// the last one up to [`Db::log_end`]. Their bytes, laid out as files
    /// named `{base:020}.wal` in a `log/` directory, are a log that a replica
    /// opens (how backups copy a replica: `peers-backup`).
    pub fn log_segments(&self) -> Result<Vec<LogSegment>> {
        self.inner.log.segments()
    }

    /// Reads `buffer.len()` bytes of the log segment `base` from `offset` in
    /// its file; the range must lie within the bytes [`Db::log_segments`]
    /// reported for it.
    pub fn read_log_segment(&self, base: u64, offset: u64, buffer: &mut [u8]) -> Result<()> {
        self.inner.log.read_segment(base, offset, buffer)
    }

    /// A digest of the materialized state: equal on every replica that
    /// applied the same set of changes.
    pub fn state_hash(&self) -> Result<StateHash> {
        reads::state_hash(&self.inner.view)
    }

    /// Flushes the view's memtable and copies (hard links) its files into
    /// `copy`, a directory that must not exist: what a power loss would
    /// leave of the view at this moment.
    #[cfg(feature = "testing")]
    pub(crate) fn flush_view_into(&self, copy: &Path) -> Result<()> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.inner.view)?;
        Ok(checkpoint.create_checkpoint(copy)?)
    }

    /// Every entry of the view that the state hash covers (FORMAT.md
    /// "View"), in key order.
    #[cfg(feature = "testing")]
    pub(crate) fn state_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        reads::state_entries(&self.inner.view)
    }

    /// Whether this handle is the last one: dropping it closes the database.
    #[cfg(feature = "testing")]
    pub(crate) fn is_last_handle(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    /// Drops the view and rebuilds it from the log (on a trimmed replica,
    /// from its snapshot file, checked, then the log); returns the changes
    /// replayed and the new state hash.
    pub fn rebuild(&self, progress: Progress<'_>) -> Result<(u64, StateHash)> {
        let mut writer = self.writer();
        let standing = writer.standing.clone();
        reset_view(&self.inner.view, self.inner.database)?;
        if let Some(path) = snapshot_file(&self.inner.dir, self.inner.generation) {
            trim::load_snapshot(
                &self.inner.view,
                &path,
                self.inner.database,
                self.inner.log.start(),
            )?;
        }
        writer.reload_heads()?;
        let changes = self.replay_settled(&mut writer, standing, false, progress)?;
        self.inner.view.flush()?;
        self.publish_membership(&writer);
        Ok((changes, self.state_hash()?))
    }

    /// Re-checks every change in the log (form, hash, signature, chain,
    /// deps, lamport) by rebuilding a scratch view with full verification
    /// (on a trimmed replica, on top of its snapshot file, read with every
    /// check of its format), and compares its state hash with the live
    /// view's.
    pub fn verify(&self, progress: Progress<'_>) -> Result<VerifyReport> {
        let engine = self.writer();
        let standing = engine.standing.clone();
        let scratch_dir = self.inner.dir.join("verify-scratch");
        if scratch_dir.exists() {
            std::fs::remove_dir_all(&scratch_dir).map_err(io_error(&scratch_dir))?;
        }
        let result = (|| {
            let scratch = Arc::new(open_view(&scratch_dir, self.inner.database)?);
            // A trimmed generation starts from its snapshot file, read with
            // every check of its format (the hash against the signed
            // checkpoint included).
            if let Some(path) = snapshot_file(&self.inner.dir, self.inner.generation) {
                trim::load_snapshot(&scratch, &path, self.inner.database, self.inner.log.start())?;
            }
            let mut writer = Writer::new(
                self.inner.log.clone(),
                Arc::clone(&scratch),
                self.inner.database,
                0,
            )?;
            writer.snapshot_rows =
                snapshot_file(&self.inner.dir, self.inner.generation).map(trim::snapshot_rows);
            let changes = self.replay_settled(&mut writer, standing, true, progress)?;
            let rebuilt = reads::state_hash(&scratch)?;
            Ok(VerifyReport {
                changes,
                rebuilt_state_hash: rebuilt,
                live_state_hash: self.state_hash()?,
            })
        })();
        std::fs::remove_dir_all(&scratch_dir).map_err(io_error(&scratch_dir))?;
        result
    }
}

impl Db {
    /// Replays the whole log into `writer`'s empty view with `standing`
    /// standing from the start (FORMAT.md "Settlement"), leaving out the
    /// changes off its frontier.
    fn replay_settled(
        &self,
        writer: &mut Writer,
        standing: Option<Standing>,
        verify_signatures: bool,
        progress: Progress<'_>,
    ) -> Result<u64> {
        let off: crate::HashSet<ChangeHash> = standing
            .iter()
            .flat_map(|standing| standing.off.iter().copied())
            .collect();
        if let Some(standing) = standing {
            writer.stand(standing)?;
        }
        writer.replay(
            self.inner.log.start(),
            verify_signatures,
            Select::Except(&off),
            progress,
        )
    }
}

/// What [`Db::verify`] found. `ok()` when the rebuilt view equals the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Changes re-verified.
    pub changes: u64,
    /// State hash of a view rebuilt with full verification.
    pub rebuilt_state_hash: StateHash,
    /// State hash of the live view.
    pub live_state_hash: StateHash,
}

impl VerifyReport {
    /// Whether the live view equals the rebuilt one.
    pub fn ok(&self) -> bool {
        self.rebuilt_state_hash == self.live_state_hash
    }
}

const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Db>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use directory::view_options;

    /// A view written by another layout version is never misread: opening
    /// the database drops it and rebuilds the same state from the log.
    #[test]
    fn view_of_another_format_is_rebuilt_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let options = Options {
            sync: SyncMode::Relaxed,
            ..Options::default()
        };
        let db = Db::create(&path, options.clone()).expect("create");
        let mut tx = db.transaction();
        tx.set("t", "r", "f", 1).increment("t", "r", "n", 2);
        tx.commit().expect("commit");
        let hash = db.state_hash().expect("state hash");
        drop(db);
        let view = DB::open(&view_options(), path.join(VIEW_DIR)).expect("open view");
        view.put(keys::meta(keys::META_VIEW_FORMAT), 1u32.to_be_bytes())
            .expect("put");
        view.put(keys::field("t", "r", "f"), b"not a register")
            .expect("put");
        drop(view);
        let db = Db::open(&path, options).expect("reopen");
        assert_eq!(db.state_hash().expect("state hash"), hash);
        assert_eq!(
            db.get_field("t", "r", "f").expect("get"),
            Some(Value::Int(1))
        );
    }
}

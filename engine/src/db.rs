//! The embedder's API: [`Db`], [`Options`], [`Transaction`] and reads.
//!
//! A database directory holds `database` (the id, hex), `identity.key` (this
//! replica's secret key, owner-only), `lock` (who has it open), `log/` (the
//! wal: the truth) and `view/` (RocksDB: rebuildable from the log).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use peers_wal::{Position, SyncMode, Wal};
use rocksdb::DB;
use tokio::sync::broadcast;

use crate::access::Membership;
use crate::change::{
    Author, CHANGE_FORMAT_VERSION, Change, ChangeBody, ChangeHash, DEPS_MAX, DatabaseId, Op, Role,
    StateHash,
};
use crate::engine::{ApplyReport, Engine, Source};
use crate::error::{Error, Refusal, Result};
use crate::identity::Identity;
use crate::keys::{self, VIEW_FORMAT_VERSION};
use crate::pending::PENDING_CHANGES_MAX;
use crate::version_vector::VersionVector;
use crate::view::{FieldState, decode};
use crate::{Value, reads};

/// Bytes a wal frame adds before its payload (length and crc32c).
pub(crate) const FRAME_OVERHEAD_BYTES: u64 = 8;
/// Changes replayed from the log per applied group.
pub const REPLAY_GROUP_CHANGES: usize = 4096;
/// Changes buffered per subscriber before it lags.
pub const SUBSCRIBE_BUFFER_CHANGES: usize = 4096;
/// Received changes decoded and verified on two threads from this many on.
const PARALLEL_CHANGES_MIN: usize = 512;
/// Changes per stage of the verify/apply pipeline (one log append each).
const PIPELINE_CHUNK_CHANGES: usize = 2048;

/// Opens a database's log directory: [`Wal::open`] on the real disk, or
/// (with the `testing` feature) the wal on a simulated disk that can lose
/// power.
pub(crate) type OpenLog<'a> = &'a (
        dyn Fn(
    &Path,
    peers_wal::Options,
) -> std::result::Result<(Wal, peers_wal::OpenReport), peers_wal::Error>
            + Sync
    );

const REAL_DISK: OpenLog<'static> = &Wal::open;

const DATABASE_FILE: &str = "database";
const IDENTITY_FILE: &str = "identity.key";
const LOG_DIR: &str = "log";
pub(crate) const VIEW_DIR: &str = "view";
/// The file whose advisory lock makes one process the directory's user; it
/// holds that process's id and command line, for the error another gets.
pub const LOCK_FILE: &str = "lock";

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

/// A row: field name to value.
pub type Row = BTreeMap<String, Value>;

/// A long operation's progress: `(done, total)` in log bytes.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

struct CommitRequest {
    ops: Vec<Op>,
    reply: SyncSender<Result<ChangeHash>>,
}

struct Inner {
    dir: PathBuf,
    database: DatabaseId,
    identity: Identity,
    wal: Wal,
    view: Arc<DB>,
    engine: Mutex<Engine>,
    /// Who holds which role, as of the last applied group; replaced (never
    /// held across I/O) after each group that changed it, before the
    /// group's changes are published to subscribers.
    membership: RwLock<Arc<Membership>>,
    queue: Mutex<Vec<CommitRequest>>,
    events: broadcast::Sender<Change>,
    /// [`Options::pending_changes_max`].
    pending_changes_max: usize,
    /// What the open had to repair.
    recovery: Recovery,
    /// Held (locked) while open; unlocked when the last clone drops, after
    /// the fields above (it is declared last, so dropped last: the view and
    /// log are closed before another process may open them).
    _lock: std::fs::File,
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

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Takes the directory's lock (an advisory lock on `DIR/lock`, released by
/// the OS when the process ends, however it ends) and writes this process's
/// id and command line into it; a directory locked elsewhere is
/// [`Error::InUse`], naming the holder from what it wrote.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // Best effort: the holder writes its line just after locking.
            let _ = file.take(1024).read_to_string(&mut holder);
            let mut lines = holder.lines();
            return Err(Error::InUse {
                path: dir.to_owned(),
                pid: lines.next().and_then(|pid| pid.trim().parse().ok()),
                command: lines.next().unwrap_or_default().to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(io_error(&path)(source)),
    }
    let command: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let holder = format!("{}\n{}\n", std::process::id(), command.join(" "));
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(holder.as_bytes()))
        .map_err(io_error(&path))?;
    Ok(file)
}

fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
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
        let dir = dir.to_owned();
        let database = read_database_file(&dir)?;
        let identity = Identity::load(&dir.join(IDENTITY_FILE))?;
        // The lock makes this process the directory's only user: take it
        // before the wal's recovery may cut a "torn" tail that is in fact
        // another process's append in flight. (RocksDB's LOCK is a second,
        // inner guard of the view alone.)
        let lock = lock_dir(&dir)?;
        let view = Arc::new(open_view(&dir.join(VIEW_DIR), database)?);
        let wal_options = peers_wal::Options {
            segment_bytes_max: options.segment_bytes_max,
            sync: options.sync,
        };
        let (wal, report) = open_log(&dir.join(LOG_DIR), wal_options)?;
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(segment = %torn.segment.display(), offset = torn.offset, bytes = torn.bytes_cut, "cut a torn log tail");
        }
        let mut applied = applied_position(&view)?.unwrap_or(wal.start());
        let mut view_rebuilt = false;
        if applied > wal.end() {
            // The view holds groups the log lost: written without an fsync
            // (`SyncMode::Relaxed`), they reached the view, RocksDB flushed
            // it, then the power failed. Kept, the view would name changes
            // the log cannot serve and our next commit would reuse a seq of
            // ours with another hash (a fork of our own key). The log is the
            // truth: rebuild the view from it (docs/DESIGN.md "Storage").
            tracing::warn!(
                applied = applied.0,
                log_end = wal.end().0,
                "the view is ahead of the log (power lost after a relaxed commit): rebuilding it"
            );
            reset_view(&view, database)?;
            applied = wal.start();
            view_rebuilt = true;
        }
        let mut engine = Engine::new(
            wal.clone(),
            Arc::clone(&view),
            database,
            options.pending_changes_max,
        )?;
        let replayed = replay(&mut engine, applied, false, &mut |_, _| {})?;
        let recovery = Recovery {
            torn_tail: report.torn_tail,
            view_rebuilt,
            replayed,
        };
        let (events, _) = broadcast::channel(SUBSCRIBE_BUFFER_CHANGES);
        let membership = Membership::new(
            engine.access_generation,
            &engine.access,
            &engine.verdicts,
            engine.fork_cuts(),
        );
        let inner = Inner {
            dir,
            database,
            identity,
            wal,
            view,
            membership: RwLock::new(Arc::new(membership)),
            engine: Mutex::new(engine),
            queue: Mutex::new(Vec::new()),
            events,
            pending_changes_max: options.pending_changes_max,
            recovery,
            _lock: lock,
        };
        Ok(Db {
            inner: Arc::new(inner),
        })
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
    /// and the database refuses writes until reopened ([`Error::Poisoned`]).
    pub fn sync(&self) -> Result<()> {
        let result = self.inner.wal.sync();
        if let Err(error) = &result {
            self.engine().poison(error.to_string());
        }
        Ok(result?)
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

    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.inner
            .engine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Commits `ops` as one change. Concurrent callers are grouped: whoever
    /// gets the engine first commits everything queued, with one fsync.
    fn commit(&self, ops: Vec<Op>) -> Result<ChangeHash> {
        crate::change::check_ops(&ops).map_err(|rule| Error::InvalidTransaction { rule })?;
        let bytes = crate::change::ops_bytes(&ops);
        if bytes > crate::change::OPS_BYTES_MAX {
            return Err(Error::TransactionTooLarge {
                bytes: bytes as u64,
                max: crate::change::OPS_BYTES_MAX as u64,
            });
        }
        self.check_increments(&ops)?;
        let (reply, answer) = sync_channel(1);
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(CommitRequest { ops, reply });
        loop {
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            let mut engine = self.engine();
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            let requests =
                std::mem::take(&mut *self.inner.queue.lock().unwrap_or_else(|p| p.into_inner()));
            self.commit_group(&mut engine, requests);
        }
    }

    fn commit_group(&self, engine: &mut Engine, requests: Vec<CommitRequest>) {
        // Refused requests are answered alone; the others commit together.
        let requests: Vec<CommitRequest> = requests
            .into_iter()
            .filter_map(|request| match self.check_local(engine, &request.ops) {
                Ok(()) => Some(request),
                Err(error) => {
                    let _ = request.reply.send(Err(error));
                    None
                }
            })
            .collect();
        if requests.is_empty() {
            return;
        }
        let result = self.build_changes(engine, &requests).and_then(|changes| {
            let mut report = ApplyReport::default();
            let entries = changes.into_iter().map(|change| (change, None)).collect();
            let accepted = engine.ingest(entries, Source::New, &mut report)?;
            assert!(
                report.refused.is_empty() && report.pending.is_empty(),
                "own changes are valid: {report:?}"
            );
            self.publish(engine, &accepted, &report);
            Ok(accepted)
        });
        match result {
            Ok(accepted) => {
                for (request, change) in requests.into_iter().zip(accepted) {
                    let _ = request.reply.send(Ok(change.hash()));
                }
            }
            Err(error) => {
                let message = error.to_string();
                let mut first = Some(error);
                for request in requests {
                    let error = first.take().unwrap_or_else(|| Error::CommitFailed {
                        reason: message.clone(),
                    });
                    let _ = request.reply.send(Err(error));
                }
            }
        }
    }

    /// Whether this replica may commit `ops` (FORMAT.md "Authorization").
    fn check_local(&self, engine: &Engine, ops: &[Op]) -> Result<()> {
        let Some(owner) = engine.access.owner else {
            return Err(Error::NotSynced);
        };
        if !engine.access.members_only {
            return Ok(());
        }
        let me = self.author();
        if let Some(state) = engine.author(&me) {
            if let Some(last_seq) = state.revoked {
                return Err(Error::NotAllowed(Refusal::Revoked {
                    author: me,
                    last_seq,
                }));
            }
            // A chain cut below its head (its grant no longer stands) can
            // never be valid again: a change signed now would vanish.
            if !state.is_valid(state.head_seq + 1) {
                return Err(Error::IdentityCut {
                    author: me,
                    cut_seq: state.valid_until(),
                });
            }
        }
        let role = engine.verdicts.roles.get(&me).copied();
        crate::access::check_admission(me, role, owner, ops).map_err(Error::NotAllowed)?;
        if me != owner {
            for op in ops {
                if let Op::Revoke { key, .. } = op
                    && engine.verdicts.admins.contains(key)
                {
                    return Err(Error::NotAllowed(Refusal::RevokesAnAdmin {
                        author: me,
                        key: *key,
                    }));
                }
            }
        }
        Ok(())
    }

    /// Refuses an increment of a field whose value, after the ops before it
    /// in the same transaction, is set and not a counter.
    fn check_increments(&self, ops: &[Op]) -> Result<()> {
        for (index, op) in ops.iter().enumerate() {
            let Op::Increment {
                table, row, field, ..
            } = op
            else {
                continue;
            };
            // The last earlier op of this transaction on the field decides.
            let earlier = ops[..index].iter().rev().find_map(|earlier| match earlier {
                Op::Set {
                    table: t,
                    row: r,
                    field: f,
                    value,
                } if t == table && r == row && f == field => Some(Some(value.clone())),
                Op::Delete { table: t, row: r } if t == table && r == row => Some(None),
                _ => None,
            });
            let current = match earlier {
                Some(value) => value,
                None => self.get_field(table, row, field)?,
            };
            if let Some(current) = current
                && !matches!(current, Value::Counter(_))
            {
                return Err(Error::NotACounter {
                    table: table.clone(),
                    row: row.clone(),
                    field: field.clone(),
                    current,
                });
            }
        }
        Ok(())
    }

    /// The grant this replica's next change must name so that its chain's
    /// named role reaches its current role, if it does not yet.
    fn grant_to_name(&self, engine: &Engine) -> Result<Option<ChangeHash>> {
        let me = self.author();
        if !engine.access.members_only || engine.access.owner == Some(me) {
            return Ok(None);
        }
        let Some(role) = engine.verdicts.roles.get(&me).copied() else {
            return Ok(None);
        };
        let named = match engine.author(&me) {
            Some(state) => engine
                .held_meta(&state.head_hash)?
                .and_then(|meta| meta.role),
            None => None,
        };
        if named >= Some(role) {
            return Ok(None);
        }
        Ok(engine.grant_to_name(&me, role))
    }

    /// Signs one change per request, chained, with deps from the heads.
    fn build_changes(&self, engine: &Engine, requests: &[CommitRequest]) -> Result<Vec<Change>> {
        let author = self.author();
        let state = engine.author(&author);
        if let Some(cut) = state.and_then(|state| state.cut) {
            return Err(Error::IdentityCut {
                author,
                cut_seq: cut,
            });
        }
        let (mut seq, mut prev, mut prev_lamport) = state.map_or((0, None, 0), |state| {
            (state.head_seq, Some(state.head_hash), state.head_lamport)
        });
        let mut others: Vec<(u64, ChangeHash)> = engine
            .heads
            .iter()
            .filter(|(_, (_, head_author))| *head_author != author)
            .map(|(hash, (lamport, _))| (*lamport, *hash))
            .collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        // A grant not yet named goes first: without it the change is refused.
        if let Some(grant) = self.grant_to_name(engine)? {
            let meta = engine
                .held_meta(&grant)?
                .ok_or(Error::MissingChange { hash: grant })?;
            others.retain(|(_, hash)| *hash != grant);
            others.insert(0, (meta.lamport, grant));
        }
        others.truncate(DEPS_MAX);
        let deps_lamport = others
            .iter()
            .map(|(lamport, _)| *lamport)
            .max()
            .unwrap_or(0);
        let mut deps: Vec<ChangeHash> = others.into_iter().map(|(_, hash)| hash).collect();
        deps.sort_unstable();
        let mut changes = Vec::with_capacity(requests.len());
        for request in requests {
            seq += 1;
            let lamport = 1 + prev_lamport.max(deps_lamport);
            let body = ChangeBody {
                version: CHANGE_FORMAT_VERSION,
                database: self.inner.database,
                author,
                seq,
                prev,
                deps: deps.clone(),
                lamport,
                wall_ms: now_ms(),
                ops: request.ops.clone(),
            };
            let change = Change::sign(body, self.inner.identity.signing_key());
            prev = Some(change.hash());
            prev_lamport = lamport;
            changes.push(change);
        }
        Ok(changes)
    }

    fn publish(&self, engine: &mut Engine, accepted: &[Change], report: &ApplyReport) {
        // Membership first: a subscriber that sees a revocation and then
        // checks the revoked key must find it revoked.
        self.publish_membership(engine);
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
        for change in engine.revived.drain(..) {
            let _ = self.inner.events.send(change);
        }
    }

    /// Replaces the membership snapshot if authorization was decided anew
    /// since it was taken.
    fn publish_membership(&self, engine: &Engine) {
        let current = self.membership().generation;
        if current != engine.access_generation {
            let fresh = Membership::new(
                engine.access_generation,
                &engine.access,
                &engine.verdicts,
                engine.fork_cuts(),
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
        let decoded = par_map(encoded, |bytes| Change::decode(bytes.as_ref()));
        let mut changes = Vec::with_capacity(decoded.len());
        for result in decoded {
            match result {
                Ok(change) => changes.push(change),
                Err(error) => report.refused.push((None, Refusal::Malformed(error))),
            }
        }
        self.apply_into(changes, &mut report)?;
        Ok(report)
    }

    /// Verifies and applies decoded changes (signatures are checked here).
    pub fn apply(&self, changes: Vec<Change>) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        self.apply_into(changes, &mut report)?;
        Ok(report)
    }

    fn apply_into(&self, changes: Vec<Change>, report: &mut ApplyReport) -> Result<()> {
        let mut fresh = Vec::with_capacity(changes.len());
        for change in changes {
            if self.inner.view.get(keys::change(&change.hash()))?.is_some() {
                report.duplicates.push(change.hash());
            } else {
                fresh.push(change);
            }
        }
        if fresh.len() < PARALLEL_CHANGES_MIN {
            let verified = Engine::verify_new(fresh, report);
            return self.ingest_verified(verified, report);
        }
        // A pipeline: a worker verifies chunk k+1 while this thread applies
        // chunk k, so signature checks and the view's work overlap.
        let mut chunks: Vec<Vec<Change>> = Vec::new();
        let mut rest = fresh;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(PIPELINE_CHUNK_CHANGES));
            chunks.push(std::mem::replace(&mut rest, tail));
        }
        std::thread::scope(|scope| {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<(Vec<Change>, ApplyReport)>(1);
            scope.spawn(move || {
                for chunk in chunks {
                    let mut local = ApplyReport::default();
                    let verified = Engine::verify_new(chunk, &mut local);
                    if sender.send((verified, local)).is_err() {
                        break;
                    }
                }
            });
            for (verified, local) in receiver {
                report.refused.extend(local.refused);
                self.ingest_verified(verified, report)?;
            }
            Ok(())
        })
    }

    fn ingest_verified(&self, verified: Vec<Change>, report: &mut ApplyReport) -> Result<()> {
        let mut engine = self.engine();
        let entries = verified.into_iter().map(|change| (change, None)).collect();
        let accepted = engine.ingest(entries, Source::New, report)?;
        self.publish(&mut engine, &accepted, report);
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
        let last_seq = self.engine().author(&key).map_or(0, |state| state.head_seq);
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
        let engine = self.engine();
        let mut members: BTreeMap<Author, Member> = BTreeMap::new();
        for (key, role) in &engine.verdicts.roles {
            members.insert(
                *key,
                Member {
                    key: *key,
                    role: Some(*role),
                    revoked_after: None,
                },
            );
        }
        for (key, last_seq) in &engine.verdicts.revoked {
            members.insert(
                *key,
                Member {
                    key: *key,
                    role: None,
                    revoked_after: Some(*last_seq),
                },
            );
        }
        if let Some(owner) = engine.access.owner {
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
        self.inner.wal.fsync_count()
    }

    /// Number of received changes waiting for a missing predecessor.
    pub fn pending_len(&self) -> usize {
        self.engine().pending.len()
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
        let engine = self.engine();
        hashes.retain(|hash| engine.pending.contains(hash));
    }

    /// Drops the named changes from the pending set if they still wait
    /// there: the sync layer calls it for what a peer it dropped for
    /// misbehaving had parked, so one hostile peer cannot keep the shared
    /// set full. Returns how many were dropped.
    pub fn discard_pending(&self, hashes: &[ChangeHash]) -> usize {
        self.engine().pending.discard(hashes)
    }

    /// Hashes that pending changes wait for.
    pub fn missing(&self) -> Vec<ChangeHash> {
        self.engine().pending.missing()
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
        reads::history(&self.inner.view, &self.inner.wal, table, row)
    }

    /// A held change by hash (applied, pending excluded, or inert).
    pub fn get_change(&self, hash: &ChangeHash) -> Result<Option<Change>> {
        let key = keys::change(hash);
        let Some(bytes) = self.inner.view.get(&key)? else {
            return Ok(None);
        };
        let meta: crate::engine::ChangeMeta = decode(&bytes, &key)?;
        read_change(&self.inner.wal, meta.position, hash).map(Some)
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

    /// [`Db::changes_since`] for the listed authors only, each with the
    /// peer's advertised head (`None`: it holds none of that author's
    /// changes): what range-based reconciliation found to differ.
    pub fn changes_since_heads(
        &self,
        heads: &[(Author, Option<crate::Head>)],
    ) -> Result<reads::ChangesSince> {
        reads::changes_since_heads(&self.inner.view, &self.inner.wal, heads)
    }

    /// The held changes that a replica at `since` lacks, in log order (a
    /// causal order), read lazily from the log.
    pub fn changes_since(&self, since: &VersionVector) -> Result<reads::ChangesSince> {
        reads::changes_since(&self.inner.view, &self.inner.wal, since)
    }

    /// Every change in the log, in log order.
    pub fn log(&self) -> Result<impl Iterator<Item = Result<(Position, Change)>> + '_> {
        self.log_from(self.inner.wal.start())
    }

    /// Where the next change will be appended: every change read from the
    /// log at or past this position was appended after this call.
    pub fn log_end(&self) -> Position {
        self.inner.wal.end()
    }

    /// The log's changes from `position` (a record's start, or
    /// [`Db::log_end`]), in log order.
    pub fn log_from(
        &self,
        position: Position,
    ) -> Result<impl Iterator<Item = Result<(Position, Change)>> + '_> {
        let iter = self.inner.wal.iter_from(position)?;
        Ok(iter.map(|item| {
            let (position, bytes) = item?;
            let change = Change::decode(&bytes).map_err(|error| Error::LogCorrupt {
                position: position.0,
                reason: Box::new(Refusal::Malformed(error)),
            })?;
            Ok((position, change))
        }))
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

    /// Whether this handle is the last one: dropping it closes the database.
    #[cfg(feature = "testing")]
    pub(crate) fn is_last_handle(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    /// Drops the view and rebuilds it from the log; returns the changes
    /// replayed and the new state hash.
    pub fn rebuild(&self, progress: Progress<'_>) -> Result<(u64, StateHash)> {
        let mut engine = self.engine();
        reset_view(&self.inner.view, self.inner.database)?;
        engine.reload_heads()?;
        let changes = replay(&mut engine, self.inner.wal.start(), false, progress)?;
        self.inner.view.flush()?;
        self.publish_membership(&engine);
        Ok((changes, self.state_hash()?))
    }

    /// Re-checks every change in the log (form, hash, signature, chain,
    /// deps, lamport) by rebuilding a scratch view with full verification,
    /// and compares its state hash with the live view's.
    pub fn verify(&self, progress: Progress<'_>) -> Result<VerifyReport> {
        let _engine = self.engine();
        let scratch_dir = self.inner.dir.join("verify-scratch");
        if scratch_dir.exists() {
            std::fs::remove_dir_all(&scratch_dir).map_err(io_error(&scratch_dir))?;
        }
        let result = (|| {
            let scratch = Arc::new(open_view(&scratch_dir, self.inner.database)?);
            let mut engine = Engine::new(
                self.inner.wal.clone(),
                Arc::clone(&scratch),
                self.inner.database,
                0,
            )?;
            let changes = replay(&mut engine, self.inner.wal.start(), true, progress)?;
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

    /// Exports a table into a new automerge document: one map per row under
    /// the root, keyed by row id (see docs/DECISIONS.md).
    pub fn export_automerge(&self, table: &str) -> Result<automerge::AutoCommit> {
        use automerge::transaction::Transactable;
        let mut document = automerge::AutoCommit::new();
        for item in self.scan(table) {
            let (row, fields) = item?;
            let object = document
                .put_object(automerge::ROOT, row.as_str(), automerge::ObjType::Map)
                .map_err(automerge_error)?;
            for (field, value) in fields {
                document
                    .put(&object, field.as_str(), automerge::ScalarValue::from(value))
                    .map_err(automerge_error)?;
            }
        }
        Ok(document)
    }

    /// Imports an automerge document laid out as [`Db::export_automerge`]
    /// writes it (a map per row under the root, keyed by row id), as one
    /// change setting every field. Returns its hash. A text object is read
    /// as its string; a root entry that is not a map, and a field holding a
    /// list or map, are [`Error::Automerge`] and nothing is written.
    pub fn import_automerge(
        &self,
        table: &str,
        document: &automerge::AutoCommit,
    ) -> Result<ChangeHash> {
        use automerge::{ObjType, ReadDoc, Value as Am};
        let unsupported = |what: String| Error::Automerge {
            message: format!("{what}: a Peers row is a map of scalars (or text) under the root"),
        };
        let mut tx = self.transaction();
        for row in document.keys(automerge::ROOT) {
            let Some((Am::Object(ObjType::Map), object)) = document
                .get(automerge::ROOT, row.as_str())
                .map_err(automerge_error)?
            else {
                return Err(unsupported(format!("{row:?} is not a map")));
            };
            for field in document.keys(&object) {
                let value = match document
                    .get(&object, field.as_str())
                    .map_err(automerge_error)?
                {
                    Some((Am::Scalar(scalar), _)) => {
                        Value::try_from(scalar.into_owned()).map_err(|_| {
                            unsupported(format!("{row}.{field} holds a value with no Peers type"))
                        })?
                    }
                    // Collaborative text (what automerge's JavaScript library
                    // makes of a string): its current text.
                    Some((Am::Object(ObjType::Text), text)) => {
                        Value::Str(document.text(&text).map_err(automerge_error)?)
                    }
                    Some((Am::Object(kind), _)) => {
                        return Err(unsupported(format!("{row}.{field} is a {kind}")));
                    }
                    None => continue,
                };
                tx.set(table, &row, &field, value);
            }
        }
        tx.commit()
    }
}

fn automerge_error(error: automerge::AutomergeError) -> Error {
    Error::Automerge {
        message: error.to_string(),
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

/// Ops collected for one change.
pub struct Transaction<'a> {
    db: &'a Db,
    ops: Vec<Op>,
}

impl Transaction<'_> {
    /// Sets a field.
    pub fn set(
        &mut self,
        table: &str,
        row: &str,
        field: &str,
        value: impl Into<Value>,
    ) -> &mut Self {
        self.ops.push(Op::Set {
            table: table.into(),
            row: row.into(),
            field: field.into(),
            value: value.into(),
        });
        self
    }
    /// Deletes a row.
    pub fn delete(&mut self, table: &str, row: &str) -> &mut Self {
        self.ops.push(Op::Delete {
            table: table.into(),
            row: row.into(),
        });
        self
    }
    /// Adds `delta` to a counter field.
    pub fn increment(&mut self, table: &str, row: &str, field: &str, delta: i64) -> &mut Self {
        self.ops.push(Op::Increment {
            table: table.into(),
            row: row.into(),
            field: field.into(),
            delta,
        });
        self
    }
    /// Ops collected so far.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    /// Signs the ops as one change, makes it durable and applies it.
    pub fn commit(self) -> Result<ChangeHash> {
        self.db.commit(self.ops)
    }
}

fn prepare_new(dir: &Path, options: &Options) -> Result<Identity> {
    if dir.join(DATABASE_FILE).exists() {
        return Err(Error::AlreadyExists {
            path: dir.to_owned(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let identity = options.identity.clone().unwrap_or_else(Identity::generate);
    identity.save(&dir.join(IDENTITY_FILE))?;
    Ok(identity)
}

/// Writes `database` and makes it durable (the file, then the directory
/// entries of the new directory), so a power loss after `create` or `join`
/// returned cannot leave a directory that does not open.
fn write_database_file(dir: &Path, database: DatabaseId) -> Result<()> {
    let path = dir.join(DATABASE_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&path)?;
        file.write_all(format!("{database}\n").as_bytes())?;
        file.sync_all()
    };
    write().map_err(io_error(&path))?;
    sync_dir(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// fsyncs a directory: the entries created in it so far stay after a power
/// loss.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error(dir))
}

fn read_database_file(dir: &Path) -> Result<DatabaseId> {
    let path = dir.join(DATABASE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                path: dir.to_owned(),
            });
        }
        Err(source) => return Err(Error::Io { path, source }),
    };
    DatabaseId::from_hex(&text).map_err(|_| Error::BadFile {
        path,
        what: "64 hex digits of a database id",
    })
}

fn view_options() -> rocksdb::Options {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    // The log is the truth: RocksDB's own WAL is off on every write, and a
    // crash loses at most the memtable, which replay restores.
    options.set_manual_wal_flush(true);
    // Most point lookups on ingest miss (is this change new? is there a
    // tombstone?): bloom filters answer those without reading blocks.
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    options.set_block_based_table_factory(&table);
    options.set_memtable_whole_key_filtering(true);
    options.set_memtable_prefix_bloom_ratio(0.1);
    options
}

/// Opens the view. A view of another layout version or another database is
/// derived data that cannot be read as it is: it is dropped and rebuilt
/// from the log by the replay that follows (never misread).
fn open_view(path: &Path, database: DatabaseId) -> Result<DB> {
    let options = view_options();
    let view = DB::open(&options, path)?;
    let found = view
        .get(keys::meta(keys::META_VIEW_FORMAT))?
        .map(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).map_or(0, u32::from_be_bytes));
    let stored = view.get(keys::meta(keys::META_DATABASE))?;
    let usable =
        found == Some(VIEW_FORMAT_VERSION) && stored.as_deref() == Some(database.0.as_slice());
    if found.is_some() && !usable {
        tracing::warn!(
            path = %path.display(),
            found = ?found,
            supported = VIEW_FORMAT_VERSION,
            "view of another format or database: rebuilding it from the log"
        );
        drop(view);
        DB::destroy(&options, path)?;
        return open_view(path, database);
    }
    if found.is_none() {
        write_view_identity(&view, database)?;
    }
    Ok(view)
}

/// The view's layout version and database, the first keys of every view.
fn write_view_identity(view: &DB, database: DatabaseId) -> Result<()> {
    view.put(
        keys::meta(keys::META_VIEW_FORMAT),
        VIEW_FORMAT_VERSION.to_be_bytes(),
    )?;
    view.put(keys::meta(keys::META_DATABASE), database.0)?;
    Ok(())
}

/// Empties the view but for its identity, ready for a replay from the start
/// of the log.
fn reset_view(view: &DB, database: DatabaseId) -> Result<()> {
    clear_view(view)?;
    write_view_identity(view, database)
}

fn applied_position(view: &DB) -> Result<Option<Position>> {
    let key = keys::meta(keys::META_APPLIED);
    match view.get(&key)? {
        None => Ok(None),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::ViewCorrupt { key })?;
            Ok(Some(Position(u64::from_be_bytes(bytes))))
        }
    }
}

/// Empties the view. The range delete is then flushed and compacted away:
/// left in place, its tombstone would sit in front of every lookup of the
/// replay that follows.
fn clear_view(view: &DB) -> Result<()> {
    let mut batch = rocksdb::WriteBatch::default();
    batch.delete_range(vec![0x00], vec![0xFF, 0xFF]);
    view.write(batch)?;
    view.flush()?;
    view.compact_range(None::<&[u8]>, None::<&[u8]>);
    Ok(())
}

/// Applies the log from `from` to the engine's view, in groups.
fn replay(
    engine: &mut Engine,
    from: Position,
    verify_signatures: bool,
    progress: Progress<'_>,
) -> Result<u64> {
    let start = engine.wal.start().0;
    let end = engine.wal.end().0;
    let mut replayed = 0;
    let mut group: Vec<(Change, Option<Position>)> = Vec::with_capacity(REPLAY_GROUP_CHANGES);
    for item in engine.wal.iter_from(from)? {
        let (position, bytes) = item?;
        let change = Change::decode(&bytes)
            .map_err(|error| corrupt_at(position, Refusal::Malformed(error)))?;
        group.push((change, Some(position)));
        if group.len() == REPLAY_GROUP_CHANGES {
            replayed += replay_group(engine, std::mem::take(&mut group), verify_signatures)?;
            progress(position.0.saturating_sub(start), end.saturating_sub(start));
        }
    }
    replayed += replay_group(engine, group, verify_signatures)?;
    progress(end.saturating_sub(start), end.saturating_sub(start));
    Ok(replayed)
}

fn replay_group(
    engine: &mut Engine,
    group: Vec<(Change, Option<Position>)>,
    verify_signatures: bool,
) -> Result<u64> {
    if verify_signatures {
        let changes: Vec<Change> = group.iter().map(|(change, _)| change.clone()).collect();
        let mut report = ApplyReport::default();
        let verified = verify_parallel(changes, &mut report);
        if let Some((hash, refusal)) = report.refused.into_iter().next() {
            let position = group
                .iter()
                .find(|(change, _)| Some(change.hash()) == hash)
                .and_then(|(_, p)| *p);
            return Err(corrupt_at(position.unwrap_or(Position(u64::MAX)), refusal));
        }
        debug_assert_eq!(verified.len(), group.len());
    }
    let mut report = ApplyReport::default();
    let accepted = engine.ingest(group, Source::Log, &mut report)?;
    Ok(accepted.len() as u64)
}

fn corrupt_at(position: Position, refusal: Refusal) -> Error {
    Error::LogCorrupt {
        position: position.0,
        reason: Box::new(refusal),
    }
}

/// Reads the change at `position` and checks it is `hash`.
pub(crate) fn read_change(wal: &Wal, position: u64, hash: &ChangeHash) -> Result<Change> {
    let bytes = wal.read_at(Position(position))?;
    let change = Change::decode(&bytes)
        .map_err(|error| corrupt_at(Position(position), Refusal::Malformed(error)))?;
    if change.hash() != *hash {
        return Err(Error::MissingChange { hash: *hash });
    }
    Ok(change)
}

/// Maps `items` on two threads when there are enough of them.
fn par_map<T: Sync, U: Send>(items: &[T], map: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if items.len() < PARALLEL_CHANGES_MIN || threads < 2 {
        return items.iter().map(map).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&map).collect::<Vec<U>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("worker does not panic"))
            .collect()
    })
}

/// Batch-verifies signatures, on two threads for large sets; refused
/// changes are reported and left out.
fn verify_parallel(changes: Vec<Change>, report: &mut ApplyReport) -> Vec<Change> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if changes.len() < PARALLEL_CHANGES_MIN || threads < 2 {
        return Engine::verify_new(changes, report);
    }
    let chunk = changes.len().div_ceil(threads);
    let parts: Vec<Vec<Change>> = changes.chunks(chunk).map(<[Change]>::to_vec).collect();
    let results: Vec<(Vec<Change>, ApplyReport)> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                scope.spawn(move || {
                    let mut local = ApplyReport::default();
                    let verified = Engine::verify_new(part, &mut local);
                    (verified, local)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("worker does not panic"))
            .collect()
    });
    let mut verified = Vec::new();
    for (part, local) in results {
        verified.extend(part);
        report.refused.extend(local.refused);
    }
    verified
}

const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Db>();
};

#[cfg(test)]
mod tests {
    use super::*;

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

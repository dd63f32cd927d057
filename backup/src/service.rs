//! The commands a replica runs: `init` (configure a place and wrap the
//! backup key to this device), `run` (one incremental backup), `list`, and
//! `prune` (two phases with a grace period).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use peers_engine::{Author, DatabaseId, Db};

use crate::config::{self, Config};
use crate::error::{Error, ObjectFault, Result};
use crate::format::{
    self, BackupKey, Entry, EntryKind, MANIFEST_BYTES_MAX, MANIFEST_ENTRIES_MAX, MANIFESTS_DIR,
    MARK_BYTES_MAX, MARK_NAMES_MAX, MARKS_DIR, Manifest, Mark, NamedKind, SEAL_OVERHEAD_BYTES,
    SEGMENT_BYTES_MAX, SEGMENTS_DIR, TAILS_DIR,
};
use crate::keys::{self, RecoveryKey};
use crate::store::{Listed, Store};

/// One `init`, `run` or `prune` at a time in this process: two runs at
/// once would both take the next run number. (Other processes reach a
/// database through the one that holds it, so this covers them too.)
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Progress of a long step: `(bytes done, bytes in all)`.
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) + Send);

/// What [`init`] did.
#[derive(Debug)]
pub struct InitReport {
    /// The store's URL.
    pub url: String,
    /// A new recovery key, when this `init` created the backup: print it
    /// once; it is the only way to restore when every device is lost.
    pub new_recovery_key: Option<RecoveryKey>,
    /// The key file wrapped to this device.
    pub key_object: String,
    /// The last run of this device found in the store (0 for none).
    pub last_run: u64,
}

/// Configures `db` to back up to `store`: a new backup (a new backup key,
/// wrapped to this device and to a recovery key: `recovery`, or a new one
/// returned in the report) when the store holds none; otherwise this device
/// joins the backup there, which needs its recovery key.
pub async fn init(db: &Db, store: &Store, recovery: Option<&RecoveryKey>) -> Result<InitReport> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = db.dir();
    match Config::load(dir) {
        Ok(config) => {
            return Err(Error::AlreadyConfigured {
                dir: dir.to_owned(),
                file: config::path(dir),
                url: config.url,
            });
        }
        Err(Error::NotConfigured { .. }) => {}
        Err(error) => return Err(error),
    }
    let database = db.database_id();
    let key_files = keys::key_files(store).await?;
    let (key, new_recovery_key, last_run) = if key_files.is_empty() {
        let key = BackupKey::generate();
        let (recovery, new) = match recovery {
            Some(recovery) => (recovery.clone(), None),
            None => {
                let recovery = RecoveryKey::generate();
                (recovery.clone(), Some(recovery))
            }
        };
        keys::write_key_file(store, &recovery.0.to_public(), &database, &key).await?;
        (key, new, 0)
    } else {
        let Some(recovery) = recovery else {
            return Err(Error::NeedRecoveryKey {
                keys: key_files.len(),
            });
        };
        let (_, found, key) = keys::find_key(store, &recovery.0).await?;
        if found != database {
            return Err(Error::OtherDatabase {
                found,
                expected: database,
            });
        }
        let device = db.author();
        let last_run = read_manifests(store, &key, &database)
            .await?
            .iter()
            .filter(|(_, manifest)| manifest.device == device)
            .map(|(_, manifest)| manifest.run)
            .max()
            .unwrap_or(0);
        (key, None, last_run)
    };
    let identity = age::x25519::Identity::generate();
    let key_object = keys::write_key_file(store, &identity.to_public(), &database, &key).await?;
    let config = Config {
        version: 1,
        url: store.url().to_owned(),
        identity: RecoveryKey(identity).to_text(),
        key_object: key_object.clone(),
        last_run,
    };
    config.save(dir)?;
    Ok(InitReport {
        url: store.url().to_owned(),
        new_recovery_key,
        key_object,
        last_run,
    })
}

/// The URL `db` backs up to (its `backup.json`).
pub fn configured_url(db: &Db) -> Result<String> {
    Ok(Config::load(db.dir())?.url)
}

/// This device's last completed run, as `DIR/backup.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRun {
    /// Its number (per device).
    pub run: u64,
    /// When it completed: `backup.json` is rewritten as a run's last step,
    /// so its modification time.
    pub completed: std::time::SystemTime,
}

/// The last run `db` completed (`None`: configured, no run yet). An error
/// if no backup is configured ([`Error::NotConfigured`]) or `backup.json`
/// cannot be read.
pub fn last_run(db: &Db) -> Result<Option<LastRun>> {
    let config = Config::load(db.dir())?;
    if config.last_run == 0 {
        return Ok(None);
    }
    let path = crate::config::path(db.dir());
    let completed = std::fs::metadata(&path)
        .and_then(|metadata| metadata.modified())
        .map_err(Error::io(&path))?;
    Ok(Some(LastRun {
        run: config.last_run,
        completed,
    }))
}

/// The database and backup key, opened with this device's key file.
async fn device_key(db: &Db, store: &Store, config: &Config) -> Result<(DatabaseId, BackupKey)> {
    let identity = config.identity(db.dir())?;
    let Some((database, key)) = keys::open_key_file(store, &config.key_object, &identity).await?
    else {
        return Err(Error::object(&config.key_object, ObjectFault::Unauthentic));
    };
    if database != db.database_id() {
        return Err(Error::OtherDatabase {
            found: database,
            expected: db.database_id(),
        });
    }
    Ok((database, key))
}

/// What unlocks a backup: a configured replica, or the recovery key.
#[derive(Debug, Clone, Copy)]
pub enum Unlock<'a> {
    /// A replica with a backup configured (`init`).
    Device(&'a Db),
    /// The recovery key.
    Recovery(&'a RecoveryKey),
}

pub(crate) async fn unlock(store: &Store, unlock: Unlock<'_>) -> Result<(DatabaseId, BackupKey)> {
    match unlock {
        Unlock::Device(db) => device_key(db, store, &Config::load(db.dir())?).await,
        Unlock::Recovery(recovery) => {
            let (_, database, key) = keys::find_key(store, &recovery.0).await?;
            Ok((database, key))
        }
    }
}

/// Reads, opens and checks one manifest object.
async fn read_manifest(
    store: &Store,
    key: &BackupKey,
    database: &DatabaseId,
    name: &str,
) -> Result<Manifest> {
    let object = store
        .get(name, MANIFEST_BYTES_MAX + SEAL_OVERHEAD_BYTES)
        .await?;
    let plaintext =
        format::open(key, database, name, &object).map_err(|fault| Error::object(name, fault))?;
    let manifest = Manifest::decode(&plaintext).map_err(|fault| Error::object(name, fault))?;
    // The seal binds the name; this binds the name to what the manifest says.
    if manifest.database != *database
        || format::object_name(key, NamedKind::Manifest, &manifest.device, manifest.run) != name
    {
        return Err(Error::object(
            name,
            ObjectFault::Misplaced {
                device: manifest.device,
                run: manifest.run,
            },
        ));
    }
    Ok(manifest)
}

/// Every manifest in the store, each checked (the first bad one is the
/// error), with its name.
pub(crate) async fn read_manifests(
    store: &Store,
    key: &BackupKey,
    database: &DatabaseId,
) -> Result<Vec<(String, Manifest)>> {
    let mut manifests = Vec::new();
    for listed in store.list(MANIFESTS_DIR).await? {
        let manifest = read_manifest(store, key, database, &listed.name).await?;
        manifests.push((listed.name, manifest));
    }
    Ok(manifests)
}

/// What one [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The run's number (per device).
    pub run: u64,
    /// Its manifest's name.
    pub manifest: String,
    /// The log's bytes as of the run.
    pub log_bytes: u64,
    /// Sealed segments uploaded by this run.
    pub segments_uploaded: u64,
    /// Sealed segments an earlier run had uploaded.
    pub segments_kept: u64,
    /// Bytes of the last (unsealed) segment this run uploaded: what was
    /// appended since the previous run (or the whole tail, when the
    /// previous run's pieces could not be reused).
    pub tail_bytes: u64,
    /// Bytes written to the store (objects, manifest included).
    pub bytes_uploaded: u64,
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The rollback check before a run: the store must still hold this
/// device's last manifest, and not yet the next one. Returns the last
/// manifest (to reuse its segments).
async fn check_last_run(
    store: &Store,
    key: &BackupKey,
    database: &DatabaseId,
    device: &Author,
    last_run: u64,
) -> Result<Option<Manifest>> {
    let listed: BTreeSet<String> = store
        .list(MANIFESTS_DIR)
        .await?
        .into_iter()
        .map(|object| object.name)
        .collect();
    let next = format::object_name(key, NamedKind::Manifest, device, last_run + 1);
    if listed.contains(&next) {
        return Err(Error::RunExists {
            run: last_run + 1,
            name: next,
        });
    }
    if last_run == 0 {
        return Ok(None);
    }
    let last = format::object_name(key, NamedKind::Manifest, device, last_run);
    if !listed.contains(&last) {
        let found = read_manifests(store, key, database)
            .await?
            .iter()
            .filter(|(_, manifest)| manifest.device == *device)
            .map(|(_, manifest)| manifest.run)
            .max()
            .unwrap_or(0);
        return Err(Error::Rollback {
            device: *device,
            found,
            expected: last_run,
        });
    }
    Ok(Some(read_manifest(store, key, database, &last).await?))
}

/// Reads `bytes` of the log segment `base` from `offset`.
fn read_segment(db: &Db, base: u64, offset: u64, bytes: u64) -> Result<Vec<u8>> {
    if offset.saturating_add(bytes) > SEGMENT_BYTES_MAX {
        return Err(Error::SegmentTooLarge {
            base,
            bytes: offset.saturating_add(bytes),
            max: SEGMENT_BYTES_MAX,
        });
    }
    let mut buffer = vec![0u8; usize::try_from(bytes).unwrap_or(usize::MAX)];
    db.read_log_segment(base, offset, &mut buffer)?;
    Ok(buffer)
}

/// Most pieces one tail may have; past it a run uploads the tail whole,
/// as one piece again.
pub const TAIL_PIECES_MAX: usize = 1024;

/// One incremental backup of `db` to `store` (which must be the configured
/// place): makes the log durable, then uploads the sealed segments no
/// earlier run uploaded, the bytes of the last segment appended since the
/// previous run (a tail piece), and a new signed manifest naming them all;
/// then records the run.
pub async fn run(db: &Db, store: &Store, progress: Progress<'_>) -> Result<RunReport> {
    if let Some(checkpoint) = db.trimmed_at() {
        return Err(Error::Trimmed {
            dir: db.dir().to_owned(),
            checkpoint: checkpoint.hash(),
        });
    }
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut config = Config::load(db.dir())?;
    let (database, key) = device_key(db, store, &config).await?;
    let device = db.author();
    let previous = check_last_run(store, &key, &database, &device, config.last_run).await?;
    let run = config.last_run + 1;
    let created_ms = now_ms();
    // Only durable bytes travel: a relaxed commit a power loss could still
    // take from the log must not outlive it in a backup (the device would
    // then sign another change at that seq: a fork of its own key).
    db.sync()?;
    let segments = db.log_segments()?;
    let mut stored: HashMap<String, u64> = HashMap::new();
    for dir in [SEGMENTS_DIR, TAILS_DIR] {
        stored.extend(
            store
                .list(dir)
                .await?
                .into_iter()
                .map(|object| (object.name, object.bytes)),
        );
    }
    let previous_entries = previous
        .map(|manifest| manifest.entries)
        .unwrap_or_default();
    let mut report = RunReport {
        run,
        manifest: format::object_name(&key, NamedKind::Manifest, &device, run),
        log_bytes: segments.last().map_or(0, |last| last.base + last.bytes),
        segments_uploaded: 0,
        segments_kept: 0,
        tail_bytes: 0,
        bytes_uploaded: 0,
    };
    let upload = Upload {
        db,
        store,
        key: &key,
        database: &database,
        device: &device,
        stored: &stored,
    };
    let mut entries = Vec::with_capacity(segments.len() + 1);
    for segment in &segments {
        if segment.sealed {
            let kept = previous_entries.iter().find(|entry| {
                entry.kind == EntryKind::Segment
                    && entry.base == segment.base
                    && entry.bytes == segment.bytes
            });
            let (entry, uploaded) = upload.segment(segment.base, segment.bytes, kept).await?;
            match uploaded {
                0 => report.segments_kept += 1,
                _ => report.segments_uploaded += 1,
            }
            report.bytes_uploaded += uploaded;
            entries.push(entry);
        } else {
            let pieces: Vec<Entry> = previous_entries
                .iter()
                .filter(|entry| entry.kind == EntryKind::Tail && entry.base == segment.base)
                .copied()
                .collect();
            let (tail, uploaded) = upload
                .tail(segment.base, segment.bytes, pieces, run)
                .await?;
            report.tail_bytes = tail
                .last()
                .map_or(0, |piece| if piece.run == run { piece.bytes } else { 0 });
            report.bytes_uploaded += uploaded;
            entries.extend(tail);
        }
        progress(segment.base + segment.bytes, report.log_bytes);
    }
    if entries.len() > MANIFEST_ENTRIES_MAX as usize {
        return Err(Error::TooManyObjects {
            dir: SEGMENTS_DIR.to_owned(),
            max: MANIFEST_ENTRIES_MAX as usize,
        });
    }
    let manifest = Manifest {
        database,
        device,
        run,
        created_ms,
        entries,
    };
    let object = format::seal(
        &key,
        &database,
        &report.manifest,
        &manifest.encode_signed(db.identity()),
    );
    report.bytes_uploaded += object.len() as u64;
    store.put(&report.manifest, object).await?;
    config.last_run = run;
    config.save(db.dir())?;
    Ok(report)
}

/// What one run uploads with.
struct Upload<'a> {
    db: &'a Db,
    store: &'a Store,
    key: &'a BackupKey,
    database: &'a DatabaseId,
    device: &'a Author,
    /// The segment and tail objects the store lists, with their sizes.
    stored: &'a HashMap<String, u64>,
}

impl Upload<'_> {
    /// Whether the store lists the object `name` at the size `bytes` seal to.
    fn has(&self, name: &str, bytes: u64) -> bool {
        self.stored.get(name) == Some(&(bytes + SEAL_OVERHEAD_BYTES))
    }

    /// Seals and uploads `bytes` as `name`; returns the object's size.
    async fn put(&self, name: &str, bytes: &[u8]) -> Result<u64> {
        let object = format::seal(self.key, self.database, name, bytes);
        let size = object.len() as u64;
        self.store.put(name, object).await?;
        Ok(size)
    }

    /// A sealed segment: the entry an earlier run made, if the store still
    /// has its object; otherwise uploaded. Returns the entry and the bytes
    /// uploaded.
    async fn segment(&self, base: u64, bytes: u64, kept: Option<&Entry>) -> Result<(Entry, u64)> {
        let name = format::object_name(self.key, NamedKind::Segment, self.device, base);
        if let Some(entry) = kept
            && self.has(&name, bytes)
        {
            return Ok((*entry, 0));
        }
        let content = read_segment(self.db, base, 0, bytes)?;
        let entry = Entry {
            kind: EntryKind::Segment,
            base,
            offset: 0,
            bytes,
            run: 0,
            hash: *blake3::hash(&content).as_bytes(),
        };
        Ok((entry, self.put(&name, &content).await?))
    }

    /// The last segment: the previous run's pieces, when the local bytes
    /// still hash to them and the store still has them, plus a piece of what
    /// was appended since; otherwise the whole tail as one piece.
    async fn tail(
        &self,
        base: u64,
        bytes: u64,
        pieces: Vec<Entry>,
        run: u64,
    ) -> Result<(Vec<Entry>, u64)> {
        let covered = pieces.last().map_or(0, |piece| piece.offset + piece.bytes);
        let mut reusable = !pieces.is_empty() && covered <= bytes && pieces.len() < TAIL_PIECES_MAX;
        for piece in &pieces {
            if !reusable {
                break;
            }
            let name = format::object_name(self.key, NamedKind::Tail, self.device, piece.run);
            let local = read_segment(self.db, base, piece.offset, piece.bytes)?;
            reusable =
                self.has(&name, piece.bytes) && *blake3::hash(&local).as_bytes() == piece.hash;
        }
        let (mut entries, from) = if reusable {
            (pieces, covered)
        } else {
            (Vec::new(), 0)
        };
        if from == bytes {
            return Ok((entries, 0));
        }
        let content = read_segment(self.db, base, from, bytes - from)?;
        let name = format::object_name(self.key, NamedKind::Tail, self.device, run);
        entries.push(Entry {
            kind: EntryKind::Tail,
            base,
            offset: from,
            bytes: bytes - from,
            run,
            hash: *blake3::hash(&content).as_bytes(),
        });
        let uploaded = self.put(&name, &content).await?;
        Ok((entries, uploaded))
    }
}

/// One backup run as [`list`] shows it.
#[derive(Debug, Clone)]
pub struct ListedRun {
    /// Its manifest's name.
    pub name: String,
    /// The manifest.
    pub manifest: Manifest,
    /// Bytes its objects take in the store (manifest included; objects
    /// shared with other runs count in each).
    pub stored_bytes: u64,
    /// The objects it names (segments, then the tail), in log order.
    pub objects: Vec<String>,
    /// Those the store does not list.
    pub missing: Vec<String>,
}

/// What a store holds.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The database backed up.
    pub database: DatabaseId,
    /// Every run, by device then run number.
    pub runs: Vec<ListedRun>,
    /// Objects in the store (all kinds).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

async fn list_all(store: &Store) -> Result<Vec<Listed>> {
    let mut all = Vec::new();
    for dir in [
        SEGMENTS_DIR,
        TAILS_DIR,
        MANIFESTS_DIR,
        format::KEYS_DIR,
        MARKS_DIR,
    ] {
        all.extend(store.list(dir).await?);
    }
    Ok(all)
}

/// Lists the backup runs in `store`, every manifest opened and checked.
pub async fn list(store: &Store, unlock_with: Unlock<'_>) -> Result<Listing> {
    let (database, key) = unlock(store, unlock_with).await?;
    let all = list_all(store).await?;
    let sizes: HashMap<&str, u64> = all
        .iter()
        .map(|object| (object.name.as_str(), object.bytes))
        .collect();
    let mut runs = Vec::new();
    for (name, manifest) in read_manifests(store, &key, &database).await? {
        let mut stored_bytes = sizes.get(name.as_str()).copied().unwrap_or(0);
        let mut missing = Vec::new();
        let objects: Vec<String> = manifest.entry_names(&key).map(|(name, _)| name).collect();
        for object in &objects {
            match sizes.get(object.as_str()) {
                Some(bytes) => stored_bytes += bytes,
                None => missing.push(object.clone()),
            }
        }
        runs.push(ListedRun {
            name,
            manifest,
            stored_bytes,
            objects,
            missing,
        });
    }
    runs.sort_by_key(|run| (run.manifest.device, run.manifest.run));
    Ok(Listing {
        database,
        objects: all.len() as u64,
        bytes: all.iter().map(|object| object.bytes).sum(),
        runs,
    })
}

/// How [`prune`] chooses.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Runs kept per device, newest first (at least 1).
    pub keep: usize,
    /// How long an object stays marked before it may be deleted: longer
    /// than any backup run takes.
    pub grace: Duration,
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Manifests kept.
    pub runs_kept: usize,
    /// Objects deleted (marked at least the grace period ago and still
    /// unreferenced and unchanged).
    pub deleted: Vec<String>,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Objects marked by this call, deletable after the grace period.
    pub marked: usize,
    /// Objects waiting in earlier marks whose grace has not run out.
    pub waiting: usize,
}

/// The objects no kept manifest names (kept: the newest `keep` runs per
/// device), among segments, tails and manifests.
async fn unreferenced(
    store: &Store,
    key: &BackupKey,
    database: &DatabaseId,
    keep: usize,
) -> Result<(usize, BTreeMap<String, Listed>)> {
    let mut by_device: BTreeMap<Author, Vec<(String, Manifest)>> = BTreeMap::new();
    for (name, manifest) in read_manifests(store, key, database).await? {
        by_device
            .entry(manifest.device)
            .or_default()
            .push((name, manifest));
    }
    let mut referenced = BTreeSet::new();
    let mut kept = 0;
    for manifests in by_device.values_mut() {
        manifests.sort_by_key(|(_, manifest)| std::cmp::Reverse(manifest.run));
        for (name, manifest) in manifests.iter().take(keep.max(1)) {
            kept += 1;
            referenced.insert(name.clone());
            referenced.extend(manifest.entry_names(key).map(|(name, _)| name));
        }
    }
    let mut candidates = BTreeMap::new();
    for dir in [SEGMENTS_DIR, TAILS_DIR, MANIFESTS_DIR] {
        for object in store.list(dir).await? {
            if !referenced.contains(&object.name) && format::is_named(&object.name) {
                candidates.insert(object.name.clone(), object);
            }
        }
    }
    Ok((kept, candidates))
}

/// Prunes old runs, in two phases so that a run in flight never loses an
/// object it will name: objects no kept manifest names are first *marked*
/// (a sealed mark object listing them and their modification times); a
/// later prune, once `grace` has passed, deletes those still unreferenced
/// and not written since. Each call does both: it completes the marks
/// whose grace ran out, then marks what is newly unreferenced.
pub async fn prune(db: &Db, store: &Store, options: PruneOptions) -> Result<PruneReport> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let config = Config::load(db.dir())?;
    let (database, key) = device_key(db, store, &config).await?;
    let now = now_ms();
    let grace_ms = u64::try_from(options.grace.as_millis()).unwrap_or(u64::MAX);
    let (runs_kept, candidates) = unreferenced(store, &key, &database, options.keep).await?;
    let mut report = PruneReport {
        runs_kept,
        ..PruneReport::default()
    };
    let mut waiting = BTreeSet::new();
    for listed in store.list(MARKS_DIR).await? {
        let object = store
            .get(&listed.name, MARK_BYTES_MAX + SEAL_OVERHEAD_BYTES)
            .await?;
        let mark = format::open(&key, &database, &listed.name, &object)
            .and_then(|plaintext| Mark::decode(&plaintext));
        let mark = match mark {
            Ok(mark) => mark,
            Err(fault) => {
                // A mark only allows deletions: dropping a bad one is safe.
                tracing::warn!(name = %listed.name, %fault, "dropping a prune mark that does not open");
                store.delete(&listed.name).await?;
                continue;
            }
        };
        if now.saturating_sub(mark.created_ms) < grace_ms {
            waiting.extend(mark.names.into_iter().map(|(name, _)| name));
            continue;
        }
        for (name, modified_ms) in mark.names {
            let Some(object) = candidates.get(&name) else {
                continue;
            };
            if object.modified_ms != modified_ms {
                continue;
            }
            store.delete(&name).await?;
            report.deleted_bytes += object.bytes;
            report.deleted.push(name);
        }
        store.delete(&listed.name).await?;
    }
    let deleted: BTreeSet<&String> = report.deleted.iter().collect();
    let names: Vec<(String, u64)> = candidates
        .values()
        .filter(|object| !deleted.contains(&object.name) && !waiting.contains(&object.name))
        .map(|object| (object.name.clone(), object.modified_ms))
        .take(MARK_NAMES_MAX)
        .collect();
    report.waiting = waiting.len();
    report.marked = names.len();
    if !names.is_empty() {
        let name = format::random_name(MARKS_DIR);
        let mark = Mark {
            created_ms: now,
            names,
        };
        let object = format::seal(&key, &database, &name, &mark.encode());
        store.put(&name, object).await?;
    }
    Ok(report)
}

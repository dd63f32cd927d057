//! `peers backup …`: encrypted backups to object storage (`peers-backup`).
//! Each command runs the service's async function on a runtime of its own,
//! on a thread of its own (so it also runs inside a holder's runtime); the
//! output is printed here, on the calling thread (the console routes it to
//! the terminal or to a control client).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use peers_backup::{
    PruneOptions, RecoveryKey, RestoreOptions, Stage, Store, Unlock, configured_url,
};
use peers_engine::{Author, Db};
use serde_json::json;

use crate::console::{self, bar_style, print, progress_bar};

/// The backup's recovery key, where a command takes one.
#[derive(clap::Args, Debug)]
pub(crate) struct KeyArg {
    /// The backup's recovery key (AGE-SECRET-KEY-1…), printed by the first `peers backup init`; better given as PEERS_RECOVERY_KEY, which stays out of the process list.
    #[arg(
        long = "recovery-key",
        env = "PEERS_RECOVERY_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    recovery_key: Option<String>,
}

/// The `peers backup` subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum BackupCommand {
    /// Configure where this replica backs up: a local directory, or s3://BUCKET/PREFIX (credentials, region and endpoint from the AWS_* environment variables). The first device prints the recovery key; a device joining an existing backup needs it.
    Init {
        /// Where backups go.
        #[arg(long, value_name = "URL")]
        to: String,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Back up what changed since the last run: new sealed log segments, the log's tail, and a signed manifest.
    Run,
    /// List the backup runs in the configured place, or in --from URL with the recovery key.
    List {
        /// Another place (needs the recovery key).
        #[arg(long, value_name = "URL")]
        from: Option<String>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Restore a backup into DIR, a new replica (with its own new key), verified before it appears.
    Restore {
        /// Where the backup is.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The new replica's directory (must not exist).
        dir: PathBuf,
        #[command(flatten)]
        key: KeyArg,
        /// Restore this device's newest run (its public key; default: the most recent run of any device).
        #[arg(long, value_name = "KEY")]
        device: Option<String>,
        /// Refuse if the newest run is below N (the run `peers backup run` printed): catches a store that hides newer runs.
        #[arg(long, value_name = "N")]
        min_run: Option<u64>,
    },
    /// Delete old runs in two phases: objects only older runs name are marked now and deleted by a later prune once the grace period has passed.
    Prune {
        /// Runs kept per device.
        #[arg(long, default_value_t = 7, value_name = "N")]
        keep: usize,
        /// How long a marked object waits (longer than any backup run takes): 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        grace: String,
    },
}

/// Runs `future` to completion on a new runtime on a new thread.
fn block_on<F>(future: F) -> Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the backup's runtime")?;
                Ok(runtime.block_on(future))
            })
            .join()
            .map_err(|_| anyhow!("the backup thread panicked"))?
    })
}

/// A local path made absolute (from the client's directory when run for
/// one), so `backup.json` names the same place from anywhere; URLs as they
/// are.
fn place(url: &str) -> Result<String> {
    if url.contains("://") {
        return Ok(url.to_owned());
    }
    let path = console::path(Path::new(url));
    let absolute = std::path::absolute(&path)
        .with_context(|| format!("{} as an absolute path", path.display()))?;
    Ok(absolute.display().to_string())
}

fn open_store(url: &str) -> Result<Store> {
    Store::open(url).with_context(|| format!("opening the backup place {url}"))
}

/// Opens a place to read a backup from: a local directory must exist (a
/// mistyped path is not made into an empty store).
fn open_existing(url: &str) -> Result<Store> {
    if !url.contains("://") && !Path::new(url).is_dir() {
        anyhow::bail!("no backup at {url}: not a directory");
    }
    open_store(url)
}

fn recovery_key(text: &str) -> Result<RecoveryKey> {
    RecoveryKey::parse(text).context("--recovery-key (or PEERS_RECOVERY_KEY)")
}

/// The subcommands that run on an open database.
pub(crate) fn run_on(db: &Db, command: BackupCommand, json: bool) -> Result<()> {
    match command {
        BackupCommand::Init { to, key } => {
            init(db, &place(&to)?, key.recovery_key.as_deref(), json)
        }
        BackupCommand::Run => run(db, json),
        BackupCommand::List { .. } => list(db, json),
        BackupCommand::Prune { keep, grace } => {
            let grace = crate::commands::parse_duration(&grace)?;
            prune(db, keep, grace, json)
        }
        BackupCommand::Restore { .. } => Err(anyhow!(
            "`peers backup restore` makes a new directory: run it without --db"
        )),
    }
}

fn init(db: &Db, url: &str, key: Option<&str>, json: bool) -> Result<()> {
    let store = open_store(url)?;
    let recovery = key.map(recovery_key).transpose()?;
    let report = block_on(peers_backup::init(db, &store, recovery.as_ref()))??;
    let new_key = report.new_recovery_key.as_ref().map(RecoveryKey::to_text);
    print(
        json,
        json!({
            "url": report.url,
            "key_object": report.key_object,
            "last_run": report.last_run,
            "recovery_key": new_key,
        }),
        || match &new_key {
            Some(key) => format!(
                "backups of this replica go to {}\n\
                 recovery key (print it, keep it offline; without it a backup cannot be restored once every device is lost):\n{key}",
                report.url
            ),
            None => format!(
                "this device joined the backup in {} (its last run there: {})",
                report.url, report.last_run
            ),
        },
    );
    Ok(())
}

fn run(db: &Db, json: bool) -> Result<()> {
    let store = open_store(&configured_url(db)?)?;
    let bar = progress_bar(0, "backing up");
    bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
    let started = std::time::Instant::now();
    let report = block_on(peers_backup::run(db, &store, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }))?;
    bar.finish_and_clear();
    let report = report.context("backup failed")?;
    let seconds = started.elapsed().as_secs_f64();
    print(
        json,
        json!({
            "run": report.run,
            "manifest": report.manifest,
            "log_bytes": report.log_bytes,
            "segments_uploaded": report.segments_uploaded,
            "segments_kept": report.segments_kept,
            "tail_bytes": report.tail_bytes,
            "bytes_uploaded": report.bytes_uploaded,
            "seconds": seconds,
        }),
        || {
            format!(
                "backup run {}: log of {} bytes; uploaded {} new sealed segments (kept {}) and the tail ({} bytes); {} bytes written in {seconds:.2} s",
                report.run,
                report.log_bytes,
                report.segments_uploaded,
                report.segments_kept,
                report.tail_bytes,
                report.bytes_uploaded
            )
        },
    );
    Ok(())
}

fn list(db: &Db, json: bool) -> Result<()> {
    let store = open_store(&configured_url(db)?)?;
    let listing = block_on(peers_backup::list(&store, Unlock::Device(db)))??;
    list_output(&listing, json);
    Ok(())
}

/// `peers backup list --from URL` with the recovery key: needs no database.
fn list_from(url: &str, key: Option<&str>, json: bool) -> Result<()> {
    let store = open_existing(&place(url)?)?;
    let key = recovery_key(key.context(
        "--from needs the backup's recovery key: --recovery-key KEY, or PEERS_RECOVERY_KEY",
    )?)?;
    let listing = block_on(peers_backup::list(&store, Unlock::Recovery(&key)))??;
    list_output(&listing, json);
    Ok(())
}

/// The subcommands that need no database: `restore`, and `list --from`.
pub(crate) fn without_db(command: BackupCommand, json: bool) -> Result<()> {
    match command {
        BackupCommand::List {
            from: Some(from),
            key,
        } => list_from(&from, key.recovery_key.as_deref(), json),
        command => restore(command, json),
    }
}

fn list_output(listing: &peers_backup::Listing, json: bool) {
    if json {
        for run in &listing.runs {
            print(
                true,
                json!({
                    "device": run.manifest.device.to_hex(),
                    "run": run.manifest.run,
                    "created_ms": run.manifest.created_ms,
                    "log_bytes": run.manifest.log_end(),
                    "segments": run.manifest.entries.len(),
                    "stored_bytes": run.stored_bytes,
                    "missing": run.missing,
                }),
                String::new,
            );
        }
        print(
            true,
            json!({ "database": listing.database.to_hex(), "objects": listing.objects, "bytes": listing.bytes }),
            String::new,
        );
        return;
    }
    let now = peers_backup::now_ms();
    for run in &listing.runs {
        let missing = if run.missing.is_empty() {
            String::new()
        } else {
            format!(
                "; MISSING {} objects: {}",
                run.missing.len(),
                run.missing.join(", ")
            )
        };
        console::out(&format!(
            "device {} run {}: log of {} bytes in {} objects, made {} ago; {} bytes stored{missing}",
            &run.manifest.device.to_hex()[..16],
            run.manifest.run,
            run.manifest.log_end(),
            run.manifest.entries.len(),
            age(now.saturating_sub(run.manifest.created_ms)),
            run.stored_bytes,
        ));
    }
    console::out(&format!(
        "database {}: {} runs; {} objects, {} bytes in the store",
        listing.database,
        listing.runs.len(),
        listing.objects,
        listing.bytes
    ));
}

fn prune(db: &Db, keep: usize, grace: Duration, json: bool) -> Result<()> {
    if keep == 0 {
        anyhow::bail!("--keep must be at least 1");
    }
    let store = open_store(&configured_url(db)?)?;
    let report = block_on(peers_backup::prune(
        db,
        &store,
        PruneOptions { keep, grace },
    ))??;
    print(
        json,
        json!({
            "runs_kept": report.runs_kept,
            "deleted": report.deleted.len(),
            "deleted_bytes": report.deleted_bytes,
            "marked": report.marked,
            "waiting": report.waiting,
        }),
        || {
            format!(
                "kept {} runs; deleted {} objects ({} bytes) marked at least {} ago; marked {} more; {} wait for their grace period",
                report.runs_kept,
                report.deleted.len(),
                report.deleted_bytes,
                humanize(grace),
                report.marked,
                report.waiting
            )
        },
    );
    Ok(())
}

fn humanize(duration: Duration) -> String {
    format!("{} s", duration.as_secs())
}

/// `42 s`, `17 min`, `5 h`, `3 d`.
fn age(elapsed_ms: u64) -> String {
    let seconds = elapsed_ms / 1000;
    match seconds {
        0..120 => format!("{seconds} s"),
        120..7200 => format!("{} min", seconds / 60),
        7200..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    }
}

/// Backups in the background (`peers serve --backup-every`): a thread that
/// runs one every interval, until dropped (which waits for a run in flight).
pub(crate) struct Background {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Checks that a backup is configured, then starts the thread.
    pub(crate) fn start(db: &Db, every: Duration, json: bool) -> Result<Background> {
        if every.is_zero() {
            anyhow::bail!("--backup-every must be longer than 0 s");
        }
        let store = open_store(&configured_url(db).context("--backup-every")?)?;
        let db = db.clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("backup".into())
            .spawn(move || {
                // A message never comes: the sender is dropped to stop.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    background_run(&db, &store, json);
                }
            })
            .context("starting the backup thread")?;
        Ok(Background {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One background run: an event line, or an error line; the next run
/// tries again either way.
fn background_run(db: &Db, store: &Store, json: bool) {
    let report = block_on(peers_backup::run(db, store, &mut |_, _| {}));
    match report {
        Ok(Ok(report)) => print(
            json,
            json!({
                "event": "backup",
                "run": report.run,
                "log_bytes": report.log_bytes,
                "segments_uploaded": report.segments_uploaded,
                "bytes_uploaded": report.bytes_uploaded,
            }),
            || {
                format!(
                    "backup run {}: log of {} bytes, {} bytes written",
                    report.run, report.log_bytes, report.bytes_uploaded
                )
            },
        ),
        Ok(Err(error)) => console::err(&format!(
            "peers: backup failed (the next run tries again): {error}"
        )),
        Err(error) => console::err(&format!(
            "peers: backup failed (the next run tries again): {error}"
        )),
    }
}

/// `peers backup restore`: needs no database.
fn restore(command: BackupCommand, json: bool) -> Result<()> {
    let BackupCommand::Restore {
        from,
        dir,
        key,
        device,
        min_run,
    } = command
    else {
        unreachable!("called for restore only");
    };
    let store = open_existing(&place(&from)?)?;
    let key = recovery_key(key.recovery_key.as_deref().context(
        "restore needs the backup's recovery key: --recovery-key KEY, or PEERS_RECOVERY_KEY",
    )?)?;
    let device = device
        .map(|device| {
            Author::from_hex(&device).context("--device must be a public key: 64 hex digits")
        })
        .transpose()?;
    let bar = progress_bar(0, "downloading");
    bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
    let started = std::time::Instant::now();
    let report = block_on(peers_backup::restore(
        &store,
        &key,
        &dir,
        RestoreOptions { device, min_run },
        &mut |stage, done, total| {
            bar.set_message(match stage {
                Stage::Download => "downloading",
                Stage::Verify => "verifying",
            });
            bar.set_length(total);
            bar.set_position(done);
        },
    ))?;
    bar.finish_and_clear();
    let report = report.with_context(|| format!("restoring into {}", dir.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    print(
        json,
        json!({
            "dir": dir.display().to_string(),
            "database": report.database.to_hex(),
            "device": report.device.to_hex(),
            "run": report.run,
            "log_bytes": report.log_bytes,
            "changes": report.changes,
            "state_hash": report.state_hash.to_hex(),
            "author": report.author.to_hex(),
            "seconds": seconds,
        }),
        || {
            format!(
                "restored run {} of device {} into {}: {} changes verified, state hash {}; this replica's key is {} ({seconds:.2} s)",
                report.run,
                &report.device.to_hex()[..16],
                dir.display(),
                report.changes,
                report.state_hash,
                report.author
            )
        },
    );
    Ok(())
}

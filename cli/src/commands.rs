//! One function per command.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use peers_engine::{
    Author, Change, ChangeHash, ChangeSetReader, ChangeSetWriter, CheckpointVerdict, DatabaseId,
    Db, Op, Options, RECEIVED_SNAPSHOT_FILE, Refusal, Role, SnapshotReader, TrimReport, TrimStep,
    Value, VersionVector,
};
use serde_json::json;

use crate::backup::BackupCommand;
use crate::console::{self, bar_style, print, progress_bar};
use crate::control::{self, Route};
use crate::output::{
    ImportTally, history_json, op_json, row_json, row_text, version_vector_from_json,
    version_vector_json,
};
use crate::{Cli, Command, SnapshotCommand};

/// How many holders in a row may turn a command away (they were stopping)
/// before it gives up.
const HOLDER_RETRIES: u32 = 10;

/// Changes handed to the engine per batch during an import.
const IMPORT_BATCH_CHANGES: usize = 4096;

/// Runs a command typed at this terminal: directly, or through the process
/// that holds the database (`crate::control`).
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        Command::Demo => return crate::demo::run().map(|()| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            let mut command = crate::command();
            clap_complete::generate(shell, &mut command, "peers", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            let command = crate::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Serve {
            config: Some(path), ..
        } => {
            if cli.db.is_some() {
                bail!(
                    "--config names the databases to serve (dir = \"DIR\" in each [[databases]]): drop --db (or unset PEERS_DB)"
                );
            }
            crate::serve::serve_file(&path, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Signal { listen, stun } => {
            crate::network::signal(listen, stun.as_deref(), json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keys { action } => {
            crate::keys::run(action, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Registry { action } => {
            crate::registry::run(action, cli.db.as_deref(), json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Login { account, key_file } => {
            crate::keys::login(&account, &key_file, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Buffer {
            action: None,
            server,
        } => {
            crate::buffer::serve(server, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Snapshot {
            action: SnapshotCommand::Check { file },
        } => {
            snapshot_check(&file, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Backup {
            action:
                action @ (BackupCommand::Restore { .. } | BackupCommand::List { from: Some(_), .. }),
        } => {
            crate::backup::without_db(action, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let dir = cli
        .db
        .clone()
        .context("--db DIR is required (or set PEERS_DB)")?;
    if let Command::Trim = cli.command {
        // Trimming replaces the log and the view: no holder can run it.
        trim(&dir, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Snapshot {
        action: SnapshotCommand::Install { file },
    } = &cli.command
    {
        install(&dir, file, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    match cli.command {
        Command::Init { open, identity } => init(&dir, open, identity.as_deref(), json)?,
        Command::Join {
            database,
            across,
            identity,
            snapshot,
        } => {
            let identity = load_identity(identity.as_deref())?;
            if let Some(file) = snapshot {
                join_from_snapshot(&dir, &database, &file, identity, json)?;
            } else if database
                .trim_start()
                .to_ascii_uppercase()
                .starts_with(peers_net::invite::TICKET_PREFIX)
            {
                crate::network::join_ticket(&dir, &database, &across, identity, json)?;
            } else {
                join(&dir, &database, identity, json)?;
            }
        }
        command => {
            // A one-shot sync that receives a snapshot installs it, then
            // syncs again for the changes above it.
            let resync = match &command {
                Command::Sync {
                    address,
                    expect_key,
                    live: false,
                    across,
                } => Some((address.clone(), expect_key.clone(), across.clone())),
                _ => None,
            };
            let db = match open_routed(&dir)? {
                Ok(db) => db,
                Err(code) => return Ok(code),
            };
            // While this command runs, others reach the database through
            // it; except a rebuild, which needs the view to itself.
            let listening = match command {
                Command::Rebuild => None,
                _ => match control::Control::start(&db) {
                    Ok(listening) => Some(listening),
                    Err(error) => {
                        tracing::warn!(%error, "no control socket in {}: other commands cannot reach this process", dir.display());
                        None
                    }
                },
            };
            let result = run_on(&db, command, json);
            drop(listening);
            result?;
            if let Some((address, expect_key, across)) = resync
                && console::path(&dir).join(RECEIVED_SNAPSHOT_FILE).exists()
            {
                drop(db);
                if let Ok(db) = open_routed(&dir)? {
                    crate::network::sync(
                        &db,
                        &address,
                        expect_key.as_deref(),
                        false,
                        &across,
                        json,
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the database in `dir` for a command: installs first a snapshot a
/// sync received, when no process holds the directory; then either opens
/// it here (`Ok(db)`), or forwards the command to the process that holds
/// it and returns its exit code (`Err(code)`).
fn open_routed(dir: &Path) -> Result<std::result::Result<Db, ExitCode>> {
    install_received(dir)?;
    // A holder that was stopping answers "not run": then the directory is
    // free, or about to be.
    let mut turned_away = 0;
    loop {
        match control::route(dir)? {
            Route::Holder(stream) => match control::forward(&stream, dir)? {
                Some(code) => return Ok(Err(code)),
                None if turned_away < HOLDER_RETRIES => turned_away += 1,
                None => bail!(
                    "the processes holding {} kept stopping before running the command; run it again",
                    dir.display()
                ),
            },
            Route::Direct(db) => return Ok(Ok(db)),
        }
    }
}

/// Runs a command another `peers` process sent through the control socket
/// (its output goes back through `console`); returns its exit code: 0, 1
/// for an error, 2 for a command line this build does not take.
pub(crate) fn run_for_client(db: &Db, args: Vec<String>) -> u8 {
    let matches = match crate::command()
        .try_get_matches_from(std::iter::once("peers".to_owned()).chain(args))
    {
        Ok(matches) => matches,
        Err(error) => {
            console::err(error.render().to_string().trim_end());
            return u8::try_from(error.exit_code()).unwrap_or(2);
        }
    };
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => {
            console::err(error.render().to_string().trim_end());
            return 2;
        }
    };
    let needs_it_alone = |what: &str| {
        anyhow::anyhow!(
            "{} is open in {}, and {what} needs the database to itself: stop that process first (every other command works while it runs)",
            db.dir().display(),
            control::holder()
        )
    };
    let result = match cli.command {
        Command::Serve { .. } => Err(needs_it_alone("serve")),
        Command::Rebuild => Err(needs_it_alone("rebuild")),
        Command::Trim => Err(needs_it_alone("trim")),
        Command::Snapshot {
            action: SnapshotCommand::Install { .. },
        } => Err(needs_it_alone("snapshot install")),
        Command::Init { .. } | Command::Join { .. } => Err(anyhow::anyhow!(
            "{} already holds a database, open in {}",
            db.dir().display(),
            control::holder()
        )),
        Command::Keys { .. } | Command::Login { .. } => Err(anyhow::anyhow!(
            "peers keys and peers login take no --db: run them without it"
        )),
        Command::Registry { .. } => Err(anyhow::anyhow!(
            "peers registry runs in the process that typed it, never through a holder"
        )),
        command => run_on(db, command, cli.json),
    };
    match result {
        Ok(()) => 0,
        Err(error) => {
            console::err(&crate::error_line(&error));
            1
        }
    }
}

fn run_on(db: &Db, command: Command, json: bool) -> Result<()> {
    match command {
        Command::Id => print_id(db, json),
        Command::Put { table, row, fields } => put(db, &table, &row, &fields, json),
        Command::Incr {
            table,
            row,
            field,
            delta,
        } => {
            let mut tx = db.transaction();
            tx.increment(&table, &row, &field, delta);
            print_commit(tx.commit()?, json)
        }
        Command::Delete { table, row } => {
            let mut tx = db.transaction();
            tx.delete(&table, &row);
            print_commit(tx.commit()?, json)
        }
        Command::Get { table, row } => get(db, &table, &row, json),
        Command::Scan { table } => scan(db, &table, json),
        Command::Log => log(db, json),
        Command::History { table, row } => history(db, &table, &row, json),
        Command::Export {
            file,
            automerge: Some(table),
            ..
        } => export_automerge(db, &table, &file, json),
        Command::Export { file, since, .. } => export(db, &file, since.as_deref(), json),
        Command::Import {
            file,
            automerge: Some(table),
        } => import_automerge(db, &table, &file, json),
        Command::Import { file, .. } => import(db, &file, json),
        Command::Watch { table, row } => watch(db, &table, row.as_deref(), json),
        Command::VersionVector => version_vector(db, json),
        Command::StateHash => {
            let hash = db.state_hash()?;
            print(json, json!({ "state_hash": hash.to_hex() }), || {
                hash.to_hex()
            });
            Ok(())
        }
        Command::Verify => verify(db, json),
        Command::Rebuild => rebuild(db, json),
        Command::Checkpoint => checkpoint(db, json),
        Command::Checkpoints => checkpoints(db, json),
        Command::Snapshot {
            action: SnapshotCommand::Write { file, checkpoint },
        } => snapshot_write(db, &file, checkpoint.as_deref(), json),
        Command::Snapshot {
            action: SnapshotCommand::Check { file },
        } => snapshot_check(&file, json),
        Command::Grant { key, role } => {
            let key = parse_key(&key)?;
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            print_commit(db.grant(key, role)?, json)
        }
        Command::Revoke { key } => print_commit(db.revoke(parse_key(&key)?)?, json),
        Command::Members => members(db, json),
        Command::Backup { action } => crate::backup::run_on(db, action, json),
        Command::Buffer {
            action: Some(action),
            ..
        } => crate::buffer::run_on(db, action, json),
        Command::Buffer { action: None, .. } => Err(anyhow::anyhow!(
            "`peers buffer` without a subcommand runs a buffer server: run it without --db"
        )),
        Command::Serve {
            mut options,
            metrics,
            ..
        } => {
            options.dir = Some(db.dir().to_path_buf());
            crate::serve::serve(vec![(db.clone(), options)], metrics.as_deref(), json)
        }
        Command::Sync {
            address,
            expect_key,
            live,
            across,
        } => crate::network::sync(db, &address, expect_key.as_deref(), live, &across, json),
        Command::Peers { scan } => crate::network::peers(db, scan, json),
        Command::Invite {
            role,
            to: Some(handle),
            registry,
            registry_key,
            registry_state,
            ..
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let registry =
                registry.context("--to HANDLE needs --registry HOST:PORT (or PEERS_REGISTRY)")?;
            let registry = crate::registry::Registry::new(registry, registry_key, registry_state);
            let key = crate::registry::resolve(&handle, &registry, db.dir())?;
            print_commit(db.grant(key, role)?, json)
        }
        Command::Invite {
            role,
            expires,
            uses,
            address,
            signal,
            no_qr,
            ..
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let options = peers_net::invite::InviteOptions {
                role,
                expires: parse_duration(&expires)?,
                uses,
                addresses: address
                    .iter()
                    .map(|address| resolve_address(address))
                    .collect::<Result<_>>()?,
                signal,
            };
            crate::network::invite(db, &options, !no_qr, json)
        }
        Command::Init { .. }
        | Command::Join { .. }
        | Command::Trim
        | Command::Snapshot {
            action: SnapshotCommand::Install { .. },
        }
        | Command::Signal { .. }
        | Command::Keys { .. }
        | Command::Registry { .. }
        | Command::Login { .. }
        | Command::Demo
        | Command::Completions { .. }
        | Command::Man => {
            unreachable!("handled before opening")
        }
    }
}

/// The identity in a key file, for `--identity FILE`.
fn load_identity(file: Option<&Path>) -> Result<Option<peers_engine::Identity>> {
    file.map(|file| {
        peers_engine::Identity::load(file)
            .with_context(|| format!("reading the identity in {}", file.display()))
    })
    .transpose()
}

fn init(dir: &Path, open: bool, identity: Option<&Path>, json: bool) -> Result<()> {
    let options = Options {
        members_only: !open,
        identity: load_identity(identity)?,
        ..Options::default()
    };
    let db = Db::create(dir, options).with_context(|| format!("creating {}", dir.display()))?;
    print_id(&db, json)
}

fn join(
    dir: &Path,
    database: &str,
    identity: Option<peers_engine::Identity>,
    json: bool,
) -> Result<()> {
    let database = DatabaseId::from_hex(database).context("DB_ID must be 64 hex digits")?;
    let options = Options {
        identity,
        ..Options::default()
    };
    let db =
        Db::join(dir, database, options).with_context(|| format!("creating {}", dir.display()))?;
    print_id(&db, json)
}

fn join_from_snapshot(
    dir: &Path,
    database: &str,
    file: &Path,
    identity: Option<peers_engine::Identity>,
    json: bool,
) -> Result<()> {
    let database = DatabaseId::from_hex(database).context("DB_ID must be 64 hex digits")?;
    let path = console::path(file);
    let input = File::open(&path).with_context(|| format!("opening {}", file.display()))?;
    let found = SnapshotReader::open(std::io::BufReader::new(input))
        .with_context(|| format!("reading {}", file.display()))?
        .database();
    if found != database {
        bail!(
            "{} is a snapshot of database {found}, not {database}",
            file.display()
        );
    }
    let options = Options {
        identity,
        ..Options::default()
    };
    let db = Db::create_from_snapshot(dir, &path, options)
        .with_context(|| format!("creating {} from {}", dir.display(), file.display()))?;
    print_id(&db, json)
}

/// `90s`, `30m`, `24h`, `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let text = text.trim();
    let split = text.len().saturating_sub(1);
    let (number, unit) = (
        text.get(..split).unwrap_or(""),
        text.get(split..).unwrap_or(""),
    );
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("duration {text:?} needs a unit: s, m, h or d (e.g. 24h)"),
    };
    let number: u64 = number.parse().with_context(|| {
        format!("duration {text:?} must be a whole number then a unit (e.g. 24h)")
    })?;
    Ok(std::time::Duration::from_secs(
        number.saturating_mul(seconds_per),
    ))
}

/// HOST:PORT to one socket address (a ticket carries addresses, not names).
fn resolve_address(address: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .with_context(|| format!("{address:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{address} resolves to no address"))
}

fn parse_key(key: &str) -> Result<Author> {
    Author::from_hex(key).context("KEY must be a public key: 64 hex digits")
}

fn members(db: &Db, json: bool) -> Result<()> {
    let Some(members_only) = db.is_members_only() else {
        bail!("this replica has not synced its database yet (sync with a member first)");
    };
    let members = db.members();
    let records: Vec<serde_json::Value> = members
        .iter()
        .map(|member| {
            json!({
                "public_key": member.key.to_hex(),
                "role": member.role.map(|role| role.to_string()),
                "revoked_after": member.revoked_after,
            })
        })
        .collect();
    print(
        json,
        json!({ "members_only": members_only, "members": records }),
        || {
            let mut lines: Vec<String> = members
                .iter()
                .map(|member| match (member.role, member.revoked_after) {
                    (Some(role), _) => format!("{}  {role}", member.key),
                    (None, Some(last)) => {
                        format!("{}  revoked (changes after seq {last} refused)", member.key)
                    }
                    (None, None) => format!("{}  none", member.key),
                })
                .collect();
            if !members_only {
                lines.push("open database: any key that knows its id may write".to_owned());
            }
            lines.join("\n")
        },
    );
    Ok(())
}

fn print_id(db: &Db, json: bool) -> Result<()> {
    let (database, author) = (db.database_id().to_hex(), db.author().to_hex());
    print(
        json,
        json!({ "database": database, "public_key": author }),
        || format!("database   {database}\npublic key {author}"),
    );
    Ok(())
}

fn put(db: &Db, table: &str, row: &str, fields: &[String], json: bool) -> Result<()> {
    let mut tx = db.transaction();
    for pair in fields {
        let (field, value) = pair
            .split_once('=')
            .with_context(|| format!("{pair:?} is not FIELD=VALUE"))?;
        tx.set(table, row, field, Value::parse_cli(value));
    }
    print_commit(tx.commit()?, json)
}

fn print_commit(hash: peers_engine::ChangeHash, json: bool) -> Result<()> {
    print(json, json!({ "change": hash.to_hex() }), || {
        format!("committed {hash}")
    });
    Ok(())
}

fn get(db: &Db, table: &str, row: &str, json: bool) -> Result<()> {
    let Some(fields) = db.get_row(table, row)? else {
        bail!("row {table}/{row} not found");
    };
    print(json, row_json(&fields), || row_text(&fields));
    Ok(())
}

fn scan(db: &Db, table: &str, json: bool) -> Result<()> {
    for item in db.scan(table) {
        let (row, fields) = item?;
        print(
            json,
            json!({ "row": row, "fields": row_json(&fields) }),
            || format!("{row}\t{}", row_text(&fields)),
        );
    }
    Ok(())
}

/// On a trimmed replica, says (on stderr, so that `--json` output stays
/// one change per line) that the history below its checkpoint is trimmed.
fn note_trimmed(db: &Db) {
    if let Some(checkpoint) = db.trimmed_at()
        && let Some((frontier, _)) = checkpoint.checkpoint()
    {
        let seqs: Vec<String> = frontier
            .iter()
            .map(|entry| format!("{} seq {}", &entry.author.to_hex()[..16], entry.seq))
            .collect();
        console::err(&format!(
            "history below checkpoint {} is trimmed (settled in its snapshot): {}",
            checkpoint.hash(),
            seqs.join(", ")
        ));
    }
}

fn log(db: &Db, json: bool) -> Result<()> {
    note_trimmed(db);
    for item in db.log()? {
        let (position, change) = item?;
        let body = change.body();
        let value = json!({
            "position": position.0,
            "hash": change.hash().to_hex(),
            "author": body.author.to_hex(),
            "seq": body.seq,
            "lamport": body.lamport,
            "wall_ms": body.wall_ms,
            "deps": body.deps.iter().map(|dep| dep.to_hex()).collect::<Vec<_>>(),
            "ops": body.ops.iter().map(op_json).collect::<Vec<_>>(),
        });
        print(json, value, || {
            let ops: Vec<String> = body.ops.iter().map(Op::to_string).collect();
            format!(
                "{:>10} {} author {} seq {} lamport {}: {}",
                position.0,
                &change.hash().to_hex()[..16],
                &body.author.to_hex()[..16],
                body.seq,
                body.lamport,
                ops.join("; ")
            )
        });
    }
    Ok(())
}

fn history(db: &Db, table: &str, row: &str, json: bool) -> Result<()> {
    note_trimmed(db);
    for entry in db.history(table, row)? {
        print(json, history_json(&entry), || {
            let ops: Vec<String> = entry.ops.iter().map(Op::to_string).collect();
            let cut = if entry.valid { "" } else { " [cut]" };
            format!(
                "{} author {} seq {} lamport {}{cut}: {}",
                &entry.hash.to_hex()[..16],
                &entry.author.to_hex()[..16],
                entry.seq,
                entry.lamport,
                ops.join("; ")
            )
        });
    }
    Ok(())
}

fn export(db: &Db, file: &Path, since: Option<&Path>, json: bool) -> Result<()> {
    let since = match since {
        Some(path) => {
            let text = std::fs::read_to_string(console::path(path))
                .with_context(|| format!("reading {}", path.display()))?;
            version_vector_from_json(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => VersionVector::new(),
    };
    let changes = db.changes_since(&since)?;
    let bar = progress_bar(changes.remaining() as u64, "exporting");
    let out = File::create(console::path(file))
        .with_context(|| format!("creating {}", file.display()))?;
    let mut writer = ChangeSetWriter::new(BufWriter::new(out), db.database_id())?;
    for change in changes {
        writer.write(&change?)?;
        bar.inc(1);
    }
    let records = writer.records();
    let out = writer.finish()?;
    out.into_inner().context("flushing the file")?.sync_all()?;
    bar.finish_and_clear();
    print(json, json!({ "exported": records, "file": file }), || {
        format!("exported {records} changes to {}", file.display())
    });
    Ok(())
}

fn import(db: &Db, file: &Path, json: bool) -> Result<()> {
    let length = std::fs::metadata(console::path(file))
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let input =
        File::open(console::path(file)).with_context(|| format!("opening {}", file.display()))?;
    let mut reader = ChangeSetReader::new(BufReader::new(input))
        .with_context(|| format!("reading {}", file.display()))?;
    if reader.database() != db.database_id() {
        bail!(
            "{} holds changes of database {}, this is {}",
            file.display(),
            reader.database(),
            db.database_id()
        );
    }
    let bar = progress_bar(length, "importing");
    bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
    let mut total = ImportTally::default();
    let mut refused_records: Vec<String> = Vec::new();
    let mut batch: Vec<Change> = Vec::with_capacity(IMPORT_BATCH_CHANGES);
    let mut index: u64 = 0;
    loop {
        let record = reader
            .next()
            .transpose()
            .with_context(|| format!("reading {}", file.display()))?;
        let done = record.is_none();
        if let Some(bytes) = record {
            match Change::decode(&bytes) {
                Ok(change) => batch.push(change),
                Err(error) => {
                    refused_records.push(format!("record {index}: {error}"));
                    total.refused.push((None, Refusal::Malformed(error)));
                }
            }
            index += 1;
        }
        if batch.len() == IMPORT_BATCH_CHANGES || (done && !batch.is_empty()) {
            total.add(db.apply(std::mem::take(&mut batch))?);
            bar.set_position(reader.bytes_read());
        }
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    for (hash, reason) in &total.refused {
        if let Some(hash) = hash {
            refused_records.push(format!("change {hash}: {reason}"));
        }
    }
    print_import(&total, json);
    if !refused_records.is_empty() {
        for line in &refused_records {
            console::err(&format!("refused {line}"));
        }
        bail!(
            "{} of {index} changes in {} were refused",
            refused_records.len(),
            file.display()
        );
    }
    Ok(())
}

/// `peers export --automerge TABLE FILE`: the table as an automerge
/// document (`Db::export_automerge`), written whole then fsynced.
fn export_automerge(db: &Db, table: &str, file: &Path, json: bool) -> Result<()> {
    let mut document = db.export_automerge(table)?;
    let rows = automerge::ReadDoc::length(&document, automerge::ROOT);
    let bytes = document.save();
    write_file(&console::path(file), &bytes)
        .with_context(|| format!("writing {}", file.display()))?;
    print(
        json,
        json!({ "table": table, "rows": rows, "bytes": bytes.len(), "file": file }),
        || {
            format!(
                "exported {rows} rows of {table} as an automerge document to {} ({} bytes)",
                file.display(),
                bytes.len()
            )
        },
    );
    Ok(())
}

/// Writes `bytes` to a new file and fsyncs it.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = File::create(path)?;
    out.write_all(bytes)?;
    out.sync_all()
}

/// `peers import --automerge TABLE FILE`: an automerge document's rows into
/// the table, as one signed change (`Db::import_automerge`).
fn import_automerge(db: &Db, table: &str, file: &Path, json: bool) -> Result<()> {
    let bytes = std::fs::read(console::path(file))
        .with_context(|| format!("reading {}", file.display()))?;
    let document = automerge::AutoCommit::load(&bytes)
        .with_context(|| format!("{} is not an automerge document", file.display()))?;
    let rows = automerge::ReadDoc::length(&document, automerge::ROOT);
    let hash = db.import_automerge(table, &document)?;
    print(
        json,
        json!({ "table": table, "rows": rows, "change": hash.to_hex() }),
        || format!("imported {rows} rows into {table} as change {hash}"),
    );
    Ok(())
}

/// `peers watch TABLE [ROW]`: each applied change's ops on the table (or
/// row), as they are applied, until interrupted.
fn watch(db: &Db, table: &str, row: Option<&str>, json: bool) -> Result<()> {
    let mut changes = db.subscribe();
    let what = match row {
        Some(row) => format!("{table}/{row}"),
        None => table.to_owned(),
    };
    if !json {
        console::err(&format!("watching {what}; Ctrl-C stops"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        loop {
            let change = tokio::select! {
                () = console::interrupted() => break,
                change = changes.recv() => change,
            };
            let change = match change {
                Ok(change) => change,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    console::err(&format!(
                        "peers: {missed} changes not shown (output too slow); `peers history` has them"
                    ));
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            if db.is_fork_evidence(&change) {
                continue;
            }
            let ops: Vec<&Op> = change
                .body()
                .ops
                .iter()
                .filter(|op| {
                    op.row().is_some_and(|(op_table, op_row)| {
                        op_table == table && row.is_none_or(|row| row == op_row)
                    })
                })
                .collect();
            if !ops.is_empty() {
                print_watched(db, &change, &ops, json);
            }
        }
    });
    Ok(())
}

fn print_watched(db: &Db, change: &Change, ops: &[&Op], json: bool) {
    let body = change.body();
    let local = body.author == db.author();
    let value = json!({
        "hash": change.hash().to_hex(),
        "author": body.author.to_hex(),
        "local": local,
        "seq": body.seq,
        "lamport": body.lamport,
        "wall_ms": body.wall_ms,
        "ops": ops.iter().map(|op| op_json(op)).collect::<Vec<_>>(),
    });
    print(json, value, || {
        let ops: Vec<String> = ops.iter().map(ToString::to_string).collect();
        format!(
            "{} author {}{} seq {}: {}",
            &change.hash().to_hex()[..16],
            &body.author.to_hex()[..16],
            if local { " (here)" } else { "" },
            body.seq,
            ops.join("; ")
        )
    });
}

fn print_import(tally: &ImportTally, json: bool) {
    print(json, tally.json(), || {
        format!(
            "accepted {} (inert {}), duplicates {}, pending {}, refused {}",
            tally.accepted,
            tally.inert,
            tally.duplicates,
            tally.pending.len(),
            tally.refused.len()
        )
    });
}

fn version_vector(db: &Db, json: bool) -> Result<()> {
    let vector = db.version_vector()?;
    print(json, version_vector_json(&vector), || {
        vector
            .iter()
            .map(|(author, head)| format!("{author} {} {}", head.seq, head.hash))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

fn verify(db: &Db, json: bool) -> Result<()> {
    let bar = progress_bar(0, "verifying");
    bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
    let report = db.verify(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = report.context("verification failed")?;
    print(
        json,
        json!({
            "changes": report.changes,
            "ok": report.ok(),
            "live_state_hash": report.live_state_hash.to_hex(),
            "rebuilt_state_hash": report.rebuilt_state_hash.to_hex(),
        }),
        || {
            format!(
                "verified {} changes; state hash {}",
                report.changes, report.live_state_hash
            )
        },
    );
    if !report.ok() {
        bail!(
            "the live view ({}) differs from a rebuild from the log ({}): run `peers rebuild`",
            report.live_state_hash,
            report.rebuilt_state_hash
        );
    }
    Ok(())
}

fn checkpoint(db: &Db, json: bool) -> Result<()> {
    let bar = progress_bar(0, "building the state at the frontier");
    bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
    let hash = db.checkpoint(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let hash = hash.context("checkpoint failed")?;
    let change = db
        .get_change(&hash)?
        .context("the checkpoint just signed is not held")?;
    let (frontier, snapshot) = change
        .checkpoint()
        .with_context(|| format!("change {} is not a checkpoint", change.hash()))?;
    let changes: u64 = frontier.iter().map(|entry| entry.seq).sum();
    print(
        json,
        json!({ "checkpoint": hash.to_hex(), "seq": change.seq(), "authors": frontier.len(),
                "changes": changes, "snapshot": snapshot.to_hex() }),
        || {
            format!(
                "checkpoint {hash}: {changes} changes of {} authors, snapshot {snapshot}",
                frontier.len()
            )
        },
    );
    Ok(())
}

fn trim(dir: &Path, json: bool) -> Result<()> {
    let report = new_generation(
        dir,
        "trimming",
        "peers trim",
        "finding the standing checkpoint",
        |progress| Db::trim(console::path(dir), Options::default(), progress),
    )?;
    print_generation(&report, "trimmed at", json);
    Ok(())
}

/// `peers snapshot install FILE`, and a snapshot received in a sync
/// (`RECEIVED_SNAPSHOT_FILE`): installed as a new generation.
fn install(dir: &Path, file: &Path, json: bool) -> Result<()> {
    let report = new_generation(
        dir,
        "installing the snapshot into",
        "peers snapshot install",
        "checking the snapshot file",
        |progress| {
            Db::install_snapshot(
                console::path(dir),
                console::path(file),
                Options::default(),
                progress,
            )
        },
    )?;
    print_generation(&report, "installed the snapshot of", json);
    Ok(())
}

/// Installs the snapshot a sync received (FORMAT.md "Bootstrap"), if one
/// waits in `dir` and no process holds the database; then removes it.
/// Returns whether one was installed. A snapshot the replica does not need
/// (no longer newer than what stands here) is removed with a note.
pub(crate) fn install_received(dir: &Path) -> Result<bool> {
    let received = console::path(dir).join(RECEIVED_SNAPSHOT_FILE);
    if !received.exists() {
        return Ok(false);
    }
    let report = new_generation(
        dir,
        "installing the received snapshot into",
        "peers sync",
        "checking the snapshot file",
        |progress| {
            Db::install_snapshot(console::path(dir), &received, Options::default(), progress)
        },
    );
    fn engine_error(error: &anyhow::Error) -> Option<&peers_engine::Error> {
        error
            .chain()
            .find_map(|cause| cause.downcast_ref::<peers_engine::Error>())
    }
    let report = match report {
        Ok(report) => report,
        // Held by a process: it waits for the next open.
        Err(error)
            if matches!(
                engine_error(&error),
                Some(peers_engine::Error::InUse { .. })
            ) =>
        {
            return Ok(false);
        }
        Err(error)
            if matches!(
                engine_error(&error),
                Some(
                    peers_engine::Error::SnapshotNotNewer { .. }
                        | peers_engine::Error::SnapshotNotNeeded { .. }
                )
            ) =>
        {
            console::err(&format!(
                "the snapshot a peer sent was not installed, and is removed: {}",
                crate::one_line(&error)
            ));
            std::fs::remove_file(&received)
                .with_context(|| format!("removing {}", received.display()))?;
            return Ok(false);
        }
        Err(error) => return Err(error),
    };
    std::fs::remove_file(&received).with_context(|| format!("removing {}", received.display()))?;
    let (_, text) = generation_output(&report, "installed the snapshot a peer sent, of");
    console::err(&text);
    Ok(true)
}

/// Runs a trim or an install (`make`) with a progress bar; a holder of the
/// directory makes it say to stop that process first.
fn new_generation(
    dir: &Path,
    doing: &str,
    command: &str,
    first: &'static str,
    make: impl FnOnce(&mut dyn FnMut(TrimStep, u64, u64)) -> peers_engine::Result<TrimReport>,
) -> Result<TrimReport> {
    let bar = progress_bar(0, first);
    bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
    let mut step = None;
    let report = make(&mut |now, done, total| {
        if step != Some(now) {
            step = Some(now);
            bar.set_message(match now {
                TrimStep::Judge => first,
                TrimStep::Snapshot => "writing its snapshot file",
                TrimStep::Log => "copying the changes above it",
                TrimStep::View => "building the new view",
            });
        }
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    match report {
        Err(error @ peers_engine::Error::InUse { .. }) => Err(anyhow::Error::new(error)).context(format!(
            "{doing} {}: it needs the database to itself: stop that process first, then run `{command}` again",
            dir.display()
        )),
        other => other.with_context(|| format!("{doing} {}", dir.display())),
    }
}

/// What a trim or an install did.
fn print_generation(report: &TrimReport, did: &str, json: bool) {
    let (value, text) = generation_output(report, did);
    print(json, value, || text);
}

/// What a trim or an install did, as JSON and as text.
fn generation_output(report: &TrimReport, did: &str) -> (serde_json::Value, String) {
    let freed = report.bytes_freed();
    (
        json!({
            "checkpoint": report.checkpoint.to_hex(),
            "generation": report.generation,
            "changes_kept": report.changes_kept,
            "changes_settled": report.changes_settled,
            "changes_off_frontier": report.changes_off_frontier,
            "snapshot_entries": report.snapshot_entries,
            "log_bytes_before": report.log_bytes_before,
            "view_bytes_before": report.view_bytes_before,
            "log_bytes_after": report.log_bytes_after,
            "view_bytes_after": report.view_bytes_after,
            "snapshot_bytes": report.snapshot_bytes,
            "bytes_freed": i64::try_from(freed).unwrap_or(i64::MAX),
        }),
        format!(
            "{did} checkpoint {}: {} changes settled, {} kept, {} off the frontier dropped; log {} -> {} bytes, view {} -> {} bytes, snapshot {} bytes; {}",
            report.checkpoint,
            report.changes_settled,
            report.changes_kept,
            report.changes_off_frontier,
            report.log_bytes_before,
            report.log_bytes_after,
            report.view_bytes_before,
            report.view_bytes_after,
            report.snapshot_bytes,
            if freed >= 0 {
                format!("{freed} bytes freed")
            } else {
                format!("{} bytes more on disk", -freed)
            },
        ),
    )
}

fn checkpoints(db: &Db, json: bool) -> Result<()> {
    let found = db.checkpoints()?;
    if found.is_empty() && !json {
        println!("no checkpoint (the owner makes one with `peers checkpoint`)");
        return Ok(());
    }
    let bar = progress_bar(0, "finding the standing checkpoint");
    bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
    let standing = db.standing_checkpoint(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let standing = standing?;
    for change in found {
        let (frontier, snapshot) = change
            .checkpoint()
            .with_context(|| format!("change {} is not a checkpoint", change.hash()))?;
        let bar = progress_bar(0, "judging");
        bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
        let verdict = db.checkpoint_verdict(&change.hash(), &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        });
        bar.finish_and_clear();
        let (word, detail) = match verdict? {
            CheckpointVerdict::Confirmed => ("confirmed", String::new()),
            CheckpointVerdict::Unconfirmed { missing } => {
                ("unconfirmed", format!("this replica lacks {missing}"))
            }
            CheckpointVerdict::Void(reason) => ("void", reason.to_string()),
        };
        let changes: u64 = frontier.iter().map(|entry| entry.seq).sum();
        print(
            json,
            json!({ "checkpoint": change.hash().to_hex(), "seq": change.seq(),
                    "authors": frontier.len(), "changes": changes,
                    "snapshot": snapshot.to_hex(), "verdict": word, "detail": detail,
                    "standing": standing == Some(change.hash()) }),
            || {
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                };
                let stands = if standing == Some(change.hash()) {
                    "  (standing)"
                } else {
                    ""
                };
                format!(
                    "seq {:>6}  {}  {changes} changes of {} authors  {word}{detail}{stands}",
                    change.seq(),
                    change.hash(),
                    frontier.len()
                )
            },
        );
    }
    Ok(())
}

/// `peers snapshot write FILE [--checkpoint HASH]`: the snapshot file of a
/// confirmed checkpoint, written beside FILE, fsynced, then renamed.
fn snapshot_write(db: &Db, file: &Path, checkpoint: Option<&str>, json: bool) -> Result<()> {
    let hash = match checkpoint {
        Some(text) => ChangeHash::from_hex(text.trim()).with_context(|| {
            format!("--checkpoint {text:?} is not a change hash (64 hex digits)")
        })?,
        None => db
            .standing_checkpoint(&mut |_, _| {})?
            .context("no checkpoint stands here (`peers checkpoints` says why; the owner signs one with `peers checkpoint`)")?,
    };
    let path = console::path(file);
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let partial = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let bar = progress_bar(0, "building the state at the frontier");
    bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
    let written = db.write_snapshot(&hash, BufWriter::new(partial), &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let (out, entries) = written.with_context(|| format!("writing the snapshot of {hash}"))?;
    let partial = out.into_inner().context("flushing the snapshot file")?;
    partial.as_file().sync_all()?;
    let bytes = partial.as_file().metadata()?.len();
    partial
        .persist(&path)
        .with_context(|| format!("renaming the snapshot file to {}", file.display()))?;
    print(
        json,
        json!({ "file": file, "checkpoint": hash.to_hex(), "entries": entries, "bytes": bytes }),
        || {
            format!(
                "wrote the snapshot of checkpoint {hash} to {}: {entries} entries, {bytes} bytes",
                file.display()
            )
        },
    );
    Ok(())
}

/// `peers snapshot check FILE`: reads the whole file as a replica would
/// before using it.
fn snapshot_check(file: &Path, json: bool) -> Result<()> {
    let path = console::path(file);
    let input = File::open(&path).with_context(|| format!("opening {}", file.display()))?;
    let bytes = input.metadata()?.len();
    let reader = SnapshotReader::open(BufReader::new(input))
        .with_context(|| format!("{} is refused", file.display()))?;
    let database = reader.database();
    let checkpoint = reader.checkpoint().clone();
    let (frontier, snapshot) = checkpoint
        .checkpoint()
        .context("the reader accepts only a checkpoint")?;
    let changes: u64 = frontier.iter().map(|entry| entry.seq).sum();
    let bar = progress_bar(0, "checking");
    bar.set_style(bar_style("{msg} {spinner} {pos} entries ({elapsed})"));
    let mut reader = reader;
    let mut read = 0u64;
    let checked = loop {
        match reader.next_block() {
            Ok(Some(block)) => {
                read += block.len() as u64;
                bar.set_position(read);
            }
            Ok(None) => break reader.finish(),
            Err(error) => break Err(error),
        }
    };
    bar.finish_and_clear();
    let entries = checked.with_context(|| format!("{} is refused", file.display()))?;
    print(
        json,
        json!({ "file": file, "database": database.to_hex(), "checkpoint": checkpoint.hash().to_hex(),
                "seq": checkpoint.seq(), "authors": frontier.len(), "changes": changes,
                "snapshot": snapshot.to_hex(), "entries": entries, "bytes": bytes, "ok": true }),
        || {
            format!(
                "{}: ok: database {database}, checkpoint {} (seq {}) of {changes} changes by {} authors, {entries} entries, state {snapshot}",
                file.display(),
                checkpoint.hash(),
                checkpoint.seq(),
                frontier.len()
            )
        },
    );
    Ok(())
}

fn rebuild(db: &Db, json: bool) -> Result<()> {
    let bar = progress_bar(0, "rebuilding");
    bar.set_style(bar_style("{msg} {bar:40} {bytes}/{total_bytes} ({eta})"));
    let (changes, hash) = db.rebuild(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    print(
        json,
        json!({ "changes": changes, "state_hash": hash.to_hex() }),
        || format!("rebuilt the view from {changes} changes; state hash {hash}"),
    );
    Ok(())
}

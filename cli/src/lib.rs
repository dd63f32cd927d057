//! `peers`: the command-line program, as a library. Thin: it parses
//! arguments, calls the engine, and prints (as text, or JSON with `--json`).
//! Any error exits non-zero with a one-line reason.
//!
//! A process that holds a database listens on its control socket
//! ([`control`]), and every `peers` command run elsewhere on that database
//! runs there: an embedding application gets that with
//! [`control::Control::start`].

mod backup;
mod buffer;
mod commands;
mod console;
pub mod control;
mod demo;
mod keys;
pub mod metrics;
mod network;
mod output;
mod registry;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The version line: the program's, and the formats and protocols it speaks
/// (from the constants that define them, so it cannot drift).
fn version() -> String {
    format!(
        "{} (change format {}, {} for checkpoints, reads from {}; sync protocol {}, from {}; secure channel {}; view format {}; log format {})",
        env!("CARGO_PKG_VERSION"),
        peers_engine::CHANGE_FORMAT_VERSION,
        peers_engine::CHECKPOINT_FORMAT_VERSION,
        peers_engine::CHANGE_FORMAT_VERSION_MIN,
        peers_net::SYNC_VERSION,
        peers_net::SYNC_VERSION_MIN,
        peers_net::CHANNEL_VERSION,
        peers_engine::VIEW_FORMAT_VERSION,
        peers_engine::LOG_FORMAT_VERSION,
    )
}

/// The command line, with its version line.
pub(crate) fn command() -> clap::Command {
    // Leaked once per call (a process makes one or two): clap keeps a
    // `&'static str` version.
    let version: &'static str = Box::leak(version().into_boxed_str());
    <Cli as clap::CommandFactory>::command().version(version)
}

/// How to reach peers across networks (WebRTC through signaling servers).
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct Across {
    /// A signaling server (ws://HOST:PORT, see `peers signal`) to stay registered with and to dial keys through; repeatable.
    #[arg(long, value_name = "URL")]
    signal: Vec<String>,
    /// A STUN server (HOST:PORT, UDP) that tells this replica its public address (default: each --signal server's host and port); repeatable.
    #[arg(long, value_name = "ADDR")]
    stun: Vec<String>,
}

/// Peers: a local-first, peer-to-peer database. Every write is a signed change.
#[derive(Parser, Debug)]
#[command(name = "peers", about, propagate_version = true)]
pub(crate) struct Cli {
    /// Database directory.
    #[arg(long, global = true, env = "PEERS_DB", value_name = "DIR")]
    db: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create a new database and identity; print its id and public key.
    Init {
        /// Let any key that knows the database id write (default: members only, granted by the owner or an admin).
        #[arg(long)]
        open: bool,
        /// Sign with the identity in this key file (`peers login` writes one) instead of a new one.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Create a replica of an existing database, with a new identity: from a ticket (`peers invite` on a member's replica; reaches it, redeems the invite and syncs), or empty from the database id.
    Join {
        /// A ticket (PEERS...), or the database id (64 hex digits).
        #[arg(value_name = "TICKET|DB_ID")]
        database: String,
        #[command(flatten)]
        across: Across,
        /// Sign with the identity in this key file (`peers login` writes one) instead of a new one. One identity writes from one replica of a database at a time: two replicas writing with one key fork its chain.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Start from this snapshot file (`peers snapshot write` on a replica of DB_ID), checked first: the new replica holds the state at its checkpoint, and syncs only the changes above it.
        #[arg(long, value_name = "FILE")]
        snapshot: Option<PathBuf>,
    },
    /// Invite a device: print a ticket (and its QR code) that `peers join TICKET` redeems once for a role; then run `peers serve` so the joiner can reach this replica.
    Invite {
        /// The role to grant: reader, writer or admin (admin needs the owner).
        #[arg(long, default_value = "writer")]
        role: String,
        /// How long the ticket stays valid: a number with s, m, h or d (90m, 24h, 7d).
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        expires: String,
        /// How many devices may redeem it.
        #[arg(long, default_value_t = 1, value_name = "N")]
        uses: u32,
        /// An address (HOST:PORT) where `peers serve --listen` will accept the joiner directly; repeatable.
        #[arg(long, value_name = "HOST:PORT")]
        address: Vec<String>,
        /// A signaling server `peers serve --signal` will stay registered with (ws://HOST:PORT); repeatable.
        #[arg(long, value_name = "URL")]
        signal: Vec<String>,
        /// Print the ticket only, without its QR code.
        #[arg(long)]
        no_qr: bool,
        /// Instead of a ticket, grant --role to the key HANDLE names in --registry, once the log's proofs verify (as `peers grant KEY ROLE`).
        #[arg(long, value_name = "HANDLE", conflicts_with_all = ["address", "signal", "no_qr"])]
        to: Option<String>,
        /// The registry to look HANDLE up in (HOST:PORT).
        #[arg(long, env = "PEERS_REGISTRY", value_name = "HOST:PORT")]
        registry: Option<String>,
        /// Trust only this registry operator key (a verifier key).
        #[arg(long, value_name = "VKEY")]
        registry_key: Option<String>,
        /// The registry client's state file (default: registry-state.json in the replica's directory).
        #[arg(long, env = "PEERS_REGISTRY_STATE", value_name = "FILE")]
        registry_state: Option<PathBuf>,
    },
    /// Print the database id and this replica's public key.
    Id,
    /// Set fields of a row, all in one change. VALUE is a JSON scalar, else a string.
    Put {
        /// Table name.
        table: String,
        /// Row id.
        row: String,
        /// FIELD=VALUE pairs.
        #[arg(required = true, value_name = "FIELD=VALUE")]
        fields: Vec<String>,
    },
    /// Add DELTA to a counter field.
    Incr {
        /// Table name.
        table: String,
        /// Row id.
        row: String,
        /// Field name.
        field: String,
        /// Amount (may be negative).
        #[arg(allow_hyphen_values = true)]
        delta: i64,
    },
    /// Delete a row.
    Delete {
        /// Table name.
        table: String,
        /// Row id.
        row: String,
    },
    /// Print a row.
    Get {
        /// Table name.
        table: String,
        /// Row id.
        row: String,
    },
    /// Print every row of a table, in row-id order.
    Scan {
        /// Table name.
        table: String,
    },
    /// Print the change log, in log order.
    Log,
    /// Print the signed changes that touched a row.
    History {
        /// Table name.
        table: String,
        /// Row id.
        row: String,
    },
    /// Write a change-set file with the changes another replica lacks; or, with --automerge TABLE, the table as an automerge document.
    Export {
        /// Output file.
        file: PathBuf,
        /// The other replica's version vector (`peers version-vector --json`); all changes if absent.
        #[arg(long, value_name = "VV_FILE", conflicts_with = "automerge")]
        since: Option<PathBuf>,
        /// Write this table as an automerge document (a map per row, keyed by row id) instead of a change-set file.
        #[arg(long, value_name = "TABLE")]
        automerge: Option<String>,
    },
    /// Verify and apply every change of a change-set file; or, with --automerge TABLE, write an automerge document's rows into the table as one change.
    Import {
        /// Input file.
        file: PathBuf,
        /// Read an automerge document (a map per row, keyed by row id) into this table.
        #[arg(long, value_name = "TABLE")]
        automerge: Option<String>,
    },
    /// Print changes to a table (or one row) as they are applied, local and received, until Ctrl-C.
    Watch {
        /// Table name.
        table: String,
        /// Only this row.
        row: Option<String>,
    },
    /// Print the version vector (per author: highest seq and its hash).
    VersionVector,
    /// Print the digest of the materialized state.
    StateHash,
    /// Re-check every hash, signature, chain and lamport, and that a rebuild gives the same state.
    Verify,
    /// Drop the view and rebuild it from the log.
    Rebuild,
    /// Sign a checkpoint (the owner only): the state at every author's latest change, which every replica holding those changes can confirm; `peers trim` then drops the history below it.
    Checkpoint,
    /// Drop the history below the standing checkpoint (`peers checkpoint` first): keep its snapshot file and the changes above it (docs/FORMAT.md "Trimming"). Needs the database to itself: stop a node that holds it first.
    Trim,
    /// Snapshot files: the whole state at a checkpoint, in one self-checking file (docs/FORMAT.md "Snapshot file, format 1").
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCommand,
    },
    /// List the owner's checkpoints, whether this replica confirms each, and which one stands (each one replays its history: slow on a large database).
    Checkpoints,
    /// Grant a role to a public key (owner or admin; below your own role).
    Grant {
        /// The member's public key (64 hex digits; `peers id` on its replica).
        key: String,
        /// reader (syncs only), writer, or admin (also grants and revokes writers and readers).
        role: String,
    },
    /// Revoke a key: its later changes are refused everywhere, and peers stop syncing with it.
    Revoke {
        /// The key (64 hex digits).
        key: String,
    },
    /// List the keys that hold or held a role.
    Members,
    /// Encrypted backups to a local directory or S3: init, run, list, restore, prune (docs/SERVICES.md).
    Backup {
        #[command(subcommand)]
        action: backup::BackupCommand,
    },
    /// Managed keys: run a key server, register, change the password, export, forget (docs/SERVICES.md "Managed keys").
    Keys {
        #[command(subcommand)]
        action: keys::KeysCommand,
    },
    /// The public key registry: claim a handle for your key, look a handle up (its key is printed only after the log's proofs verify), rotate, revoke; or run a registry (docs/SERVICES.md "Public key registry").
    Registry {
        #[command(subcommand)]
        action: registry::RegistryCommand,
    },
    /// Log in to a key server (`peers keys serve`) with a password, or --recovery code, and write the identity it keeps to a key file for this device.
    Login {
        #[command(flatten)]
        account: keys::Account,
        /// The key file to write (must not exist); then `peers init --identity FILE` or `peers join … --identity FILE`.
        #[arg(long, value_name = "FILE", default_value = "identity.key")]
        key_file: PathBuf,
    },
    /// A blind sync buffer: `peers buffer --listen ADDR` keeps recent sealed changes of databases it cannot read, so devices never online together still sync; `push --to` and `pull --from` sync this replica through one once (docs/SERVICES.md).
    #[command(args_conflicts_with_subcommands = true)]
    Buffer {
        #[command(subcommand)]
        action: Option<buffer::BufferCommand>,
        #[command(flatten)]
        server: buffer::ServerArgs,
    },
    /// Accept peers and sync with them live, until Ctrl-C. Logs peers and counts. With --config FILE, serves the databases the file names (docs/SERVICES.md "Always-on peer").
    Serve {
        #[command(flatten)]
        options: serve::ServeOptions,
        /// Serve health and Prometheus metrics over HTTP at this address (IP:PORT): /health and /metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Read the databases and their options from a TOML file instead of flags (its keys are the flags' names; see docs/SERVICES.md); needs no --db.
        #[arg(long, value_name = "FILE", conflicts_with_all = serve::FLAGS)]
        config: Option<PathBuf>,
    },
    /// Sync with a peer both ways: once (prints changes and bytes sent and received), or --live until Ctrl-C.
    Sync {
        /// The peer's address (HOST:PORT), or its public key (64 hex digits) to reach it through --signal.
        #[arg(value_name = "ADDR|KEY")]
        address: String,
        /// Refuse the peer unless it proves this public key (64 hex digits).
        #[arg(long, value_name = "KEY")]
        expect_key: Option<String>,
        /// Stay connected and push changes as they commit; reconnect when the connection drops.
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        across: Across,
    },
    /// Run a signaling server: peers behind NATs find each other through it by key (it sees only sealed payloads), with a STUN responder on the same port over UDP.
    Signal {
        /// Address to listen on (IP:PORT) for WebSocket clients.
        #[arg(long, default_value = "0.0.0.0:7400", value_name = "ADDR")]
        listen: String,
        /// The STUN responder's UDP address (default: the --listen address over UDP).
        #[arg(long, value_name = "ADDR")]
        stun: Option<String>,
    },
    /// List the peers this replica has met (dialed, accepted, discovered).
    Peers {
        /// Also look for replicas of this database on the LAN for SECONDS.
        #[arg(long, value_name = "SECONDS")]
        scan: Option<u64>,
    },
    /// Three replicas in a temporary directory converge after concurrent writes.
    Demo,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell),
    /// e.g. `peers completions bash > ~/.local/share/bash-completion/completions/peers`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `peers man | man -l -`.
    Man,
}

/// The program: parses the command line, runs the command (directly, or
/// through the process that holds the database) and returns its exit code.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PEERS_LOG")
                // automerge logs at ERROR what it also returns: the error
                // line says it once.
                .unwrap_or_else(|_| "warn,automerge=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{}", error_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// What `peers snapshot` does.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Write the snapshot file of a checkpoint this replica confirms (the standing one by default: the owner's latest that it confirms): the state at its frontier, which replays that history (slow on a large database).
    Write {
        /// Output file (written beside it, then renamed: never left half-written).
        file: PathBuf,
        /// The checkpoint's hash (`peers checkpoints`); default: the standing one.
        #[arg(long, value_name = "HASH")]
        checkpoint: Option<String>,
    },
    /// Install a snapshot file (of this database, signed by its owner) as this replica's new generation, keeping the changes it holds above the snapshot's checkpoint: for a replica whose peers trimmed history it lacks. A snapshot that a sync receives is installed this way by itself. Needs the database to itself.
    Install {
        /// The file (`peers snapshot write` on a replica that confirms the checkpoint).
        file: PathBuf,
    },
    /// Check a snapshot file: its header, the owner's signature on its checkpoint, every block, and the state against the checkpoint's hash. Opens no database.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// What a failed command prints on stderr, the same wherever it ran.
pub(crate) fn error_line(error: &anyhow::Error) -> String {
    format!("peers: error: {}", one_line(error))
}

/// The error and its causes on one line. A cause whose text is already part of
/// the line (an error that prints its source as well as exposing it) is skipped.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

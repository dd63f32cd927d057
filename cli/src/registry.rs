//! `peers registry …` and `peers invite --to`: the public key registry
//! (`peers-registry`). Every lookup prints a key only after its proofs
//! verify against the checkpoints this client has seen, kept in a state
//! file: `--state FILE` (or PEERS_REGISTRY_STATE), else `registry-state.json`
//! in the replica's directory when there is one (--db), else
//! `$XDG_CONFIG_HOME/peers/registry-state.json` (`~/.config/peers/…`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use peers_engine::{Author, Identity};
use peers_registry::{Client, Discoverability, Resolved, Signer};
use serde_json::json;

use crate::buffer::block_on;
use crate::console::{self, print};

/// The state file's name beside a replica or in the config directory.
const STATE_FILE: &str = "registry-state.json";

/// Which registry, and what this client remembers of it.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Registry {
    /// The registry (HOST:PORT, where `peers registry serve` listens).
    #[arg(long, env = "PEERS_REGISTRY", value_name = "HOST:PORT")]
    registry: String,
    /// Trust only this operator key (the verifier key `peers registry serve` prints) instead of the first one seen.
    #[arg(long, value_name = "VKEY")]
    registry_key: Option<String>,
    /// The client's state file: the latest checkpoint verified per registry (default: registry-state.json beside --db, else in ~/.config/peers).
    #[arg(long, env = "PEERS_REGISTRY_STATE", value_name = "FILE")]
    state: Option<PathBuf>,
}

/// Who signs an entry.
#[derive(clap::Args, Debug)]
pub(crate) struct Signing {
    /// Sign with the key in this file (default: the replica's identity, DIR/identity.key of --db).
    #[arg(long, value_name = "FILE", conflicts_with = "recovery")]
    identity: Option<PathBuf>,
    /// Sign with the recovery key in this file (the one the claim named) instead.
    #[arg(long, value_name = "FILE")]
    recovery: Option<PathBuf>,
}

/// The `peers registry` subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum RegistryCommand {
    /// Run a registry: it logs each claim, rotation and revocation in a transparency log and answers lookups with proofs (docs/SERVICES.md "Public key registry").
    Serve {
        /// Address to listen on (IP:PORT; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7600", value_name = "ADDR")]
        listen: String,
        /// The registry's directory: its operator key (operator.key) and its log (created if missing; back it up).
        #[arg(long, value_name = "DIR", default_value = "registry")]
        dir: PathBuf,
    },
    /// Claim HANDLE for a key (the replica's identity, or --identity FILE), signed by that key.
    Claim {
        /// The handle: 1 to 64 of a-z, 0-9, '.', '_' and '-'.
        handle: String,
        #[command(flatten)]
        registry: Registry,
        /// public (listed), lookup-only (found by exact handle, never listed; the log holds only a hash), or private (found only by someone who gives one of its keys).
        #[arg(long, default_value = "public")]
        discoverability: String,
        /// How long until the handle expires (at most 730d; renew with `rotate` to the same key).
        #[arg(long, default_value = "365d", value_name = "DURATION")]
        expires: String,
        /// A recovery key (64 hex digits, kept offline) that may later rotate or revoke the handle if the key is lost.
        #[arg(long, value_name = "KEY")]
        recovery_key: Option<String>,
        /// The key file to claim for (default: the replica's identity, DIR/identity.key of --db).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Print HANDLE's key, only after the log's proofs verify.
    Lookup {
        /// The handle.
        handle: String,
        #[command(flatten)]
        registry: Registry,
        /// A key the handle has had (64 hex digits): needed to look up a private handle.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Move HANDLE to the key in --to FILE (or renew it: the same key), signed by its current key or its recovery key.
    Rotate {
        /// The handle.
        handle: String,
        #[command(flatten)]
        registry: Registry,
        /// The new key's file (created with a new key if it does not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        #[command(flatten)]
        signing: Signing,
        /// A new discoverability (default: keep it).
        #[arg(long)]
        discoverability: Option<String>,
        /// How long until the handle expires, from now.
        #[arg(long, default_value = "365d", value_name = "DURATION")]
        expires: String,
    },
    /// Revoke HANDLE for good, signed by its current key or its recovery key.
    Revoke {
        /// The handle.
        handle: String,
        #[command(flatten)]
        registry: Registry,
        #[command(flatten)]
        signing: Signing,
    },
    /// Check a checkpoint another client was shown (a file holding the signed note) against this client's: a registry that shows different logs to different clients is caught here.
    Compare {
        /// The other client's checkpoint (e.g. from `peers registry checkpoint` there).
        file: PathBuf,
        #[command(flatten)]
        registry: Registry,
    },
    /// Print the latest checkpoint this client verified for the registry (a signed note, to compare with others).
    Checkpoint {
        #[command(flatten)]
        registry: Registry,
    },
}

impl Registry {
    /// The registry at `address` (`peers invite --to`'s flags).
    pub(crate) fn new(address: String, key: Option<String>, state: Option<PathBuf>) -> Registry {
        Registry {
            registry: address,
            registry_key: key,
            state,
        }
    }

    fn state_file(&self, db: Option<&Path>) -> Result<PathBuf> {
        if let Some(state) = &self.state {
            return Ok(console::path(state));
        }
        state_file(db)
    }

    fn client(&self, db: Option<&Path>) -> Result<Client> {
        let client = Client::new(&self.registry, &self.state_file(db)?);
        match &self.registry_key {
            Some(key) => client
                .pin(key)
                .context("--registry-key is not a verifier key"),
            None => Ok(client),
        }
    }
}

/// The default state file: beside the replica, else in the config directory.
fn state_file(db: Option<&Path>) -> Result<PathBuf> {
    if let Some(db) = db {
        return Ok(console::path(db).join(STATE_FILE));
    }
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context(
            "no HOME to keep the registry state in: give --state FILE (or PEERS_REGISTRY_STATE)",
        )?)
        .join(".config"),
    };
    Ok(config.join("peers").join(STATE_FILE))
}

fn parse_key(text: &str, what: &str) -> Result<[u8; 32]> {
    Ok(Author::from_hex(text)
        .with_context(|| format!("{what} must be a public key: 64 hex digits"))?
        .0)
}

fn load(file: &Path) -> Result<Identity> {
    let file = console::path(file);
    Identity::load(&file).with_context(|| format!("reading the key in {}", file.display()))
}

/// The identity a command signs with: --identity FILE, else the replica's.
fn identity(file: Option<&Path>, db: Option<&Path>) -> Result<Identity> {
    match (file, db) {
        (Some(file), _) => load(file),
        (None, Some(db)) => load(&db.join("identity.key")),
        (None, None) => {
            bail!(
                "give the key to sign with: --identity FILE, or --db DIR for the replica's identity"
            )
        }
    }
}

fn signer(signing: &Signing, db: Option<&Path>) -> Result<(Identity, Signer)> {
    match &signing.recovery {
        Some(file) => Ok((load(file)?, Signer::Recovery)),
        None => Ok((identity(signing.identity.as_deref(), db)?, Signer::Key)),
    }
}

fn expiry(text: &str) -> Result<u64> {
    let duration = crate::commands::parse_duration(text)?;
    if duration.as_secs() > peers_registry::EXPIRY_SECS_MAX {
        bail!("--expires {text} is too far: at most 730d");
    }
    Ok(peers_registry::now_secs().saturating_add(duration.as_secs()))
}

fn discoverability(text: &str) -> Result<Discoverability> {
    text.parse().map_err(anyhow::Error::msg)
}

fn resolved_json(resolved: &Resolved) -> serde_json::Value {
    json!({
        "handle": resolved.state.handle,
        "public_key": hex::encode(resolved.state.key),
        "discoverability": resolved.state.discoverability.name(),
        "expires": resolved.state.expires,
        "revoked": resolved.state.revoked,
        "entries": resolved.state.entries,
        "index": resolved.index,
        "log_size": resolved.size,
    })
}

/// Looks `handle` up with proofs and returns its usable key (for `peers
/// invite --to`).
pub(crate) fn resolve(handle: &str, registry: &Registry, db: &Path) -> Result<Author> {
    let client = registry.client(Some(db))?;
    let resolved = block_on(client.lookup(handle, None))?
        .with_context(|| format!("looking up {handle} at {}", registry.registry))?;
    let key = resolved
        .usable_key(peers_registry::now_secs())
        .with_context(|| format!("{handle} cannot be invited"))?;
    Ok(Author(key))
}

/// Runs a `peers registry` subcommand (`db`: the --db directory, if given).
pub(crate) fn run(command: RegistryCommand, db: Option<&Path>, json: bool) -> Result<()> {
    match command {
        RegistryCommand::Serve { listen, dir } => serve(&listen, &dir, json),
        RegistryCommand::Claim {
            handle,
            registry,
            discoverability: chosen,
            expires,
            recovery_key,
            identity: file,
        } => {
            peers_registry::check_handle(&handle)?;
            let identity = identity(file.as_deref(), db)?;
            let recovery = recovery_key
                .as_deref()
                .map(|key| parse_key(key, "--recovery-key"))
                .transpose()?;
            let client = registry.client(db)?;
            let resolved = block_on(client.claim(
                &identity,
                &handle,
                discoverability(&chosen)?,
                expiry(&expires)?,
                recovery,
            ))?
            .with_context(|| format!("claiming {handle} at {}", registry.registry))?;
            print(json, resolved_json(&resolved), || {
                format!(
                    "claimed {handle} for {} ({}, entry {} of the log, verified)",
                    hex::encode(resolved.state.key),
                    resolved.state.discoverability.name(),
                    resolved.index
                )
            });
            Ok(())
        }
        RegistryCommand::Lookup {
            handle,
            registry,
            key,
        } => {
            let known = key
                .as_deref()
                .map(|key| parse_key(key, "--key"))
                .transpose()?;
            let client = registry.client(db)?;
            let resolved = block_on(client.lookup(&handle, known))?
                .with_context(|| format!("looking up {handle} at {}", registry.registry))?;
            let key = resolved.usable_key(peers_registry::now_secs())?;
            print(json, resolved_json(&resolved), || hex::encode(key));
            Ok(())
        }
        RegistryCommand::Rotate {
            handle,
            registry,
            to,
            signing,
            discoverability: chosen,
            expires,
        } => {
            let (identity, signer) = signer(&signing, db)?;
            let to_path = console::path(&to);
            let new = if to_path.exists() {
                load(&to_path)?
            } else {
                let new = Identity::generate();
                new.save(&to_path)
                    .with_context(|| format!("writing {}", to_path.display()))?;
                new
            };
            let chosen = chosen.as_deref().map(discoverability).transpose()?;
            let client = registry.client(db)?;
            let resolved = block_on(client.rotate(
                &identity,
                signer,
                &handle,
                new.author().0,
                chosen,
                expiry(&expires)?,
            ))?
            .with_context(|| format!("rotating {handle} at {}", registry.registry))?;
            print(json, resolved_json(&resolved), || {
                format!(
                    "{handle} now names {} (key file {}; verified)",
                    hex::encode(resolved.state.key),
                    to.display()
                )
            });
            Ok(())
        }
        RegistryCommand::Revoke {
            handle,
            registry,
            signing,
        } => {
            let (identity, signer) = signer(&signing, db)?;
            let client = registry.client(db)?;
            let resolved = block_on(client.revoke(&identity, signer, &handle))?
                .with_context(|| format!("revoking {handle} at {}", registry.registry))?;
            print(json, resolved_json(&resolved), || {
                format!("{handle} is revoked for good (verified)")
            });
            Ok(())
        }
        RegistryCommand::Compare { file, registry } => {
            let file = console::path(&file);
            let note = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let client = registry.client(db)?;
            block_on(client.compare(&note))??;
            print(json, json!({ "consistent": true }), || {
                "consistent: both checkpoints are of one log".to_owned()
            });
            Ok(())
        }
        RegistryCommand::Checkpoint { registry } => {
            let path = registry.state_file(db)?;
            let state = peers_registry::State::load(&path)?;
            let Some(seen) = state.registries.get(&registry.registry) else {
                bail!(
                    "no checkpoint of {} in {} yet: look a handle up first",
                    registry.registry,
                    path.display()
                );
            };
            print(
                json,
                json!({ "checkpoint": seen.checkpoint, "key": seen.key }),
                || seen.checkpoint.trim_end().to_owned(),
            );
            Ok(())
        }
    }
}

fn serve(listen: &str, dir: &Path, json: bool) -> Result<()> {
    let dir = console::path(dir);
    let server = peers_registry::Server::open(&dir)
        .with_context(|| format!("opening the registry in {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the registry's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let address = listener.local_addr()?;
        let key = server.verifier_key().to_owned();
        print(
            json,
            json!({ "listening": address.to_string(), "dir": dir.display().to_string(), "verifier_key": key }),
            || {
                format!(
                    "registry listening on {address} (dir {})\noperator key: {key}\nclients may pin it: --registry-key {key}",
                    dir.display()
                )
            },
        );
        tokio::select! {
            result = server.serve(listener) => result.context("the registry stopped"),
            () = console::interrupted() => Ok(()),
        }
    })
}

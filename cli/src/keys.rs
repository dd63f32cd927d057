//! `peers keys …` and `peers login`: managed keys (`peers-keys`). The
//! password, a new password and the recovery code come from PEERS_PASSWORD,
//! PEERS_NEW_PASSWORD and PEERS_RECOVERY_CODE (out of the process list),
//! else each from one line of standard input, in that order.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use peers_engine::Identity;
use peers_keys::{ClientConfig, LoggedIn, RecoveryCode, Secret};
use serde_json::json;

use crate::console::{self, print};

/// Where the key server is, and who logs in.
#[derive(clap::Args, Debug)]
pub(crate) struct Account {
    /// The user name: 1 to 64 of a-z, 0-9, '.', '_' and '-'.
    user: String,
    /// The key server (HOST:PORT, where `peers keys serve` listens).
    #[arg(long, env = "PEERS_KEYS", value_name = "HOST:PORT")]
    keys: String,
    /// Log in with the recovery code (PEERS_RECOVERY_CODE, or a line of standard input) instead of the password.
    #[arg(long)]
    recovery: bool,
}

/// The `peers keys` subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Run a key server: it keeps each user's identity sealed under a key only their password (or recovery code) yields, and never sees either.
    Serve {
        /// Address to listen on (IP:PORT; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7500", value_name = "ADDR")]
        listen: String,
        /// The server's store (a directory, created if missing; back it up, and keep it secret: it holds the server's key).
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
    },
    /// Register USER with a password (PEERS_PASSWORD, or a line of standard input) and an identity: the key in --key-file, or a new one written there. Prints the recovery code once.
    Register {
        /// The user name: 1 to 64 of a-z, 0-9, '.', '_' and '-'.
        user: String,
        /// The key server (HOST:PORT).
        #[arg(long, env = "PEERS_KEYS", value_name = "HOST:PORT")]
        keys: String,
        /// The identity's key file (e.g. DIR/identity.key of a replica); created with a new identity if it does not exist.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
    },
    /// Set a new password (PEERS_NEW_PASSWORD, or the next line of standard input), after logging in with the old one or, with --recovery, the recovery code.
    ChangePassword {
        #[command(flatten)]
        account: Account,
    },
    /// Write the identity to a key file you keep yourself (graduate from managed keys); with --forget, then delete the server's copy.
    Export {
        #[command(flatten)]
        account: Account,
        /// The key file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// Delete the server's copy once the file is written.
        #[arg(long)]
        forget: bool,
    },
    /// Delete the server's copy of the identity (both envelopes): keep a key file first (`peers keys export`).
    Forget {
        #[command(flatten)]
        account: Account,
    },
}

/// The secrets a command reads, in order: from the environment, else one
/// line of standard input each.
struct Secrets {
    stdin: std::io::StdinLock<'static>,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            stdin: std::io::stdin().lock(),
        }
    }

    fn read(&mut self, variable: &str, what: &str) -> Result<String> {
        if let Ok(value) = std::env::var(variable) {
            return Ok(value);
        }
        if console::is_remote() {
            bail!("set {variable} to give the {what}");
        }
        let mut line = String::new();
        self.stdin
            .read_line(&mut line)
            .with_context(|| format!("reading the {what} from standard input"))?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            bail!("no {what}: set {variable} or give it on a line of standard input");
        }
        Ok(line)
    }
}

fn config() -> ClientConfig {
    ClientConfig::default()
}

/// What `account` logs in with: its password or recovery code.
enum Given {
    Password(String),
    Recovery(RecoveryCode),
}

fn given(account: &Account, secrets: &mut Secrets) -> Result<Given> {
    Ok(if account.recovery {
        Given::Recovery(RecoveryCode::parse(
            &secrets.read("PEERS_RECOVERY_CODE", "recovery code")?,
        )?)
    } else {
        Given::Password(secrets.read("PEERS_PASSWORD", "password")?)
    })
}

/// A runtime for one command: a session's connection lives on it across
/// the steps (these commands never run inside a holder's runtime: they take
/// no --db).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")
}

/// Logs in as `account` with its password or recovery code.
fn log_in(
    runtime: &tokio::runtime::Runtime,
    account: &Account,
    secrets: &mut Secrets,
) -> Result<LoggedIn> {
    let given = given(account, secrets)?;
    let secret = match &given {
        Given::Password(password) => Secret::Password(password),
        Given::Recovery(code) => Secret::Recovery(code),
    };
    runtime
        .block_on(peers_keys::login(
            &account.keys,
            &config(),
            &account.user,
            secret,
        ))
        .with_context(|| format!("logging in as {} at {}", account.user, account.keys))
}

/// Writes the identity to a new key file (owner-only; never overwrites).
fn write_key_file(identity: &Identity, file: &Path) -> Result<()> {
    let file = console::path(file);
    if file.exists() {
        bail!(
            "{} exists: choose another --key-file (a key file is never overwritten)",
            file.display()
        );
    }
    identity
        .save(&file)
        .with_context(|| format!("writing {}", file.display()))
}

/// `peers login USER --keys HOST:PORT --key-file FILE`.
pub(crate) fn login(account: &Account, key_file: &Path, json: bool) -> Result<()> {
    let session = log_in(&runtime()?, account, &mut Secrets::new())?;
    write_key_file(&session.identity, key_file)?;
    let key = session.identity.author().to_hex();
    print(
        json,
        json!({ "user": account.user, "public_key": key, "key_file": key_file.display().to_string() }),
        || {
            let file = key_file.display();
            format!(
                "logged in as {}: identity {key} written to {file}\nuse it for a replica: peers init --identity {file}, or peers join … --identity {file}",
                account.user
            )
        },
    );
    Ok(())
}

/// Runs a `peers keys` subcommand.
pub(crate) fn run(command: KeysCommand, json: bool) -> Result<()> {
    match command {
        KeysCommand::Serve { listen, store } => serve(&listen, &store, json),
        KeysCommand::Register {
            user,
            keys,
            key_file,
        } => {
            let path = console::path(&key_file);
            let (identity, created) = if path.exists() {
                (
                    Identity::load(&path).with_context(|| format!("reading {}", path.display()))?,
                    false,
                )
            } else {
                (Identity::generate(), true)
            };
            peers_keys::check_user(&user)?;
            let password = Secrets::new().read("PEERS_PASSWORD", "password")?;
            peers_keys::check_password(&password)?;
            let code = runtime()?
                .block_on(peers_keys::register(
                    &keys,
                    &config(),
                    &user,
                    &password,
                    &identity,
                ))
                .with_context(|| format!("registering {user} at {keys}"))?;
            if created {
                write_key_file(&identity, &key_file)?;
            }
            let key = identity.author().to_hex();
            print(
                json,
                json!({ "user": user, "public_key": key, "recovery_code": code.to_string(), "key_file": key_file.display().to_string(), "created": created }),
                || {
                    format!(
                        "registered {user} (identity {key}{})\nrecovery code: {code}\nwrite the recovery code down and keep it apart from the password: it is shown only this once, and opens the identity if the password is lost (peers login {user} --recovery)",
                        if created {
                            format!(", new, in {}", key_file.display())
                        } else {
                            String::new()
                        }
                    )
                },
            );
            Ok(())
        }
        KeysCommand::ChangePassword { account } => {
            let mut secrets = Secrets::new();
            let runtime = runtime()?;
            let mut session = log_in(&runtime, &account, &mut secrets)?;
            let new_password = secrets.read("PEERS_NEW_PASSWORD", "new password")?;
            runtime
                .block_on(session.change_password(&new_password))
                .context("changing the password")?;
            print(
                json,
                json!({ "user": account.user, "changed": true }),
                || format!("changed the password of {}", account.user),
            );
            Ok(())
        }
        KeysCommand::Export {
            account,
            key_file,
            forget,
        } => {
            let runtime = runtime()?;
            let session = log_in(&runtime, &account, &mut Secrets::new())?;
            write_key_file(&session.identity, &key_file)?;
            let key = session.identity.author().to_hex();
            if forget {
                runtime
                    .block_on(session.forget())
                    .context("deleting the server's copy")?;
            }
            print(
                json,
                json!({ "user": account.user, "public_key": key, "key_file": key_file.display().to_string(), "forgotten": forget }),
                || {
                    format!(
                        "identity {key} written to {}{}",
                        key_file.display(),
                        if forget {
                            "; the key server's copy is deleted".to_owned()
                        } else {
                            format!(
                                "; the key server keeps its copy (peers keys forget {})",
                                account.user
                            )
                        }
                    )
                },
            );
            Ok(())
        }
        KeysCommand::Forget { account } => {
            let runtime = runtime()?;
            let session = log_in(&runtime, &account, &mut Secrets::new())?;
            runtime
                .block_on(session.forget())
                .context("deleting the server's copy")?;
            print(
                json,
                json!({ "user": account.user, "forgotten": true }),
                || {
                    format!(
                        "the key server no longer holds {}'s identity (nor the name)",
                        account.user
                    )
                },
            );
            Ok(())
        }
    }
}

fn serve(listen: &str, store: &Path, json: bool) -> Result<()> {
    let store = console::path(store);
    let server = peers_keys::Server::open(&store, peers_keys::Limits::default())
        .with_context(|| format!("opening the key store {}", store.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the key server's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let address = listener.local_addr()?;
        print(
            json,
            json!({ "listening": address.to_string(), "store": store.display().to_string() }),
            || {
                format!(
                    "key server listening on {address} (store {})",
                    store.display()
                )
            },
        );
        tokio::select! {
            result = server.serve(listener) => result.context("the key server stopped"),
            () = console::interrupted() => Ok(()),
        }
    })
}

//! `peers serve`: one database from flags, or the databases of a TOML file
//! (`--config FILE`), each with its own node, control socket and backup
//! schedule, in one process; with an HTTP endpoint for health and
//! Prometheus metrics (`--metrics ADDR`, or `metrics` in the file). The
//! always-on peer of docs/SERVICES.md runs this headless.
//!
//! The flags and the file's keys are one struct, [`ServeOptions`], that
//! clap and serde both fill, so a key means what its flag means.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use peers_engine::Db;
use serde::Deserialize;

use crate::Across;
use crate::control::{self, Route};

/// The flags `--config FILE` replaces (clap's ids): given with it, they
/// are an error, so a setting never has two sources.
pub(crate) const FLAGS: [&str; 9] = [
    "listen",
    "discover",
    "connect",
    "signal",
    "stun",
    "backup_every",
    "buffers",
    "buffer_every",
    "metrics",
];

/// The default `--listen`.
const DEFAULT_LISTEN: &str = "127.0.0.1:7001";

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

/// How one database is served: `peers serve`'s flags, or one
/// `[[databases]]` table of a config file (the same names, with `_` for
/// `-`).
#[derive(clap::Args, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeOptions {
    /// The database directory (the file's key; on the command line, --db).
    #[arg(skip)]
    #[serde(default)]
    pub(crate) dir: Option<PathBuf>,
    /// Address to listen on (IP:PORT; port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    #[serde(default = "default_listen")]
    pub(crate) listen: String,
    /// Announce this replica on the LAN (mDNS) and sync with the replicas of this database found there.
    #[arg(long)]
    #[serde(default)]
    pub(crate) discover: bool,
    /// Also keep a live connection to this peer (HOST:PORT, or a public key with --signal); repeatable.
    #[arg(long, value_name = "ADDR|KEY")]
    #[serde(default)]
    pub(crate) connect: Vec<String>,
    /// A signaling server (ws://HOST:PORT, see `peers signal`) to stay registered with and to dial keys through; repeatable.
    #[arg(long, value_name = "URL")]
    #[serde(default)]
    pub(crate) signal: Vec<String>,
    /// A STUN server (HOST:PORT, UDP) that tells this replica its public address (default: each --signal server's host and port); repeatable.
    #[arg(long, value_name = "ADDR")]
    #[serde(default)]
    pub(crate) stun: Vec<String>,
    /// Also back up every DURATION (90s, 30m, 24h, 7d) to the place `peers backup init` configured; the first run after one DURATION.
    #[arg(long, value_name = "DURATION")]
    #[serde(default)]
    pub(crate) backup_every: Option<String>,
    /// Also sync through this blind sync buffer (HOST:PORT, `peers buffer`): pull at start and every --buffer-every, push new changes as they are applied; repeatable (the file's key: `buffers`).
    #[arg(long = "buffer", value_name = "URL")]
    #[serde(default)]
    pub(crate) buffers: Vec<String>,
    /// How often to pull from each --buffer: 30s, 5m, 1h.
    #[arg(long, default_value = DEFAULT_BUFFER_EVERY, value_name = "DURATION")]
    #[serde(default = "default_buffer_every")]
    pub(crate) buffer_every: String,
}

/// The default `--buffer-every`.
const DEFAULT_BUFFER_EVERY: &str = "1m";

fn default_buffer_every() -> String {
    DEFAULT_BUFFER_EVERY.to_owned()
}

impl ServeOptions {
    /// The signaling and STUN servers, as `sync` and `join` take them.
    pub(crate) fn across(&self) -> Across {
        Across {
            signal: self.signal.clone(),
            stun: self.stun.clone(),
        }
    }

    /// The listen address, parsed.
    pub(crate) fn listen_address(&self) -> Result<SocketAddr> {
        self.listen
            .parse()
            .with_context(|| format!("listen {:?} is not IP:PORT", self.listen))
    }
}

/// A `peers serve --config` file.
#[derive(Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeFile {
    /// Where to serve /health and /metrics (IP:PORT); none if absent.
    #[serde(default)]
    pub(crate) metrics: Option<String>,
    /// The databases, each with its own options.
    pub(crate) databases: Vec<ServeOptions>,
}

impl ServeFile {
    /// Parses and checks a config file's text; a relative `dir` is taken
    /// from `base` (the file's directory). Errors name the problem (and,
    /// for TOML errors, the line).
    pub(crate) fn parse(text: &str, base: &Path) -> Result<ServeFile> {
        let mut file: ServeFile = toml::from_str(text).map_err(anyhow::Error::msg)?;
        if file.databases.is_empty() {
            bail!("no databases: add a [[databases]] table with dir = \"DIR\"");
        }
        let mut dirs = HashSet::new();
        let mut listens = HashSet::new();
        for (index, database) in file.databases.iter_mut().enumerate() {
            let number = index + 1;
            let Some(dir) = database.dir.take() else {
                bail!("databases #{number} has no dir (the database directory)");
            };
            let dir = if dir.is_relative() {
                base.join(dir)
            } else {
                dir
            };
            if !dirs.insert(dir.clone()) {
                bail!(
                    "databases #{number}: {} is named twice (one process serves a database once)",
                    dir.display()
                );
            }
            database.dir = Some(dir);
            let listen = database
                .listen_address()
                .with_context(|| format!("databases #{number}"))?;
            if listen.port() != 0 && !listens.insert(listen) {
                bail!(
                    "databases #{number}: listen {listen} is taken by another database (each needs its own port)"
                );
            }
            if let Some(every) = &database.backup_every {
                crate::commands::parse_duration(every)
                    .with_context(|| format!("databases #{number}: backup_every"))?;
            }
            crate::commands::parse_duration(&database.buffer_every)
                .with_context(|| format!("databases #{number}: buffer_every"))?;
        }
        if let Some(metrics) = &file.metrics {
            metrics
                .parse::<SocketAddr>()
                .with_context(|| format!("metrics {metrics:?} is not IP:PORT"))?;
        }
        Ok(file)
    }

    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> Result<ServeFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        ServeFile::parse(&text, base).with_context(|| format!("in {}", path.display()))
    }
}

/// `peers serve --config FILE`: opens every database (each must be free:
/// serve needs it to itself), starts its control socket, then serves them
/// all until Ctrl-C.
pub(crate) fn serve_file(path: &Path, json: bool) -> Result<()> {
    let file = ServeFile::load(path)?;
    let mut served = Vec::new();
    let mut sockets = Vec::new();
    for options in file.databases {
        let dir = options.dir.clone().context("checked when parsed")?;
        let db = match control::route(&dir)? {
            Route::Direct(db) => db,
            Route::Holder(_) => bail!(
                "{} is open in another process, and serve needs the database to itself: stop that process first",
                dir.display()
            ),
        };
        match control::Control::start(&db) {
            Ok(socket) => sockets.push(socket),
            Err(error) => {
                tracing::warn!(%error, "no control socket in {}: other commands cannot reach this process", dir.display());
            }
        }
        served.push((db, options));
    }
    let result = serve(served, file.metrics.as_deref(), json);
    drop(sockets);
    result
}

/// Serves `databases` (each with its backup schedule) and the metrics
/// endpoint until Ctrl-C.
pub(crate) fn serve(
    databases: Vec<(Db, ServeOptions)>,
    metrics: Option<&str>,
    json: bool,
) -> Result<()> {
    let metrics = metrics
        .map(|address| {
            address
                .parse::<SocketAddr>()
                .with_context(|| format!("--metrics {address:?} is not IP:PORT"))
        })
        .transpose()?;
    let mut backups = Vec::new();
    for (db, options) in &databases {
        if let Some(every) = &options.backup_every {
            let every = crate::commands::parse_duration(every)?;
            backups.push(
                crate::backup::Background::start(db, every, json)
                    .with_context(|| format!("backups of {}", db.dir().display()))?,
            );
        }
    }
    let mut buffers = Vec::new();
    for (db, options) in &databases {
        if !options.buffers.is_empty() {
            let every =
                crate::commands::parse_duration(&options.buffer_every).context("--buffer-every")?;
            buffers.push(crate::buffer::Background::start(
                db,
                &options.buffers,
                every,
                json,
            )?);
        }
    }
    let result = crate::network::serve(&databases, metrics, json);
    drop(buffers);
    drop(backups);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeFile> {
        ServeFile::parse(text, Path::new("/etc/peers"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("a bad config"))
    }

    /// Every key of the file, and the defaults of those left out: the
    /// same as the flags'.
    #[test]
    fn a_config_file_parses_into_the_flags_options() {
        let file = parse(
            r#"
            metrics = "127.0.0.1:9464"

            [[databases]]
            dir = "/var/lib/peers/notes"
            listen = "0.0.0.0:7001"
            discover = true
            connect = ["198.51.100.4:7001"]
            signal = ["ws://203.0.113.7:7400"]
            stun = ["203.0.113.7:3478"]
            backup_every = "1h"
            buffers = ["buffer.example.net:7500"]

            [[databases]]
            dir = "photos"
            listen = "0.0.0.0:7002"
            "#,
        )
        .expect("parses");
        assert_eq!(file.metrics.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(
            file.databases[0],
            ServeOptions {
                dir: Some("/var/lib/peers/notes".into()),
                listen: "0.0.0.0:7001".into(),
                discover: true,
                connect: vec!["198.51.100.4:7001".into()],
                signal: vec!["ws://203.0.113.7:7400".into()],
                stun: vec!["203.0.113.7:3478".into()],
                backup_every: Some("1h".into()),
                buffers: vec!["buffer.example.net:7500".into()],
                buffer_every: "1m".into(),
            }
        );
        // A relative dir is the file's directory's; the rest default as
        // the flags do.
        let defaults = <ServeOptions as clap::FromArgMatches>::from_arg_matches(
            &<ServeOptions as clap::Args>::augment_args(clap::Command::new("serve"))
                .get_matches_from(["serve"]),
        )
        .expect("flags parse");
        assert_eq!(
            file.databases[1],
            ServeOptions {
                dir: Some("/etc/peers/photos".into()),
                listen: "0.0.0.0:7002".into(),
                ..defaults
            }
        );
    }

    /// A misspelt or unknown key, a wrong type, a missing dir, a dir named
    /// twice, two databases on one port, a bad address or duration: each
    /// an error that names it.
    #[test]
    fn a_bad_config_file_names_the_problem() {
        let cases = [
            (
                "[[databases]]\ndir = \"a\"\nlisten_on = \"0.0.0.0:7001\"\n",
                "unknown field `listen_on`",
            ),
            ("metric = \"127.0.0.1:9464\"\n", "unknown field `metric`"),
            (
                "[[databases]]\ndir = \"a\"\ndiscover = \"yes\"\n",
                "invalid type",
            ),
            (
                "metrics = \"127.0.0.1:9464\"\n",
                "missing field `databases`",
            ),
            ("databases = []\n", "no databases"),
            (
                "[[databases]]\nlisten = \"0.0.0.0:7001\"\n",
                "databases #1 has no dir",
            ),
            (
                "[[databases]]\ndir = \"a\"\nlisten = \"0.0.0.0:7001\"\n[[databases]]\ndir = \"/etc/peers/a\"\nlisten = \"0.0.0.0:7002\"\n",
                "databases #2: /etc/peers/a is named twice",
            ),
            (
                "[[databases]]\ndir = \"a\"\n[[databases]]\ndir = \"b\"\n",
                "databases #2: listen 127.0.0.1:7001 is taken",
            ),
            (
                "[[databases]]\ndir = \"a\"\nlisten = \"localhost\"\n",
                "databases #1: listen \"localhost\" is not IP:PORT",
            ),
            (
                "[[databases]]\ndir = \"a\"\nbackup_every = \"often\"\n",
                "databases #1: backup_every: duration \"often\"",
            ),
            (
                "metrics = \"9464\"\n[[databases]]\ndir = \"a\"\n",
                "metrics \"9464\" is not IP:PORT",
            ),
            ("[[databases]\n", "expected"),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.contains(expected),
                "{text:?}: {message:?} lacks {expected:?}"
            );
        }
    }
}

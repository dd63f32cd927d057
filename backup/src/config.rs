//! A replica's backup configuration, `DIR/backup.json` (mode 0600): where
//! it backs up, this device's age identity (which opens its key file), the
//! name of that key file, and the last run it wrote (so a store that loses
//! or hides newer manifests is caught on the next run).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The configuration file's name in a database directory.
pub const CONFIG_FILE: &str = "backup.json";

/// Version of the configuration file's layout.
const CONFIG_VERSION: u32 = 1;

/// What `DIR/backup.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Config {
    /// Always [`CONFIG_VERSION`].
    pub(crate) version: u32,
    /// Where backups go (`Store::open`).
    pub(crate) url: String,
    /// This device's age X25519 identity (`AGE-SECRET-KEY-1…`).
    pub(crate) identity: String,
    /// The key file wrapped to that identity.
    pub(crate) key_object: String,
    /// The last run this device wrote (0: none yet).
    pub(crate) last_run: u64,
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(CONFIG_FILE)
}

impl Config {
    /// Reads `DIR/backup.json`; [`Error::NotConfigured`] if there is none.
    pub(crate) fn load(dir: &Path) -> Result<Config> {
        let path = path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotConfigured {
                    dir: dir.to_owned(),
                });
            }
            Err(error) => return Err(Error::io(&path)(error)),
        };
        let config: Config = serde_json::from_str(&text).map_err(|error| Error::BadConfig {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        if config.version != CONFIG_VERSION {
            return Err(Error::BadConfig {
                path,
                reason: format!(
                    "version {} (this build reads {CONFIG_VERSION})",
                    config.version
                ),
            });
        }
        Ok(config)
    }

    /// Writes `DIR/backup.json` atomically (a temporary file, fsynced, then
    /// renamed over it, then the directory fsynced), mode 0600.
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let path = path(dir);
        let temporary = dir.join(format!("{CONFIG_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("the config serializes");
        let write = || -> std::io::Result<()> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(Error::io(&path))
    }

    pub(crate) fn identity(&self, dir: &Path) -> Result<age::x25519::Identity> {
        self.identity
            .parse()
            .map_err(|reason: &str| Error::BadConfig {
                path: path(dir),
                reason: format!("identity: {reason}"),
            })
    }
}

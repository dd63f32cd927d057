//! Generations of a database directory (FORMAT.md "Trimming"): the file
//! `generation` names the one in use; generation 0 (no file) is `log/` and
//! `view/`, generation N > 0 is `log-N/`, `view-N/` and `snapshot-N`. A trim
//! writes the next generation beside the current one and switches by one
//! rename; the files of any other generation are leftovers, removed at open.

use std::path::{Path, PathBuf};

use super::directory::{LOG_DIR, VIEW_DIR, io_error, sync_dir};
use crate::error::{Error, Result};

/// The file naming the generation in use (absent: generation 0).
pub(crate) const GENERATION_FILE: &str = "generation";
/// Where the next number is written before it is renamed over
/// [`GENERATION_FILE`].
const GENERATION_TEMP: &str = "generation.tmp";

/// The log directory of generation `n`.
pub(crate) fn log_dir(dir: &Path, n: u64) -> PathBuf {
    dir.join(if n == 0 {
        LOG_DIR.to_owned()
    } else {
        format!("log-{n}")
    })
}

/// The view directory of generation `n`.
pub(crate) fn view_dir(dir: &Path, n: u64) -> PathBuf {
    dir.join(if n == 0 {
        VIEW_DIR.to_owned()
    } else {
        format!("view-{n}")
    })
}

/// Where generation `n`'s snapshot file is (generation 0 has none).
pub(crate) fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n}"))
}

/// The snapshot file of generation `n` (`None` for generation 0, which has
/// none).
pub(crate) fn snapshot_file(dir: &Path, n: u64) -> Option<PathBuf> {
    (n > 0).then(|| snapshot_path(dir, n))
}

/// The generation in use: the number in `generation`, 0 if there is no such
/// file; anything but a decimal number is [`Error::BadFile`].
pub(crate) fn read_generation(dir: &Path) -> Result<u64> {
    let path = dir.join(GENERATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| Error::BadFile {
            path,
            what: "a generation number (decimal digits)",
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// The generation a directory entry belongs to, if it is a generation's
/// log, view or snapshot.
fn generation_of(name: &str) -> Option<u64> {
    match name {
        LOG_DIR | VIEW_DIR => Some(0),
        _ => ["log-", "view-", "snapshot-"]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .and_then(|number| number.parse().ok())
            .filter(|number| *number > 0),
    }
}

/// The name a snapshot file arriving in a sync starts with, in the
/// database's directory (FORMAT.md "Database directory").
pub const RECEIVING_SNAPSHOT_PREFIX: &str = "snapshot-receiving";

/// Removes every generation's files but `keep`'s, a temporary generation
/// file, and a snapshot file left arriving: what a crash before or after a switch left (called at
/// open and after a switch, under the directory's lock).
pub(crate) fn remove_other_generations(dir: &Path, keep: u64) -> Result<()> {
    let temp = dir.join(GENERATION_TEMP);
    if temp.exists() {
        std::fs::remove_file(&temp).map_err(io_error(&temp))?;
    }
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        // A snapshot that was arriving when a process died (`peers-net`
        // writes it under this prefix, and renames it once checked).
        if name
            .to_str()
            .is_some_and(|name| name.starts_with(RECEIVING_SNAPSHOT_PREFIX))
        {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            continue;
        }
        let Some(generation) = name.to_str().and_then(generation_of) else {
            continue;
        };
        if generation == keep {
            continue;
        }
        let path = entry.path();
        tracing::info!(path = %path.display(), generation, keep, "removing another generation's files");
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// Makes `to` the generation in use, atomically: the number is written to a
/// temporary file and fsynced, renamed over `generation`, and the directory
/// fsynced. A crash leaves the old generation or the new one in use.
pub(crate) fn switch_generation(dir: &Path, to: u64) -> Result<()> {
    let temp = dir.join(GENERATION_TEMP);
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(format!("{to}\n").as_bytes())?;
        file.sync_all()
    };
    write().map_err(io_error(&temp))?;
    let path = dir.join(GENERATION_FILE);
    std::fs::rename(&temp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_generations() {
        assert_eq!(generation_of("log"), Some(0));
        assert_eq!(generation_of("view"), Some(0));
        assert_eq!(generation_of("log-3"), Some(3));
        assert_eq!(generation_of("snapshot-12"), Some(12));
        assert_eq!(generation_of("view-0"), None);
        assert_eq!(generation_of("verify-scratch"), None);
        assert_eq!(generation_of("checkpoint-scratch-1"), None);
        assert_eq!(generation_of("snapshot-x"), None);
        assert_eq!(generation_of("identity.key"), None);
    }

    #[test]
    fn switch_then_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_generation(dir.path()).expect("read"), 0);
        switch_generation(dir.path(), 2).expect("switch");
        assert_eq!(read_generation(dir.path()).expect("read"), 2);
        std::fs::write(dir.path().join(GENERATION_FILE), "two").expect("write");
        assert!(matches!(
            read_generation(dir.path()),
            Err(Error::BadFile { .. })
        ));
    }
}

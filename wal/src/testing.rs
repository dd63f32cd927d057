//! Test support (feature `testing`): a simulated disk with power loss.
//!
//! `kill -9` keeps the page cache, so a crash test of a process passes even with
//! every fsync removed. [`SimFs`] instead keeps, per file, the bytes as the
//! process sees them and the bytes last made durable by an fsync, and per
//! directory entry whether a directory fsync made it durable. When the power is
//! cut ([`SimFs::cut_power`], or after a number of operations with
//! [`SimFs::cut_power_after`]) it keeps only what was durable, plus a random part
//! of the rest, as a disk may:
//!
//! - the bytes appended to a file since its last fsync are dropped or torn at a
//!   random byte, and the file may keep a longer length filled with zeros (its
//!   length reached the disk before its data);
//! - a truncation not followed by an fsync is kept or undone;
//! - each directory entry created or removed since the directory's last fsync is
//!   kept or undone, independently; a file whose entry is undone is lost.
//!
//! Everything before the last successful fsync of a file, and every entry before
//! the last fsync of its directory, survives intact (`docs/FORMAT.md`, "What is
//! assumed of the disk and fsync").
//!
//! The wal runs on the simulated disk through the same code as on a real one:
//! only the lowest layer (`crate::fs`) differs.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::Error;
use crate::fs::{Fs, FsFile};
use crate::options::{OpenReport, Options};
use crate::wal::Wal;

/// A small deterministic random number generator (SplitMix64), for simulated
/// tears and for test workloads.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// True with probability `1 / one_in`.
    pub fn one_in(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// A simulated disk that loses what was not made durable when the power is cut.
/// Cheap to clone; clones share the disk.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

/// A directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Dir,
    File(u64),
}

/// A file's contents.
#[derive(Debug, Default)]
struct Inode {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What the last fsync made durable.
    durable: Vec<u8>,
}

#[derive(Debug)]
struct State {
    /// The directory tree as the process sees it. `/` always exists.
    entries: BTreeMap<PathBuf, Entry>,
    /// The entries made durable by directory fsyncs.
    durable_entries: BTreeMap<PathBuf, Entry>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Bumped by every restart: handles opened before are dead.
    boot: u64,
    /// False between a power cut and the restart.
    powered: bool,
    /// Mutating operations left before the power is cut, if a cut is armed.
    operations_until_cut: Option<u64>,
    rng: Rng,
}

impl SimFs {
    /// An empty disk (only `/`), powered on. `seed` drives the tears.
    pub fn new(seed: u64) -> Self {
        let root = (PathBuf::from("/"), Entry::Dir);
        let state = State {
            entries: BTreeMap::from([root.clone()]),
            durable_entries: BTreeMap::from([root]),
            inodes: HashMap::new(),
            next_inode: 0,
            boot: 0,
            powered: true,
            operations_until_cut: None,
            rng: Rng::new(seed),
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Opens a wal in `dir` (an absolute path) on this disk, as [`Wal::open`].
    pub fn open_wal(&self, dir: &Path, options: Options) -> Result<(Wal, OpenReport), Error> {
        Wal::open_on(Arc::new(self.clone()), dir, options)
    }

    /// Cuts the power now: see the module documentation. Every operation fails
    /// until [`SimFs::restart`].
    pub fn cut_power(&self) {
        self.lock().cut_power();
    }

    /// Cuts the power just before the mutating operation (write, truncate, fsync,
    /// create, remove) after `operations` more of them, which then fails.
    pub fn cut_power_after(&self, operations: u64) {
        self.lock().operations_until_cut = Some(operations);
    }

    /// Whether the power is on.
    pub fn is_powered(&self) -> bool {
        self.lock().powered
    }

    /// Powers the disk on after a cut. Files opened before the cut stay dead.
    pub fn restart(&self) {
        let mut state = self.lock();
        state.powered = true;
        state.operations_until_cut = None;
        state.boot += 1;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The error of any operation while the power is off.
fn power_off() -> io::Error {
    io::Error::other("simulated power loss: the disk is off")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

/// The parent directory of `path` (`/` for `/` itself).
fn parent_of(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new("/")).to_path_buf()
}

impl State {
    /// Fails if the power is off or `boot` is over.
    fn check(&self, boot: u64) -> io::Result<()> {
        if self.powered && self.boot == boot {
            Ok(())
        } else {
            Err(power_off())
        }
    }

    /// Counts a mutating operation; cuts the power if it is the armed one.
    fn step(&mut self, boot: u64) -> io::Result<()> {
        self.check(boot)?;
        match self.operations_until_cut {
            Some(0) => {
                self.cut_power();
                Err(power_off())
            }
            Some(left) => {
                self.operations_until_cut = Some(left - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Keeps what was durable plus a random part of the rest.
    fn cut_power(&mut self) {
        let paths: Vec<PathBuf> = self
            .entries
            .keys()
            .chain(self.durable_entries.keys())
            .cloned()
            .collect();
        let mut kept = BTreeMap::new();
        // Parents sort before their children, so a parent's fate is known first.
        for path in paths {
            if kept.contains_key(&path) {
                continue;
            }
            let current = self.entries.get(&path).copied();
            let durable = self.durable_entries.get(&path).copied();
            let entry = if current == durable || self.rng.one_in(2) {
                durable
            } else {
                current
            };
            let parent_kept = path.parent().is_none() || kept.contains_key(&parent_of(&path));
            if let (Some(entry), true) = (entry, parent_kept) {
                kept.insert(path, entry);
            }
        }
        let mut inodes = HashMap::new();
        for entry in kept.values() {
            if let Entry::File(number) = entry
                && let Some(inode) = self.inodes.remove(number)
            {
                let survived = tear(&inode, &mut self.rng);
                let inode = Inode {
                    data: survived.clone(),
                    durable: survived,
                };
                inodes.insert(*number, inode);
            }
        }
        self.entries = kept.clone();
        self.durable_entries = kept;
        self.inodes = inodes;
        self.powered = false;
        self.operations_until_cut = None;
    }

    fn inode(&mut self, number: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&number)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "inode"))
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.entries.get(path) == Some(&Entry::Dir)
    }
}

/// What of a file survives a power cut.
fn tear(inode: &Inode, rng: &mut Rng) -> Vec<u8> {
    let Inode { data, durable } = inode;
    let common = data.iter().zip(durable).take_while(|(a, b)| a == b).count();
    if common < durable.len() && (common == data.len() || rng.one_in(2)) {
        // A truncation (maybe followed by writes) since the last fsync: undone.
        return durable.clone();
    }
    // Appended since the last fsync (maybe after a truncation that is kept).
    let appended = &data[common..];
    let kept = rng.below(appended.len() as u64 + 1) as usize;
    let mut survived = data[..common + kept].to_vec();
    if rng.one_in(3) {
        // The length reached the disk, not all of the data.
        let zeros = rng.below((appended.len() - kept) as u64 + 1) as usize;
        survived.resize(survived.len() + zeros, 0);
    }
    survived
}

impl Fs for SimFs {
    fn is_dir(&self, path: &Path) -> bool {
        let state = self.lock();
        state.powered && state.is_dir(path)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let boot = state.boot;
        for ancestor in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
            match state.entries.get(ancestor) {
                Some(Entry::Dir) => {}
                Some(Entry::File(_)) => return Err(io::ErrorKind::NotADirectory.into()),
                None => {
                    state.step(boot)?;
                    state.entries.insert(ancestor.to_path_buf(), Entry::Dir);
                }
            }
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let state = self.lock();
        state.check(state.boot)?;
        if !state.is_dir(dir) {
            return Err(not_found(dir));
        }
        let names = state
            .entries
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name().map(OsString::from))
            .collect();
        Ok(names)
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn FsFile>> {
        let state = self.lock();
        state.check(state.boot)?;
        match state.entries.get(path) {
            Some(Entry::File(inode)) => Ok(Box::new(SimFile {
                fs: self.clone(),
                inode: *inode,
                boot: state.boot,
                writable,
            })),
            Some(Entry::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found(path)),
        }
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut state = self.lock();
        let boot = state.boot;
        state.step(boot)?;
        if state.entries.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        if !state.is_dir(&parent_of(path)) {
            return Err(not_found(path));
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        state.entries.insert(path.to_path_buf(), Entry::File(inode));
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
            boot,
            writable: true,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let boot = state.boot;
        state.step(boot)?;
        match state.entries.get(path) {
            Some(Entry::File(_)) => {
                state.entries.remove(path);
                Ok(())
            }
            Some(Entry::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found(path)),
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let boot = state.boot;
        state.step(boot)?;
        if !state.is_dir(dir) {
            return Err(not_found(dir));
        }
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        state.durable_entries.retain(|path, _| !in_dir(path));
        let entries: Vec<_> = state
            .entries
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, entry)| (path.clone(), *entry))
            .collect();
        state.durable_entries.extend(entries);
        Ok(())
    }
}

/// An open file of a [`SimFs`].
#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    inode: u64,
    /// The boot the file was opened in.
    boot: u64,
    writable: bool,
}

impl SimFile {
    /// Runs `operation` on the inode; `mutating` operations count toward a cut.
    fn with<T>(&self, mutating: bool, operation: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut state = self.fs.lock();
        if mutating {
            state.step(self.boot)?;
        } else {
            state.check(self.boot)?;
        }
        Ok(operation(state.inode(self.inode)?))
    }
}

impl SimFile {
    /// Writes need a file opened for writing, as with `std::fs`.
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::ErrorKind::PermissionDenied.into())
        }
    }
}

impl FsFile for SimFile {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(false, |inode| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let available = inode.data.get(start..).unwrap_or(&[]);
            let read = available.len().min(buffer.len());
            buffer[..read].copy_from_slice(&available[..read]);
            read
        })
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.check_writable()?;
        self.with(true, |inode| {
            inode.data.extend_from_slice(bytes);
            bytes.len()
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(false, |inode| inode.data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.with(true, |inode| inode.data.resize(len, 0))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(true, |inode| inode.durable.clone_from(&inode.data))
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

/// Runs a Python script that computes test vectors from the documentation
/// alone (scripts/format-vectors.py, tests/fixtures/v2/fixture.py,
/// scripts/backup-vectors.py) and returns what it printed. Returns `None`,
/// after saying why, when python3 or the script's modules are missing (the
/// scripts exit 3 then); with `PEERS_REQUIRE_PYTHON_VECTORS=1` that is a
/// failure instead. Panics if the script fails otherwise.
pub fn python_vectors(test: &str, script: &Path) -> Option<String> {
    let required = std::env::var_os("PEERS_REQUIRE_PYTHON_VECTORS").is_some_and(|v| v == "1");
    let skip = |reason: String| {
        assert!(!required, "PEERS_REQUIRE_PYTHON_VECTORS=1 but {reason}");
        say_skipped(test, &reason);
        None
    };
    let output = match std::process::Command::new("python3").arg(script).output() {
        Ok(output) => output,
        Err(error) => return skip(format!("python3 cannot be run ({error})")),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        return skip(format!(
            "python3 lacks a module ({}; pip install blake3 cryptography)",
            stderr.trim()
        ));
    }
    assert!(
        output.status.success(),
        "{} failed: {}\n{stderr}",
        script.display(),
        output.status
    );
    Some(String::from_utf8(output.stdout).expect("the script prints UTF-8"))
}

/// The value labelled `label` in a table of a spec page's vectors, with
/// its whitespace removed (long values wrap over several lines). Panics on
/// an unknown label: a test asked for a vector the table lacks.
pub fn vector(vectors: &[(&str, &str)], label: &str) -> String {
    vectors
        .iter()
        .find(|(name, _)| *name == label)
        .map(|(_, value)| value.split_whitespace().collect())
        .unwrap_or_else(|| panic!("no vector {label:?}"))
}

/// Runs `script` as [`python_vectors`] does and checks that it prints one
/// `label hex` line for each of `count` vectors, each equal to
/// `vector(label)` (the crate's value, as its spec page shows it). Skips,
/// saying why, as [`python_vectors`] does.
pub fn python_vectors_match(
    test: &str,
    script: &Path,
    count: usize,
    vector: impl Fn(&str) -> String,
) {
    let Some(text) = python_vectors(test, script) else {
        return;
    };
    let mut seen = 0;
    for line in text.lines() {
        let (label, value) = line.split_once(' ').expect("`label value` lines");
        assert_eq!(
            value,
            vector(label),
            "{} disagrees on {label}",
            script.display()
        );
        seen += 1;
    }
    assert_eq!(seen, count, "{} prints every vector", script.display());
}

/// Says why a test did not check anything. libtest captures a passing
/// test's `eprintln!` (and `std::io::stderr()`), so the line goes to
/// `/dev/stderr` opened anew, which capture does not reach; `eprintln!` where
/// there is none.
pub fn say_skipped(test: &str, reason: &str) {
    use std::io::Write as _;
    let line = format!("{test}: skipped: {reason}");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/stderr")
        .and_then(|mut stderr| writeln!(stderr, "{line}"));
    if written.is_err() {
        eprintln!("{line}");
    }
}

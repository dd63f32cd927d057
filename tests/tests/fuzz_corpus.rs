//! Every fuzz target runs on every `cargo test`: over each file of its seed
//! corpus (fuzz/seeds/<target>/) and over deterministic mutations of them
//! (bit flips, interesting bytes, truncations, insertions, deletions,
//! duplicated ranges, splices), with a fixed-seed PRNG. Only "no panic" is
//! asserted here; the targets check their own properties (see
//! `peers_tests::fuzz_targets`). The real campaigns are in fuzz/README.md.
//! The targets are those of `peers_tests::fuzz_targets::TARGETS`, and a test
//! here checks that fuzz/ names the same ones.
//!
//! `FUZZ_CORPUS_SCALE=N` multiplies the mutation counts (default 1);
//! `FUZZ_CORPUS_TARGETS=a,b` runs only the targets named.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use peers_tests::fuzz_targets::{SplitMix, TARGETS, Target, target};

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("seed entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read seed");
            (path, bytes)
        })
        .collect()
}

fn scale() -> usize {
    std::env::var("FUZZ_CORPUS_SCALE")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1)
}

/// One to three stacked mutations of `input`, `other` for splices.
fn mutate(input: &[u8], other: &[u8], random: &mut SplitMix) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + random.below(3) {
        let len = bytes.len();
        let at = random.below(len + 1);
        match random.below(8) {
            0 | 1 if len > 0 => bytes[at.min(len - 1)] ^= 1 << random.below(8),
            2 if len > 0 => {
                const INTERESTING: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];
                bytes[at.min(len - 1)] = INTERESTING[random.below(INTERESTING.len())];
            }
            3 => bytes.truncate(at),
            4 => {
                let insert: Vec<u8> = (0..1 + random.below(8))
                    .map(|_| random.next_u64() as u8)
                    .collect();
                bytes.splice(at..at, insert);
            }
            5 => {
                let end = (at + 1 + random.below(16)).min(len);
                bytes.drain(at..end);
            }
            6 => {
                let end = (at + 1 + random.below(32)).min(len);
                let copy = bytes[at..end].to_vec();
                let to = random.below(len + 1);
                bytes.splice(to..to, copy);
            }
            _ => {
                let from = random.below(other.len() + 1);
                bytes.truncate(at);
                bytes.extend_from_slice(&other[from..]);
            }
        }
    }
    bytes
}

/// Runs `target` on every seed, then on its count of mutated inputs.
fn exercise(target: &Target) {
    let name = target.name;
    let seeds = seeds(name);
    for (path, bytes) in &seeds {
        let started = std::time::Instant::now();
        (target.run)(bytes);
        eprintln!(
            "{name}: seed {} took {:?}",
            path.display(),
            started.elapsed()
        );
    }
    let mut random = SplitMix(0x5eed_0000 + name.len() as u64);
    for index in 0..target.mutations * scale() {
        let (_, input) = &seeds[random.below(seeds.len())];
        let (_, other) = &seeds[random.below(seeds.len())];
        let bytes = mutate(input, other, &mut random);
        let result = catch_unwind(|| (target.run)(&bytes));
        if let Err(panic) = result {
            eprintln!(
                "{name}: mutation {index} panicked; input (hex): {}",
                hex(&bytes)
            );
            resume_unwind(panic);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The targets `FUZZ_CORPUS_TARGETS` names (comma-separated), else all.
fn selected() -> Vec<&'static Target> {
    let Ok(names) = std::env::var("FUZZ_CORPUS_TARGETS") else {
        return TARGETS.iter().collect();
    };
    names
        .split(',')
        .map(|name| {
            target(name.trim()).unwrap_or_else(|| {
                let known: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
                panic!("FUZZ_CORPUS_TARGETS: no target {name:?}; the targets: {known:?}")
            })
        })
        .collect()
}

/// Every registered target over its seeds and their mutations, on as many
/// threads as the machine has cores (the test harness's own default), a
/// target at a time per thread; a target that panics is reported by name
/// after the others ran (its input was printed when it panicked).
#[test]
fn every_target_over_its_seeds_and_mutations() {
    let targets = selected();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(targets.len()) {
            scope.spawn(|| {
                while let Some(target) = targets.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if catch_unwind(|| exercise(target)).is_err() {
                        failed
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(target.name);
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_else(PoisonError::into_inner);
    assert!(failed.is_empty(), "targets that panicked: {failed:?}");
}

/// The `[[bin]]` entries of a Cargo.toml: `(name, path)` each, `path` empty
/// when the entry has none.
fn cargo_bins(manifest: &str) -> Vec<(String, String)> {
    let mut bins: Vec<(String, String)> = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            if in_bin {
                bins.push(Default::default());
            }
        } else if let (true, Some((key, value))) = (in_bin, line.split_once('='))
            && !line.starts_with('#')
        {
            let bin = bins.last_mut().expect("inside a [[bin]]");
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim() {
                "name" => bin.0 = value,
                "path" => bin.1 = value,
                _ => {}
            }
        }
    }
    bins
}

/// The names of the entries of `dir` that `keep` keeps, without extensions.
fn entry_names(dir: &Path, keep: impl Fn(&Path) -> bool) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| keep(path))
        .map(|path| {
            let stem = path.file_stem().expect("a named entry");
            stem.to_string_lossy().into_owned()
        })
        .collect()
}

/// Panics unless `found` (the targets `what` has) are the `registered` ones,
/// naming those only one side has.
fn assert_registered(found: &BTreeSet<String>, registered: &BTreeSet<String>, what: &str) {
    let unregistered: Vec<&String> = found.difference(registered).collect();
    let missing: Vec<&String> = registered.difference(found).collect();
    assert!(
        unregistered.is_empty() && missing.is_empty(),
        "{what} vs TARGETS: not in TARGETS {unregistered:?}, missing from {what} {missing:?}"
    );
}

/// `TARGETS` names each target once, and fuzz/ agrees with it: a `[[bin]]`
/// in fuzz/Cargo.toml at `fuzz_targets/<name>.rs`, that file calling
/// `peers_tests::fuzz_targets::<name>`, and a `fuzz/seeds/<name>/`, for
/// every registered target and for no other; and each target has its module
/// `tests/src/fuzz_targets/<name>.rs`.
#[test]
fn registry_matches_fuzz_directory() {
    let registered: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(registered.len(), TARGETS.len(), "a target registered twice");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fuzz = root.join("../fuzz");

    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let bins = cargo_bins(&manifest);
    for (name, path) in &bins {
        assert_eq!(*path, format!("fuzz_targets/{name}.rs"), "[[bin]] {name}");
    }
    let bin_names: BTreeSet<String> = bins.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(
        bin_names.len(),
        bins.len(),
        "a [[bin]] twice in fuzz/Cargo.toml"
    );
    assert_registered(&bin_names, &registered, "fuzz/Cargo.toml's [[bin]]s");

    let is_rust = |path: &Path| path.extension().is_some_and(|ext| ext == "rs");
    let wrappers = entry_names(&fuzz.join("fuzz_targets"), is_rust);
    assert_registered(&wrappers, &registered, "fuzz/fuzz_targets/*.rs");
    for name in &registered {
        let path = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        let wrapper = std::fs::read_to_string(&path).expect("read a wrapper");
        let call = format!("peers_tests::fuzz_targets::{name}(data)");
        assert!(
            wrapper.contains(&call),
            "{} does not call {call}",
            path.display()
        );
    }

    let seeds = entry_names(&fuzz.join("seeds"), Path::is_dir);
    assert_registered(&seeds, &registered, "fuzz/seeds/*/");

    let modules = entry_names(&root.join("src/fuzz_targets"), is_rust);
    let without: Vec<&String> = registered.difference(&modules).collect();
    assert!(
        without.is_empty(),
        "no tests/src/fuzz_targets/<name>.rs: {without:?}"
    );
}

//! What a fresh machine needs from the README's two commands: that
//! `scripts/setup.sh` finds a libclang bindgen can load (and only such a
//! one), and that the demo command and the test command resolve the same
//! build of RocksDB, so its C++ is compiled once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// A fake root directory holding empty files at `paths`.
fn fake_root(paths: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    for path in paths {
        let file = root.path().join(path);
        std::fs::create_dir_all(file.parent().expect("a directory")).expect("mkdir");
        std::fs::write(&file, b"").expect("touch");
    }
    root
}

fn find_libclang(root: &Path) -> Output {
    Command::new(repository().join("scripts/find-libclang.sh"))
        .arg(root)
        .output()
        .expect("running scripts/find-libclang.sh")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The machine of the bug report: only the C++ API library, which bindgen
/// never loads. Not found, and setup stops naming the package to install
/// (with a fake root it never runs apt-get, even as root).
#[test]
fn libclang_cpp_alone_is_not_libclang() {
    let root = fake_root(&[
        "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
        "usr/lib/llvm-14/lib/libclang-cpp.so.14",
    ]);
    let output = find_libclang(root.path());
    assert!(!output.status.success(), "found: {}", stdout(&output));
    assert_eq!(stdout(&output), "");

    let setup = Command::new(repository().join("scripts/setup.sh"))
        .env("PEERS_SETUP_ROOT", root.path())
        .output()
        .expect("running scripts/setup.sh");
    assert!(!setup.status.success());
    let message = String::from_utf8_lossy(&setup.stderr);
    assert!(message.contains("libclang-dev"), "{message}");
    assert!(message.contains("LIBCLANG_PATH"), "{message}");
}

/// Nothing at all: not found either.
#[test]
fn an_empty_machine_has_no_libclang() {
    let root = fake_root(&["usr/lib/libc.so.6"]);
    assert!(!find_libclang(root.path()).status.success());
}

/// Each file name bindgen loads, in the places Debian, Fedora and LLVM's
/// own packages put it, is found; the path printed is the file.
#[test]
fn every_name_bindgen_loads_is_found() {
    for path in [
        "usr/lib/llvm-14/lib/libclang-14.so.1",
        "usr/lib/x86_64-linux-gnu/libclang-14.so.1",
        "usr/lib/llvm-16/lib/libclang.so",
        "usr/lib64/libclang.so.16",
        "usr/local/lib/libclang-17.so",
    ] {
        let root = fake_root(&["usr/lib/x86_64-linux-gnu/libclang-cpp.so.14", path]);
        let output = find_libclang(root.path());
        assert!(output.status.success(), "{path} not found");
        assert_eq!(
            PathBuf::from(stdout(&output)),
            root.path().join(path),
            "{path}"
        );
    }
}

/// The units that make up librocksdb-sys and everything it is built from
/// (its build script, bindgen and their dependencies), with their features
/// and profiles, for one cargo command. Uses cargo's `--unit-graph`
/// (unstable, hence `RUSTC_BOOTSTRAP=1`): it plans the build without
/// running it.
fn rocksdb_units(arguments: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let scratch = tempfile::tempdir().expect("temp dir");
    let output = Command::new(cargo)
        .args(arguments)
        .args(["--offline", "-Z", "unstable-options", "--unit-graph"])
        .current_dir(repository())
        .env("RUSTC_BOOTSTRAP", "1")
        // The plan does not lock the target directory the tests run from.
        .env("CARGO_TARGET_DIR", scratch.path())
        .output()
        .expect("running cargo");
    assert!(
        output.status.success(),
        "cargo {arguments:?} --unit-graph: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let graph: serde_json::Value = serde_json::from_slice(&output.stdout).expect("unit graph");
    let units = graph["units"].as_array().expect("units");
    let mut stack: Vec<usize> = units
        .iter()
        .enumerate()
        .filter(|(_, unit)| {
            unit["pkg_id"]
                .as_str()
                .is_some_and(|id| id.contains("librocksdb-sys"))
        })
        .map(|(index, _)| index)
        .collect();
    assert!(!stack.is_empty(), "cargo {arguments:?} builds no RocksDB");
    let mut seen = BTreeSet::new();
    let mut described = BTreeSet::new();
    while let Some(index) = stack.pop() {
        if !seen.insert(index) {
            continue;
        }
        let unit = &units[index];
        let mut profile = unit["profile"].clone();
        // Cargo leaves a profile's name out of the build hash (`cargo
        // bench` uses "bench", which inherits "release"); so do we.
        profile["name"] = serde_json::Value::Null;
        // `cargo check` and `clippy` only check the Rust of a library; what
        // is shared is the build script's run, which compiles the C++.
        let mode = match unit["mode"].as_str() {
            Some("check") => "build",
            mode => mode.unwrap_or("?"),
        };
        described.insert(format!(
            "{} {} {} features={} profile={}",
            unit["pkg_id"], unit["target"]["name"], mode, unit["features"], profile
        ));
        for dependency in unit["dependencies"].as_array().expect("dependencies") {
            stack.push(dependency["index"].as_u64().expect("index") as usize);
        }
    }
    described
}

/// The README's demo command, its test command, CI's clippy and the
/// benches plan the very same RocksDB: same features all the way down, same
/// profile. When a new dependency breaks this, the difference printed names
/// the feature to pin in hack/Cargo.toml.
#[test]
fn every_command_builds_the_same_rocksdb() {
    let demo = rocksdb_units(&["build", "--release", "-p", "peers"]);
    for other in [
        &["test", "--release", "--workspace", "--no-run"][..],
        &["clippy", "--release", "--workspace", "--all-targets"],
        &["bench", "--workspace", "--bench", "peers", "--no-run"],
        &["test", "--release", "-p", "peers-net", "--no-run"],
    ] {
        let units = rocksdb_units(other);
        let only_demo: Vec<_> = demo.difference(&units).collect();
        let only_other: Vec<_> = units.difference(&demo).collect();
        assert!(
            only_demo.is_empty() && only_other.is_empty(),
            "`cargo {}` builds another RocksDB than the demo command.\nonly in the demo's: {only_demo:#?}\nonly in this one's: {only_other:#?}",
            other.join(" ")
        );
    }
}

/// RocksDB's C++ is compiled without debug info (the `-g` that made the
/// binary ~450 MB): the build script's run sees `DEBUG=false`.
#[test]
fn rocksdb_cxx_has_no_debug_info() {
    let units = rocksdb_units(&["build", "--release", "-p", "peers"]);
    let run = units
        .iter()
        .find(|unit| unit.contains("librocksdb-sys") && unit.contains("run-custom-build"))
        .expect("librocksdb-sys's build script runs");
    assert!(run.contains("\"debuginfo\":0"), "{run}");
}

//! What the service tests through the `peers` binary share (cli/tests/keys.rs,
//! cli/tests/registry.rs): running it with a clean environment, reading its
//! JSON and its one-line errors, and a server it runs in the background.

#![allow(dead_code)] // each test crate uses its own part

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value as Json;

/// The `peers` binary, with none of the environment variables that would
/// change what a command does.
pub fn peers() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peers"));
    for variable in [
        "PEERS_DB",
        "PEERS_LOG",
        "PEERS_KEYS",
        "PEERS_PASSWORD",
        "PEERS_NEW_PASSWORD",
        "PEERS_RECOVERY_CODE",
        "PEERS_REGISTRY",
        "PEERS_REGISTRY_STATE",
    ] {
        command.env_remove(variable);
    }
    command
}

/// Runs `peers ARGS` with `env` set and `stdin` as its standard input.
pub fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = peers()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs peers");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("writes stdin");
    child.wait_with_output().expect("waits")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs with `--json`, requires success, and parses stdout.
pub fn ok_json(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Json {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = run(&all, env, stdin);
    assert!(
        output.status.success(),
        "peers {args:?}: {}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    serde_json::from_str(&text(&output.stdout)).expect("one JSON document")
}

/// Requires exit 1 and returns the error line.
pub fn fails(args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
    let output = run(args, env, stdin);
    assert_eq!(
        output.status.code(),
        Some(1),
        "peers {args:?} should fail: {}",
        text(&output.stdout)
    );
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("peers: error: "), "{stderr}");
    stderr.trim_end().to_owned()
}

/// A `peers … serve` running in the background, killed when dropped.
pub struct Server {
    child: Child,
    /// The first line it printed (with `--json`: where it listens, …).
    pub listening: Json,
}

impl Server {
    /// Starts `peers --json ARGS` and waits for its first line.
    pub fn start(args: &[&std::ffi::OsStr]) -> Server {
        let mut child = peers()
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts the server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reads the first line");
        let listening = serde_json::from_str(&line).expect("JSON");
        Server { child, listening }
    }

    /// Its address (the `listening` field).
    pub fn address(&self) -> String {
        self.listening["listening"]
            .as_str()
            .expect("address")
            .to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The always-on peer through the real binary: `peers serve --config FILE`
//! serving two databases from one process, its health and metrics endpoint,
//! config errors, and a revoked always-on peer (docs/SERVICES.md
//! "Always-on peer").

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tempfile::TempDir;

/// `peers` with a clean environment for the variables it reads.
fn peers() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peers"));
    command.env_remove("PEERS_DB").env_remove("PEERS_LOG");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `peers --db DB --json ARGS...`, requires success, parses stdout.
fn ok_json(db: &Path, args: &[&str]) -> Json {
    let output = peers()
        .arg("--db")
        .arg(db)
        .arg("--json")
        .args(args)
        .output()
        .expect("run peers");
    assert!(
        output.status.success(),
        "peers {args:?} failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{args:?}: not JSON ({error}): {}", text(&output.stdout)))
}

/// A row's fields (`get --json`), or `None` when the replica lacks it.
fn row(db: &Path, table: &str, row: &str) -> Option<Json> {
    let output = peers()
        .arg("--db")
        .arg(db)
        .args(["--json", "get", table, row])
        .output()
        .expect("run peers get");
    if output.status.success() {
        return Some(serde_json::from_slice(&output.stdout).expect("JSON"));
    }
    let stderr = text(&output.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
    None
}

/// A new database (`init`): its directory, id and owner key.
fn init(temp: &TempDir, name: &str) -> (PathBuf, String, String) {
    let dir = temp.path().join(name);
    let id = ok_json(&dir, &["init"]);
    (
        dir,
        id["database"].as_str().expect("database").to_owned(),
        id["public_key"].as_str().expect("key").to_owned(),
    )
}

/// An empty replica of `database` (`join DB_ID`); its directory and key.
fn join(temp: &TempDir, name: &str, database: &str) -> (PathBuf, String) {
    let dir = temp.path().join(name);
    let joined = ok_json(&dir, &["join", database]);
    (dir, joined["public_key"].as_str().expect("key").to_owned())
}

/// A running `peers --json serve ...`: the JSON lines it printed up to the
/// point its nodes (and metrics endpoint) were up. SIGINT on `stop`.
struct Serve {
    child: Child,
    lines: Vec<Json>,
}

impl Serve {
    /// Starts `peers --json ARGS...` and reads lines until `listening`
    /// came `databases` times, and `metrics` once if `metrics`.
    fn start(args: &[&str], databases: usize, metrics: bool) -> Serve {
        let mut child = peers()
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peers serve");
        let stdout = child.stdout.take().expect("piped");
        let mut stdout = std::io::BufReader::new(stdout);
        let mut lines = Vec::new();
        let count = |lines: &[Json], event: &str| {
            lines
                .iter()
                .filter(|line: &&Json| line["event"] == event)
                .count()
        };
        while count(&lines, "listening") < databases || (metrics && count(&lines, "metrics") < 1) {
            let mut line = String::new();
            let read = stdout.read_line(&mut line).expect("read serve's stdout");
            if read == 0 {
                let output = child.wait_with_output().expect("serve exits");
                panic!("serve stopped early: {}", text(&output.stderr));
            }
            lines.push(serde_json::from_str(&line).expect("a JSON line"));
        }
        // Keep reading, as a terminal would.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Serve { child, lines }
    }

    /// `peers --json --db DIR serve --listen 127.0.0.1:0`.
    fn one(dir: &Path) -> Serve {
        Serve::start(
            &[
                "--db",
                dir.to_str().expect("UTF-8"),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ],
            1,
            false,
        )
    }

    /// The address a database's node listens on (by database id).
    fn address(&self, database: &str) -> String {
        self.lines
            .iter()
            .find(|line| line["event"] == "listening" && line["database"] == database)
            .and_then(|line| line["address"].as_str())
            .unwrap_or_else(|| panic!("no listening line for {database}: {:?}", self.lines))
            .to_owned()
    }

    fn metrics_address(&self) -> String {
        self.lines
            .iter()
            .find(|line| line["event"] == "metrics")
            .and_then(|line| line["address"].as_str())
            .expect("a metrics line")
            .to_owned()
    }

    /// Sends SIGINT and requires a clean exit.
    fn stop(self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success());
        let output = self.child.wait_with_output().expect("serve exits");
        assert!(
            output.status.success(),
            "serve exited with {}: {}",
            output.status,
            text(&output.stderr)
        );
    }
}

/// One HTTP/1.1 request; returns the status code and the body.
fn http(address: &str, request: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .and_then(|length| length.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {head:?}"));
    assert_eq!(length, body.len(), "Content-Length matches the body");
    (status, body.to_owned())
}

fn get(address: &str, path: &str) -> (u16, String) {
    http(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n"),
    )
}

/// Parses exposition text, checking its shape: every sample's family has
/// `# HELP` and `# TYPE` lines before it, names and label sets are well
/// formed, values are numbers; counters end in `_total`. Returns
/// `(name{labels}, value)` pairs.
fn exposition(text: &str) -> Vec<(String, f64)> {
    let mut typed = std::collections::HashMap::new();
    let mut helped = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("a name");
            assert!(helped.insert(name.to_owned()), "two HELP lines for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().expect("name"), parts.next().expect("type"));
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "a counter named {name}");
            }
            typed.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        assert!(typed.contains_key(name), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            let inner = labels
                .strip_prefix('{')
                .and_then(|labels| labels.strip_suffix('}'))
                .unwrap_or_else(|| panic!("labels in braces: {line}"));
            for label in inner.split("\",") {
                let (key, value) = label.split_once("=\"").expect("label=\"value\"");
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(!value.contains('\n'), "{line}");
            }
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

/// The value of the sample `series` (exactly), if present.
fn sample(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(name, _)| name == series)
        .map(|(_, value)| *value)
}

fn write_config(temp: &TempDir, text: &str) -> PathBuf {
    let path = temp.path().join("serve.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// Polls `check` for up to 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// Guards issue 16 item 3's story: one `peers serve --config FILE` serves two
// databases (each its own node and port) and, at the file's `metrics`
// address, /health and /metrics in Prometheus's text format; the counters
// move when a member syncs changes through it, per database and per peer;
// commands reach each database through its control socket while it runs.
#[test]
fn serve_config_two_databases_with_metrics() {
    let temp = TempDir::new().expect("temp dir");
    let (notes, notes_id, _) = init(&temp, "notes");
    let (photos, photos_id, _) = init(&temp, "photos");
    let config = write_config(
        &temp,
        "metrics = \"127.0.0.1:0\"\n\
         [[databases]]\ndir = \"notes\"\nlisten = \"127.0.0.1:0\"\n\
         [[databases]]\ndir = \"photos\"\nlisten = \"127.0.0.1:0\"\n",
    );
    let serve = Serve::start(
        &["serve", "--config", config.to_str().expect("UTF-8")],
        2,
        true,
    );
    let metrics = serve.metrics_address();

    let (status, body) = get(&metrics, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok: serving 2 databases"), "{body}");
    let (status, _) = get(&metrics, "/nothing");
    assert_eq!(status, 404);
    let (status, _) = http(&metrics, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 405);
    let (status, _) = http(&metrics, "garbage\r\n\r\n");
    assert_eq!(status, 400);

    let (status, body) = get(&metrics, "/metrics");
    assert_eq!(status, 200);
    let before = exposition(&body);
    for id in [&notes_id, &photos_id] {
        assert_eq!(
            sample(
                &before,
                &format!("peers_changes_received_total{{database=\"{id}\"}}")
            ),
            Some(0.0),
            "{body}"
        );
        assert_eq!(
            sample(
                &before,
                &format!("peers_peers_connected{{database=\"{id}\"}}")
            ),
            Some(0.0),
            "{body}"
        );
    }

    // A member of each database syncs a change through the served node.
    for (dir, id, name) in [
        (&notes, &notes_id, "laptop"),
        (&photos, &photos_id, "phone"),
    ] {
        let (member, key) = join(&temp, name, id);
        // Runs in the serving process, through DIR/control.sock.
        ok_json(dir, &["grant", &key, "writer"]);
        // A new replica syncs before it writes (it learns its grant).
        let first = ok_json(&member, &["sync", &serve.address(id)]);
        assert!(first["changes_received"].as_u64() >= Some(1), "{first}");
        ok_json(&member, &["put", "t", "r", "x=1"]);
        let report = ok_json(&member, &["sync", &serve.address(id)]);
        assert_eq!(report["changes_sent"], 1, "{report}");

        let (_, body) = get(&metrics, "/metrics");
        let after = exposition(&body);
        let labels = format!("database=\"{id}\"");
        assert_eq!(
            sample(&after, &format!("peers_changes_received_total{{{labels}}}")),
            Some(1.0),
            "{body}"
        );
        let sent = sample(&after, &format!("peers_changes_sent_total{{{labels}}}"));
        assert!(
            sent.is_some_and(|sent| sent >= 1.0),
            "the grant at least: {body}"
        );
        let peer = format!("{labels},peer=\"{key}\"");
        assert_eq!(
            sample(
                &after,
                &format!("peers_peer_changes_received_total{{{peer}}}")
            ),
            Some(1.0),
            "{body}"
        );
        // The one-shot sync got in sync and ended: not connected now, in
        // sync a moment ago.
        assert_eq!(
            sample(&after, &format!("peers_peer_sessions{{{peer}}}")),
            Some(0.0)
        );
        assert_eq!(
            sample(&after, &format!("peers_peer_in_sync{{{peer}}}")),
            Some(0.0)
        );
        let lag = sample(&after, &format!("peers_peer_lag_seconds{{{peer}}}")).expect("lag");
        assert!((0.0..30.0).contains(&lag), "{body}");
        // The served replica holds the change.
        assert_eq!(row(dir, "t", "r").expect("the row")["x"], 1);
    }
    let info = exposition(&get(&metrics, "/metrics").1);
    assert_eq!(
        info.iter()
            .filter(|(series, _)| series.starts_with("peers_database_info{"))
            .count(),
        2
    );
    serve.stop();
}

// Guards the config's errors: a bad file stops `serve` before it binds
// anything, with one line naming the file and the problem; `--config` with a
// flag it replaces, or with --db, is refused (a setting has one source).
#[test]
fn serve_config_errors_name_the_problem() {
    let temp = TempDir::new().expect("temp dir");
    let config = write_config(
        &temp,
        "[[databases]]\ndir = \"notes\"\nlisten = \"127.0.0.1:0\"\nbackup_evry = \"1h\"\n",
    );
    let config = config.to_str().expect("UTF-8");
    let fails = |output: Output, expected: &[&str]| {
        assert!(!output.status.success());
        let stderr = text(&output.stderr);
        for part in expected {
            assert!(stderr.contains(part), "{stderr:?} lacks {part:?}");
        }
    };
    fails(
        peers()
            .args(["serve", "--config", config])
            .output()
            .expect("run"),
        &["peers: error:", "serve.toml", "unknown field `backup_evry`"],
    );
    fails(
        peers()
            .args(["serve", "--config", config, "--listen", "127.0.0.1:0"])
            .output()
            .expect("run"),
        &["--listen", "cannot be used with", "--config"],
    );
    fails(
        peers()
            .args(["--db", "x", "serve", "--config", config])
            .output()
            .expect("run"),
        &["drop --db"],
    );
    let missing = temp.path().join("missing.toml");
    fails(
        peers()
            .args(["serve", "--config", missing.to_str().expect("UTF-8")])
            .output()
            .expect("run"),
        &["reading the config file", "missing.toml"],
    );
    // A database that does not exist yet is an error, not a new one.
    let config = write_config(
        &temp,
        "[[databases]]\ndir = \"nowhere\"\nlisten = \"127.0.0.1:0\"\n",
    );
    fails(
        peers()
            .args(["serve", "--config", config.to_str().expect("UTF-8")])
            .output()
            .expect("run"),
        &["nowhere"],
    );
    assert!(!temp.path().join("nowhere").exists());
}

// Guards "enrolled with its own key that the owner grants and can revoke":
// the always-on peer is an empty replica with its own key; granted, it
// receives the owner's changes live over the connection its config keeps;
// revoked, it receives nothing written after the revocation, while another
// member still does.
#[test]
fn revoked_always_on_peer_receives_no_new_changes() {
    let temp = TempDir::new().expect("temp dir");
    let (owner, id, _) = init(&temp, "owner");
    let owner_serve = Serve::one(&owner);
    let owner_address = owner_serve.address(&id);
    let (always_on, key) = join(&temp, "always-on", &id);
    ok_json(&owner, &["grant", &key, "reader"]);
    let config = write_config(
        &temp,
        &format!(
            "metrics = \"127.0.0.1:0\"\n[[databases]]\ndir = \"always-on\"\nlisten = \"127.0.0.1:0\"\nconnect = [\"{owner_address}\"]\n"
        ),
    );
    let served = Serve::start(
        &["serve", "--config", config.to_str().expect("UTF-8")],
        1,
        true,
    );
    let metrics = served.metrics_address();
    ok_json(&owner, &["put", "notes", "before", "x=1"]);
    eventually("the change before the revocation", || {
        row(&always_on, "notes", "before").is_some_and(|fields| fields["x"] == 1)
    });
    let samples = exposition(&get(&metrics, "/metrics").1);
    assert_eq!(
        sample(
            &samples,
            &format!("peers_peers_connected{{database=\"{id}\"}}")
        ),
        Some(1.0)
    );

    ok_json(&owner, &["revoke", &key]);
    ok_json(&owner, &["put", "notes", "after", "x=2"]);
    // Another member gets the change: it is there to be had.
    let (other, other_key) = join(&temp, "other", &id);
    ok_json(&owner, &["grant", &other_key, "reader"]);
    ok_json(&other, &["sync", &owner_address]);
    assert_eq!(row(&other, "notes", "after").expect("the row")["x"], 2);
    // The always-on peer's session ends, and redials are refused.
    eventually("the revoked peer's session to end", || {
        let samples = exposition(&get(&metrics, "/metrics").1);
        sample(
            &samples,
            &format!("peers_peers_connected{{database=\"{id}\"}}"),
        ) == Some(0.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        row(&always_on, "notes", "after"),
        None,
        "a revoked peer received a change written after its revocation"
    );
    served.stop();
    owner_serve.stop();
}

// Guards bootstrap over sync through the real binary (FORMAT.md
// "Bootstrap"): a served replica trimmed at a checkpoint; a new member's
// `peers sync` receives its snapshot, installs it, syncs again for the
// changes above it, and holds the served rows.
#[test]
fn bootstrap_by_sync() {
    let temp = TempDir::new().expect("temp dir");
    let (owner, id, _) = init(&temp, "owner");
    for index in 0..5 {
        ok_json(
            &owner,
            &["put", "notes", &format!("n{index}"), "title=below"],
        );
    }
    ok_json(&owner, &["checkpoint"]);
    ok_json(&owner, &["trim"]);
    let serve = Serve::one(&owner);
    // Through the serving process's control socket.
    ok_json(&owner, &["put", "notes", "n9", "title=above"]);
    let (member, key) = join(&temp, "member", &id);
    ok_json(&owner, &["grant", &key, "writer"]);

    let output = peers()
        .arg("--db")
        .arg(&member)
        .args(["--json", "sync", &serve.address(&id)])
        .output()
        .expect("run peers sync");
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("installed the snapshot"), "{stderr}");
    // One report per session: the snapshot, then the changes above it.
    let reports: Vec<Json> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports[0]["snapshot_received"].is_object(), "{reports:?}");
    assert!(reports[1]["snapshot_received"].is_null(), "{reports:?}");
    // The checkpoint, the row above it and the grant.
    assert_eq!(reports[1]["changes_received"], 3, "{reports:?}");
    assert!(!member.join("snapshot-received").exists());
    for name in ["n0", "n4", "n9"] {
        assert_eq!(
            row(&member, "notes", name),
            row(&owner, "notes", name),
            "{name}"
        );
    }
    assert!(row(&member, "notes", "n9").is_some());
    serve.stop();
}

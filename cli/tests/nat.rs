//! Two replicas behind two NATs sync through a signaling server (issue 12).
//!
//! The test builds its own little internet out of network namespaces: `wan`
//! routes between two home routers and runs `peers signal` (WebSocket and
//! STUN); each router `r1`, `r2` masquerades its home network (iptables
//! MASQUERADE) and drops unsolicited inbound traffic, forwarded or to itself,
//! as a home router does;
//! `h1` and `h2` sit behind them with private addresses that cannot reach
//! each other. Replica A serves in `h1`, replica B syncs by A's key from
//! `h2`: the only way through is WebRTC with server-reflexive candidates
//! and hole punching. Every packet stays inside the namespaces the test
//! made; they are deleted at the end, even when it fails.
//!
//! It needs root, `ip` (iproute2) and `iptables` (`scripts/setup.sh`
//! installs them as root). Without them it prints why it skipped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// Namespaces (and the veths inside them) that are deleted on drop.
struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn skip(reason: &str) {
    eprintln!("SKIPPED two_replicas_behind_different_nats_sync: {reason}");
}

fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("{program}: {error}"))
}

fn must(program: &str, args: &[&str]) {
    let output = run(program, args).expect("runs");
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    must("ip", &all);
}

fn peers(db: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_peers"))
        .env_remove("PEERS_DB")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("runs peers");
    assert!(
        output.status.success(),
        "peers {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// A `peers` process in a namespace, and the JSON lines it prints.
struct Spawned {
    _running: Running,
    events: mpsc::Receiver<Json>,
}

impl Spawned {
    /// Starts `peers ARGS` inside `ns`.
    fn start(ns: &str, args: &[&str]) -> Spawned {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_peers")])
            .args(args)
            .env(
                "PEERS_LOG",
                std::env::var("NAT_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawns peers");
        let stdout = child.stdout.take().expect("piped");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading after the test stopped listening: a closed pipe
            // would stop the node at its next event.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Json>(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        Spawned {
            _running: Running(child),
            events,
        }
    }

    /// Waits (up to 20 s) for a line whose "event" is `event`.
    fn wait_for(&self, event: &str) -> Json {
        self.wait_until(event, |_| true)
    }

    /// Waits (up to 20 s) for a line whose "event" is `event` and that
    /// `wanted` accepts.
    fn wait_until(&self, event: &str, wanted: impl Fn(&Json) -> bool) -> Json {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("peers never printed {event}"));
            if value["event"] == event && wanted(&value) {
                return value;
            }
        }
    }
}

#[test]
fn two_replicas_behind_different_nats_sync() {
    let uid =
        run("id", &["-u"]).map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    if uid.as_deref() != Ok("0") {
        return skip("not root (network namespaces need CAP_SYS_ADMIN); CI runs as root");
    }
    for tool in ["ip", "iptables"] {
        if run(tool, &["-V"]).is_err() && run(tool, &["--version"]).is_err() {
            return skip(&format!(
                "{tool} not installed (scripts/setup.sh installs it as root)"
            ));
        }
    }
    let tag = format!("pn{}", std::process::id() % 10000);
    let ns = |name: &str| format!("{tag}-{name}");
    let mut namespaces = Namespaces { names: Vec::new() };
    for name in ["wan", "r1", "r2", "h1", "h2"] {
        let full = ns(name);
        match run("ip", &["netns", "add", &full]) {
            Ok(output) if output.status.success() => namespaces.names.push(full),
            Ok(output) => {
                return skip(&format!(
                    "cannot make network namespaces: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            Err(error) => return skip(&error),
        }
    }
    // Addresses: wan 10.213.i.1 toward router i (10.213.i.2); home i is
    // 192.168.21i.0/24 with its router at .1 and the host at .2.
    for side in ["1", "2"] {
        let (wan, router, host) = (ns("wan"), ns(&format!("r{side}")), ns(&format!("h{side}")));
        let (w, rw, rh, h) = (
            format!("{tag}w{side}"),
            format!("{tag}r{side}w"),
            format!("{tag}r{side}h"),
            format!("{tag}h{side}"),
        );
        must(
            "ip",
            &["link", "add", &w, "type", "veth", "peer", "name", &rw],
        );
        must("ip", &["link", "set", &w, "netns", &wan]);
        must("ip", &["link", "set", &rw, "netns", &router]);
        must(
            "ip",
            &["link", "add", &rh, "type", "veth", "peer", "name", &h],
        );
        must("ip", &["link", "set", &rh, "netns", &router]);
        must("ip", &["link", "set", &h, "netns", &host]);
        let public = format!("10.213.{side}");
        let home = format!("192.168.21{side}");
        in_ns(
            &wan,
            &["ip", "addr", "add", &format!("{public}.1/24"), "dev", &w],
        );
        in_ns(&wan, &["ip", "link", "set", &w, "up"]);
        in_ns(
            &router,
            &["ip", "addr", "add", &format!("{public}.2/24"), "dev", &rw],
        );
        in_ns(
            &router,
            &["ip", "addr", "add", &format!("{home}.1/24"), "dev", &rh],
        );
        in_ns(&router, &["ip", "link", "set", &rw, "up"]);
        in_ns(&router, &["ip", "link", "set", &rh, "up"]);
        in_ns(
            &router,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("{public}.1"),
            ],
        );
        in_ns(
            &router,
            &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
        );
        in_ns(
            &router,
            &[
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                &rw,
                "-j",
                "MASQUERADE",
            ],
        );
        // A home NAT: replies come in, nothing unsolicited does.
        in_ns(
            &router,
            &[
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                &rw,
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
        in_ns(
            &router,
            &["iptables", "-A", "FORWARD", "-i", &rw, "-j", "DROP"],
        );
        // Nor does anything unsolicited reach the router itself. Without
        // this rule the peer's first check, arriving before our own first
        // packet, becomes a conntrack entry on the router's public port, and
        // MASQUERADE then maps our outgoing check to another port: the NAT
        // acts as a symmetric one and no path opens (docs/PROTOCOL.md, "What
        // cannot connect").
        in_ns(
            &router,
            &[
                "iptables",
                "-A",
                "INPUT",
                "-i",
                &rw,
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
        in_ns(
            &router,
            &["iptables", "-A", "INPUT", "-i", &rw, "-j", "DROP"],
        );
        in_ns(
            &host,
            &["ip", "addr", "add", &format!("{home}.2/24"), "dev", &h],
        );
        in_ns(&host, &["ip", "link", "set", &h, "up"]);
        in_ns(&host, &["ip", "link", "set", "lo", "up"]);
        in_ns(
            &host,
            &["ip", "route", "add", "default", "via", &format!("{home}.1")],
        );
    }
    in_ns(&ns("wan"), &["ip", "link", "set", "lo", "up"]);
    in_ns(
        &ns("wan"),
        &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
    );

    // The homes cannot reach each other directly: h2 cannot open TCP to h1.
    let direct = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns("h2"),
            "timeout",
            "3",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/192.168.211.2/9",
        ])
        .status();
    if let Ok(status) = direct {
        assert!(
            !status.success(),
            "h2 reached h1's private address directly"
        );
    }

    // Replica A (members only) grants B, writes.
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let init: Json = serde_json::from_str(&peers(&a, &["--json", "init"])).expect("json");
    let database = init["database"].as_str().expect("id").to_owned();
    let a_key = init["public_key"].as_str().expect("key").to_owned();
    let joined: Json =
        serde_json::from_str(&peers(&b, &["--json", "join", &database])).expect("json");
    let b_key = joined["public_key"].as_str().expect("key").to_owned();
    peers(&a, &["grant", &b_key, "writer"]);
    peers(&a, &["put", "notes", "n1", "text=written behind NAT 1"]);

    let signal = "ws://10.213.1.1:7400";
    let server = Spawned::start(
        &ns("wan"),
        // Bound to one address: a UDP socket on 0.0.0.0 of a multi-homed
        // host answers STUN from whichever address routes back, which the
        // asking NAT does not match.
        &["--json", "signal", "--listen", "10.213.1.1:7400"],
    );
    server.wait_for("signaling");
    let a_db = a.to_str().expect("utf-8 path");
    let a_node = Spawned::start(
        &ns("h1"),
        &[
            "--db",
            a_db,
            "--json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--signal",
            signal,
        ],
    );
    a_node.wait_for("registered");

    let sync = || {
        let started = Instant::now();
        let output = Command::new("ip")
            .args(["netns", "exec", &ns("h2"), env!("CARGO_BIN_EXE_peers")])
            .arg("--db")
            .arg(&b)
            .args(["--json", "sync", "--signal", signal, &a_key])
            .env(
                "PEERS_LOG",
                std::env::var("NAT_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .output()
            .expect("runs peers sync");
        let took = started.elapsed();
        assert!(
            output.status.success(),
            "sync across the NATs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Json = serde_json::from_slice(&output.stdout).expect("json");
        eprintln!("sync across two NATs, process start to exit: {took:?}; {report}");
        report
    };
    let report = sync();
    assert_eq!(report["peer"], a_key.as_str());
    assert!(report["changes_received"].as_u64() >= Some(3), "{report}");
    peers(&b, &["put", "notes", "n2", "text=written behind NAT 2"]);
    let report = sync();
    assert_eq!(report["changes_sent"], 1, "{report}");

    // B reached A at A's router's public address: a server-reflexive path.
    let known: Json = serde_json::from_str(&peers(&b, &["--json", "peers"])).expect("json");
    let entry = known
        .as_array()
        .expect("list")
        .iter()
        .find(|peer| peer["public_key"] == a_key.as_str())
        .expect("A is a known peer");
    assert_eq!(entry["how"], "webrtc", "{entry}");
    assert!(
        entry["address"]
            .as_str()
            .expect("address")
            .starts_with("10.213.1.2:"),
        "the path goes through A's NAT: {entry}"
    );

    // Live: B serves too and keeps a connection to A by key; a change B
    // wrote before starting reaches A's running node over it.
    peers(&b, &["put", "notes", "n3", "text=pushed live"]);
    let b_db = b.to_str().expect("utf-8 path");
    let b_node = Spawned::start(
        &ns("h2"),
        &[
            "--db",
            b_db,
            "--json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--signal",
            signal,
            "--connect",
            &a_key,
        ],
    );
    let connected = b_node.wait_for("connected");
    assert_eq!(connected["peer"], a_key.as_str(), "{connected}");
    // A received n2 from the second one-shot sync (total 1); n3 is its second.
    let received = a_node.wait_until("received", |event| event["total"] == 2);
    assert_eq!(received["peer"], b_key.as_str(), "{received}");
    drop(b_node);
    drop(a_node);
    for (row, text) in [("n2", "written behind NAT 2"), ("n3", "pushed live")] {
        let got = peers(&a, &["--json", "get", "notes", row]);
        assert!(got.contains(text), "{got}");
    }
    let row = peers(&b, &["--json", "get", "notes", "n1"]);
    assert!(row.contains("written behind NAT 1"), "{row}");
    drop(namespaces);
}

//! The always-on peer's memory while it serves idle peers
//! (docs/SERVICES.md "Always-on peer", the figure):
//!
//! ```sh
//! cargo build --release --workspace --examples
//! $CARGO_TARGET_DIR/release/examples/always_on_rss $CARGO_TARGET_DIR/release/peers 50 30
//! ```
//!
//! (the `peers` binary, peers, idle seconds). It creates a database of
//! `CHANGES` changes with one member key per peer granted, starts
//! `peers serve --config FILE` on it (the binary given, its own process),
//! and from this process connects each member as a live `Node` (its own
//! replica, its own key); once the server's /metrics reports them all
//! connected and caught up, it waits the idle seconds (keepalives only) and
//! prints the server's VmRSS and VmHWM from /proc/PID/status, before and
//! with the peers.

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peers_engine::{Db, Options, Role};
use peers_net::{Node, NodeConfig};

/// Changes in the served database (rows of a few fields).
const CHANGES: usize = 1000;

fn main() {
    let mut args = std::env::args().skip(1);
    let binary = args
        .next()
        .expect("usage: always_on_rss PEERS_BINARY [PEERS] [IDLE_SECONDS]");
    let peers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let idle: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().expect("tempdir");

    let served_dir = dir.path().join("served");
    let owner = Db::create(&served_dir, Options::default()).expect("create");
    let owner_key = owner.author();
    for row in 0..CHANGES {
        let mut tx = owner.transaction();
        tx.set("notes", &format!("n{row}"), "title", format!("note {row}"));
        tx.set("notes", &format!("n{row}"), "done", false);
        tx.commit().expect("commit");
    }
    let members: Vec<Db> = (0..peers)
        .map(|index| {
            let member = Db::join(
                dir.path().join(format!("member{index}")),
                owner.database_id(),
                Options::default(),
            )
            .expect("join");
            owner.grant(member.author(), Role::Reader).expect("grant");
            member
        })
        .collect();
    drop(owner);

    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "metrics = \"127.0.0.1:0\"\n[[databases]]\ndir = \"served\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write the config");
    let mut child = Command::new(&binary)
        .args(["--json", "serve", "--config"])
        .arg(&config)
        .env_remove("PEERS_DB")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start peers serve");
    let pid = child.id();
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let (mut address, mut metrics) = (None, None);
    while address.is_none() || metrics.is_none() {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).expect("read") > 0,
            "serve stopped"
        );
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        let at = event["address"].as_str().map(str::to_owned);
        match event["event"].as_str() {
            Some("listening") => address = at,
            Some("metrics") => metrics = at,
            _ => {}
        }
    }
    let (address, metrics) = (address.expect("address"), metrics.expect("metrics"));
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    std::thread::sleep(Duration::from_secs(2));
    let (rss_alone, _) = memory(pid);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let nodes: Vec<Node> = runtime.block_on(async {
        let mut nodes = Vec::new();
        for member in &members {
            let node = Node::start(member.clone(), NodeConfig::default())
                .await
                .expect("node");
            node.connect(&address, Some(owner_key))
                .await
                .expect("connect");
            nodes.push(node);
            // The server takes 4 handshakes from one address at once.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nodes
    });
    let wanted = format!(
        "peers_peers_connected{{database=\"{}\"}} {peers}",
        members[0].database_id().to_hex()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = scrape(&metrics);
        let in_sync = text
            .lines()
            .filter(|line| line.starts_with("peers_peer_in_sync{") && line.ends_with(" 1"))
            .count();
        if text.lines().any(|line| line == wanted) && in_sync == peers {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all peers connected:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let connected_after = started.elapsed();
    for member in &members {
        assert_eq!(member.version_vector().expect("vv").len(), 1, "caught up");
    }
    std::thread::sleep(Duration::from_secs(idle));
    let (rss, hwm) = memory(pid);
    let text = scrape(&metrics);
    assert!(
        text.lines().any(|line| line == wanted),
        "a peer dropped:\n{text}"
    );
    println!(
        "peers serve --config: {CHANGES} changes, {peers} idle live peers (connected and in sync after {:.1} s, then {idle} s idle): VmRSS {:.1} MiB (alone: {:.1} MiB), VmHWM {:.1} MiB",
        connected_after.as_secs_f64(),
        mib(rss),
        mib(rss_alone),
        mib(hwm),
    );
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let status = child.wait().expect("serve exits");
    runtime.block_on(async {
        for node in nodes {
            node.shutdown().await;
        }
    });
    assert!(status.success(), "serve exited with {status}");
}

/// VmRSS and VmHWM of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// GET /metrics (one request, connection closed).
fn scrape(address: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

//! Measures the signaling server's memory per idle registered client.
//!
//! ```sh
//! cargo run --release -p peers-signal --example idle_clients -- 4000
//! ```
//!
//! The example runs the server in a child process (itself, with `--server`), opens
//! N registered clients against it from this process in two halves, and reads the
//! child's VmRSS from /proc/<pid>/status before and after each half. The per-client
//! figure is the RSS growth over the second half divided by its clients, so one-time
//! costs (tokio's worker stacks, the registry's first allocations) are left out.
//! Linux only (it reads /proc).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use peers_signal::{Client, Incoming, Limits, Server, ServerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("--server") {
        return run_server().await;
    }
    let clients: usize = first.as_deref().unwrap_or("4000").parse()?;
    anyhow::ensure!(clients >= 2, "give at least 2 clients");

    let mut child = Command::new(std::env::current_exe()?)
        .arg("--server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .read_line(&mut line)?;
    let url = format!("ws://{}", line.trim());

    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_kib = rss_kib(pid)?;
    let half = clients / 2;
    let mut held = open(&url, 0, half).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let half_kib = rss_kib(pid)?;
    held.extend(open(&url, half, clients).await?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full_kib = rss_kib(pid)?;
    anyhow::ensure!(
        held.iter().all(|(client, _)| client.is_registered()),
        "every client is registered"
    );

    let second_half = clients - half;
    println!(
        "server RSS: {start_kib} KiB at start, {half_kib} KiB with {half} clients, {full_kib} KiB with {clients} clients"
    );
    println!(
        "per idle registered client: {:.1} KiB over the second {second_half} clients ({:.1} KiB averaged over all {clients})",
        (full_kib - half_kib) as f64 / second_half as f64,
        (full_kib - start_kib) as f64 / clients as f64,
    );
    drop(held);
    drop(child.stdin.take());
    child.wait()?;
    Ok(())
}

/// Opens registered clients with keys `from..to`, 64 at a time.
async fn open(url: &str, from: usize, to: usize) -> anyhow::Result<Vec<(Client, Incoming)>> {
    let mut opened = Vec::with_capacity(to - from);
    for batch_start in (from..to).step_by(64) {
        let mut batch = tokio::task::JoinSet::new();
        for seed in batch_start..(batch_start + 64).min(to) {
            let url = url.to_owned();
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&(seed as u64).to_le_bytes());
            secret[8] = 1;
            batch.spawn(async move {
                Client::connect(&url, Arc::new(SigningKey::from_bytes(&secret))).await
            });
        }
        while let Some(result) = batch.join_next().await {
            opened.push(result??);
        }
    }
    Ok(opened)
}

fn rss_kib(pid: u32) -> anyhow::Result<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad VmRSS line"))?
        .parse()?)
}

/// The child: a server with room for every client from one IP, until stdin closes.
async fn run_server() -> anyhow::Result<()> {
    let limits = Limits {
        connections_per_ip: u32::MAX,
        ..Limits::default()
    };
    let server =
        Server::start(ServerConfig::new("127.0.0.1:0".parse()?).with_limits(limits)).await?;
    println!("{}", server.local_addr());
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|read| read > 0)
            .unwrap_or(false)
        {}
    })
    .await?;
    server.shutdown().await;
    Ok(())
}

//! The buffer's figures (docs/SERVICES.md "Blind sync buffer", "Figures"):
//! envelopes per second in (puts) and out (gets) through a real server on
//! 127.0.0.1 over a local directory, and the server's memory per space it
//! caches.
//!
//! ```sh
//! cargo run --release --workspace --example buffer_figures -- [ENVELOPES] [SPACES] [DIR]
//! ```
//!
//! ENVELOPES (default 20000) are sealed changes of 200 bytes (the size of
//! a small signed change; each a 308-byte envelope), put 1024 at a time
//! into one space, then read back by cursor. First, SPACES (default 500)
//! spaces get 100 envelopes each, and the growth of the process's resident
//! memory over those spaces is the memory per space. DIR (default a
//! temporary directory) holds the store.

use std::sync::Arc;
use std::time::Instant;

use peers_buffer::{
    BufferKey, Client, Cursor, GET_ENVELOPES_MAX, PUT_ENVELOPES_MAX, Server, ServerConfig,
    envelope_hash, open_store,
};
use peers_engine::DatabaseId;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn arg(index: usize, default: usize) -> usize {
    std::env::args()
        .nth(index)
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let envelopes = arg(1, 20_000);
    let spaces = arg(2, 500);
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = std::env::args()
        .nth(3)
        .map_or_else(|| scratch.path().to_owned(), std::path::PathBuf::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (store, prefix) = open_store(&dir.display().to_string()).expect("store");
        let config = ServerConfig {
            space_bytes_max: u64::MAX,
            client_bytes_per_hour: u64::MAX,
            ..ServerConfig::default()
        };
        let server = Arc::new(Server::new(store, prefix, config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = listener.local_addr().expect("address").to_string();
        tokio::spawn(Arc::clone(&server).serve(listener));
        let mut client = Client::connect(&url).await.expect("connect");

        // Memory per cached space, first (before the throughput runs leave
        // freed memory the allocator reuses): 100 envelopes in each of
        // SPACES spaces.
        let before = rss_kib();
        for s in 0..spaces {
            let space = BufferKey::of(&DatabaseId([2; 32])).space(s as u64);
            let batch: Vec<Vec<u8>> = (0..100u64)
                .map(|i| space.seal(&i.to_le_bytes()).expect("seal"))
                .collect();
            client.put(&space, batch).await.expect("put");
        }
        let after_kib = rss_kib();
        println!(
            "memory: {} spaces of 100 envelopes cached, resident memory {before} KiB -> {after_kib} KiB: {:.0} bytes per space",
            server.spaces_cached(),
            (after_kib.saturating_sub(before) * 1024) as f64 / spaces as f64
        );

        // In: one space, puts of 1024 envelopes.
        let space = BufferKey::of(&DatabaseId([1; 32])).space(2900);
        let sealed: Vec<Vec<u8>> = (0..envelopes)
            .map(|i| {
                let mut change = vec![0u8; 200];
                change[..8].copy_from_slice(&(i as u64).to_le_bytes());
                space.seal(&change).expect("seal")
            })
            .collect();
        let bytes: usize = sealed.iter().map(Vec::len).sum();
        let started = Instant::now();
        for batch in sealed.chunks(PUT_ENVELOPES_MAX) {
            client.put(&space, batch.to_vec()).await.expect("put");
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "in:  {envelopes} envelopes ({bytes} bytes) in {seconds:.2} s: {:.0} envelopes/s, {:.1} MB/s",
            envelopes as f64 / seconds,
            bytes as f64 / seconds / 1e6
        );

        // Out: read them back by cursor, and open each (as a member does).
        let started = Instant::now();
        let mut after = Cursor::default();
        let mut read = 0usize;
        loop {
            let (batch, more) = client
                .get(space.tag(), after, GET_ENVELOPES_MAX as u16)
                .await
                .expect("get");
            for stored in &batch {
                space.open(&stored.envelope).expect("opens");
                after = Cursor {
                    received_ms: stored.received_ms,
                    hash: envelope_hash(&stored.envelope),
                };
            }
            read += batch.len();
            if !more || batch.is_empty() {
                break;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(read, envelopes, "every envelope read back");
        println!(
            "out: {read} envelopes in {seconds:.2} s: {:.0} envelopes/s (fetched and opened)",
            read as f64 / seconds
        );
        drop(sealed);

    });
}

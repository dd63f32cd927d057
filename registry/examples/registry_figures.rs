//! The registry's figures (docs/SERVICES.md "Public key registry",
//! "Figures"): claims per second and verified lookups per second through a
//! real server on 127.0.0.1 (one client, a connection per request, every
//! answer's proofs checked and the state file written), and proof sizes in
//! a log of LEAVES entries, built in memory.
//!
//! ```sh
//! cargo build --release --workspace --example registry_figures
//! $CARGO_TARGET_DIR/release/examples/registry_figures [CLAIMS] [LOOKUPS] [LEAVES]
//! ```
//!
//! CLAIMS (default 1000) public handles are claimed (each one synced
//! write of the store), then LOOKUPS (default 2000) lookups of them made.
//! LEAVES (default 1,000,000) leaves of 33 bytes (a lookup-only entry's
//! leaf) make the tree the proof sizes are measured in.

use std::time::Instant;

use peers_engine::Identity;
use peers_registry::merkle::{Tree, encode_proof};
use peers_registry::note::{Checkpoint, origin_for, verifier_key};
use peers_registry::wire::{Message, tag};
use peers_registry::{Client, Discoverability, Entry, Server, now_secs};

fn arg(index: usize, default: u64) -> u64 {
    std::env::args()
        .nth(index)
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let claims = arg(1, 1000);
    let lookups = arg(2, 2000);
    let leaves = arg(3, 1_000_000);
    let scratch = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = Server::open(&scratch.path().join("registry")).expect("opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(server.serve(listener));
        let client = Client::new(&address, &scratch.path().join("state.json"));
        let expires = now_secs() + 86_400;
        let started = Instant::now();
        for index in 0..claims {
            client
                .claim(
                    &Identity::generate(),
                    &format!("user{index}"),
                    Discoverability::Public,
                    expires,
                    None,
                )
                .await
                .expect("claims");
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "claims: {claims} in {elapsed:.2} s = {:.0} claims/s (each verified: inclusion and consistency proofs, state file written)",
            claims as f64 / elapsed
        );
        let started = Instant::now();
        for index in 0..lookups {
            client
                .lookup(&format!("user{}", index % claims.max(1)), None)
                .await
                .expect("looks up");
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "verified lookups: {lookups} in {elapsed:.2} s = {:.0} lookups/s (log of {claims} entries)",
            lookups as f64 / elapsed
        );
    });
    proof_sizes(leaves);
}

/// Proof and answer sizes in a tree of `leaves` leaves.
fn proof_sizes(leaves: u64) {
    let started = Instant::now();
    let mut tree = Tree::new();
    for index in 0..leaves {
        let mut leaf = vec![peers_registry::LEAF_COMMITMENT];
        leaf.extend_from_slice(&[0u8; 24]);
        leaf.extend_from_slice(&index.to_le_bytes());
        tree.push(&leaf);
    }
    println!(
        "tree of {leaves} leaves built in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let size = tree.size();
    let inclusion = encode_proof(&tree.inclusion_proof(size / 3, size));
    let consistency_one = encode_proof(&tree.consistency_proof(size - 1, size));
    let consistency_half = encode_proof(&tree.consistency_proof(size / 2 + 1, size));
    println!(
        "inclusion proof: {} bytes ({} hashes)",
        inclusion.len(),
        inclusion.len() / 32
    );
    println!(
        "consistency proof from {} to {size}: {} bytes; from {} to {size}: {} bytes",
        size - 1,
        consistency_one.len(),
        size / 2 + 1,
        consistency_half.len()
    );
    let operator = Identity::from_secret_bytes([7; 32]);
    let key = operator.author().0;
    let origin = origin_for(&key);
    let note = Checkpoint {
        origin: origin.clone(),
        size,
        root: tree.root(size),
    }
    .sign(&operator);
    let entry = Entry::claim(
        &Identity::from_secret_bytes([1; 32]),
        "alice.example",
        Discoverability::LookupOnly,
        now_secs() + 86_400,
        Some([3; 32]),
    )
    .expect("entry");
    let state = Message::new(
        tag::STATE,
        vec![
            verifier_key(&origin, &key).into_bytes(),
            note.clone().into_bytes(),
            consistency_half.clone(),
            vec![1],
        ],
    )
    .encode();
    let answer = Message::new(
        tag::ENTRY,
        vec![
            (size / 3).to_le_bytes().to_vec(),
            entry.encode(),
            inclusion.clone(),
        ],
    )
    .encode();
    println!(
        "checkpoint note: {} bytes; entry: {} bytes; a lookup's answer for a handle of one entry: {} bytes (STATE {} + ENTRY {}, frame headers included)",
        note.len(),
        entry.encode().len(),
        state.len() + answer.len() + 8,
        state.len() + 4,
        answer.len() + 4
    );
}

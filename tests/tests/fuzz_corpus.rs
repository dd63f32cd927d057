//! Every fuzz target runs on every `cargo test`: over each file of its seed
//! corpus (fuzz/seeds/<target>/) and over deterministic mutations of them
//! (bit flips, interesting bytes, truncations, insertions, deletions,
//! duplicated ranges, splices), with a fixed-seed PRNG. Only "no panic" is
//! asserted here; the targets check their own properties (see
//! `peers_tests::fuzz_targets`). The real campaigns are in fuzz/README.md.
//!
//! `FUZZ_CORPUS_SCALE=N` multiplies the mutation counts (default 1).

use std::path::{Path, PathBuf};

use peers_tests::fuzz_targets::{
    SplitMix, authorization_model, change_decode, changeset_import, channel_frames,
    control_request, handshake_respond, merge_model, rendezvous_decode, signal_frame,
    signal_sealed, signed_import, sync_message, ticket_decode, wal_open,
};

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

/// Runs `target` on every seed, then on `mutations` mutated inputs.
fn exercise(name: &str, target: fn(&[u8]), mutations: usize) {
    let seeds = seeds(name);
    for (path, bytes) in &seeds {
        let started = std::time::Instant::now();
        target(bytes);
        eprintln!(
            "{name}: seed {} took {:?}",
            path.display(),
            started.elapsed()
        );
    }
    let mut random = SplitMix(0x5eed_0000 + name.len() as u64);
    for index in 0..mutations * scale() {
        let (_, input) = &seeds[random.below(seeds.len())];
        let (_, other) = &seeds[random.below(seeds.len())];
        let bytes = mutate(input, other, &mut random);
        let result = std::panic::catch_unwind(|| target(&bytes));
        if let Err(panic) = result {
            eprintln!(
                "{name}: mutation {index} panicked; input (hex): {}",
                hex(&bytes)
            );
            std::panic::resume_unwind(panic);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Change::decode and the signature check never panic; decoded changes round trip.
#[test]
fn change_decode_seeds_and_mutations() {
    exercise("change_decode", change_decode, 5000);
}

/// Wal::open on damaged segments never panics; what opens reads back and reopens the same.
#[test]
fn wal_open_seeds_and_mutations() {
    exercise("wal_open", wal_open, 3000);
}

/// Importing a damaged change-set file never panics and never changes state for nothing.
#[test]
fn changeset_import_seeds_and_mutations() {
    exercise("changeset_import", changeset_import, 500);
}

/// Hostile but validly signed changes (forged chains, forks) are refused or
/// merged as the model says, in any order.
#[test]
fn signed_import_seeds_and_mutations() {
    exercise("signed_import", signed_import, 400);
}

/// Random merge programs converge to the reference model in any receive order.
#[test]
fn merge_model_seeds_and_mutations() {
    exercise("merge_model", merge_model, 100);
}

/// Random authorization scripts (grants, revocations, writes, syncs among
/// five keys) converge to the reference model in any receive order.
#[test]
fn authorization_model_seeds_and_mutations() {
    exercise("authorization_model", authorization_model, 40);
}

/// Message::decode never panics; what decodes round trips, in its shortest form.
#[test]
fn sync_message_seeds_and_mutations() {
    exercise("sync_message", sync_message, 5000);
}

/// A responder fed a hostile first message (then EOF) errs as the protocol
/// says, never panics or hangs.
#[test]
fn handshake_respond_seeds_and_mutations() {
    exercise("handshake_respond", handshake_respond, 3000);
}

/// Raw bytes after a real handshake are refused frame by frame with the
/// error the frame layout calls for.
#[test]
fn channel_frames_seeds_and_mutations() {
    exercise("channel_frames", channel_frames, 3000);
}

/// Rendezvous::decode never panics; what decodes has one encoding.
#[test]
fn rendezvous_decode_seeds_and_mutations() {
    exercise("rendezvous_decode", rendezvous_decode, 5000);
}

#[test]
fn control_request_seeds_and_mutations() {
    exercise("control_request", control_request, 5000);
}

#[test]
fn ticket_decode_seeds_and_mutations() {
    exercise("ticket_decode", ticket_decode, 5000);
}

/// Signaling frames: no panic, one encoding.
#[test]
fn signal_frame_seeds_and_mutations() {
    exercise("signal_frame", signal_frame, 5000);
}

/// Sealed payloads never open without the sender's key; STUN never panics
/// or amplifies.
#[test]
fn signal_sealed_seeds_and_mutations() {
    exercise("signal_sealed", signal_sealed, 5000);
}

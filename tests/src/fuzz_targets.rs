//! Fuzz targets: one per decoder, plus the model targets (STYLE.md habit 14,
//! docs/DESIGN.md "Bad input").
//!
//! Each function takes arbitrary bytes and panics only on a bug: a decoder
//! that panics, or a broken property checked here (round trips, stable
//! hashes, state untouched by refused input, the merge against
//! [`crate::reference_model`]). `fuzz/fuzz_targets/*.rs` hands them to
//! libFuzzer; `tests/fuzz_corpus.rs` runs them over `fuzz/seeds/` and
//! deterministic mutations of it on every `cargo test`.
//!
//! [`TARGETS`] lists every target once: the corpus test replays what it
//! lists, `fuzz-seeds` (tests/src/bin/fuzz_seeds.rs) writes seeds by its
//! names, and a test (tests/fuzz_corpus.rs) checks that fuzz/Cargo.toml's
//! `[[bin]]`s, `fuzz/fuzz_targets/*.rs`, `fuzz/seeds/*/` and the modules
//! here name the same targets.
//!
//! One module per target, named after it (`fuzz_targets/<target>.rs`), and
//! two shared ones: `fixtures.rs` (identities, the fixture database, scratch
//! directories, the byte reader of programs and scripts) and `net.rs`
//! (channels over in-memory pipes, the reference reading of frames). Every
//! public item is re-exported here, so a target is
//! `peers_tests::fuzz_targets::<target>`.
//!
//! Databases live in the system temp dir and bare logs in `/dev/shm` when it
//! exists (see [`scratch_dir`]); `PEERS_FUZZ_SCRATCH=DIR` puts both in DIR.
//!
//! [`authorization_model()`] checks authorization against
//! [`crate::authorization_model`].
//!
//! The network targets ([`sync_message()`], [`handshake_respond()`],
//! [`channel_frames()`]) run real `peers_net` channels over in-memory
//! `tokio::io::duplex` pipes on a current-thread runtime: no sockets, no
//! sleeps, and every input ends in EOF, so nothing waits for a timer.

pub use crate::SplitMix;

mod fixtures;
mod net;

mod authorization_model;
mod backup_manifest;
mod buffer_wire;
mod change_decode;
mod changeset_import;
mod channel_frames;
mod control_request;
mod handshake_respond;
mod keys_message;
mod merge_model;
mod metrics_request;
mod registry_message;
mod rendezvous_decode;
mod signal_frame;
mod signal_sealed;
mod signed_import;
mod snapshot_read;
mod sync_message;
mod ticket_decode;
mod wal_open;

pub use fixtures::*;
pub use net::*;

pub use authorization_model::*;
pub use backup_manifest::*;
pub use buffer_wire::*;
pub use change_decode::*;
pub use changeset_import::*;
pub use channel_frames::*;
pub use control_request::*;
pub use handshake_respond::*;
pub use keys_message::*;
pub use merge_model::*;
pub use metrics_request::*;
pub use registry_message::*;
pub use rendezvous_decode::*;
pub use signal_frame::*;
pub use signal_sealed::*;
pub use signed_import::*;
pub use snapshot_read::*;
pub use sync_message::*;
pub use ticket_decode::*;
pub use wal_open::*;

/// One fuzz target, under one name everywhere: its function and module here
/// (`fuzz_targets/<name>.rs`), its libFuzzer wrapper
/// (`fuzz/fuzz_targets/<name>.rs`) and `[[bin]]` in fuzz/Cargo.toml, and its
/// seeds (`fuzz/seeds/<name>/`).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// Its body: takes arbitrary bytes, panics only on a bug.
    pub run: fn(&[u8]),
    /// Mutated seeds tests/fuzz_corpus.rs runs it on (times
    /// `FUZZ_CORPUS_SCALE`) after the seeds themselves: thousands for the
    /// decoders, fewer as an input opens more databases.
    pub mutations: usize,
    /// Where its seeds come from.
    pub seeds: SeedSource,
}

/// Where the committed seeds of a target (`fuzz/seeds/<name>/`) come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedSource {
    /// `fuzz-seeds` (tests/src/bin/fuzz_seeds.rs) writes them from real
    /// changes, logs, sessions and programs, and runs the target over them.
    Generated,
    /// Written otherwise (by hand, or with Python from docs/PROTOCOL.md's
    /// layouts) and committed; `fuzz-seeds` leaves them alone.
    Committed,
}

/// Every fuzz target, once. A new target is added here, as a module named
/// after it, as `fuzz/fuzz_targets/<name>.rs` and a `[[bin]]` in
/// fuzz/Cargo.toml, and with seeds in `fuzz/seeds/<name>/` (fuzz/README.md
/// "Adding a target"); tests/fuzz_corpus.rs fails until all of them agree.
pub const TARGETS: &[Target] = &[
    // Change::decode and the signature check never panic; decoded changes
    // round trip.
    Target {
        name: "change_decode",
        run: change_decode,
        mutations: 5000,
        seeds: SeedSource::Generated,
    },
    // Wal::open on damaged segments never panics; what opens reads back and
    // reopens the same.
    Target {
        name: "wal_open",
        run: wal_open,
        mutations: 3000,
        seeds: SeedSource::Generated,
    },
    // Importing a damaged change-set file never panics and never changes
    // state for nothing.
    Target {
        name: "changeset_import",
        run: changeset_import,
        mutations: 500,
        seeds: SeedSource::Generated,
    },
    // A damaged or hostile snapshot file is refused without a panic; what
    // reads whole hashes to what its checkpoint signs.
    Target {
        name: "snapshot_read",
        run: snapshot_read,
        mutations: 3000,
        seeds: SeedSource::Generated,
    },
    // Hostile but validly signed changes (forged chains, forks) are refused
    // or merged as the model says, in any order.
    Target {
        name: "signed_import",
        run: signed_import,
        mutations: 400,
        seeds: SeedSource::Generated,
    },
    // Random merge programs converge to the reference model in any receive
    // order.
    Target {
        name: "merge_model",
        run: merge_model,
        mutations: 100,
        seeds: SeedSource::Generated,
    },
    // Random authorization scripts (grants, revocations, writes, syncs among
    // five keys) converge to the reference model in any receive order.
    Target {
        name: "authorization_model",
        run: authorization_model,
        mutations: 40,
        seeds: SeedSource::Generated,
    },
    // Message::decode never panics; what decodes round trips, in its
    // shortest form.
    Target {
        name: "sync_message",
        run: sync_message,
        mutations: 5000,
        seeds: SeedSource::Generated,
    },
    // A responder fed a hostile first message (then EOF) errs as the
    // protocol says, never panics or hangs.
    Target {
        name: "handshake_respond",
        run: handshake_respond,
        mutations: 3000,
        seeds: SeedSource::Generated,
    },
    // Raw bytes after a real handshake are refused frame by frame with the
    // error the frame layout calls for.
    Target {
        name: "channel_frames",
        run: channel_frames,
        mutations: 3000,
        seeds: SeedSource::Generated,
    },
    // Rendezvous::decode never panics; what decodes has one encoding.
    Target {
        name: "rendezvous_decode",
        run: rendezvous_decode,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
    // Tickets, as bytes and as text: no panic, one encoding.
    Target {
        name: "ticket_decode",
        run: ticket_decode,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
    // Control-socket requests and answers: no panic, bounded frames.
    Target {
        name: "control_request",
        run: control_request,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
    // Signaling frames: no panic, one encoding.
    Target {
        name: "signal_frame",
        run: signal_frame,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
    // Sealed payloads never open without the sender's key; STUN never
    // panics or amplifies.
    Target {
        name: "signal_sealed",
        run: signal_sealed,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
    // Backup manifests (what a hostile store serves, once opened): no
    // panic, no allocation past the count limit, only signed manifests
    // whose entries chain.
    Target {
        name: "backup_manifest",
        run: backup_manifest,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
    // The buffer's wire (requests, answers) and envelopes: no panic, counts
    // within bounds, one encoding; only a member's envelope opens.
    Target {
        name: "buffer_wire",
        run: buffer_wire,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
    // Request heads sent to `peers serve --metrics`: no panic; only GET or
    // HEAD of /metrics and /health over HTTP/1.x is answered.
    Target {
        name: "metrics_request",
        run: metrics_request,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
    // A key-service frame body (either direction) and an envelope.
    Target {
        name: "keys_message",
        run: keys_message,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
    // A registry frame body (either direction), its entries, proofs,
    // checkpoints and verifier keys, and a client's state file.
    Target {
        name: "registry_message",
        run: registry_message,
        mutations: 5000,
        seeds: SeedSource::Committed,
    },
];

/// The registered target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|target| target.name == name)
}

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
mod change_decode;
mod changeset_import;
mod channel_frames;
mod control_request;
mod handshake_respond;
mod merge_model;
mod rendezvous_decode;
mod signal_frame;
mod signal_sealed;
mod signed_import;
mod sync_message;
mod ticket_decode;
mod wal_open;

pub use fixtures::*;
pub use net::*;

pub use authorization_model::*;
pub use change_decode::*;
pub use changeset_import::*;
pub use channel_frames::*;
pub use control_request::*;
pub use handshake_respond::*;
pub use merge_model::*;
pub use rendezvous_decode::*;
pub use signal_frame::*;
pub use signal_sealed::*;
pub use signed_import::*;
pub use sync_message::*;
pub use ticket_decode::*;
pub use wal_open::*;

//! Peers blind sync buffer: a server that keeps recent changes of
//! databases it cannot read, so that two devices that are never online
//! together still sync; and the members' side that pushes and pulls.
//!
//! The buffer stores *envelopes*: one signed change each, padded to a power
//! of two and sealed (XChaCha20-Poly1305) under a key only members derive
//! (from the database id), filed under a *space tag* that changes every
//! epoch (a week), so the server cannot link one week's space of a database
//! to the next. The tag is the public key of the space's write key, so a
//! put must be signed by a member: strangers cannot fill a space. Readers
//! fetch by cursor; they open each envelope and hand the change to the
//! engine, which verifies it as from any peer: a buffer can drop or delay
//! changes, never forge them, and a drop shows as a gap in an author's
//! chain (pending changes). docs/SERVICES.md has the threat model, the
//! formats and the wire protocol with test vectors.
//!
//! - [`Server`] serves a store (a local directory, or S3; any number of
//!   servers may front one bucket);
//! - [`Client`] connects to one; [`push`] and [`pull`] sync a replica
//!   through it.

mod client;
mod error;
mod format;
mod server;
mod wire;

pub use crate::client::{
    ANSWER_TIMEOUT, CLOCK_SKEW_MS, Client, Cursors, PUT_BYTES_SOFT, PullReport, PushReport,
    STATE_FILE, gaps, pull, push, pushed_position,
};
pub use crate::error::{EnvelopeFault, Error, Result, WireError};
pub use crate::format::{
    Answer, BUFFER_FORMAT_VERSION, BufferKey, Cursor, ENVELOPE_BYTES_MAX, ENVELOPE_BYTES_MIN,
    ENVELOPE_OVERHEAD_BYTES, EPOCH_MS, EPOCHS_READ, FRAME_BYTES_MAX, GET_ANSWER_BYTES_SOFT,
    GET_ENVELOPES_MAX, MESSAGE_BYTES_MAX, PADDED_BYTES_MAX, PADDED_BYTES_MIN, PUT_ENVELOPES_MAX,
    Refused, Request, Space, Stored, check_envelope, envelope_hash, epoch_of, padded_size,
};
pub use crate::server::{
    CLIENTS_COUNTED_MAX, Counters, IDLE_TIMEOUT, REQUEST_BYTES_IN_FLIGHT_MAX, SPACE_ENVELOPES_MAX,
    SPACES_CACHED_MAX, Server, ServerConfig, now_ms, object_name, open_store,
};

//! Peers public key registry: a phone book of handles for ed25519 keys
//! whose operator can at worst hide a claim, never forge one
//! (docs/SERVICES.md "Public key registry").
//!
//! A handle is claimed by an [`Entry`] its key signs; a rotation or
//! revocation is signed by the current key or by the recovery key named in
//! the claim ([`HandleState::apply`] states the rules). Every accepted entry
//! is a leaf of a transparency log: an RFC 6962 Merkle tree ([`merkle`])
//! whose checkpoints the operator signs as C2SP signed notes ([`note`]).
//! Clients ([`Client`]) verify an inclusion proof for every entry they are
//! shown and a consistency proof between the checkpoints they have seen,
//! keeping the latest in a state file, so a forked or rewritten log, or a
//! split view once two clients compare checkpoints, is caught.
//!
//! - [`Server`] checks, logs and answers over TCP;
//! - [`Client::claim`], [`Client::lookup`], [`Client::rotate`],
//!   [`Client::revoke`] and [`Client::compare`] are the client.

mod client;
mod entry;
mod error;
pub mod merkle;
pub mod note;
mod server;
#[cfg(test)]
mod vectors;
pub mod wire;

pub use crate::client::{
    Client, RegistryState, Resolved, STATE_BYTES_MAX, STATE_VERSION, SeenEntry, State, TIMEOUT_SECS,
};
pub use crate::entry::{
    Discoverability, ENTRIES_PER_HANDLE_MAX, ENTRY_BYTES_MAX, EXPIRY_SECS_MAX, Entry,
    HANDLE_BYTES_MAX, HandleState, Kind, LEAF_COMMITMENT, LEAF_ENTRY, REGISTRY_FORMAT_VERSION,
    SIGNATURE_CONTEXT, Signer, check_handle,
};
pub use crate::error::{Error, Refusal, Result};
pub use crate::server::{
    CONNECTIONS_MAX, IDLE_SECS, LOOKUP_MISSES_PER_WINDOW_MAX, MISS_ADDRESSES_MAX, MISS_WINDOW_SECS,
    REQUESTS_PER_CONNECTION_MAX, Server,
};

/// Seconds since the Unix epoch (what expiry is measured against).
pub fn now_secs() -> u64 {
    server::now_secs()
}

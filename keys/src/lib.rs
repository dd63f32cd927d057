//! Peers managed keys: a user's ed25519 identity kept by a key server
//! behind a user name and password, for people who would rather log in than
//! carry a key file (docs/SERVICES.md "Managed keys").
//!
//! The password never leaves the client: registration and login run OPAQUE
//! (RFC 9807; ristretto255, SHA-512, argon2id), so the server holds only an
//! OPAQUE record, from which it can test a password guess only by running
//! the protocol with itself, one guess per OPRF evaluation; and it can run
//! those only against its own store, which is why the store is a secret.
//! OPAQUE's export key, which the server never sees, seals the identity in
//! an envelope (XChaCha20-Poly1305, the user name and slot as associated
//! data). A second envelope, sealed the same way under a second OPAQUE
//! registration whose password is a random recovery code, opens the same
//! identity when the password is lost.
//!
//! - [`Server`] stores records and answers the protocol over TCP, with
//!   [`Limits`] per account and per address that survive a restart;
//! - [`register`], [`login`], [`LoggedIn::change_password`],
//!   [`LoggedIn::forget`] are the client.

mod client;
mod envelope;
mod error;
mod server;
mod suite;
#[cfg(test)]
mod vectors;
pub mod wire;

pub use crate::client::{LoggedIn, Secret, check_password, login, register};
pub use crate::envelope::{
    ENVELOPE_BYTES, KEYS_FORMAT_VERSION, PASSWORD_CHARS_MIN, RECOVERY_CODE_BYTES, RecoveryCode,
    Slot, USER_BYTES_MAX, check_user, open, seal,
};
pub use crate::error::{Error, Result};
pub use crate::server::{CONNECTIONS_MAX, IDLE_SECS, Limits, REQUESTS_PER_CONNECTION_MAX, Server};
pub use crate::suite::{ARGON2_LANES, ARGON2_MEMORY_KIB, ARGON2_PASSES, ClientConfig, Suite};

//! The OPAQUE cipher suite and the key-stretching parameters.

use opaque_ke::argon2::{Algorithm, Argon2, Params, Version};

/// OPAQUE with ristretto255 (OPRF and key exchange), SHA-512, and argon2id
/// as the key-stretching function (docs/SERVICES.md "Managed keys").
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2_010::Sha512>;
    type Ksf = Argon2<'static>;
}

/// Argon2id memory, KiB: 64 MiB (RFC 9106 section 4, second recommended
/// option).
pub const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub const ARGON2_PASSES: u32 = 3;
/// Argon2id lanes.
pub const ARGON2_LANES: u32 = 4;

/// The client's side of the protocol: which key-stretching parameters it
/// runs. They are part of keys format 1: a record registered with one
/// setting only logs in with the same.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    params: Params,
    /// Seconds to wait for each answer.
    pub timeout_secs: u64,
}

impl Default for ClientConfig {
    /// Argon2id with [`ARGON2_MEMORY_KIB`], [`ARGON2_PASSES`] and
    /// [`ARGON2_LANES`]: what every real client uses.
    fn default() -> ClientConfig {
        ClientConfig {
            params: Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None)
                .expect("the constants are valid argon2 parameters"),
            timeout_secs: 30,
        }
    }
}

impl ClientConfig {
    /// TEST ONLY: argon2id with 64 KiB and one pass, so tests that run many
    /// logins stay fast. A password registered with it is as weak as a
    /// password with no stretching at all; no command uses it.
    pub fn insecure_fast_for_tests() -> ClientConfig {
        ClientConfig {
            params: Params::new(64, 1, 1, None).expect("valid argon2 parameters"),
            timeout_secs: 30,
        }
    }

    /// The key-stretching function for OPAQUE.
    pub(crate) fn ksf(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// (memory KiB, passes, lanes), for reports.
    pub fn argon2_params(&self) -> (u32, u32, u32) {
        (
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost(),
        )
    }
}

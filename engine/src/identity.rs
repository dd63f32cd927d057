//! An author's identity: an ed25519 signing key, saved owner-only.

use std::io::Write;
use std::path::Path;

use ed25519_dalek::SigningKey;

use crate::change::Author;
use crate::error::{Error, Result};

/// A signing key. Its public half is the [`Author`] of every change it signs.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.author())
    }
}

impl Identity {
    /// A new random identity from the operating system's CSPRNG.
    pub fn generate() -> Identity {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system's random source is available");
        Identity {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// An identity from 32 secret bytes (tests and fixtures).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Identity {
        Identity {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32 secret bytes, for a service that seals them for their owner
    /// (peers-keys' envelope); [`Identity::save`] writes the same as hex.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key that names this identity's changes.
    pub fn author(&self) -> Author {
        Author(self.key.verifying_key().to_bytes())
    }

    /// Signs a change body (its `author` must be this identity). Tools and
    /// tests use this to build changes by hand; [`crate::Db`] signs commits.
    ///
    /// # Panics
    /// If `body.author` is not this identity or `body` breaks a structural
    /// rule (docs/FORMAT.md): building such a change is a bug.
    pub fn sign(&self, body: crate::ChangeBody) -> crate::Change {
        crate::Change::sign(body, &self.key)
    }

    /// Signs arbitrary bytes (for protocols: the network handshake signs its
    /// Noise static key). The caller puts a domain tag in `message` so a
    /// signature made for one purpose never verifies for another; verify
    /// with [`crate::verify_ed25519_strict`].
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(message).to_bytes()
    }

    /// X25519 Diffie-Hellman between this identity's key, converted to
    /// X25519 (the clamped scalar ed25519 derives from its secret, as
    /// libsodium's `crypto_sign_ed25519_sk_to_curve25519`), and `public`, an
    /// X25519 public key. Payloads sealed to an [`Author`] (its key converted
    /// with the birational map) are opened with this; the secret never leaves
    /// the identity.
    pub fn agree_x25519(&self, public: &[u8; 32]) -> [u8; 32] {
        curve25519_dalek::MontgomeryPoint(*public)
            .mul_clamped(self.key.to_scalar_bytes())
            .to_bytes()
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Writes the secret key as hex to a new file readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        file.write_all(format!("{}\n", hex::encode(self.key.to_bytes())).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Reads a key written by [`Identity::save`].
    pub fn load(path: &Path) -> Result<Identity> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| Error::BadFile {
            path: path.to_owned(),
            what: "64 hex digits of an ed25519 secret key",
        })?;
        Ok(Identity::from_secret_bytes(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved identity loads back the same, and only its owner may read it.
    #[test]
    fn save_load_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.key");
        let identity = Identity::generate();
        identity.save(&path).expect("saves");
        assert_eq!(
            Identity::load(&path).expect("loads").author(),
            identity.author()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "no access for group or others");
        }
        assert!(identity.save(&path).is_err(), "never overwrites a key");
    }

    /// A signature over bytes verifies under the strict rules, for those
    /// bytes and that key only.
    #[test]
    fn sign_bytes_verifies_strictly() {
        let identity = Identity::from_secret_bytes([3; 32]);
        let signature = identity.sign_bytes(b"domain\0message");
        let key = identity.author().0;
        assert!(
            crate::verify_ed25519_strict(&[(b"domain\0message".as_slice(), &key, &signature)])
                .is_ok()
        );
        assert!(
            crate::verify_ed25519_strict(&[(b"domain\0other".as_slice(), &key, &signature)])
                .is_err()
        );
    }
}

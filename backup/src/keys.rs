//! The backup key's wrapping: one key file per device and one for the
//! printable recovery key, each an age file to one X25519 recipient whose
//! plaintext is `format::encode_key`.

use age::secrecy::ExposeSecret;
use peers_engine::DatabaseId;

use crate::error::{Error, ObjectFault, Result};
use crate::format::{self, BackupKey, KEY_OBJECT_BYTES_MAX, KEYS_DIR};
use crate::store::Store;

/// Most key files a backup may hold (devices plus recovery keys).
pub const KEY_FILES_MAX: usize = 1024;

/// The printable key that restores a backup when every device is lost: an
/// age X25519 identity (`AGE-SECRET-KEY-1…`). The backup key is wrapped to
/// its public half.
#[derive(Clone)]
pub struct RecoveryKey(pub(crate) age::x25519::Identity);

impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RecoveryKey")
            .field(&self.0.to_public().to_string())
            .finish()
    }
}

impl RecoveryKey {
    /// A new random recovery key.
    pub fn generate() -> RecoveryKey {
        RecoveryKey(age::x25519::Identity::generate())
    }

    /// Parses `AGE-SECRET-KEY-1…` (white space around it is ignored).
    pub fn parse(text: &str) -> Result<RecoveryKey> {
        text.trim()
            .parse()
            .map(RecoveryKey)
            .map_err(|reason: &str| Error::BadRecoveryKey {
                reason: reason.to_owned(),
            })
    }

    /// The key as text, to print once and keep offline.
    pub fn to_text(&self) -> String {
        self.0.to_string().expose_secret().to_owned()
    }
}

/// Writes a new key file wrapping `key` to `recipient`; returns its name.
pub(crate) async fn write_key_file(
    store: &Store,
    recipient: &age::x25519::Recipient,
    database: &DatabaseId,
    key: &BackupKey,
) -> Result<String> {
    let plaintext = format::encode_key(database, key);
    let file = age::encrypt(recipient, &plaintext).expect("age encrypts into memory");
    let name = format::random_name(KEYS_DIR);
    store.put(&name, file).await?;
    Ok(name)
}

/// Opens the key file `name` with `identity`: `Ok(None)` if it is wrapped
/// to someone else.
pub(crate) async fn open_key_file(
    store: &Store,
    name: &str,
    identity: &age::x25519::Identity,
) -> Result<Option<(DatabaseId, BackupKey)>> {
    let file = store.get(name, KEY_OBJECT_BYTES_MAX).await?;
    match age::decrypt(identity, &file) {
        Ok(plaintext) => format::decode_key(&plaintext)
            .map(Some)
            .map_err(|fault| Error::object(name, fault)),
        Err(age::DecryptError::NoMatchingKeys) => Ok(None),
        Err(_) => Err(Error::object(name, ObjectFault::Unauthentic)),
    }
}

/// The names of the store's key files.
pub(crate) async fn key_files(store: &Store) -> Result<Vec<String>> {
    let listed = store.list(KEYS_DIR).await?;
    if listed.len() > KEY_FILES_MAX {
        return Err(Error::TooManyObjects {
            dir: KEYS_DIR.to_owned(),
            max: KEY_FILES_MAX,
        });
    }
    Ok(listed.into_iter().map(|object| object.name).collect())
}

/// Finds the key file `identity` opens, trying each; returns its name, the
/// database and the key. A key file that is corrupt for this identity is an
/// error; one wrapped to another recipient is skipped.
pub(crate) async fn find_key(
    store: &Store,
    identity: &age::x25519::Identity,
) -> Result<(String, DatabaseId, BackupKey)> {
    let names = key_files(store).await?;
    for name in &names {
        if let Some((database, key)) = open_key_file(store, name, identity).await? {
            return Ok((name.clone(), database, key));
        }
    }
    Err(Error::NoKey { keys: names.len() })
}

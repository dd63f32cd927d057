//! `peers keys serve`: stores OPAQUE records and sealed envelopes in a
//! RocksDB directory, answers the wire protocol, and rate-limits logins per
//! account and per address with a backoff kept in the same store.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opaque_ke::{
    CredentialFinalization, CredentialRequest, RegistrationRequest, RegistrationUpload,
    ServerLogin, ServerLoginParameters, ServerRegistration, ServerSetup,
};
use rand_core_06::OsRng;
use tokio::net::{TcpListener, TcpStream};

use crate::envelope::{ENVELOPE_BYTES, KEYS_FORMAT_VERSION, Slot, check_user, credential_id};
use crate::error::{Error, Result};
use crate::suite::Suite;
use crate::wire::{self, Direction, Message, Session, code, tag};

/// OPAQUE's context string: both sides bind it into the key exchange.
pub(crate) const CONTEXT: &[u8] = b"peers-keys v1";
/// Messages one connection may send before it is closed.
pub const REQUESTS_PER_CONNECTION_MAX: usize = 16;
/// Connections served at once; more wait for the listener.
pub const CONNECTIONS_MAX: usize = 256;
/// How long the server waits for a client's next message.
pub const IDLE_SECS: u64 = 30;

const SETUP_KEY: &[u8] = b"setup";
const USER_PREFIX: &[u8] = b"user/";
const ACCOUNT_LIMIT_PREFIX: &[u8] = b"limit/user/";
const ADDRESS_LIMIT_PREFIX: &[u8] = b"limit/addr/";

/// How many attempts pass freely, and the backoff after them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Login attempts per account before the backoff starts.
    pub account_free: u32,
    /// Login and registration attempts per client address before the backoff starts.
    pub address_free: u32,
    /// The longest wait, seconds (the backoff doubles from 1 s up to it).
    pub backoff_max_secs: u64,
    /// A counter left alone this long starts again from zero, seconds.
    pub forget_after_secs: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            account_free: 5,
            address_free: 30,
            backoff_max_secs: 3600,
            forget_after_secs: 86_400,
        }
    }
}

/// A key server over its store.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    db: rocksdb::DB,
    setup: ServerSetup<Suite>,
    limits: Limits,
    /// Serializes read-modify-write of records and counters.
    write: Mutex<()>,
}

/// A user's stored record: one OPAQUE registration and one envelope per slot.
struct Record {
    password: (Vec<u8>, Vec<u8>),
    recovery: (Vec<u8>, Vec<u8>),
}

impl Record {
    /// Keys format 1: a [`Message`] body with tag 1 (the version) and four
    /// fields (password registration, password envelope, recovery
    /// registration, recovery envelope).
    fn encode(&self) -> Vec<u8> {
        Message::new(
            KEYS_FORMAT_VERSION,
            vec![
                self.password.0.clone(),
                self.password.1.clone(),
                self.recovery.0.clone(),
                self.recovery.1.clone(),
            ],
        )
        .encode()
    }

    fn decode(bytes: &[u8]) -> Result<Record> {
        let message = Message::decode(bytes).map_err(|_| Error::Corrupt("a user record"))?;
        if message.tag != KEYS_FORMAT_VERSION {
            return Err(Error::Corrupt("a user record of another version"));
        }
        let [a, b, c, d]: [Vec<u8>; 4] = message
            .fields
            .try_into()
            .map_err(|_| Error::Corrupt("a user record"))?;
        Ok(Record {
            password: (a, b),
            recovery: (c, d),
        })
    }

    fn slot(&self, slot: Slot) -> &(Vec<u8>, Vec<u8>) {
        match slot {
            Slot::Password => &self.password,
            Slot::Recovery => &self.recovery,
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn key(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(name);
    key
}

/// What one connection is in the middle of.
enum State {
    Fresh,
    Registering {
        user: String,
    },
    LoggingIn {
        user: String,
        slot: Slot,
        login: Box<ServerLogin<Suite>>,
    },
    LoggedIn {
        user: String,
        session: Session,
    },
    Changing {
        user: String,
        session: Session,
    },
}

/// The outcome of one request: the answer, and whether to go on.
struct Answer {
    message: Message,
    close: bool,
}

impl Answer {
    fn go_on(message: Message) -> Answer {
        Answer {
            message,
            close: false,
        }
    }
    fn close(message: Message) -> Answer {
        Answer {
            message,
            close: true,
        }
    }
}

impl Server {
    /// Opens (or creates) the store in `dir`; a new store gets a new server
    /// key (OPRF seed and key-exchange key pair), kept in the store.
    pub fn open(dir: &Path, limits: Limits) -> Result<Server> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, dir)?;
        let setup = match db.get(SETUP_KEY)? {
            Some(bytes) => ServerSetup::<Suite>::deserialize(&bytes)
                .map_err(|_| Error::Corrupt("the server key"))?,
            None => {
                let setup = ServerSetup::<Suite>::new(&mut OsRng);
                let mut write = rocksdb::WriteOptions::default();
                write.set_sync(true);
                db.put_opt(SETUP_KEY, setup.serialize(), &write)?;
                setup
            }
        };
        Ok(Server {
            inner: Arc::new(Inner {
                db,
                setup,
                limits,
                write: Mutex::new(()),
            }),
        })
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self, listener: TcpListener) -> Result<()> {
        wire::accept_bounded(
            listener,
            CONNECTIONS_MAX,
            "key client",
            move |stream, peer| {
                let server = self.clone();
                async move { server.connection(stream, peer).await }
            },
        )
        .await?;
        Ok(())
    }

    /// Serves one connection: at most [`REQUESTS_PER_CONNECTION_MAX`]
    /// messages, each within [`IDLE_SECS`].
    async fn connection(&self, mut stream: TcpStream, peer: SocketAddr) -> Result<()> {
        stream.set_nodelay(true)?;
        let mut state = State::Fresh;
        for _ in 0..REQUESTS_PER_CONNECTION_MAX {
            let request =
                match tokio::time::timeout(Duration::from_secs(IDLE_SECS), wire::read(&mut stream))
                    .await
                {
                    Ok(Ok(request)) => request,
                    Ok(Err(Error::Io(error)))
                        if error.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        return Ok(());
                    }
                    Ok(Err(error)) => {
                        let _ =
                            wire::write(&mut stream, &Message::error(code::BAD_REQUEST, 0)).await;
                        return Err(error);
                    }
                    Err(_) => return Err(Error::Timeout(IDLE_SECS)),
                };
            let answer = match self.answer(&mut state, request, peer.ip()) {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::warn!(%peer, %error, "key server failed a request");
                    Answer::close(Message::error(code::INTERNAL, 0))
                }
            };
            wire::write(&mut stream, &answer.message).await?;
            if answer.close {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One request in `state`. `Err` is the server's own failure (its
    /// store); a client's mistake is an `ERROR` answer.
    fn answer(&self, state: &mut State, request: Message, address: IpAddr) -> Result<Answer> {
        let bad = || Ok(Answer::close(Message::error(code::BAD_REQUEST, 0)));
        let current = std::mem::replace(state, State::Fresh);
        match (request.tag, current) {
            (tag::REGISTER_START, State::Fresh) => {
                let Ok([user, password, recovery]) = <[Vec<u8>; 3]>::try_from(request.fields)
                else {
                    return bad();
                };
                let Some(user) = String::from_utf8(user)
                    .ok()
                    .filter(|u| check_user(u).is_ok())
                else {
                    return bad();
                };
                if let Err(retry) = self.count_attempt(ADDRESS_LIMIT_PREFIX, &address_key(address))
                {
                    return Ok(Answer::close(Message::error(code::LIMITED, retry)));
                }
                if self.record(&user)?.is_some() {
                    return Ok(Answer::close(Message::error(code::TAKEN, 0)));
                }
                let mut responses = Vec::new();
                for (request, slot) in [(password, Slot::Password), (recovery, Slot::Recovery)] {
                    let Ok(request) = RegistrationRequest::<Suite>::deserialize(&request) else {
                        return bad();
                    };
                    let Ok(start) = ServerRegistration::<Suite>::start(
                        &self.inner.setup,
                        request,
                        &credential_id(&user, slot),
                    ) else {
                        return bad();
                    };
                    responses.push(start.message.serialize().to_vec());
                }
                *state = State::Registering { user };
                Ok(Answer::go_on(Message::new(
                    tag::REGISTERED_START,
                    responses,
                )))
            }
            (tag::REGISTER_FINISH, State::Registering { user }) => {
                let Ok([password, password_envelope, recovery, recovery_envelope]) =
                    <[Vec<u8>; 4]>::try_from(request.fields)
                else {
                    return bad();
                };
                let (Some(password), Some(recovery)) = (upload(&password), upload(&recovery))
                else {
                    return bad();
                };
                if !envelope_fits(&password_envelope, Slot::Password)
                    || !envelope_fits(&recovery_envelope, Slot::Recovery)
                {
                    return bad();
                }
                let record = Record {
                    password: (password, password_envelope),
                    recovery: (recovery, recovery_envelope),
                };
                let _guard = self.lock();
                if self.record(&user)?.is_some() {
                    return Ok(Answer::close(Message::error(code::TAKEN, 0)));
                }
                self.put(&key(USER_PREFIX, user.as_bytes()), &record.encode())?;
                tracing::info!(%user, "registered");
                Ok(Answer::go_on(Message::new(tag::REGISTERED, vec![])))
            }
            (tag::LOGIN_START, State::Fresh) => {
                let Ok([user, slot, request]) = <[Vec<u8>; 3]>::try_from(request.fields) else {
                    return bad();
                };
                let Some(user) = String::from_utf8(user)
                    .ok()
                    .filter(|u| check_user(u).is_ok())
                else {
                    return bad();
                };
                let Some(slot) = slot
                    .first()
                    .filter(|_| slot.len() == 1)
                    .and_then(|byte| Slot::from_byte(*byte).ok())
                else {
                    return bad();
                };
                let Ok(request) = CredentialRequest::<Suite>::deserialize(&request) else {
                    return bad();
                };
                // Counted before the answer: the answer alone lets the client
                // test one password guess.
                if let Err(retry) = self.count_attempt(ADDRESS_LIMIT_PREFIX, &address_key(address))
                {
                    return Ok(Answer::close(Message::error(code::LIMITED, retry)));
                }
                if let Err(retry) = self.count_attempt(ACCOUNT_LIMIT_PREFIX, user.as_bytes()) {
                    return Ok(Answer::close(Message::error(code::LIMITED, retry)));
                }
                // No record: OPAQUE answers from a fake one, indistinguishable
                // (RFC 9807 section 10.9), and the login fails at the finish.
                let file = match self.record(&user)? {
                    Some(record) => {
                        ServerRegistration::<Suite>::deserialize(&record.slot(slot).0).ok()
                    }
                    None => None,
                };
                let Ok(start) = ServerLogin::start(
                    &mut OsRng,
                    &self.inner.setup,
                    file,
                    request,
                    &credential_id(&user, slot),
                    parameters(),
                ) else {
                    return bad();
                };
                *state = State::LoggingIn {
                    user,
                    slot,
                    login: Box::new(start.state),
                };
                Ok(Answer::go_on(Message::new(
                    tag::CHALLENGE,
                    vec![start.message.serialize().to_vec()],
                )))
            }
            (tag::LOGIN_FINISH, State::LoggingIn { user, slot, login }) => {
                let Ok([finalization]) = <[Vec<u8>; 1]>::try_from(request.fields) else {
                    return bad();
                };
                let finished = CredentialFinalization::<Suite>::deserialize(&finalization)
                    .ok()
                    .and_then(|finalization| login.finish(finalization, parameters()).ok());
                let (Some(finished), Some(record)) = (finished, self.record(&user)?) else {
                    return Ok(Answer::close(Message::error(code::LOGIN_FAILED, 0)));
                };
                self.clear_attempts(ACCOUNT_LIMIT_PREFIX, user.as_bytes())?;
                let mut session = Session::new(&finished.session_key, Direction::ToClient);
                let answer = session.seal(Message::new(
                    tag::ENVELOPE,
                    vec![record.slot(slot).1.clone()],
                ));
                *state = State::LoggedIn { user, session };
                Ok(Answer::go_on(answer))
            }
            (tag::PASSWORD_START, State::LoggedIn { user, mut session }) => {
                let Ok(request) = session.open(request) else {
                    return bad();
                };
                let Ok([request]) = <[Vec<u8>; 1]>::try_from(request.fields) else {
                    return bad();
                };
                let Ok(request) = RegistrationRequest::<Suite>::deserialize(&request) else {
                    return bad();
                };
                let Ok(start) = ServerRegistration::<Suite>::start(
                    &self.inner.setup,
                    request,
                    &credential_id(&user, Slot::Password),
                ) else {
                    return bad();
                };
                let answer = session.seal(Message::new(
                    tag::PASSWORD_RESPONSE,
                    vec![start.message.serialize().to_vec()],
                ));
                *state = State::Changing { user, session };
                Ok(Answer::go_on(answer))
            }
            (tag::PASSWORD_FINISH, State::Changing { user, mut session }) => {
                let Ok(request) = session.open(request) else {
                    return bad();
                };
                let Ok([password, envelope]) = <[Vec<u8>; 2]>::try_from(request.fields) else {
                    return bad();
                };
                let Some(password) = upload(&password) else {
                    return bad();
                };
                if !envelope_fits(&envelope, Slot::Password) {
                    return bad();
                }
                let _guard = self.lock();
                let Some(mut record) = self.record(&user)? else {
                    return Ok(Answer::close(Message::error(code::LOGIN_FAILED, 0)));
                };
                record.password = (password, envelope);
                self.put(&key(USER_PREFIX, user.as_bytes()), &record.encode())?;
                tracing::info!(%user, "changed the password");
                let answer = session.seal(Message::new(tag::DONE, vec![]));
                *state = State::LoggedIn { user, session };
                Ok(Answer::go_on(answer))
            }
            (tag::FORGET, State::LoggedIn { user, mut session }) => {
                let Ok(request) = session.open(request) else {
                    return bad();
                };
                if !request.fields.is_empty() {
                    return bad();
                }
                let _guard = self.lock();
                let mut write = rocksdb::WriteOptions::default();
                write.set_sync(true);
                self.inner
                    .db
                    .delete_opt(key(USER_PREFIX, user.as_bytes()), &write)?;
                tracing::info!(%user, "forgot the user");
                Ok(Answer::close(session.seal(Message::new(tag::DONE, vec![]))))
            }
            _ => bad(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, user: &str) -> Result<Option<Record>> {
        self.inner
            .db
            .get(key(USER_PREFIX, user.as_bytes()))?
            .map(|bytes| Record::decode(&bytes))
            .transpose()
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        Ok(self.inner.db.put_opt(key, value, &write)?)
    }

    /// Counts one attempt under `name`, or says how many seconds to wait.
    /// The counter is in the store, so a restart does not reset it.
    fn count_attempt(&self, prefix: &[u8], name: &[u8]) -> std::result::Result<(), u32> {
        let limits = self.inner.limits;
        let free = if prefix == ACCOUNT_LIMIT_PREFIX {
            limits.account_free
        } else {
            limits.address_free
        };
        let _guard = self.lock();
        let key = key(prefix, name);
        let now = now_ms();
        let (mut failures, last) = match self.inner.db.get(&key) {
            Ok(Some(bytes)) => decode_counter(&bytes),
            Ok(None) => (0, 0),
            Err(error) => {
                // Fail closed: without the counter, no attempt.
                tracing::warn!(%error, "reading a rate-limit counter");
                return Err(1);
            }
        };
        if now.saturating_sub(last) > limits.forget_after_secs.saturating_mul(1000) {
            failures = 0;
        }
        if failures >= free {
            let exponent = (failures - free).min(32);
            let wait_ms = (1u64 << exponent)
                .min(limits.backoff_max_secs)
                .saturating_mul(1000);
            let allowed_at = last.saturating_add(wait_ms);
            if now < allowed_at {
                let secs = (allowed_at - now).div_ceil(1000);
                return Err(u32::try_from(secs).unwrap_or(u32::MAX));
            }
        }
        let mut value = failures.saturating_add(1).to_le_bytes().to_vec();
        value.extend_from_slice(&now.to_le_bytes());
        if let Err(error) = self.put(&key, &value) {
            tracing::warn!(%error, "writing a rate-limit counter");
            return Err(1);
        }
        Ok(())
    }

    fn clear_attempts(&self, prefix: &[u8], name: &[u8]) -> Result<()> {
        let _guard = self.lock();
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        Ok(self.inner.db.delete_opt(key(prefix, name), &write)?)
    }
}

/// A rate-limit counter: failures (u32 LE) then the last attempt (u64 LE,
/// ms since the epoch). A damaged one counts as many failures just now.
fn decode_counter(bytes: &[u8]) -> (u32, u64) {
    match (bytes.get(..4), bytes.get(4..12)) {
        (Some(failures), Some(last)) if bytes.len() == 12 => (
            u32::from_le_bytes(failures.try_into().unwrap_or([0xff; 4])),
            u64::from_le_bytes(last.try_into().unwrap_or([0; 8])),
        ),
        _ => (u32::MAX, now_ms()),
    }
}

/// Addresses are limited per IPv4 address and per IPv6 /64 (one host
/// usually holds a whole /64).
fn address_key(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().get(..8).unwrap_or_default().to_vec(),
        },
    }
}

fn upload(bytes: &[u8]) -> Option<Vec<u8>> {
    let upload = RegistrationUpload::<Suite>::deserialize(bytes).ok()?;
    Some(ServerRegistration::finish(upload).serialize().to_vec())
}

fn envelope_fits(envelope: &[u8], slot: Slot) -> bool {
    envelope.len() == ENVELOPE_BYTES
        && envelope.first() == Some(&KEYS_FORMAT_VERSION)
        && envelope.get(1) == Some(&(slot as u8))
}

pub(crate) fn parameters() -> ServerLoginParameters<'static, 'static> {
    ServerLoginParameters {
        context: Some(CONTEXT),
        identifiers: opaque_ke::Identifiers::default(),
    }
}

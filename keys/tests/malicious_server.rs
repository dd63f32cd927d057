//! A malicious key server: the client trusts nothing it sends.
//!
//! On the wire, a proxy over the real server flips any byte of any answer,
//! replays an answer of an earlier session (its own or another user's), or
//! plays the login as another user with the same password. In the store,
//! a server whose records were altered under it (so it serves them with a
//! valid session MAC, as a malicious server would) hands out a damaged
//! envelope, another user's, its recovery envelope for the password, an
//! old envelope or registration after a password change, or another user's
//! whole record. Every time `login` fails with a typed error and yields no
//! key; the one exception is a whole old record, which revives the old
//! password and yields the user's own identity: never another key.

mod common;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use common::{fast, runtime, start};
use peers_engine::Identity;
use peers_keys::wire::Message;
use peers_keys::{ENVELOPE_BYTES, Error, KEYS_FORMAT_VERSION, Limits, Secret, login, register};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASSWORD: &str = "alice's password";
const NEW_PASSWORD: &str = "alice's new password";

/// Limits no test here reaches (each altered login counts as a failure).
fn unlimited() -> Limits {
    Limits {
        account_free: u32::MAX,
        address_free: u32::MAX,
        ..Limits::default()
    }
}

async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(length) as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn write_frame(stream: &mut TcpStream, body: &[u8]) -> Option<()> {
    let length = u32::try_from(body.len()).ok()?.to_le_bytes();
    stream.write_all(&length).await.ok()?;
    stream.write_all(body).await.ok()?;
    Some(())
}

/// What a proxy does to a frame body on its way: given the connection's
/// number (from 0, in the order they were accepted) and the message's on
/// it (from 0; a request and its answer share one).
type Alter = Arc<dyn Fn(usize, usize, &mut Vec<u8>) + Send + Sync>;

fn honest() -> Alter {
    Arc::new(|_: usize, _: usize, _: &mut Vec<u8>| {})
}

/// A proxy in front of the key server at `upstream` that passes each
/// request through `requests` and each answer through `answers`; returns
/// its address. It runs until the runtime stops.
async fn proxy(upstream: &str, requests: Alter, answers: Alter) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address").to_string();
    let upstream = upstream.to_owned();
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let mut server = TcpStream::connect(&upstream).await.expect("the server");
            let (requests, answers) = (Arc::clone(&requests), Arc::clone(&answers));
            tokio::spawn(async move {
                for index in 0.. {
                    let Some(mut request) = read_frame(&mut client).await else {
                        return;
                    };
                    requests(connection, index, &mut request);
                    write_frame(&mut server, &request).await;
                    let Some(mut answer) = read_frame(&mut server).await else {
                        return;
                    };
                    answers(connection, index, &mut answer);
                    write_frame(&mut client, &answer).await;
                }
            });
        }
    });
    address
}

async fn log_in(address: &str, user: &str, password: &str) -> Result<Identity, Error> {
    login(address, &fast(), user, Secret::Password(password))
        .await
        .map(|session| session.identity)
}

/// Every byte of both answers of a login (the OPAQUE challenge, then the
/// envelope in the session), flipped in turn: never a key. A flipped
/// challenge is a wrong OPAQUE message: it fails as a wrong password does
/// (OPAQUE checks the server's answer with the password, so the two cannot
/// be told apart), or, if it is not a valid OPAQUE message at all, says so
/// (`BadAnswer`, not OPAQUE's "Internal error encountered"); a flipped
/// envelope message fails its session MAC.
#[test]
fn a_flipped_byte_anywhere_in_the_answers_yields_no_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (server, _task) = start(dir.path(), unlimited()).await;
        let identity = Identity::generate();
        register(&server, &fast(), "alice", PASSWORD, &identity)
            .await
            .expect("registers");
        // The honest answers' sizes.
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let watching = proxy(
            &server,
            honest(),
            Arc::new(move |_: usize, index: usize, body: &mut Vec<u8>| {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((index, body.len()));
            }),
        )
        .await;
        let through = log_in(&watching, "alice", PASSWORD)
            .await
            .expect("an honest proxy changes nothing");
        assert_eq!(through.author(), identity.author());
        let sizes = sizes.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(sizes.len(), 2, "a challenge and an envelope: {sizes:?}");
        for (message, length) in sizes {
            // Connection n flips byte n of the answer.
            let flipping = proxy(
                &server,
                honest(),
                Arc::new(move |connection: usize, index: usize, body: &mut Vec<u8>| {
                    if index == message {
                        body[connection] ^= 0x01;
                    }
                }),
            )
            .await;
            let mut kinds = std::collections::BTreeMap::new();
            for position in 0..length {
                let error = log_in(&flipping, "alice", PASSWORD)
                    .await
                    .expect_err("an altered answer yields no key");
                let kind = match (&error, message) {
                    (Error::LoginFailed, 0) => "login failed",
                    (Error::BadAnswer { what, .. }, 0) if *what == "login challenge" => {
                        "not a valid OPAQUE message"
                    }
                    (Error::Unauthenticated, 1) => "does not authenticate",
                    (Error::Protocol(_), _) if position < 4 || message == 1 => "protocol",
                    _ => panic!("answer {message}, byte {position}: {error:?}"),
                };
                kinds.entry(kind).or_insert((0, error.to_string())).0 += 1;
            }
            eprintln!("answer {message}, {length} bytes flipped: {kinds:?}");
        }
        // The honest path still works: nothing was locked or changed.
        let again = log_in(&server, "alice", PASSWORD).await.expect("logs in");
        assert_eq!(again.author(), identity.author());
    });
}

/// Answers replayed from another session, by a proxy that records the
/// answers of the first connection and serves them on the next: the
/// challenge of an earlier login (the user's own, or another user's) is a
/// wrong OPAQUE message; the envelope message of an earlier login does not
/// authenticate in this session.
#[test]
fn an_answer_replayed_from_another_session_yields_no_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (server, _task) = start(dir.path(), unlimited()).await;
        register(&server, &fast(), "alice", PASSWORD, &Identity::generate())
            .await
            .expect("registers");
        register(
            &server,
            &fast(),
            "bob",
            "bob's password",
            &Identity::generate(),
        )
        .await
        .expect("registers");
        for (first_user, first_password) in [("alice", PASSWORD), ("bob", "bob's password")] {
            for message in [0usize, 1] {
                let recorded = Arc::new(Mutex::new(Vec::new()));
                let replaying = proxy(
                    &server,
                    honest(),
                    Arc::new(move |connection: usize, index: usize, body: &mut Vec<u8>| {
                        let mut recorded = recorded.lock().unwrap_or_else(PoisonError::into_inner);
                        if connection == 0 {
                            recorded.push(body.clone());
                        } else if index == message {
                            body.clone_from(&recorded[message]);
                        }
                    }),
                )
                .await;
                log_in(&replaying, first_user, first_password)
                    .await
                    .expect("the first login goes through");
                let error = log_in(&replaying, "alice", PASSWORD)
                    .await
                    .expect_err("a replayed answer");
                match message {
                    0 => assert!(
                        matches!(error, Error::LoginFailed),
                        "{first_user}'s challenge: {error:?}"
                    ),
                    _ => assert!(
                        matches!(error, Error::Unauthenticated),
                        "{first_user}'s envelope: {error:?}"
                    ),
                }
            }
        }
    });
}

/// A server that plays the whole login as another user who has the same
/// password (here: a proxy that renames the request): OPAQUE succeeds, the
/// session MAC verifies, and the envelope is that user's, sealed under the
/// key this password yields for them. Only the envelope's associated data
/// (the user name) catches it: it does not open as alice's.
#[test]
fn a_login_played_as_another_user_yields_no_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (server, _task) = start(dir.path(), unlimited()).await;
        let alice = Identity::generate();
        let bob = Identity::generate();
        register(&server, &fast(), "alice", PASSWORD, &alice)
            .await
            .expect("registers");
        register(&server, &fast(), "bob", PASSWORD, &bob)
            .await
            .expect("registers");
        let renaming = proxy(
            &server,
            Arc::new(|_: usize, index: usize, body: &mut Vec<u8>| {
                if index == 0 {
                    let mut request = Message::decode(body).expect("a login start");
                    assert_eq!(request.fields[0], b"alice");
                    request.fields[0] = b"bob".to_vec();
                    *body = request.encode();
                }
            }),
            honest(),
        )
        .await;
        let error = log_in(&renaming, "alice", PASSWORD)
            .await
            .expect_err("bob's envelope is not alice's");
        assert!(matches!(error, Error::EnvelopeDoesNotOpen), "{error:?}");
        // Through the real server, each gets their own.
        assert_eq!(
            log_in(&server, "bob", PASSWORD)
                .await
                .expect("bob")
                .author(),
            bob.author()
        );
        assert_eq!(
            log_in(&server, "alice", PASSWORD)
                .await
                .expect("alice")
                .author(),
            alice.author()
        );
    });
}

/// Runs `f` with a real server over `dir` on a fresh runtime, then stops
/// it (all its tasks), so the store can be opened and altered.
fn with_server<F, Fut, T>(dir: &Path, f: F) -> T
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = T>,
{
    runtime().block_on(async {
        let (address, _task) = start(dir, unlimited()).await;
        f(address).await
    })
}

/// A user's stored record's fields: password registration, password
/// envelope, recovery registration, recovery envelope.
fn record(dir: &Path, user: &str) -> Vec<Vec<u8>> {
    let db = rocksdb::DB::open_default(dir).expect("opens the store");
    let bytes = db
        .get(format!("user/{user}"))
        .expect("reads")
        .expect("the user's record");
    let record = Message::decode(&bytes).expect("a record");
    assert_eq!(record.tag, KEYS_FORMAT_VERSION);
    record.fields
}

fn set_record(dir: &Path, user: &str, fields: Vec<Vec<u8>>) {
    let db = rocksdb::DB::open_default(dir).expect("opens the store");
    db.put(
        format!("user/{user}"),
        Message::new(KEYS_FORMAT_VERSION, fields).encode(),
    )
    .expect("writes");
}

/// A server that serves what it likes from its store, with a valid session
/// MAC: a damaged envelope (every byte), another user's, the recovery
/// envelope for the password, the envelope or the registration from before
/// a password change, another user's whole record. `login` fails with a
/// typed error each time; a whole old record only brings back the old
/// password, with the user's own identity.
#[test]
fn a_server_that_alters_its_store_yields_no_wrong_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = Identity::generate();
    let bob = Identity::generate();
    let (alice_key, bob_key) = (&alice, &bob);
    with_server(dir.path(), |server| async move {
        register(&server, &fast(), "alice", PASSWORD, alice_key)
            .await
            .expect("registers");
        register(&server, &fast(), "bob", PASSWORD, bob_key)
            .await
            .expect("registers");
    });
    let honest_record = record(dir.path(), "alice");
    let try_login = |password: &'static str| {
        with_server(dir.path(), |server| async move {
            log_in(&server, "alice", password).await
        })
    };

    // A flipped byte of the envelope, at every position.
    for position in 0..ENVELOPE_BYTES {
        let mut fields = honest_record.clone();
        fields[1][position] ^= 0x01;
        set_record(dir.path(), "alice", fields);
        let error = try_login(PASSWORD).expect_err("a damaged envelope");
        if position < 2 {
            assert!(
                matches!(error, Error::BadEnvelope(_)),
                "byte {position} (version, slot): {error:?}"
            );
        } else {
            assert!(
                matches!(error, Error::EnvelopeDoesNotOpen),
                "byte {position}: {error:?}"
            );
        }
    }
    // Bob's envelope (the same password: still not alice's key).
    let bob_record = record(dir.path(), "bob");
    let mut fields = honest_record.clone();
    fields[1].clone_from(&bob_record[1]);
    set_record(dir.path(), "alice", fields);
    assert!(matches!(
        try_login(PASSWORD),
        Err(Error::EnvelopeDoesNotOpen)
    ));
    // Bob's whole record under alice's name: OPAQUE fails (the server
    // derives alice's OPRF key, which bob's registration did not use).
    set_record(dir.path(), "alice", bob_record.clone());
    assert!(matches!(try_login(PASSWORD), Err(Error::LoginFailed)));
    // Alice's recovery envelope in her password slot, as it is and with
    // its slot byte rewritten.
    let mut fields = honest_record.clone();
    fields[1].clone_from(&honest_record[3]);
    set_record(dir.path(), "alice", fields.clone());
    assert!(matches!(try_login(PASSWORD), Err(Error::BadEnvelope(_))));
    fields[1][1] = 1;
    set_record(dir.path(), "alice", fields);
    assert!(matches!(
        try_login(PASSWORD),
        Err(Error::EnvelopeDoesNotOpen)
    ));

    // A password change, then the old envelope, the old registration, or
    // the whole old record served again.
    set_record(dir.path(), "alice", honest_record.clone());
    with_server(dir.path(), |server| async move {
        let mut session = login(&server, &fast(), "alice", Secret::Password(PASSWORD))
            .await
            .expect("logs in");
        session
            .change_password(NEW_PASSWORD)
            .await
            .expect("changes the password");
    });
    let changed = record(dir.path(), "alice");
    assert_ne!(changed[1], honest_record[1], "a new envelope");
    let mut fields = changed.clone();
    fields[1].clone_from(&honest_record[1]);
    set_record(dir.path(), "alice", fields);
    assert!(matches!(
        try_login(NEW_PASSWORD),
        Err(Error::EnvelopeDoesNotOpen)
    ));
    let mut fields = changed.clone();
    fields[0].clone_from(&honest_record[0]);
    set_record(dir.path(), "alice", fields);
    assert!(matches!(
        try_login(PASSWORD),
        Err(Error::EnvelopeDoesNotOpen)
    ));
    assert!(matches!(try_login(NEW_PASSWORD), Err(Error::LoginFailed)));
    set_record(dir.path(), "alice", honest_record.clone());
    assert!(matches!(try_login(NEW_PASSWORD), Err(Error::LoginFailed)));
    assert_eq!(
        try_login(PASSWORD).expect("the old password").author(),
        alice.author(),
        "a rolled-back record yields alice's own identity"
    );
    // Served honestly again: the new password.
    set_record(dir.path(), "alice", changed);
    assert_eq!(
        try_login(NEW_PASSWORD).expect("logs in").author(),
        alice.author()
    );
}

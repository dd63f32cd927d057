//! The managed-key service end to end over TCP, in one process: the story
//! (register, log in, change the password, recover, forget), wrong
//! passwords, rate limits that survive a restart, and what a dump of the
//! server's store reveals.

mod common;

use common::{fast, runtime, start};
use peers_engine::Identity;
use peers_keys::{ENVELOPE_BYTES, Error, Limits, RecoveryCode, Secret, Slot, login, register};

/// Register, log in elsewhere, change the password, lose it and recover
/// with the code, then forget: the same identity throughout, and the old
/// secrets stop working.
#[test]
fn the_whole_story() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (address, _server) = start(dir.path(), Limits::default()).await;
        let identity = Identity::generate();
        let code = register(&address, &fast(), "alice", "correct horse", &identity)
            .await
            .expect("registers");
        assert!(matches!(
            register(
                &address,
                &fast(),
                "alice",
                "another one",
                &Identity::generate()
            )
            .await,
            Err(Error::Taken(_))
        ));

        let mut session = login(
            &address,
            &fast(),
            "alice",
            Secret::Password("correct horse"),
        )
        .await
        .expect("logs in");
        assert_eq!(session.identity.author(), identity.author());
        session
            .change_password("battery staple")
            .await
            .expect("changes the password");
        drop(session);
        assert!(matches!(
            login(
                &address,
                &fast(),
                "alice",
                Secret::Password("correct horse")
            )
            .await,
            Err(Error::LoginFailed)
        ));
        let session = login(
            &address,
            &fast(),
            "alice",
            Secret::Password("battery staple"),
        )
        .await
        .expect("the new password logs in");
        assert_eq!(session.identity.author(), identity.author());
        drop(session);

        // The password is lost: the recovery code opens the identity and
        // sets a new password.
        let printed = RecoveryCode::parse(&code.to_string()).expect("the printed code reads back");
        let mut session = login(&address, &fast(), "alice", Secret::Recovery(&printed))
            .await
            .expect("the recovery code logs in");
        assert_eq!(session.identity.author(), identity.author());
        assert_eq!(session.slot, Slot::Recovery);
        session
            .change_password("third password")
            .await
            .expect("sets a new password");
        drop(session);
        let session = login(
            &address,
            &fast(),
            "alice",
            Secret::Password("third password"),
        )
        .await
        .expect("logs in");
        session.forget().await.expect("forgets");
        for secret in [Secret::Password("third password"), Secret::Recovery(&code)] {
            assert!(matches!(
                login(&address, &fast(), "alice", secret).await,
                Err(Error::LoginFailed)
            ));
        }
        // The name is free again.
        register(
            &address,
            &fast(),
            "alice",
            "a new alice",
            &Identity::generate(),
        )
        .await
        .expect("registers again");
    });
}

/// A wrong password, a wrong recovery code and an unknown user fail alike.
#[test]
fn failed_logins_say_nothing_about_the_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (address, _server) = start(dir.path(), Limits::default()).await;
        register(
            &address,
            &fast(),
            "bob",
            "bob's password",
            &Identity::generate(),
        )
        .await
        .expect("registers");
        let wrong_code = RecoveryCode::generate();
        for (user, secret) in [
            ("bob", Secret::Password("not bob's password")),
            ("bob", Secret::Recovery(&wrong_code)),
            ("nobody", Secret::Password("bob's password")),
            ("nobody", Secret::Recovery(&wrong_code)),
        ] {
            let error = login(&address, &fast(), user, secret)
                .await
                .expect_err("fails");
            assert!(matches!(error, Error::LoginFailed), "{user}: {error}");
            assert_eq!(
                error.to_string(),
                "login failed: wrong user name or password"
            );
        }
        assert!(matches!(
            register(&address, &fast(), "carol", "short", &Identity::generate()).await,
            Err(Error::WeakPassword(_))
        ));
    });
}

/// Guessing hits the per-account limit (for a user that exists and one that
/// does not, alike), a restart keeps it, and the right password waits too;
/// guessing across many accounts hits the per-address limit.
#[test]
fn brute_force_hits_the_limits_and_they_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        account_free: 3,
        address_free: 12,
        ..Limits::default()
    };
    runtime().block_on(async {
        let (address, server) = start(dir.path(), limits).await;
        register(&address, &fast(), "dave", "dave's password", &Identity::generate())
            .await
            .expect("registers");
        for user in ["dave", "ghost"] {
            for guess in 0..3 {
                let error = login(&address, &fast(), user, Secret::Password(&format!("guess {guess}!")))
                    .await
                    .expect_err("a wrong guess");
                assert!(matches!(error, Error::LoginFailed), "{user} {guess}: {error}");
            }
            let error = login(&address, &fast(), user, Secret::Password("guess 3!"))
                .await
                .expect_err("limited");
            assert!(
                matches!(error, Error::Limited { retry_after_secs } if (1..=2).contains(&retry_after_secs)),
                "{user}: {error}"
            );
        }
        // Even the right password waits now.
        assert!(matches!(
            login(&address, &fast(), "dave", Secret::Password("dave's password")).await,
            Err(Error::Limited { .. })
        ));
        server.abort();
        let _ = server.await;
    });
    // A restart on the same store: still limited.
    runtime().block_on(async {
        let (address, _server) = start(dir.path(), limits).await;
        assert!(matches!(
            login(
                &address,
                &fast(),
                "dave",
                Secret::Password("dave's password")
            )
            .await,
            Err(Error::Limited { .. })
        ));
        // After the backoff, the right password logs in and clears the
        // account's count.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        login(
            &address,
            &fast(),
            "dave",
            Secret::Password("dave's password"),
        )
        .await
        .expect("logs in after the backoff");
        // Guessing across accounts: the address runs out (12 attempts:
        // 1 registration, 8 guesses, 1 login so far, 1 after the restart).
        let mut limited = false;
        for user in 0..4 {
            match login(
                &address,
                &fast(),
                &format!("user{user}"),
                Secret::Password("guessing!"),
            )
            .await
            {
                Err(Error::LoginFailed) => {}
                Err(Error::Limited { .. }) => {
                    limited = true;
                    break;
                }
                other => panic!("user{user}: {other:?}"),
            }
        }
        assert!(limited, "the address limit is reached");
    });
}

/// Everything the server stores, from its files on disk and from its
/// records: the identity's secret is in none of it, and no 32- or 64-byte
/// string the server holds opens an envelope.
#[test]
fn a_dump_of_the_store_does_not_reveal_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = Identity::generate();
    runtime().block_on(async {
        let (address, server) = start(dir.path(), Limits::default()).await;
        register(&address, &fast(), "erin", "erin's password", &identity)
            .await
            .expect("registers");
        let mut session = login(
            &address,
            &fast(),
            "erin",
            Secret::Password("erin's password"),
        )
        .await
        .expect("logs in");
        session
            .change_password("erin's new password")
            .await
            .expect("changes");
        drop(session);
        server.abort();
        let _ = server.await;
    });
    let secret = identity.secret_bytes();
    let secret_hex = hex::encode(secret);
    // The files, byte for byte (RocksDB's log and tables).
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).expect("lists") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("reads");
        files += 1;
        assert!(!contains(&bytes, &secret), "the secret in a file");
        assert!(
            !contains(&bytes, secret_hex.as_bytes()),
            "the secret's hex in a file"
        );
    }
    assert!(files > 0);
    // The records, and every window of them as a key.
    let db = rocksdb::DB::open_default(dir.path()).expect("opens the dump");
    let mut dump = Vec::new();
    let mut envelopes = Vec::new();
    for item in db.iterator(rocksdb::IteratorMode::Start) {
        let (key, value) = item.expect("reads");
        if key.starts_with(b"user/") {
            let record = peers_keys::wire::Message::decode(&value).expect("a record");
            envelopes.push((Slot::Password, record.fields[1].clone()));
            envelopes.push((Slot::Recovery, record.fields[3].clone()));
        }
        dump.extend_from_slice(&key);
        dump.extend_from_slice(&value);
    }
    assert_eq!(envelopes.len(), 2);
    assert!(!contains(&dump, &secret));
    let mut tried = 0;
    for (slot, envelope) in &envelopes {
        assert_eq!(envelope.len(), ENVELOPE_BYTES);
        for width in [32, 64] {
            for window in dump.windows(width) {
                assert!(peers_keys::open(window, "erin", *slot, envelope).is_err());
                tried += 1;
            }
        }
    }
    assert!(tried > 1000, "{tried} keys tried");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

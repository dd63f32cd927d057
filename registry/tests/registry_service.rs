//! The key registry end to end over TCP, in one process: the story (claim,
//! lookup, rotate, lookup gives the new key, revoke), forged claims,
//! rotations by someone else, operators that drop an entry, rewrite
//! history, roll back or serve a split view (all caught by a client's
//! proofs), a checkpoint that survives a restart, and what the log and the
//! server reveal of lookup-only and private handles.

use std::path::{Path, PathBuf};

use peers_engine::Identity;
use peers_registry::merkle::{Tree, encode_proof};
use peers_registry::note::{Checkpoint, origin_for, verifier_key};
use peers_registry::wire::{self, Message, tag};
use peers_registry::{
    Client, Discoverability, Entry, Error, LEAF_COMMITMENT, Refusal, Server, Signer, State,
    now_secs,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts a registry over `dir` on `address` ("127.0.0.1:0": a free port);
/// returns its address and task.
async fn start(dir: &Path, address: &str) -> (String, tokio::task::JoinHandle<()>) {
    let server = open_retrying(dir);
    let listener = tokio::net::TcpListener::bind(address).await.expect("binds");
    let address = listener.local_addr().expect("address").to_string();
    let task = tokio::spawn(async move {
        let _ = server.serve(listener).await;
    });
    (address, task)
}

/// Opens the registry in `dir`, waiting for a stopped server's last
/// connections to let go of its store.
fn open_retrying(dir: &Path) -> Server {
    for _ in 0..100 {
        match Server::open(dir) {
            Ok(server) => return server,
            Err(Error::Store(_)) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(error) => panic!("opens the registry: {error}"),
        }
    }
    panic!("the registry's store stayed locked");
}

async fn stop(task: tokio::task::JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

fn in_a_year() -> u64 {
    now_secs() + 365 * 86_400
}

fn key(identity: &Identity) -> [u8; 32] {
    identity.author().0
}

/// A second registry directory with the same operator key: what a
/// dishonest operator uses to show another history under its signature.
fn evil_twin(honest: &Path, evil: &Path) {
    std::fs::create_dir_all(evil).expect("evil dir");
    std::fs::copy(honest.join("operator.key"), evil.join("operator.key")).expect("copies the key");
}

fn state_file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name).join("registry-state.json")
}

/// Claim, look up (from another client), rotate, look up (the new key),
/// revoke (the handle is then revoked for every client, and stays so).
#[test]
fn the_whole_story() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (address, _server) = start(&dir.path().join("registry"), "127.0.0.1:0").await;
        let alice = Identity::generate();
        let owner = Client::new(&address, &state_file(&dir, "alice"));
        let claimed = owner
            .claim(&alice, "alice", Discoverability::Public, in_a_year(), None)
            .await
            .expect("claims");
        assert_eq!(claimed.index, 0);
        assert!(matches!(
            owner
                .claim(
                    &Identity::generate(),
                    "alice",
                    Discoverability::Public,
                    in_a_year(),
                    None
                )
                .await,
            Err(Error::Refused(Refusal::Taken))
        ));
        let reader = Client::new(&address, &state_file(&dir, "bob"));
        let found = reader.lookup("alice", None).await.expect("looks up");
        assert_eq!(found.usable_key(now_secs()).expect("usable"), key(&alice));
        assert_eq!(reader.list("").await.expect("lists"), ["alice"]);

        let laptop = Identity::generate();
        owner
            .rotate(
                &alice,
                Signer::Key,
                "alice",
                key(&laptop),
                None,
                in_a_year(),
            )
            .await
            .expect("rotates");
        let found = reader.lookup("alice", None).await.expect("looks up again");
        assert_eq!(found.usable_key(now_secs()).expect("usable"), key(&laptop));
        assert_eq!(found.state.entries, 2);
        assert!(matches!(
            owner
                .rotate(&alice, Signer::Key, "alice", key(&alice), None, in_a_year())
                .await,
            Err(Error::Refused(Refusal::NotOwner))
        ));

        owner
            .revoke(&laptop, Signer::Key, "alice")
            .await
            .expect("revokes");
        let found = reader
            .lookup("alice", None)
            .await
            .expect("looks up a revoked handle");
        assert!(matches!(
            found.usable_key(now_secs()),
            Err(Error::Revoked(_))
        ));
        assert!(reader.list("").await.expect("lists").is_empty());
        assert!(matches!(
            owner
                .rotate(
                    &laptop,
                    Signer::Key,
                    "alice",
                    key(&laptop),
                    None,
                    in_a_year()
                )
                .await,
            Err(Error::Refused(Refusal::Revoked))
        ));
        // The reader's state holds the latest checkpoint and alice's last entry.
        let state = State::load(&state_file(&dir, "bob")).expect("state");
        let registry = &state.registries[&address];
        assert_eq!(registry.handles["alice"].index, 2);
        assert!(registry.checkpoint.starts_with(&origin_of(&registry.key)));
    });
}

fn origin_of(verifier: &str) -> String {
    peers_registry::note::parse_verifier_key(verifier)
        .expect("verifier key")
        .0
}

/// A claim whose signature is not by the claimed key (a forged claim, or a
/// damaged signature) is refused; so is a rotation by a stranger, and one
/// by a recovery key the claim did not name; the named recovery key rotates.
#[test]
fn forged_claims_and_rotations_by_others_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (address, _server) = start(&dir.path().join("registry"), "127.0.0.1:0").await;
        let client = Client::new(&address, &state_file(&dir, "client"));
        let alice = Identity::generate();
        let mallory = Identity::generate();
        let mut forged = Entry::claim(
            &mallory,
            "alice",
            Discoverability::Public,
            in_a_year(),
            None,
        )
        .expect("entry");
        forged.key = key(&alice);
        assert!(matches!(
            client.submit(&forged).await,
            Err(Error::Refused(Refusal::BadSignature))
        ));
        let mut damaged = Entry::claim(&alice, "alice", Discoverability::Public, in_a_year(), None)
            .expect("entry");
        damaged.signature[10] ^= 1;
        assert!(matches!(
            client.submit(&damaged).await,
            Err(Error::Refused(Refusal::BadSignature))
        ));
        let expired = Entry::claim(&alice, "alice", Discoverability::Public, now_secs(), None)
            .expect("entry");
        assert!(matches!(
            client.submit(&expired).await,
            Err(Error::Refused(Refusal::BadExpiry))
        ));

        let recovery = Identity::generate();
        client
            .claim(
                &alice,
                "alice",
                Discoverability::Public,
                in_a_year(),
                Some(key(&recovery)),
            )
            .await
            .expect("claims");
        client
            .claim(
                &mallory,
                "mallory",
                Discoverability::Public,
                in_a_year(),
                None,
            )
            .await
            .expect("claims");
        for signer in [Signer::Key, Signer::Recovery] {
            assert!(matches!(
                client
                    .rotate(&mallory, signer, "alice", key(&mallory), None, in_a_year())
                    .await,
                Err(Error::Refused(Refusal::NotOwner))
            ));
        }
        assert!(matches!(
            client
                .rotate(
                    &alice,
                    Signer::Recovery,
                    "mallory",
                    key(&alice),
                    None,
                    in_a_year()
                )
                .await,
            Err(Error::Refused(Refusal::NoRecoveryKey))
        ));
        assert!(matches!(
            client.revoke(&mallory, Signer::Key, "alice").await,
            Err(Error::Refused(Refusal::NotOwner))
        ));
        let new = Identity::generate();
        let rotated = client
            .rotate(
                &recovery,
                Signer::Recovery,
                "alice",
                key(&new),
                None,
                in_a_year(),
            )
            .await
            .expect("the recovery key rotates");
        assert_eq!(rotated.state.key, key(&new));
        assert_eq!(
            client
                .lookup("alice", None)
                .await
                .expect("looks up")
                .state
                .key,
            key(&new)
        );
    });
}

/// Claims `handles` (fresh keys) through a client of `address` that keeps
/// no state worth keeping.
async fn claim_all(address: &str, scratch: &Path, handles: &[&str]) {
    let client = Client::new(address, scratch);
    for handle in handles {
        client
            .claim(
                &Identity::generate(),
                handle,
                Discoverability::Public,
                in_a_year(),
                None,
            )
            .await
            .expect("claims");
    }
}

/// A replaced log: its name, the handles it holds, and the error expected.
type Case = (&'static str, &'static [&'static str], fn(&Error) -> bool);

/// An operator that replaces its log under the same key and address is
/// caught by a client that saw the old one: a log that dropped an entry
/// and grew back to the same size (two signed roots: a fork), one that
/// rewrote an entry and grew past it (no consistency proof), and one that
/// is shorter (a rollback). The client's state is left as it was.
#[test]
fn a_replaced_log_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let honest = dir.path().join("honest");
        let (address, server) = start(&honest, "127.0.0.1:0").await;
        let scratch = dir.path().join("scratch.json");
        claim_all(&address, &scratch, &["alice", "bob", "carol"]).await;
        let watcher = Client::new(&address, &state_file(&dir, "watcher"));
        watcher.lookup("carol", None).await.expect("looks up");
        let seen = std::fs::read(state_file(&dir, "watcher")).expect("state");
        stop(server).await;

        let cases: [Case; 3] = [
            ("drops bob", &["alice", "carol", "dave"], |error| {
                matches!(error, Error::Fork { size: 3, .. })
            }),
            (
                "rewrites bob",
                &["alice", "bobby", "carol", "dave"],
                |error| matches!(error, Error::Inconsistent { old: 3, new: 4 }),
            ),
            ("rolls back", &["carol"], |error| {
                matches!(
                    error,
                    Error::Rollback {
                        seen: 3,
                        offered: 1
                    }
                )
            }),
        ];
        for (case, handles, expected) in cases {
            let evil = dir.path().join(case);
            evil_twin(&honest, &evil);
            let (same, task) = start(&evil, &address).await;
            assert_eq!(same, address);
            claim_all(&address, &dir.path().join(format!("{case}.json")), handles).await;
            let error = watcher.lookup("carol", None).await.expect_err(case);
            assert!(expected(&error), "{case}: {error}");
            assert!(error.to_string().contains("entries"), "{case}: {error}");
            assert_eq!(
                std::fs::read(state_file(&dir, "watcher")).expect("state"),
                seen,
                "{case}: the state is not updated"
            );
            stop(task).await;
        }
        // The honest log, reopened, is still consistent with what was seen.
        let (_, _task) = start(&honest, &address).await;
        watcher
            .lookup("carol", None)
            .await
            .expect("the honest log again");
    });
}

/// Two clients shown two different logs under the same key each see a
/// consistent log; comparing checkpoints (either way) exposes the split.
#[test]
fn a_split_view_is_caught_when_clients_compare() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let honest = dir.path().join("honest");
        let evil = dir.path().join("evil");
        let (left, _left_task) = start(&honest, "127.0.0.1:0").await;
        evil_twin(&honest, &evil);
        let (right, _right_task) = start(&evil, "127.0.0.1:0").await;
        claim_all(&left, &dir.path().join("l.json"), &["alice", "bob"]).await;
        claim_all(
            &right,
            &dir.path().join("r.json"),
            &["alice", "mallory", "bob"],
        )
        .await;
        let one = Client::new(&left, &state_file(&dir, "one"));
        let two = Client::new(&right, &state_file(&dir, "two"));
        let found_one = one.lookup("bob", None).await.expect("one looks up");
        let found_two = two.lookup("bob", None).await.expect("two looks up");
        assert_ne!(found_one.state.key, found_two.state.key);
        let note = |client: &str| {
            let state = State::load(&state_file(&dir, client)).expect("state");
            state
                .registries
                .values()
                .next()
                .expect("a registry")
                .checkpoint
                .clone()
        };
        let error = one.compare(&note("two")).await.expect_err("one compares");
        assert!(
            matches!(error, Error::Unproven { old: 2, new: 3 }),
            "{error}"
        );
        let error = two.compare(&note("one")).await.expect_err("two compares");
        assert!(
            matches!(error, Error::Inconsistent { old: 2, new: 3 }),
            "{error}"
        );
        // An honest pair compares clean, both ways.
        let three = Client::new(&left, &state_file(&dir, "three"));
        three.lookup("alice", None).await.expect("three looks up");
        one.compare(&note("three")).await.expect("consistent");
        three.compare(&note("one")).await.expect("consistent");
    });
}

/// A checkpoint signed by another key, or a verifier key that changed
/// under a pinned address, is refused.
#[test]
fn another_operator_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (address, server) = start(&dir.path().join("first"), "127.0.0.1:0").await;
        claim_all(&address, &dir.path().join("s.json"), &["alice"]).await;
        let client = Client::new(&address, &state_file(&dir, "client"));
        client.lookup("alice", None).await.expect("pins the key");
        stop(server).await;
        let (_, _task) = start(&dir.path().join("second"), &address).await;
        claim_all(&address, &dir.path().join("t.json"), &["alice"]).await;
        let error = client.lookup("alice", None).await.expect_err("another key");
        assert!(matches!(error, Error::OperatorKeyChanged { .. }), "{error}");
        let pinned = Client::new(&address, &state_file(&dir, "pinned"))
            .pin(&verifier_key("peers-registry/0000000000000000", &[9; 32]))
            .expect("a verifier key");
        assert!(matches!(
            pinned.lookup("alice", None).await,
            Err(Error::OperatorKeyChanged { .. })
        ));
    });
}

/// Lookup-only and private handles cannot be enumerated: the log holds a
/// hash per entry (no handle, no key), LIST shows public handles only, a
/// private handle answers only to one of its keys, "no such handle" is
/// the one answer to every other guess, and guesses per address are limited.
#[test]
fn hidden_handles_cannot_be_enumerated() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (address, _server) = start(&dir.path().join("registry"), "127.0.0.1:0").await;
        let owner = Client::new(&address, &state_file(&dir, "owner"));
        let open = Identity::generate();
        let hidden = Identity::generate();
        let secret = Identity::generate();
        owner
            .claim(&open, "open", Discoverability::Public, in_a_year(), None)
            .await
            .expect("claims");
        owner
            .claim(&hidden, "hidden", Discoverability::LookupOnly, in_a_year(), None)
            .await
            .expect("claims");
        owner
            .claim(&secret, "secret", Discoverability::Private, in_a_year(), None)
            .await
            .expect("claims");
        let stranger = Client::new(&address, &state_file(&dir, "stranger"));
        let leaves = stranger.leaves(0).await.expect("reads the log");
        assert_eq!(leaves.len(), 3);
        for (leaf, identity) in leaves[1..].iter().zip([&hidden, &secret]) {
            assert_eq!(leaf[0], LEAF_COMMITMENT);
            assert_eq!(leaf.len(), 33);
            for needle in [b"hidden".as_slice(), b"secret", &key(identity)] {
                assert!(!leaf.windows(needle.len()).any(|window| window == needle));
            }
        }
        assert!(leaves[0].windows(4).any(|window| window == b"open"));
        assert_eq!(stranger.list("").await.expect("lists"), ["open"]);
        assert_eq!(
            stranger.lookup("hidden", None).await.expect("by name").state.key,
            key(&hidden)
        );
        for guess in ["secret", "nobody", "hidden2"] {
            assert!(
                matches!(stranger.lookup(guess, None).await, Err(Error::NotFound(ref h)) if h == guess),
                "{guess}"
            );
        }
        assert!(matches!(
            stranger.lookup("secret", Some(key(&hidden))).await,
            Err(Error::NotFound(_))
        ));
        let found = stranger
            .lookup("secret", Some(key(&secret)))
            .await
            .expect("a private handle answers to its key");
        assert_eq!(found.state.key, key(&secret));
        // Guessing is bounded: after LOOKUP_MISSES_PER_WINDOW_MAX misses in
        // a window, every lookup from this address is refused, hits too.
        let mut misses = 4;
        while misses < peers_registry::LOOKUP_MISSES_PER_WINDOW_MAX {
            assert!(matches!(
                stranger.lookup(&format!("guess{misses}"), None).await,
                Err(Error::NotFound(_))
            ));
            misses += 1;
        }
        for handle in ["guess-again", "hidden", "open"] {
            assert!(
                matches!(
                    stranger.lookup(handle, None).await,
                    Err(Error::Limited { retry_after_secs }) if retry_after_secs >= 1
                ),
                "{handle}"
            );
        }
    });
}

/// A handle past its expiry resolves, verified, but its key is not usable;
/// the owner renews it by rotating to the same key.
#[test]
fn an_expired_handle_is_not_usable_until_renewed() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let (address, _server) = start(&dir.path().join("registry"), "127.0.0.1:0").await;
        let client = Client::new(&address, &state_file(&dir, "client"));
        let alice = Identity::generate();
        client
            .claim(
                &alice,
                "alice",
                Discoverability::Public,
                now_secs() + 2,
                None,
            )
            .await
            .expect("claims");
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let found = client.lookup("alice", None).await.expect("looks up");
        assert!(matches!(
            found.usable_key(now_secs()),
            Err(Error::Expired { .. })
        ));
        client
            .rotate(&alice, Signer::Key, "alice", key(&alice), None, in_a_year())
            .await
            .expect("renews");
        let found = client.lookup("alice", None).await.expect("looks up");
        assert_eq!(found.usable_key(now_secs()).expect("usable"), key(&alice));
    });
}

/// A restarted registry rebuilds the same log from its store: the same
/// signed checkpoint, and clients carry on.
#[test]
fn a_restart_keeps_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let store = dir.path().join("registry");
        let (address, server) = start(&store, "127.0.0.1:0").await;
        claim_all(&address, &dir.path().join("s.json"), &["alice", "bob"]).await;
        let client = Client::new(&address, &state_file(&dir, "client"));
        client.lookup("bob", None).await.expect("looks up");
        stop(server).await;
        let before = State::load(&state_file(&dir, "client")).expect("state");
        let reopened = open_retrying(&store);
        assert_eq!(
            reopened.checkpoint(),
            before.registries[&address].checkpoint
        );
        drop(reopened);
        let (_, _task) = start(&store, &address).await;
        client
            .lookup("alice", None)
            .await
            .expect("after the restart");
    });
}

/// A fake registry that signs, with its own key, a log holding `entries`
/// and answers one LOOKUP with all of them (or with `proof_from` the
/// inclusion proofs of another tree).
async fn fake_registry(entries: Vec<Entry>, lie_about_inclusion: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        let operator = Identity::from_secret_bytes([42; 32]);
        let operator_key = key(&operator);
        let origin = origin_for(&operator_key);
        let mut tree = Tree::new();
        for entry in &entries {
            tree.push(&entry.leaf());
        }
        if lie_about_inclusion {
            tree.push(b"something else");
        }
        let size = tree.size();
        let note = Checkpoint {
            origin: origin.clone(),
            size,
            root: tree.root(size),
        }
        .sign(&operator);
        let (mut stream, _) = listener.accept().await.expect("accepts");
        let _ = wire::read(&mut stream).await;
        let count = u8::try_from(entries.len()).expect("few");
        let state = Message::new(
            tag::STATE,
            vec![
                verifier_key(&origin, &operator_key).into_bytes(),
                note.into_bytes(),
                Vec::new(),
                vec![count],
            ],
        );
        wire::write(&mut stream, &state).await.expect("writes");
        for (index, entry) in entries.iter().enumerate() {
            let index = index as u64;
            let proof_index = if lie_about_inclusion { size - 1 } else { index };
            let message = Message::new(
                tag::ENTRY,
                vec![
                    index.to_le_bytes().to_vec(),
                    entry.encode(),
                    encode_proof(&tree.inclusion_proof(proof_index, size)),
                ],
            );
            wire::write(&mut stream, &message).await.expect("writes");
        }
    });
    address
}

/// A dishonest operator cannot forge: a claim it made up for someone
/// else's key, or a rotation it signed itself, fails the chain's rules
/// even in a log it signs; an entry it serves outside its log fails its
/// inclusion proof.
#[test]
fn an_operator_cannot_forge_a_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let alice = Identity::generate();
        let operator = Identity::from_secret_bytes([42; 32]);
        let mut forged = Entry::claim(
            &operator,
            "alice",
            Discoverability::Public,
            in_a_year(),
            None,
        )
        .expect("entry");
        forged.key = key(&alice);
        let address = fake_registry(vec![forged], false).await;
        let error = Client::new(&address, &state_file(&dir, "a"))
            .lookup("alice", None)
            .await
            .expect_err("a forged claim");
        assert!(
            matches!(
                error,
                Error::BadChain {
                    position: 0,
                    refusal: Refusal::BadSignature,
                    ..
                }
            ),
            "{error}"
        );

        let claim = Entry::claim(&alice, "alice", Discoverability::Public, in_a_year(), None)
            .expect("entry");
        let takeover = Entry::rotate(
            &operator,
            Signer::Key,
            "alice",
            claim.hash(),
            key(&operator),
            Discoverability::Public,
            in_a_year(),
        )
        .expect("entry");
        let address = fake_registry(vec![claim.clone(), takeover], false).await;
        let error = Client::new(&address, &state_file(&dir, "b"))
            .lookup("alice", None)
            .await
            .expect_err("a forged rotation");
        assert!(
            matches!(
                error,
                Error::BadChain {
                    position: 1,
                    refusal: Refusal::NotOwner,
                    ..
                }
            ),
            "{error}"
        );

        let address = fake_registry(vec![claim], true).await;
        let error = Client::new(&address, &state_file(&dir, "c"))
            .lookup("alice", None)
            .await
            .expect_err("not in the log");
        assert!(
            matches!(error, Error::NotIncluded { index: 0, size: 2 }),
            "{error}"
        );
    });
}

//! Managed keys through the `peers` binary (issue 17): a key server, a
//! user who registers a replica's identity, logs in on a new device and
//! makes a replica with it, changes the password, recovers with the code,
//! exports and forgets; wrong passwords and unknown users fail alike; and
//! guessing runs into the limit. With the real argon2 parameters.

mod common;

use std::io::Write;
use std::path::Path;

use common::{Server, fails, ok_json};

fn key_server(store: &Path) -> Server {
    Server::start(&[
        "keys".as_ref(),
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
    ])
}

#[test]
fn managed_keys_story() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = key_server(&dir.path().join("store"));
    let keys = &server.address();
    let path = |name: &str| dir.path().join(name).display().to_string();

    // A replica on the first device; its identity goes to the key server.
    let first = path("first");
    let init = ok_json(&["--db", &first, "init"], &[], "");
    let public_key = init["public_key"].as_str().expect("public_key").to_owned();
    let identity_file = format!("{first}/identity.key");
    let registered = ok_json(
        &[
            "keys",
            "register",
            "alice",
            "--keys",
            keys,
            "--key-file",
            &identity_file,
        ],
        &[("PEERS_PASSWORD", "correct horse")],
        "",
    );
    assert_eq!(registered["public_key"], public_key.as_str());
    assert_eq!(registered["created"], false);
    let code = registered["recovery_code"]
        .as_str()
        .expect("code")
        .to_owned();

    // A new device: log in (password on standard input), make a replica
    // that signs with the same identity.
    let key_file = path("device2.key");
    let login = ok_json(
        &["login", "alice", "--keys", keys, "--key-file", &key_file],
        &[],
        "correct horse\n",
    );
    assert_eq!(login["public_key"], public_key.as_str());
    let second = path("second");
    let init = ok_json(&["--db", &second, "init", "--identity", &key_file], &[], "");
    assert_eq!(init["public_key"], public_key.as_str());

    // Wrong password and unknown user: the same error, word for word.
    let other = path("other.key");
    let wrong = fails(
        &["login", "alice", "--keys", keys, "--key-file", &other],
        &[("PEERS_PASSWORD", "wrong horse")],
        "",
    );
    let unknown = fails(
        &["login", "nobody", "--keys", keys, "--key-file", &other],
        &[("PEERS_PASSWORD", "wrong horse")],
        "",
    );
    assert_eq!(
        wrong.replace("alice", "USER"),
        unknown.replace("nobody", "USER"),
        "a failed login says nothing about the user"
    );
    assert!(
        wrong.contains("login failed: wrong user name or password"),
        "{wrong}"
    );
    assert!(!Path::new(&other).exists());

    // Change the password: the old one stops working.
    ok_json(
        &["keys", "change-password", "alice", "--keys", keys],
        &[],
        "correct horse\nbattery staple\n",
    );
    fails(
        &["login", "alice", "--keys", keys, "--key-file", &other],
        &[("PEERS_PASSWORD", "correct horse")],
        "",
    );

    // Lost password: the recovery code logs in and sets a new one.
    let recovered = ok_json(
        &[
            "login",
            "alice",
            "--recovery",
            "--keys",
            keys,
            "--key-file",
            &path("recovered.key"),
        ],
        &[("PEERS_RECOVERY_CODE", &code.to_lowercase())],
        "",
    );
    assert_eq!(recovered["public_key"], public_key.as_str());
    ok_json(
        &[
            "keys",
            "change-password",
            "alice",
            "--recovery",
            "--keys",
            keys,
        ],
        &[
            ("PEERS_RECOVERY_CODE", &code),
            ("PEERS_NEW_PASSWORD", "new password"),
        ],
        "",
    );

    // Graduate: export to a key file and forget the server's copy.
    let exported = path("exported.key");
    let export = ok_json(
        &[
            "keys",
            "export",
            "alice",
            "--keys",
            keys,
            "--key-file",
            &exported,
            "--forget",
        ],
        &[("PEERS_PASSWORD", "new password")],
        "",
    );
    assert_eq!(export["forgotten"], true);
    assert_eq!(
        std::fs::read_to_string(&exported).expect("exported"),
        std::fs::read_to_string(&identity_file).expect("the original key")
    );
    let gone = fails(
        &["login", "alice", "--keys", keys, "--key-file", &other],
        &[("PEERS_PASSWORD", "new password")],
        "",
    );
    assert!(gone.contains("login failed"), "{gone}");
    // A key file is never overwritten.
    let refused = fails(
        &[
            "keys",
            "register",
            "bob",
            "--keys",
            keys,
            "--key-file",
            &exported,
        ],
        &[("PEERS_PASSWORD", "short")],
        "",
    );
    assert!(refused.contains("too short"), "{refused}");
}

/// Guessing one account's password from the CLI runs into the limit (five
/// free attempts), with a message that says when to try again.
#[test]
fn guessing_hits_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = key_server(&dir.path().join("store"));
    let keys = &server.address();
    let out = dir.path().join("never.key").display().to_string();
    for guess in 0..5 {
        let error = fails(
            &["login", "carol", "--keys", keys, "--key-file", &out],
            &[("PEERS_PASSWORD", &format!("guess number {guess}"))],
            "",
        );
        assert!(error.contains("login failed"), "{error}");
    }
    let error = fails(
        &["login", "carol", "--keys", keys, "--key-file", &out],
        &[("PEERS_PASSWORD", "guess number 5")],
        "",
    );
    assert!(
        error.contains("too many login attempts: try again in"),
        "{error}"
    );
}

fn read_frame(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(length) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

fn write_frame(stream: &mut std::net::TcpStream, body: &[u8]) -> Option<()> {
    stream
        .write_all(&u32::try_from(body.len()).ok()?.to_le_bytes())
        .ok()?;
    stream.write_all(body).ok()
}

/// A proxy in front of the key server at `upstream` that flips a byte (the
/// 10th from the end: in the server's OPAQUE MAC of a challenge, in the
/// session MAC of an envelope message) of answer number `answer` (from 0)
/// on every connection, as a malicious server or network would; returns
/// its address.
fn flipping_proxy(upstream: &str, answer: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = listener.local_addr().expect("address").to_string();
    let upstream = upstream.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let (Ok(mut client), Ok(mut server)) =
                (client, std::net::TcpStream::connect(&upstream))
            else {
                return;
            };
            std::thread::spawn(move || {
                for index in 0.. {
                    let Some(request) = read_frame(&mut client) else {
                        return;
                    };
                    write_frame(&mut server, &request);
                    let Some(mut reply) = read_frame(&mut server) else {
                        return;
                    };
                    if index == answer {
                        let at = reply.len() - 10;
                        reply[at] ^= 0x01;
                    }
                    write_frame(&mut client, &reply);
                }
            });
        }
    });
    address
}

/// A key server whose answers are altered (its OPAQUE answer, or the
/// envelope message after it): `peers login` fails with the typed error
/// and writes no key file; the same login without the proxy writes it.
#[test]
fn a_malicious_key_server_gets_no_key_file_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = key_server(&dir.path().join("store"));
    let keys = &server.address();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let registered = ok_json(
        &[
            "keys",
            "register",
            "dan",
            "--keys",
            keys,
            "--key-file",
            &path("dan.key"),
        ],
        &[("PEERS_PASSWORD", "dan's password")],
        "",
    );
    for (answer, expected) in [
        (0, "login failed: wrong user name or password"),
        (
            1,
            "an answer from the key server does not authenticate (altered in transit?)",
        ),
    ] {
        let proxy = flipping_proxy(keys, answer);
        let key_file = path(&format!("through-proxy-{answer}.key"));
        let error = fails(
            &["login", "dan", "--keys", &proxy, "--key-file", &key_file],
            &[("PEERS_PASSWORD", "dan's password")],
            "",
        );
        assert!(error.contains(expected), "answer {answer}: {error}");
        assert!(
            !Path::new(&key_file).exists(),
            "answer {answer}: no key file"
        );
    }
    let login = ok_json(
        &[
            "login",
            "dan",
            "--keys",
            keys,
            "--key-file",
            &path("direct.key"),
        ],
        &[("PEERS_PASSWORD", "dan's password")],
        "",
    );
    assert_eq!(login["public_key"], registered["public_key"]);
}

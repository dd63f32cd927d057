//! The public key registry through the `peers` binary (issue 17 part 2): a
//! registry server, a replica that claims a handle with its identity,
//! lookups elsewhere (pinned to the operator's key), `peers invite --to`
//! granting the looked-up key a role, a rotation to a new key file, and a
//! revocation; unknown handles and a revoked one fail with errors that say
//! what to do.

mod common;

use std::path::Path;

use common::{Server, text};

fn ok_json(args: &[&str]) -> serde_json::Value {
    common::ok_json(args, &[], "")
}

fn fails(args: &[&str]) -> String {
    common::fails(args, &[], "")
}

fn run(args: &[&str]) -> std::process::Output {
    common::run(args, &[], "")
}

fn registry_server(dir: &Path) -> Server {
    Server::start(&[
        "registry".as_ref(),
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ])
}

#[test]
fn claim_lookup_invite_rotate_revoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = registry_server(&dir.path().join("registry"));
    let registry = &server.address();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (owner, member, state) = (path("owner"), path("member"), path("elsewhere.json"));
    ok_json(&["--db", &owner, "init"]);
    let member_key = ok_json(&["--db", &member, "init"])["public_key"]
        .as_str()
        .expect("public_key")
        .to_owned();

    // The member claims a handle with its replica's identity.
    let claimed = ok_json(&[
        "--db",
        &member,
        "registry",
        "claim",
        "bob",
        "--registry",
        registry,
    ]);
    assert_eq!(claimed["public_key"], member_key.as_str());
    assert_eq!(claimed["discoverability"], "public");
    assert!(
        Path::new(&member).join("registry-state.json").exists(),
        "the state is kept beside the replica"
    );

    // Anyone looks it up, pinned to the operator's key; plain output is the key.
    let args = [
        "registry",
        "lookup",
        "bob",
        "--registry",
        registry,
        "--registry-key",
        server.listening["verifier_key"].as_str().expect("key"),
        "--state",
        &state,
    ];
    let output = run(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), member_key);
    let error = fails(&[
        "registry",
        "lookup",
        "nobody",
        "--registry",
        registry,
        "--state",
        &state,
    ]);
    assert!(error.contains("no handle \"nobody\""), "{error}");
    let error = fails(&[
        "registry",
        "claim",
        "carol",
        "--registry",
        registry,
        "--state",
        &state,
    ]);
    assert!(error.contains("--identity FILE"), "{error}");

    // The owner invites the handle: the key it names becomes a writer.
    let granted = ok_json(&[
        "--db",
        &owner,
        "invite",
        "--to",
        "bob",
        "--registry",
        registry,
        "--role",
        "writer",
    ]);
    assert!(granted.is_object(), "{granted}");
    let members = ok_json(&["--db", &owner, "members"]);
    let listed = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .any(|entry| entry["public_key"] == member_key.as_str() && entry["role"] == "writer");
    assert!(listed, "{members}");
    let error = fails(&[
        "--db",
        &owner,
        "invite",
        "--to",
        "nobody",
        "--registry",
        registry,
    ]);
    assert!(error.contains("no handle \"nobody\""), "{error}");

    // Rotate to a new key file; lookups give the new key; then revoke.
    let new_key_file = path("new.key");
    let rotated = ok_json(&[
        "--db",
        &member,
        "registry",
        "rotate",
        "bob",
        "--registry",
        registry,
        "--to",
        &new_key_file,
    ]);
    let new_key = rotated["public_key"].as_str().expect("key").to_owned();
    assert_ne!(new_key, member_key);
    let found = ok_json(&args);
    assert_eq!(found["public_key"], new_key.as_str());
    assert_eq!(found["entries"], 2);
    let error = fails(&[
        "--db",
        &member,
        "registry",
        "revoke",
        "bob",
        "--registry",
        registry,
    ]);
    assert!(
        error.contains("not signed by the handle's current key"),
        "{error}"
    );
    ok_json(&[
        "registry",
        "revoke",
        "bob",
        "--registry",
        registry,
        "--identity",
        &new_key_file,
        "--state",
        &state,
    ]);
    let error = fails(&args);
    assert!(error.contains("revoked"), "{error}");
    let error = fails(&[
        "--db",
        &owner,
        "invite",
        "--to",
        "bob",
        "--registry",
        registry,
    ]);
    assert!(error.contains("revoked"), "{error}");

    // The checkpoint a client verified, for comparing with another client.
    let checkpoint = ok_json(&[
        "registry",
        "checkpoint",
        "--registry",
        registry,
        "--state",
        &state,
    ]);
    let note_file = path("note.txt");
    std::fs::write(&note_file, checkpoint["checkpoint"].as_str().expect("note")).expect("writes");
    let compared = ok_json(&[
        "--db",
        &member,
        "registry",
        "compare",
        &note_file,
        "--registry",
        registry,
    ]);
    assert_eq!(compared["consistent"], true);
}

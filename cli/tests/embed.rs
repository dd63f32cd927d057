//! An application that embeds Peers and starts a control socket: the
//! `peers` program in another terminal reads and writes its database
//! through it (issue 13: "an embedding application that asks for it").

use std::path::Path;
use std::process::{Command, Output};

use peers::control::Control;
use peers_engine::{Db, Error, Options, Value};

fn peers(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peers"))
        .env_remove("PEERS_DB")
        .env_remove("PEERS_LOG")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("running the peers binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// Guards: with `Control::start`, the program's commands run on the
// application's open `Db` (reads see its writes, its reads see the
// program's writes, signed by its key); after `stop` the socket is gone,
// and a command names this process as the holder and says what to do.
#[test]
fn the_program_works_on_an_embedders_open_database() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("app.peers");
    let db = Db::create(&dir, Options::default()).expect("create");
    let mut tx = db.transaction();
    tx.set("notes", "n1", "title", "from the app");
    tx.commit().expect("commit");

    let control = Control::start(&db).expect("listen");
    assert_eq!(control.path(), dir.join("control.sock"));
    let output = peers(&dir, &["scan", "notes"]);
    assert_eq!(
        text(&output.stdout),
        "n1\ttitle=\"from the app\"\n",
        "{}",
        text(&output.stderr)
    );
    let output = peers(&dir, &["put", "notes", "n2", "title=from the terminal"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        db.get_field("notes", "n2", "title").expect("read"),
        Some(Value::Str("from the terminal".into()))
    );
    let history = db.history("notes", "n2").expect("history");
    assert_eq!(history[0].author, db.author(), "signed by the app's key");

    control.stop();
    assert!(!dir.join("control.sock").exists());
    let output = peers(&dir, &["scan", "notes"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("is open in process {} (", std::process::id()))
            && stderr.contains("no commands from other processes"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // The engine's own refusal, in this process: one `Db` at a time.
    match Db::open(&dir, Options::default()) {
        Err(Error::InUse { pid, command, .. }) => {
            assert_eq!(pid, Some(std::process::id()));
            assert!(!command.is_empty());
        }
        other => panic!("a second open: {other:?}"),
    }
    let clone = db.clone();
    drop(db);
    assert!(
        matches!(Db::open(&dir, Options::default()), Err(Error::InUse { .. })),
        "a clone still holds it"
    );
    drop(clone);
    Db::open(&dir, Options::default()).expect("opens once the last clone is dropped");
}

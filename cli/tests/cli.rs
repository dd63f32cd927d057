//! End-to-end tests of the `peers` binary: each runs the real program in a
//! temporary directory and checks what a person at a terminal sees (stdout,
//! stderr, exit status) and what ends up on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;
use tempfile::TempDir;

/// `peers --db DB` (no `--db` when `db` is `None`), with a clean
/// environment for the variables the program reads.
fn peers(db: Option<&Path>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peers"));
    command.env_remove("PEERS_DB").env_remove("PEERS_LOG");
    if let Some(db) = db {
        command.arg("--db").arg(db);
    }
    command
}

/// Runs `peers --db DB ARGS...` (see [`peers`]).
fn run(db: Option<&Path>, args: &[&str]) -> Output {
    peers(db)
        .args(args)
        .output()
        .expect("running the peers binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

/// Runs and requires success; returns stdout.
fn ok(db: &Path, args: &[&str]) -> String {
    let output = run(Some(db), args);
    assert!(
        output.status.success(),
        "peers {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Runs with `--json` and parses the single JSON document printed.
fn ok_json(db: &Path, args: &[&str]) -> Json {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let stdout = ok(db, &all);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("peers {args:?} printed no JSON ({error}): {stdout}"))
}

/// Runs with `--json` and parses one JSON document per line.
fn ok_json_lines(db: &Path, args: &[&str]) -> Vec<Json> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    ok(db, &all)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
        })
        .collect()
}

/// Requires a non-zero exit whose stderr ends with exactly one
/// `peers: error:` line; returns stderr.
fn fails(output: &Output, what: &str) -> String {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "{what} succeeded, expected an error; stdout: {}",
        text(&output.stdout)
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what}: exit status {}",
        output.status
    );
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("peers: error: "),
        "{what}: last stderr line is not `peers: error:`: {stderr:?}"
    );
    assert_eq!(
        stderr.matches("peers: error:").count(),
        1,
        "{what}: more than one error line: {stderr:?}"
    );
    assert!(
        last.len() > "peers: error: ".len(),
        "{what}: empty error message"
    );
    let clauses: Vec<&str> = last
        .split(": ")
        .filter(|clause| clause.len() > 12)
        .collect();
    for (index, clause) in clauses.iter().enumerate() {
        assert!(
            !clauses[index + 1..].contains(clause),
            "{what}: {clause:?} is repeated in {last:?}"
        );
    }
    stderr
}

/// Requires that stderr is exactly one `peers: error:` line.
fn fails_one_line(output: &Output, what: &str) -> String {
    let stderr = fails(output, what);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{what}: stderr is not one line: {stderr:?}"
    );
    stderr
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase())
}

/// A temporary directory with a fresh database in `name`.
fn new_db(name: &str) -> (TempDir, PathBuf, Json) {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join(name);
    let id = ok_json(&dir, &["init"]);
    (temp, dir, id)
}

fn state_hash(db: &Path) -> String {
    let hash = ok(db, &["state-hash"]).trim().to_owned();
    assert!(is_hex64(&hash), "state-hash printed {hash:?}");
    hash
}

fn export(db: &Path, file: &Path, since: Option<&Path>) -> u64 {
    let file = file.to_str().expect("UTF-8 path");
    let report = match since {
        Some(since) => ok_json(
            db,
            &[
                "export",
                file,
                "--since",
                since.to_str().expect("UTF-8 path"),
            ],
        ),
        None => ok_json(db, &["export", file]),
    };
    report["exported"].as_u64().expect("exported count")
}

fn import(db: &Path, file: &Path) -> Json {
    ok_json(db, &["import", file.to_str().expect("UTF-8 path")])
}

fn commit(db: &Path, args: &[&str]) -> String {
    let change = ok_json(db, args)["change"]
        .as_str()
        .expect("change hash")
        .to_owned();
    assert!(is_hex64(&change), "{args:?} printed change {change:?}");
    change
}

// Guards: `init` creates a database and prints its id and this replica's public
// key, as text and as JSON; `id` prints the same afterwards.
#[test]
fn init_prints_database_id_and_public_key() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("a");
    let stdout = ok(&dir, &["init"]);
    let mut lines = stdout.lines();
    let database = lines
        .next()
        .and_then(|line| line.strip_prefix("database "))
        .expect("database line")
        .trim();
    let key = lines
        .next()
        .and_then(|line| line.strip_prefix("public key "))
        .expect("public key line")
        .trim();
    assert!(is_hex64(database), "database id {database:?}");
    assert!(is_hex64(key), "public key {key:?}");
    assert_ne!(database, key);

    let id = ok_json(&dir, &["id"]);
    assert_eq!(id["database"], database);
    assert_eq!(id["public_key"], key);

    let other = temp.path().join("b");
    let json = ok_json(&other, &["init"]);
    assert!(is_hex64(json["database"].as_str().expect("database")));
    assert!(is_hex64(json["public_key"].as_str().expect("public_key")));
    assert_ne!(
        json["database"], database,
        "two inits made the same database"
    );

    // Creating over an existing database is refused.
    fails_one_line(&run(Some(&dir), &["init"]), "init on an existing database");
}

// Guards: `join DB_ID` creates an empty replica of that database with its own
// identity.
#[test]
fn join_creates_replica_with_own_identity() {
    let (temp, a, id) = new_db("a");
    let database = id["database"].as_str().expect("database");
    let b = temp.path().join("b");
    let joined = ok_json(&b, &["join", database]);
    assert_eq!(joined["database"], database);
    assert!(is_hex64(joined["public_key"].as_str().expect("public_key")));
    assert_ne!(
        joined["public_key"], id["public_key"],
        "a replica must get a new key"
    );
    assert_eq!(ok_json(&b, &["id"]), joined);
    assert!(
        ok_json_lines(&b, &["log"]).is_empty(),
        "a joined replica starts empty"
    );
    assert!(
        !ok_json_lines(&a, &["log"]).is_empty(),
        "the creator holds the genesis change"
    );
}

// Guards: `put` parses JSON scalars and falls back to strings; `get` and
// `get --json` show them; `incr` adds positive and negative deltas; after
// `delete`, `get` fails with a non-zero exit.
#[test]
fn put_get_incr_delete() {
    let (_temp, db, _) = new_db("a");
    commit(
        &db,
        &[
            "put",
            "notes",
            "n1",
            "int=-12",
            "float=2.5",
            "yes=true",
            "nothing=null",
            "quoted=\"42\"",
            "title=Hello world",
        ],
    );
    let row = ok_json(&db, &["get", "notes", "n1"]);
    assert_eq!(row["int"], -12);
    assert_eq!(row["float"], 2.5);
    assert_eq!(row["yes"], true);
    assert_eq!(row["nothing"], Json::Null);
    assert_eq!(row["quoted"], "42", "a JSON string literal is a string");
    assert_eq!(row["title"], "Hello world", "non-JSON text is a string");

    let text = ok(&db, &["get", "notes", "n1"]);
    assert!(text.contains("int=-12"), "{text}");
    assert!(text.contains("title=\"Hello world\""), "{text}");

    commit(&db, &["incr", "notes", "n1", "views", "5"]);
    commit(&db, &["incr", "notes", "n1", "views", "-7"]);
    let views = &ok_json(&db, &["get", "notes", "n1"])["views"];
    let views = views.get("counter").unwrap_or(views);
    assert_eq!(views, -2, "5 - 7");

    commit(&db, &["delete", "notes", "n1"]);
    let stderr = fails_one_line(&run(Some(&db), &["get", "notes", "n1"]), "get after delete");
    assert!(stderr.contains("notes/n1"), "{stderr}");
    fails_one_line(
        &run(Some(&db), &["get", "notes", "never"]),
        "get of a missing row",
    );
}

// Guards: `scan --json` prints one JSON object per row, in row-id order, with
// only that table's rows.
#[test]
fn scan_json_in_row_id_order() {
    let (_temp, db, _) = new_db("a");
    for row in ["b", "c", "a", "aa", "B"] {
        commit(&db, &["put", "t", row, &format!("name={row}")]);
    }
    commit(&db, &["put", "other", "0", "x=1"]);
    let rows = ok_json_lines(&db, &["scan", "t"]);
    let ids: Vec<&str> = rows
        .iter()
        .map(|row| row["row"].as_str().expect("row id"))
        .collect();
    assert_eq!(ids, ["B", "a", "aa", "b", "c"]);
    for row in &rows {
        assert_eq!(row["fields"]["name"], row["row"]);
    }
    assert!(ok_json_lines(&db, &["scan", "empty"]).is_empty());
}

// Guards: `log` lists every change in log order with author, seq and lamport;
// `history` lists the signed changes that touched one row.
#[test]
fn log_and_history() {
    let (_temp, db, id) = new_db("a");
    let first = commit(&db, &["put", "notes", "n1", "title=one"]);
    let _other = commit(&db, &["put", "notes", "n2", "title=two"]);
    let third = commit(&db, &["incr", "notes", "n1", "views", "3"]);

    let log = ok_json_lines(&db, &["log"]);
    assert_eq!(log.len(), 4, "genesis and three writes: {log:?}");
    let seqs: Vec<u64> = log
        .iter()
        .map(|entry| entry["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(log[0]["ops"][0]["op"], "genesis");
    assert_eq!(
        log[0]["hash"], id["database"],
        "the database id is the genesis change's hash"
    );
    assert_eq!(log[1]["hash"], first);
    assert_eq!(log[3]["hash"], third);
    assert!(log.iter().all(|entry| entry["author"] == id["public_key"]));
    let positions: Vec<u64> = log
        .iter()
        .map(|entry| entry["position"].as_u64().expect("position"))
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "positions grow: {positions:?}"
    );
    let lamports: Vec<u64> = log
        .iter()
        .map(|entry| entry["lamport"].as_u64().expect("lamport"))
        .collect();
    assert!(
        lamports.windows(2).all(|pair| pair[0] < pair[1]),
        "lamports grow: {lamports:?}"
    );

    let text = ok(&db, &["log"]);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.contains("set notes/n1.title = \"one\""), "{text}");

    let history = ok_json_lines(&db, &["history", "notes", "n1"]);
    let hashes: Vec<&str> = history
        .iter()
        .map(|entry| entry["hash"].as_str().expect("hash"))
        .collect();
    assert_eq!(hashes, [first.as_str(), third.as_str()]);
    assert!(history.iter().all(|entry| entry["valid"] == true));
    let text = ok(&db, &["history", "notes", "n1"]);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("incr notes/n1.views by 3"), "{text}");
}

// Guards: `export`/`import` between two replicas; `export --since VV_FILE`
// with the other replica's `version-vector --json` holds exactly the changes
// it lacks; after the exchange both state hashes are equal.
#[test]
fn export_since_import_converges() {
    let (temp, a, id) = new_db("a");
    let b = temp.path().join("b");
    let b_id = ok_json(&b, &["join", id["database"].as_str().expect("database")]);
    commit(
        &a,
        &["grant", b_id["public_key"].as_str().expect("key"), "writer"],
    );
    commit(&a, &["put", "notes", "n1", "title=from a", "views=1"]);
    commit(&a, &["put", "notes", "n2", "title=also a"]);

    // First exchange: everything.
    let all = temp.path().join("all.peers");
    assert_eq!(export(&a, &all, None), 4, "genesis, b's grant, two writes");
    let report = import(&b, &all);
    assert_eq!(report["accepted"], 4, "{report}");
    assert_eq!(report["refused"], serde_json::json!([]));
    assert_eq!(state_hash(&a), state_hash(&b));
    // Importing again is idempotent.
    let again = import(&b, &all);
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["duplicates"], 4, "{again}");

    // Concurrent writes on both sides.
    let a_new = commit(&a, &["put", "notes", "n1", "title=a wins?"]);
    commit(&a, &["incr", "notes", "n1", "votes", "2"]);
    let b_new = commit(&b, &["put", "notes", "n1", "title=b wins?"]);
    assert_ne!(state_hash(&a), state_hash(&b));

    let b_vv = temp.path().join("b.vv.json");
    let vv_json = ok(&b, &["--json", "version-vector"]);
    let vv: Json = serde_json::from_str(&vv_json).expect("version vector JSON");
    assert_eq!(
        vv["authors"][id["public_key"].as_str().expect("key")]["seq"],
        4,
        "{vv}"
    );
    std::fs::write(&b_vv, vv_json).expect("writing vv");
    let a_vv = temp.path().join("a.vv.json");
    std::fs::write(&a_vv, ok(&a, &["--json", "version-vector"])).expect("writing vv");

    let a_to_b = temp.path().join("a-to-b.peers");
    let b_to_a = temp.path().join("b-to-a.peers");
    assert_eq!(
        export(&a, &a_to_b, Some(&b_vv)),
        2,
        "only a's two new changes"
    );
    assert_eq!(export(&b, &b_to_a, Some(&a_vv)), 1, "only b's one change");

    let into_b = import(&b, &a_to_b);
    assert_eq!(into_b["accepted"], 2, "{into_b}");
    assert_eq!(into_b["duplicates"], 0, "{into_b}");
    let into_a = import(&a, &b_to_a);
    assert_eq!(into_a["accepted"], 1, "{into_a}");
    assert_eq!(into_a["duplicates"], 0, "{into_a}");

    let hash = state_hash(&a);
    assert_eq!(hash, state_hash(&b), "replicas diverged after the exchange");
    assert_eq!(ok(&a, &["scan", "notes"]), ok(&b, &["scan", "notes"]));
    let a_log: Vec<Json> = ok_json_lines(&a, &["log"])
        .into_iter()
        .map(|entry| entry["hash"].clone())
        .collect();
    assert!(
        a_log.contains(&Json::from(b_new.as_str())) && a_log.contains(&Json::from(a_new.as_str()))
    );

    // Nothing left to send either way.
    std::fs::write(&b_vv, ok(&b, &["--json", "version-vector"])).expect("writing vv");
    assert_eq!(export(&a, &temp.path().join("empty.peers"), Some(&b_vv)), 0);
}

/// The offset of the only occurrence of `needle` in `haystack`.
fn find_once(haystack: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected {:?} exactly once",
        String::from_utf8_lossy(needle)
    );
    hits[0]
}

// Guards: `import` of a change-set file with one tampered change exits
// non-zero, names the refused change on stderr, applies the valid changes and
// writes nothing of the tampered one.
#[test]
fn import_refuses_tampered_change() {
    let (temp, a, id) = new_db("a");
    let author = id["public_key"].as_str().expect("key").to_owned();
    let b = temp.path().join("b");
    ok(&b, &["join", id["database"].as_str().expect("database")]);
    commit(&a, &["put", "notes", "good", "title=valid"]);
    let before_tampered = state_hash(&a);
    let tampered = commit(&a, &["put", "notes", "bad", "title=TAMPER-ME"]);

    let clean = temp.path().join("clean.peers");
    assert_eq!(export(&a, &clean, None), 3);
    // Change-set file: header | (length u32 | change bytes)* | end. The string
    // sits inside the last change's body: flipping a letter keeps the change
    // well-formed, so only its hash and signature can catch it.
    let mut bytes = std::fs::read(&clean).expect("reading export");
    let at = find_once(&bytes, b"TAMPER-ME");
    bytes[at] ^= 0x20; // 'T' -> 't'
    let forged = temp.path().join("forged.peers");
    std::fs::write(&forged, &bytes).expect("writing forged file");

    let output = run(Some(&b), &["import", forged.to_str().expect("path")]);
    let stderr = fails(&output, "import of a tampered file");
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("refused change "))
        .collect();
    assert_eq!(refused.len(), 1, "{stderr}");
    let named_hash = refused[0]
        .strip_prefix("refused change ")
        .and_then(|rest| rest.split(':').next())
        .expect("refused change HASH: reason");
    assert!(is_hex64(named_hash), "{stderr}");
    assert_ne!(named_hash, tampered, "the tampered bytes hash differently");
    assert!(
        refused[0].contains("signature") && refused[0].contains(&author),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 3 changes"), "{stderr}");

    // The valid changes were applied, the tampered one was not written.
    assert_eq!(state_hash(&b), before_tampered);
    ok(&b, &["get", "notes", "good"]);
    fails_one_line(
        &run(Some(&b), &["get", "notes", "bad"]),
        "get of the refused row",
    );
    let log = ok_json_lines(&b, &["log"]);
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter()
            .all(|entry| entry["hash"] != named_hash && entry["hash"] != tampered.as_str())
    );
    assert_eq!(
        ok_json(&b, &["version-vector"])["authors"][&author]["seq"],
        2
    );
    ok(&b, &["verify"]);

    // The genuine change is still welcome afterwards.
    let report = import(&b, &clean);
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(state_hash(&b), state_hash(&a));
}

/// Flips a byte in the middle of the first record's payload of the first
/// log segment (header 32 bytes, then frames `length u32 | crc u32 | payload`).
fn corrupt_first_log_record(db: &Path) {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(db.join("log"))
        .expect("log dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    segments.sort();
    let segment = segments.first().expect("a log segment");
    let mut bytes = std::fs::read(segment).expect("reading segment");
    let length = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes")) as usize;
    assert!(
        length > 0 && 40 + length < bytes.len(),
        "more records follow the first"
    );
    bytes[40 + length / 2] ^= 0x01;
    std::fs::write(segment, &bytes).expect("writing segment");
}

// Guards: `verify` exits 0 on a healthy database and non-zero with a one-line
// `peers: error:` after a log record is corrupted (whether opening or
// verifying catches it).
#[test]
fn verify_detects_corrupt_log() {
    let (_temp, db, _) = new_db("a");
    for index in 0..5 {
        commit(
            &db,
            &[
                "put",
                "notes",
                &format!("n{index}"),
                &format!("index={index}"),
            ],
        );
    }
    let report = ok_json(&db, &["verify"]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["changes"], 6, "{report}");
    assert_eq!(report["live_state_hash"], report["rebuilt_state_hash"]);
    assert!(ok(&db, &["verify"]).starts_with("verified 6 changes"));

    corrupt_first_log_record(&db);
    let stderr = fails_one_line(&run(Some(&db), &["verify"]), "verify of a corrupt log");
    assert!(
        stderr.to_lowercase().contains("corrupt") || stderr.contains("checksum"),
        "{stderr}"
    );
}

// Guards: `rebuild` recreates the view from the log with the same state hash.
#[test]
fn rebuild_keeps_state_hash() {
    let (_temp, db, _) = new_db("a");
    commit(&db, &["put", "notes", "n1", "title=one", "views=1"]);
    commit(&db, &["incr", "notes", "n1", "votes", "4"]);
    commit(&db, &["put", "notes", "n2", "title=two"]);
    commit(&db, &["delete", "notes", "n2"]);
    let before = state_hash(&db);
    let scan = ok(&db, &["scan", "notes"]);
    let report = ok_json(&db, &["rebuild"]);
    assert_eq!(report["state_hash"], before.as_str(), "{report}");
    assert_eq!(report["changes"], 5, "{report}");
    assert_eq!(state_hash(&db), before);
    assert_eq!(ok(&db, &["scan", "notes"]), scan);
    assert!(ok(&db, &["rebuild"]).contains(&before));
}

// Guards: the owner signs a checkpoint (`peers checkpoint`), which moves no
// row; `peers checkpoints` lists it as confirmed, on the owner and on a
// replica that imported everything; a replica that is not the owner is told
// only the owner checkpoints.
#[test]
fn checkpoint_and_checkpoints() {
    let (temp, db, id) = new_db("owner");
    assert!(ok(&db, &["checkpoints"]).contains("no checkpoint"));
    commit(&db, &["put", "notes", "n1", "title=one"]);
    commit(&db, &["incr", "notes", "n1", "views", "2"]);
    let before = state_hash(&db);
    let made = ok_json(&db, &["checkpoint"]);
    let hash = made["checkpoint"]
        .as_str()
        .expect("checkpoint hash")
        .to_owned();
    assert!(is_hex64(&hash), "{made}");
    assert_eq!(made["authors"], 1, "{made}");
    assert_eq!(made["changes"], 3, "genesis and two commits: {made}");
    assert_eq!(state_hash(&db), before, "a checkpoint moves no row");
    let listed = ok_json_lines(&db, &["checkpoints"]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["checkpoint"], hash.as_str());
    assert_eq!(listed[0]["verdict"], "confirmed", "{listed:?}");
    assert_eq!(listed[0]["standing"], true, "{listed:?}");
    assert!(ok(&db, &["checkpoints"]).contains("(standing)"));
    assert!(ok(&db, &["log"]).contains("checkpoint at 1 author"));

    let file = temp.path().join("all.peersset");
    export(&db, &file, None);
    let replica = temp.path().join("replica");
    let database = id["database"].as_str().expect("database id");
    ok_json(&replica, &["join", database]);
    import(&replica, &file);
    let listed = ok_json_lines(&replica, &["checkpoints"]);
    assert_eq!(listed[0]["verdict"], "confirmed", "{listed:?}");
    let refused = fails_one_line(
        &run(Some(&replica), &["checkpoint"]),
        "a member's checkpoint",
    );
    assert!(refused.contains("only the owner"), "{refused}");

    // The snapshot file of that checkpoint, written on the replica, checks
    // out without a database; a damaged copy is refused, saying why.
    let snapshot = temp.path().join("at-checkpoint.peerssnap");
    let written = ok_json(
        &replica,
        &["snapshot", "write", snapshot.to_str().expect("utf-8 path")],
    );
    assert_eq!(written["checkpoint"], hash.as_str(), "{written}");
    let checked = ok_json(
        &replica,
        &["snapshot", "check", snapshot.to_str().expect("utf-8 path")],
    );
    assert_eq!(checked["checkpoint"], hash.as_str(), "{checked}");
    assert_eq!(checked["entries"], written["entries"], "{checked}");
    assert_eq!(checked["changes"], 3, "{checked}");
    let mut bytes = std::fs::read(&snapshot).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&snapshot, &bytes).expect("write");
    let refused = fails_one_line(
        &run(
            None,
            &["snapshot", "check", snapshot.to_str().expect("utf-8 path")],
        ),
        "a damaged snapshot",
    );
    assert!(refused.contains("checksum"), "{refused}");
}

// Guards: `peers trim` without a standing checkpoint says to make one; after
// `peers checkpoint` it trims (reporting the bytes freed) and moves no row;
// `peers log` then holds only the changes above the checkpoint and says on
// stderr what is trimmed; verify and rebuild start from the snapshot; a
// second trim at the same checkpoint is refused, saying so. `peers join DB_ID
// --snapshot FILE` makes a replica holding the state at the checkpoint, and
// refuses the snapshot of another database.
#[test]
fn trim_after_a_checkpoint() {
    let (temp, db, id) = new_db("owner");
    commit(&db, &["put", "notes", "n1", "title=one"]);
    commit(&db, &["incr", "notes", "n1", "views", "2"]);
    let refused = fails_one_line(&run(Some(&db), &["trim"]), "no checkpoint");
    assert!(refused.contains("peers checkpoint"), "{refused}");
    let made = ok_json(&db, &["checkpoint"]);
    let before = state_hash(&db);
    let scan = ok(&db, &["scan", "notes"]);

    // A new replica from the checkpoint's snapshot file holds the same state.
    let snapshot = temp.path().join("at.peerssnap");
    let snapshot_arg = snapshot.to_str().expect("utf-8 path");
    ok_json(&db, &["snapshot", "write", snapshot_arg]);
    let database = id["database"].as_str().expect("database id");
    let fresh = temp.path().join("fresh");
    let joined = ok_json(&fresh, &["join", database, "--snapshot", snapshot_arg]);
    assert_eq!(joined["database"], database, "{joined}");
    assert_eq!(state_hash(&fresh), before);
    assert_eq!(ok(&fresh, &["scan", "notes"]), scan);
    let other = temp.path().join("other");
    let wrong = fails_one_line(
        &run(
            Some(&other),
            &["join", &"ab".repeat(32), "--snapshot", snapshot_arg],
        ),
        "a snapshot of another database",
    );
    assert!(wrong.contains("is a snapshot of database"), "{wrong}");
    let trimmed = ok_json(&db, &["trim"]);
    assert_eq!(trimmed["checkpoint"], made["checkpoint"], "{trimmed}");
    assert_eq!(trimmed["generation"], 1, "{trimmed}");
    assert_eq!(trimmed["changes_settled"], 3, "{trimmed}");
    assert_eq!(trimmed["changes_kept"], 1, "the checkpoint: {trimmed}");
    assert!(trimmed["bytes_freed"].is_i64(), "{trimmed}");
    assert_eq!(state_hash(&db), before);
    assert_eq!(ok(&db, &["scan", "notes"]), scan);
    let log = run(Some(&db), &["--json", "log"]);
    assert!(log.status.success(), "{}", text(&log.stderr));
    let stderr = text(&log.stderr);
    assert!(stderr.contains("is trimmed"), "{stderr}");
    assert!(
        stderr.contains(made["checkpoint"].as_str().expect("hash")),
        "{stderr}"
    );
    assert_eq!(ok_json_lines(&db, &["log"]).len(), 1);
    assert!(ok(&db, &["verify"]).contains(&before));
    assert!(ok(&db, &["rebuild"]).contains(&before));
    let again = fails_one_line(&run(Some(&db), &["trim"]), "a second trim");
    assert!(again.contains("already trimmed"), "{again}");
}

// Guards: `peers demo` runs three replicas to convergence and exits 0.
#[test]
fn demo_converges() {
    let output = run(None, &["demo"]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("converged"), "{stdout}");
}

// Guards: usage errors are one line starting `peers: error:` with a non-zero
// exit: missing --db, a directory that is not a database, a bad DB_ID.
#[test]
fn errors_are_one_line() {
    let temp = tempfile::tempdir().expect("temp dir");
    let stderr = fails_one_line(&run(None, &["get", "t", "r"]), "missing --db");
    assert!(stderr.contains("--db"), "{stderr}");

    let missing = temp.path().join("nothing-here");
    fails_one_line(&run(Some(&missing), &["state-hash"]), "unknown db dir");
    fails_one_line(
        &run(Some(temp.path()), &["log"]),
        "an empty dir that is no database",
    );

    for bad in ["xyz", "00", &"g".repeat(64), &"0".repeat(63)] {
        let stderr = fails_one_line(
            &run(Some(&temp.path().join("j")), &["join", bad]),
            "bad DB_ID",
        );
        assert!(stderr.contains("DB_ID"), "{stderr}");
    }
    assert!(
        !temp.path().join("j").exists(),
        "a refused join must not create the directory"
    );
}

/// `peers serve`, stopped with SIGINT when dropped (as Ctrl-C would).
struct Server {
    child: std::process::Child,
    address: String,
}

impl Server {
    /// Starts `peers --json --db DB serve --listen 127.0.0.1:0` and reads the
    /// address from its first line.
    fn start(db: &Path) -> Server {
        Server::start_at(db, "127.0.0.1:0")
    }

    /// Starts `peers --json --db DB serve --listen LISTEN`.
    fn start_at(db: &Path, listen: &str) -> Server {
        Server::start_with(db, &["--listen", listen])
    }

    /// Starts `peers --json --db DB serve ARGS...`.
    fn start_with(db: &Path, args: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = peers(Some(db))
            .arg("--json")
            .arg("serve")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn peers serve");
        let stdout = child.stdout.take().expect("piped");
        let mut stdout = std::io::BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first).expect("serve prints a line");
        // Keep reading, as a terminal would: a closed pipe would stop it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let listening: Json = serde_json::from_str(&first).expect("JSON line");
        assert_eq!(listening["event"], "listening", "{first}");
        let address = listening["address"].as_str().expect("address").to_owned();
        Server { child, address }
    }

    /// Sends SIGINT and requires a clean exit.
    fn stop(self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success());
        let output = self.child.wait_with_output().expect("serve exits");
        assert!(
            output.status.success(),
            "serve exited with {} after Ctrl-C: {}",
            output.status,
            text(&output.stderr)
        );
    }
}

// Guards the two-terminal stories of issues 4 and 5: `serve` on the owner's
// replica; a joined replica is refused until the owner grants it; then
// `sync` converges both ways and prints what moved; a second sync moves
// nothing in one round trip; `peers` lists the server; a wrong --expect-key
// and a dead address fail with one error line; after `revoke`, the revoked
// replica can no longer sync and its later change never reaches the owner;
// `members` lists roles; Ctrl-C stops the server cleanly.
#[test]
fn serve_grant_sync_revoke() {
    let (_temp, a, id) = new_db("a");
    let b = a.with_file_name("b");
    let b_id = ok_json(&b, &["join", id["database"].as_str().expect("id")]);
    let b_key = b_id["public_key"].as_str().expect("key").to_owned();
    commit(&a, &["put", "notes", "n1", "title=from a"]);
    let server = Server::start(&a);

    let output = run(Some(&b), &["sync", &server.address]);
    let stderr = fails_one_line(&output, "sync before being granted");
    assert!(
        stderr.contains("not a member") || stderr.contains("closed"),
        "{stderr}"
    );
    server.stop();
    commit(&a, &["grant", &b_key, "writer"]);
    let server = Server::start(&a);

    let report = ok_json(&b, &["sync", &server.address]);
    assert_eq!(report["changes_sent"], 0, "{report}");
    assert_eq!(
        report["changes_received"], 3,
        "genesis, n1, grant: {report}"
    );
    assert_eq!(report["round_trips"], 2);
    assert_eq!(report["peer"], id["public_key"]);
    commit(&b, &["put", "notes", "n2", "title=from b"]);
    let report = ok_json(&b, &["sync", &server.address]);
    assert_eq!(report["changes_sent"], 1, "{report}");
    assert!(report["bytes_sent"].as_u64().expect("bytes") > 0);
    let again = ok_json(&b, &["sync", &server.address]);
    assert_eq!(again["round_trips"], 1, "{again}");
    assert_eq!(again["changes_received"], 0);
    let text = ok(&b, &["sync", &server.address]);
    assert!(text.contains("sent 0 changes"), "{text}");

    let peers = ok_json(&b, &["peers"]);
    assert_eq!(peers[0]["public_key"], id["public_key"], "{peers}");
    assert_eq!(peers[0]["how"], "dialed");

    let wrong = "0".repeat(64);
    let output = run(Some(&b), &["sync", &server.address, "--expect-key", &wrong]);
    let stderr = fails_one_line(&output, "sync with a wrong --expect-key");
    assert!(stderr.contains("expected peer"), "{stderr}");
    let output = run(Some(&b), &["sync", "127.0.0.1:1"]);
    fails_one_line(&output, "sync with a dead address");
    server.stop();
    assert_eq!(state_hash(&a), state_hash(&b));
    assert_eq!(
        ok_json(&a, &["get", "notes", "n2"])["title"],
        "from b",
        "a got b's change"
    );

    commit(&a, &["revoke", &b_key]);
    let members = ok_json(&a, &["members"]);
    assert_eq!(members["members"][0]["role"], "owner", "{members}");
    assert_eq!(members["members"][1]["public_key"], b_key.as_str());
    assert_eq!(members["members"][1]["revoked_after"], 1, "{members}");
    commit(&b, &["put", "notes", "n3", "title=after revocation"]);
    let server = Server::start(&a);
    let output = run(Some(&b), &["sync", &server.address]);
    fails_one_line(&output, "sync after being revoked");
    server.stop();
    let output = run(Some(&a), &["get", "notes", "n3"]);
    fails_one_line(&output, "b's change after its revocation");
}

// Guards the join-by-ticket story (issue 12): `invite` prints a ticket and
// its QR code; with `serve` running, `join TICKET` creates the replica,
// redeems the invite and syncs with a role; a spent, damaged or expired
// ticket fails with one error line and leaves no directory behind; a
// writer cannot invite.
#[test]
fn invite_and_join_by_ticket() {
    let (_temp, a, id) = new_db("a");
    commit(&a, &["put", "notes", "n1", "title=from a"]);
    // A free port for the ticket: `serve` must know it before it starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let shown = ok(&a, &["invite", "--address", &address]);
    assert!(shown.contains('█'), "a QR code: {shown}");
    assert!(shown.contains("\nPEERS"), "the ticket's text: {shown}");
    let invite = ok_json(&a, &["invite", "--address", &address, "--role", "writer"]);
    let ticket = invite["ticket"].as_str().expect("ticket").to_owned();
    assert_eq!(invite["role"], "writer");
    let short = ok_json(&a, &["invite", "--address", &address, "--expires", "1s"]);
    let server = Server::start_at(&a, &address);

    let b = a.with_file_name("b");
    let joined = ok_json(&b, &["join", &ticket]);
    assert_eq!(joined["role"], "writer", "{joined}");
    assert_eq!(joined["database"], id["database"]);
    assert_eq!(joined["peer"], id["public_key"]);
    assert_eq!(
        joined["changes_received"], 3,
        "genesis, n1, grant: {joined}"
    );
    assert_eq!(ok_json(&b, &["get", "notes", "n1"])["title"], "from a");

    let c = a.with_file_name("c");
    let stderr = fails_one_line(&run(Some(&c), &["join", &ticket]), "a spent ticket");
    assert!(stderr.contains("already used"), "{stderr}");
    assert!(!c.exists(), "a failed join leaves no directory");
    let mut damaged = ticket.clone();
    damaged.replace_range(30..31, if &ticket[30..31] == "A" { "B" } else { "A" });
    let stderr = fails_one_line(&run(Some(&c), &["join", &damaged]), "a damaged ticket");
    assert!(stderr.contains("damaged"), "{stderr}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let short = short["ticket"].as_str().expect("ticket");
    let stderr = fails_one_line(&run(Some(&c), &["join", short]), "an expired ticket");
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(!c.exists());
    // An invite made while `serve` runs (through its control socket) is
    // honoured by the serving node at once.
    let ticket = ok_json(&a, &["invite", "--address", &address, "--role", "reader"]);
    let ticket = ticket["ticket"].as_str().expect("ticket");
    let joined = ok_json(&c, &["join", ticket]);
    assert_eq!(joined["role"], "reader", "{joined}");
    server.stop();

    let stderr = fails_one_line(
        &run(Some(&b), &["invite", "--address", &address]),
        "a writer invites",
    );
    assert!(stderr.contains("cannot grant"), "{stderr}");
    let stderr = fails_one_line(&run(Some(&a), &["invite"]), "a ticket without a way in");
    assert!(stderr.contains("--signal"), "{stderr}");
}

/// Every op has a text and a JSON form in `peers log` (the genesis, the
/// members-only flag, grants and revocations used to print "unknown op").
#[test]
fn log_shows_every_op() {
    let (_temp, db, id) = new_db("a");
    let key = "ab".repeat(32);
    commit(&db, &["grant", &key, "writer"]);
    commit(&db, &["revoke", &key]);
    let text = ok(&db, &["log"]);
    assert!(!text.contains("unknown"), "{text}");
    assert!(text.contains("genesis (nonce "), "{text}");
    assert!(text.contains("members-only"), "{text}");
    assert!(text.contains(&format!("grant writer to {key}")), "{text}");
    assert!(
        text.contains(&format!("revoke {key} after seq 0")),
        "{text}"
    );
    let log = ok_json_lines(&db, &["log"]);
    let ops: Vec<&Json> = log
        .iter()
        .flat_map(|entry| entry["ops"].as_array().expect("ops"))
        .collect();
    let kinds: Vec<&str> = ops
        .iter()
        .map(|op| op["op"].as_str().expect("op"))
        .collect();
    assert_eq!(kinds, ["genesis", "members-only", "grant", "revoke"]);
    assert_eq!(ops[0]["nonce"].as_str().map(str::len), Some(32));
    assert_eq!(ops[2]["key"], key);
    assert_eq!(ops[2]["role"], "writer");
    assert_eq!(ops[3]["key"], key);
    assert_eq!(ops[3]["last_seq"], 0);
    assert_eq!(log[0]["hash"], id["database"]);
}

/// `peers incr` on a field that holds text is refused with a message that
/// says why, and nothing is signed.
#[test]
fn incr_of_text_is_refused() {
    let (_temp, db, _id) = new_db("a");
    commit(&db, &["put", "notes", "n1", "title=hello"]);
    let before = ok_json_lines(&db, &["log"]).len();
    let stderr = fails_one_line(
        &run(Some(&db), &["incr", "notes", "n1", "title", "1"]),
        "incr of a text field",
    );
    assert!(stderr.contains("not a counter"), "{stderr}");
    assert_eq!(ok_json_lines(&db, &["log"]).len(), before);
    commit(&db, &["incr", "notes", "n1", "views", "2"]);
}

/// `peers --version` names the formats and protocols this build speaks (from
/// their constants); `peers completions SHELL` and `peers man` print a
/// completion script and a manual page that know every command.
#[test]
fn version_completions_and_man() {
    let version = text(&run(None, &["--version"]).stdout);
    for part in [
        format!(
            "change format {}, {} for checkpoints",
            peers_engine::CHANGE_FORMAT_VERSION,
            peers_engine::CHECKPOINT_FORMAT_VERSION
        ),
        format!("sync protocol {}", peers_net::SYNC_VERSION),
        format!("secure channel {}", peers_net::CHANNEL_VERSION),
        format!("view format {}", peers_engine::VIEW_FORMAT_VERSION),
        format!("log format {}", peers_engine::LOG_FORMAT_VERSION),
    ] {
        assert!(version.contains(&part), "{version} lacks {part}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let output = run(None, &["completions", shell]);
        assert!(output.status.success(), "{shell}");
        let script = text(&output.stdout);
        for command in ["serve", "sync", "grant", "history", "completions"] {
            assert!(script.contains(command), "{shell} script lacks {command}");
        }
    }
    let output = run(None, &["completions", "tcsh"]);
    assert!(!output.status.success(), "an unknown shell is refused");
    let man = text(&run(None, &["man"]).stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH peers 1"),
        "{man}"
    );
    assert!(man.contains("serve") && man.contains("grant"), "{man}");
}

/// Every command that reads, as `peers` prints it (text and JSON), with its
/// exit code and stderr: the same whether it ran here or in the holder.
fn read_commands(db: &Path) -> Vec<(Vec<&'static str>, Output)> {
    let commands: Vec<Vec<&'static str>> = vec![
        vec!["id"],
        vec!["get", "notes", "n1"],
        vec!["get", "notes", "missing"],
        vec!["scan", "notes"],
        vec!["log"],
        vec!["history", "notes", "n1"],
        vec!["version-vector"],
        vec!["state-hash"],
        vec!["verify"],
        vec!["members"],
        vec!["peers"],
        vec!["incr", "notes", "n1", "title", "1"],
        vec!["grant", "not-a-key", "writer"],
    ];
    let mut outputs = Vec::new();
    for command in commands {
        for json in [false, true] {
            let mut args = if json { vec!["--json"] } else { vec![] };
            args.extend_from_slice(&command);
            let output = run(Some(db), &args);
            outputs.push((args, output));
        }
    }
    outputs
}

/// The control socket's path.
fn socket(db: &Path) -> PathBuf {
    db.join("control.sock")
}

// Guards issue 13's first story: with `serve` holding the database, every
// command typed in another terminal works (through the control socket), and
// prints exactly what it prints with no holder, with the same exit code;
// writes are signed by the holder's identity; relative paths mean the
// client's directory; the socket is owner-only and goes away with the
// holder; a second `serve`, and `rebuild`, are refused naming the holder.
#[test]
fn every_command_works_while_served_with_the_same_output() {
    use std::os::unix::fs::PermissionsExt;
    let (temp, a, id) = new_db("a");
    commit(&a, &["put", "notes", "n1", "title=hello", "votes=2"]);
    commit(&a, &["incr", "notes", "n1", "likes", "3"]);
    let direct = read_commands(&a);
    assert!(!socket(&a).exists(), "no holder, no socket");

    let server = Server::start(&a);
    let mode = std::fs::metadata(socket(&a))
        .expect("the holder listens on DIR/control.sock")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let leftovers: Vec<_> = std::fs::read_dir(&a)
        .expect("read dir")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(".control"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let held = read_commands(&a);
    for ((args, direct), (_, held)) in direct.iter().zip(&held) {
        assert_eq!(
            (text(&held.stdout), text(&held.stderr), held.status.code()),
            (
                text(&direct.stdout),
                text(&direct.stderr),
                direct.status.code()
            ),
            "peers {args:?} through the holder (left) and directly (right)"
        );
    }

    // Writes through the holder, signed by its key; the holder's own
    // subscribers see them (they are its commits).
    let change = commit(&a, &["put", "notes", "n2", "title=typed elsewhere"]);
    commit(&a, &["delete", "notes", "n1"]);
    let log = ok_json_lines(&a, &["log"]);
    let last = log.iter().find(|entry| entry["hash"] == change.as_str());
    assert_eq!(
        last.expect("the change is in the log")["author"],
        id["public_key"]
    );
    let (_b_temp, b, _) = new_db("b");
    let b_key = ok_json(&b, &["id"])["public_key"]
        .as_str()
        .expect("key")
        .to_owned();
    commit(&a, &["grant", &b_key, "reader"]);
    commit(&a, &["revoke", &b_key]);

    // Export and import with relative paths, from another directory: the
    // files are where the client meant them, and the output names them as
    // typed.
    let elsewhere = temp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let in_elsewhere = |args: &[&str]| {
        peers(Some(&a))
            .current_dir(&elsewhere)
            .args(args)
            .output()
            .expect("run peers")
    };
    let output = in_elsewhere(&["export", "all.peers"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "exported 7 changes to all.peers\n");
    assert!(elsewhere.join("all.peers").exists());
    let output = in_elsewhere(&["import", "all.peers"]);
    assert_eq!(
        text(&output.stdout),
        "accepted 0 (inert 0), duplicates 7, pending 0, refused 0\n",
        "{}",
        text(&output.stderr)
    );

    let output = run(Some(&a), &["serve", "--listen", "127.0.0.1:0"]);
    let stderr = fails_one_line(&output, "a second serve");
    let pid = server.child.id().to_string();
    assert!(
        stderr.contains(&format!("process {pid} (")) && stderr.contains("serve needs"),
        "{stderr}"
    );
    let stderr = fails_one_line(&run(Some(&a), &["rebuild"]), "rebuild while served");
    assert!(stderr.contains(&pid), "{stderr}");

    server.stop();
    assert!(!socket(&a).exists(), "the holder removes its socket");
    assert_eq!(
        ok(&a, &["get", "notes", "n2"]),
        "title=\"typed elsewhere\"\n"
    );
}

// Guards: a holder killed with SIGKILL leaves its socket behind; the next
// command finds nobody there, removes it and opens the database itself.
// (cli/tests/embed.rs: a holder without a socket is named in the error.)
#[test]
fn stale_socket_is_removed() {
    let (_temp, a, _) = new_db("a");
    commit(&a, &["put", "notes", "n1", "title=before"]);
    let mut server = Server::start(&a);
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    assert!(socket(&a).exists(), "SIGKILL leaves the socket file");
    assert_eq!(ok(&a, &["get", "notes", "n1"]), "title=\"before\"\n");
    assert!(!socket(&a).exists(), "the stale socket was removed");
}

// Guards: commands racing the holder's shutdown never hang, never fail and
// never lose an acknowledged write: each reaches the holder before it stops
// (and runs there), or is turned away unrun (`RETRY`) or finds no holder,
// and then opens the database itself once the holder lets go.
#[test]
fn commands_racing_the_holders_shutdown_all_succeed() {
    let (_temp, a, _) = new_db("a");
    for round in 0..3 {
        let server = Server::start(&a);
        let writers: Vec<_> = (0..16u64)
            .map(|index| {
                let a = a.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(15 * index));
                    let row = format!("r{round}-{index}");
                    let output = run(Some(&a), &["--json", "put", "notes", &row, "n=1"]);
                    (row, output)
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(100));
        server.stop();
        for writer in writers {
            let (row, output) = writer.join().expect("writer thread");
            assert!(
                output.status.success(),
                "put {row} racing the shutdown: {}",
                text(&output.stderr)
            );
            assert_eq!(
                ok_json(&a, &["get", "notes", &row])["n"],
                1,
                "acknowledged {row} is there"
            );
        }
    }
}

// Guards `peers watch`: through a serving holder, it prints a change made
// on another replica as it arrives (and a local one, marked), one JSON
// object per line; hanging up ends it without stopping the holder; with no
// holder, `watch` holds the database itself and prints what other commands
// write through it.
#[test]
fn watch_prints_remote_and_local_changes_as_they_apply() {
    use std::io::BufRead;
    let (_temp, a, id) = new_db("a");
    let b = a.with_file_name("b");
    let b_id = ok_json(&b, &["join", id["database"].as_str().expect("id")]);
    let b_key = b_id["public_key"].as_str().expect("key").to_owned();
    commit(&a, &["grant", &b_key, "writer"]);
    let server_a = Server::start(&a);
    let server_b = Server::start_with(
        &b,
        &["--listen", "127.0.0.1:0", "--connect", &server_a.address],
    );

    let spawn_watch = |db: &Path, args: &[&str]| {
        let mut child = peers(Some(db))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn peers watch");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let (lines, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        (child, receive)
    };
    let next = |receive: &std::sync::mpsc::Receiver<String>, what: &str| -> Json {
        let line = receive
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|error| panic!("watch printed nothing for {what}: {error}"));
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("{line}: {error}"))
    };

    let (mut watch, lines) = spawn_watch(&a, &["--json", "watch", "notes"]);
    // Wait until the watch subscribed: a local write shows up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let local = loop {
        commit(&a, &["put", "notes", "local", "k=v"]);
        if let Ok(line) = lines.recv_timeout(std::time::Duration::from_millis(500)) {
            break serde_json::from_str::<Json>(&line).expect("JSON");
        }
        assert!(std::time::Instant::now() < deadline, "watch never started");
    };
    assert_eq!(local["local"], true, "{local}");
    assert_eq!(local["ops"][0]["op"], "set", "{local}");
    commit(&a, &["put", "other", "x", "k=v"]);
    commit(&b, &["put", "notes", "n1", "title=from b"]);
    let remote = next(&lines, "b's change");
    assert_eq!(remote["local"], false, "{remote}");
    assert_eq!(remote["author"], b_key.as_str());
    assert_eq!(remote["ops"][0]["row"], "n1", "{remote}");
    assert_eq!(remote["ops"][0]["value"], "from b", "{remote}");
    watch.kill().expect("kill watch");
    watch.wait().expect("reaped");
    assert_eq!(ok_json(&a, &["get", "notes", "n1"])["title"], "from b");
    server_b.stop();
    server_a.stop();

    // No holder: the watch holds the database and listens.
    let (mut watch, lines) = spawn_watch(&a, &["watch", "notes", "n2"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !socket(&a).exists() {
        assert!(std::time::Instant::now() < deadline, "watch never listened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    commit(&a, &["put", "notes", "n1", "title=not watched"]);
    commit(&a, &["put", "notes", "n2", "title=watched"]);
    let line = lines
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("watch prints the n2 change");
    assert!(
        line.contains("(here)") && line.contains("n2") && !line.contains("n1"),
        "{line}"
    );
    watch.kill().expect("kill watch");
    watch.wait().expect("reaped");
}

// Guards `peers export --automerge` and `import --automerge`: the file is an
// automerge document the automerge library reads by itself (a map per row),
// and importing it writes the rows into a table as one change.
#[test]
fn automerge_export_and_import() {
    use automerge::ReadDoc;
    let (temp, a, _) = new_db("a");
    commit(&a, &["put", "notes", "n1", "title=hello", "votes=2"]);
    commit(&a, &["incr", "notes", "n2", "likes", "5"]);
    let file = temp.path().join("notes.automerge");
    let file_arg = file.to_str().expect("UTF-8");
    let report = ok_json(&a, &["export", "--automerge", "notes", file_arg]);
    assert_eq!(report["rows"], 2, "{report}");
    let document = automerge::AutoCommit::load(&std::fs::read(&file).expect("read"))
        .expect("automerge loads it");
    let (_, n1) = document
        .get(automerge::ROOT, "n1")
        .expect("read")
        .expect("row n1");
    let (title, _) = document.get(&n1, "title").expect("read").expect("title");
    assert_eq!(title.to_string(), "\"hello\"");
    let (votes, _) = document.get(&n1, "votes").expect("read").expect("votes");
    assert_eq!(votes.to_string(), "2");

    let imported = ok_json(&a, &["import", "--automerge", "copy", file_arg]);
    assert_eq!(imported["rows"], 2, "{imported}");
    assert_eq!(
        ok(&a, &["scan", "copy"]),
        ok(&a, &["scan", "notes"]),
        "the copy holds the same rows"
    );
    let output = run(Some(&a), &["import", "--automerge", "t", "/nonexistent/x"]);
    fails_one_line(&output, "import of a missing file");
    std::fs::write(&file, b"not automerge").expect("write");
    let output = run(Some(&a), &["import", "--automerge", "t", file_arg]);
    let stderr = fails_one_line(&output, "import of a file that is not automerge");
    assert!(stderr.contains("not an automerge document"), "{stderr}");
    let output = run(
        Some(&a),
        &["export", "--automerge", "t", "x", "--since", "vv"],
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "--since and --automerge conflict"
    );
}

// Guards issue 16's backup commands end to end through the binary: `backup
// init` prints the recovery key once; `serve --backup-every` backs up in the
// background while the other commands (a write, `backup run`, `backup list`)
// reach the holder; after the replica is lost, `backup restore` (key from
// PEERS_RECOVERY_KEY) makes a replica that `verify` accepts with the same
// state hash; a restore into an existing directory or with a wrong key is a
// one-line error.
#[test]
fn backup_serve_restore_round_trip() {
    let (temp, a, _) = new_db("a");
    let store = temp.path().join("store");
    let store_text = store.to_str().expect("UTF-8 path");
    let init = ok_json(&a, &["backup", "init", "--to", store_text]);
    let key = init["recovery_key"]
        .as_str()
        .expect("a new backup prints its recovery key")
        .to_owned();
    assert!(key.starts_with("AGE-SECRET-KEY-1"), "{key}");
    let again = run(Some(&a), &["backup", "init", "--to", store_text]);
    assert!(fails_one_line(&again, "init twice").contains("already backs up to"));

    let server = Server::start_with(&a, &["--listen", "127.0.0.1:0", "--backup-every", "1s"]);
    commit(&a, &["put", "notes", "n1", "title=served"]);
    let first = ok_json(&a, &["backup", "run"]);
    assert!(first["run"].as_u64().expect("run") >= 1, "{first}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let runs = loop {
        let runs = ok_json_lines(&a, &["backup", "list"]);
        // One line per run, then the summary.
        if runs.len() >= 3 || std::time::Instant::now() > deadline {
            break runs;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        runs.len() >= 3,
        "the background backup ran besides `backup run`: {runs:?}"
    );
    server.stop();
    let hash = state_hash(&a);
    std::fs::remove_dir_all(&a).expect("lose the replica");

    let restored = temp.path().join("restored");
    let restored_text = restored.to_str().expect("UTF-8 path");
    let output = peers(None)
        .env("PEERS_RECOVERY_KEY", &key)
        .args([
            "--json",
            "backup",
            "restore",
            "--from",
            store_text,
            restored_text,
        ])
        .output()
        .expect("run restore");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: Json = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["state_hash"], hash.as_str());
    let verified = ok_json(&restored, &["verify"]);
    assert_eq!(verified["ok"], true);
    assert_eq!(state_hash(&restored), hash);
    // With every device gone, the recovery key still lists the runs.
    let output = peers(None)
        .env("PEERS_RECOVERY_KEY", &key)
        .args(["--json", "backup", "list", "--from", store_text])
        .output()
        .expect("run list");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines = text(&output.stdout).lines().count();
    // (The background may have run again before the server stopped.)
    assert!(lines >= runs.len(), "the runs, and the summary line");

    let output = peers(None)
        .env("PEERS_RECOVERY_KEY", &key)
        .args(["backup", "restore", "--from", store_text, restored_text])
        .output()
        .expect("run restore");
    assert!(fails_one_line(&output, "restore over a replica").contains("already exists"));
    let wrong = "AGE-SECRET-KEY-1CUZSKEHSLUY88P8FH9E95RK79MWPL4UTXTKVWRCSRHMXGCDWL38S89XZVT";
    let elsewhere = temp.path().join("elsewhere");
    let output = peers(None)
        .env("PEERS_RECOVERY_KEY", wrong)
        .args(["backup", "restore", "--from", store_text])
        .arg(&elsewhere)
        .output()
        .expect("run restore");
    assert!(fails_one_line(&output, "restore with a wrong key").contains("no key file"));
    assert!(!elsewhere.exists());
}

/// `peers --json buffer --listen 127.0.0.1:0 --store STORE`, its address
/// read from its first line.
fn buffer_server(store: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = peers(None)
        .args(["--json", "buffer", "--listen", "127.0.0.1:0", "--store"])
        .arg(store)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn peers buffer");
    let stdout = child.stdout.take().expect("piped");
    let mut stdout = std::io::BufReader::new(stdout);
    let mut first = String::new();
    stdout.read_line(&mut first).expect("buffer prints a line");
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let line: Json = serde_json::from_str(&first).expect("JSON line");
    assert_eq!(line["event"], "buffering", "{first}");
    let address = line["address"].as_str().expect("address").to_owned();
    (child, address)
}

// Guards issue 16's blind sync buffer through the binary: `peers buffer`
// serves a store; A, serving with `--buffer`, pushes at start and pushes a
// write made while it serves; A stops; B, an empty replica that was never
// online with A, converges from the buffer alone with `buffer pull`; a push
// of what the buffer holds stores nothing new; a dead buffer is one error
// line; the buffer stops cleanly on Ctrl-C.
#[test]
fn buffer_serve_push_pull_through_the_binary() {
    let (temp, a, id) = new_db("a");
    let (mut buffer, address) = buffer_server(&temp.path().join("store"));
    commit(&a, &["put", "notes", "n1", "title=before serving"]);
    let server = Server::start_with(
        &a,
        &[
            "--listen",
            "127.0.0.1:0",
            "--buffer",
            &address,
            "--buffer-every",
            "1s",
        ],
    );
    commit(&a, &["put", "notes", "n2", "title=while serving"]);
    // The live push reaches the buffer: a scratch replica sees it there.
    let probe = temp.path().join("probe");
    ok_json(&probe, &["join", id["database"].as_str().expect("id")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        ok_json(&probe, &["buffer", "pull", "--from", &address]);
        if run(Some(&probe), &["get", "notes", "n2"]).status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A's write never reached the buffer"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    server.stop();
    let a_state = state_hash(&a);

    let b = temp.path().join("b");
    ok_json(&b, &["join", id["database"].as_str().expect("id")]);
    let pulled = ok_json(&b, &["buffer", "pull", "--from", &address]);
    assert_eq!(pulled["applied"], 3, "genesis, n1, n2: {pulled}");
    assert_eq!(pulled["pending"], 0, "{pulled}");
    assert_eq!(state_hash(&b), a_state);
    assert_eq!(
        ok_json(&b, &["get", "notes", "n1"])["title"],
        "before serving"
    );
    let text = ok(&b, &["buffer", "pull", "--from", &address]);
    assert!(text.contains("0 changes applied, 3 already held"), "{text}");
    let pushed = ok_json(&b, &["buffer", "push", "--to", &address]);
    assert_eq!(pushed["changes"], 3, "{pushed}");
    assert_eq!(pushed["stored"], 0, "the buffer holds them all: {pushed}");
    let again = ok_json(&b, &["buffer", "push", "--to", &address]);
    assert_eq!(again["changes"], 0, "only what is new is pushed: {again}");

    let output = run(Some(&b), &["buffer", "pull", "--from", "127.0.0.1:1"]);
    let stderr = fails_one_line(&output, "pull from a dead buffer");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    let output = run(Some(&b), &["buffer", "push", "--to", "nowhere"]);
    let stderr = fails_one_line(&output, "push to an address without a port");
    assert!(stderr.contains("HOST:PORT"), "{stderr}");

    let status = Command::new("kill")
        .args(["-INT", &buffer.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let status = buffer.wait().expect("buffer exits");
    assert!(status.success(), "peers buffer exited with {status}");
}

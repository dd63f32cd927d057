//! The blind sync buffer, end to end over a real server on a local port:
//! A writes while B is offline, A goes offline, B converges from the buffer
//! alone; a buffer that drops, replays, reorders or alters envelopes (its
//! store damaged under it); a stranger that tries to write; expiry; quotas.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use peers_buffer::{
    BufferKey, Client, Cursor, Cursors, Error, PullReport, Refused, Server, ServerConfig,
    envelope_hash, epoch_of, now_ms, open_store, pull, push,
};
use peers_engine::{Db, Options, StateHash};
use tokio::net::TcpListener;

/// A buffer server on 127.0.0.1 over a directory store, with a clock the
/// test moves.
struct Buffer {
    url: String,
    store: PathBuf,
    server: Arc<Server>,
    clock: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

async fn buffer(root: &Path, config: ServerConfig) -> Buffer {
    let store = root.join("store");
    let (objects, prefix) = open_store(&store.display().to_string()).expect("store");
    let clock = Arc::new(AtomicU64::new(now_ms()));
    let time = Arc::clone(&clock);
    let server = Arc::new(Server::with_clock(
        objects,
        prefix,
        config,
        Box::new(move || time.load(Ordering::SeqCst)),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = listener.local_addr().expect("address").to_string();
    let serving = Arc::clone(&server);
    let task = tokio::spawn(async move {
        let _ = serving.serve(listener).await;
    });
    Buffer {
        url,
        store,
        server,
        clock,
        _task: task,
    }
}

/// A's replica with `n` changes after its genesis.
fn writer(dir: &Path, n: usize) -> Db {
    let db = Db::create(dir, Options::default()).expect("create");
    write(&db, 0, n);
    db
}

fn write(db: &Db, from: usize, n: usize) {
    for i in from..from + n {
        let mut tx = db.transaction();
        tx.set("notes", &format!("n{}", i % 7), "text", format!("note {i}"));
        tx.commit().expect("commit");
    }
}

async fn push_all(db: &Db, url: &str) -> peers_buffer::PushReport {
    let mut client = Client::connect(url).await.expect("connect");
    push(db, &mut client, url, &HashSet::new())
        .await
        .expect("push")
}

async fn pull_all(db: &Db, url: &str) -> PullReport {
    let mut client = Client::connect(url).await.expect("connect");
    pull(
        db,
        &mut client,
        &mut Cursors::default(),
        &mut HashSet::new(),
    )
    .await
    .expect("pull")
}

/// The envelope files of A's database in the current epoch's space (under
/// its time buckets), sorted.
fn envelope_files(buffer: &Buffer, db: &Db) -> Vec<PathBuf> {
    let tag = BufferKey::of(&db.database_id())
        .space(epoch_of(now_ms()))
        .tag();
    let mut files = Vec::new();
    let mut folders = vec![buffer.store.join(hex(&tag))];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// An envelope file's name, parsed: (received, hash, expiry).
fn leaf_parts(file: &Path) -> (u64, [u8; 32], u64) {
    let leaf = file
        .file_name()
        .expect("leaf")
        .to_string_lossy()
        .into_owned();
    let parts: Vec<&str> = leaf.split('-').collect();
    assert_eq!(parts.len(), 3, "{leaf}");
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&parts[1][2 * i..2 * i + 2], 16).expect("hash");
    }
    (
        u64::from_str_radix(parts[0], 16).expect("received"),
        hash,
        u64::from_str_radix(parts[2], 16).expect("expiry"),
    )
}

/// Where `buffer` files an envelope of `tag` (its buckets created).
fn filed_at(
    buffer: &Buffer,
    tag: &[u8; 32],
    received: u64,
    hash: &[u8; 32],
    expiry: u64,
) -> PathBuf {
    let path = buffer
        .store
        .join(peers_buffer::object_name(tag, received, hash, expiry));
    std::fs::create_dir_all(path.parent().expect("a bucket")).expect("buckets");
    path
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file holding the envelope of A's change number `seq` (1-based
/// after the genesis, in log order).
fn file_of_change(buffer: &Buffer, db: &Db, index: usize) -> PathBuf {
    let space = BufferKey::of(&db.database_id()).space(epoch_of(now_ms()));
    let (_, change) = db
        .log()
        .expect("log")
        .nth(index)
        .expect("that change")
        .expect("read");
    let hash = hex(&envelope_hash(&space.seal(change.bytes()).expect("seal")));
    envelope_files(buffer, db)
        .into_iter()
        .find(|file| file.to_string_lossy().contains(&hash))
        .expect("the change's envelope is stored")
}

/// A with 40 changes pushed, then closed; B an empty replica of it. Returns
/// A's directory and state hash.
async fn offline_writer(work: &Path, buffer: &Buffer) -> (PathBuf, StateHash, Db) {
    let a_dir = work.join("a");
    let a = writer(&a_dir, 40);
    let pushed = push_all(&a, &buffer.url).await;
    assert_eq!(
        pushed.changes, 41,
        "the genesis and every write: {pushed:?}"
    );
    assert_eq!(pushed.stored, 41);
    let state = a.state_hash().expect("hash");
    let b = Db::join(work.join("b"), a.database_id(), Options::default()).expect("join");
    (a_dir, state, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_converges_from_the_buffer_alone() {
    let work = tempfile::tempdir().expect("tempdir");
    let buffer = buffer(work.path(), ServerConfig::default()).await;
    let a_dir = work.path().join("a");
    let a = writer(&a_dir, 40);
    let b = Db::join(work.path().join("b"), a.database_id(), Options::default()).expect("join");
    // B is offline while A writes and pushes; then A goes offline.
    let pushed = push_all(&a, &buffer.url).await;
    assert_eq!((pushed.changes, pushed.stored), (41, 41), "{pushed:?}");
    let state = a.state_hash().expect("hash");
    drop(a);
    // B comes online and converges from the buffer alone.
    let pulled = pull_all(&b, &buffer.url).await;
    assert_eq!(pulled.envelopes, 41, "{pulled:?}");
    assert_eq!(pulled.applied, 41, "{pulled:?}");
    assert_eq!((pulled.unopened, pulled.refused, pulled.pending), (0, 0, 0));
    assert_eq!(b.state_hash().expect("hash"), state);
    assert!(b.verify(&mut |_, _| {}).expect("verify").ok());

    // A again: a second push sends only what is new, and the buffer keeps
    // one copy of a change however many members push it.
    let a = Db::open(&a_dir, Options::default()).expect("reopen");
    write(&a, 40, 5);
    let again = push_all(&a, &buffer.url).await;
    assert_eq!((again.changes, again.stored), (5, 5), "{again:?}");
    let mut client = Client::connect(&buffer.url).await.expect("connect");
    let mut pulled_hashes = HashSet::new();
    let second = pull(&b, &mut client, &mut Cursors::default(), &mut pulled_hashes)
        .await
        .expect("pull");
    assert_eq!((second.applied, second.duplicates), (5, 41), "{second:?}");
    assert_eq!(b.state_hash().expect("hash"), a.state_hash().expect("hash"));
    // B's first push does not send back what it pulled in this session;
    // what it sends anyway (the first pull's changes) the buffer already holds.
    let from_b = push(&b, &mut client, &buffer.url, &pulled_hashes)
        .await
        .expect("push");
    assert_eq!(from_b.changes, 41, "{from_b:?}");
    assert_eq!((from_b.stored, from_b.duplicates), (0, 41), "{from_b:?}");
    assert_eq!(envelope_files(&buffer, &a).len(), 46);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_envelope_shows_as_a_gap_and_a_delayed_one_heals_it() {
    let work = tempfile::tempdir().expect("tempdir");
    let buffer = buffer(work.path(), ServerConfig::default()).await;
    let (a_dir, state, b) = offline_writer(work.path(), &buffer).await;
    let a = Db::open(&a_dir, Options::default()).expect("open");
    let dropped = file_of_change(&buffer, &a, 20);
    let held = work.path().join("held");
    std::fs::rename(&dropped, &held).expect("the buffer drops one");
    let pulled = pull_all(&b, &buffer.url).await;
    assert_eq!(pulled.envelopes, 40, "{pulled:?}");
    assert_eq!(
        pulled.applied, 20,
        "the genesis and A's first 19: {pulled:?}"
    );
    assert_eq!(pulled.pending, 20, "A's later changes wait: {pulled:?}");
    assert_eq!(b.pending_len(), 20);
    assert_eq!(pulled.missing, 1, "{pulled:?}");
    let (_, dropped_change) = a
        .log()
        .expect("log")
        .nth(20)
        .expect("change")
        .expect("read");
    assert_eq!(
        peers_buffer::gaps(&b),
        vec![dropped_change.hash()],
        "the one dropped change is named"
    );
    assert_ne!(b.state_hash().expect("hash"), state);
    // The buffer delivers it late: B converges.
    std::fs::rename(&held, &dropped).expect("delayed");
    let late = pull_all(&b, &buffer.url).await;
    assert_eq!(late.pending, 0, "{late:?}");
    assert_eq!(b.state_hash().expect("hash"), state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_reordered_envelopes_change_nothing() {
    let work = tempfile::tempdir().expect("tempdir");
    let buffer = buffer(work.path(), ServerConfig::default()).await;
    let (a_dir, state, b) = offline_writer(work.path(), &buffer).await;
    let a = Db::open(&a_dir, Options::default()).expect("open");
    // Reorder: the buffer lists A's envelopes newest first (received times
    // reversed in log order), and replays every one a minute later.
    let files: Vec<PathBuf> = (0..41).map(|i| file_of_change(&buffer, &a, i)).collect();
    let tag = BufferKey::of(&a.database_id())
        .space(epoch_of(now_ms()))
        .tag();
    for (index, file) in files.iter().enumerate() {
        let (received, hash, expiry) = leaf_parts(file);
        // Filed under the buckets of its new time, as a server would.
        let reversed = filed_at(&buffer, &tag, received - index as u64, &hash, expiry);
        std::fs::rename(file, &reversed).expect("reorder");
        let replay = filed_at(&buffer, &tag, received + 60_000, &hash, expiry);
        std::fs::copy(&reversed, &replay).expect("replay");
    }
    let pulled = pull_all(&b, &buffer.url).await;
    assert_eq!(pulled.envelopes, 82, "{pulled:?}");
    assert_eq!(pulled.applied, 41, "{pulled:?}");
    assert_eq!(pulled.duplicates, 41, "{pulled:?}");
    assert_eq!((pulled.pending, pulled.refused, pulled.unopened), (0, 0, 0));
    assert_eq!(b.state_hash().expect("hash"), state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_or_forged_envelopes_are_never_applied() {
    let work = tempfile::tempdir().expect("tempdir");
    let buffer = buffer(work.path(), ServerConfig::default()).await;
    let (a_dir, _, b) = offline_writer(work.path(), &buffer).await;
    let a = Db::open(&a_dir, Options::default()).expect("open");
    // Alter one byte of one envelope's ciphertext.
    let altered = file_of_change(&buffer, &a, 30);
    let mut bytes = std::fs::read(&altered).expect("read");
    bytes[60] ^= 0x20;
    std::fs::write(&altered, bytes).expect("alter");
    // Forge: an envelope sealed under another database's key (the server
    // cannot make one that opens), and one sealed with this space's key
    // holding a change A never signed (the engine refuses it).
    let space = BufferKey::of(&a.database_id()).space(epoch_of(now_ms()));
    let other = BufferKey::of(&peers_engine::DatabaseId([9; 32])).space(epoch_of(now_ms()));
    let (_, change) = a
        .log()
        .expect("log")
        .nth(35)
        .expect("change")
        .expect("read");
    let mut unsigned = change.bytes().to_vec();
    let last = unsigned.len() - 1;
    unsigned[last] ^= 1; // the signature's last byte
    let files = envelope_files(&buffer, &a);
    let leaf = files[0]
        .file_name()
        .expect("leaf")
        .to_string_lossy()
        .into_owned();
    for (i, envelope) in [
        other.seal(change.bytes()).expect("seal"),
        space.seal(&unsigned).expect("seal"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!(
            "{}-{}{}",
            &leaf[..16],
            hex(&envelope_hash(&envelope)),
            &leaf[16 + 65..]
        );
        assert_eq!(name.len(), leaf.len(), "{i}");
        std::fs::write(files[0].with_file_name(name), envelope).expect("forge");
    }
    let pulled = pull_all(&b, &buffer.url).await;
    assert_eq!(pulled.envelopes, 43, "{pulled:?}");
    assert_eq!(
        pulled.unopened, 2,
        "the altered one and the other database's: {pulled:?}"
    );
    assert_eq!(
        pulled.refused, 1,
        "the change with a bad signature: {pulled:?}"
    );
    assert_eq!(pulled.applied, 30, "up to the altered change: {pulled:?}");
    assert_eq!(pulled.pending, 10, "{pulled:?}");
    assert!(b.verify(&mut |_, _| {}).expect("verify").ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_write_a_space() {
    let work = tempfile::tempdir().expect("tempdir");
    let buffer = buffer(work.path(), ServerConfig::default()).await;
    let a = writer(&work.path().join("a"), 3);
    let space = BufferKey::of(&a.database_id()).space(epoch_of(now_ms()));
    let stranger = BufferKey::of(&peers_engine::DatabaseId([7; 32])).space(epoch_of(now_ms()));
    let junk = vec![stranger.seal(b"junk").expect("seal")];
    let mut client = Client::connect(&buffer.url).await.expect("connect");
    // Its own signature over A's tag: refused.
    let signature = stranger.sign_put(&junk);
    let error = client
        .put_signed(space.tag(), junk.clone(), signature)
        .await
        .expect_err("a stranger's put");
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: Refused::Capability,
                ..
            }
        ),
        "{error}"
    );
    // A signature A's space made for other envelopes: refused too.
    let other = vec![space.seal(b"something else").expect("seal")];
    let error = client
        .put_signed(space.tag(), junk, space.sign_put(&other))
        .await
        .expect_err("a replayed signature");
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: Refused::Capability,
                ..
            }
        ),
        "{error}"
    );
    // Not an envelope at all.
    let error = client
        .put(&space, vec![vec![0u8; 400]])
        .await
        .expect_err("not an envelope");
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: Refused::Envelope,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        !buffer.store.join(hex(&space.tag())).exists(),
        "nothing stored"
    );
    // The connection still serves a member.
    assert_eq!(
        client.put(&space, other).await.expect("a member's put"),
        (1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_envelopes_are_not_served_and_are_deleted() {
    let work = tempfile::tempdir().expect("tempdir");
    let config = ServerConfig {
        keep: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let buffer = buffer(work.path(), config).await;
    let a = writer(&work.path().join("a"), 9);
    assert_eq!(push_all(&a, &buffer.url).await.stored, 10);
    // 59 minutes later: still there; a sweep deletes nothing.
    buffer.clock.fetch_add(59 * 60_000, Ordering::SeqCst);
    assert_eq!(buffer.server.sweep().await.expect("sweep"), 0);
    let b = Db::join(work.path().join("b"), a.database_id(), Options::default()).expect("join");
    assert_eq!(pull_all(&b, &buffer.url).await.applied, 10);
    // Past the hour: not served, then deleted.
    buffer.clock.fetch_add(2 * 60_000, Ordering::SeqCst);
    let c = Db::join(work.path().join("c"), a.database_id(), Options::default()).expect("join");
    assert_eq!(pull_all(&c, &buffer.url).await.envelopes, 0);
    assert_eq!(buffer.server.sweep().await.expect("sweep"), 10);
    assert!(envelope_files(&buffer, &a).is_empty());
    assert_eq!(buffer.server.counters().expired, 10);
    // Whole buckets go: no emptied bucket directory (nor the space's) is
    // left for a get to walk.
    let tag = BufferKey::of(&a.database_id())
        .space(epoch_of(now_ms()))
        .tag();
    assert!(
        !buffer.store.join(hex(&tag)).exists(),
        "the space's buckets are removed"
    );
    assert_eq!(
        std::fs::read_dir(&buffer.store).expect("the store").count(),
        0,
        "nothing left in the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_per_space_and_per_client() {
    let work = tempfile::tempdir().expect("tempdir");
    // A's first 10 envelopes fit the space; one more (at least 308 bytes)
    // does not.
    let a = writer(&work.path().join("a"), 9);
    let space = BufferKey::of(&a.database_id()).space(epoch_of(now_ms()));
    let ten: usize = a
        .log()
        .expect("log")
        .map(|item| {
            space
                .seal(item.expect("read").1.bytes())
                .expect("seal")
                .len()
        })
        .sum();
    let config = ServerConfig {
        space_bytes_max: ten as u64 + 300,
        ..ServerConfig::default()
    };
    let buffer = buffer(work.path(), config).await;
    assert_eq!(push_all(&a, &buffer.url).await.stored, 10);
    write(&a, 9, 1);
    let mut client = Client::connect(&buffer.url).await.expect("connect");
    let error = push(&a, &mut client, &buffer.url, &HashSet::new())
        .await
        .expect_err("over the space's quota");
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: Refused::SpaceQuota,
                ..
            }
        ),
        "{error}"
    );
    // The quota holds across a cache drop (the state is listed again).
    buffer.server.sweep().await.expect("sweep");
    let error = push(&a, &mut client, &buffer.url, &HashSet::new())
        .await
        .expect_err("still over");
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: Refused::SpaceQuota,
                ..
            }
        ),
        "{error}"
    );

    // Per client: 3 KiB an hour.
    let config = ServerConfig {
        client_bytes_per_hour: 3 * 1024,
        ..ServerConfig::default()
    };
    let other = buffer_at(work.path().join("other"), config).await;
    let d = writer(&work.path().join("d"), 20);
    let mut client = Client::connect(&other.url).await.expect("connect");
    let error = push(&d, &mut client, &other.url, &HashSet::new())
        .await
        .expect_err("over the client's quota");
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: Refused::ClientQuota,
                ..
            }
        ),
        "{error}"
    );
    // An hour later it may write again.
    other.clock.fetch_add(3_600_000, Ordering::SeqCst);
    let space = BufferKey::of(&d.database_id()).space(epoch_of(now_ms()));
    assert_eq!(
        client
            .put(&space, vec![space.seal(b"x").expect("seal")])
            .await
            .expect("the next hour"),
        (1, 0)
    );
}

async fn buffer_at(root: PathBuf, config: ServerConfig) -> Buffer {
    std::fs::create_dir_all(&root).expect("dir");
    buffer(&root, config).await
}

fn cursor_of(stored: &peers_buffer::Stored) -> Cursor {
    Cursor {
        received_ms: stored.received_ms,
        hash: envelope_hash(&stored.envelope),
    }
}

/// A get after a cursor returns exactly the envelopes after it, in order,
/// across every level of time buckets, and `more` says whether others
/// follow; and it never lists the buckets before the cursor's (a format 1
/// server listed the whole space on every get): a get that did would fail
/// on the directory loop planted there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_follow_the_cursor_across_buckets_and_skip_the_ones_before() {
    let work = tempfile::tempdir().expect("tempdir");
    let buffer = buffer(work.path(), ServerConfig::default()).await;
    let space = BufferKey::of(&peers_engine::DatabaseId([5; 32])).space(epoch_of(now_ms()));
    let mut client = Client::connect(&buffer.url).await.expect("connect");
    // The start of the current top-level bucket (received_ms >> 24), and
    // times on each side of each level's boundaries.
    let base = (now_ms() >> 24) << 24;
    let times = [
        base + 0x00_01ff,  // second-level 00, leaf 01, its last ms
        base + 0x00_0200,  // the next leaf
        base + 0x00_ffff,  // leaf ff of second-level 00
        base + 0x01_0000,  // the next second-level bucket
        base + 0xff_ffff,  // the top-level bucket's last ms
        base + 0x100_0000, // the next top-level bucket
        base + 0x100_0001, // the same leaf
    ];
    let mut expected = Vec::new();
    for (i, time) in times.iter().enumerate() {
        buffer.clock.store(*time, Ordering::SeqCst);
        let envelopes: Vec<Vec<u8>> = (0..2)
            .map(|j| {
                space
                    .seal(format!("change {i}.{j}").as_bytes())
                    .expect("seal")
            })
            .collect();
        assert_eq!(
            client.put(&space, envelopes.clone()).await.expect("put"),
            (2, 0)
        );
        expected.extend(envelopes.iter().map(|envelope| Cursor {
            received_ms: *time,
            hash: envelope_hash(envelope),
        }));
    }
    expected.sort();
    let mut cursors = vec![
        Cursor::default(),
        // Between buckets, and past everything.
        Cursor {
            received_ms: base + 0x00_8000,
            hash: [0; 32],
        },
        Cursor {
            received_ms: base + 0x200_0000,
            hash: [0; 32],
        },
    ];
    cursors.extend(expected.iter().copied());
    for after in cursors {
        let want: Vec<Cursor> = expected.iter().filter(|c| **c > after).copied().collect();
        let (all, more) = client.get(space.tag(), after, 1024).await.expect("get");
        assert_eq!(
            all.iter().map(cursor_of).collect::<Vec<_>>(),
            want,
            "{after:?}"
        );
        assert!(!more);
        // One at a time, by cursor.
        let mut cursor = after;
        let mut read = Vec::new();
        loop {
            let (one, more) = client.get(space.tag(), cursor, 1).await.expect("get");
            assert!(one.len() <= 1);
            if let Some(stored) = one.first() {
                cursor = cursor_of(stored);
                read.push(cursor);
            }
            assert_eq!(more, read.len() < want.len(), "{after:?} after {read:?}");
            if !more {
                break;
            }
        }
        assert_eq!(read, want, "{after:?}");
    }

    // A loop in the first top-level bucket: listing it fails.
    let first = buffer
        .store
        .join(hex(&space.tag()))
        .join(&format!("{base:016x}")[..10]);
    assert!(first.is_dir(), "{}", first.display());
    std::os::unix::fs::symlink(&first, first.join("loop")).expect("plant a loop");
    let error = client
        .get(space.tag(), Cursor::default(), 1024)
        .await
        .expect_err("a get from the start walks into the loop");
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: Refused::Store,
                ..
            }
        ),
        "{error}"
    );
    // A get after a cursor in the next top-level bucket never lists the
    // first one.
    let after = expected[expected.len() - 4];
    assert_eq!(after.received_ms, base + 0x100_0000);
    let (rest, more) = client.get(space.tag(), after, 1024).await.expect("get");
    assert_eq!(
        rest.iter().map(cursor_of).collect::<Vec<_>>(),
        expected[expected.len() - 3..]
    );
    assert!(!more);
}

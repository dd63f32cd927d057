//! Fuzz targets: one per decoder, plus one model target (STYLE.md habit 14,
//! docs/DESIGN.md "Bad input").
//!
//! Each function takes arbitrary bytes and panics only on a bug: a decoder
//! that panics, or a broken property checked here (round trips, stable
//! hashes, state untouched by refused input, the merge against
//! [`crate::reference_model`]). `fuzz/fuzz_targets/*.rs` hands them to
//! libFuzzer; `tests/fuzz_corpus.rs` runs them over `fuzz/seeds/` and
//! deterministic mutations of it on every `cargo test`.
//!
//! Databases live in the system temp dir and bare logs in `/dev/shm` when it
//! exists (see [`scratch_dir`]); `PEERS_FUZZ_SCRATCH=DIR` puts both in DIR.
//!
//! [`authorization_model`] (in `fuzz_targets/authorization.rs`) checks
//! authorization against [`crate::authorization_model`].
//!
//! The network targets ([`sync_message`], [`handshake_respond`],
//! [`channel_frames`]) run real `peers_net` channels over in-memory
//! `tokio::io::duplex` pipes on a current-thread runtime: no sockets, no
//! sleeps, and every input ends in EOF, so nothing waits for a timer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

pub use crate::SplitMix;
use peers_engine::{
    Author, Change, ChangeBody, ChangeHash, ChangeSetReader, ChangeSetWriter, DatabaseId, Db,
    Identity, Op, Options, SyncMode, Value, verify_signature, verify_signatures,
};
use peers_net::{
    BATCH_CHANGES_MAX, CHANNEL_VERSION, CHANNEL_VERSION_MIN, ChannelOptions, FRAME_BYTES_MAX,
    Message, NOISE_MESSAGE_BYTES_MAX, SecureChannel,
};
use peers_wal::{Position, Wal};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::{all_changes, reference_model, rows, sync_into};

mod authorization;
pub use authorization::*;

/// Most program steps [`merge_model`] runs, so one input takes milliseconds.
pub const MERGE_STEPS_MAX: usize = 64;
/// Most reopens in one [`merge_model`] program (each costs a RocksDB open).
pub const MERGE_REOPENS_MAX: usize = 2;
/// Writers in [`merge_model`].
pub const AUTHORS: usize = 3;
/// Table names [`merge_model`] writes.
pub const TABLES: &[&str] = &["t0", "t1"];
const ROWS: &[&str] = &["r0", "r1", "r2"];
const FIELDS: &[&str] = &["f0", "f1"];
/// Name of the first segment [`wal_open`] writes.
pub const FIRST_SEGMENT: &str = "00000000000000000000.wal";
/// Most segments [`wal_open`] splits its input into.
pub const WAL_SEGMENTS_MAX: usize = 3;

/// The fixed identity number `index`: authors are 0, 1, 2; replicas that
/// only receive use 3.
pub fn identity(index: u8) -> Identity {
    Identity::from_secret_bytes([index.wrapping_add(1); 32])
}

/// Options of every database here: relaxed fsync, a fixed identity.
pub fn options(identity_index: u8) -> Options {
    Options {
        sync: SyncMode::Relaxed,
        identity: Some(identity(identity_index)),
        ..Options::default()
    }
}

/// The genesis change of the fixture database: fixed nonce, clock and
/// author, so [`database_id`] is the same in every process and every seed.
/// Change format version 1 (an open database), as the committed seeds were
/// made with.
pub fn genesis() -> Change {
    let author = identity(0);
    author.sign(ChangeBody {
        version: 1,
        database: DatabaseId::GENESIS,
        author: author.author(),
        seq: 1,
        prev: None,
        deps: Vec::new(),
        lamport: 1,
        wall_ms: 1_700_000_000_000,
        ops: vec![Op::Genesis {
            nonce: *b"peers fuzz nonce",
        }],
    })
}

/// The fixture database every seed and replica here belongs to.
pub fn database_id() -> DatabaseId {
    DatabaseId(genesis().hash().0)
}

/// A new temporary directory for databases: under `$PEERS_FUZZ_SCRATCH` if
/// set, else the system temp dir. (Not `/dev/shm`: RocksDB preallocates its
/// files, which on tmpfs allocates real pages and makes each open ~2x slower.)
pub fn scratch_dir() -> tempfile::TempDir {
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("peers-fuzz-");
        builder
    };
    match std::env::var_os("PEERS_FUZZ_SCRATCH") {
        Some(root) => builder().tempdir_in(root),
        None => builder().tempdir(),
    }
    .expect("a temporary directory")
}

/// A new temporary directory for a bare log: in memory (`/dev/shm`) when
/// possible, where its fsyncs cost nothing; `$PEERS_FUZZ_SCRATCH` overrides.
pub fn memory_scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if std::env::var_os("PEERS_FUZZ_SCRATCH").is_none()
        && shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("peers-fuzz-")
            .tempdir_in(shm)
    {
        return dir;
    }
    scratch_dir()
}

/// An empty replica of the fixture database (not even the genesis).
pub fn join_fixture(dir: &Path, identity_index: u8) -> Db {
    Db::join(dir, database_id(), options(identity_index)).expect("join the fixture database")
}

// ---------------------------------------------------------------- change

/// `Change::decode` on arbitrary bytes: never panics; what decodes keeps its
/// exact bytes, decodes again to the same change and hash, and gets the same
/// signature verdict alone, twice, and in a batch.
pub fn change_decode(data: &[u8]) {
    let Ok(change) = Change::decode(data) else {
        return;
    };
    assert_eq!(change.bytes(), data, "a decoded change keeps its bytes");
    let again = Change::decode(change.bytes()).expect("a change's own bytes decode");
    assert_eq!(again, change);
    assert_eq!(again.hash(), change.hash(), "the hash is stable");
    // Debug, not ==: a NaN value is not equal to itself.
    assert_eq!(
        format!("{:?}", again.body()),
        format!("{:?}", change.body())
    );
    assert_eq!(
        change.predecessors().count(),
        usize::from(change.body().prev.is_some()) + change.body().deps.len()
    );
    let verdict = verify_signature(&change);
    assert_eq!(verify_signature(&again), verdict, "the verdict is stable");
    let batch = verify_signatures(&[change, again]);
    match verdict {
        Ok(()) => assert_eq!(batch, Ok(()), "batch and single verdicts agree"),
        Err(fault) => assert_eq!(batch, Err((0, fault)), "batch and single verdicts agree"),
    }
}

// ---------------------------------------------------------------- wal

/// Writes `data` as the segments of a log: byte 0 says how many segments
/// (1 + byte % [`WAL_SEGMENTS_MAX`]), then one u16 (little endian) length per
/// segment but the last, then the bytes of the segments back to back. Each
/// segment is named by its base (the sum of the lengths before it), so the
/// chain of bases is always right and the fuzzer reaches the frames.
pub fn write_wal_segments(dir: &Path, data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let segments = 1 + usize::from(mode) % WAL_SEGMENTS_MAX;
    let mut lengths = Vec::with_capacity(segments);
    for _ in 1..segments {
        let length = match rest {
            [low, high, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_le_bytes([*low, *high]))
            }
            _ => 0,
        };
        lengths.push(length);
    }
    let mut base = 0usize;
    for index in 0..segments {
        let length = lengths
            .get(index)
            .copied()
            .unwrap_or(usize::MAX)
            .min(rest.len());
        let (segment, tail) = rest.split_at(length);
        rest = tail;
        let path = dir.join(format!("{base:020}.wal"));
        fs::write(&path, segment).expect("write a segment file");
        base += length;
    }
}

/// The inverse of [`write_wal_segments`] for a real log directory: its
/// segments (at most [`WAL_SEGMENTS_MAX`], each under 64 KiB) as one input.
pub fn wal_input(dir: &Path) -> Vec<u8> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("list the log")
        .map(|entry| entry.expect("log entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    names.sort();
    assert!(
        (1..=WAL_SEGMENTS_MAX).contains(&names.len()),
        "{} segments",
        names.len()
    );
    let segments: Vec<Vec<u8>> = names
        .iter()
        .map(|p| fs::read(p).expect("read segment"))
        .collect();
    let mut input = vec![u8::try_from(segments.len() - 1).expect("few segments")];
    for segment in &segments[..segments.len() - 1] {
        let length = u16::try_from(segment.len()).expect("a seed segment is under 64 KiB");
        input.extend_from_slice(&length.to_le_bytes());
    }
    for segment in &segments {
        input.extend_from_slice(segment);
    }
    input
}

fn wal_options() -> peers_wal::Options {
    peers_wal::Options {
        sync: SyncMode::Relaxed,
        ..peers_wal::Options::default()
    }
}

/// Every record of an opened log; an opened log checked every frame, so
/// each must read back.
fn read_all(wal: &Wal) -> Vec<(Position, Vec<u8>)> {
    wal.iter_from(wal.start())
        .expect("iterate an opened log from its start")
        .map(|item| item.expect("every record of an opened log reads"))
        .collect()
}

/// `Wal::open` on arbitrary segment files ([`write_wal_segments`]): never
/// panics; once open, every record reads back by iteration and by
/// position, odd positions give errors, and a second open finds the same
/// records and nothing to cut, also after one more append.
pub fn wal_open(data: &[u8]) {
    let dir = memory_scratch_dir();
    let log = dir.path().join("log");
    fs::create_dir(&log).expect("create the log directory");
    write_wal_segments(&log, data);
    let Ok((wal, report)) = Wal::open(&log, wal_options()) else {
        return;
    };
    let records = read_all(&wal);
    assert_eq!(
        records.len() as u64,
        report.records,
        "report counts the records"
    );
    assert_eq!(wal.end(), report.end);
    for (position, payload) in &records {
        assert_eq!(&wal.read_at(*position).expect("read_at a record"), payload);
    }
    probe_positions(&wal, &records, data);
    let end = wal.end();
    drop(wal);
    let (wal, report) = Wal::open(&log, wal_options()).expect("an opened log opens again");
    assert_eq!(report.torn_tail, None, "the first open left nothing to cut");
    assert_eq!(read_all(&wal), records, "the same records after a reopen");
    assert_eq!(wal.end(), end);
    let appended: &[u8] = b"appended after recovery";
    let Ok(position) = wal.append(appended) else {
        return;
    };
    drop(wal);
    let (wal, report) = Wal::open(&log, wal_options()).expect("reopen after an append");
    assert_eq!(report.torn_tail, None, "an append leaves nothing to cut");
    let mut expected = records;
    expected.push((position, appended.to_vec()));
    assert_eq!(read_all(&wal), expected, "the append follows the records");
}

/// `read_at` and `iter_from` at positions that are not records: errors or
/// records, never a panic or an iteration that does not move forward.
fn probe_positions(wal: &Wal, records: &[(Position, Vec<u8>)], data: &[u8]) {
    let mut probes = vec![
        0,
        1,
        31,
        wal.start().0,
        wal.end().0,
        wal.end().0 + 1,
        u64::MAX,
    ];
    probes.extend(records.iter().map(|(position, _)| position.0 + 1));
    probes.extend(records.iter().map(|(position, _)| position.0 + 8));
    probes.extend(
        data.get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
    );
    // A frame takes at least 8 bytes, so no iteration yields more than this
    // (a position inside a payload may yield frames nested in it: allowed).
    let most = usize::try_from((wal.end().0 - wal.start().0) / 8 + 1).unwrap_or(usize::MAX);
    for probe in probes {
        let _ = wal.read_at(Position(probe));
        if let Ok(iter) = wal.iter_from(Position(probe)) {
            assert!(
                iter.take(most + 1).count() <= most,
                "iteration moves forward"
            );
        }
    }
}

// ---------------------------------------------------------------- change set

/// A replica of the fixture database, reused across calls while no call
/// changes it (so every call starts from the same empty state).
struct Replica {
    db: Db,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn fresh() -> Replica {
        let dir = scratch_dir();
        let db = join_fixture(&dir.path().join("replica"), 3);
        Replica { db, _dir: dir }
    }
}

static REPLICA: Mutex<Option<Replica>> = Mutex::new(None);

/// `ChangeSetReader` then `Db::apply_encoded`, as `peers import` does, on
/// arbitrary bytes: never panics; a file that reads cleanly writes back to
/// the same bytes; applying never fails, leaves the state hash alone when
/// nothing is accepted, and otherwise gives the reference model's rows.
pub fn changeset_import(data: &[u8]) {
    import(data, false);
}

/// [`changeset_import`] by a hostile peer that holds the fixture keys: every
/// record that decodes and names a fixture author is re-signed first, so
/// forged seqs, prevs, deps, lamports and forks (equivocations) reach the
/// engine's admission rules instead of stopping at the signature. Besides
/// [`changeset_import`]'s checks: rows equal the reference model over the
/// changes that survive the equivocation cuts (docs/DESIGN.md "Changes"), and a
/// second replica that receives the accepted changes in another order and
/// batching holds the same state hash.
pub fn signed_import(data: &[u8]) {
    import(data, true);
}

fn import(data: &[u8], resign: bool) {
    let Some(mut records) = read_changeset(data) else {
        return;
    };
    if resign {
        records = records.iter().map(|record| resigned(record)).collect();
    }
    let decoded: Vec<Change> = records
        .iter()
        .filter_map(|r| Change::decode(r).ok())
        .collect();
    apply_to_replica(&records, &decoded, resign.then(|| fnv1a(data)));
}

/// The records of a change-set file (as many as read before an error), or
/// `None` without a valid header. Checks the reader: fused after its end or
/// an error, and a file that reads cleanly writes back byte for byte.
fn read_changeset(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut reader = ChangeSetReader::new(data).ok()?;
    let mut records = Vec::new();
    let mut clean = true;
    for item in reader.by_ref() {
        match item {
            Ok(record) => records.push(record),
            Err(_) => clean = false,
        }
    }
    assert!(
        reader.next().is_none(),
        "the reader stops after its end or an error"
    );
    let decoded: Vec<Change> = records
        .iter()
        .filter_map(|r| Change::decode(r).ok())
        .collect();
    if clean && decoded.len() == records.len() {
        assert_eq!(reader.bytes_read(), data.len() as u64);
        let mut writer = ChangeSetWriter::new(Vec::new(), reader.database()).expect("header");
        for change in &decoded {
            writer.write(change).expect("write to memory");
        }
        assert_eq!(
            writer.finish().expect("finish"),
            data,
            "a clean file writes back the same"
        );
    }
    Some(records)
}

/// The record signed again by its author, if it decodes and its author is
/// a fixture identity (ed25519 is deterministic: a genuine change comes back
/// unchanged); else the record as is.
fn resigned(record: &[u8]) -> Vec<u8> {
    static KEYS: OnceLock<Vec<Identity>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| (0..4).map(identity).collect());
    let Ok(change) = Change::decode(record) else {
        return record.to_vec();
    };
    match keys.iter().find(|key| key.author() == change.author()) {
        Some(key) => key.sign(change.body().clone()).bytes().to_vec(),
        None => record.to_vec(),
    }
}

/// Applies `records` to the (empty) per-process replica and checks the
/// result; with `converge`, also against a second replica fed in an order
/// shuffled by that seed.
fn apply_to_replica(records: &[Vec<u8>], decoded: &[Change], converge: Option<u64>) {
    let mut slot = REPLICA.lock().unwrap_or_else(PoisonError::into_inner);
    let replica = slot.get_or_insert_with(Replica::fresh);
    let before = replica.db.state_hash().expect("state hash");
    let report = replica
        .db
        .apply_encoded(records)
        .expect("bad input is refused, never an error");
    let after = replica.db.state_hash().expect("state hash");
    if report.accepted.is_empty() {
        assert_eq!(
            before, after,
            "nothing accepted, nothing changed: {report:?}"
        );
    } else {
        // The replica was empty, so it holds exactly what it accepted.
        let by_hash: BTreeMap<ChangeHash, &Change> =
            decoded.iter().map(|c| (c.hash(), c)).collect();
        let held: Vec<Change> = report.accepted.iter().map(|h| by_hash[h].clone()).collect();
        check_model(&replica.db, &held);
        if let Some(seed) = converge {
            check_other_order(&held, after, &mut SplitMix(seed));
        }
    }
    if !report.accepted.is_empty() || replica.db.pending_len() > 0 {
        *slot = None;
    }
}

/// The changes that stay in the view: an author who has two held changes
/// with one seq is cut at the lowest such seq minus one.
pub fn valid_after_cuts(held: &[Change]) -> Vec<Change> {
    let mut seen: BTreeMap<(peers_engine::Author, u64), ChangeHash> = BTreeMap::new();
    let mut cuts: BTreeMap<peers_engine::Author, u64> = BTreeMap::new();
    for change in held {
        let key = (change.author(), change.seq());
        if seen
            .insert(key, change.hash())
            .is_some_and(|h| h != change.hash())
        {
            let cut = cuts.entry(change.author()).or_insert(u64::MAX);
            *cut = (*cut).min(change.seq() - 1);
        }
    }
    held.iter()
        .filter(|c| cuts.get(&c.author()).is_none_or(|cut| c.seq() <= *cut))
        .cloned()
        .collect()
}

fn check_model(db: &Db, held: &[Change]) {
    let valid = valid_after_cuts(held);
    let tables = tables_of(held);
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    assert_eq!(
        format!("{:?}", rows(db, &tables)),
        format!("{:?}", reference_model(&valid)),
        "held changes merge as the reference model says (after cuts)"
    );
}

/// A second empty replica receives `held` shuffled, in batches of 1-4: it
/// accepts them all and ends with the same state hash.
fn check_other_order(held: &[Change], state: peers_engine::StateHash, shuffle: &mut SplitMix) {
    let mut changes = held.to_vec();
    for index in (1..changes.len()).rev() {
        changes.swap(index, shuffle.below(index + 1));
    }
    let dir = scratch_dir();
    let other = join_fixture(&dir.path().join("other"), 3);
    let mut accepted = 0;
    for batch in batches(&changes, shuffle) {
        let report = other.apply(batch.to_vec()).expect("apply");
        assert!(report.refused.is_empty(), "refused: {report:?}");
        accepted += report.accepted.len();
    }
    assert_eq!(accepted, held.len(), "every held change is accepted again");
    assert_eq!(other.pending_len(), 0);
    assert_eq!(
        other.state_hash().expect("state hash"),
        state,
        "the same changes in another order give the same state"
    );
}

fn tables_of(changes: &[Change]) -> BTreeSet<String> {
    changes
        .iter()
        .flat_map(|change| change.ops().iter().filter_map(Op::row))
        .map(|(table, _)| table.to_owned())
        .collect()
}

// ---------------------------------------------------------------- net

/// The limit of every channel in the network targets. Every input ends in
/// EOF, so no read waits for a timer: a [`peers_net::Error::Timeout`] means
/// a hang, and the targets refuse it. Generous for ASan on a busy machine,
/// well under libFuzzer's `-timeout`.
pub const NET_TIMEOUT: Duration = Duration::from_secs(5);
/// Room in each direction of a pipe beyond the input, so that no handshake
/// message (a few hundred bytes) waits for a reader.
pub const PIPE_SLACK_BYTES: usize = 64 * 1024;
/// A frame's length header: `u32` big endian (docs/PROTOCOL.md).
pub const FRAME_HEADER_BYTES: usize = 4;
/// ChaChaPoly's tag on every encrypted Noise message.
pub const NOISE_TAG_BYTES: usize = 16;
/// The initiator's ephemeral key, in clear at the start of handshake message 1.
const EPHEMERAL_KEY_BYTES: usize = 32;
/// Message 1's payload: `version_min: u16 LE | version_max: u16 LE`.
const OFFER_BYTES: usize = 4;

/// Options of every channel here: [`NET_TIMEOUT`] for each step.
pub fn net_options() -> ChannelOptions {
    ChannelOptions {
        handshake_timeout: NET_TIMEOUT,
        recv_timeout: NET_TIMEOUT,
        send_timeout: NET_TIMEOUT,
    }
}

/// Runs `future` on a new current-thread runtime with timers (the channels'
/// timeouts need them): one thread, so a target's run depends on its input
/// alone (and on the fresh Noise keys, which change no outcome).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}

/// An honest handshake over `initiator` and `responder` (the two ends of a
/// pipe): fixture identity 0 dials, 1 accepts.
pub async fn channel_pair<A, B>(initiator: A, responder: B) -> (SecureChannel<A>, SecureChannel<B>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (dialer, listener) = (identity(0), identity(1));
    let (dialed, accepted) = tokio::join!(
        SecureChannel::initiate(initiator, &dialer, Some(listener.author()), net_options()),
        SecureChannel::accept(responder, &listener, net_options()),
    );
    (
        dialed.expect("an honest initiator over a pipe connects"),
        accepted.expect("an honest responder over a pipe connects"),
    )
}

/// `Message::decode` on arbitrary bytes: never panics and refuses with
/// `MalformedMessage` (naming the input's length); a decoded message holds
/// its limits, refuses a trailing byte, and encodes to bytes that decode to
/// it again. Not canonical: bincode's varints accept non-minimal forms
/// (`[3, 251, 5, 0]` is `CaughtUp { changes: 5 }`, as is `[3, 5]`), so the
/// check is that the encoder writes the shortest form: never longer than
/// the input, and as long only when it is the input itself.
pub fn sync_message(data: &[u8]) {
    let message = match Message::decode(data) {
        Ok(message) => message,
        Err(peers_net::Error::MalformedMessage { bytes, .. }) => {
            assert_eq!(bytes, data.len() as u64, "the refusal names the length");
            return;
        }
        Err(other) => panic!("bad bytes are a MalformedMessage, got {other:?}"),
    };
    match &message {
        Message::Reconcile(ranges) => {
            assert!(ranges.len() <= peers_net::RECONCILE_RANGES_MAX);
            reconcile_answer(ranges);
        }
        Message::Changes(changes) => assert!(changes.len() <= BATCH_CHANGES_MAX),
        _ => {}
    }
    let encoded = message
        .encode()
        .expect("a message that decoded is within the limit");
    assert_eq!(
        Message::decode(&encoded).expect("a message's own bytes decode"),
        message,
        "decode(encode(m)) == m"
    );
    assert!(
        encoded.len() <= data.len(),
        "the encoding is the shortest form"
    );
    if encoded.len() == data.len() {
        assert_eq!(encoded, data, "only one form has the shortest length");
    }
    let mut trailing = data.to_vec();
    trailing.push(0);
    assert!(
        Message::decode(&trailing).is_err(),
        "a trailing byte is refused"
    );
}

/// A side holding a fixed set of 200 heads answers a `Reconcile` a peer
/// sent: it may refuse (a typed error), but never panics, and an answer is
/// a well-formed message within the limits.
fn reconcile_answer(ranges: &[peers_net::Range]) {
    let mut heads: Vec<(Author, peers_engine::Head)> = (0..200u64)
        .map(|index| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(index * 0x0147_ae14_7ae1_47ae).to_be_bytes());
            (
                Author(key),
                peers_engine::Head {
                    seq: index + 1,
                    hash: ChangeHash([index as u8; 32]),
                },
            )
        })
        .collect();
    heads.sort_by_key(|(author, _)| *author);
    let mut side = peers_net::Reconciler::new(heads);
    let Ok(answer) = side.respond(ranges) else {
        return;
    };
    assert!(answer.len() <= peers_net::RECONCILE_RANGES_MAX);
    let bytes = Message::Reconcile(answer)
        .encode()
        .expect("an answer fits in a message");
    Message::decode(&bytes).expect("an answer is well-formed");
}

/// The front of a stream of frames (`u32 BE length | body`), as a reader
/// limited to `max` body bytes must see it before EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRead<'a> {
    /// No bytes: the peer closed between frames.
    End,
    /// EOF inside a header.
    TornHeader,
    /// A header over the limit (refused before its body arrives).
    TooLarge(u32),
    /// EOF inside a body, after `read` of its bytes.
    TornBody {
        /// Body bytes that arrived.
        read: usize,
    },
    /// A whole frame's body, and the bytes after it.
    Frame(&'a [u8], &'a [u8]),
}

/// The reference reading of `stream`'s first frame (docs/PROTOCOL.md "Secure
/// channel": the header is checked before the body is buffered).
pub fn read_frame(stream: &[u8], max: usize) -> FrameRead<'_> {
    let Some((header, rest)) = stream.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return match stream.is_empty() {
            true => FrameRead::End,
            false => FrameRead::TornHeader,
        };
    };
    let announced = u32::from_be_bytes(*header);
    let length = usize::try_from(announced).expect("a u32 fits in usize");
    if length > max {
        FrameRead::TooLarge(announced)
    } else if rest.len() < length {
        FrameRead::TornBody { read: rest.len() }
    } else {
        let (body, after) = rest.split_at(length);
        FrameRead::Frame(body, after)
    }
}

/// Checks `error` against what a reader limited to `max` must report when
/// `stream` holds no whole frame at its front; returns that frame otherwise
/// (its body decides the error). `what` names the step for messages.
fn expect_frame<'a>(
    stream: &'a [u8],
    max: usize,
    error: &peers_net::Error,
    what: &str,
) -> Option<(&'a [u8], &'a [u8])> {
    use peers_net::Error;
    let read = read_frame(stream, max);
    let fits = match read {
        FrameRead::Frame(body, after) => return Some((body, after)),
        FrameRead::End => matches!(error, Error::Closed),
        FrameRead::TornHeader | FrameRead::TornBody { read: 1.. } => matches!(error, Error::Io(_)),
        // EOF after a whole header is inside a frame: `Io`, like any tear.
        FrameRead::TornBody { read: 0 } => matches!(error, Error::Io(_)),
        FrameRead::TooLarge(announced) => matches!(
            error,
            Error::FrameTooLarge { bytes, max: limit }
                if *bytes == u64::from(announced) && *limit == max as u64
        ),
    };
    assert!(fits, "{what}: {read:?} gave {error:?}");
    None
}

/// A responder (`SecureChannel::accept`) reading `data` then EOF: always an
/// error (message 3 must be encrypted for the responder's fresh keys, which
/// no input knows), never a panic or a hang, and the error the protocol
/// calls for: the framing's (closed, torn, oversized), then message 1's
/// (under 32 bytes of ephemeral key: Noise; an offer that is not 4 bytes:
/// `MalformedHandshake`; no common version: `UnsupportedVersion` naming the
/// highest offered), then message 3's framing or a Noise error.
pub fn handshake_respond(data: &[u8]) {
    use peers_net::Error;
    let result = block_on(async {
        let (mut initiator, responder) = tokio::io::duplex(data.len() + PIPE_SLACK_BYTES);
        initiator
            .write_all(data)
            .await
            .expect("the pipe holds the input");
        // Half-close: the responder reads EOF after the input, and its
        // message 2 still has somewhere to go.
        initiator.shutdown().await.expect("half-close the pipe");
        let result = SecureChannel::accept(responder, &identity(1), net_options()).await;
        drop(initiator);
        result
    });
    let error = match result {
        Ok(channel) => panic!("a handshake completed with bytes fixed in advance: {channel:?}"),
        Err(error) => error,
    };
    assert!(!matches!(error, Error::Timeout { .. }), "hung: {error:?}");
    let max = NOISE_MESSAGE_BYTES_MAX;
    let Some((first, rest)) = expect_frame(data, max, &error, "message 1") else {
        return;
    };
    let Some(offer) = first.get(EPHEMERAL_KEY_BYTES..) else {
        assert!(matches!(error, Error::Noise(_)), "short key: {error:?}");
        return;
    };
    if offer.len() != OFFER_BYTES {
        assert!(
            matches!(
                error,
                Error::MalformedHandshake { message: 1, bytes, expected }
                    if bytes == offer.len() as u64 && expected == OFFER_BYTES as u64
            ),
            "offer of {} bytes: {error:?}",
            offer.len()
        );
        return;
    }
    let offered_min = u16::from_le_bytes([offer[0], offer[1]]);
    let offered_max = u16::from_le_bytes([offer[2], offer[3]]);
    let common = (offered_min..=offered_max)
        .any(|version| (CHANNEL_VERSION_MIN..=CHANNEL_VERSION).contains(&version));
    if !common {
        assert!(
            matches!(error, Error::UnsupportedVersion { found, .. } if found == offered_max),
            "offer {offered_min}..={offered_max}: {error:?}"
        );
        return;
    }
    if expect_frame(rest, max, &error, "message 3").is_some() {
        assert!(matches!(error, Error::Noise(_)), "message 3: {error:?}");
    }
}

/// After an honest handshake between two in-memory ends, one side writes
/// `data` raw into the stream (`SecureChannel::test_write_raw`) and closes;
/// the other's `recv` must refuse the first frame with the error the frame
/// layout calls for: the framing's (closed, torn, oversized), a
/// `MalformedFrame` for a body no longer than a tag, else a Noise error.
/// No frame can authenticate (the keys are fresh per run), so the first
/// `recv` always errs: a receive loop would stop there, and an `Ok` is a bug.
pub fn channel_frames(data: &[u8]) {
    use peers_net::Error;
    let error = block_on(async {
        let (initiator, responder) = tokio::io::duplex(data.len() + PIPE_SLACK_BYTES);
        let (mut sender, mut receiver) = channel_pair(initiator, responder).await;
        sender
            .test_write_raw(data)
            .await
            .expect("the pipe holds the input");
        drop(sender);
        match receiver.recv().await {
            Ok(message) => panic!("a frame forged without the keys opened: {message:?}"),
            Err(error) => error,
        }
    });
    assert!(!matches!(error, Error::Timeout { .. }), "hung: {error:?}");
    let Some((body, _)) = expect_frame(data, FRAME_BYTES_MAX, &error, "frame") else {
        return;
    };
    if body.len() <= NOISE_TAG_BYTES {
        assert!(
            matches!(error, Error::MalformedFrame { bytes } if bytes == body.len() as u64),
            "a frame of {} bytes: {error:?}",
            body.len()
        );
    } else {
        assert!(
            matches!(error, Error::Noise(_)),
            "a forged frame: {error:?}"
        );
    }
}

// ---------------------------------------------------------------- merge

/// Reads a program's bytes; past the end, every byte is 0.
struct Program<'a> {
    bytes: &'a [u8],
}

impl Program<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn next_or_zero(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A value from a byte: every variant, NaN and the extremes included.
fn value(byte: u8) -> Value {
    let small = i64::from(byte as i8);
    match byte % 10 {
        0 => Value::Null,
        1 => Value::Bool(byte & 0x10 != 0),
        2 => Value::Int(small),
        3 => Value::Uint(u64::MAX - u64::from(byte)),
        4 => Value::F64(if byte & 0x10 != 0 { f64::NAN } else { -0.0 }),
        5 => Value::Str(format!("s{}", byte >> 4)),
        6 => Value::Bytes(vec![byte; usize::from(byte >> 5)]),
        7 => Value::Timestamp(small),
        8 => Value::Counter(delta(byte)),
        _ => Value::F64(f64::from(byte) / 4.0),
    }
}

/// A counter delta or base; 0x7f and 0x80 stand for the i64 extremes (wrapping).
fn delta(byte: u8) -> i64 {
    match byte {
        0x7f => i64::MAX,
        0x80 => i64::MIN,
        other => i64::from(other as i8),
    }
}

/// Three writers, each with its own replica of the fixture database.
pub struct Model {
    /// Writer `i` signs as [`identity`]`(i)`; writer 0 holds the genesis.
    /// Declared before `dir`: databases close before their directory goes.
    pub writers: Vec<Db>,
    /// Holds `w0`, `w1`, `w2` (and `fresh` during the check).
    pub dir: tempfile::TempDir,
    reopens: usize,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// Three writers holding only the genesis (a replica writes once it
    /// knows the genesis).
    pub fn new() -> Model {
        let dir = scratch_dir();
        let writers: Vec<Db> = (0..AUTHORS as u8)
            .map(|index| join_fixture(&dir.path().join(format!("w{index}")), index))
            .collect();
        for writer in &writers {
            let report = writer.apply(vec![genesis()]).expect("apply genesis");
            assert_eq!(report.accepted.len(), 1, "{report:?}");
        }
        Model {
            writers,
            dir,
            reopens: 0,
        }
    }

    /// One step. Code bits: 0-2 the kind (0-4 commit, 5-6 sync, 7 reopen),
    /// 3-4 the author, 5-7 the author synced from. Reopens past
    /// [`MERGE_REOPENS_MAX`] do nothing.
    fn step(&mut self, code: u8, program: &mut Program<'_>) {
        let author = usize::from(code >> 3) % AUTHORS;
        let other = usize::from(code >> 5) % AUTHORS;
        match code & 7 {
            0..=4 => self.commit(author, program),
            5 | 6 if author != other => sync_into(&self.writers[other], &self.writers[author]),
            5 | 6 => {}
            _ if self.reopens < MERGE_REOPENS_MAX => self.reopen(author),
            _ => {}
        }
    }

    /// A transaction of 1-3 ops, each two bytes: what and where, then a value or delta.
    fn commit(&self, author: usize, program: &mut Program<'_>) {
        let count = 1 + usize::from(program.next_or_zero()) % 3;
        let mut tx = self.writers[author].transaction();
        for _ in 0..count {
            let (what, argument) = (program.next_or_zero(), program.next_or_zero());
            let table = TABLES[usize::from(what >> 2) % TABLES.len()];
            let row = ROWS[usize::from(what >> 3) % ROWS.len()];
            let field = FIELDS[usize::from(what >> 5) % FIELDS.len()];
            match what & 3 {
                0 => tx.set(table, row, field, value(argument)),
                1 => tx.delete(table, row),
                2 => tx.increment(table, row, field, delta(argument)),
                _ => tx.set(table, row, field, Value::Counter(delta(argument))),
            };
        }
        match tx.commit() {
            // An increment of a field that holds a non-counter value does
            // nothing: its replica refuses to sign it (nothing changes).
            Ok(_) | Err(peers_engine::Error::NotACounter { .. }) => {}
            Err(error) => panic!("a transaction of valid ops commits: {error}"),
        }
    }

    /// Closes and reopens a writer: replay from the log.
    fn reopen(&mut self, author: usize) {
        self.reopens += 1;
        let old = self.writers.remove(author);
        let before = old.state_hash().expect("state hash");
        let path = old.dir().to_owned();
        drop(old);
        let db = Db::open(&path, options(author as u8)).expect("reopen a writer");
        assert_eq!(
            db.state_hash().expect("state hash"),
            before,
            "reopen keeps the state"
        );
        self.writers.insert(author, db);
    }

    /// Runs a program of at most [`MERGE_STEPS_MAX`] steps.
    pub fn run(&mut self, data: &[u8]) {
        let mut program = Program { bytes: data };
        for _ in 0..MERGE_STEPS_MAX {
            let Some(code) = program.next() else {
                break;
            };
            self.step(code, &mut program);
        }
    }

    /// Every change any writer holds, by hash.
    pub fn all_changes(&self) -> Vec<Change> {
        let mut all = BTreeMap::new();
        for writer in &self.writers {
            for change in all_changes(writer) {
                all.insert(change.hash(), change);
            }
        }
        all.into_values().collect()
    }

    /// A fresh replica gets every change in a shuffled order and random
    /// batches; it and the fully synced writer 0 must both hold the reference
    /// model's rows, the same state hash, and nothing pending.
    fn check(&self, shuffle: &mut SplitMix) {
        let mut changes = self.all_changes();
        for index in (1..changes.len()).rev() {
            changes.swap(index, shuffle.below(index + 1));
        }
        let fresh = join_fixture(&self.dir.path().join("fresh"), 3);
        for batch in batches(&changes, shuffle) {
            let report = fresh.apply(batch.to_vec()).expect("apply");
            assert!(report.refused.is_empty(), "refused: {report:?}");
        }
        assert_eq!(fresh.pending_len(), 0, "every predecessor arrived");
        let expected = format!("{:?}", reference_model(&changes));
        assert_eq!(
            format!("{:?}", rows(&fresh, TABLES)),
            expected,
            "fresh replica vs model"
        );
        let state = fresh.state_hash().expect("state hash");
        let again = changes[shuffle.below(changes.len())..].to_vec();
        let report = fresh.apply(again).expect("apply duplicates");
        assert!(
            report.accepted.is_empty(),
            "duplicates are not new: {report:?}"
        );
        assert_eq!(
            fresh.state_hash().expect("state hash"),
            state,
            "duplicates change nothing"
        );
        for other in &self.writers[1..] {
            sync_into(other, &self.writers[0]);
        }
        let writer = &self.writers[0];
        assert_eq!(
            format!("{:?}", rows(writer, TABLES)),
            expected,
            "synced writer vs model"
        );
        assert_eq!(
            writer.state_hash().expect("state hash"),
            state,
            "writer vs fresh replica"
        );
    }
}

/// Splits `changes` into consecutive batches of 1 to 4.
fn batches<'a>(changes: &'a [Change], shuffle: &mut SplitMix) -> Vec<&'a [Change]> {
    let mut out = Vec::new();
    let mut rest = changes;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at((1 + shuffle.below(4)).min(rest.len()));
        out.push(batch);
        rest = tail;
    }
    out
}

/// The merge on a program of at most [`MERGE_STEPS_MAX`] steps by three
/// writers (commits of Set, Delete, Increment and counter Sets on a few
/// tables, rows and fields; syncs between writers; reopens), then a check
/// against [`reference_model`] in a receive order chosen by the input.
pub fn merge_model(data: &[u8]) {
    let mut model = Model::new();
    model.run(data);
    model.check(&mut SplitMix(fnv1a(data)));
}

/// Builders of [`merge_model`] programs (the inverse of its decoding), for seeds.
pub mod program {
    /// Op kind: set a field to a value chosen by the argument byte.
    pub const SET: u8 = 0;
    /// Op kind: delete the row.
    pub const DELETE: u8 = 1;
    /// Op kind: increment the field by the argument (0x7f and 0x80: the i64 extremes).
    pub const INCREMENT: u8 = 2;
    /// Op kind: set the field to a counter with the argument as base.
    pub const SET_COUNTER: u8 = 3;

    /// The "what" byte of an op: kind, table 0-1, row 0-2, field 0-1.
    pub fn what(kind: u8, table: u8, row: u8, field: u8) -> u8 {
        kind | table << 2 | row << 3 | field << 5
    }

    /// Author 0-2 commits 1-3 ops, each `(what, argument)`.
    pub fn commit(author: u8, ops: &[(u8, u8)]) -> Vec<u8> {
        assert!((1..=3).contains(&ops.len()), "1 to 3 ops");
        let mut bytes = vec![author << 3, (ops.len() - 1) as u8];
        for (what, argument) in ops {
            bytes.extend_from_slice(&[*what, *argument]);
        }
        bytes
    }

    /// Author `to` receives everything author `from` holds.
    pub fn sync(to: u8, from: u8) -> Vec<u8> {
        vec![5 | to << 3 | from << 5]
    }

    /// Author closes and reopens its database.
    pub fn reopen(author: u8) -> Vec<u8> {
        vec![7 | author << 3]
    }
}

/// A rendezvous message (the body of a sealed signaling payload between two
/// nodes, docs/PROTOCOL.md "WebRTC transport") never panics the decoder, and
/// what decodes encodes back to the same bytes (the layout has one form).
pub fn rendezvous_decode(data: &[u8]) {
    use peers_net::webrtc::Rendezvous;
    if let Ok(message) = Rendezvous::decode(data) {
        let again = message.encode().expect("a decoded message encodes");
        assert_eq!(again, data, "{message:?} has a second encoding");
    }
}

/// A ticket (docs/PROTOCOL.md "Invites"), as bytes and as text, never
/// panics the decoder; bytes that decode encode back to the same bytes (one
/// form), and text that decodes is the ticket its canonical text decodes to.
/// The input is also read with a correct checksum appended, so that the
/// layout behind the checksum is fuzzed too.
pub fn ticket_decode(data: &[u8]) {
    use peers_net::invite::{TICKET_CHECKSUM_BYTES, Ticket};
    let checksum = blake3::hash(data);
    let sealed = [data, &checksum.as_bytes()[..TICKET_CHECKSUM_BYTES]].concat();
    for bytes in [data, &sealed] {
        if let Ok(ticket) = Ticket::from_bytes(bytes) {
            assert_eq!(ticket.to_bytes(), bytes, "{ticket:?} has a second encoding");
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(ticket) = Ticket::decode(&text) {
        assert_eq!(Ticket::decode(&ticket.encode()), Ok(ticket));
    }
}

/// A signaling frame (docs/PROTOCOL.md "Signaling") never panics the
/// decoder, and what decodes encodes back to the same bytes.
pub fn signal_frame(data: &[u8]) {
    if let Ok(frame) = peers_signal::Frame::decode(data) {
        assert_eq!(frame.encode(), data, "{frame:?} has a second encoding");
    }
}

/// Bytes a hostile signaling server delivers as a sealed payload: opening
/// them never panics and never succeeds (nobody but the sender's key makes
/// a payload that opens); the STUN responder and the STUN answer parser
/// never panic on them either, and a response is never more than 2.2 times
/// the request (no amplification).
pub fn signal_sealed(data: &[u8]) {
    let ours = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let sender = ed25519_dalek::SigningKey::from_bytes(&[9; 32])
        .verifying_key()
        .to_bytes();
    let mut replay = peers_signal::ReplayGuard::new(16);
    let opened = peers_signal::open(&ours, &sender, data, 1_800_000_000_000, &mut replay);
    assert!(
        opened.is_err(),
        "a payload forged without the sender's key opened"
    );
    let source = std::net::SocketAddr::from(([192, 0, 2, 1], 4000));
    if let Some(answer) = peers_signal::stun::answer(data, source) {
        assert!(
            answer.len() * 5 <= data.len() * 11,
            "{} -> {} bytes",
            data.len(),
            answer.len()
        );
    }
    let _ = peers_signal::stun::binding_response(data, &[1; 12]);
}

/// What a client sends the holder of a database through its control socket
/// (docs/PROTOCOL.md "Control socket"), and what a client reads back: the
/// frame reader, the request decoder and the answer reader never panic;
/// a frame that reads is within its limit; a request that decodes encodes
/// to a payload that decodes to the same request; every output frame of an
/// answer is within its limit.
pub fn control_request(data: &[u8]) {
    use peers::control::wire::{
        OUTPUT_BYTES_MAX, REQUEST_BYTES_MAX, Request, read_answer, read_frame,
    };
    if let Ok((_, payload)) = read_frame(data, REQUEST_BYTES_MAX) {
        assert!(payload.len() <= REQUEST_BYTES_MAX);
        if let Ok(request) = Request::decode(&payload) {
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
    }
    if let Ok(request) = Request::decode(data) {
        assert_eq!(Request::decode(&request.encode()), Ok(request));
    }
    let _ = read_answer(data, |_, bytes| assert!(bytes.len() <= OUTPUT_BYTES_MAX));
}

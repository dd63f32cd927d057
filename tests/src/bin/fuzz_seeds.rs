//! Writes the seed corpus of the fuzz targets (see fuzz/README.md):
//! `OUT/<target>/` for each target of `peers_tests::fuzz_targets::TARGETS`
//! whose seeds are generated ([`SeedSource::Generated`]), a few realistic
//! files each: real signed changes, real log segments, real change-set
//! files, merge programs, authorization scripts, real sync messages, and
//! what a real initiator writes on the wire. Everything belongs to the
//! fixture database of `peers_tests::fuzz_targets`. Then it runs each target
//! over its new seeds.
//!
//! Usage: fuzz-seeds OUT_DIR [TARGET...]   (fuzz/seeds is the committed copy;
//! with TARGETs, only their directories are written)

use std::fs;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result, bail};
use peers_engine::{
    Author, CHANGE_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION, Change, ChangeBody, ChangeHash,
    ChangeSetWriter, DEPS_MAX, DatabaseId, Db, FrontierEntry, Op, SnapshotHash, Value,
};
use peers_net::{
    ByeReason, FRAME_BYTES_MAX, Hello, Message, NOISE_MESSAGE_BYTES_MAX, Range, RangeKind,
    VectorEntry,
};
use peers_tests::all_changes;
use peers_tests::fuzz_targets::authorization_script as script;
use peers_tests::fuzz_targets::program::{
    DELETE, INCREMENT, SET, SET_COUNTER, commit, reopen, sync, what,
};
use peers_tests::fuzz_targets::{
    FRAME_HEADER_BYTES, FrameRead, Model, NOISE_TAG_BYTES, PIPE_SLACK_BYTES, SeedSource, SplitMix,
    TARGETS, Target, block_on, channel_pair, database_id, genesis, identity, options, read_frame,
    scratch_dir, target, wal_input,
};
use peers_wal::{SyncMode, Wal};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .map(PathBuf::from)
        .context("usage: fuzz-seeds OUT_DIR [TARGET...]")?;
    let named = args
        .map(|name| {
            target(&name).with_context(|| {
                let known: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
                format!("no fuzz target {name:?}; the targets: {known:?}")
            })
        })
        .collect::<Result<Vec<&Target>>>()?;
    // No names: every target whose seeds are made here.
    let wanted: Vec<&Target> = if named.is_empty() {
        TARGETS
            .iter()
            .filter(|target| target.seeds == SeedSource::Generated)
            .collect()
    } else {
        named
    };
    let programs = merge_programs();
    let mut model = Model::new();
    model.run(&programs[0].1);
    for other in 1..model.writers.len() {
        peers_tests::sync_into(&model.writers[other], &model.writers[0]);
    }
    let history = all_changes(&model.writers[0]);
    let messages = sync_messages(&model, &history)?;
    // Hello, Vector, Changes, Keepalive: a session's first frames.
    let session: Vec<Message> = messages[1..5].iter().map(|(_, m)| m.clone()).collect();
    let transcript = block_on(initiator_transcript(&session))?;
    let mut seeds: Vec<(&Target, Seeds)> = Vec::new();
    for target in wanted {
        let target_seeds = match target.name {
            "change_decode" => change_seeds(&history),
            "wal_open" => wal_seeds(&model, &history)?,
            "changeset_import" | "signed_import" => changeset_seeds(&history)?,
            "snapshot_read" => snapshot_seeds()?,
            "merge_model" => programs.clone(),
            "authorization_model" => authorization_scripts(),
            "sync_message" => sync_message_seeds(&messages),
            "handshake_respond" => handshake_seeds(&transcript),
            "channel_frames" => channel_frame_seeds(&transcript),
            name => match target.seeds {
                SeedSource::Committed => bail!("{name}'s seeds are committed, not made here"),
                SeedSource::Generated => {
                    bail!("TARGETS says {name}'s seeds are made here, but nothing makes them")
                }
            },
        };
        seeds.push((target, target_seeds));
    }
    for (target, target_seeds) in &seeds {
        write_all(&out.join(target.name), target_seeds)?;
    }
    check_seeds(&seeds);
    println!("wrote seeds to {}", out.display());
    Ok(())
}

/// Runs each target over its new seeds: a seed that fails its own target is
/// a bug here or there.
fn check_seeds(seeds: &[(&Target, Seeds)]) {
    for (target, target_seeds) in seeds {
        for (name, bytes) in target_seeds {
            (target.run)(bytes);
            println!("{} seed {name} passes", target.name);
        }
    }
}

type Seeds = Vec<(String, Vec<u8>)>;

fn write_all(dir: &Path, seeds: &Seeds) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes) in seeds {
        let path = dir.join(name);
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Merge programs: concurrent sets, delete against set, counters at the
/// extremes, reopens, every value kind, and a long pseudo-random one.
fn merge_programs() -> Seeds {
    let f00 = |kind| what(kind, 0, 0, 0);
    let mut seeds = vec![
        (
            "history".to_owned(),
            concat(&[
                commit(0, &[(f00(SET), 2), (what(SET, 1, 1, 1), 5)]),
                sync(1, 0),
                commit(1, &[(f00(SET), 12), (what(SET_COUNTER, 0, 1, 0), 3)]),
                commit(2, &[(f00(SET), 22)]),
                commit(
                    2,
                    &[(what(INCREMENT, 0, 1, 0), 4), (what(DELETE, 1, 1, 0), 0)],
                ),
                sync(0, 2),
                commit(
                    0,
                    &[(what(INCREMENT, 0, 1, 0), 0x7f), (what(SET, 1, 2, 1), 9)],
                ),
                sync(2, 1),
                commit(2, &[(what(SET, 1, 1, 1), 15)]),
                commit(1, &[(what(INCREMENT, 0, 1, 0), 0x80)]),
                sync(1, 0),
                commit(1, &[(what(DELETE, 0, 0, 0), 0), (f00(SET), 6)]),
            ]),
        ),
        (
            "delete_vs_set".to_owned(),
            concat(&[
                commit(0, &[(f00(SET), 1), (what(SET, 0, 0, 1), 2)]),
                sync(1, 0),
                sync(2, 0),
                commit(1, &[(f00(DELETE), 0)]),
                commit(2, &[(what(SET, 0, 0, 1), 7)]),
                sync(0, 1),
                commit(0, &[(f00(SET), 3)]),
            ]),
        ),
        (
            "counters".to_owned(),
            concat(&[
                commit(0, &[(f00(SET_COUNTER), 10)]),
                sync(1, 0),
                sync(2, 0),
                commit(1, &[(f00(INCREMENT), 0x7f)]),
                commit(2, &[(f00(INCREMENT), 0x7f), (f00(INCREMENT), 1)]),
                commit(0, &[(f00(SET_COUNTER), 0x80)]),
                sync(1, 2),
                commit(1, &[(f00(INCREMENT), 0xff)]),
            ]),
        ),
        (
            "reopen".to_owned(),
            concat(&[
                commit(0, &[(f00(SET), 1)]),
                reopen(0),
                commit(1, &[(f00(SET), 2)]),
                sync(0, 1),
                reopen(0),
                commit(0, &[(f00(INCREMENT), 3)]),
                reopen(1),
                sync(1, 0),
                commit(1, &[(f00(DELETE), 0)]),
                reopen(1),
            ]),
        ),
        (
            "values".to_owned(),
            (0..10u8)
                .flat_map(|v| {
                    commit(
                        v % 3,
                        &[
                            (what(SET, v % 2, v % 3, v % 2), v * 16 + v),
                            (what(SET, 1, 2, 1), v),
                        ],
                    )
                })
                .collect(),
        ),
    ];
    let mut random = SplitMix(2026);
    let long: Vec<u8> = (0..200).map(|_| random.next_u64() as u8).collect();
    seeds.push(("random".to_owned(), long));
    seeds
}

/// Authorization scripts (keys: 0 the owner, 1-4 others): a grant then a
/// write; a revocation after a write and a write past it; an admin revoked
/// (by an owner that had not heard) before its revocation of a writer;
/// a grant concurrent with a revocation of the same key; hand-signed
/// grants and revocations by a writer, a reader and an admin past its
/// rights; a revoked admin granting after its cut (naming its revocation or
/// not) and keys naming those grants; forks by an admin and a writer handed
/// to different replicas; a long pseudo-random one.
fn authorization_scripts() -> Seeds {
    use peers_engine::Role::{Admin, Owner, Reader, Writer};
    use script::{
        Names, delete, forge, forged_grant, forged_revoke, forged_row, grant, increment, initial,
        revoke, set, sync, write,
    };
    let heads = Names {
        heads: true,
        ..Names::default()
    };
    // The other keys' heads and the actor's first grant: a member signs.
    let named = Names {
        grant: Some(0),
        ..heads
    };
    let seeds = vec![
        (
            "grant_write".to_owned(),
            concat(&[
                initial([None, Some(Reader), None, None]),
                grant(0, 1, Writer),
                sync(1, 0),
                write(1, &[set(0, 0, 0, 1), increment(0, 1, 1, 2)]),
                write(2, &[set(0, 0, 0, 2)]),
                sync(0, 1),
                write(0, &[set(0, 0, 1, 3)]),
                sync(2, 0),
                write(1, &[delete(0, 0)]),
            ]),
        ),
        (
            "revoke_after_write".to_owned(),
            concat(&[
                initial([Some(Writer), Some(Writer), None, None]),
                write(1, &[set(0, 0, 0, 1)]),
                sync(0, 1),
                revoke(0, 1),
                write(1, &[set(0, 0, 0, 2), set(1, 2, 1, 5)]),
                sync(2, 1),
                write(2, &[increment(1, 2, 1, 1)]),
                sync(0, 2),
                sync(1, 0),
                write(1, &[set(0, 1, 0, 3)]),
            ]),
        ),
        (
            "admin_revoked_before_its_revocation".to_owned(),
            concat(&[
                initial([Some(Admin), Some(Writer), None, None]),
                write(2, &[set(0, 0, 0, 1)]),
                sync(1, 2),
                revoke(1, 2),
                write(2, &[set(0, 0, 0, 2)]),
                revoke(0, 1),
                grant(1, 3, Writer),
                sync(3, 1),
                write(3, &[set(0, 1, 0, 4)]),
                sync(0, 1),
                sync(0, 2),
                sync(0, 3),
            ]),
        ),
        (
            "concurrent_grant_and_revoke".to_owned(),
            concat(&[
                initial([Some(Writer), Some(Admin), Some(Admin), None]),
                write(1, &[set(0, 0, 0, 1)]),
                sync(2, 1),
                revoke(0, 1),
                grant(2, 1, Writer),
                grant(3, 4, Writer),
                revoke(2, 4),
                sync(1, 2),
                write(1, &[set(0, 0, 0, 2)]),
                sync(4, 3),
                write(4, &[set(1, 0, 0, 3)]),
                sync(0, 2),
                sync(0, 4),
                grant(0, 2, Writer),
            ]),
        ),
        (
            "forged_grants_past_their_rights".to_owned(),
            concat(&[
                initial([Some(Writer), Some(Reader), Some(Admin), None]),
                forge(1, 0, None, named, &[forged_grant(4, Writer)]),
                forge(2, 0, None, named, &[forged_revoke(1, 0)]),
                forge(
                    2,
                    2,
                    None,
                    named,
                    &[forged_grant(4, Reader), forged_row(set(0, 0, 0, 1))],
                ),
                forge(3, 0, None, named, &[forged_grant(4, Admin)]),
                forge(3, 3, None, named, &[forged_grant(0, Reader)]),
                forge(0, 0, None, named, &[forged_grant(4, Owner)]),
                forge(3, 0, None, named, &[forged_grant(4, Writer)]),
                sync(4, 0),
                write(4, &[set(0, 1, 0, 2)]),
                sync(0, 4),
            ]),
        ),
        (
            "revoked_admin_grants_after_its_cut".to_owned(),
            concat(&[
                initial([Some(Admin), None, None, None]),
                write(1, &[set(0, 0, 0, 1)]),
                sync(0, 1),
                revoke(0, 1),
                sync(1, 0),
                forge(
                    1,
                    1,
                    None,
                    Names {
                        heads: true,
                        revocation: true,
                        grant: None,
                    },
                    &[forged_grant(2, Writer)],
                ),
                forge(1, 3, None, Names::default(), &[forged_grant(3, Writer)]),
                forge(
                    2,
                    0,
                    None,
                    Names {
                        grant: Some(0),
                        ..Names::default()
                    },
                    &[forged_row(set(1, 1, 1, 3))],
                ),
                forge(
                    3,
                    3,
                    None,
                    Names {
                        grant: Some(0),
                        ..heads
                    },
                    &[forged_row(set(0, 2, 0, 4))],
                ),
                sync(0, 3),
                sync(0, 1),
                sync(2, 0),
            ]),
        ),
        (
            "forks_by_an_admin_and_a_writer".to_owned(),
            concat(&[
                initial([Some(Admin), Some(Writer), None, None]),
                grant(1, 3, Writer),
                write(1, &[set(0, 0, 0, 1)]),
                write(2, &[set(0, 0, 1, 2)]),
                write(2, &[increment(1, 1, 0, 3)]),
                sync(3, 1),
                write(3, &[set(0, 2, 0, 5)]),
                forge(1, 0, Some(1), heads, &[forged_grant(4, Reader)]),
                forge(2, 4, Some(0), heads, &[forged_row(set(0, 0, 1, 7))]),
                sync(4, 3),
                sync(0, 2),
                sync(3, 0),
                write(3, &[set(0, 2, 0, 6)]),
                sync(2, 4),
            ]),
        ),
    ];
    let mut seeds = seeds;
    let mut random = SplitMix(5);
    let long: Vec<u8> = (0..120).map(|_| random.next_u64() as u8).collect();
    seeds.push(("random".to_owned(), long));
    seeds
}

/// Real changes of the history, a hand-signed one with every value kind,
/// and one with the most deps.
fn change_seeds(history: &[Change]) -> Seeds {
    let mut seeds: Seeds = history
        .iter()
        .take(10)
        .enumerate()
        .map(|(index, change)| (format!("history_{index:02}"), change.bytes().to_vec()))
        .collect();
    let author = identity(1);
    let values = [
        Value::Null,
        Value::Bool(true),
        Value::Int(-7),
        Value::Uint(u64::MAX),
        Value::F64(f64::NAN),
        Value::Str("héllo".into()),
        Value::Bytes(vec![0, 255]),
        Value::Timestamp(1_700_000_000_000),
        Value::Counter(-3),
    ];
    let mut ops: Vec<Op> = values
        .into_iter()
        .enumerate()
        .map(|(index, value)| Op::Set {
            table: "t0".into(),
            row: "r0".into(),
            field: format!("f{index}"),
            value,
        })
        .collect();
    ops.push(Op::Increment {
        table: "t0".into(),
        row: "r0".into(),
        field: "f8".into(),
        delta: i64::MIN,
    });
    ops.push(Op::Delete {
        table: "t1".into(),
        row: "r".repeat(64),
    });
    let body = |ops: Vec<Op>, deps: Vec<ChangeHash>| ChangeBody {
        version: CHANGE_FORMAT_VERSION,
        database: database_id(),
        author: author.author(),
        seq: 2,
        prev: Some(ChangeHash([1; 32])),
        lamport: 9,
        wall_ms: 1_700_000_000_001,
        ops,
        deps,
    };
    seeds.push((
        "every_value".into(),
        author
            .sign(body(ops, vec![genesis().hash()]))
            .bytes()
            .to_vec(),
    ));
    let deps: Vec<ChangeHash> = (0..DEPS_MAX as u8).map(|i| ChangeHash([i; 32])).collect();
    let one_op = vec![Op::Delete {
        table: "t".into(),
        row: "r".into(),
    }];
    seeds.push((
        "most_deps".into(),
        author.sign(body(one_op, deps)).bytes().to_vec(),
    ));
    // A checkpoint (change format 3): the signer's own entry is its prev.
    let mut frontier = vec![
        FrontierEntry {
            author: author.author(),
            seq: 1,
            hash: ChangeHash([1; 32]),
        },
        FrontierEntry {
            author: Author([0x42; 32]),
            seq: 300,
            hash: ChangeHash([2; 32]),
        },
    ];
    frontier.sort();
    let checkpoint = vec![Op::Checkpoint {
        frontier,
        snapshot: SnapshotHash([3; 32]),
    }];
    seeds.push((
        "checkpoint".into(),
        author
            .sign(ChangeBody {
                version: CHECKPOINT_FORMAT_VERSION,
                ..body(checkpoint, Vec::new())
            })
            .bytes()
            .to_vec(),
    ));
    seeds
}

fn changeset(database: DatabaseId, changes: &[Change]) -> Result<Vec<u8>> {
    let mut writer = ChangeSetWriter::new(Vec::new(), database)?;
    for change in changes {
        writer.write(change)?;
    }
    Ok(writer.finish()?)
}

/// Change-set files: the whole history, one author's chain, reversed (all
/// pending until the end), with a duplicate, with an equivocation (a second
/// change for one author's seq), empty, genesis only, and a header naming
/// another database.
fn changeset_seeds(history: &[Change]) -> Result<Seeds> {
    let db = database_id();
    let one_author: Vec<Change> = history
        .iter()
        .filter(|c| c.author() == identity(1).author())
        .cloned()
        .collect();
    let reversed: Vec<Change> = history.iter().rev().cloned().collect();
    let mut duplicated = history[..history.len().min(4)].to_vec();
    duplicated.push(history[history.len().min(4) - 1].clone());
    let forked = history
        .iter()
        .find(|c| c.author() == identity(1).author() && c.seq() >= 2)
        .context("author 1 commits twice in the history")?;
    let mut body = forked.body().clone();
    body.wall_ms += 1;
    let mut fork = history.to_vec();
    fork.push(identity(1).sign(body));
    Ok(vec![
        ("history".into(), changeset(db, history)?),
        ("fork".into(), changeset(db, &fork)?),
        ("one_author".into(), changeset(db, &one_author)?),
        ("reversed".into(), changeset(db, &reversed)?),
        ("duplicate".into(), changeset(db, &duplicated)?),
        ("empty".into(), changeset(db, &[])?),
        ("genesis".into(), changeset(db, &[genesis()])?),
        (
            "other_database".into(),
            changeset(DatabaseId([7; 32]), &history[..3.min(history.len())])?,
        ),
    ])
}

/// Snapshot files of the owner's checkpoints (docs/FORMAT.md "Snapshot
/// file, format 1"): of a new database's genesis alone, then after a few
/// rows of every value kind, a counter and a delete.
fn snapshot_seeds() -> Result<Seeds> {
    let dir = scratch_dir();
    let owner = Db::create(dir.path().join("owner"), options(0))?;
    let mut seeds = Seeds::new();
    let snapshot = |seeds: &mut Seeds, name: &str| -> Result<()> {
        let checkpoint = owner.checkpoint(&mut |_, _| {})?;
        let (file, _) = owner.write_snapshot(&checkpoint, Vec::new(), &mut |_, _| {})?;
        seeds.push((name.into(), file));
        Ok(())
    };
    snapshot(&mut seeds, "genesis")?;
    let values = [
        Value::Null,
        Value::Bool(true),
        Value::Int(-3),
        Value::Uint(7),
        Value::F64(0.5),
        Value::Str("text".into()),
        Value::Bytes(vec![1, 2, 3]),
        Value::Timestamp(1_700_000_000_000),
        Value::Counter(5),
    ];
    let mut tx = owner.transaction();
    for (index, value) in values.into_iter().enumerate() {
        tx.set("kinds", &format!("r{index}"), "v", value);
    }
    tx.commit()?;
    let mut tx = owner.transaction();
    tx.increment("kinds", "r8", "v", 2);
    tx.delete("kinds", "r0");
    tx.commit()?;
    snapshot(&mut seeds, "rows")?;
    Ok(seeds)
}

/// A log written by `Wal` itself with `records`, rotating at `segment_bytes_max`.
fn wal_of(records: &[&[u8]], segment_bytes_max: u64) -> Result<Vec<u8>> {
    let dir = scratch_dir();
    let options = peers_wal::Options {
        segment_bytes_max,
        sync: SyncMode::Relaxed,
    };
    let (wal, _) = Wal::open(dir.path(), options)?;
    for record in records {
        wal.append(record)?;
    }
    drop(wal);
    Ok(wal_input(dir.path()))
}

/// Log inputs: writer 0's real change log, logs of 2 and 3 segments, a torn
/// tail, a zero-filled tail, an empty log, an empty record, a torn header.
fn wal_seeds(model: &Model, history: &[Change]) -> Result<Seeds> {
    let engine_log = wal_input(&model.writers[0].dir().join("log"));
    let records: Vec<&[u8]> = history.iter().take(3).map(Change::bytes).collect();
    // Rotation at 32 bytes (a bare header): one record per segment.
    let two = wal_of(&records[..2], 32)?;
    let three = wal_of(&records[..3], 32)?;
    let single = wal_of(&records[..3], 1 << 20)?;
    let mut torn = single.clone();
    torn.truncate(single.len() - 40);
    let mut zero_tail = single.clone();
    zero_tail.extend_from_slice(&[0; 100]);
    let mut torn_header = two.clone();
    // Mode byte, first segment's length, first segment, 10 bytes of the second.
    torn_header.truncate(3 + usize::from(u16::from_le_bytes([two[1], two[2]])) + 10);
    Ok(vec![
        ("engine_log".into(), engine_log),
        ("two_segments".into(), two),
        ("three_segments".into(), three),
        ("single".into(), single),
        ("torn_tail".into(), torn),
        ("zero_tail".into(), zero_tail),
        ("empty".into(), wal_of(&[], 1 << 20)?),
        ("empty_record".into(), wal_of(&[b"", b"x", b""], 1 << 20)?),
        ("torn_header".into(), torn_header),
    ])
}

/// The sync messages of a session over the fixture database: both `Hello`s,
/// writer 0's vector, a batch of real changes, and every other variant.
fn sync_messages(model: &Model, history: &[Change]) -> Result<Vec<(String, Message)>> {
    let vector = model.writers[0].version_vector()?;
    let hello = |live| Hello {
        version_min: peers_net::SYNC_VERSION_MIN,
        version_max: peers_net::SYNC_VERSION,
        // As the first writer would prove the id on a connection whose
        // handshake hash is all zeros.
        database_proof: peers_net::database_proof(
            database_id(),
            &[0; 32],
            &model.writers[0].author(),
        ),
        digest: vector.digest(),
        live,
    };
    let entries: Vec<VectorEntry> = vector
        .iter()
        .map(|(author, head)| VectorEntry {
            author: author.0,
            seq: head.seq,
            hash: head.hash.0,
        })
        .collect();
    let batch: Vec<Vec<u8>> = history.iter().take(4).map(|c| c.bytes().to_vec()).collect();
    let mut messages = vec![
        ("hello_live".to_owned(), Message::Hello(hello(true))),
        ("hello_once".to_owned(), Message::Hello(hello(false))),
        (
            "reconcile_items".to_owned(),
            Message::Reconcile(vec![Range {
                upper: None,
                kind: RangeKind::Items(entries.clone()),
            }]),
        ),
        (
            "reconcile_split".to_owned(),
            Message::Reconcile(vec![
                Range {
                    upper: Some(vec![0x40; 32]),
                    kind: RangeKind::Fingerprint([7; 16]),
                },
                Range {
                    upper: Some(vec![0x80; 32]),
                    kind: RangeKind::Skip,
                },
                Range {
                    upper: None,
                    kind: RangeKind::ItemsFinal(
                        entries
                            .iter()
                            .filter(|entry| entry.author >= [0x80; 32])
                            .take(peers_net::RECONCILE_ITEMS_MAX)
                            .copied()
                            .collect(),
                    ),
                },
            ]),
        ),
        ("changes".to_owned(), Message::Changes(batch)),
        ("keepalive".to_owned(), Message::Keepalive),
        (
            "caught_up".to_owned(),
            Message::CaughtUp {
                changes: history.len() as u64,
            },
        ),
        (
            "caught_up_most".to_owned(),
            Message::CaughtUp { changes: u64::MAX },
        ),
        ("reconcile_done".to_owned(), Message::Reconcile(Vec::new())),
        ("changes_empty".to_owned(), Message::Changes(Vec::new())),
        (
            "changes_blank".to_owned(),
            Message::Changes(vec![Vec::new(); 3]),
        ),
        (
            "hello_future".to_owned(),
            Message::Hello(Hello {
                version_min: peers_net::SYNC_VERSION + 1,
                version_max: 300,
                ..hello(true)
            }),
        ),
    ];
    let reasons = [
        ByeReason::Shutdown,
        ByeReason::WrongDatabase,
        ByeReason::UnsupportedVersion,
        ByeReason::ProtocolViolation,
        ByeReason::RefusedChange,
        ByeReason::NotAMember,
        ByeReason::TooManySessions,
        ByeReason::SnapshotPending,
    ];
    messages.push((
        "snapshot".to_owned(),
        Message::Snapshot {
            checkpoint: history.last().map_or(ChangeHash([0; 32]), Change::hash),
            bytes: 567,
        },
    ));
    messages.push((
        "snapshot_part".to_owned(),
        Message::SnapshotPart(b"PEERSNAP\x01\x00\x00\x00".to_vec()),
    ));
    for reason in reasons {
        messages.push((format!("bye_{reason:?}"), Message::Bye(reason)));
    }
    Ok(messages)
}

/// Every message of [`sync_messages`] encoded, plus bytes that decode only
/// loosely or not at all: a non-minimal varint (`CaughtUp { changes: 5 }`
/// with a u16), a trailing byte, an unknown variant.
fn sync_message_seeds(messages: &[(String, Message)]) -> Seeds {
    let mut seeds: Seeds = messages
        .iter()
        .map(|(name, message)| {
            let bytes = message.encode().expect("seed messages are small");
            (name.clone(), bytes)
        })
        .collect();
    seeds.push(("non_minimal_varint".into(), vec![3, 251, 5, 0]));
    seeds.push(("trailing_byte".into(), vec![4, 0]));
    seeds.push(("unknown_variant".into(), vec![6]));
    seeds
}

/// A stream that keeps a copy of everything written through it.
struct Recorder<S> {
    inner: S,
    written: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &poll {
            self.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&buf[..*written]);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a real initiator wrote on the wire in an honest session.
struct Transcript {
    /// Handshake messages 1 and 3, then the sealed sync messages.
    bytes: Vec<u8>,
    /// Where message 3 starts (so message 1 is `bytes[..message3_at]`).
    message3_at: usize,
    /// Where the first sealed frame starts.
    frames_at: usize,
}

impl Transcript {
    fn message1(&self) -> &[u8] {
        &self.bytes[..self.message3_at]
    }

    fn frames(&self) -> &[u8] {
        &self.bytes[self.frames_at..]
    }
}

/// Records an honest session between two in-memory ends: the handshake,
/// then `messages` sent by the initiator and received intact.
async fn initiator_transcript(messages: &[Message]) -> Result<Transcript> {
    let (initiator, responder) = tokio::io::duplex(PIPE_SLACK_BYTES);
    let written = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        inner: initiator,
        written: Arc::clone(&written),
    };
    let (mut sender, mut receiver) = channel_pair(recorder, responder).await;
    let recorded = || {
        written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    };
    let handshake = recorded();
    let message3_at = match read_frame(&handshake, NOISE_MESSAGE_BYTES_MAX) {
        FrameRead::Frame(body, _) => FRAME_HEADER_BYTES + body.len(),
        other => anyhow::bail!("message 1 was recorded as {other:?}"),
    };
    for message in messages {
        let bytes = message.encode()?;
        sender.send(&bytes).await?;
        anyhow::ensure!(receiver.recv().await? == bytes, "a message arrives intact");
    }
    Ok(Transcript {
        bytes: recorded(),
        message3_at,
        frames_at: handshake.len(),
    })
}

/// `u32 BE length | body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(body.len()).expect("a seed frame fits in u32");
    [&length.to_be_bytes()[..], body].concat()
}

/// Message 1 with another offer payload (the ephemeral key kept).
fn with_offer(transcript: &Transcript, offer: &[u8]) -> Vec<u8> {
    let message1 = transcript.message1();
    let key = &message1[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + 32];
    frame(&[key, offer].concat())
}

/// Responder inputs: a real initiator's message 1, with its message 3 and
/// sealed frames after it; message 1 with offers of other versions and
/// lengths; frames over the handshake limit; torn and empty streams.
fn handshake_seeds(transcript: &Transcript) -> Seeds {
    let message1 = transcript.message1().to_vec();
    let over = u32::try_from(NOISE_MESSAGE_BYTES_MAX + 1).expect("fits");
    let offer = |min: u16, max: u16| [min.to_le_bytes(), max.to_le_bytes()].concat();
    let bytes = &transcript.bytes;
    vec![
        ("message1".into(), message1.clone()),
        (
            "message1_message3".into(),
            bytes[..transcript.frames_at].to_vec(),
        ),
        ("whole_session".into(), bytes.clone()),
        ("offer_future".into(), with_offer(transcript, &offer(2, 3))),
        ("offer_zero".into(), with_offer(transcript, &offer(0, 0))),
        ("offer_wide".into(), with_offer(transcript, &offer(0, 900))),
        (
            "offer_long".into(),
            with_offer(transcript, &[1, 0, 1, 0, 1]),
        ),
        ("offer_missing".into(), with_offer(transcript, &[])),
        ("short_key".into(), frame(&message1[4..35])),
        (
            "header_over_max".into(),
            [&over.to_be_bytes()[..], &[0; 8]].concat(),
        ),
        ("header_u32_max".into(), vec![0xFF; 4]),
        (
            "torn_message1".into(),
            message1[..message1.len() - 10].to_vec(),
        ),
        (
            "message1_oversized_message3".into(),
            [&message1[..], &over.to_be_bytes()[..]].concat(),
        ),
        (
            "message1_torn_message3".into(),
            bytes[..transcript.frames_at - 20].to_vec(),
        ),
        ("empty".into(), Vec::new()),
    ]
}

/// Raw bytes after the handshake: sealed frames of another session (they
/// fail authentication), frame headers over and at FRAME_BYTES_MAX, a lone
/// header, an empty frame, a tiny frame, frames of a bare tag and of a tag
/// and one byte, half a header, nothing.
fn channel_frame_seeds(transcript: &Transcript) -> Seeds {
    let frames = transcript.frames();
    let first = match read_frame(frames, FRAME_BYTES_MAX) {
        FrameRead::Frame(body, _) => frame(body),
        other => panic!("the first sealed frame was recorded as {other:?}"),
    };
    let limit = u32::try_from(FRAME_BYTES_MAX).expect("FRAME_BYTES_MAX fits in u32");
    vec![
        ("sealed_frames".into(), frames.to_vec()),
        ("sealed_frame".into(), first),
        ("header_over_max".into(), (limit + 1).to_be_bytes().to_vec()),
        (
            "header_at_max_torn".into(),
            [&limit.to_be_bytes()[..], &[0xA5; 16]].concat(),
        ),
        ("header_only".into(), 100u32.to_be_bytes().to_vec()),
        ("empty_frame".into(), frame(&[])),
        ("tiny_frame".into(), frame(&[1, 2, 3])),
        ("chunk_16".into(), frame(&[0xA5; NOISE_TAG_BYTES])),
        ("chunk_17".into(), frame(&[0xA5; NOISE_TAG_BYTES + 1])),
        ("half_header".into(), vec![0, 0]),
        ("empty".into(), Vec::new()),
    ]
}

//! Writes the seed corpus of the fuzz targets (see fuzz/README.md):
//! `OUT/change_decode/`, `OUT/wal_open/`, `OUT/changeset_import/` and
//! `OUT/merge_model/`, a few realistic files each: real signed changes, real
//! log segments, real change-set files, and merge programs. Everything
//! belongs to the fixture database of `peers_tests::fuzz_targets`.
//!
//! Usage: fuzz-seeds OUT_DIR   (fuzz/seeds is the committed copy)

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use peers_engine::{
    CHANGE_FORMAT_VERSION, Change, ChangeBody, ChangeHash, ChangeSetWriter, DEPS_MAX, DatabaseId,
    Op, Value,
};
use peers_tests::all_changes;
use peers_tests::fuzz_targets::program::{
    DELETE, INCREMENT, SET, SET_COUNTER, commit, reopen, sync, what,
};
use peers_tests::fuzz_targets::{
    Model, SplitMix, database_id, genesis, identity, merge_model, scratch_dir, wal_input,
};
use peers_wal::{SyncMode, Wal};

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: fuzz-seeds OUT_DIR")?;
    let programs = merge_programs();
    let mut model = Model::new();
    model.run(&programs[0].1);
    for other in 1..model.writers.len() {
        peers_tests::sync_into(&model.writers[other], &model.writers[0]);
    }
    let history = all_changes(&model.writers[0]);
    write_all(&out.join("merge_model"), &programs)?;
    write_all(&out.join("change_decode"), &change_seeds(&history))?;
    let changesets = changeset_seeds(&history)?;
    write_all(&out.join("changeset_import"), &changesets)?;
    write_all(&out.join("signed_import"), &changesets)?;
    write_all(&out.join("wal_open"), &wal_seeds(&model, &history)?)?;
    for (name, program) in &programs {
        merge_model(program);
        println!("merge_model seed {name} passes");
    }
    println!("wrote seeds to {}", out.display());
    Ok(())
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

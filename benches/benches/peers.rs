//! Merge throughput, side by side with automerge, and the physical limits.
//! `cargo bench --workspace --bench peers` prints six groups: primitives,
//! local_commit, remote_merge, merge_vs_automerge (with Loro), rebuild and
//! scale. Figures and the
//! targets they are held against: benches/README.md.

use std::path::Path;
use std::time::Duration;

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use peers_benches::{Spec, Workload, generate};
use peers_engine::{Change, Db, Options, SyncMode, verify_ed25519_strict, verify_signatures};

fn options(sync: SyncMode) -> Options {
    Options {
        sync,
        ..Options::default()
    }
}

/// A fresh empty replica of the workload's database.
fn empty_replica(dir: &Path, workload: &Workload) -> Db {
    Db::join(dir, workload.database, options(SyncMode::Always)).expect("join")
}

fn local_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("local_commit");
    group.throughput(Throughput::Elements(1));
    for (name, sync) in [("fsync", SyncMode::Always), ("relaxed", SyncMode::Relaxed)] {
        for ops in [1usize, 10] {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = Db::create(dir.path().join("db"), options(sync)).expect("create");
            let mut counter = 0u64;
            group.bench_function(
                BenchmarkId::new(format!("{name}/{ops}_ops"), "1_change"),
                |b| {
                    b.iter(|| {
                        counter += 1;
                        let mut tx = db.transaction();
                        for op in 0..ops {
                            tx.set(
                                "items",
                                &format!("row{}", counter % 10_000),
                                &format!("f{op}"),
                                counter as i64,
                            );
                        }
                        tx.commit().expect("commit")
                    });
                },
            );
        }
    }
    // Two threads committing at once into one replica: their commits share
    // groups, and each signs its own change while the other's is admitted
    // and applied (a chain needs hashes, not signatures).
    for threads in [1u64, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::create(dir.path().join("db"), options(SyncMode::Relaxed)).expect("create");
        group.bench_function(
            BenchmarkId::new("relaxed/1_ops", format!("{threads}_threads")),
            |b| {
                b.iter_custom(|iters| {
                    let per_thread = iters.div_ceil(threads);
                    let start = std::time::Instant::now();
                    peers_benches::commit_from_threads(&db, threads, per_thread);
                    // Time per change committed (the last thread's share may
                    // round up).
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per_thread * threads) as f64)
                });
            },
        );
    }
    group.finish();
}

/// Applies the workload (genesis included) to a fresh replica from bytes:
/// decode, hash, batch-verify, admit, apply, one fsync per group.
fn merge_all(dir: &Path, workload: &Workload, encoded: &[Vec<u8>]) {
    peers_benches::apply_all(&empty_replica(dir, workload), encoded);
}

fn remote_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("remote_merge");
    // Iterations of a second or more: the same count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    for (changes, authors) in [(1_000usize, 3usize), (10_000, 10), (100_000, 100)] {
        let workload = generate(Spec::new(changes, authors));
        let encoded = workload.encoded();
        group.throughput(Throughput::Elements(encoded.len() as u64));
        group.bench_function(
            BenchmarkId::new("into_empty", format!("{changes}_changes_{authors}_authors")),
            |b| {
                b.iter_batched(
                    || tempfile::tempdir().expect("tempdir"),
                    |dir| merge_all(dir.path(), &workload, &encoded),
                    BatchSize::PerIteration,
                );
            },
        );
    }
    // Authorization's cost: the same shape in a members-only database, where
    // every change's author is checked against the grants it names.
    let workload = generate(Spec {
        members_only: true,
        ..Spec::new(10_000, 10)
    });
    let encoded = workload.encoded();
    group.throughput(Throughput::Elements(encoded.len() as u64));
    group.bench_function(
        BenchmarkId::new("into_empty_members_only", "10000_changes_10_authors"),
        |b| {
            b.iter_batched(
                || tempfile::tempdir().expect("tempdir"),
                |dir| merge_all(dir.path(), &workload, &encoded),
                BatchSize::PerIteration,
            );
        },
    );
    group.finish();
}

/// A replica holding `held` (RocksDB flushed and closed), to copy.
fn template(workload: &Workload, held: &[Vec<u8>]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    merge_all(&dir.path().join("db"), workload, held);
    dir
}

/// Scale: merging into replicas that already hold 10k, 100k and 1M changes
/// (10 authors, one workload whose prefixes they hold). `into_warm`: the
/// next 10k changes as one catch-up; `one_at_a_time`: the next 1,000, each
/// alone (relaxed: its own verify, admit, apply and log write), as a live
/// peer sends them; beside automerge documents holding the same prefixes
/// receiving the same changes one at a time.
fn scale(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    // Iterations of a second or more: the same count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    let sizes = [10_000usize, 100_000, 1_000_000];
    let workload = generate(Spec::new(1_010_000, 10));
    let encoded = workload.encoded();
    for held in sizes {
        let (prefix, rest) = encoded.split_at(held + 1);
        let template = template(&workload, prefix);
        let label = format!("{held}_held");
        let open = |dir: &tempfile::TempDir, sync| {
            Db::open(dir.path().join("db"), options(sync)).expect("open")
        };
        if held == 1_000_000 {
            let next = &rest[..10_000];
            group.throughput(Throughput::Elements(next.len() as u64));
            group.bench_function(BenchmarkId::new("into_warm_10000_changes", &label), |b| {
                b.iter_batched(
                    || {
                        let dir = copy_dir(&template.path().join("db"));
                        (open(&dir, SyncMode::Always), dir)
                    },
                    |(db, dir)| {
                        peers_benches::apply_all(&db, next);
                        (db, dir)
                    },
                    BatchSize::PerIteration,
                );
            });
        }
        let next = &rest[..1_000];
        group.throughput(Throughput::Elements(next.len() as u64));
        group.bench_function(BenchmarkId::new("one_at_a_time_relaxed", &label), |b| {
            b.iter_batched(
                || {
                    let dir = copy_dir(&template.path().join("db"));
                    (open(&dir, SyncMode::Relaxed), dir)
                },
                |(db, dir)| {
                    for change in next {
                        db.apply_encoded(std::slice::from_ref(change))
                            .expect("apply");
                    }
                    (db, dir)
                },
                BatchSize::PerIteration,
            );
        });
    }
    // automerge holding the same 10k prefix receives the same changes one at
    // a time. (Generating automerge changes gives each author a document of
    // everything: 100k held would take this generator many minutes.)
    let workload = generate(Spec {
        automerge: true,
        ..Spec::new(11_000, 10)
    });
    let mut document = automerge::AutoCommit::new();
    document
        .apply_changes(workload.automerge_changes(0..10_000))
        .expect("applies");
    let next = workload.automerge_changes(10_000..11_000);
    group.throughput(Throughput::Elements(next.len() as u64));
    group.bench_function(
        BenchmarkId::new("automerge_one_at_a_time", "10000_held"),
        |b| {
            b.iter_batched(
                || (document.clone(), next.clone()),
                |(mut document, next)| {
                    for change in next {
                        document.apply_changes([change]).expect("applies");
                    }
                    document
                },
                BatchSize::PerIteration,
            );
        },
    );
    // One at a time with an fsync each, into a small replica.
    let workload = generate(Spec::new(1_000, 3));
    let encoded = workload.encoded();
    group.throughput(Throughput::Elements(encoded.len() as u64));
    group.bench_function(BenchmarkId::new("one_at_a_time_fsync", "0_held"), |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let db = Db::join(dir.path(), workload.database, options(SyncMode::Always))
                    .expect("join");
                for change in &encoded {
                    db.apply_encoded(std::slice::from_ref(change))
                        .expect("apply");
                }
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success(), "copying the warm replica");
    dir
}

/// The same logical workload into Peers, automerge and Loro, from bytes.
/// Each side's empty replica or document is made outside the timed part
/// (for Peers: `Db::join`, a RocksDB open), and dropped outside it.
fn merge_vs_automerge(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge_vs_automerge");
    // Iterations of a second or more: the same count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    for (changes, authors) in [(1_000usize, 3usize), (10_000, 10)] {
        let workload = generate(Spec {
            automerge: true,
            loro: true,
            ..Spec::new(changes, authors)
        });
        let encoded = workload.encoded();
        group.throughput(Throughput::Elements(workload.changes.len() as u64));
        let label = format!("{changes}_changes_{authors}_authors");
        group.bench_function(BenchmarkId::new("peers", &label), |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let db = empty_replica(dir.path(), &workload);
                    (db, dir)
                },
                |(db, dir)| {
                    peers_benches::apply_all(&db, &encoded);
                    (db, dir)
                },
                BatchSize::PerIteration,
            );
        });
        group.bench_function(BenchmarkId::new("automerge", &label), |b| {
            b.iter_batched(
                || {
                    workload
                        .automerge
                        .iter()
                        .filter(|bytes| !bytes.is_empty())
                        .cloned()
                        .collect::<Vec<_>>()
                },
                |raw| {
                    let changes: Vec<automerge::Change> = raw
                        .into_iter()
                        .map(|bytes| automerge::Change::from_bytes(bytes).expect("decodes"))
                        .collect();
                    let mut document = automerge::AutoCommit::new();
                    document.apply_changes(changes).expect("applies");
                    document
                },
                BatchSize::PerIteration,
            );
        });
        group.bench_function(BenchmarkId::new("loro", &label), |b| {
            b.iter_batched(
                || (workload.loro.clone(), loro::LoroDoc::new()),
                |(raw, document)| {
                    document.import_batch(&raw).expect("imports");
                    document
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild");
    // Iterations of a second or more: the same count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    for changes in [10_000usize, 100_000] {
        let workload = generate(Spec::new(changes, 10));
        let encoded = workload.encoded();
        let dir = tempfile::tempdir().expect("tempdir");
        merge_all(&dir.path().join("db"), &workload, &encoded);
        let db = Db::open(dir.path().join("db"), options(SyncMode::Always)).expect("open");
        group.throughput(Throughput::Elements(encoded.len() as u64));
        group.bench_function(
            BenchmarkId::new("from_log", format!("{changes}_changes")),
            |b| {
                b.iter(|| db.rebuild(&mut |_, _| {}).expect("rebuild"));
            },
        );
    }
    group.finish();
}

fn primitives(c: &mut Criterion) {
    use ed25519_dalek::{Signer, SigningKey};
    let mut group = c.benchmark_group("primitives");
    let workload = generate(Spec::new(1_000, 3));
    let typical: &Change = &workload.changes[500];
    let bytes = typical.bytes().to_vec();
    let key = SigningKey::from_bytes(&[7; 32]);
    let message = [0u8; 58];
    let signature = key.sign(&message);
    let verifying = key.verifying_key();
    group.throughput(Throughput::Elements(1));
    group.bench_function("ed25519_sign", |b| b.iter(|| key.sign(&message)));
    group.bench_function("ed25519_verify_strict", |b| {
        b.iter(|| verifying.verify_strict(&message, &signature))
    });
    group.bench_function("verify_one_change", |b| {
        b.iter(|| peers_engine::verify_signature(typical).expect("valid"))
    });
    group.bench_function("blake3_typical_change", |b| b.iter(|| blake3::hash(&bytes)));
    group.bench_function("change_decode_typical", |b| {
        b.iter(|| Change::decode(&bytes).expect("decodes"))
    });
    // Our strict cofactored batch and ed25519-dalek's raw batch, on the same
    // 64 signatures by 64 keys.
    let messages: Vec<[u8; 58]> = (0..64u8).map(|i| [i; 58]).collect();
    let keys: Vec<SigningKey> = (0..64u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let signatures: Vec<_> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
    let verifying_keys: Vec<_> = keys.iter().map(SigningKey::verifying_key).collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    let key_bytes: Vec<[u8; 32]> = verifying_keys.iter().map(|key| key.to_bytes()).collect();
    let signature_bytes: Vec<[u8; 64]> = signatures.iter().map(|s| s.to_bytes()).collect();
    let items: Vec<(&[u8], &[u8; 32], &[u8; 64])> = message_refs
        .iter()
        .zip(&key_bytes)
        .zip(&signature_bytes)
        .map(|((message, key), signature)| (*message, key, signature))
        .collect();
    group.throughput(Throughput::Elements(64));
    group.bench_function("ed25519_batch_verify_64_keys_strict", |b| {
        b.iter(|| verify_ed25519_strict(&items).expect("valid"))
    });
    group.bench_function("ed25519_batch_verify_64_keys_raw", |b| {
        b.iter(|| {
            ed25519_dalek::verify_batch(&message_refs, &signatures, &verifying_keys).expect("valid")
        })
    });
    // The anchor of `remote_merge` at 10k / 10 authors: one job of it as a
    // merge verifies it (512 changes of that workload, 10 authors).
    let merge_workload = generate(Spec::new(10_000, 10));
    let job: Vec<Change> = merge_workload.changes[1..=512].to_vec();
    group.throughput(Throughput::Elements(job.len() as u64));
    group.bench_function("batch_verify_512_changes_10_authors", |b| {
        b.iter(|| verify_signatures(&job).expect("valid"))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = primitives, local_commit, remote_merge, merge_vs_automerge, rebuild, scale
}
criterion_main!(benches);

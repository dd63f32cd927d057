//! What a catch-up request costs the side that serves it before the first
//! change goes out: `cargo run --release -p peers-benches --example
//! catch_up_cost -- 200000 10` (changes, authors) builds a replica of that
//! many generated changes plus one forked author (so the rule "send a cut
//! change when a sent change names it" is in force), then asks it for
//! everything an empty replica lacks (`changes_since` of an empty vector,
//! what a member's empty `Vector` triggers) and prints the time and memory
//! to the first change, then the time to stream them all.

use std::time::Instant;

use peers_benches::{Spec, generate};
use peers_engine::{Db, Identity, Options, VersionVector};

fn main() {
    let mut args = std::env::args().skip(1);
    let changes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let authors: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let workload = generate(Spec::new(changes, authors));
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || Options {
        members_only: false,
        sync: peers_engine::SyncMode::Relaxed,
        ..Options::default()
    };
    let source = Db::join(dir.path().join("source"), workload.database, options()).expect("join");
    peers_benches::apply_all(&source, &workload.encoded());
    // One key signs two different changes at seq 1 on two devices.
    let forker = Identity::generate();
    let genesis = source
        .get_change(&peers_engine::ChangeHash(workload.database.0))
        .expect("read")
        .expect("genesis");
    let mut fork = Vec::new();
    for device in ["k1", "k2"] {
        let db = Db::join(
            dir.path().join(device),
            workload.database,
            Options {
                identity: Some(forker.clone()),
                ..options()
            },
        )
        .expect("join");
        db.apply(vec![genesis.clone()]).expect("genesis");
        let mut tx = db.transaction();
        tx.set("items", device, "from", device);
        let hash = tx.commit().expect("commit");
        fork.push(db.get_change(&hash).expect("read").expect("held"));
    }
    source.apply(fork).expect("apply the fork");
    assert_eq!(source.fork_cut(&forker.author()), Some(0));

    let before = peers_benches::status_kib("VmRSS:");
    let started = Instant::now();
    let mut stream = source
        .changes_since(&VersionVector::new())
        .expect("changes since");
    let first = stream.next().expect("a first change").expect("read");
    let to_first = started.elapsed();
    let memory = peers_benches::status_kib("VmRSS:").saturating_sub(before);
    let mut count = 1;
    for change in stream {
        change.expect("read");
        count += 1;
    }
    let all = started.elapsed();
    println!(
        "{} changes held; first change (seq {}) after {to_first:?} and +{memory} KiB resident; \
         all {count} streamed in {all:?}",
        changes + 3,
        first.seq()
    );
}

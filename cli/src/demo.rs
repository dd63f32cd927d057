//! `peers demo`: alice creates a members-only database and grants bob and
//! carol writer; the three replicas write concurrently to the same fields,
//! exchange change-set files in different orders, and end with one state
//! hash.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use anyhow::{Context, Result, ensure};
use peers_engine::{Change, ChangeSetReader, ChangeSetWriter, Db, Options, Role};

use crate::output::row_text;

pub(crate) fn run() -> Result<()> {
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let root = temp.path();
    println!("Three replicas in {}\n", root.display());
    let alice = Db::create(root.join("alice"), Options::default())?;
    let bob = Db::join(root.join("bob"), alice.database_id(), Options::default())?;
    let carol = Db::join(root.join("carol"), alice.database_id(), Options::default())?;
    println!("database {}", alice.database_id());
    let replicas = [("alice", &alice), ("bob", &bob), ("carol", &carol)];
    for (name, db) in replicas {
        println!("  {name:<5} key {}", db.author());
    }

    alice.grant(bob.author(), Role::Writer)?;
    alice.grant(carol.author(), Role::Writer)?;
    println!("\nalice (the owner) grants bob and carol the writer role");
    let mut tx = alice.transaction();
    tx.set("notes", "old", "title", "to be deleted");
    tx.set("notes", "plan", "title", "first draft").set(
        "notes",
        "plan",
        "votes",
        peers_engine::Value::Counter(0),
    );
    tx.commit()?;
    println!("alice writes notes/old and notes/plan, then bob and carol import her log");
    exchange(root, &alice, &bob, "alice", "bob")?;
    exchange(root, &alice, &carol, "alice", "carol")?;

    println!("\nConcurrent writes, no exchange in between:");
    let mut tx = alice.transaction();
    tx.set("notes", "plan", "title", "Alice's plan")
        .set("notes", "plan", "status", "draft");
    tx.commit()?;
    println!("  alice: plan.title = \"Alice's plan\", plan.status = \"draft\"");
    let mut tx = bob.transaction();
    tx.set("notes", "plan", "title", "Bob's plan")
        .increment("notes", "plan", "votes", 2);
    tx.commit()?;
    println!("  bob:   plan.title = \"Bob's plan\", plan.votes += 2");
    let mut tx = carol.transaction();
    tx.set("notes", "plan", "status", "final")
        .increment("notes", "plan", "votes", 5)
        .delete("notes", "old");
    tx.commit()?;
    println!("  carol: plan.status = \"final\", plan.votes += 5, delete notes/old");

    println!("\nExchange change-set files, each replica in a different order:");
    for (to, from) in [(0, 1), (0, 2), (1, 2), (1, 0), (2, 0), (2, 1)] {
        let (to_name, to_db) = replicas[to];
        let (from_name, from_db) = replicas[from];
        exchange(root, from_db, to_db, from_name, to_name)?;
    }

    println!("\nResult:");
    let mut hashes = Vec::new();
    for (name, db) in replicas {
        let hash = db.state_hash()?;
        for item in db.scan("notes") {
            let (row, fields) = item?;
            println!("  {name:<5} notes/{row}: {}", row_text(&fields));
        }
        println!("  {name:<5} state hash {hash}");
        hashes.push(hash);
    }
    ensure!(
        hashes.windows(2).all(|pair| pair[0] == pair[1]),
        "replicas did not converge: {hashes:?}"
    );
    println!("\nAll three replicas hold the same state: converged.");
    Ok(())
}

/// `peers export --since` on one side, `peers import` on the other.
fn exchange(root: &Path, from: &Db, to: &Db, from_name: &str, to_name: &str) -> Result<()> {
    let path = root.join(format!("{from_name}-to-{to_name}.peers"));
    let mut writer =
        ChangeSetWriter::new(BufWriter::new(File::create(&path)?), from.database_id())?;
    for change in from.changes_since(&to.version_vector()?)? {
        writer.write(&change?)?;
    }
    let sent = writer.records();
    writer.finish()?;
    let reader = ChangeSetReader::new(BufReader::new(File::open(&path)?))?;
    let changes: Vec<Change> = reader
        .map(|bytes| Ok(Change::decode(&bytes?)?))
        .collect::<Result<_>>()?;
    let report = to.apply(changes)?;
    ensure!(
        report.refused.is_empty(),
        "{to_name} refused changes from {from_name}: {:?}",
        report.refused
    );
    println!(
        "  {from_name:<5} -> {to_name:<5} {sent} changes, {} new",
        report.accepted.len()
    );
    Ok(())
}

//! Child process of the crash test: commits changes from several threads
//! with durable (fsync) commits. Before each commit it prints `+` on a line
//! of its own; after `commit` returned, the change's hash. Both are flushed
//! at once, so the parent knows how many commits were in flight when it
//! killed the child with SIGKILL (begun, not acknowledged), and checks every
//! printed hash survived.
//!
//! Usage: crash-writer DB_DIR THREADS

use std::io::Write;
use std::sync::Mutex;

use peers_engine::{Db, Options};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: crash-writer DB_DIR THREADS"))?;
    let threads: usize = args.next().unwrap_or_else(|| "4".into()).parse()?;
    let db = Db::open(&dir, Options::default())?;
    let stdout = Mutex::new(std::io::stdout());
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (db, stdout) = (&db, &stdout);
            scope.spawn(move || -> anyhow::Result<()> {
                for index in 0u64.. {
                    let mut tx = db.transaction();
                    let row = format!("t{thread}-{}", index % 50);
                    tx.set("crash", &row, "index", index as i64)
                        .increment("crash", "totals", "commits", 1);
                    let say = |line: &dyn std::fmt::Display| -> std::io::Result<()> {
                        let mut out = stdout
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        writeln!(out, "{line}")?;
                        out.flush()
                    };
                    say(&"+")?;
                    let hash = tx.commit()?;
                    say(&hash)?;
                }
                Ok(())
            });
        }
    });
    Ok(())
}

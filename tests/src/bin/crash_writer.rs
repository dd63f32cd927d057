//! Child process of the crash test: commits changes from several threads
//! with durable (fsync) commits and prints each acknowledged change's hash
//! on its own line, flushed, only after `commit` returned. The parent kills
//! it with SIGKILL at a random moment and checks every printed hash survived.
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
                    let hash = tx.commit()?;
                    let mut out = stdout
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    writeln!(out, "{hash}")?;
                    out.flush()?;
                }
                Ok(())
            });
        }
    });
    Ok(())
}

//! Child process of tests/tests/net_crash.rs: opens the database in DIR
//! (fsync on every commit, as a user's would be), syncs once with ADDRESS,
//! and prints the report. The test SIGKILLs it in the middle of the stream.
//!
//! Usage: `sync-peer DIR ADDRESS`

use anyhow::{Context, Result};
use peers_engine::{Db, Options};
use peers_net::{Node, NodeConfig};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: sync-peer DIR ADDRESS")?;
    let address = args.next().context("usage: sync-peer DIR ADDRESS")?;
    let db = Db::open(&dir, Options::default()).with_context(|| format!("opening {dir}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let node = Node::start(db, NodeConfig::default()).await?;
        let report = node.sync_once(&address, None).await;
        node.shutdown().await;
        let report = report?;
        println!(
            "received {} sent {}",
            report.changes_received, report.changes_sent
        );
        Ok(())
    })
}

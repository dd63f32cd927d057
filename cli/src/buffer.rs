//! `peers buffer …`: the blind sync buffer (`peers-buffer`): its server,
//! one-shot push and pull, and the background sync of `peers serve
//! --buffer URL`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use peers_buffer::{Client, Cursors, PullReport, PushReport, Server, ServerConfig};
use peers_engine::{ChangeHash, Db};
use serde_json::json;

use crate::commands::parse_duration;
use crate::console::{self, print};

/// The server's settings (`peers buffer` without a subcommand).
#[derive(clap::Args, Debug)]
pub(crate) struct ServerArgs {
    /// Address to listen on (IP:PORT) for members' pushes and pulls.
    #[arg(long, default_value = "0.0.0.0:7500", value_name = "ADDR")]
    listen: String,
    /// Where envelopes are kept: a local directory, or s3://BUCKET/PREFIX (credentials, region and endpoint from the AWS_* environment variables); any number of buffers may share one bucket.
    #[arg(long, default_value = "peers-buffer", value_name = "DIR|URL")]
    store: String,
    /// How long an envelope is kept: 90m, 24h, 14d.
    #[arg(long, default_value = "14d", value_name = "DURATION")]
    keep: String,
    /// Most megabytes (MiB) of envelopes one space (a database, for one week) may hold.
    #[arg(long, default_value_t = 64, value_name = "MB")]
    space_quota_mb: u64,
    /// Most megabytes (MiB) one client (IP address) may write per hour.
    #[arg(long, default_value_t = 256, value_name = "MB")]
    client_quota_mb: u64,
    /// Most connections served at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    connections: usize,
}

/// The `peers buffer` subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum BufferCommand {
    /// Push this replica's changes that the buffer lacks (all of them the first time; then those since the last push, kept in DIR/buffer.json).
    Push {
        /// The buffer (HOST:PORT, `peers buffer --listen`).
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Pull what the buffer holds for this database (the last two to three weeks), verify each change and apply it.
    Pull {
        /// The buffer (HOST:PORT).
        #[arg(long, value_name = "URL")]
        from: String,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the buffer's runtime")
}

/// Runs `future` on a runtime of its own on a thread of its own (so it
/// also runs inside a holder's runtime).
pub(crate) fn block_on<F>(future: F) -> Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| Ok(runtime()?.block_on(future)))
            .join()
            .map_err(|_| anyhow::anyhow!("the buffer thread panicked"))?
    })
}

fn megabytes(mb: u64, flag: &str) -> Result<u64> {
    if mb == 0 {
        anyhow::bail!("{flag} must be at least 1");
    }
    mb.checked_mul(1024 * 1024)
        .with_context(|| format!("{flag} {mb} is too large"))
}

/// `peers buffer --listen ADDR`: the server, until Ctrl-C.
pub(crate) fn serve(args: ServerArgs, json: bool) -> Result<()> {
    let listen: SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("--listen {:?} is not IP:PORT", args.listen))?;
    let keep = parse_duration(&args.keep).context("--keep")?;
    if keep.is_zero() {
        anyhow::bail!("--keep must be longer than 0 s");
    }
    let config = ServerConfig {
        keep,
        space_bytes_max: megabytes(args.space_quota_mb, "--space-quota-mb")?,
        client_bytes_per_hour: megabytes(args.client_quota_mb, "--client-quota-mb")?,
        connections_max: args.connections.max(1),
        sweep_every: (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(600)),
    };
    let store_url = if args.store.contains("://") {
        args.store.clone()
    } else {
        console::path(std::path::Path::new(&args.store))
            .display()
            .to_string()
    };
    let (store, prefix) = peers_buffer::open_store(&store_url)
        .with_context(|| format!("opening the buffer's store {store_url}"))?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            let address = listener.local_addr().context("listening")?;
            let server = Arc::new(Server::new(store, prefix, config));
            print(
                json,
                json!({ "event": "buffering", "address": address.to_string(), "store": store_url,
                        "keep_seconds": keep.as_secs() }),
                || {
                    format!(
                        "buffering on {address} into {store_url}, keeping envelopes {}; members use --buffer HOST:{}; Ctrl-C stops",
                        args.keep,
                        address.port()
                    )
                },
            );
            let serving = tokio::spawn(Arc::clone(&server).serve(listener));
            tokio::select! {
                () = console::interrupted() => {}
                result = serving => {
                    result.context("the buffer stopped")??;
                }
            }
            let counters = server.counters();
            print(
                json,
                json!({ "event": "stopped", "stored": counters.stored, "duplicates": counters.duplicates,
                        "served": counters.served, "refused": counters.refused, "expired": counters.expired }),
                || {
                    format!(
                        "stopped; stored {} envelopes ({} duplicates), served {}, refused {} requests, deleted {} expired",
                        counters.stored, counters.duplicates, counters.served, counters.refused, counters.expired
                    )
                },
            );
            Ok(())
        })
}

/// The subcommands that run on an open database.
pub(crate) fn run_on(db: &Db, command: BufferCommand, json: bool) -> Result<()> {
    match command {
        BufferCommand::Push { to } => {
            let report = block_on(async {
                let mut client = Client::connect(&to).await?;
                peers_buffer::push(db, &mut client, &to, &HashSet::new()).await
            })?
            .with_context(|| format!("pushing to the buffer {to}"))?;
            print_push(&to, &report, json, false);
        }
        BufferCommand::Pull { from } => {
            let report = block_on(async {
                let mut client = Client::connect(&from).await?;
                peers_buffer::pull(
                    db,
                    &mut client,
                    &mut Cursors::default(),
                    &mut HashSet::new(),
                )
                .await
            })?
            .with_context(|| format!("pulling from the buffer {from}"))?;
            print_pull(&from, &report, json, false);
        }
    }
    Ok(())
}

fn print_push(url: &str, report: &PushReport, json: bool, event: bool) {
    let mut value = json!({ "buffer": url, "changes": report.changes, "stored": report.stored,
                            "duplicates": report.duplicates, "bytes": report.bytes });
    if event {
        value["event"] = json!("buffer_pushed");
    }
    print(json, value, || {
        format!(
            "pushed {} changes to the buffer {url}: {} new there, {} it held; {} bytes sent",
            report.changes, report.stored, report.duplicates, report.bytes
        )
    });
}

fn print_pull(url: &str, report: &PullReport, json: bool, event: bool) {
    let missing = report.missing;
    let mut value = json!({ "buffer": url, "envelopes": report.envelopes, "applied": report.applied,
                            "duplicates": report.duplicates, "refused": report.refused,
                            "unopened": report.unopened, "pending": report.pending,
                            "missing": missing });
    if event {
        value["event"] = json!("buffer_pulled");
    }
    print(json, value, || {
        let mut line = format!(
            "pulled {} envelopes from the buffer {url}: {} changes applied, {} already held",
            report.envelopes, report.applied, report.duplicates
        );
        if report.refused > 0 || report.unopened > 0 {
            line.push_str(&format!(
                "; {} refused by verification, {} did not open (altered, or not this database's)",
                report.refused, report.unopened
            ));
        }
        if report.pending > 0 {
            line.push_str(&format!(
                "; {} wait for {missing} missing changes (a gap: the buffer dropped or has not got them; another peer may have them)",
                report.pending
            ));
        }
        line
    });
}

/// One buffer a serving replica syncs with.
struct Link {
    url: String,
    client: Option<Client>,
    cursors: Cursors,
    pulled: HashSet<ChangeHash>,
}

async fn connect<'a>(
    client: &'a mut Option<Client>,
    url: &str,
) -> peers_buffer::Result<&'a mut Client> {
    if client.is_none() {
        *client = Some(Client::connect(url).await?);
    }
    Ok(client.as_mut().expect("connected above"))
}

impl Link {
    async fn pull(&mut self, db: &Db, json: bool) {
        let Link {
            url,
            client,
            cursors,
            pulled,
        } = self;
        let result = match connect(client, url).await {
            Ok(client) => peers_buffer::pull(db, client, cursors, pulled).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(report) if report.applied > 0 || report.unopened > 0 || report.refused > 0 => {
                print_pull(url, &report, json, true);
            }
            Ok(_) => {}
            Err(error) => self.failed("pull", &error),
        }
    }

    async fn push(&mut self, db: &Db, json: bool) {
        let Link {
            url,
            client,
            pulled,
            ..
        } = self;
        let result = match connect(client, url).await {
            Ok(client) => peers_buffer::push(db, client, url, pulled).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(report) if report.changes > 0 => print_push(url, &report, json, true),
            Ok(_) => {}
            Err(error) => self.failed("push", &error),
        }
    }

    fn failed(&mut self, what: &str, error: &peers_buffer::Error) {
        self.client = None;
        console::err(&format!(
            "peers: buffer {}: {what} failed (tried again later): {error}",
            self.url
        ));
    }
}

/// `peers serve --buffer URL`: a thread that pulls from each buffer at
/// start and every interval, and pushes new changes (local and received)
/// as they are applied; until dropped.
pub(crate) struct Background {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts the thread.
    pub(crate) fn start(
        db: &Db,
        urls: &[String],
        every: Duration,
        json: bool,
    ) -> Result<Background> {
        if every.is_zero() {
            anyhow::bail!("--buffer-every must be longer than 0 s");
        }
        for url in urls {
            let address = url.strip_prefix("tcp://").unwrap_or(url);
            if !address.contains(':') {
                anyhow::bail!("--buffer {url}: expected HOST:PORT");
            }
        }
        let db = db.clone();
        let mut links: Vec<Link> = urls
            .iter()
            .map(|url| Link {
                url: url.clone(),
                client: None,
                cursors: Cursors::default(),
                pulled: HashSet::new(),
            })
            .collect();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("buffer".into())
            .spawn(move || {
                let Ok(runtime) = runtime() else {
                    console::err("peers: the buffer's runtime did not start");
                    return;
                };
                runtime.block_on(async move {
                    let mut changes = db.subscribe();
                    let mut ticks = tokio::time::interval(every);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        // The first tick is now: pull, then push, at start.
                        let pull = tokio::select! {
                            _ = stopped.changed() => return,
                            _ = ticks.tick() => true,
                            _ = changes.recv() => false,
                        };
                        if !pull {
                            // Let a burst of commits gather into one push.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            changes = changes.resubscribe();
                        }
                        for link in &mut links {
                            if pull {
                                link.pull(&db, json).await;
                            }
                            link.push(&db, json).await;
                        }
                    }
                });
            })
            .context("starting the buffer thread")?;
        Ok(Background {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! The network commands: `serve`, `sync` (one-shot or `--live`) and
//! `peers`. Each runs a tokio runtime around a `peers_net::Node`.

use std::net::SocketAddr;
use std::time::Duration;

use std::path::Path;

use anyhow::{Context, Result};
use peers_engine::{Author, Db, Options};
use peers_net::invite::{InviteOptions, Invites, Ticket};
use peers_net::{Discovery, Event, Node, NodeConfig, SyncReport, known_peers};
use serde_json::json;
use tokio::sync::broadcast;

use crate::Across;
use crate::console::{self, print, spinner};
use crate::serve::ServeOptions;

/// The node configuration `--signal` and `--stun` ask for: the signaling
/// servers, and STUN at each server's host and port unless `--stun` names
/// others.
async fn across_config(across: &Across, mut config: NodeConfig) -> Result<NodeConfig> {
    for url in &across.signal {
        let authority = url
            .strip_prefix("ws://")
            .with_context(|| format!("--signal {url:?} must start with ws://"))?;
        let authority = authority.split('/').next().unwrap_or(authority);
        if across.stun.is_empty() {
            let address = tokio::net::lookup_host(authority)
                .await
                .with_context(|| format!("resolving the signaling server {authority}"))?
                .next()
                .with_context(|| format!("{authority} resolves to no address"))?;
            config.webrtc.stun_servers.push(address);
        }
        config.signal.push(url.clone());
    }
    for stun in &across.stun {
        let address = tokio::net::lookup_host(stun.as_str())
            .await
            .with_context(|| format!("resolving the STUN server {stun}"))?
            .next()
            .with_context(|| format!("{stun} resolves to no address"))?;
        config.webrtc.stun_servers.push(address);
    }
    Ok(config)
}

/// A `--connect` or `sync` target: a public key (64 hex digits) is dialed
/// through the signaling servers, anything else is an address.
fn as_key(target: &str) -> Option<Author> {
    if target.len() == 64 {
        Author::from_hex(target).ok()
    } else {
        None
    }
}

/// `peers signal`: a signaling server and STUN responder, until Ctrl-C.
pub(crate) fn signal(listen: String, stun: Option<&str>, json: bool) -> Result<()> {
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not IP:PORT"))?;
    let stun: SocketAddr = match stun {
        Some(stun) => stun
            .parse()
            .with_context(|| format!("--stun {stun:?} is not IP:PORT"))?,
        None => listen,
    };
    runtime()?.block_on(async {
        let config = peers_signal::ServerConfig::new(listen).with_stun(stun);
        let server = peers_signal::Server::start(config)
            .await
            .with_context(|| format!("starting the signaling server on {listen}"))?;
        let address = server.local_addr();
        let stun = server.stun_addr();
        print(
            json,
            json!({ "event": "signaling", "address": address.to_string(),
                    "stun": stun.map(|stun| stun.to_string()) }),
            || {
                format!(
                    "signaling on ws://{address}{}; peers use --signal ws://HOST:{}; Ctrl-C stops",
                    stun.map(|stun| format!(", STUN on udp {stun}"))
                        .unwrap_or_default(),
                    address.port()
                )
            },
        );
        console::interrupted().await;
        let clients = server.clients();
        server.shutdown().await;
        print(
            json,
            json!({ "event": "stopped", "clients": clients }),
            || format!("stopped; {clients} clients were registered"),
        );
        Ok(())
    })
}

/// `peers serve`: each database's node (accepting peers, dialing its
/// `connect`), and the metrics endpoint if asked, until Ctrl-C.
pub(crate) fn serve(
    databases: &[(Db, ServeOptions)],
    metrics: Option<SocketAddr>,
    json: bool,
) -> Result<()> {
    runtime()?.block_on(async {
        let many = databases.len() > 1;
        let mut nodes = Vec::new();
        for (db, options) in databases {
            let label = many.then(|| db.dir().display().to_string());
            match start_node(db, options, label.as_deref(), json).await {
                Ok(node) => nodes.push((label, node)),
                Err(error) => {
                    for (_, node) in nodes {
                        node.shutdown().await;
                    }
                    return Err(error.context(format!("serving {}", db.dir().display())));
                }
            }
        }
        let nodes = std::sync::Arc::new(nodes);
        let endpoint = match metrics {
            Some(address) => {
                let endpoint =
                    crate::metrics::Endpoint::start(address, std::sync::Arc::clone(&nodes))
                        .await
                        .with_context(|| format!("serving metrics on {address}"))?;
                let address = endpoint.local_addr();
                print(
                    json,
                    json!({ "event": "metrics", "address": address.to_string() }),
                    || {
                        format!(
                            "metrics on http://{address}/metrics, health on http://{address}/health"
                        )
                    },
                );
                Some(endpoint)
            }
            None => None,
        };
        let result = run_until_ctrl_c(&nodes, json).await;
        if let Some(endpoint) = endpoint {
            endpoint.shutdown().await;
        }
        let nodes = std::sync::Arc::into_inner(nodes)
            .context("the metrics endpoint let go of the nodes")?;
        for (_, node) in nodes {
            node.shutdown().await;
        }
        result
    })
}

/// Starts one database's node as `options` say; prints where it listens.
async fn start_node(
    db: &Db,
    options: &ServeOptions,
    label: Option<&str>,
    json: bool,
) -> Result<Node> {
    let listen = options.listen_address()?;
    let discover = options.discover;
    let across = options.across();
    let config = NodeConfig {
        listen: Some(listen),
        discover,
        ..NodeConfig::default()
    };
    let config = across_config(&across, config).await?;
    let node = Node::start(db.clone(), config)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let address = node.local_addr().context("node listens")?;
    labelled(
        label,
        json,
        json!({ "event": "listening", "address": address.to_string(),
                "public_key": db.author().to_hex(), "database": db.database_id().to_hex() }),
        format!(
            "listening on {address} as {}{}; Ctrl-C stops",
            db.author(),
            if discover {
                ", announced on the LAN"
            } else {
                ""
            }
        ),
    );
    if discover && address.ip().is_loopback() {
        console::err(&format!(
            "peers: note: listening on loopback only; other machines cannot reach it (use --listen 0.0.0.0:{})",
            address.port()
        ));
    }
    let registered = node.signaling_servers();
    for url in &across.signal {
        if registered.contains(url) {
            print_event(label, &Event::Registered { url: url.clone() }, 0, 0, json);
        } else {
            console::err(&format!(
                "peers: note: {url} does not answer yet; retrying in the background"
            ));
        }
    }
    for peer in &options.connect {
        let connected = match as_key(peer) {
            Some(key) if !across.signal.is_empty() => node.connect_key(key).await,
            Some(_) => {
                node.shutdown().await;
                anyhow::bail!("--connect {peer} is a key: reaching it needs --signal URL");
            }
            None => node.connect(peer, None).await,
        };
        if let Err(error) = connected {
            node.shutdown().await;
            return Err(error.into());
        }
    }
    Ok(node)
}

/// Prints one line: as is with one database; with several, the JSON
/// object gets the directory as `dir` and the text line starts with it.
fn labelled(label: Option<&str>, json: bool, mut value: serde_json::Value, text: String) {
    if let Some(label) = label {
        value["dir"] = json!(label);
    }
    print(json, value, || match label {
        Some(label) => format!("[{label}] {text}"),
        None => text,
    });
}

/// `peers sync ADDR`: one session both ways, or `--live` until Ctrl-C.
pub(crate) fn sync(
    db: &Db,
    address: &str,
    expect_key: Option<&str>,
    live: bool,
    across: &Across,
    json: bool,
) -> Result<()> {
    let expected = expect_key
        .map(|key| Author::from_hex(key).context("--expect-key must be 64 hex digits"))
        .transpose()?;
    let key = as_key(address);
    if key.is_some() && across.signal.is_empty() {
        anyhow::bail!(
            "{address} is a public key: reaching it needs --signal ws://HOST:PORT (a signaling server both replicas use)"
        );
    }
    runtime()?.block_on(async {
        let config = across_config(across, NodeConfig::default()).await?;
        let node = Node::start(db.clone(), config).await?;
        if key.is_some() && node.signaling_servers().is_empty() {
            node.shutdown().await;
            anyhow::bail!(
                "no signaling server answered ({}); is `peers signal` running there?",
                across.signal.join(", ")
            );
        }
        if live {
            match key {
                Some(key) => node.connect_key(key).await?,
                None => node.connect(address, expected).await?,
            }
            let nodes = vec![(None, node)];
            let result = run_until_ctrl_c(&nodes, json).await;
            for (_, node) in nodes {
                node.shutdown().await;
            }
            return result;
        }
        let once = async {
            match key {
                Some(key) => node.sync_key(key).await,
                None => node.sync_once(address, expected).await,
            }
        };
        let result = with_progress(&node, "syncing", once).await;
        node.shutdown().await;
        let report = result.with_context(|| format!("syncing with {address}"))?;
        print_report(&report, json);
        Ok(())
    })
}

/// Runs `work` (one sync) with a spinner that counts the changes the
/// node's events report.
async fn with_progress(
    node: &Node,
    what: &'static str,
    work: impl std::future::Future<Output = peers_net::Result<SyncReport>>,
) -> peers_net::Result<SyncReport> {
    let bar = spinner(what);
    let mut events = node.events();
    let counting = async {
        let (mut received, mut sent) = (0u64, 0u64);
        loop {
            match events.recv().await {
                Ok(Event::Received { changes, .. }) => received += changes,
                Ok(Event::Sent { changes, .. }) => sent += changes,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
            bar.set_message(format!("{what}: {received} changes in, {sent} out"));
        }
    };
    let result = tokio::select! {
        result = work => result,
        () = counting => unreachable!("the node outlives the sync"),
    };
    bar.finish_and_clear();
    result
}

/// Prints what one sync did.
fn print_report(report: &SyncReport, json: bool) {
    let (value, text) = report_output(report);
    print(json, value, || text);
}

/// What one sync did, as JSON and as text.
fn report_output(report: &SyncReport) -> (serde_json::Value, String) {
    let peer = report.peer.map(|peer| peer.to_hex()).unwrap_or_default();
    let value = json!({
        "peer": peer,
        "changes_sent": report.changes_sent,
        "changes_received": report.changes_received,
        "duplicates_received": report.duplicates_received,
        "bytes_sent": report.bytes_sent,
        "bytes_received": report.bytes_received,
        "round_trips": report.round_trips,
        "forked_authors": report.forked_authors.iter().map(Author::to_hex).collect::<Vec<_>>(),
        "snapshot_sent": report.snapshot_sent.map(|hash| hash.to_hex()),
        "snapshot_received": report.snapshot_received.as_ref().map(|received| json!({
            "checkpoint": received.checkpoint.to_hex(),
            "bytes": received.bytes,
            "path": received.path.display().to_string(),
        })),
    });
    let mut text = format!(
        "synced with {peer}\nsent {} ({} bytes), received {} ({} bytes), {}",
        count(report.changes_sent, "change"),
        report.bytes_sent,
        count(report.changes_received, "change"),
        report.bytes_received,
        count(u64::from(report.round_trips), "round trip"),
    );
    for author in &report.forked_authors {
        text.push_str(&format!("\nfork: {author} has two changes at one seq; cut"));
    }
    if let Some(checkpoint) = report.snapshot_sent {
        text.push_str(&format!(
            "\nsent our snapshot of checkpoint {checkpoint}: the peer lacked history trimmed here"
        ));
    }
    if let Some(received) = &report.snapshot_received {
        text.push_str(&format!(
            "\nthe peer trimmed history this replica lacks: received its snapshot (checkpoint {}, {} bytes), kept at {}; it is installed when peers next opens this database itself",
            received.checkpoint,
            received.bytes,
            received.path.display()
        ));
    }
    (value, text)
}

/// `peers invite`: makes an invite, prints its ticket (and a QR code).
pub(crate) fn invite(db: &Db, options: &InviteOptions, qr: bool, json: bool) -> Result<()> {
    for url in &options.signal {
        if !url.starts_with("ws://") {
            anyhow::bail!("--signal {url:?} must start with ws://");
        }
    }
    let ticket = Invites::shared(db.dir())
        .lock()
        .map_err(|_| anyhow::anyhow!("the invites book is poisoned"))?
        .create(db, options)?;
    let text = ticket.encode();
    let code = if qr && !json {
        let code = qrcode::QrCode::new(text.as_bytes()).context("making the QR code")?;
        Some(
            code.render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .quiet_zone(true)
                .build(),
        )
    } else {
        None
    };
    let hours = options.expires.as_secs_f64() / 3600.0;
    print(
        json,
        json!({
            "ticket": text,
            "role": options.role.to_string(),
            "uses": options.uses,
            "expires_ms": ticket.expires_ms,
            "inviter": ticket.inviter.to_hex(),
        }),
        || {
            let mut out = String::new();
            if let Some(code) = &code {
                out.push_str(code);
                out.push('\n');
            }
            out.push_str(&text);
            out.push_str(&format!(
                "\n\nOn the new device: peers --db DIR join {}...\nIt grants {} ({}, valid {hours:.1} h). Keep `peers serve{}{}` running here until it has joined.",
                &text[..16],
                options.role,
                count(u64::from(options.uses), "use"),
                options.signal.iter().map(|url| format!(" --signal {url}")).collect::<String>(),
                options.addresses.first().map(|address| format!(" --listen {address}")).unwrap_or_default(),
            ));
            out
        },
    );
    Ok(())
}

/// `peers join TICKET`: creates the replica, reaches the inviter, redeems
/// the invite and runs the first sync. A failed join leaves no directory
/// behind, so it can be retried as it was typed.
pub(crate) fn join_ticket(
    dir: &Path,
    text: &str,
    across: &Across,
    identity: Option<peers_engine::Identity>,
    json: bool,
) -> Result<()> {
    let ticket = Ticket::decode(text)?;
    if ticket.is_expired() {
        anyhow::bail!("the ticket has expired; ask the inviter for a new one (peers invite)");
    }
    if ticket.addresses.is_empty() && ticket.signal.is_empty() && across.signal.is_empty() {
        anyhow::bail!("the ticket names no way to reach the inviter; give --signal ws://HOST:PORT");
    }
    let existed = dir.exists();
    let options = Options {
        identity,
        ..Options::default()
    };
    let mut db = Db::join(dir, ticket.database, options)
        .with_context(|| format!("creating {}", dir.display()))?;
    let redeem = |db: &Db| {
        runtime().and_then(|runtime| {
            runtime.block_on(async {
                let mut across_ticket = Across {
                    signal: ticket.signal.clone(),
                    stun: across.stun.clone(),
                };
                for url in &across.signal {
                    if !across_ticket.signal.contains(url) {
                        across_ticket.signal.push(url.clone());
                    }
                }
                let config = across_config(&across_ticket, NodeConfig::default()).await?;
                let node = Node::start(db.clone(), config).await?;
                let result = with_progress(&node, "joining", node.redeem(&ticket)).await;
                node.shutdown().await;
                result.context("redeeming the invite")
            })
        })
    };
    let mut result = redeem(&db);
    // An inviter that trimmed its history sends its snapshot first: install
    // it, then sync again for the changes above it (the grant among them).
    if result
        .as_ref()
        .is_ok_and(|report| report.snapshot_received.is_some())
    {
        drop(db);
        crate::commands::install_received(dir)?;
        db = Db::open(dir, Options::default())
            .with_context(|| format!("opening {}", dir.display()))?;
        result = redeem(&db);
    }
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            drop(db);
            if !existed {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(error);
        }
    };
    let role = db
        .role_of(&db.author())
        .map_or_else(|| "no role".to_owned(), |role| role.to_string());
    let (mut value, text) = report_output(&report);
    value["database"] = json!(db.database_id().to_hex());
    value["public_key"] = json!(db.author().to_hex());
    value["role"] = json!(role);
    print(json, value, || {
        format!(
            "joined database {} as {role}; this replica's key is {}\n{text}",
            db.database_id(),
            db.author()
        )
    });
    Ok(())
}

/// `peers peers`: the peers this replica met; with `scan`, also those
/// announcing this database on the LAN during that many seconds.
pub(crate) fn peers(db: &Db, scan_seconds: Option<u64>, json: bool) -> Result<()> {
    let known = known_peers(db.dir());
    let mut lines = Vec::new();
    let mut records = Vec::new();
    for peer in &known {
        lines.push(format!(
            "{}  {:<21}  {:<10}  last seen {}",
            peer.author,
            peer.address,
            peer.how,
            age(peer.last_seen_ms)
        ));
        records.push(json!({
            "public_key": peer.author.to_hex(),
            "address": peer.address.to_string(),
            "how": peer.how.to_string(),
            "last_seen_ms": peer.last_seen_ms,
        }));
    }
    if let Some(seconds) = scan_seconds {
        let found = runtime()?.block_on(scan(db, Duration::from_secs(seconds)))?;
        for (author, addresses) in found {
            let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            lines.push(format!("{author}  {}  on the LAN now", addresses.join(",")));
            records.push(json!({
                "public_key": author.to_hex(),
                "addresses": addresses,
                "how": "discovered now",
            }));
        }
    }
    if lines.is_empty() {
        lines.push(
            "no known peers (run `peers sync ADDR`, or `peers peers --scan 3` to look on the LAN)"
                .to_owned(),
        );
    }
    print(json, json!(records), || lines.join("\n"));
    Ok(())
}

/// Browses the LAN for `duration`; announces nothing useful (port 0 means
/// "not listening", so no peer dials it).
async fn scan(db: &Db, duration: Duration) -> Result<Vec<(Author, Vec<SocketAddr>)>> {
    let mut discovery =
        Discovery::start(db.database_id(), db.author(), 0).context("starting LAN discovery")?;
    let mut found: Vec<(Author, Vec<SocketAddr>)> = Vec::new();
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            next = discovery.next() => match next {
                Some(peer) if !found.iter().any(|(author, _)| *author == peer.author) => {
                    found.push((peer.author, peer.addresses));
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    discovery.shutdown();
    Ok(found)
}

/// Prints the nodes' events (one line each, or JSON lines; labelled when
/// there are several) until Ctrl-C (or, for a client of the control
/// socket, until it hangs up), then the totals. The caller shuts the nodes
/// down.
async fn run_until_ctrl_c(nodes: &[(Option<String>, Node)], json: bool) -> Result<()> {
    let (forward, mut events) = tokio::sync::mpsc::channel(EVENTS_QUEUED);
    let mut forwarding = Vec::new();
    for (index, (_, node)) in nodes.iter().enumerate() {
        let mut receiver = node.events();
        let forward = forward.clone();
        forwarding.push(tokio::spawn(async move {
            loop {
                let event = receiver.recv().await;
                let closed = matches!(event, Err(broadcast::error::RecvError::Closed));
                if forward.send((index, event)).await.is_err() || closed {
                    return;
                }
            }
        }));
    }
    drop(forward);
    let mut totals = vec![(0u64, 0u64); nodes.len()];
    loop {
        let next = tokio::select! {
            () = console::interrupted() => break,
            next = events.recv() => next,
        };
        let Some((index, event)) = next else { break };
        let label = nodes.get(index).and_then(|(label, _)| label.as_deref());
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                console::err(&format!(
                    "peers: {missed} events not shown (output too slow)"
                ));
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => continue,
        };
        let Some((received, sent)) = totals.get_mut(index) else {
            continue;
        };
        match &event {
            Event::Received { changes, .. } => *received += changes,
            Event::Sent { changes, .. } => *sent += changes,
            _ => {}
        }
        print_event(label, &event, *received, *sent, json);
    }
    for task in forwarding {
        task.abort();
    }
    let received: u64 = totals.iter().map(|(received, _)| received).sum();
    let sent: u64 = totals.iter().map(|(_, sent)| sent).sum();
    print(
        json,
        json!({ "event": "stopped", "changes_received": received, "changes_sent": sent }),
        || {
            format!(
                "stopped; received {}, sent {}",
                count(received, "change"),
                count(sent, "change")
            )
        },
    );
    Ok(())
}

/// Events queued from the nodes to the printer.
const EVENTS_QUEUED: usize = 1024;

fn print_event(label: Option<&str>, event: &Event, received: u64, sent: u64, json: bool) {
    let (value, text) = match event {
        Event::Connected {
            peer,
            address,
            dialed,
        } => (
            json!({ "event": "connected", "peer": peer.to_hex(), "address": address.to_string(), "dialed": dialed }),
            format!(
                "connected {peer} ({address}, {})",
                if *dialed { "dialed" } else { "inbound" }
            ),
        ),
        Event::CaughtUp { peer } => (
            json!({ "event": "caught_up", "peer": peer.to_hex() }),
            format!("caught up with {peer}"),
        ),
        Event::Received { peer, changes } => (
            json!({ "event": "received", "peer": peer.to_hex(), "changes": changes, "total": received }),
            format!(
                "received {} from {peer} ({received} in all)",
                count(*changes, "change")
            ),
        ),
        Event::Sent { peer, changes } => (
            json!({ "event": "sent", "peer": peer.to_hex(), "changes": changes, "total": sent }),
            format!(
                "sent {} to {peer} ({sent} in all)",
                count(*changes, "change")
            ),
        ),
        Event::Disconnected { peer, address } => (
            json!({ "event": "disconnected", "peer": peer.to_hex(), "address": address.to_string() }),
            format!("disconnected {peer} ({address})"),
        ),
        Event::PeerError {
            address,
            peer,
            error,
        } => (
            json!({ "event": "peer_error", "address": address.to_string(),
                    "peer": peer.map(|p| p.to_hex()), "error": error.to_string() }),
            format!("peer {address} dropped: {error}"),
        ),
        Event::SnapshotReceived {
            peer,
            checkpoint,
            path,
        } => (
            json!({ "event": "snapshot_received", "peer": peer.to_hex(), "checkpoint": checkpoint.to_string(), "path": path.display().to_string() }),
            format!(
                "{peer} trimmed history this replica lacks and sent its snapshot (checkpoint {checkpoint}), kept at {}: stop this process and start it again to install it, then it syncs the changes above it",
                path.display()
            ),
        ),
        Event::Registered { url } => (
            json!({ "event": "registered", "signal": url }),
            format!("registered with {url}; peers can dial this replica by key"),
        ),
        Event::Discovered { peer, addresses } => {
            let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            (
                json!({ "event": "discovered", "peer": peer.to_hex(), "addresses": addresses }),
                format!("discovered {peer} at {}", addresses.join(",")),
            )
        }
        other => (
            json!({ "event": format!("{other:?}") }),
            format!("{other:?}"),
        ),
    };
    labelled(label, json, value, text);
}

/// `1 change`, `2 changes`.
fn count(number: u64, noun: &str) -> String {
    if number == 1 {
        format!("{number} {noun}")
    } else {
        format!("{number} {noun}s")
    }
}

fn age(last_seen_ms: u64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let seconds = now_ms.saturating_sub(last_seen_ms) / 1000;
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        3600..86400 => format!("{} h ago", seconds / 3600),
        _ => format!("{} days ago", seconds / 86400),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

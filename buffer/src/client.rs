//! A member's side: a connection to a buffer, and push and pull of a
//! replica's changes through it. Pulled changes go through the engine's
//! normal ingestion (decoded, hash- and signature-checked, chained), as
//! from any peer: a buffer can drop or delay changes, never forge them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use peers_engine::{ChangeHash, Db, Position};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::format::{
    Answer, BufferKey, Cursor, EPOCHS_READ, GET_ENVELOPES_MAX, PUT_ENVELOPES_MAX, Request, Space,
    envelope_hash, epoch_of,
};
use crate::server::now_ms;
use crate::wire;

/// How long a client waits for an answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of envelopes one put carries at most (it also carries at most
/// [`PUT_ENVELOPES_MAX`]); a larger single envelope goes alone.
pub const PUT_BYTES_SOFT: usize = 4 * 1024 * 1024;
/// How far back a pull re-reads from its cursor: servers that share a
/// bucket file envelopes by their own clocks, which may differ by this much.
pub const CLOCK_SKEW_MS: u64 = 60_000;
/// The file in a replica's directory that says how far it pushed to each
/// buffer.
pub const STATE_FILE: &str = "buffer.json";
/// Envelopes applied per engine call during a pull, at most.
const APPLY_BATCH: usize = 4096;
/// Bytes of changes held for one engine call during a pull, at most.
const APPLY_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Most envelopes one pull reads from one space: what a space can hold
/// ([`crate::SPACE_ENVELOPES_MAX`]) twice over (a buffer that serves more is
/// misbehaving; the rest waits for the next pull).
const PULL_ENVELOPES_MAX: u64 = 2 * crate::SPACE_ENVELOPES_MAX as u64;

/// A connection to a buffer server.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    address: String,
}

/// `HOST:PORT`, with or without a `tcp://` in front.
fn host_port(url: &str) -> &str {
    url.strip_prefix("tcp://")
        .unwrap_or(url)
        .trim_end_matches('/')
}

impl Client {
    /// Connects to `url` (`HOST:PORT`, or `tcp://HOST:PORT`).
    pub async fn connect(url: &str) -> Result<Client> {
        let address = host_port(url);
        if !address.contains(':') {
            return Err(Error::Url {
                url: url.to_owned(),
                reason: "expected HOST:PORT".into(),
            });
        }
        let stream = tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| Error::Timeout {
                seconds: ANSWER_TIMEOUT.as_secs(),
            })?
            .map_err(Error::io(format!("connecting to the buffer {address}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            stream,
            address: address.to_owned(),
        })
    }

    /// Its address.
    pub fn address(&self) -> &str {
        &self.address
    }

    async fn call(&mut self, request: &Request) -> Result<Answer> {
        let exchange = async {
            wire::write_frame(&mut self.stream, &request.encode())
                .await
                .map_err(Error::io("sending to the buffer"))?;
            let length = wire::read_length(&mut self.stream)
                .await
                .map_err(Error::io("reading the buffer's answer"))?
                .ok_or_else(|| {
                    Error::io("reading the buffer's answer")(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the buffer hung up",
                    ))
                })?;
            let body = wire::read_body(&mut self.stream, length)
                .await
                .map_err(Error::io("reading the buffer's answer"))?;
            Ok::<Answer, Error>(Answer::decode(&body)?)
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Timeout {
                seconds: ANSWER_TIMEOUT.as_secs(),
            })??;
        match answer {
            Answer::Refused { reason, message } => Err(Error::Refused { reason, message }),
            answer => Ok(answer),
        }
    }

    /// Puts envelopes of `space` (signed with its key); returns how many
    /// were new and how many the space held already.
    pub async fn put(&mut self, space: &Space, envelopes: Vec<Vec<u8>>) -> Result<(u16, u16)> {
        let signature = space.sign_put(&envelopes);
        self.put_signed(space.tag(), envelopes, signature).await
    }

    /// Puts envelopes with a signature made elsewhere (tests of strangers).
    pub async fn put_signed(
        &mut self,
        tag: [u8; 32],
        envelopes: Vec<Vec<u8>>,
        signature: [u8; 64],
    ) -> Result<(u16, u16)> {
        match self
            .call(&Request::Put {
                tag,
                envelopes,
                signature,
            })
            .await?
        {
            Answer::Stored { stored, duplicates } => Ok((stored, duplicates)),
            _ => Err(Error::Unexpected),
        }
    }

    /// Gets up to `max` envelopes of the space `tag` after `after`; and
    /// whether there are more.
    pub async fn get(
        &mut self,
        tag: [u8; 32],
        after: Cursor,
        max: u16,
    ) -> Result<(Vec<crate::Stored>, bool)> {
        match self.call(&Request::Get { tag, after, max }).await? {
            Answer::Envelopes { envelopes, more } => Ok((envelopes, more)),
            _ => Err(Error::Unexpected),
        }
    }
}

/// What a push did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushReport {
    /// Changes read from the log and sent.
    pub changes: u64,
    /// Envelopes the buffer stored.
    pub stored: u64,
    /// Envelopes it held already (another member pushed the change).
    pub duplicates: u64,
    /// Bytes of envelopes sent.
    pub bytes: u64,
}

/// What a pull did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PullReport {
    /// Envelopes fetched.
    pub envelopes: u64,
    /// Envelopes that did not open (altered, or sealed by someone without
    /// the key): never applied.
    pub unopened: u64,
    /// Changes the replica did not hold and now holds.
    pub applied: u64,
    /// Changes it held already.
    pub duplicates: u64,
    /// Changes the engine refused (bad signature, not a member, …).
    pub refused: u64,
    /// Received changes now waiting for a predecessor the buffer did not
    /// give (a gap in an author's chain: the buffer dropped or has not yet
    /// got it).
    pub pending: u64,
    /// Changes they wait for that this replica never received: the gaps
    /// ([`gaps`]).
    pub missing: u64,
}

/// The changes that pending changes wait for and that this replica has not
/// received at all (not even pending): the gaps in authors' chains, which a
/// buffer that dropped an envelope leaves.
pub fn gaps(db: &Db) -> Vec<ChangeHash> {
    let missing = db.missing();
    let mut pending = missing.clone();
    db.retain_pending(&mut pending);
    let pending: HashSet<ChangeHash> = pending.into_iter().collect();
    missing
        .into_iter()
        .filter(|hash| !pending.contains(hash))
        .collect()
}

/// How far a member read each space of one buffer (kept in memory).
#[derive(Debug, Default, Clone)]
pub struct Cursors(HashMap<u64, Cursor>);

/// A replica's push positions per buffer (`DIR/buffer.json`).
fn state_path(db: &Db) -> PathBuf {
    db.dir().join(STATE_FILE)
}

fn read_state(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(serde_json::Map::new());
        }
        Err(error) => return Err(Error::io(format!("reading {}", path.display()))(error)),
    };
    let bad = |reason: &str| Error::State {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| bad(&error.to_string()))?;
    if value.get("version").and_then(serde_json::Value::as_u64) != Some(1) {
        return Err(bad("version is not 1"));
    }
    Ok(value
        .get("pushed")
        .and_then(serde_json::Value::as_object)
        .cloned()
        .unwrap_or_default())
}

/// Where this replica's last push to `url` ended in its log (`None`: never
/// pushed there, so a push starts at the log's start).
pub fn pushed_position(db: &Db, url: &str) -> Result<Option<Position>> {
    let pushed = read_state(&state_path(db))?;
    Ok(pushed
        .get(host_port(url))
        .and_then(serde_json::Value::as_u64)
        .map(Position))
}

fn save_pushed(db: &Db, url: &str, position: Position) -> Result<()> {
    let path = state_path(db);
    let mut pushed = read_state(&path)?;
    pushed.insert(host_port(url).to_owned(), position.0.into());
    let text = serde_json::to_string_pretty(&serde_json::json!({ "version": 1, "pushed": pushed }))
        .map_err(|error| Error::State {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(Error::io(format!("writing {}", path.display())))
}

/// Pushes the replica's changes that follow its last push to `url` (all of
/// its log, the first time) into the current epoch's space; records how far
/// it got in `DIR/buffer.json` after each put. Changes in `skip` (pulled
/// from this buffer) are not sent back.
pub async fn push(
    db: &Db,
    client: &mut Client,
    url: &str,
    skip: &HashSet<ChangeHash>,
) -> Result<PushReport> {
    let key = BufferKey::of(&db.database_id());
    let space = key.space(epoch_of(now_ms()));
    let from = pushed_position(db, url)?;
    let end = db.log_end();
    if from == Some(end) {
        return Ok(PushReport::default());
    }
    let mut report = PushReport::default();
    let mut position = from;
    loop {
        let (mut batch, next) = read_batch(db, &space, position, end, skip, &mut report)?;
        send(client, &space, &mut batch, &mut report).await?;
        match next {
            Some(next) => {
                // Every change before `next` is in the buffer.
                save_pushed(db, url, next)?;
                position = Some(next);
            }
            None => break,
        }
    }
    save_pushed(db, url, end)?;
    Ok(report)
}

/// Seals the changes from `from` (the log's start if `None`) up to `end`,
/// at most one put's worth; returns them and where the next batch starts
/// (`None` once `end` is reached). Synchronous: the log is read between
/// puts, never across one.
fn read_batch(
    db: &Db,
    space: &Space,
    from: Option<Position>,
    end: Position,
    skip: &HashSet<ChangeHash>,
    report: &mut PushReport,
) -> Result<(Vec<Vec<u8>>, Option<Position>)> {
    let changes: Box<
        dyn Iterator<Item = peers_engine::Result<(Position, peers_engine::Change)>> + '_,
    > = match from {
        Some(from) => Box::new(db.log_from(from)?),
        None => Box::new(db.log()?),
    };
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for item in changes {
        let (at, change) = item?;
        // The log is read up to where it ended when the push began; changes
        // after that go in the next push.
        if at >= end {
            return Ok((batch, None));
        }
        if batch.len() >= PUT_ENVELOPES_MAX || bytes >= PUT_BYTES_SOFT {
            return Ok((batch, Some(at)));
        }
        if !skip.contains(&change.hash())
            && let Some(envelope) = space.seal(change.bytes())
        {
            bytes += envelope.len();
            batch.push(envelope);
            report.changes += 1;
        }
    }
    Ok((batch, None))
}

async fn send(
    client: &mut Client,
    space: &Space,
    batch: &mut Vec<Vec<u8>>,
    report: &mut PushReport,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let envelopes = std::mem::take(batch);
    report.bytes += envelopes.iter().map(|e| e.len() as u64).sum::<u64>();
    let (stored, duplicates) = client.put(space, envelopes).await?;
    report.stored += u64::from(stored);
    report.duplicates += u64::from(duplicates);
    Ok(())
}

/// Pulls what the buffer holds for this replica's database in the last
/// [`EPOCHS_READ`] epochs, after `cursors` (re-reading the last
/// [`CLOCK_SKEW_MS`]), opens each envelope and applies the changes through
/// the engine. The hashes of changes it applied are added to `pulled` (so
/// a push does not send them back).
pub async fn pull(
    db: &Db,
    client: &mut Client,
    cursors: &mut Cursors,
    pulled: &mut HashSet<ChangeHash>,
) -> Result<PullReport> {
    let key = BufferKey::of(&db.database_id());
    let current = epoch_of(now_ms());
    let mut report = PullReport::default();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_bytes = 0usize;
    for epoch in current.saturating_sub(EPOCHS_READ - 1)..=current {
        let space = key.space(epoch);
        let mut after = cursors
            .0
            .get(&epoch)
            .copied()
            .map_or(Cursor::default(), |c| Cursor {
                received_ms: c.received_ms.saturating_sub(CLOCK_SKEW_MS),
                hash: [0; 32],
            });
        let mut read = 0u64;
        loop {
            let (envelopes, more) = client
                .get(space.tag(), after, GET_ENVELOPES_MAX as u16)
                .await?;
            let before = after;
            for stored in &envelopes {
                report.envelopes += 1;
                read += 1;
                let cursor = Cursor {
                    received_ms: stored.received_ms,
                    hash: envelope_hash(&stored.envelope),
                };
                // A server that lists out of order cannot move the cursor back.
                if cursor > after {
                    after = cursor;
                }
                match space.open(&stored.envelope) {
                    Ok(change) => {
                        batch_bytes += change.len();
                        batch.push(change);
                    }
                    Err(fault) => {
                        report.unopened += 1;
                        tracing::warn!(%fault, "buffer: an envelope did not open; ignored");
                    }
                }
                if batch.len() >= APPLY_BATCH || batch_bytes >= APPLY_BATCH_BYTES {
                    apply(db, &mut batch, &mut report, pulled)?;
                    batch_bytes = 0;
                }
            }
            // A server that says "more" but does not move past the cursor,
            // or serves without end, is not followed further.
            if !more || after == before || read >= PULL_ENVELOPES_MAX {
                break;
            }
        }
        if after != Cursor::default() {
            cursors.0.insert(epoch, after);
        }
    }
    apply(db, &mut batch, &mut report, pulled)?;
    cursors.0.retain(|epoch, _| *epoch + EPOCHS_READ > current);
    report.pending = db.pending_len() as u64;
    report.missing = gaps(db).len() as u64;
    Ok(report)
}

fn apply(
    db: &Db,
    batch: &mut Vec<Vec<u8>>,
    report: &mut PullReport,
    pulled: &mut HashSet<ChangeHash>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let applied = db.apply_encoded(batch)?;
    batch.clear();
    report.applied += applied.accepted.len() as u64;
    report.duplicates += applied.duplicates.len() as u64;
    report.refused += applied.refused.len() as u64;
    if pulled.len() > 1 << 20 {
        pulled.clear();
    }
    pulled.extend(applied.accepted.iter().copied());
    pulled.extend(applied.pending.iter().copied());
    Ok(())
}

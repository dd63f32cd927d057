//! One sync session over an established [`SecureChannel`]: the state machine
//! of docs/PROTOCOL.md "Sync protocol".
//!
//! Both sides run the same code. Each sends `Hello`; equal digests end the
//! catch-up at once (one round trip). Otherwise each sends its `Vector`, then
//! streams, in log order and in bounded batches, the changes the other's
//! vector lacks, then `CaughtUp`. Sending and receiving run concurrently on
//! the two halves of the channel, and the receiver applies a batch before it
//! reads the next message: TCP's flow control is the backpressure. A live
//! session then pushes every change the local database applies that the peer
//! is not known to hold, and a keepalive when idle.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use peers_engine::{
    Author, Change, ChangeHash, DatabaseId, Db, Head, Position, RECEIVED_SNAPSHOT_FILE,
    SnapshotReader, VersionVector,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{RecvHalf, SecureChannel, SendHalf};
use crate::error::{Error, Result};
use crate::invite::{INVITE_ID_BYTES, INVITE_SECRET_BYTES, InviteRefusal, Invites, redeem_proof};
use crate::message::{
    self, BATCH_BYTES_MAX, BATCH_CHANGES_MAX, ByeReason, Hello, Message, SNAPSHOT_PART_BYTES_MAX,
    SNAPSHOT_VERSION, SYNC_VERSION, SYNC_VERSION_MIN, WANT_HASHES_MAX, WANT_VERSION,
};
use crate::reconcile::{Difference, Reconciler};

/// What one session did, from this side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// The peer's verified key.
    pub peer: Option<Author>,
    /// Changes this side sent.
    pub changes_sent: u64,
    /// Changes the peer sent that this side did not hold before.
    pub changes_received: u64,
    /// Changes the peer sent that this side already held.
    pub duplicates_received: u64,
    /// Encrypted bytes this side wrote after the handshake (frame headers
    /// included).
    pub bytes_sent: u64,
    /// Encrypted bytes this side read after the handshake.
    pub bytes_received: u64,
    /// Round trips before the changes flow: 1 when the digests were equal
    /// (the `Hello`s), else 1 plus half the `Reconcile` messages, rounded
    /// down (the last one goes out with the changes).
    pub round_trips: u32,
    /// Authors whose heads the two sides hold at the same seq with
    /// different hashes: a fork, which the engines then cut (FORMAT.md).
    pub forked_authors: Vec<Author>,
    /// The checkpoint whose snapshot file this side sent instead of the
    /// changes the peer lacked below it, which this side trimmed (sync
    /// version 5, PROTOCOL.md "Bootstrap").
    pub snapshot_sent: Option<ChangeHash>,
    /// The snapshot file the peer sent instead of changes it trimmed:
    /// checked, and kept until it is installed
    /// ([`peers_engine::Db::install_snapshot`]; `peers` installs it when it
    /// next opens the database itself). Then sync again for the changes
    /// above it.
    pub snapshot_received: Option<ReceivedSnapshot>,
}

/// A snapshot file received in a session, checked with every check of its
/// format (its state hash against the owner's signed checkpoint included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedSnapshot {
    /// Its checkpoint.
    pub checkpoint: ChangeHash,
    /// Where it is kept: [`RECEIVED_SNAPSHOT_FILE`] in the database's
    /// directory.
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
    /// Its entries.
    pub entries: u64,
}

/// What a session reports while it runs.
pub(crate) trait Observer: Send + Sync {
    /// `changes` new ones were applied from `peer`.
    fn received(&self, peer: Author, changes: u64);
    /// `changes` were sent to `peer`.
    fn sent(&self, peer: Author, changes: u64);
    /// The peer's catch-up reached us: we hold what it held when the
    /// vectors were exchanged.
    fn caught_up(&self, peer: Author);
    /// Both catch-ups are done: the peer's reached us, and the peer
    /// confirmed it applied ours (or the digests were equal). Called once
    /// per session; a live session pushes every change from here on.
    fn in_sync(&self, peer: Author);
}

/// How a session runs.
#[derive(Clone)]
pub(crate) struct SessionConfig {
    /// Stay open after catching up (only if the peer wants it too).
    pub(crate) live: bool,
    /// A live session sends `Keepalive` after this long without sending.
    pub(crate) keepalive: Duration,
    /// Ends the session (live or not) with `Bye(Shutdown)`.
    pub(crate) stop: CancellationToken,
    /// Whether this side dialed (it starts the reconciliation).
    pub(crate) initiator: bool,
    /// Joiner: the invite to redeem first (its id and secret).
    pub(crate) redeem: Option<([u8; INVITE_ID_BYTES], [u8; INVITE_SECRET_BYTES])>,
    /// Inviter: the open invites a stranger may redeem.
    pub(crate) invites: Option<Arc<Mutex<Invites>>>,
}

/// Runs one session to its end. A one-shot session ends after both
/// `CaughtUp`s; a live one when either side says `Bye`, on `stop`, or on
/// an error.
pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(
    channel: SecureChannel<S>,
    db: &Db,
    config: &SessionConfig,
    observer: &dyn Observer,
) -> Result<SyncReport> {
    // Blocking work goes on running when the half that waited for it stops
    // early (the other half failed), and it holds the database: the session
    // ends only after it, so that whoever closes the database next (a
    // snapshot's install, `peers` after `Node::shutdown`) finds it free.
    let work = TaskTracker::new();
    let result = session(channel, db, config, observer, &work).await;
    work.close();
    work.wait().await;
    result
}

async fn session<S: AsyncRead + AsyncWrite + Unpin + Send>(
    channel: SecureChannel<S>,
    db: &Db,
    config: &SessionConfig,
    observer: &dyn Observer,
    work: &TaskTracker,
) -> Result<SyncReport> {
    let peer = channel.remote_author();
    let handshake_hash = channel.handshake_hash();
    let (mut send, mut recv) = channel.split();
    let mut report = SyncReport {
        peer: Some(peer),
        ..SyncReport::default()
    };
    // A joiner redeems its invite before anything else.
    if let Some((invite, secret)) = &config.redeem {
        let proof = redeem_proof(secret, &handshake_hash, &db.author());
        let redeem = Message::Redeem {
            invite: *invite,
            proof,
        };
        send.send(&redeem.encode()?).await?;
    }
    // Authorization gate: after the authenticated handshake, before any
    // data (even the Hello's digest) moves, and before a stranger costs us
    // a read of the version vector. A stranger may hold an invite: while
    // any is remembered, its first message is read, and must redeem one.
    let mut redeemed = false;
    if let Err(error) = check_member(db, &peer) {
        let remembered = config
            .invites
            .as_ref()
            .is_some_and(|invites| !invites.lock().expect("invites lock").is_empty());
        if !remembered {
            return Err(ending(&mut send, error).await);
        }
        let invites = config.invites.clone().expect("checked above");
        match admit(db, work, &mut recv, &invites, &handshake_hash, peer).await {
            Ok(()) => redeemed = true,
            Err(error) => return Err(ending(&mut send, error).await),
        }
    }
    // Subscribe before reading the digest: every change applied after it
    // reaches the live loop, and every change past `start` in the log was
    // applied after it (the fallback of a live loop that lags).
    let applied = db.subscribe();
    let start = db.log_end();
    let digest = blocking(work, db, |db| db.version_digest()).await?;

    let hello = message::hello(
        db.database_id(),
        &handshake_hash,
        &db.author(),
        digest,
        config.live,
    );
    send.send(&Message::Hello(hello).encode()?).await?;
    let mut first = receive(&mut recv).await;
    if !redeemed && matches!(first, Ok(Message::Redeem { .. })) {
        // A member that redeemed before (its last session broke after the
        // grant) redeems again: nothing to spend, nothing to grant.
        first = receive(&mut recv).await;
    }
    let theirs = match first {
        Ok(Message::Hello(hello)) => hello,
        Ok(Message::Bye(reason)) => return Err(Error::PeerBye { reason }),
        Ok(other) => return Err(ending(&mut send, unexpected("Hello", &other)).await),
        Err(error) => return Err(ending(&mut send, error).await),
    };
    let version = match check_hello(db, &theirs, &handshake_hash, &peer) {
        Ok(version) => version,
        Err(error) => return Err(ending(&mut send, error).await),
    };
    let live = config.live && theirs.live;
    let catch_up = if theirs.digest == digest {
        report.round_trips = 1;
        None
    } else {
        let reconciled = reconcile(db, work, &mut send, &mut recv, config.initiator).await;
        let (differences, messages) = match reconciled {
            Ok(reconciled) => reconciled,
            Err(Error::PeerBye { reason }) => return Err(Error::PeerBye { reason }),
            Err(error) => return Err(ending(&mut send, error).await),
        };
        // The Hellos, then the reconciliation's messages, two to a trip
        // (the last one goes out with the changes, without waiting).
        report.round_trips = 1 + messages / 2;
        Some(differences)
    };
    // What the peer is known to hold beyond what we both held when the
    // session started: its heads where they differ from ours, and what was
    // sent and received since. Only grows; decides what to push.
    let mut known = VersionVector::new();
    let mut lacking: Vec<(Author, Option<Head>)> = Vec::new();
    for (author, difference) in catch_up.iter().flatten() {
        if let Some(head) = difference.theirs {
            known.insert(*author, head);
        }
        if difference.ours.is_some() {
            lacking.push((*author, difference.theirs));
        }
        if let (Some(ours), Some(theirs)) = (difference.ours, difference.theirs)
            && ours.seq == theirs.seq
            && ours.hash != theirs.hash
        {
            tracing::warn!(%peer, %author, "fork: same seq, different head hash");
            report.forked_authors.push(*author);
        }
    }
    let known = Mutex::new(known);
    let halt = CancellationToken::new();
    let ends = Ends {
        db,
        work,
        peer,
        known: &known,
        start,
        observer,
        halt: &halt,
        stop: &config.stop,
        wants: version >= WANT_VERSION,
        snapshots: version >= SNAPSHOT_VERSION,
        snapshot_sent: OnceLock::new(),
    };

    // The reader tells the writer what to send besides the catch-up and
    // the live pushes: our `Want`s, answers to the peer's, and `Applied`
    // once the peer's catch-up is applied. It drops its end when it is done.
    let (events, events_received) = mpsc::channel(EVENTS_QUEUED_MAX);
    let writing = ends.write(
        &mut send,
        catch_up.as_ref().map(|_| lacking.as_slice()),
        live,
        config,
        applied,
        events_received,
    );
    let mut counts = Received::default();
    let reading = ends.read(&mut recv, catch_up.is_some(), live, events, &mut counts);
    let (wrote, read) = tokio::join!(writing, reading);
    report.bytes_sent = send.sent_bytes();
    report.bytes_received = recv.received_bytes();
    report.changes_received = counts.received;
    report.duplicates_received = counts.duplicates;
    report.snapshot_received = counts.snapshot.take();
    report.snapshot_sent = ends.snapshot_sent.get().copied();
    if let Err(error) = read {
        if matches!(
            error,
            Error::RefusedChange { .. }
                | Error::MalformedMessage { .. }
                | Error::UnexpectedMessage { .. }
        ) {
            // A misbehaving peer's parked changes must not keep the shared
            // pending set full.
            let parked = std::mem::take(&mut counts.parked);
            let dropped = blocking(work, db, move |db| Ok(db.discard_pending(&parked))).await?;
            if dropped > 0 {
                tracing::info!(%peer, dropped, "dropped the pending changes of a peer that misbehaved");
            }
        }
        return Err(ending(&mut send, error).await);
    }
    report.changes_sent = wrote?;
    if live && report.snapshot_received.is_some() {
        say_bye(&mut send, ByeReason::Shutdown).await;
    }
    let _ = send.close().await;
    if !live && config.stop.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    Ok(report)
}

/// Counts of what the reading side applied.
#[derive(Default)]
struct Received {
    received: u64,
    duplicates: u64,
    /// The peer's snapshot file, received and checked.
    snapshot: Option<ReceivedSnapshot>,
    /// Changes of this peer parked in the pending set (its share, see
    /// [`pending_quota`], plus one batch): dropped if the peer turns out
    /// hostile.
    parked: Vec<peers_engine::ChangeHash>,
}

/// The pending set's share one session may hold: 1/16 of it, so that one
/// key, with its at most [`crate::SESSIONS_PER_KEY_MAX`] = 4 sessions,
/// holds at most a quarter (a batch may go over by its size before the
/// session is dropped).
fn pending_quota(db: &Db) -> usize {
    (db.pending_changes_max() / PENDING_SHARES).max(1)
}

/// How many sessions' shares the pending set holds.
pub const PENDING_SHARES: usize = 4 * crate::SESSIONS_PER_KEY_MAX;

/// What one session asked the peer for.
#[derive(Default)]
struct Wants {
    /// `Want`s sent since the catch-up (or, live, since the last batch that
    /// parked a change).
    rounds: usize,
    /// Hashes asked for: never asked twice (the peer answered without
    /// them: it does not hold them). Bounded: cleared when it grows past
    /// what [`WANT_ROUNDS_MAX`] rounds can ask.
    asked: std::collections::HashSet<ChangeHash>,
}

/// What the reader asks the writer to send.
enum Event {
    /// Our `Want`: what our pending changes wait on.
    Want(Vec<ChangeHash>),
    /// The peer's `Want`, to answer with what we hold of it, then `CaughtUp`.
    Serve(Vec<ChangeHash>),
    /// The peer's catch-up (and what we wanted of it) is applied: `Applied`.
    Applied(u64),
}

/// Events queued from the reader to the writer. An honest peer has at most
/// one `Want` unanswered; one that sends more than fit is refused.
const EVENTS_QUEUED_MAX: usize = 4;
/// Most `Want` rounds in one catch-up (one per level of a forked branch the
/// peer holds and we lack); the rest waits for the next session.
pub const WANT_ROUNDS_MAX: usize = 64;

/// What the writing and reading halves share.
struct Ends<'a> {
    db: &'a Db,
    /// Tracks the session's blocking work ([`off_thread`]).
    work: &'a TaskTracker,
    peer: Author,
    known: &'a Mutex<VersionVector>,
    /// The end of our log when the session started.
    start: Position,
    observer: &'a dyn Observer,
    /// Set when either half fails, so the other stops too.
    halt: &'a CancellationToken,
    stop: &'a CancellationToken,
    /// Whether both sides speak `Want` (sync version 4).
    wants: bool,
    /// Whether both sides speak `Snapshot` (sync version 5).
    snapshots: bool,
    /// The checkpoint of the snapshot file we sent, if we did.
    snapshot_sent: OnceLock<ChangeHash>,
}

impl Ends<'_> {
    /// Sends the catch-up (when vectors were exchanged), `CaughtUp`, then
    /// what the reader asks for (our `Want`s, answers to the peer's,
    /// `Applied`) until the reader is done (one-shot), or, when live, pushes
    /// and keepalives until stopped. Returns changes sent.
    async fn write<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        send: &mut SendHalf<S>,
        lacking: Option<&[(Author, Option<Head>)]>,
        live: bool,
        config: &SessionConfig,
        mut applied: broadcast::Receiver<Change>,
        mut events: mpsc::Receiver<Event>,
    ) -> Result<u64> {
        let mut sent = 0;
        let catch_up = async {
            if let Some(lacking) = lacking {
                let lacking = lacking.to_vec();
                // A peer below the frontier of the checkpoint we trimmed
                // at: we can send it the snapshot, not the changes.
                let snapshot = self
                    .snapshots
                    .then(|| self.db.snapshot_for(&lacking))
                    .flatten();
                if let Some((path, checkpoint)) = snapshot {
                    self.send_snapshot(send, path, checkpoint).await?;
                } else {
                    let changes = blocking(self.work, self.db, move |db| {
                        db.changes_since_heads(&lacking)
                    })
                    .await?;
                    sent += self.send_stream(send, changes).await?;
                }
                send.send(&Message::CaughtUp { changes: sent }.encode()?)
                    .await?;
                // While our reader applies the peer's catch-up, however long
                // that takes, keepalives tell the peer (which waits for our
                // `Applied`) that we are still at work. A reader that fails
                // drops the sender; `halt` ends us then.
                loop {
                    tokio::select! {
                        event = events.recv() => match event {
                            Some(Event::Applied(changes)) => {
                                send.send(&Message::Applied { changes }.encode()?).await?;
                                // Live, the push loop answers from here on.
                                if live {
                                    break;
                                }
                            }
                            Some(event) => sent += self.handle(send, event).await?,
                            // One-shot: the reader has both confirmations.
                            None => break,
                        },
                        () = tokio::time::sleep(config.keepalive) => {
                            send.send(&Message::Keepalive.encode()?).await?;
                        }
                    }
                }
            }
            Ok::<_, Error>(())
        };
        let result = tokio::select! {
            result = catch_up => result,
            () = self.halt.cancelled() => return Ok(sent),
            () = self.stop.cancelled() => Err(Error::ShuttingDown),
        };
        if let Err(error) = result {
            self.halt.cancel();
            if matches!(error, Error::ShuttingDown) {
                say_bye(send, ByeReason::Shutdown).await;
                return Ok(sent);
            }
            return Err(error);
        }
        if !live {
            return Ok(sent);
        }
        let pushed = self
            .push(send, &mut applied, &mut events, config.keepalive)
            .await;
        self.halt.cancel();
        match pushed {
            Ok(pushed) => Ok(sent + pushed),
            Err(error) => Err(error),
        }
    }

    /// Sends what the reader asked for: our `Want`, or the answer to the
    /// peer's (the changes we hold of it, whatever their validity, in log
    /// order, then `CaughtUp`). Returns the changes sent.
    async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        send: &mut SendHalf<S>,
        event: Event,
    ) -> Result<u64> {
        match event {
            Event::Want(hashes) => {
                send.send(&Message::Want(hashes).encode()?).await?;
                Ok(0)
            }
            Event::Serve(hashes) => {
                let found =
                    blocking(self.work, self.db, move |db| db.changes_by_hash(&hashes)).await?;
                let mut sent = 0;
                let mut batch = Batch::default();
                for change in found {
                    if let Err(change) = batch.add(change) {
                        sent += self.send_batch(send, std::mem::take(&mut batch)).await?;
                        let _ = batch.add(change);
                    }
                }
                if !batch.changes.is_empty() {
                    sent += self.send_batch(send, batch).await?;
                }
                send.send(&Message::CaughtUp { changes: sent }.encode()?)
                    .await?;
                Ok(sent)
            }
            Event::Applied(changes) => {
                send.send(&Message::Applied { changes }.encode()?).await?;
                Ok(0)
            }
        }
    }

    /// The live loop: pushes applied changes the peer lacks; keepalives.
    /// The peer's membership is checked before every batch, so a revoked
    /// peer receives nothing applied after its revocation.
    async fn push<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        send: &mut SendHalf<S>,
        applied: &mut broadcast::Receiver<Change>,
        events: &mut mpsc::Receiver<Event>,
        keepalive: Duration,
    ) -> Result<u64> {
        let mut pushed = 0;
        // A change that did not fit the last batch: it opens the next one.
        let mut carry: Option<Change> = None;
        loop {
            let first = match carry.take() {
                Some(change) => Ok(change),
                None => tokio::select! {
                    () = self.stop.cancelled() => {
                        say_bye(send, ByeReason::Shutdown).await;
                        return Ok(pushed);
                    }
                    () = self.halt.cancelled() => return Ok(pushed),
                    () = tokio::time::sleep(keepalive) => {
                        send.send(&Message::Keepalive.encode()?).await?;
                        continue;
                    }
                    event = events.recv() => {
                        match event {
                            Some(event) => pushed += self.handle(send, event).await?,
                            None => return Ok(pushed),
                        }
                        continue;
                    }
                    event = applied.recv() => event,
                },
            };
            let mut batch = Batch::default();
            let mut lagged = false;
            let mut next = match first {
                Ok(change) => Some(change),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(peer = %self.peer, missed, "push lagged; resending from the log");
                    lagged = true;
                    None
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(pushed),
            };
            while let Some(change) = next.take() {
                // Fork evidence goes even at a seq the peer holds: it may
                // hold the other change there.
                if (!self.is_known(&change) || self.db.is_fork_evidence(&change))
                    && let Err(change) = batch.add(change)
                {
                    carry = Some(change);
                    break;
                }
                if batch.is_full() {
                    break;
                }
                next = match applied.try_recv() {
                    Ok(change) => Some(change),
                    Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                        tracing::debug!(peer = %self.peer, missed, "push lagged; resending from the log");
                        lagged = true;
                        None
                    }
                    Err(_) => None,
                };
            }
            if !batch.changes.is_empty() {
                pushed += self.send_batch(send, batch).await?;
            }
            if lagged {
                // Fell behind the broadcast: send what was applied since
                // the session started that the peer is not known to hold.
                pushed += self.send_applied_since_start(send).await?;
            }
        }
    }

    /// Sends one batch, after checking that the peer still holds a role: a
    /// revocation applied since the last batch ends the session with
    /// `Bye(NotAMember)` before anything more goes out. Returns how many
    /// changes were sent.
    async fn send_batch<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        send: &mut SendHalf<S>,
        batch: Batch,
    ) -> Result<u64> {
        let peer = self.peer;
        if let Err(error) = check_member(self.db, &peer) {
            say_bye(send, ByeReason::NotAMember).await;
            return Err(error);
        }
        let count = batch.changes.len() as u64;
        let encoded = batch
            .changes
            .iter()
            .map(|change| {
                self.mark_known(change);
                change.bytes().to_vec()
            })
            .collect::<Vec<_>>();
        send.send(&Message::Changes(encoded).encode()?).await?;
        self.observer.sent(self.peer, count);
        Ok(count)
    }

    /// Sends our snapshot file (PROTOCOL.md "Bootstrap"): `Snapshot`, then
    /// the file in `SnapshotPart`s, read one part at a time. The peer's
    /// membership is checked first, as before every batch.
    async fn send_snapshot<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        send: &mut SendHalf<S>,
        path: PathBuf,
        checkpoint: ChangeHash,
    ) -> Result<()> {
        if let Err(error) = check_member(self.db, &self.peer) {
            say_bye(send, ByeReason::NotAMember).await;
            return Err(error);
        }
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| peers_engine::Error::Io { path, source }
        };
        let opened = path.clone();
        let (file, bytes) = off_thread(self.work, move || {
            let file = std::fs::File::open(&opened).map_err(io(&opened))?;
            let bytes = file.metadata().map_err(io(&opened))?.len();
            Ok::<_, peers_engine::Error>((file, bytes))
        })
        .await?;
        tracing::info!(peer = %self.peer, %checkpoint, bytes, "the peer lacks history we trimmed: sending our snapshot");
        send.send(&Message::Snapshot { checkpoint, bytes }.encode()?)
            .await?;
        let mut file = Some(file);
        let mut left = bytes;
        while left > 0 {
            let take = left.min(SNAPSHOT_PART_BYTES_MAX as u64) as usize;
            let mut reading = file.take().expect("put back after each part");
            let path = path.clone();
            let (back, part) = off_thread(self.work, move || {
                let mut part = vec![0; take];
                let read = reading.read_exact(&mut part).map_err(io(&path));
                (reading, read.map(|()| part))
            })
            .await;
            file = Some(back);
            send.send(&Message::SnapshotPart(part?).encode()?).await?;
            left -= take as u64;
        }
        let _ = self.snapshot_sent.set(checkpoint);
        Ok(())
    }

    /// Streams `changes` in bounded batches. Returns how many were sent.
    async fn send_stream<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        send: &mut SendHalf<S>,
        changes: peers_engine::ChangesSince,
    ) -> Result<u64> {
        let mut source = (changes, None);
        let mut sent = 0;
        loop {
            let (rest, batch) = off_thread(self.work, move || {
                let batch = next_batch(&mut source.0, &mut source.1);
                (source, batch)
            })
            .await;
            source = rest;
            let batch = batch?;
            if batch.changes.is_empty() {
                return Ok(sent);
            }
            // Everything goes, even below the known head: a diverged
            // author's chain is sent whole (the receiver drops duplicates).
            sent += self.send_batch(send, batch).await?;
        }
    }

    /// The lagging live loop's fallback: every change in our log past the
    /// session's start that the peer is not known to hold, in log order.
    async fn send_applied_since_start<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        send: &mut SendHalf<S>,
    ) -> Result<u64> {
        let mut position = self.start;
        let mut sent = 0;
        loop {
            let from = position;
            let (read, next) = blocking(self.work, self.db, move |db| {
                let mut batch = Batch::default();
                let mut next = None;
                for item in db.log_from(from)? {
                    let (at, change) = item?;
                    if batch.add(change).is_err() {
                        next = Some(at);
                        break;
                    }
                }
                Ok((batch, next))
            })
            .await?;
            let mut batch = Batch::default();
            for change in read.changes {
                if !self.is_known(&change) {
                    let _ = batch.add(change);
                }
            }
            if !batch.changes.is_empty() {
                sent += self.send_batch(send, batch).await?;
            }
            match next {
                Some(next) => position = next,
                None => return Ok(sent),
            }
        }
    }

    /// Receives until the peer's `CaughtUp` and `Applied` are in and our
    /// `Want`s are answered (one-shot), or its `Bye` (live), applying each
    /// batch before reading the next message.
    async fn read<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        recv: &mut RecvHalf<S>,
        expect_catch_up: bool,
        live: bool,
        events: mpsc::Sender<Event>,
        counts: &mut Received,
    ) -> Result<()> {
        let mut caught_up = !expect_catch_up;
        // Whether the peer confirmed it applied our catch-up.
        let mut confirmed = !expect_catch_up;
        // Whether we confirmed the peer's (after our `Want`s).
        let mut applied_sent = !expect_catch_up;
        // A `Want` of ours is not answered yet.
        let mut wanting = false;
        let mut wants = Wants::default();
        // The peer's snapshot file, while its parts arrive.
        let mut incoming: Option<Incoming> = None;
        if caught_up {
            self.observer.caught_up(self.peer);
            self.observer.in_sync(self.peer);
            if !live {
                return Ok(());
            }
        }
        let result = loop {
            let message = tokio::select! {
                message = receive(recv) => message,
                () = self.halt.cancelled() => break Ok(()),
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => break Err(error),
            };
            // A snapshot's parts come one after another, until the last.
            if incoming.is_some()
                && !matches!(
                    message,
                    Message::SnapshotPart(_) | Message::Keepalive | Message::Bye(_)
                )
            {
                break Err(unexpected("SnapshotPart", &message));
            }
            match message {
                Message::Snapshot { checkpoint, bytes }
                    if self.snapshots && !caught_up && counts.snapshot.is_none() =>
                {
                    match Incoming::start(self.db, self.work, checkpoint, bytes).await {
                        Ok(started) => incoming = Some(started),
                        Err(error) => break Err(error),
                    }
                }
                Message::SnapshotPart(part) if incoming.is_some() => {
                    let receiving = incoming.as_mut().expect("checked above");
                    if let Err(error) = receiving.push(part).await {
                        break Err(error);
                    }
                    if receiving.is_complete() {
                        match incoming.take().expect("checked above").finish().await {
                            Ok(received) => {
                                tracing::info!(peer = %self.peer, checkpoint = %received.checkpoint, bytes = received.bytes, path = %received.path.display(), "received the peer's snapshot: install it, then sync again");
                                counts.snapshot = Some(received);
                            }
                            Err(error) => break Err(error),
                        }
                    }
                }
                Message::Changes(batch) => {
                    let parked = counts.parked.len();
                    if let Err(error) = self.apply(batch, counts).await {
                        break Err(error);
                    }
                    // Live, a pushed change may wait on one the peer did
                    // not push (inert there): ask for it.
                    if live && applied_sent && !wanting && counts.parked.len() > parked {
                        wants.rounds = 0;
                        match self.want(&events, &mut wants).await {
                            Ok(sent) => wanting = sent,
                            Err(error) => break Err(error),
                        }
                    }
                }
                // The end of the peer's catch-up, or of its answer to our
                // `Want`: ask for what our pending changes still wait on.
                Message::CaughtUp { .. } if !caught_up || wanting => {
                    if wanting {
                        wanting = false;
                    } else {
                        caught_up = true;
                        self.observer.caught_up(self.peer);
                        if confirmed {
                            self.observer.in_sync(self.peer);
                        }
                    }
                    match self.want(&events, &mut wants).await {
                        Ok(true) => {
                            wanting = true;
                            continue;
                        }
                        Ok(false) => {}
                        Err(error) => break Err(error),
                    }
                    if !applied_sent {
                        applied_sent = true;
                        // A writer that is gone was halted: so are we.
                        let _ = events.send(Event::Applied(counts.received)).await;
                    }
                    // Live, a replica that received a snapshot could apply
                    // nothing the peer pushes until it installs it: the
                    // session ends here (`run` says `Bye(Shutdown)`).
                    if live && counts.snapshot.is_some() {
                        break Ok(());
                    }
                    if !live && confirmed {
                        break Ok(());
                    }
                }
                Message::Applied { .. } if !confirmed => {
                    confirmed = true;
                    if caught_up {
                        self.observer.in_sync(self.peer);
                    }
                    if !live && applied_sent && !wanting {
                        break Ok(());
                    }
                }
                // An honest peer waits for our answer before it asks again.
                Message::Want(hashes) if self.wants => {
                    if events.try_send(Event::Serve(hashes)).is_err() {
                        break Err(Error::UnexpectedMessage {
                            expected: "the answer to its last Want, before another",
                            found: "Want",
                        });
                    }
                }
                // Live, or a catch-up the peer is still applying.
                Message::Keepalive => {}
                // A one-shot session that ends before both confirmations
                // did not finish, whatever the reason.
                Message::Bye(ByeReason::Shutdown) if live => break Ok(()),
                Message::Bye(reason) => break Err(Error::PeerBye { reason }),
                other => break Err(unexpected("Changes", &other)),
            }
        };
        if result.is_err() || live {
            self.halt.cancel();
        }
        result
    }

    /// Asks the peer, through the writer, for what our pending changes wait
    /// on that we have not asked it for yet, if anything and if rounds
    /// remain. Returns whether a `Want` went out.
    async fn want(&self, events: &mpsc::Sender<Event>, wants: &mut Wants) -> Result<bool> {
        if !self.wants || wants.rounds >= WANT_ROUNDS_MAX {
            return Ok(false);
        }
        let mut missing = blocking(self.work, self.db, |db| Ok(db.missing())).await?;
        missing.retain(|hash| !wants.asked.contains(hash));
        missing.truncate(WANT_HASHES_MAX);
        if missing.is_empty() {
            return Ok(false);
        }
        wants.rounds += 1;
        if wants.asked.len() > WANT_ROUNDS_MAX * WANT_HASHES_MAX {
            wants.asked.clear();
        }
        wants.asked.extend(missing.iter().copied());
        Ok(events.send(Event::Want(missing)).await.is_ok())
    }

    /// Decodes, verifies and applies one received batch. Any refusal ends
    /// the session: an honest peer only forwards changes it verified.
    async fn apply(&self, batch: Vec<Vec<u8>>, counts: &mut Received) -> Result<()> {
        let mut changes = Vec::with_capacity(batch.len());
        for bytes in &batch {
            match Change::decode(bytes) {
                Ok(change) => changes.push(change),
                Err(error) => {
                    return Err(Error::RefusedChange {
                        hash: None,
                        refusal: peers_engine::Refusal::Malformed(error),
                    });
                }
            }
        }
        // Known before applying, so the push loop never echoes them back.
        for change in &changes {
            self.mark_known(change);
        }
        let report = blocking(self.work, self.db, move |db| db.apply(changes)).await?;
        if let Some((hash, refusal)) = report.refused.into_iter().next() {
            counts.parked.extend(report.pending.iter().copied());
            tracing::warn!(peer = %self.peer, ?hash, %refusal, "refused a change from the peer");
            return Err(Error::RefusedChange { hash, refusal });
        }
        // Each session may hold its share of the shared pending set, so
        // that one peer's orphans never leave an honest peer's out-of-order
        // changes without room.
        counts.parked.extend(report.pending.iter().copied());
        let quota = pending_quota(self.db);
        if counts.parked.len() > quota {
            let mut parked = std::mem::take(&mut counts.parked);
            let last = parked.last().copied();
            parked = blocking(self.work, self.db, move |db| {
                db.retain_pending(&mut parked);
                Ok(parked)
            })
            .await?;
            counts.parked = parked;
            if counts.parked.len() > quota {
                tracing::warn!(peer = %self.peer, parked = counts.parked.len(), quota, "a peer's changes overflow its share of the pending set");
                return Err(Error::RefusedChange {
                    hash: last,
                    refusal: peers_engine::Refusal::PendingFull { limit: quota },
                });
            }
        }
        let new = report.accepted.len() as u64;
        counts.received += new;
        counts.duplicates += report.duplicates.len() as u64;
        if new > 0 {
            self.observer.received(self.peer, new);
        }
        Ok(())
    }

    /// Whether the peer is known to hold `change`'s seq of its author.
    fn is_known(&self, change: &Change) -> bool {
        let known = self.known.lock().expect("known vector lock");
        known.seq(&change.author()) >= change.seq()
    }

    /// Records that the peer holds `change`; false if it was known to.
    fn mark_known(&self, change: &Change) -> bool {
        let mut known = self.known.lock().expect("known vector lock");
        if known.seq(&change.author()) >= change.seq() {
            return false;
        }
        known.insert(
            change.author(),
            peers_engine::Head {
                seq: change.seq(),
                hash: change.hash(),
            },
        );
        true
    }
}

/// The changes of one `Changes` message: at most [`BATCH_CHANGES_MAX`], and
/// at most [`BATCH_BYTES_MAX`] bytes of changes unless one change is alone,
/// so the message always fits in [`crate::MESSAGE_BYTES_MAX`].
#[derive(Default)]
struct Batch {
    changes: Vec<Change>,
    bytes: usize,
}

impl Batch {
    /// Adds `change`, or hands it back when it would take the batch over
    /// its limits (it then opens the next batch).
    fn add(&mut self, change: Change) -> std::result::Result<(), Change> {
        let bytes = change.bytes().len();
        if !self.changes.is_empty() && (self.is_full() || self.bytes + bytes > BATCH_BYTES_MAX) {
            return Err(change);
        }
        self.bytes += bytes;
        self.changes.push(change);
        Ok(())
    }

    /// Whether no further change may join.
    fn is_full(&self) -> bool {
        self.changes.len() >= BATCH_CHANGES_MAX || self.bytes >= BATCH_BYTES_MAX
    }
}

/// The next batch from a `changes_since` iterator (empty at its end).
/// `carry` holds the change that did not fit the previous batch.
fn next_batch(
    changes: &mut peers_engine::ChangesSince,
    carry: &mut Option<Change>,
) -> Result<Batch> {
    let mut batch = Batch::default();
    loop {
        let change = match carry.take() {
            Some(change) => change,
            None => match changes.next() {
                Some(change) => change?,
                None => return Ok(batch),
            },
        };
        if let Err(change) = batch.add(change) {
            *carry = Some(change);
            return Ok(batch);
        }
    }
}

/// Parts of a snapshot file queued for its checker.
const SNAPSHOT_PARTS_QUEUED: usize = 4;

/// A snapshot file arriving (PROTOCOL.md "Bootstrap"): its parts go to a
/// blocking task that writes them to a temporary file in the database's
/// directory and checks them as they come, with [`SnapshotReader`]
/// (memory: the queued parts and one block). On success the file becomes
/// [`RECEIVED_SNAPSHOT_FILE`]; on any failure, or if the session ends
/// first, the temporary file is removed.
struct Incoming {
    bytes: u64,
    received: u64,
    parts: Option<mpsc::Sender<Vec<u8>>>,
    check: tokio::task::JoinHandle<Result<ReceivedSnapshot>>,
}

impl Incoming {
    /// A snapshot of `checkpoint`, `bytes` long, announced. A snapshot of
    /// the same checkpoint already waiting to be installed ends the session
    /// ([`Error::SnapshotPending`]): it would arrive in vain.
    async fn start(
        db: &Db,
        work: &TaskTracker,
        checkpoint: ChangeHash,
        bytes: u64,
    ) -> Result<Incoming> {
        let dir = db.dir().to_owned();
        let database = db.database_id();
        let waiting = dir.join(RECEIVED_SNAPSHOT_FILE);
        let pending = off_thread(work, move || {
            let file = std::fs::File::open(&waiting).ok()?;
            let reader = SnapshotReader::open(std::io::BufReader::new(file)).ok()?;
            (reader.checkpoint().hash() == checkpoint).then_some(waiting)
        })
        .await;
        if let Some(path) = pending {
            return Err(Error::SnapshotPending { checkpoint, path });
        }
        let (parts, queued) = mpsc::channel(SNAPSHOT_PARTS_QUEUED);
        let check = work
            .spawn_blocking(move || receive_snapshot(queued, &dir, database, checkpoint, bytes));
        Ok(Incoming {
            bytes,
            received: 0,
            parts: Some(parts),
            check,
        })
    }

    /// Hands the next part to the checker; an error if it is more than was
    /// announced, or if the checker refused what came before.
    async fn push(&mut self, part: Vec<u8>) -> Result<()> {
        self.received += part.len() as u64;
        if self.received > self.bytes {
            return Err(Error::BadSnapshot {
                reason: format!("more than the {} bytes announced", self.bytes),
            });
        }
        let parts = self.parts.as_ref().expect("present until complete");
        if parts.send(part).await.is_err() {
            // The checker stopped early: it refused the file.
            return Err(match (&mut self.check).await {
                Ok(Err(error)) => error,
                Ok(Ok(_)) => Error::BadSnapshot {
                    reason: "the file ended before the bytes announced".to_owned(),
                },
                Err(panic) => std::panic::resume_unwind(panic.into_panic()),
            });
        }
        if self.received == self.bytes {
            // The checker reads the end of the file here.
            self.parts = None;
        }
        Ok(())
    }

    /// Whether every announced byte arrived.
    fn is_complete(&self) -> bool {
        self.received == self.bytes
    }

    /// The checker's verdict on the whole file.
    async fn finish(mut self) -> Result<ReceivedSnapshot> {
        drop(self.parts.take());
        (&mut self.check)
            .await
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
    }
}

/// What the snapshot checker reads: the parts as they arrive, each written
/// to `copy` as it is handed out; the end of the file when the session
/// drops the sender.
struct Parts<W: Write> {
    queued: mpsc::Receiver<Vec<u8>>,
    part: Vec<u8>,
    at: usize,
    copy: W,
}

impl<W: Write> Read for Parts<W> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.part.len() {
            match self.queued.blocking_recv() {
                Some(part) => {
                    self.copy.write_all(&part)?;
                    self.part = part;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.part.len() - self.at);
        out[..n].copy_from_slice(&self.part[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The snapshot checker (a blocking task): reads the parts into a
/// temporary file in `dir` while [`SnapshotReader`] checks them, then
/// checks that the file is of `database` and `checkpoint` (the header, as
/// soon as it is in) and every rule of its format to its end; then keeps it
/// as [`RECEIVED_SNAPSHOT_FILE`], fsynced.
fn receive_snapshot(
    queued: mpsc::Receiver<Vec<u8>>,
    dir: &std::path::Path,
    database: DatabaseId,
    checkpoint: ChangeHash,
    bytes: u64,
) -> Result<ReceivedSnapshot> {
    let bad = |reason: String| Error::BadSnapshot { reason };
    let io = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| Error::Engine(peers_engine::Error::Io { path, source })
    };
    let temp = tempfile::Builder::new()
        .prefix(peers_engine::RECEIVING_SNAPSHOT_PREFIX)
        .tempfile_in(dir)
        .map_err(io(dir))?;
    let mut parts = Parts {
        queued,
        part: Vec::new(),
        at: 0,
        copy: std::io::BufWriter::new(temp.as_file()),
    };
    let reader = SnapshotReader::open(&mut parts).map_err(|error| bad(error.to_string()))?;
    if reader.database() != database {
        return Err(bad(format!(
            "it is a snapshot of database {}",
            reader.database()
        )));
    }
    if reader.checkpoint().hash() != checkpoint {
        return Err(bad(format!(
            "it is of checkpoint {}, not the {checkpoint} announced",
            reader.checkpoint().hash()
        )));
    }
    let entries = reader.finish().map_err(|error| bad(error.to_string()))?;
    parts.copy.flush().map_err(io(temp.path()))?;
    drop(parts);
    temp.as_file().sync_all().map_err(io(temp.path()))?;
    let path = dir.join(RECEIVED_SNAPSHOT_FILE);
    temp.persist(&path)
        .map_err(|error| io(&path)(error.error))?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io(dir))?;
    Ok(ReceivedSnapshot {
        checkpoint,
        path,
        bytes,
        entries,
    })
}

/// Whether `peer` may sync this database: any key in an open database (or
/// before the genesis is held: there is nothing to leak, and what arrives
/// is verified), only a key with a role in a members-only one. Reads the
/// engine's membership snapshot: no lock, no I/O, fine on an async worker.
/// The inviter's side of a redemption: the stranger's first message must
/// be a `Redeem` whose proof matches an open invite; the use is written
/// down, then the role is granted with a signed `Grant` (after which
/// `check_member` admits the peer).
async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
    db: &Db,
    work: &TaskTracker,
    recv: &mut RecvHalf<S>,
    invites: &Mutex<Invites>,
    handshake_hash: &[u8; 32],
    peer: Author,
) -> Result<()> {
    let (invite, proof) = match receive(recv).await? {
        Message::Redeem { invite, proof } => (invite, proof),
        _ => return Err(Error::NotAMember { peer }),
    };
    let role = invites
        .lock()
        .expect("invites lock")
        .redeem(&invite, &proof, handshake_hash, &peer)
        .map_err(|reason| Error::InviteRefused { reason })?;
    let hash = blocking(work, db, move |db| db.grant(peer, role)).await?;
    tracing::info!(%peer, %role, grant = %hash, "invite redeemed; role granted");
    check_member(db, &peer)
}

pub(crate) fn check_member(db: &Db, peer: &Author) -> Result<()> {
    if db.is_members_only() == Some(true) && db.role_of(peer).is_none() {
        return Err(Error::NotAMember { peer: *peer });
    }
    Ok(())
}

/// Checks the peer's `Hello`: a version we speak first (an older peer is
/// told so, not that its database differs), then its proof of our id.
fn check_hello(db: &Db, hello: &Hello, handshake_hash: &[u8; 32], peer: &Author) -> Result<u16> {
    let version = match message::negotiate(
        (SYNC_VERSION_MIN, SYNC_VERSION),
        (hello.version_min, hello.version_max),
    ) {
        Some(version) => Ok(version),
        None => Err(Error::UnsupportedSyncVersion {
            found_min: hello.version_min,
            found_max: hello.version_max,
            supported_min: SYNC_VERSION_MIN,
            supported_max: SYNC_VERSION,
        }),
    };
    let version = version?;
    if !message::proves_database(hello, db.database_id(), handshake_hash, peer) {
        return Err(Error::WrongDatabase {
            ours: db.database_id(),
        });
    }
    Ok(version)
}

/// Runs range-based reconciliation (PROTOCOL.md "Reconciliation") until
/// one side sends an empty `Reconcile`: the differing authors, and how many
/// `Reconcile` messages went either way. The channel's initiator starts.
async fn reconcile<S: AsyncRead + AsyncWrite + Unpin>(
    db: &Db,
    work: &TaskTracker,
    send: &mut SendHalf<S>,
    recv: &mut RecvHalf<S>,
    initiator: bool,
) -> Result<(std::collections::BTreeMap<Author, Difference>, u32)> {
    let mut reconciler = Reconciler::new(db.clone());
    let mut messages = 0;
    if initiator {
        let (back, first) = off_thread(work, move || {
            let first = reconciler.initiate();
            (reconciler, first)
        })
        .await;
        reconciler = back;
        send.send(&Message::Reconcile(first?).encode()?).await?;
        messages += 1;
    }
    loop {
        let ranges = match receive(recv).await? {
            Message::Reconcile(ranges) => ranges,
            Message::Bye(reason) => return Err(Error::PeerBye { reason }),
            other => return Err(unexpected("Reconcile", &other)),
        };
        messages += 1;
        if ranges.is_empty() {
            break;
        }
        let (back, reply) = off_thread(work, move || {
            let reply = reconciler.respond(&ranges);
            (reconciler, reply)
        })
        .await;
        reconciler = back;
        let reply = reply?;
        let done = reply.is_empty();
        send.send(&Message::Reconcile(reply).encode()?).await?;
        messages += 1;
        if done {
            break;
        }
    }
    Ok((reconciler.into_differences(), messages))
}

/// Ends a session on `error`: tells the peer why when the error is one the
/// protocol names (PROTOCOL.md "Ending"), then returns the error.
async fn ending<S: AsyncRead + AsyncWrite + Unpin>(send: &mut SendHalf<S>, error: Error) -> Error {
    let reason = match &error {
        Error::WrongDatabase { .. } => Some(ByeReason::WrongDatabase),
        Error::UnsupportedSyncVersion { .. } => Some(ByeReason::UnsupportedVersion),
        Error::RefusedChange { .. } => Some(ByeReason::RefusedChange),
        Error::NotAMember { .. } => Some(ByeReason::NotAMember),
        Error::InviteRefused { reason } => Some(match reason {
            InviteRefusal::Unknown => ByeReason::InviteUnknown,
            InviteRefusal::Expired => ByeReason::InviteExpired,
            InviteRefusal::Used => ByeReason::InviteUsed,
        }),
        Error::MalformedMessage { .. }
        | Error::UnexpectedMessage { .. }
        | Error::BadSnapshot { .. } => Some(ByeReason::ProtocolViolation),
        Error::SnapshotPending { .. } => Some(ByeReason::SnapshotPending),
        _ => None,
    };
    if let Some(reason) = reason {
        say_bye(send, reason).await;
    }
    error
}

/// Sends `Bye` on a connection that is ending anyway: best effort, and
/// never longer than [`BYE_TIMEOUT`] (a peer that stopped reading must not
/// hold the connection's slot for a whole send timeout).
async fn say_bye<S: AsyncRead + AsyncWrite + Unpin>(send: &mut SendHalf<S>, reason: ByeReason) {
    let Ok(bye) = Message::Bye(reason).encode() else {
        return;
    };
    let _ = tokio::time::timeout(BYE_TIMEOUT, send.send(&bye)).await;
}

/// How long a closing `Bye` may take to send.
const BYE_TIMEOUT: Duration = Duration::from_secs(1);

async fn receive<S: AsyncRead + AsyncWrite + Unpin>(recv: &mut RecvHalf<S>) -> Result<Message> {
    Message::decode(&recv.recv().await?)
}

fn unexpected(expected: &'static str, found: &Message) -> Error {
    Error::UnexpectedMessage {
        expected,
        found: found.kind(),
    }
}

/// Runs blocking work off the async threads, tracked by the session's
/// `work`: if the half that waits for it stops early, the work still ends
/// before the session does ([`run`]). Its result comes back through a
/// channel, so that a result nobody waits for any more (it may hold the
/// database) is dropped inside the tracked task, not after it.
async fn off_thread<T: Send + 'static>(
    work: &TaskTracker,
    job: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (result, received) = tokio::sync::oneshot::channel();
    let task = work.spawn_blocking(move || {
        let _ = result.send(job());
    });
    match received.await {
        Ok(value) => value,
        // The job panicked before it sent: pass the panic on.
        Err(_) => match task.await {
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            _ => unreachable!("a job sends its result unless it panics"),
        },
    }
}

/// Runs a blocking database call off the async threads ([`off_thread`]).
async fn blocking<T: Send + 'static>(
    work: &TaskTracker,
    db: &Db,
    call: impl FnOnce(&Db) -> peers_engine::Result<T> + Send + 'static,
) -> Result<T> {
    let db = db.clone();
    Ok(off_thread(work, move || call(&db)).await?)
}

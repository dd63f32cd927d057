//! Making, judging and settling checkpoints (FORMAT.md "Checkpoints,
//! trimming and snapshots"), and writing their snapshot files. Trimming is
//! in `trim.rs`.

use std::sync::Arc;

use rocksdb::{Direction, IteratorMode};

use super::Db;
use super::directory::{io_error, open_view};
use std::io::Write;

use crate::HashSet;
use crate::VoidReason;
use crate::change::{Author, Change, ChangeHash, FrontierEntry, Op, SnapshotHash};
use crate::checkpoint::{
    CheckpointVerdict, Closure, Hashes, OffFrontier, Standing, settled_chains, settled_in,
    snapshot_entries_each, snapshot_hash,
};
use crate::error::{Error, Refusal, Result};
use crate::ingest::{Progress, Select, Writer};
use crate::keys;
use crate::records::Settled;
use crate::snapshot::SnapshotWriter;

/// The scratch views checkpoints' closures are built in are named this
/// and a number, one per judging (several may run at once: judging holds no
/// lock); each is removed after, and any left by a crash at the next open.
const SCRATCH_PREFIX: &str = "checkpoint-scratch-";

/// A closure's snapshot hash, and what a checkpoint of it settles.
type Judged = (SnapshotHash, Vec<(Author, Settled)>);

/// Numbers the scratch views of this process.
static SCRATCH_NUMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Removes the scratch views a crash left in `dir` (at open, under the
/// directory's lock, so no judging is running).
pub(super) fn remove_scratch_views(dir: &std::path::Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(SCRATCH_PREFIX)
        {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

impl Db {
    /// Signs a checkpoint (the owner only): the frontier is every author's
    /// chain (up to its fork cut), lowered where a change names one off it, and
    /// the snapshot hash is of that frontier's closure, built in a scratch
    /// view (a replay of the log's closure, reported through `progress`).
    /// Writes wait meanwhile. Returns the checkpoint's hash.
    pub fn checkpoint(&self, progress: Progress<'_>) -> Result<ChangeHash> {
        let author = self.author();
        let (unsigned, epoch, settled) = loop {
            let writer = self.writer();
            let owner = writer.access.owner.ok_or(Error::NotSynced)?;
            if owner != author {
                return Err(Error::NotAllowed(Refusal::NotTheOwner { author }));
            }
            // A commit being signed would come between the frontier and
            // this change: let it land first. No commit reserves while the
            // frontier is taken and judged.
            let mut chain = self.chain();
            if chain.reserved.is_some() {
                drop(chain);
                drop(writer);
                std::thread::yield_now();
                continue;
            }
            let state = writer.author(&author).ok_or(Error::NotSynced)?;
            self.check_local(&writer, &[])?;
            let (frontier, closure) = self.held_frontier(&writer, owner)?;
            if !frontier
                .iter()
                .any(|entry| entry.author == author && entry.seq == state.head_seq)
            {
                return Err(Error::CannotCheckpoint {
                    reason: "this replica's own latest change is not on its frontier".into(),
                });
            }
            let (snapshot, settled) =
                match self.judge(&frontier, &closure, None, owner, progress)? {
                    Ok(judged) => judged,
                    Err(verdict) => {
                        return Err(Error::CannotCheckpoint {
                            reason: format!("the frontier does not hold: {verdict}"),
                        });
                    }
                };
            let ops = vec![Op::Checkpoint { frontier, snapshot }];
            chain.basis = self.basis(&writer);
            let (unsigned, epoch) = self.reserve(&mut chain, ops)?;
            break (unsigned, epoch, settled);
        };
        let hash = self.sign_and_commit(unsigned, epoch)?;
        // Confirmed here while it was made: it stands at once.
        let seq = self
            .get_change(&hash)?
            .ok_or(Error::MissingChange { hash })?
            .seq();
        self.remember(
            hash,
            CheckpointVerdict::Confirmed,
            Some(Standing {
                checkpoint: hash,
                seq,
                settled,
                off: Vec::new(),
            }),
        );
        self.settle(&mut |_, _| {})?;
        Ok(hash)
    }

    /// Keeps a verdict (and, for a confirmed checkpoint, what it settles)
    /// for as long as the database is open.
    fn remember(&self, hash: ChangeHash, verdict: CheckpointVerdict, standing: Option<Standing>) {
        self.inner
            .verdicts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(hash, verdict);
        if let Some(standing) = standing {
            self.inner
                .settlements
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(hash, standing);
        }
    }

    /// What the confirmed checkpoint `hash` settles: kept since it was
    /// judged, or since it stood (at open). Takes no writer lock: making a
    /// checkpoint holds it while judging.
    fn settlement_of(&self, hash: &ChangeHash) -> Option<Standing> {
        self.inner
            .settlements
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(hash)
            .cloned()
    }

    /// Judges a held checkpoint (FORMAT.md "Confirming a checkpoint"):
    /// walks its frontier's chains, builds the state of their closure in a
    /// scratch view and runs the three checks (judging the owner's previous
    /// checkpoint the same way, for check 2). Writes go on meanwhile.
    pub fn checkpoint_verdict(
        &self,
        hash: &ChangeHash,
        progress: Progress<'_>,
    ) -> Result<CheckpointVerdict> {
        // Judging reads only held changes, which never change, and the
        // log, which reads beside appends: writes go on meanwhile.
        let owner = self.writer().access.owner.ok_or(Error::NotSynced)?;
        self.verdict_of(hash, owner, progress)
    }

    /// [`Db::checkpoint_verdict`]. A verdict is computed once per process
    /// (see `Inner::verdicts`).
    fn verdict_of(
        &self,
        hash: &ChangeHash,
        owner: Author,
        progress: Progress<'_>,
    ) -> Result<CheckpointVerdict> {
        if self.settlement_of(hash).is_some() {
            // Confirmed before, or standing here since the open (perhaps
            // installed with its snapshot file: its closure may no longer
            // be held). No writer lock: making a checkpoint holds it.
            return Ok(CheckpointVerdict::Confirmed);
        }
        let known = self
            .inner
            .verdicts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(hash)
            .cloned();
        if let Some(verdict) = known {
            return Ok(verdict);
        }
        let (verdict, standing) = self.judge_held(hash, owner, progress)?;
        if !matches!(verdict, CheckpointVerdict::Unconfirmed { .. }) {
            self.remember(*hash, verdict.clone(), standing);
        }
        Ok(verdict)
    }

    fn judge_held(
        &self,
        hash: &ChangeHash,
        owner: Author,
        progress: Progress<'_>,
    ) -> Result<(CheckpointVerdict, Option<Standing>)> {
        let change = self
            .get_change(hash)?
            .ok_or(Error::MissingChange { hash: *hash })?;
        let (frontier, snapshot) = change
            .checkpoint()
            .ok_or(Error::NotACheckpoint { hash: *hash })?;
        // Cheap first: every entry held, before walking its chains.
        for entry in frontier {
            let held = self.inner.view.get(keys::change(&entry.hash))?.is_some();
            if !held {
                return Ok((
                    CheckpointVerdict::Unconfirmed {
                        missing: entry.hash,
                    },
                    None,
                ));
            }
        }
        let closure = match settled_chains(frontier, owner, |hash| self.get_change(hash))? {
            Ok(closure) => closure,
            Err(verdict) => return Ok((verdict, None)),
        };
        Ok(
            match self.judge(frontier, &closure, Some(snapshot), owner, progress)? {
                Ok((_, settled)) => (
                    CheckpointVerdict::Confirmed,
                    Some(Standing {
                        checkpoint: *hash,
                        seq: change.seq(),
                        settled,
                        off: Vec::new(),
                    }),
                ),
                Err(verdict) => (verdict, None),
            },
        )
    }

    /// The standing checkpoint (FORMAT.md "Confirming a checkpoint"): of the
    /// owner's checkpoints that are valid changes here, the one with the
    /// highest seq that this replica confirms; `None` if none does. Judges
    /// from the latest down to the one that stands here (each verdict once
    /// while the database is open), through `progress`. Writes go on
    /// meanwhile. [`Db::settle`] makes it stand.
    pub fn standing_checkpoint(&self, progress: Progress<'_>) -> Result<Option<ChangeHash>> {
        Ok(self.judge_latest(progress)?.0)
    }

    /// [`Db::standing_checkpoint`], and whether a later checkpoint waits
    /// for changes of its frontier.
    fn judge_latest(&self, progress: Progress<'_>) -> Result<(Option<ChangeHash>, bool)> {
        let found = self.checkpoints()?;
        let (owner, state, standing) = {
            let writer = self.writer();
            let Some(owner) = writer.access.owner else {
                return Ok((None, false));
            };
            let Some(state) = writer.author(&owner) else {
                return Ok((None, false));
            };
            (owner, state, writer.standing.clone())
        };
        let mut waiting = false;
        for change in found.iter().rev() {
            if standing
                .as_ref()
                .is_some_and(|standing| change.seq() <= standing.seq)
            {
                // Settled: it stands for good (a later one only replaces it).
                break;
            }
            if !state.is_valid(change.seq()) {
                continue;
            }
            match self.verdict_of(&change.hash(), owner, &mut *progress) {
                Ok(CheckpointVerdict::Confirmed) => return Ok((Some(change.hash()), waiting)),
                Ok(CheckpointVerdict::Unconfirmed { .. }) => waiting = true,
                Ok(CheckpointVerdict::Void(_)) => {}
                // Not expected: a closure's walk stops at what the trimmed
                // checkpoint settled. Were a settled change read anyway,
                // this checkpoint would not stand here (the trimmed one
                // still does), and the replica goes on.
                Err(Error::Trimmed { hash, checkpoint }) => {
                    tracing::warn!(later = %change.hash(), %hash, %checkpoint, "could not judge a checkpoint on a trimmed replica");
                }
                Err(error) => return Err(error),
            }
        }
        Ok((standing.map(|standing| standing.checkpoint), waiting))
    }

    /// Makes the standing checkpoint stand (FORMAT.md "Settlement"): judges
    /// the owner's latest checkpoints (see [`Db::standing_checkpoint`]),
    /// and, when one stands that did not, settles its frontier: from then
    /// on its settled changes keep their verdicts whatever revocation or
    /// fork evidence arrives, and a change off its frontier is refused
    /// ([`Refusal::OffCheckpoint`]). Rows whose changes change verdict are
    /// recomputed, and changes let back in reach subscribers. A replica
    /// that held changes off the frontier (an author forked below it before
    /// it stood) replays its log without them, writes waiting meanwhile.
    /// Called after every group that brings a checkpoint's frontier in
    /// ([`Db::apply`]) and after [`Db::checkpoint`]. Returns the standing
    /// checkpoint.
    pub fn settle(&self, progress: Progress<'_>) -> Result<Option<ChangeHash>> {
        let _one = self
            .inner
            .settling
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (latest, waiting) = self.judge_latest(&mut *progress)?;
        self.inner
            .settle_due
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
        let Some(hash) = latest else {
            return Ok(None);
        };
        let current = self.writer().standing.clone();
        if current.as_ref().map(|standing| standing.checkpoint) == Some(hash) {
            return Ok(Some(hash));
        }
        let mut standing = self
            .settlement_of(&hash)
            .ok_or(Error::CheckpointNotConfirmed {
                hash,
                verdict: CheckpointVerdict::Unconfirmed { missing: hash },
            })?;
        let mut off: HashSet<ChangeHash> = current
            .iter()
            .flat_map(|current| current.off.iter().copied())
            .collect();
        let mut writer = self.writer();
        if writer.holds_off_frontier(&standing) {
            off.extend(self.off_frontier(&standing)?);
            standing.off = off.into_iter().collect();
            standing.off.sort_unstable();
            tracing::warn!(checkpoint = %hash, off = standing.off.len(), "settling a checkpoint that leaves held changes off its frontier: replaying the log without them");
            self.remember(hash, CheckpointVerdict::Confirmed, Some(standing.clone()));
            let replayed = super::directory::reset_view(&self.inner.view, self.inner.database)
                .and_then(|()| writer.reload_heads())
                .and_then(|()| self.replay_settled(&mut writer, Some(standing), false, progress))
                .and_then(|_| Ok(self.inner.view.flush()?));
            if let Err(error) = replayed {
                // The view is part way through a rebuild: only a reopen
                // (which replays the log) makes it whole.
                writer.poison(error.to_string());
                return Err(error);
            }
        } else {
            standing.off = off.into_iter().collect();
            standing.off.sort_unstable();
            writer.stand(standing.clone())?;
            self.remember(hash, CheckpointVerdict::Confirmed, Some(standing));
        }
        self.publish(&mut writer, &[], &crate::ApplyReport::default());
        Ok(Some(hash))
    }

    /// The held changes off `standing`'s frontier ([`OffFrontier`]: one
    /// pass over the log).
    fn off_frontier(&self, standing: &Standing) -> Result<HashSet<ChangeHash>> {
        let checkpoint = self
            .get_change(&standing.checkpoint)?
            .ok_or(Error::MissingChange {
                hash: standing.checkpoint,
            })?;
        let (frontier, _) = checkpoint.checkpoint().ok_or(Error::NotACheckpoint {
            hash: standing.checkpoint,
        })?;
        let closure =
            match settled_chains(frontier, checkpoint.author(), |hash| self.get_change(hash))? {
                Ok(closure) => closure.changes,
                Err(verdict) => {
                    return Err(Error::CheckpointNotConfirmed {
                        hash: standing.checkpoint,
                        verdict,
                    });
                }
            };
        let mut off = OffFrontier::new(&checkpoint, closure)?;
        for item in self.log()? {
            let (_, change) = item?;
            off.is_off(&change);
        }
        Ok(off.off)
    }

    /// The owner's checkpoints this replica holds, lowest seq first, from
    /// the standing one on (earlier ones no longer matter, and a trimmed
    /// replica no longer holds them).
    pub fn checkpoints(&self) -> Result<Vec<Change>> {
        let from = self.writer().standing.as_ref().map_or(0, |s| s.seq);
        let start = keys::checkpoint(from, &ChangeHash([0; 32]));
        let mut found = Vec::new();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in self.inner.view.iterator(mode) {
            let (key, _) = item?;
            if key.first() != Some(&keys::CHECKPOINTS) {
                break;
            }
            let hash = keys::trailing_hash(&key)
                .ok_or_else(|| Error::ViewCorrupt { key: key.to_vec() })?;
            let change = self
                .get_change(&hash)?
                .ok_or(Error::MissingChange { hash })?;
            found.push(change);
        }
        Ok(found)
    }

    /// Every author's chain as a frontier (up to its fork cut, if it forked;
    /// inert changes included: they stay inert), lowered until closed: a
    /// change that names a change off the frontier leaves it, with every
    /// later change of its author. The owner's entry never moves (the
    /// checkpoint names it as its `prev`): if it would, there is no
    /// frontier to sign.
    fn held_frontier(
        &self,
        writer: &Writer,
        owner: Author,
    ) -> Result<(Vec<FrontierEntry>, Closure)> {
        let mut frontier = Vec::new();
        for (author, state) in writer.authors() {
            let seq = state
                .cut
                .map_or(state.head_seq, |cut| cut.min(state.head_seq));
            if seq == 0 {
                continue;
            }
            let hash = if seq == state.head_seq && state.cut.is_none() {
                state.head_hash
            } else {
                self.chain_hash(&author, seq)?
            };
            frontier.push(FrontierEntry { author, seq, hash });
        }
        frontier.sort();
        loop {
            match settled_chains(&frontier, owner, |hash| self.get_change(hash))? {
                Ok(closure) => return Ok((frontier, closure)),
                Err(CheckpointVerdict::Void(VoidReason::NotClosed { change, .. })) => {
                    let change = self
                        .get_change(&change)?
                        .ok_or(Error::MissingChange { hash: change })?;
                    if change.author() == owner {
                        return Err(Error::CannotCheckpoint {
                            reason: format!(
                                "the owner's change {} names a change that is not valid",
                                change.hash()
                            ),
                        });
                    }
                    let entry = frontier
                        .iter_mut()
                        .find(|entry| entry.author == change.author())
                        .ok_or(Error::MissingChange {
                            hash: change.hash(),
                        })?;
                    entry.seq = change.seq() - 1;
                    if let Some(prev) = change.body().prev {
                        entry.hash = prev;
                    }
                    frontier.retain(|entry| entry.seq > 0);
                }
                Err(verdict) => {
                    return Err(Error::CannotCheckpoint {
                        reason: format!("a held change is unreadable: {verdict:?}"),
                    });
                }
            }
        }
    }

    /// The hash of `author`'s change `seq` (the first held at that seq).
    fn chain_hash(&self, author: &Author, seq: u64) -> Result<ChangeHash> {
        let prefix = keys::chain_prefix(author, seq);
        let mode = IteratorMode::From(&prefix, Direction::Forward);
        if let Some(item) = self.inner.view.iterator(mode).next() {
            let (key, _) = item?;
            if let Some((found, found_seq, hash)) = keys::parse_chain(&key)
                && found == *author
                && found_seq == seq
            {
                return Ok(hash);
            }
        }
        Err(Error::ViewCorrupt {
            key: prefix.to_vec(),
        })
    }

    /// Checks 2 and 3 of a checkpoint over its closure (check 1 made it):
    /// replays the closure into a scratch view, and returns its snapshot
    /// hash, or the verdict that voids it. `expected` is the checkpoint's
    /// snapshot hash (none while making one).
    fn judge(
        &self,
        frontier: &[FrontierEntry],
        closure: &Closure,
        expected: Option<SnapshotHash>,
        owner: Author,
        progress: Progress<'_>,
    ) -> Result<std::result::Result<Judged, CheckpointVerdict>> {
        if let Some(verdict) = self.monotone(closure, owner)? {
            return Ok(Err(verdict));
        }
        self.with_closure_view(closure, progress, |scratch| {
            let actual = snapshot_hash(scratch, self.inner.database, frontier)?;
            Ok(match expected {
                Some(expected) if expected != actual => {
                    Err(CheckpointVerdict::Void(VoidReason::StateMismatch {
                        expected,
                        actual,
                    }))
                }
                _ => Ok((actual, settled_in(scratch, frontier)?)),
            })
        })
    }

    /// Replays `closure` (of the log) into a scratch view, with the owner's
    /// previous checkpoint in it standing from the start ("Earlier
    /// settlement is part of the state"), calls `with` on it, and removes
    /// it. A closure on top of the checkpoint this replica trimmed at
    /// (`Closure::base`) starts from that checkpoint's snapshot file, which
    /// stands there, and replays the rest.
    fn with_closure_view<T>(
        &self,
        closure: &Closure,
        progress: Progress<'_>,
        with: impl FnOnce(&rocksdb::DB) -> Result<T>,
    ) -> Result<T> {
        let database = self.inner.database;
        let previous = match &closure.previous {
            Some((hash, _)) => Some(self.settlement_of(hash).ok_or(Error::CannotCheckpoint {
                reason: format!("the previous checkpoint {hash} is not confirmed here"),
            })?),
            None => None,
        };
        let number = SCRATCH_NUMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch_dir = self.inner.dir.join(format!("{SCRATCH_PREFIX}{number}"));
        let result = (|| {
            let scratch = Arc::new(open_view(&scratch_dir, database)?);
            let snapshot = match closure.base {
                Some(base) => {
                    let path =
                        super::generation::snapshot_file(&self.inner.dir, self.inner.generation)
                            .ok_or(Error::CannotCheckpoint {
                                reason: format!("no snapshot file of checkpoint {base} here"),
                            })?;
                    super::trim::load_snapshot(&scratch, &path, database, self.inner.log.start())?;
                    Some(path)
                }
                None => None,
            };
            let mut writer =
                Writer::new(self.inner.log.clone(), Arc::clone(&scratch), database, 0)?;
            if let Some(path) = snapshot {
                writer.snapshot_rows = Some(super::trim::snapshot_rows(path));
            }
            // The base stands already (its snapshot file records it).
            let previous = previous.filter(|previous| Some(previous.checkpoint) != closure.base);
            if let Some(previous) = previous {
                // Only what settlement keeps of it: the closure holds
                // nothing off its frontier.
                writer.stand(Standing {
                    off: Vec::new(),
                    ..previous
                })?;
            }
            writer.replay(
                self.inner.log.start(),
                false,
                Select::Only(&closure.changes),
                progress,
            )?;
            with(&scratch)
        })();
        std::fs::remove_dir_all(&scratch_dir).map_err(io_error(&scratch_dir))?;
        result
    }

    /// Check 2 ("monotone"): the verdict when the owner's previous
    /// checkpoint names a change outside `closure`, or is void.
    fn monotone(&self, closure: &Closure, owner: Author) -> Result<Option<CheckpointVerdict>> {
        // On a trimmed replica a checkpoint is judged on top of the one it
        // trimmed at: one whose closure does not reach it regresses.
        if let Some(trimmed) = &self.inner.trimmed
            && closure.base.is_none()
        {
            return Ok(Some(CheckpointVerdict::Void(VoidReason::Regresses {
                previous: trimmed.hash(),
                missing: trimmed.hash(),
            })));
        }
        let Some((previous, entries)) = &closure.previous else {
            return Ok(None);
        };
        for entry in entries {
            let settled = || matches!(self.get_change(&entry.hash), Err(Error::Trimmed { .. }));
            let within =
                closure.changes.contains(&entry.hash) || closure.base.is_some() && settled();
            if !within {
                return Ok(Some(CheckpointVerdict::Void(VoidReason::Regresses {
                    previous: *previous,
                    missing: entry.hash,
                })));
            }
        }
        Ok(match self.verdict_of(previous, owner, &mut |_, _| {})? {
            CheckpointVerdict::Confirmed => None,
            // Its frontier is in this closure, so it is held: only a void
            // verdict is left.
            _ => Some(CheckpointVerdict::Void(VoidReason::AfterVoid {
                previous: *previous,
            })),
        })
    }

    /// Writes the snapshot file of the checkpoint `hash` (FORMAT.md
    /// "Snapshot file, format 1") to `out`, once the checkpoint is
    /// confirmed here: its closure is replayed into a scratch view (through
    /// `progress`), and the file's entries are that view's snapshot state.
    /// A checkpoint this replica cannot confirm is
    /// [`Error::CheckpointNotConfirmed`], and `out` then holds a partial
    /// file: write to a temporary file and rename it on success. On a
    /// replica trimmed at `hash`, its generation's snapshot file is checked
    /// and copied. Writes go
    /// on meanwhile. Returns `out` and the number of entries.
    pub fn write_snapshot<W: Write>(
        &self,
        hash: &ChangeHash,
        out: W,
        progress: Progress<'_>,
    ) -> Result<(W, u64)> {
        let (out, entries, _) = self.write_snapshot_of(hash, out, progress)?;
        Ok((out, entries))
    }

    /// [`Db::write_snapshot`], also returning the closure it replayed (none
    /// when the file was copied): a trim needs it next, and holding a
    /// second copy of it meanwhile doubled the trim's largest allocation.
    pub(super) fn write_snapshot_of<W: Write>(
        &self,
        hash: &ChangeHash,
        out: W,
        progress: Progress<'_>,
    ) -> Result<(W, u64, Option<Hashes>)> {
        if self.inner.trimmed.as_ref().map(Change::hash) == Some(*hash)
            && let Some(path) =
                super::generation::snapshot_file(&self.inner.dir, self.inner.generation)
        {
            // Trimmed at this checkpoint: its closure is gone, its file is
            // here. Checked again, then copied.
            let open = || std::fs::File::open(&path).map_err(io_error(&path));
            let entries = crate::snapshot::SnapshotReader::open(std::io::BufReader::new(open()?))?
                .finish()?;
            let mut out = out;
            std::io::copy(&mut open()?, &mut out).map_err(io_error(&path))?;
            out.flush().map_err(io_error(&path))?;
            return Ok((out, entries, None));
        }
        let checkpoint = self
            .get_change(hash)?
            .ok_or(Error::MissingChange { hash: *hash })?;
        let (frontier, expected) = checkpoint
            .checkpoint()
            .ok_or(Error::NotACheckpoint { hash: *hash })?;
        let owner = self.writer().access.owner.ok_or(Error::NotSynced)?;
        let genesis_hash = ChangeHash(self.inner.database.0);
        let genesis = match self.get_change(&genesis_hash) {
            Ok(genesis) => genesis.ok_or(Error::MissingChange { hash: genesis_hash })?,
            // Settled and trimmed: the generation's snapshot file holds it.
            Err(Error::Trimmed { .. }) => {
                let path = super::generation::snapshot_file(&self.inner.dir, self.inner.generation)
                    .ok_or(Error::MissingChange { hash: genesis_hash })?;
                super::trim::open_snapshot(&path, self.inner.database)?
                    .genesis()
                    .clone()
            }
            Err(error) => return Err(error),
        };
        let not_confirmed = |verdict| Error::CheckpointNotConfirmed {
            hash: *hash,
            verdict,
        };
        let closure = settled_chains(frontier, owner, |hash| self.get_change(hash))?
            .map_err(not_confirmed)?;
        if let Some(verdict) = self.monotone(&closure, owner)? {
            return Err(not_confirmed(verdict));
        }
        let written = self.with_closure_view(&closure, progress, |scratch| {
            let mut file = SnapshotWriter::new(out, &genesis, &checkpoint)?;
            let mut failed = None;
            snapshot_entries_each(scratch, |key, value| {
                if failed.is_none() {
                    failed = file.entry(key, value).err();
                }
            })?;
            if let Some(error) = failed {
                return Err(error.into());
            }
            let (out, entries, actual) = file.finish()?;
            if actual != expected {
                return Ok(Err(CheckpointVerdict::Void(VoidReason::StateMismatch {
                    expected,
                    actual,
                })));
            }
            Ok(Ok((out, entries)))
        })?;
        let (out, entries) = written.map_err(not_confirmed)?;
        Ok((out, entries, Some(closure.changes)))
    }
}

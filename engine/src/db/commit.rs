//! Local commits, in three steps so that committing threads sign in
//! parallel (docs/DESIGN.md "Storage"):
//!
//! 1. **Reserve**, under the chain's lock only: the local checks, then the
//!    next body of this replica's chain (seq, prev, deps, lamport), encoded
//!    and hashed, from the [`Basis`] the writer published when it last let
//!    go of its lock. The chain's reserved head moves on; the next
//!    reservation chains on this hash, signed or not. A thread reserves
//!    and signs while another thread's group is being ingested.
//! 2. **Sign**, on the caller's thread, with no lock held.
//! 3. **Commit**, under the writer lock: whoever holds it takes every queued
//!    signed change that continues the writer's head, in seq order, checks
//!    each again against the writer's state, and ingests them as one group:
//!    one log append, one fsync (group commit). A change whose predecessor
//!    is still being signed waits for the thread signing it, which commits
//!    both.
//!
//! If a group fails, or the chain moved under a reservation (a check now
//! refuses it, or a change of our own key arrived from elsewhere), every
//! change reserved after it can no longer be committed: they fail, the
//! reservations start again from the writer's head, and changes still being
//! signed under the old reservations fail when they arrive (`epoch`).

use std::sync::mpsc::{SyncSender, sync_channel};

use std::sync::Arc;

use super::Db;
use crate::access::Membership;
use crate::change::{Author, Change, ChangeBody, ChangeHash, DEPS_MAX, Op, Unsigned};
use crate::error::{Error, Result};
use crate::ingest::{ApplyReport, Source, Writer};
use crate::records::AuthorState;
use crate::value::Value;

/// How long a committing thread spins on the writer lock, or on the
/// answer of the thread committing its change, before it sleeps. The waits
/// are about one group's ingest (tens of microseconds), and waking a
/// sleeping thread costs about as much again on a virtual machine: two
/// committing threads that slept at once committed 0.6x as fast as one
/// (benches/README.md "Local commit").
const SPIN: std::time::Duration = std::time::Duration::from_micros(100);

/// Retries `attempt` for up to [`SPIN`] while it returns `None`, if another
/// core can make it succeed meanwhile. `None` means: go to sleep.
fn spin<T>(mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    if crate::signature::cores() < 2 {
        return attempt();
    }
    let started = std::time::Instant::now();
    loop {
        if let Some(done) = attempt() {
            return Some(done);
        }
        if started.elapsed() >= SPIN {
            return None;
        }
        std::hint::spin_loop();
    }
}

/// A signed change waiting for the next group commit.
pub(crate) struct CommitRequest {
    change: Change,
    /// The [`Chain::epoch`] it was reserved in.
    epoch: u64,
    reply: SyncSender<Result<ChangeHash>>,
}

/// This replica's chain as reserved: ahead of the writer's own head while
/// reserved changes are being signed or wait to be committed. Its lock is
/// held briefly (never across an ingest), and may be taken while the writer
/// is held, never the other way round.
#[derive(Default)]
pub(crate) struct Chain {
    /// Starts again after a failure: changes reserved before it fail.
    epoch: u64,
    /// The last reserved change (seq, hash, lamport), when it is ahead of
    /// the writer's head; `None` when every reservation is committed (or
    /// failed), so the next one chains on the writer's head.
    pub(super) reserved: Option<(u64, ChangeHash, u64)>,
    /// What a reservation reads of the writer's state.
    pub(super) basis: Basis,
}

/// What a reservation reads of the writer's state, as the writer left it
/// when it last let go of its lock ([`super::WriterGuard`]) or committed a
/// group: a reservation made from it while a group is being ingested is
/// checked again at commit, against the writer itself.
pub(crate) struct Basis {
    /// This replica's author record.
    own: Option<AuthorState>,
    /// Who holds which role.
    membership: Arc<Membership>,
    /// The heads the next change names, with their lamports ([`Db::deps`]),
    /// or why they could not be read.
    deps: std::result::Result<Vec<(u64, ChangeHash)>, String>,
}

impl Default for Basis {
    /// The basis of a replica that holds nothing.
    fn default() -> Basis {
        Basis {
            own: None,
            membership: Arc::default(),
            deps: Ok(Vec::new()),
        }
    }
}

/// The checks a local commit of `ops` by `me` passes: the role (FORMAT.md
/// "Authorization"), and a chain not cut by a fork.
fn check_local(
    me: Author,
    membership: &Membership,
    own: Option<AuthorState>,
    ops: &[Op],
) -> Result<()> {
    crate::access::check_local(me, membership, own, ops)?;
    if let Some(cut) = own.and_then(|state| state.cut) {
        return Err(Error::IdentityCut {
            author: me,
            cut_seq: cut,
        });
    }
    Ok(())
}

impl Db {
    /// Commits `ops` as one change (the three steps above).
    pub(crate) fn commit(&self, ops: Vec<Op>) -> Result<ChangeHash> {
        crate::change::check_ops(&ops).map_err(|rule| Error::InvalidTransaction { rule })?;
        let bytes = crate::change::ops_bytes(&ops);
        if bytes > crate::change::OPS_BYTES_MAX {
            return Err(Error::TransactionTooLarge {
                bytes: bytes as u64,
                max: crate::change::OPS_BYTES_MAX as u64,
            });
        }
        if !crate::change::ops_decode(&ops, bytes) {
            return Err(Error::TransactionUndecodable { ops: ops.len() });
        }
        self.check_increments(&ops)?;
        let (unsigned, epoch) = self.reserve(&mut self.chain(), ops)?;
        self.sign_and_commit(unsigned, epoch)
    }

    /// Steps 2 and 3 of a commit: signs a reserved change on this thread,
    /// then has it group-committed in seq order.
    pub(super) fn sign_and_commit(&self, unsigned: Unsigned, epoch: u64) -> Result<ChangeHash> {
        // Tests hold a commit here to order threads (tests/tests/commit_order.rs).
        fail::fail_point!("engine::commit-sign");
        let change = unsigned.sign(self.inner.identity.signing_key());
        let (reply, answer) = sync_channel(1);
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(CommitRequest {
                change,
                epoch,
                reply,
            });
        loop {
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            let mut writer = self.writer_spinning();
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            if !self.commit_ready(&mut writer) {
                // Ours waits for a predecessor still being signed; the
                // thread signing it commits ours with it.
                drop(writer);
                if let Some(result) = spin(|| answer.try_recv().ok()) {
                    return result;
                }
                return answer.recv().unwrap_or_else(|_| {
                    Err(Error::CommitFailed {
                        reason: "the commit was dropped".into(),
                    })
                });
            }
        }
    }

    /// The writer lock, spun for ([`spin`]) before sleeping on it.
    fn writer_spinning(&self) -> super::WriterGuard<'_> {
        let attempt = || match self.inner.writer.try_lock() {
            Ok(writer) => Some(writer),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        match spin(attempt) {
            Some(guard) => super::WriterGuard {
                db: self,
                guard,
                published: true,
            },
            None => self.writer(),
        }
    }

    pub(super) fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.inner.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Step 1: checks `ops` and builds the next change of this replica's
    /// chain, unsigned, from the published [`Basis`]. Returns it with the
    /// epoch it was reserved in.
    pub(super) fn reserve(&self, chain: &mut Chain, ops: Vec<Op>) -> Result<(Unsigned, u64)> {
        let author = self.author();
        let basis = &chain.basis;
        check_local(author, &basis.membership, basis.own, &ops)?;
        let (seq, prev, prev_lamport) = match chain.reserved {
            Some((seq, hash, lamport)) => (seq, Some(hash), lamport),
            None => basis.own.map_or((0, None, 0), |state| {
                (state.head_seq, Some(state.head_hash), state.head_lamport)
            }),
        };
        let deps = basis
            .deps
            .clone()
            .map_err(|reason| Error::CommitFailed { reason })?;
        let deps_lamport = deps.iter().map(|(lamport, _)| *lamport).max().unwrap_or(0);
        let mut deps: Vec<ChangeHash> = deps.into_iter().map(|(_, hash)| hash).collect();
        deps.sort_unstable();
        let lamport = 1 + prev_lamport.max(deps_lamport);
        let unsigned = Unsigned::new(ChangeBody {
            version: crate::change::version_for(&ops),
            database: self.inner.database,
            author,
            seq: seq + 1,
            prev,
            deps,
            lamport,
            wall_ms: now_ms(),
            ops,
        });
        chain.reserved = Some((seq + 1, unsigned.hash(), lamport));
        Ok((unsigned, chain.epoch))
    }

    /// The checks a commit passes, against the writer's state now.
    pub(super) fn check_local(&self, writer: &Writer, ops: &[Op]) -> Result<()> {
        self.publish_membership(writer);
        let author = self.author();
        check_local(author, &self.membership(), writer.author(&author), ops)
    }

    /// What a reservation reads of `writer`'s state now.
    pub(super) fn basis(&self, writer: &Writer) -> Basis {
        self.publish_membership(writer);
        Basis {
            own: writer.author(&self.author()),
            membership: self.membership(),
            deps: self.deps(writer).map_err(|error| error.to_string()),
        }
    }

    /// The heads of other authors the next change names, with their
    /// lamports: the newest, a grant not yet named first.
    fn deps(&self, writer: &Writer) -> Result<Vec<(u64, ChangeHash)>> {
        let author = self.author();
        let mut others: Vec<(u64, ChangeHash)> = writer
            .heads
            .iter()
            .filter(|(_, (_, head_author))| *head_author != author)
            .map(|(hash, (lamport, _))| (*lamport, *hash))
            .collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        // A grant not yet named goes first: without it the change is refused.
        if let Some(grant) = self.grant_to_name(writer)? {
            let meta = writer
                .held_meta(&grant)?
                .ok_or(Error::MissingChange { hash: grant })?;
            others.retain(|(_, hash)| *hash != grant);
            others.insert(0, (meta.lamport, grant));
        }
        others.truncate(DEPS_MAX);
        Ok(others)
    }

    /// Step 3: commits, as one group, every queued change that continues
    /// the writer's head, and answers each; fails what can no longer be
    /// committed. Returns `false` when nothing could be done: the change
    /// next in line is still being signed.
    fn commit_ready(&self, writer: &mut super::WriterGuard<'_>) -> bool {
        let author = self.author();
        let mut queue = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        // Reservations go on while the group is ingested: the chain's lock
        // is taken again at the end.
        let epoch = self.chain().epoch;
        self.publish_membership(writer);
        let membership = self.membership();
        let own = writer.author(&author);
        let (mut seq, mut prev) =
            own.map_or((0, None), |state| (state.head_seq, Some(state.head_hash)));
        queue.sort_unstable_by_key(|request| request.change.seq());
        let mut ready = Vec::new();
        let mut broken = None;
        for request in std::mem::take(&mut *queue) {
            let change = &request.change;
            if request.epoch != epoch {
                let _ = request.reply.send(Err(Error::CommitFailed {
                    reason: "an earlier commit of this replica failed".into(),
                }));
            } else if broken.is_some() || change.seq() > seq + 1 {
                queue.push(request);
            } else if change.seq() == seq + 1 && change.body().prev == prev {
                match check_local(author, &membership, own, &change.body().ops) {
                    Ok(()) => {
                        seq += 1;
                        prev = Some(change.hash());
                        ready.push(request);
                    }
                    Err(error) => {
                        let _ = request.reply.send(Err(error));
                        broken = Some("an earlier commit of this replica was refused");
                    }
                }
            } else {
                // The writer's head moved past or away from the reservation:
                // a change of our own key came from elsewhere.
                let _ = request.reply.send(Err(Error::CommitFailed {
                    reason: "this replica's chain moved: its key committed elsewhere".into(),
                }));
                broken = Some("this replica's chain moved");
            }
        }
        // Threads that finish signing queue their changes while this group
        // is ingested.
        drop(queue);
        if ready.is_empty() && broken.is_none() {
            return false;
        }
        let changes: Vec<Change> = ready.iter().map(|request| request.change.clone()).collect();
        let result = if changes.is_empty() {
            Ok(Vec::new())
        } else {
            let mut report = ApplyReport::default();
            let entries = changes.into_iter().map(|change| (change, None)).collect();
            writer
                .ingest(entries, Source::New, &mut report)
                .inspect(|accepted| {
                    assert!(
                        report.refused.is_empty() && report.pending.is_empty(),
                        "own changes checked under the writer lock are valid: {report:?}"
                    );
                    self.publish(writer, accepted, &report);
                })
        };
        let basis = self.basis(writer);
        writer.published = true;
        let mut chain = self.chain();
        // Published before the reservation below is let go of: a reservation
        // that no longer chains on it chains on the head this basis holds.
        chain.basis = basis;
        let failed = match result {
            Ok(accepted) => {
                if accepted.last().map(Change::hash) == chain.reserved.map(|(_, hash, _)| hash) {
                    chain.reserved = None;
                }
                for (request, change) in ready.into_iter().zip(accepted) {
                    let _ = request.reply.send(Ok(change.hash()));
                }
                broken.map(str::to_owned)
            }
            Err(error) => {
                let message = error.to_string();
                let mut first = Some(error);
                for request in ready {
                    let error = first.take().unwrap_or_else(|| Error::CommitFailed {
                        reason: message.clone(),
                    });
                    let _ = request.reply.send(Err(error));
                }
                Some(message)
            }
        };
        if let Some(reason) = failed {
            // Everything reserved after the failure chains on it; so does
            // whatever was reserved while the group was ingested.
            chain.epoch += 1;
            chain.reserved = None;
            drop(chain);
            let mut queue = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.retain(|request| {
                if request.epoch == epoch {
                    let _ = request.reply.send(Err(Error::CommitFailed {
                        reason: format!("an earlier commit of this replica failed: {reason}"),
                    }));
                    return false;
                }
                true
            });
        }
        true
    }

    /// Refuses an increment of a field whose value, after the ops before it
    /// in the same transaction, is set and not a counter.
    fn check_increments(&self, ops: &[Op]) -> Result<()> {
        for (index, op) in ops.iter().enumerate() {
            let Op::Increment {
                table, row, field, ..
            } = op
            else {
                continue;
            };
            // The last earlier op of this transaction on the field decides.
            let earlier = ops[..index].iter().rev().find_map(|earlier| match earlier {
                Op::Set {
                    table: t,
                    row: r,
                    field: f,
                    value,
                } if t == table && r == row && f == field => Some(Some(value.clone())),
                Op::Delete { table: t, row: r } if t == table && r == row => Some(None),
                _ => None,
            });
            let current = match earlier {
                Some(value) => value,
                None => self.get_field(table, row, field)?,
            };
            if let Some(current) = current
                && !matches!(current, Value::Counter(_))
            {
                return Err(Error::NotACounter {
                    table: table.clone(),
                    row: row.clone(),
                    field: field.clone(),
                    current,
                });
            }
        }
        Ok(())
    }

    /// The grant this replica's next change must name so that its chain's
    /// named role reaches its current role, if it does not yet.
    fn grant_to_name(&self, writer: &Writer) -> Result<Option<ChangeHash>> {
        let me = self.author();
        if !writer.access.members_only || writer.access.owner == Some(me) {
            return Ok(None);
        }
        let Some(role) = writer.verdicts.roles.get(&me).copied() else {
            return Ok(None);
        };
        let named = match writer.author(&me) {
            Some(state) => writer
                .held_meta(&state.head_hash)?
                .and_then(|meta| meta.role),
            None => None,
        };
        if named >= Some(role) {
            return Ok(None);
        }
        Ok(writer.grant_to_name(&me, role))
    }
}

pub(crate) fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

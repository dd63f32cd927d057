//! Local commits: ops checked, signed as changes chained on this replica's
//! head, and ingested in groups: concurrent callers share one group, one log
//! append and one fsync (group commit).

use std::sync::mpsc::{SyncSender, sync_channel};

use super::Db;
use crate::change::{CHANGE_FORMAT_VERSION, Change, ChangeBody, ChangeHash, DEPS_MAX, Op};
use crate::error::{Error, Result};
use crate::ingest::{ApplyReport, Source, Writer};
use crate::value::Value;

/// One caller's ops waiting for the next group commit.
pub(crate) struct CommitRequest {
    pub(crate) ops: Vec<Op>,
    pub(crate) reply: SyncSender<Result<ChangeHash>>,
}

impl Db {
    /// Commits `ops` as one change. Concurrent callers are grouped: whoever
    /// gets the writer first commits everything queued, with one fsync.
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
        let (reply, answer) = sync_channel(1);
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(CommitRequest { ops, reply });
        loop {
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            let mut writer = self.writer();
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            let requests =
                std::mem::take(&mut *self.inner.queue.lock().unwrap_or_else(|p| p.into_inner()));
            self.commit_group(&mut writer, requests);
        }
    }

    fn commit_group(&self, writer: &mut Writer, requests: Vec<CommitRequest>) {
        // Refused requests are answered alone; the others commit together.
        let requests: Vec<CommitRequest> = requests
            .into_iter()
            .filter_map(|request| {
                match crate::access::check_local(
                    self.author(),
                    &writer.access,
                    &writer.verdicts,
                    writer.author(&self.author()),
                    &request.ops,
                ) {
                    Ok(()) => Some(request),
                    Err(error) => {
                        let _ = request.reply.send(Err(error));
                        None
                    }
                }
            })
            .collect();
        if requests.is_empty() {
            return;
        }
        let result = self.build_changes(writer, &requests).and_then(|changes| {
            let mut report = ApplyReport::default();
            let entries = changes.into_iter().map(|change| (change, None)).collect();
            let accepted = writer.ingest(entries, Source::New, &mut report)?;
            assert!(
                report.refused.is_empty() && report.pending.is_empty(),
                "own changes are valid: {report:?}"
            );
            self.publish(writer, &accepted, &report);
            Ok(accepted)
        });
        match result {
            Ok(accepted) => {
                for (request, change) in requests.into_iter().zip(accepted) {
                    let _ = request.reply.send(Ok(change.hash()));
                }
            }
            Err(error) => {
                let message = error.to_string();
                let mut first = Some(error);
                for request in requests {
                    let error = first.take().unwrap_or_else(|| Error::CommitFailed {
                        reason: message.clone(),
                    });
                    let _ = request.reply.send(Err(error));
                }
            }
        }
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

    /// Signs one change per request, chained, with deps from the heads.
    fn build_changes(&self, writer: &Writer, requests: &[CommitRequest]) -> Result<Vec<Change>> {
        let author = self.author();
        let state = writer.author(&author);
        if let Some(cut) = state.and_then(|state| state.cut) {
            return Err(Error::IdentityCut {
                author,
                cut_seq: cut,
            });
        }
        let (mut seq, mut prev, mut prev_lamport) = state.map_or((0, None, 0), |state| {
            (state.head_seq, Some(state.head_hash), state.head_lamport)
        });
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
        let deps_lamport = others
            .iter()
            .map(|(lamport, _)| *lamport)
            .max()
            .unwrap_or(0);
        let mut deps: Vec<ChangeHash> = others.into_iter().map(|(_, hash)| hash).collect();
        deps.sort_unstable();
        let mut changes = Vec::with_capacity(requests.len());
        for request in requests {
            seq += 1;
            let lamport = 1 + prev_lamport.max(deps_lamport);
            let body = ChangeBody {
                version: CHANGE_FORMAT_VERSION,
                database: self.inner.database,
                author,
                seq,
                prev,
                deps: deps.clone(),
                lamport,
                wall_ms: now_ms(),
                ops: request.ops.clone(),
            };
            let change = Change::sign(body, self.inner.identity.signing_key());
            prev = Some(change.hash());
            prev_lamport = lamport;
            changes.push(change);
        }
        Ok(changes)
    }
}

pub(crate) fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

//! The engine's errors and refusal reasons.

use std::path::PathBuf;

use crate::change::{Author, ChangeHash, DatabaseId, FormatError, Role};
use crate::signature::SignatureFault;

/// Why a received change was refused. Nothing of a refused change is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The bytes are not a well-formed, canonical change.
    #[error("malformed change: {0}")]
    Malformed(#[from] FormatError),
    /// The signature fails the strict rules.
    #[error("bad signature by {author}: {fault}")]
    BadSignature {
        /// Claimed author.
        author: Author,
        /// What is wrong.
        fault: SignatureFault,
    },
    /// The change belongs to another database.
    #[error("change is for database {actual}, this is {expected}")]
    WrongDatabase {
        /// This replica's database.
        expected: DatabaseId,
        /// The change's.
        actual: DatabaseId,
    },
    /// `prev` names a change that is not the author's `seq - 1`.
    #[error("change {author}/{seq}: prev is not the author's change {expected_seq}")]
    BrokenChain {
        /// The author.
        author: Author,
        /// The change's seq.
        seq: u64,
        /// The seq `prev` must have.
        expected_seq: u64,
    },
    /// A dep is one of the author's own changes (those go in `prev`).
    #[error("change {author}/{seq} lists its own author's change {dep} in deps")]
    OwnDep {
        /// The author.
        author: Author,
        /// The change's seq.
        seq: u64,
        /// The offending dep.
        dep: ChangeHash,
    },
    /// `lamport` is not `1 + max(lamport of prev and deps)`.
    #[error("lamport {actual} breaks the rule: expected {expected}")]
    Lamport {
        /// What the rule gives.
        expected: u64,
        /// What the change says.
        actual: u64,
    },
    /// A change read back from the log names a predecessor that is not in
    /// the log before it (the log is always in a causal order).
    #[error("names {missing}, which is not logged before it")]
    MissingPredecessor {
        /// The predecessor not found.
        missing: ChangeHash,
    },
    /// Members-only database: the author's chain names no grant for it
    /// (a stranger, or a member whose change does not name its grant).
    #[error("{author} is not a member of this database")]
    NotAMember {
        /// The author.
        author: Author,
    },
    /// Members-only database: a reader's change (readers sync, never write).
    #[error("{author} is a reader: it may not write")]
    ReadOnly {
        /// The author.
        author: Author,
    },
    /// A grant or revocation by a key below admin.
    #[error("{author} is a {role}: only the owner and admins grant and revoke")]
    NotAnAdmin {
        /// The author.
        author: Author,
        /// Its role.
        role: Role,
    },
    /// A grant at or above the granter's own role (an admin granting admin
    /// or owner; anyone granting owner).
    #[error("{author} ({own}) may not grant {granted}")]
    GrantAboveOwnRole {
        /// The granter.
        author: Author,
        /// Its role.
        own: Role,
        /// The role it tried to grant.
        granted: Role,
    },
    /// A grant or revocation aimed at the owner, whose role is permanent.
    #[error("{author} tried to grant or revoke the owner")]
    TargetsOwner {
        /// The author.
        author: Author,
    },
    /// A checkpoint signed by a key other than the owner's (in open and
    /// members-only databases alike): only the owner checkpoints.
    #[error("{author} is not the owner: only the owner signs checkpoints")]
    NotTheOwner {
        /// The author.
        author: Author,
    },
    /// The change is off the standing checkpoint's frontier (FORMAT.md
    /// "Settlement"): a second change at a settled seq, a chain that does
    /// not pass through the frontier's entry, or a change naming one of
    /// these. Settled history cannot change.
    #[error(
        "{author} seq {seq} is off the standing checkpoint {checkpoint}: settled history cannot change"
    )]
    OffCheckpoint {
        /// The change's author.
        author: Author,
        /// Its seq.
        seq: u64,
        /// The standing checkpoint.
        checkpoint: ChangeHash,
    },
    /// A local revocation of an admin by an admin (only the owner revokes
    /// admins; such a change would have no effect).
    #[error("{author} is an admin and may not revoke the admin {key}")]
    RevokesAnAdmin {
        /// The revoking admin.
        author: Author,
        /// The admin it tried to revoke.
        key: Author,
    },
    /// A change past its author's revocation.
    #[error("{author} was revoked after its change {last_seq}")]
    Revoked {
        /// The author.
        author: Author,
        /// Its last valid seq.
        last_seq: u64,
    },
    /// The bounded pending set is full.
    #[error("pending set is full ({limit} changes): change waits on a missing predecessor")]
    PendingFull {
        /// The limit.
        limit: usize,
    },
}

/// An error of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The change log failed.
    #[error("change log: {0}")]
    Wal(#[from] peers_wal::Error),
    /// RocksDB failed.
    #[error("view (RocksDB): {0}")]
    View(#[from] rocksdb::Error),
    /// A file outside the log and view failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A view entry does not decode: the view is corrupt (rebuild it).
    #[error(
        "view entry {} does not decode; rebuild the view (`peers rebuild`, or delete the view directory)",
        hex::encode(key)
    )]
    ViewCorrupt {
        /// The key.
        key: Vec<u8>,
    },
    /// The log holds a record that is not a valid change.
    #[error("log record at position {position} is not a valid change: {reason}")]
    LogCorrupt {
        /// Where.
        position: u64,
        /// Why.
        reason: Box<Refusal>,
    },
    /// No database at the path.
    #[error("no Peers database at {path} (create one with `peers init`)")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// Another process (or another `Db` in this one) has the directory
    /// open: one process at a time may. Use it through that process, or
    /// close it there first.
    #[error("{path} is open in {}", holder(*.pid, .command))]
    InUse {
        /// The database directory.
        path: PathBuf,
        /// The holder's process id, as it wrote it in `DIR/lock`.
        pid: Option<u32>,
        /// The holder's command line, as it wrote it (may be empty).
        command: String,
    },
    /// A database already exists at the path.
    #[error("a Peers database already exists at {path}")]
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// A file that should hold a key or id does not.
    #[error("{path} is malformed: {what}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
    /// A change handed to `commit` breaks a structural rule.
    #[error("transaction is invalid: {rule}")]
    InvalidTransaction {
        /// The rule.
        rule: &'static str,
    },
    /// A transaction's ops would make a change over
    /// [`crate::CHANGE_BYTES_MAX`] (with the change's own fields): nothing
    /// is signed. Split it into smaller transactions, or store large blobs
    /// outside the database.
    #[error(
        "transaction too large: its ops take {bytes} bytes, and a change may hold at most {max} (split it, or keep large blobs outside the database)"
    )]
    TransactionTooLarge {
        /// Bytes of the encoded ops.
        bytes: u64,
        /// What the ops of one change may take.
        max: u64,
    },
    /// A transaction whose change no replica could decode: its ops would
    /// take more memory decoded than a decoder allots to one change
    /// (FORMAT.md "The decoder's allocation limit").
    #[error(
        "transaction too large: a change of its {ops} ops would be refused by every decoder (over 4 MiB decoded); split it into smaller transactions"
    )]
    TransactionUndecodable {
        /// Ops in the transaction.
        ops: usize,
    },
    /// An increment of a field whose current value is not a counter: it
    /// would be signed, synced and never shown (a non-counter value hides
    /// increments), so it is refused before signing.
    #[error(
        "{table}/{row}.{field} holds {current}, not a counter: an increment would have no effect (increment a field that was never set, or that holds a counter)"
    )]
    NotACounter {
        /// The table.
        table: String,
        /// The row.
        row: String,
        /// The field.
        field: String,
        /// Its current value.
        current: crate::Value,
    },
    /// A change-set file is malformed.
    #[error("change-set file: {reason}")]
    ChangeSet {
        /// Why.
        reason: crate::changeset::ChangeSetError,
    },
    /// A commit grouped with one that failed.
    #[error("commit failed with its group: {reason}")]
    CommitFailed {
        /// The group's error.
        reason: String,
    },
    /// This replica's own chain is cut (its key equivocated elsewhere).
    #[error(
        "identity {author} is cut at seq {cut_seq} (its key signed a fork); it can no longer write"
    )]
    IdentityCut {
        /// This replica's author.
        author: Author,
        /// Last valid seq.
        cut_seq: u64,
    },
    /// This replica may not commit this transaction in a members-only
    /// database (not a member, a reader, revoked, or a grant above its role).
    #[error("not allowed: {0}")]
    NotAllowed(Refusal),
    /// An earlier write failed after its changes reached the log (a view
    /// write, an fsync): the in-memory state no longer matches the log, so
    /// nothing more is written until the database is reopened, which
    /// replays the log. Reads still answer, from the view as it was.
    #[error(
        "the database stopped writing after an error that followed a log append ({reason}); close and reopen it: reopening replays the log, and nothing durable is lost"
    )]
    Poisoned {
        /// The error that poisoned it.
        reason: String,
    },
    /// A joined replica has not received the database's genesis change yet,
    /// so it cannot know who may write: sync with a member first.
    #[error("this replica has not synced its database yet (sync with a member first)")]
    NotSynced,
    /// Automerge refused an operation.
    #[error("automerge: {message}")]
    Automerge {
        /// Automerge's description.
        message: String,
    },
    /// [`crate::Db::checkpoint`] found no frontier to sign.
    #[error("cannot checkpoint: {reason}")]
    CannotCheckpoint {
        /// Why.
        reason: String,
    },
    /// A checkpoint this replica cannot confirm (it lacks its frontier, or
    /// the checkpoint is void), where a confirmed one is needed.
    #[error("checkpoint {hash} is not confirmed here: {verdict}")]
    CheckpointNotConfirmed {
        /// The checkpoint.
        hash: ChangeHash,
        /// Why.
        verdict: crate::CheckpointVerdict,
    },
    /// A snapshot file is refused, or cannot be written.
    #[error("snapshot file: {0}")]
    Snapshot(#[from] crate::SnapshotError),
    /// [`crate::Db::checkpoint_verdict`] was given a change that holds no
    /// checkpoint.
    #[error("change {hash} is not a checkpoint")]
    NotACheckpoint {
        /// Its hash.
        hash: ChangeHash,
    },
    /// A change settled by the checkpoint this replica trimmed its log at
    /// (FORMAT.md "Trimming"): the view knows it, the log no longer holds
    /// it, so it cannot be read or served.
    #[error(
        "change {hash} is settled by checkpoint {checkpoint} and trimmed from this replica's log"
    )]
    Trimmed {
        /// The change.
        hash: ChangeHash,
        /// The checkpoint of this replica's snapshot.
        checkpoint: ChangeHash,
    },
    /// [`crate::Db::trim`] needs a standing checkpoint, and none stands.
    #[error("no checkpoint stands on this replica: make one first (`peers checkpoint`)")]
    NoStandingCheckpoint,
    /// [`crate::Db::trim`]: the replica is already trimmed at its standing
    /// checkpoint.
    #[error("already trimmed at the standing checkpoint {checkpoint}")]
    AlreadyTrimmed {
        /// The checkpoint.
        checkpoint: ChangeHash,
    },
    /// [`crate::Db::install_snapshot`]: a checkpoint as late as the
    /// offered one already stands here, or the offered frontier lies below
    /// the standing one's (a snapshot only ever moves a replica forward).
    #[error(
        "the snapshot's checkpoint {offered} is not past the checkpoint {standing} that stands here"
    )]
    SnapshotNotNewer {
        /// The standing checkpoint.
        standing: ChangeHash,
        /// The snapshot file's.
        offered: ChangeHash,
    },
    /// [`crate::Db::install_snapshot`] on a replica that holds the whole
    /// frontier of the snapshot's checkpoint (settled changes of a trimmed
    /// replica count): it judges the checkpoint itself.
    #[error(
        "this replica holds all of checkpoint {checkpoint}'s frontier and judges it itself: trim once it stands (`peers trim`)"
    )]
    SnapshotNotNeeded {
        /// The snapshot file's checkpoint.
        checkpoint: ChangeHash,
    },
    /// The change at a log position vanished or moved: a bug or corruption.
    #[error("change {hash} is indexed but not readable from the log")]
    MissingChange {
        /// Its hash.
        hash: ChangeHash,
    },
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// "process 1234 (peers serve)", or what is known of it.
fn holder(pid: Option<u32>, command: &str) -> String {
    match (pid, command.is_empty()) {
        (Some(pid), false) => format!("process {pid} ({command})"),
        (Some(pid), true) => format!("process {pid}"),
        (None, _) => "another process".to_owned(),
    }
}

//! Authorization: who may sign what in a members-only database
//! (docs/FORMAT.md "Authorization").
//!
//! Two parts, kept apart on purpose:
//! - **Admission** ([`check_admission`]) uses only the change and the
//!   changes it names, so its verdict is the same on every replica: the
//!   author's *named role* (the highest role granted to it by a change its
//!   own chain names in `deps`) must allow every op.
//! - **Evaluation** ([`Access::evaluate`]) is a function of the set of held
//!   changes: grants are void when their granter's change is invalid,
//!   revocations cut chains, and a chain whose named grants are void is cut
//!   where its role no longer covers its ops. The engine applies the
//!   result by moving each author's validity limit and recomputing the rows
//!   that the moved range touched (both ways: a cut, or a cut lifted).
//!
//! Evaluation is stratified, so it has one answer: the owner's validity
//! depends only on its own forks; admins' on the owner and on grants in
//! their causal past (which cannot form a cycle); everyone else's on the
//! owner and the admins.

use crate::{HashMap, HashSet};

use bincode::{Decode, Encode};

use crate::change::{Author, ChangeHash, Op, Role};
use crate::error::{Error, Refusal, Result};
use crate::records::{AuthorState, Settled};

/// Who holds which role and which authors are cut for a fork, as of the
/// last group applied: a snapshot that
/// `Db` publishes after every group, so a network task checks a peer
/// without the engine's lock (held across fsyncs and for a whole rebuild).
#[derive(Clone, Debug, Default)]
pub(crate) struct Membership {
    /// [`crate::engine::Engine::access_generation`] it was taken at.
    pub generation: u64,
    /// The genesis author, once the genesis is held.
    pub owner: Option<Author>,
    /// Whether the genesis says members-only.
    pub members_only: bool,
    /// Current role of every key that holds one (the owner aside).
    pub roles: HashMap<Author, Role>,
    /// Keys the owner made admin ([`Verdicts::admins`]).
    pub admins: HashSet<Author>,
    /// Authors cut for a fork, and their cut (the last valid seq).
    pub fork_cuts: HashMap<Author, u64>,
}

impl Membership {
    pub(crate) fn new(
        generation: u64,
        access: &Access,
        verdicts: &Verdicts,
        fork_cuts: HashMap<Author, u64>,
    ) -> Membership {
        Membership {
            generation,
            owner: access.owner,
            members_only: access.members_only,
            roles: verdicts.roles.clone(),
            admins: verdicts.admins.clone(),
            fork_cuts,
        }
    }

    /// See [`crate::Db::role_of`].
    pub(crate) fn role_of(&self, key: &Author) -> Option<Role> {
        let owner = self.owner?;
        if *key == owner {
            return Some(Role::Owner);
        }
        if !self.members_only {
            return Some(Role::Writer);
        }
        self.roles.get(key).copied()
    }

    /// See [`crate::Db::is_fork_evidence`].
    pub(crate) fn is_fork_evidence(&self, change: &crate::change::Change) -> bool {
        self.fork_cuts
            .get(&change.author())
            .is_some_and(|cut| change.seq() == cut + 1)
    }

    /// See [`crate::Db::is_members_only`].
    pub(crate) fn is_members_only(&self) -> Option<bool> {
        self.owner.map(|_| self.members_only)
    }
}

/// One held change that grants or revokes.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub(crate) struct MembershipRecord {
    pub hash: ChangeHash,
    pub author: Author,
    pub seq: u64,
    pub grants: Vec<(Author, Role)>,
    pub revokes: Vec<(Author, u64)>,
}

/// A change of `author` at `seq` names `grant`, a change granting it `role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub(crate) struct RoleStep {
    pub author: Author,
    pub seq: u64,
    pub grant: ChangeHash,
    pub role: Role,
}

/// The authorization facts of a database: small (one record per
/// membership change and per named grant), kept in memory and stored as
/// one view value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub(crate) struct Access {
    /// The genesis author, once the genesis is held.
    pub owner: Option<Author>,
    /// Whether the genesis says members-only.
    pub members_only: bool,
    pub records: Vec<MembershipRecord>,
    pub steps: Vec<RoleStep>,
}

/// What evaluation decides, per author.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdicts {
    /// Highest valid seq, for authors limited by authorization (absent: no
    /// limit from authorization; forks are the engine's own cut).
    pub limits: HashMap<Author, u64>,
    /// `last_seq` of the effective revocations, per revoked key.
    pub revoked: HashMap<Author, u64>,
    /// Current role of every key that holds one.
    pub roles: HashMap<Author, Role>,
    /// Keys the owner made admin (a standing owner grant): no admin may
    /// revoke them.
    pub admins: HashSet<Author>,
}

/// The named role after a change: its prev's, raised by the grants for
/// its author in the changes it names.
pub(crate) fn named_role(
    prev_role: Option<Role>,
    named: impl IntoIterator<Item = Role>,
) -> Option<Role> {
    named
        .into_iter()
        .fold(prev_role, |role, granted| role.max(Some(granted)))
}

/// The admission rules of a members-only database for a change by
/// `author` (not the owner's, which are always allowed) with named role
/// `role`, in the order FORMAT.md lists them: the first rule that any op
/// breaks names the refusal (so a reader's `[Grant, Set]` is `ReadOnly`,
/// as its `[Set, Grant]` is).
pub(crate) fn check_admission(
    author: Author,
    role: Option<Role>,
    owner: Author,
    ops: &[Op],
) -> Result<(), Refusal> {
    let own = if author == owner {
        Role::Owner
    } else {
        role.ok_or(Refusal::NotAMember { author })?
    };
    let membership = || {
        ops.iter().filter_map(|op| match op {
            Op::Grant { key, .. } | Op::Revoke { key, .. } => Some(key),
            _ => None,
        })
    };
    if own < Role::Writer && ops.iter().any(|op| op.row().is_some()) {
        return Err(Refusal::ReadOnly { author });
    }
    if own < Role::Admin && membership().next().is_some() {
        return Err(Refusal::NotAnAdmin { author, role: own });
    }
    if membership().any(|key| *key == owner) {
        return Err(Refusal::TargetsOwner { author });
    }
    for op in ops {
        if let Op::Grant { role, .. } = op
            && *role >= own
        {
            return Err(Refusal::GrantAboveOwnRole {
                author,
                own,
                granted: *role,
            });
        }
    }
    Ok(())
}

impl Access {
    /// Records what a newly held change adds: its grants and revocations,
    /// and the grants for its author that it names (`named`: hash, role).
    pub(crate) fn record(
        &mut self,
        hash: ChangeHash,
        author: Author,
        seq: u64,
        ops: &[Op],
        named: &[(ChangeHash, Role)],
    ) -> bool {
        let mut grants = Vec::new();
        let mut revokes = Vec::new();
        for op in ops {
            match op {
                Op::Grant { key, role } => grants.push((*key, *role)),
                Op::Revoke { key, last_seq } => revokes.push((*key, *last_seq)),
                _ => {}
            }
        }
        let changed = !grants.is_empty() || !revokes.is_empty() || !named.is_empty();
        if !grants.is_empty() || !revokes.is_empty() {
            self.records.push(MembershipRecord {
                hash,
                author,
                seq,
                grants,
                revokes,
            });
        }
        for (grant, role) in named {
            self.steps.push(RoleStep {
                author,
                seq,
                grant: *grant,
                role: *role,
            });
        }
        changed
    }

    /// Decides every author's validity limit and role from the held facts.
    /// `forks`: the engine's fork cuts; `heads`: each author's highest seq.
    pub(crate) fn evaluate(
        &self,
        forks: &HashMap<Author, u64>,
        heads: &HashMap<Author, u64>,
        settled: &HashMap<Author, Settled>,
    ) -> Verdicts {
        let Some(owner) = self.owner.filter(|_| self.members_only) else {
            return Verdicts::default();
        };
        let mut run = Evaluation {
            access: self,
            owner,
            records: self.records.iter().map(|r| (r.hash, r)).collect(),
            valid: HashMap::default(),
        };
        let fork = |author: &Author| forks.get(author).copied().unwrap_or(u64::MAX);
        // A standing checkpoint's verdicts stay (FORMAT.md "Settlement").
        let clamp = |author: &Author, limit: u64| {
            settled
                .get(author)
                .map_or(limit, |settled| settled.clamp(limit))
        };
        run.valid.insert(owner, fork(&owner));
        // Revocations by the owner, and the admins it made.
        let mut owner_revokes: HashMap<Author, u64> = HashMap::default();
        let mut admins: HashSet<Author> = HashSet::default();
        for record in self.records.iter().filter(|r| r.author == owner) {
            if record.seq > run.valid[&owner] {
                continue;
            }
            for (key, last_seq) in &record.revokes {
                lower(&mut owner_revokes, *key, *last_seq);
            }
            for (key, role) in &record.grants {
                if *role == Role::Admin {
                    admins.insert(*key);
                }
            }
        }
        // Admins: a fixpoint from above; their grants to each other lie in
        // each other's causal past, so it settles in at most |admins| rounds.
        let mut admin_list: Vec<Author> = admins.iter().copied().collect();
        admin_list.sort_unstable();
        for admin in &admin_list {
            let bound = fork(admin).min(owner_revokes.get(admin).copied().unwrap_or(u64::MAX));
            run.valid.insert(*admin, clamp(admin, bound));
        }
        for _round in 0..=admin_list.len() {
            let mut moved = false;
            for admin in &admin_list {
                let bound = fork(admin).min(owner_revokes.get(admin).copied().unwrap_or(u64::MAX));
                let limit = clamp(admin, bound.min(run.authority_limit(admin, heads)));
                if run.valid.insert(*admin, limit) != Some(limit) {
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        // Everyone else: revocations by the owner or a valid admin.
        let mut revoked = owner_revokes.clone();
        for record in &self.records {
            if record.author == owner || !admins.contains(&record.author) {
                continue;
            }
            if record.seq > run.valid[&record.author]
                || run.role_at(&record.author, record.seq) < Some(Role::Admin)
            {
                continue;
            }
            for (key, last_seq) in &record.revokes {
                if !admins.contains(key) && *key != owner {
                    lower(&mut revoked, *key, *last_seq);
                }
            }
        }
        let mut verdicts = Verdicts::default();
        for author in heads.keys() {
            if *author == owner {
                continue;
            }
            let limit = if admins.contains(author) {
                run.valid[author]
            } else {
                let bound = revoked.get(author).copied().unwrap_or(u64::MAX);
                clamp(author, bound.min(run.authority_limit(author, heads)))
            };
            // Kept even at or above the head: the author's next changes
            // (after a revocation at its head) must be held past it.
            if limit < u64::MAX {
                verdicts.limits.insert(*author, limit);
            }
        }
        verdicts.revoked = revoked;
        verdicts.roles = run.roles(&verdicts.revoked);
        verdicts.admins = admins;
        verdicts
    }
}

/// Keeps the lower of two limits.
fn lower(map: &mut HashMap<Author, u64>, key: Author, value: u64) {
    let entry = map.entry(key).or_insert(value);
    *entry = (*entry).min(value);
}

struct Evaluation<'a> {
    access: &'a Access,
    owner: Author,
    records: HashMap<ChangeHash, &'a MembershipRecord>,
    /// Highest valid seq of the owner and the admins decided so far.
    valid: HashMap<Author, u64>,
}

impl Evaluation<'_> {
    /// Whether the grant of `role` to `grantee` in change `grant` stands:
    /// the change is valid and its author's role is above the role (and at
    /// least admin).
    fn grant_stands(&self, grant: &ChangeHash, grantee: &Author, role: Role) -> bool {
        let Some(record) = self.records.get(grant) else {
            return false;
        };
        if !record.grants.contains(&(*grantee, role)) {
            return false;
        }
        let Some(valid) = self.valid.get(&record.author) else {
            return false;
        };
        if record.seq > *valid {
            return false;
        }
        let granter = self.role_at(&record.author, record.seq);
        granter >= Some(Role::Admin) && granter > Some(role)
    }

    /// `author`'s role at its change `seq`, from the standing grants its
    /// chain named up to there.
    fn role_at(&self, author: &Author, seq: u64) -> Option<Role> {
        if *author == self.owner {
            return Some(Role::Owner);
        }
        self.access
            .steps
            .iter()
            .filter(|step| step.author == *author && step.seq <= seq)
            .filter(|step| self.grant_stands(&step.grant, author, step.role))
            .map(|step| step.role)
            .max()
    }

    /// The highest seq of `author` whose changes its role covers: every
    /// change needs writer; a change that grants or revokes needs admin and
    /// a role above what it grants. (An admin's revocation of an admin is
    /// not a fault of its author: it has no effect, see `evaluate`.)
    fn authority_limit(&self, author: &Author, heads: &HashMap<Author, u64>) -> u64 {
        let head = heads.get(author).copied().unwrap_or(0);
        if head == 0 {
            return u64::MAX;
        }
        if self.role_at(author, 1) < Some(Role::Writer) {
            return 0;
        }
        let mut limit = u64::MAX;
        for record in self.access.records.iter().filter(|r| r.author == *author) {
            let role = self.role_at(author, record.seq);
            let allowed = role >= Some(Role::Admin)
                && record
                    .grants
                    .iter()
                    .all(|(_, granted)| role > Some(*granted));
            if !allowed {
                limit = limit.min(record.seq - 1);
            }
        }
        limit
    }

    /// Every key's current role: the highest standing grant, unless revoked.
    fn roles(&self, revoked: &HashMap<Author, u64>) -> HashMap<Author, Role> {
        let mut roles = HashMap::default();
        roles.insert(self.owner, Role::Owner);
        for record in &self.access.records {
            for (key, role) in &record.grants {
                if revoked.contains_key(key) || *key == self.owner {
                    continue;
                }
                if self.grant_stands(&record.hash, key, *role) {
                    let entry = roles.entry(*key).or_insert(*role);
                    *entry = (*entry).max(*role);
                }
            }
        }
        roles
    }
}

/// Whether `me` may commit `ops` now (FORMAT.md "Authorization"): the
/// local check before signing, beside admission's check of received changes
/// ([`check_admission`]), which it calls.
pub(crate) fn check_local(
    me: Author,
    membership: &Membership,
    state: Option<AuthorState>,
    ops: &[Op],
) -> Result<()> {
    let Some(owner) = membership.owner else {
        return Err(Error::NotSynced);
    };
    if !membership.members_only {
        return Ok(());
    }
    if let Some(state) = state {
        if let Some(last_seq) = state.revoked {
            return Err(Error::NotAllowed(Refusal::Revoked {
                author: me,
                last_seq,
            }));
        }
        // A chain cut below its head (its grant no longer stands) can
        // never be valid again: a change signed now would vanish.
        if !state.is_valid(state.head_seq + 1) {
            return Err(Error::IdentityCut {
                author: me,
                cut_seq: state.valid_until(),
            });
        }
    }
    let role = membership.roles.get(&me).copied();
    check_admission(me, role, owner, ops).map_err(Error::NotAllowed)?;
    if me != owner {
        for op in ops {
            if let Op::Revoke { key, .. } = op
                && membership.admins.contains(key)
            {
                return Err(Error::NotAllowed(Refusal::RevokesAnAdmin {
                    author: me,
                    key: *key,
                }));
            }
        }
    }
    Ok(())
}

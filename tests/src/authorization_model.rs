//! The reference model of authorization (docs/FORMAT.md "Authorization"),
//! shared by the proptest in tests/authorization.rs and the fuzz target
//! [`crate::fuzz_targets::authorization_model`]: written from the rules as
//! plainly as possible, over a set of changes, without the engine's
//! incremental bookkeeping: [`admission`] for the verdict on one change
//! (docs/FORMAT.md "Authorization", Admission), [`Model`] for what a set of
//! admitted changes makes valid (Validity, and the equivocation cut of
//! "Validity rules" 8).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use peers_engine::{Author, Change, ChangeHash, Db, Op, Refusal, Role};

/// The rules of authorization, computed from scratch over a set of admitted
/// changes of one database (forks included), as plainly as possible:
/// changes in lamport order (a causal order), each decided from the ones
/// before it.
#[derive(Debug)]
pub struct Model {
    /// The valid changes.
    pub valid: BTreeSet<ChangeHash>,
    /// Every key that holds or held a role: (role now, revoked after).
    pub members: BTreeMap<Author, (Option<Role>, Option<u64>)>,
    /// The equivocation cut of every author that signed two changes at one
    /// seq: the lowest such seq, minus one.
    pub fork_cuts: BTreeMap<Author, u64>,
}

/// The named role after `change` (docs/FORMAT.md "Authorization"): its
/// prev's, raised by every grant to its author in a change it names in
/// `deps`, standing or not. `held` holds its chain and what it names.
pub fn named_role(change: &Change, held: &HashMap<ChangeHash, Change>) -> Option<Role> {
    let author = change.author();
    let mut chain = vec![change];
    while let Some(prev) = chain[chain.len() - 1].body().prev {
        chain.push(&held[&prev]);
    }
    chain.iter().rev().fold(None, |role, link| {
        let named = link.body().deps.iter().flat_map(|dep| held[dep].ops());
        let granted = named.filter_map(|op| match op {
            Op::Grant { key, role } if *key == author => Some(*role),
            _ => None,
        });
        granted.fold(role, |role, granted| role.max(Some(granted)))
    })
}

/// The admission verdict on `change` in a members-only database owned by
/// `owner`, from docs/FORMAT.md "Authorization", Admission: the first of
/// its five rules that `change` breaks, over all its ops, names the
/// refusal. `held` holds `change`'s chain and what it names.
pub fn admission(
    change: &Change,
    held: &HashMap<ChangeHash, Change>,
    owner: Author,
) -> Result<(), Refusal> {
    let author = change.author();
    let role = if author == owner {
        Role::Owner
    } else {
        named_role(change, held).ok_or(Refusal::NotAMember { author })?
    };
    let ops = change.ops();
    let membership = || {
        ops.iter().filter_map(|op| match op {
            Op::Grant { key, .. } | Op::Revoke { key, .. } => Some(*key),
            _ => None,
        })
    };
    if ops.iter().any(|op| op.row().is_some()) && role < Role::Writer {
        return Err(Refusal::ReadOnly { author });
    }
    if membership().next().is_some() && role < Role::Admin {
        return Err(Refusal::NotAnAdmin { author, role });
    }
    if membership().any(|key| key == owner) {
        return Err(Refusal::TargetsOwner { author });
    }
    let above = ops.iter().find_map(|op| match op {
        Op::Grant { role: granted, .. } if *granted >= role => Some(*granted),
        _ => None,
    });
    if let Some(granted) = above {
        return Err(Refusal::GrantAboveOwnRole {
            author,
            own: role,
            granted,
        });
    }
    Ok(())
}

/// The equivocation cuts of `changes`: per author that signed two
/// different changes at one seq, the lowest such seq minus one.
fn fork_cuts(changes: &[&Change]) -> BTreeMap<Author, u64> {
    let mut at: BTreeMap<(Author, u64), BTreeSet<ChangeHash>> = BTreeMap::new();
    for change in changes {
        let hashes = at.entry((change.author(), change.seq())).or_default();
        hashes.insert(change.hash());
    }
    let mut cuts = BTreeMap::new();
    for ((author, seq), hashes) in at {
        if hashes.len() > 1 {
            lower(&mut cuts, author, seq - 1);
        }
    }
    cuts
}

/// Keeps the lower of two cuts.
fn lower(cuts: &mut BTreeMap<Author, u64>, key: Author, last_seq: u64) {
    let cut = cuts.entry(key).or_insert(last_seq);
    *cut = (*cut).min(last_seq);
}

/// Whether `role` allows every op: rows need writer; a grant needs admin
/// and a role above the one granted; a revocation needs admin (an admin's
/// revocation of an admin is valid but has no effect).
fn covers(role: Option<Role>, ops: &[Op]) -> bool {
    ops.iter().all(|op| match op {
        Op::Set { .. } | Op::Delete { .. } | Op::Increment { .. } => role >= Some(Role::Writer),
        Op::Grant { role: granted, .. } => role >= Some(Role::Admin) && role > Some(*granted),
        // An admin's revocation of an admin is void, not a fault.
        Op::Revoke { .. } => role >= Some(Role::Admin),
        _ => true,
    })
}

/// The grants to `key` in `change`, if they stand: the change is valid and
/// its author's role there is at least admin and above the role granted.
fn standing_grants<'a>(
    change: &'a Change,
    key: &'a Author,
    valid: &'a BTreeSet<ChangeHash>,
    roles: &'a HashMap<ChangeHash, Option<Role>>,
) -> impl Iterator<Item = Role> + 'a {
    let granter = roles.get(&change.hash()).copied().flatten();
    change.ops().iter().filter_map(move |op| match op {
        Op::Grant { key: grantee, role }
            if grantee == key
                && valid.contains(&change.hash())
                && granter >= Some(Role::Admin)
                && granter > Some(*role) =>
        {
            Some(*role)
        }
        _ => None,
    })
}

/// Whether `change` is within `cuts` (its author not cut, or its seq at
/// most the cut).
fn within(cuts: &BTreeMap<Author, u64>, change: &Change) -> bool {
    cuts.get(&change.author())
        .is_none_or(|cut| change.seq() <= *cut)
}

/// One pass over `order` with the revocation cuts `cuts` and the fork cuts
/// `forks`: each change's role (its prev's, raised by the standing grants
/// it names) and validity (its prev valid, within its author's cuts, its
/// role covers its ops). The owner's changes are valid within its fork cut.
fn decide(
    order: &[&Change],
    owner: Author,
    cuts: &BTreeMap<Author, u64>,
    forks: &BTreeMap<Author, u64>,
) -> (BTreeSet<ChangeHash>, HashMap<ChangeHash, Option<Role>>) {
    let by_hash: HashMap<ChangeHash, &Change> = order.iter().map(|c| (c.hash(), *c)).collect();
    let mut valid = BTreeSet::new();
    let mut roles: HashMap<ChangeHash, Option<Role>> = HashMap::new();
    for change in order {
        let author = change.author();
        if author == owner {
            roles.insert(change.hash(), Some(Role::Owner));
            if within(forks, change) {
                valid.insert(change.hash());
            }
            continue;
        }
        let body = change.body();
        let prev_role = body.prev.and_then(|prev| roles[&prev]);
        let named = body
            .deps
            .iter()
            .flat_map(|dep| standing_grants(by_hash[dep], &author, &valid, &roles))
            .max();
        let role = prev_role.max(named);
        roles.insert(change.hash(), role);
        let prev_valid = body.prev.is_none_or(|prev| valid.contains(&prev));
        let within_cuts = within(cuts, change) && within(forks, change);
        if prev_valid && within_cuts && covers(role, change.ops()) {
            valid.insert(change.hash());
        }
    }
    (valid, roles)
}

impl Model {
    /// The model over `changes`: one database's, the genesis among them,
    /// each admitted (see [`admission`]); forks included.
    pub fn new(changes: &[Change]) -> Model {
        let mut order: Vec<&Change> = changes.iter().collect();
        order.sort_by_key(|change| (change.lamport(), change.hash()));
        let owner = order
            .iter()
            .find(|change| change.is_genesis())
            .expect("the genesis")
            .author();
        let forks = fork_cuts(&order);
        // The owner's valid changes: those within its fork cut.
        let owner_ops = || {
            order
                .iter()
                .filter(|change| change.author() == owner && within(&forks, change))
                .flat_map(|change| change.ops())
        };
        let admins: BTreeSet<Author> = owner_ops()
            .filter_map(|op| match op {
                Op::Grant {
                    key,
                    role: Role::Admin,
                } => Some(*key),
                _ => None,
            })
            .collect();
        let mut owner_cuts = BTreeMap::new();
        for op in owner_ops() {
            if let Op::Revoke { key, last_seq } = op {
                lower(&mut owner_cuts, *key, *last_seq);
            }
        }
        // Admins' validity depends on the owner's revocations only; others'
        // on the valid admins' revocations too: two passes settle it.
        let mut cuts = owner_cuts.clone();
        for _pass in 0..4 {
            let (valid, roles) = decide(&order, owner, &cuts, &forks);
            let mut next = owner_cuts.clone();
            for change in order.iter().filter(|c| valid.contains(&c.hash())) {
                for op in change.ops() {
                    // An admin's revocation of an admin has no effect.
                    if let Op::Revoke { key, last_seq } = op
                        && (change.author() == owner || !admins.contains(key))
                    {
                        lower(&mut next, *key, *last_seq);
                    }
                }
            }
            if next == cuts {
                let mut model = Model::finish(&order, owner, valid, &roles, &cuts);
                model.fork_cuts = forks;
                return model;
            }
            cuts = next;
        }
        panic!("the model's revocation cuts do not settle");
    }

    /// Members: the owner; every revoked key; every other key holding a
    /// standing grant, at its highest.
    fn finish(
        order: &[&Change],
        owner: Author,
        valid: BTreeSet<ChangeHash>,
        roles: &HashMap<ChangeHash, Option<Role>>,
        cuts: &BTreeMap<Author, u64>,
    ) -> Model {
        let mut members = BTreeMap::new();
        members.insert(owner, (Some(Role::Owner), None));
        for change in order {
            for op in change.ops() {
                if let Op::Grant { key, .. } = op
                    && let Some(role) = standing_grants(change, key, &valid, roles).max()
                {
                    let entry = members.entry(*key).or_insert((Some(role), None));
                    entry.0 = entry.0.max(Some(role));
                }
            }
        }
        for (key, last_seq) in cuts {
            members.insert(*key, (None, Some(*last_seq)));
        }
        Model {
            valid,
            members,
            fork_cuts: BTreeMap::new(),
        }
    }

    /// The changes of `changes` the model holds valid, in their order.
    pub fn valid_changes(&self, changes: &[Change]) -> Vec<Change> {
        changes
            .iter()
            .filter(|change| self.valid.contains(&change.hash()))
            .cloned()
            .collect()
    }
}

/// Whether each change that touches a row counts in `db`'s view (a change
/// not held does not count).
pub fn applied(db: &Db, changes: &[Change]) -> BTreeMap<ChangeHash, bool> {
    let mut applied = BTreeMap::new();
    for change in changes {
        let Some((table, row)) = change.ops().iter().find_map(Op::row) else {
            continue;
        };
        let valid = match db.get_change(&change.hash()).expect("lookup") {
            None => false,
            Some(_) => {
                let history = db.history(table, row).expect("history");
                let entry = history.iter().find(|entry| entry.hash == change.hash());
                entry.expect("a held change is in its row's history").valid
            }
        };
        applied.insert(change.hash(), valid);
    }
    applied
}

/// `db`'s members as the model's [`Model::members`]: key to (role, revoked after).
pub fn member_map(db: &Db) -> BTreeMap<Author, (Option<Role>, Option<u64>)> {
    db.members()
        .into_iter()
        .map(|member| (member.key, (member.role, member.revoked_after)))
        .collect()
}

//! The reference model of authorization (docs/FORMAT.md "Authorization"),
//! shared by the proptest in tests/authorization.rs and the fuzz target
//! [`crate::fuzz_targets::authorization_model`]: written from the rules as
//! plainly as possible, over a set of changes, without the engine's
//! incremental bookkeeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use peers_engine::{Author, Change, ChangeHash, Db, Op, Role};

/// The rules of authorization, computed from scratch over a set of changes
/// of one database without forks, as plainly as possible: changes in
/// lamport order (a causal order), each decided from the ones before it.
#[derive(Debug)]
pub struct Model {
    /// The valid changes.
    pub valid: BTreeSet<ChangeHash>,
    /// Every key that holds or held a role: (role now, revoked after).
    pub members: BTreeMap<Author, (Option<Role>, Option<u64>)>,
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

/// One pass over `order` with the revocation cuts `cuts`: each change's
/// role (its prev's, raised by the standing grants it names) and validity
/// (its prev valid, within its author's cut, its role covers its ops).
fn decide(
    order: &[&Change],
    owner: Author,
    cuts: &BTreeMap<Author, u64>,
) -> (BTreeSet<ChangeHash>, HashMap<ChangeHash, Option<Role>>) {
    let by_hash: HashMap<ChangeHash, &Change> = order.iter().map(|c| (c.hash(), *c)).collect();
    let mut valid = BTreeSet::new();
    let mut roles: HashMap<ChangeHash, Option<Role>> = HashMap::new();
    for change in order {
        let author = change.author();
        if author == owner {
            roles.insert(change.hash(), Some(Role::Owner));
            valid.insert(change.hash());
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
        let within_cut = cuts.get(&author).is_none_or(|cut| change.seq() <= *cut);
        if prev_valid && within_cut && covers(role, change.ops()) {
            valid.insert(change.hash());
        }
    }
    (valid, roles)
}

impl Model {
    /// The model over `changes`: one database's, the genesis among them,
    /// without forks.
    pub fn new(changes: &[Change]) -> Model {
        let mut order: Vec<&Change> = changes.iter().collect();
        order.sort_by_key(|change| (change.lamport(), change.hash()));
        let owner = order
            .iter()
            .find(|change| change.is_genesis())
            .expect("the genesis")
            .author();
        let owner_ops = || {
            order
                .iter()
                .filter(|change| change.author() == owner)
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
            let (valid, roles) = decide(&order, owner, &cuts);
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
                return Model::finish(&order, owner, valid, &roles, &cuts);
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
        Model { valid, members }
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

//! The `authorization_model` target: scripts of grants, revocations, writes
//! and syncs by an owner and four keys, each on its own replica of a fixed
//! members-only database, checked against the reference model of
//! docs/FORMAT.md "Authorization" ([`crate::authorization_model`]) as the
//! proptest in tests/authorization.rs checks its generated scripts, but
//! driven by fuzz bytes for deeper coverage of the engine's evaluation
//! (engine/src/access.rs, `Engine::reevaluate`).
//!
//! Script bytes (past the end every byte is 0):
//! - byte 0: the owner's grants before the script, 2 bits per key 1-4
//!   (0 none, 1 reader, 2 writer, 3 admin), known to every replica;
//! - then at most [`AUTHORIZATION_STEPS_MAX`] steps of a code byte (bits 0-3
//!   the kind, 4-7 the actor, modulo [`AUTHORIZATION_KEYS`]) and an argument
//!   byte: kinds 0-1 the actor grants, 2 the owner grants (argument: target
//!   key modulo 5, then the role by [`authorization_script::ROLES`]); 3 the
//!   actor revokes, 4 the owner revokes (argument: target key); 5-9 the actor
//!   writes 1-3 ops (argument: count), two more bytes per op
//!   ([`authorization_script::set`] and its siblings); 10-12 the actor
//!   receives what the argument's key holds; 13-15 the actor signs a change
//!   by hand past the local API ([`Forgery`]): 13 extends its chain, 14-15
//!   forks it. Argument: the receiving key (modulo 5), then per bit of
//!   `argument / 5`: bit 0 names the other keys' heads, bit 1 names its
//!   revocation, bit 2 names a grant to it, bits 3-4 one more op each
//!   (1-3); a detail byte: fork depth (`% 8`), grant index (`/ 8`); then
//!   per op a selector byte (`% 4`: 0 a grant, 1 a revocation, then one
//!   argument byte as for steps 0 and 3 (revocation depth `/ 5 % 4`);
//!   else a row op, two bytes as for writes).
//!
//! A step the local API refuses (`NotAllowed`, `NotSynced`, `IdentityCut`)
//! is skipped; a forgery is refused or held as
//! [`crate::authorization_model::admission`] says. A key's replica opens on first use (RocksDB opens dominate
//! the cost of an input), holding what every replica held after the
//! initial grants.

use std::collections::BTreeMap;

use peers_engine::{
    Change, ChangeBody, ChangeHash, DatabaseId, Db, Identity, Op, Options, Role, SyncMode,
};

use super::SplitMix;
use super::fixtures::{Program, fnv1a, scratch_dir};
use crate::authorization_model::{Model, applied, member_map};
use crate::authorization_runner::{
    ForgedOp, Forgery, Refusals, Replicas, Step, check_report, describe,
};
use crate::{exchange, reference_model, rows};

/// Most script steps [`authorization_model`] runs.
pub const AUTHORIZATION_STEPS_MAX: usize = 40;
/// Keys in [`authorization_model`]: the owner (index 0) and four others.
pub const AUTHORIZATION_KEYS: usize = 5;
/// Table names [`authorization_model`] writes.
pub const AUTHORIZATION_TABLES: &[&str] = &["notes", "tasks"];
const AUTHORIZATION_ROWS: &[&str] = &["r0", "r1", "r2"];
const AUTHORIZATION_FIELDS: &[&str] = &["f0", "f1"];
/// Most rounds of sync between the owner's replica and the others at the end.
const SYNC_ROUNDS_MAX: usize = 8;

/// Key `index` of [`authorization_model`] (0: the owner; 5: the fresh
/// replica that only receives). Distinct from [`super::identity`].
pub fn authorization_identity(index: usize) -> Identity {
    let index = u8::try_from(index).expect("a small key index");
    Identity::from_secret_bytes([0x40 + index; 32])
}

fn authorization_options(index: usize) -> Options {
    Options {
        sync: SyncMode::Relaxed,
        identity: Some(authorization_identity(index)),
        members_only: true,
        ..Options::default()
    }
}

/// The genesis of the members-only fixture database: change format 2,
/// `Genesis` and `MembersOnly`, fixed nonce, clock and owner, so its id is
/// the same in every process and every seed.
pub fn authorization_genesis() -> Change {
    let owner = authorization_identity(0);
    owner.sign(ChangeBody {
        version: 2,
        database: DatabaseId::GENESIS,
        author: owner.author(),
        seq: 1,
        prev: None,
        deps: Vec::new(),
        lamport: 1,
        wall_ms: 1_700_000_000_000,
        ops: vec![
            Op::Genesis {
                nonce: *b"peers auth nonce",
            },
            Op::MembersOnly,
        ],
    })
}

/// Decodes a script: the initial roles of keys 1-4 and the steps.
fn decode(data: &[u8]) -> ([Option<Role>; AUTHORIZATION_KEYS - 1], Vec<Step>) {
    let mut program = Program { bytes: data };
    let first = program.next_or_zero();
    let initial = std::array::from_fn(|key| match (first >> (2 * key)) & 3 {
        0 => None,
        1 => Some(Role::Reader),
        2 => Some(Role::Writer),
        _ => Some(Role::Admin),
    });
    let mut steps = Vec::new();
    while steps.len() < AUTHORIZATION_STEPS_MAX {
        let Some(code) = program.next() else {
            break;
        };
        let actor = usize::from(code >> 4) % AUTHORIZATION_KEYS;
        let argument = program.next_or_zero();
        let target = usize::from(argument) % AUTHORIZATION_KEYS;
        let role = authorization_script::ROLES
            [usize::from(argument) / AUTHORIZATION_KEYS % authorization_script::ROLES.len()];
        steps.push(match code & 15 {
            0 | 1 => Step::Grant {
                actor,
                target,
                role,
            },
            2 => Step::Grant {
                actor: 0,
                target,
                role,
            },
            3 => Step::Revoke { actor, target },
            4 => Step::Revoke { actor: 0, target },
            5..=9 => {
                let count = 1 + usize::from(argument) % 3;
                let ops = (0..count).map(|_| op(&mut program)).collect();
                Step::Write { actor, ops }
            }
            10..=12 => Step::Sync {
                from: target,
                to: actor,
            },
            kind => Step::Forge(forgery(&mut program, actor, argument, kind > 13)),
        });
    }
    (initial, steps)
}

/// A forgery by `actor` (module doc): `argument` chooses the receiver, what
/// it names and its op count; a detail byte and its ops follow.
fn forgery(program: &mut Program<'_>, actor: usize, argument: u8, forks: bool) -> Forgery {
    let flags = argument / AUTHORIZATION_KEYS as u8;
    let detail = program.next_or_zero();
    let count = 1 + usize::from(flags >> 3 & 1) + usize::from(flags >> 4 & 1);
    let ops = (0..count)
        .map(|_| {
            let selector = program.next_or_zero();
            match selector % 4 {
                kind @ (0 | 1) => {
                    let argument = program.next_or_zero();
                    let target = usize::from(argument) % AUTHORIZATION_KEYS;
                    let rest = usize::from(argument) / AUTHORIZATION_KEYS;
                    if kind == 0 {
                        let role =
                            authorization_script::ROLES[rest % authorization_script::ROLES.len()];
                        ForgedOp::Grant { target, role }
                    } else {
                        let back = (rest % 4) as u64;
                        ForgedOp::Revoke { target, back }
                    }
                }
                _ => ForgedOp::Row(op(program)),
            }
        })
        .collect();
    Forgery {
        actor,
        to: usize::from(argument) % AUTHORIZATION_KEYS,
        fork: forks.then_some(u64::from(detail % 8)),
        ops,
        names_heads: flags & 1 != 0,
        names_revocation: flags & 2 != 0,
        names_grant: (flags & 4 != 0).then_some(usize::from(detail / 8)),
    }
}

/// A row op from two bytes: what (kind, table, row, field), then a value.
fn op(program: &mut Program<'_>) -> Op {
    let (what, argument) = (program.next_or_zero(), program.next_or_zero());
    let table = AUTHORIZATION_TABLES[usize::from(what >> 3) % AUTHORIZATION_TABLES.len()];
    let row = AUTHORIZATION_ROWS[usize::from(what >> 4) % AUTHORIZATION_ROWS.len()];
    let field = AUTHORIZATION_FIELDS[usize::from(what >> 6) % AUTHORIZATION_FIELDS.len()];
    let value = i64::from(argument as i8);
    match what & 7 {
        0..=3 => crate::set(table, row, field, value),
        4 => crate::delete(table, row),
        _ => crate::increment(table, row, field, value),
    }
}

/// The key replicas of a script: the owner's with the fixed genesis and
/// the initial grants; the others open on first use.
fn replicas(initial_roles: &[Option<Role>]) -> Replicas {
    let dir = scratch_dir();
    let genesis = authorization_genesis();
    let database = DatabaseId(genesis.hash().0);
    let owner = Db::join(dir.path().join("k0"), database, authorization_options(0))
        .expect("join the members-only fixture database");
    check_report(&owner.apply(vec![genesis]).expect("apply genesis"));
    assert_eq!(owner.is_members_only(), Some(true));
    let options = (0..AUTHORIZATION_KEYS).map(authorization_options).collect();
    Replicas::new(dir, owner, options, initial_roles, Refusals::AnyRule)
}

/// Authorization against the reference model on a script of at most
/// [`AUTHORIZATION_STEPS_MAX`] steps (module doc): a fresh replica that
/// receives every change in an input-chosen order, batching and duplication
/// holds nothing pending, applies exactly the changes the model holds
/// valid, shows the model's rows and members (and roles), and a rebuild
/// equals its live view; the key replicas, synced through the owner's until
/// nothing moves, reach the same rows and state hash.
pub fn authorization_model(data: &[u8]) {
    let (initial, steps) = decode(data);
    let mut keys = replicas(&initial);
    for step in &steps {
        keys.step(step);
    }
    let changes = keys.changes();
    let model = Model::new(&changes);
    let expected_rows = reference_model(&model.valid_changes(&changes));
    let options = authorization_options(AUTHORIZATION_KEYS);
    let mut random = SplitMix(fnv1a(data));
    let fresh = keys.deliver("fresh", options, &changes, &mut random, false);
    let story = || describe(keys.keys(), &changes, &model, &[("fresh", &fresh)]);
    assert_eq!(fresh.pending_len(), 0, "waits on {:?}", fresh.missing());
    for change in &changes {
        let held = fresh.get_change(&change.hash()).expect("lookup");
        assert!(held.is_some(), "refused nothing, so holds {change:?}");
    }
    let expected_applied: BTreeMap<ChangeHash, bool> = applied(&fresh, &changes)
        .into_keys()
        .map(|hash| (hash, model.valid.contains(&hash)))
        .collect();
    assert_eq!(
        applied(&fresh, &changes),
        expected_applied,
        "applied vs model\n{}",
        story()
    );
    assert_eq!(
        rows(&fresh, AUTHORIZATION_TABLES),
        expected_rows,
        "rows vs model\n{}",
        story()
    );
    assert_eq!(
        member_map(&fresh),
        model.members,
        "members vs model\n{}",
        story()
    );
    for key in keys.keys() {
        let cut = model.fork_cuts.get(key).copied();
        assert_eq!(fresh.fork_cut(key), cut, "fork cut of {key:?}\n{}", story());
    }
    for key in keys.keys() {
        let role = model.members.get(key).and_then(|(role, _)| *role);
        assert_eq!(fresh.role_of(key), role, "role of {key:?}\n{}", story());
    }
    let verified = fresh.verify(&mut |_, _| {}).expect("verify");
    assert!(verified.ok(), "rebuilt vs live: {verified:?}");
    let state = fresh.state_hash().expect("state hash");
    converge(&keys);
    for (index, replica) in keys.open() {
        assert_eq!(replica.pending_len(), 0, "replica {index} waits");
        let rows = rows(replica, AUTHORIZATION_TABLES);
        assert_eq!(rows, expected_rows, "replica {index} vs model\n{}", story());
        let replica_state = replica.state_hash().expect("state hash");
        assert_eq!(replica_state, state, "replica {index} vs fresh");
    }
}

/// Syncs every open replica with the owner's, both ways, until a round
/// moves nothing (one may not do: a change held inert by its only holder,
/// past a limit that more knowledge lifts, is served once that holder
/// learns it).
fn converge(keys: &Replicas) {
    let mut open = keys.open();
    let (_, owner) = open.next().expect("the owner's replica");
    let others: Vec<&Db> = open.map(|(_, db)| db).collect();
    for _round in 0..SYNC_ROUNDS_MAX {
        let mut moved = 0;
        for replica in &others {
            for (from, to) in [(*replica, owner), (owner, *replica)] {
                let report = exchange(from, to);
                check_report(&report);
                moved += report.accepted.len();
            }
        }
        if moved == 0 {
            return;
        }
    }
    panic!("sync does not settle in {SYNC_ROUNDS_MAX} rounds");
}

/// Builders of [`authorization_model`] scripts (the inverse of its
/// decoding), for seeds.
pub mod authorization_script {
    use peers_engine::Role;

    use super::AUTHORIZATION_KEYS;

    /// Roles by `argument / 5 % 8` in a grant step: mostly writers, now
    /// and then an owner (which the local API refuses).
    pub const ROLES: [Role; 8] = [
        Role::Reader,
        Role::Writer,
        Role::Admin,
        Role::Reader,
        Role::Writer,
        Role::Admin,
        Role::Writer,
        Role::Owner,
    ];

    fn key(index: u8) -> u8 {
        assert!(usize::from(index) < AUTHORIZATION_KEYS, "key {index}");
        index
    }

    /// Byte 0: the owner's grants to keys 1-4 before the script.
    pub fn initial(roles: [Option<Role>; AUTHORIZATION_KEYS - 1]) -> Vec<u8> {
        let bits = |role: Option<Role>| match role {
            None => 0,
            Some(Role::Reader) => 1,
            Some(Role::Writer) => 2,
            Some(Role::Admin) => 3,
            Some(Role::Owner) => panic!("the owner is key 0"),
        };
        let byte = roles
            .iter()
            .enumerate()
            .fold(0u8, |byte, (index, role)| byte | bits(*role) << (2 * index));
        vec![byte]
    }

    /// Key `actor` grants `role` to key `target`.
    pub fn grant(actor: u8, target: u8, role: Role) -> Vec<u8> {
        let index = ROLES.iter().position(|r| *r == role).expect("a role");
        let argument = usize::from(key(target)) + AUTHORIZATION_KEYS * index;
        let argument = u8::try_from(argument).expect("fits a byte");
        vec![key(actor) << 4, argument]
    }

    /// Key `actor` revokes key `target` (as of the last change it holds).
    pub fn revoke(actor: u8, target: u8) -> Vec<u8> {
        vec![3 | key(actor) << 4, key(target)]
    }

    /// Key `actor` commits 1-3 ops, each from [`set`], [`delete`] or [`increment`].
    pub fn write(actor: u8, ops: &[[u8; 2]]) -> Vec<u8> {
        assert!((1..=3).contains(&ops.len()), "1 to 3 ops");
        let count = u8::try_from(ops.len() - 1).expect("fits a byte");
        let mut bytes = vec![5 | key(actor) << 4, count];
        bytes.extend(ops.iter().flatten());
        bytes
    }

    fn what(kind: u8, table: u8, row: u8, field: u8) -> u8 {
        assert!(
            table < 2 && row < 3 && field < 2,
            "table 0-1, row 0-2, field 0-1"
        );
        kind | table << 3 | row << 4 | field << 6
    }

    /// Sets a field of table 0-1, row 0-2 to an integer.
    pub fn set(table: u8, row: u8, field: u8, value: i8) -> [u8; 2] {
        [what(0, table, row, field), value as u8]
    }

    /// Deletes a row.
    pub fn delete(table: u8, row: u8) -> [u8; 2] {
        [what(4, table, row, 0), 0]
    }

    /// Increments a field.
    pub fn increment(table: u8, row: u8, field: u8, delta: i8) -> [u8; 2] {
        [what(5, table, row, field), delta as u8]
    }

    /// Key `to` receives what key `from` holds.
    pub fn sync(to: u8, from: u8) -> Vec<u8> {
        vec![10 | key(to) << 4, key(from)]
    }

    /// What a forgery names in `deps` (see [`forge`]).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Names {
        /// The latest held change of every other key.
        pub heads: bool,
        /// The actor's latest held revocation.
        pub revocation: bool,
        /// The held grant to the actor of this index (modulo their count).
        pub grant: Option<u8>,
    }

    /// A forged grant op (for [`forge`]).
    pub fn forged_grant(target: u8, role: Role) -> Vec<u8> {
        let index = ROLES.iter().position(|r| *r == role).expect("a role");
        let argument = usize::from(key(target)) + AUTHORIZATION_KEYS * index;
        vec![0, u8::try_from(argument).expect("fits a byte")]
    }

    /// A forged revocation op of `target` after its head minus `back`.
    pub fn forged_revoke(target: u8, back: u8) -> Vec<u8> {
        assert!(back < 4, "back 0-3");
        vec![1, key(target) + 5 * back]
    }

    /// A forged row op ([`set`] and its siblings).
    pub fn forged_row(op: [u8; 2]) -> Vec<u8> {
        vec![2, op[0], op[1]]
    }

    /// Key `actor` signs by hand a change holding `ops` (1-3 of
    /// [`forged_grant`], [`forged_revoke`], [`forged_row`]) naming `names`,
    /// extending its chain (`fork: None`) or forking it at `fork` (0-7)
    /// below its head, and hands it to key `to`.
    pub fn forge(actor: u8, to: u8, fork: Option<u8>, names: Names, ops: &[Vec<u8>]) -> Vec<u8> {
        assert!((1..=3).contains(&ops.len()), "1 to 3 ops");
        let kind = if fork.is_some() { 14 } else { 13 };
        let grant = names.grant.unwrap_or(0);
        assert!(fork.unwrap_or(0) < 8 && grant < 32, "fork 0-7, grant 0-31");
        let flags = u8::from(names.heads)
            | u8::from(names.revocation) << 1
            | u8::from(names.grant.is_some()) << 2
            | u8::from(ops.len() > 1) << 3
            | u8::from(ops.len() > 2) << 4;
        let mut bytes = vec![kind | key(actor) << 4, key(to) + 5 * flags];
        bytes.push(fork.unwrap_or(0) + 8 * grant);
        bytes.extend(ops.iter().flatten());
        bytes
    }
}

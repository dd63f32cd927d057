//! The materialized view: LWW field registers, row tombstones and counters.
//!
//! Writes of one applied group go to a [`Group`], an in-memory overlay over
//! RocksDB that later reads in the same group see; the group becomes one
//! `WriteBatch`. The merge rules (docs/DESIGN.md "Merge") live in the `apply_*`
//! functions here and nowhere else.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use bincode::{Decode, Encode};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch};

use crate::HashMap;
use crate::change::Op;
use crate::error::Error;
use crate::keys::{self, Stamp};
use crate::value::Value;

/// A stored field register.
///
/// # Invariants
/// Stored only while visible: `set.is_some() || increments_live > 0`.
/// `increments_sum` is the wrapping sum of the stored increments of this
/// field, all stamped above both `set` and the row's tombstone.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub(crate) struct FieldState {
    pub set: Option<(Stamp, Value)>,
    pub increments_sum: i64,
    pub increments_live: u64,
}

impl FieldState {
    /// The value a reader sees, if the field is visible.
    pub fn value(&self) -> Option<Value> {
        match &self.set {
            Some((_, value)) => Some(match value.counter_base() {
                Some(base) => Value::Counter(base.wrapping_add(self.increments_sum)),
                None => value.clone(),
            }),
            None if self.increments_live > 0 => Some(Value::Counter(self.increments_sum)),
            None => None,
        }
    }

    fn visible(&self) -> bool {
        self.set.is_some() || self.increments_live > 0
    }
}

/// Encodes a stored value (same bincode configuration as changes).
pub(crate) fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, crate::change::bincode_config())
        .expect("encoding into a Vec cannot fail")
}

/// Decodes a stored value; a failure means the view is corrupt.
pub(crate) fn decode<T: Decode<()>>(bytes: &[u8], key: &[u8]) -> Result<T, Error> {
    match bincode::decode_from_slice::<T, _>(bytes, crate::change::bincode_config()) {
        Ok((value, read)) if read == bytes.len() => Ok(value),
        _ => Err(Error::ViewCorrupt { key: key.to_vec() }),
    }
}

/// A (key, value) pair of the view.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// Writes of one applied group, readable before they are committed.
///
/// Field registers and row tombstones (the keys every op reads and writes)
/// live in [`RowSlot`]s, decoded once when a group first touches the row
/// and encoded once when the group ends; every other key is a raw write.
///
/// A group may start while the write of the group before it is still
/// going into RocksDB (a replay writes one group while it applies the
/// next): it then reads through that group's writes, its [`Carried`].
///
/// # Invariants
/// A field or tombstone key is never among the raw writes: every write of
/// one goes through its row's slot, so a slot holds the group's latest
/// value and RocksDB the value before the group (or before the carried
/// group, whose slot is then the one this group starts from).
pub(crate) struct Group<'a> {
    raw: Raw<'a>,
    /// The rows this group touched, by row id ([`keys::row_id`]).
    rows: HashMap<Vec<u8>, RowSlot>,
}

/// What a group wrote, while its write may still be on its way into
/// RocksDB: every key it wrote is here, so a key absent here reads the same
/// from RocksDB whether that write has landed or not.
pub(crate) struct Carried {
    /// Each row the group wrote a field register or tombstone of, whole
    /// as the group saw it (every field it read or wrote; the dirty ones
    /// are what it wrote).
    rows: HashMap<Vec<u8>, RowSlot>,
    /// Its other writes; `None` a delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// The group's writes of every key but field registers and tombstones,
/// over the carried group's writes, over RocksDB.
struct Raw<'a> {
    view: &'a DB,
    carried: Option<Arc<Carried>>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What point reads found in RocksDB, absent keys included: a key read
    /// here does not change while the group is open (only its writer writes
    /// the view, at the end; the carried group's write changes only keys
    /// the carried group holds, which are read from it), and the ops of a
    /// group read the same keys again and again.
    read: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>>>,
}

/// A row as this group sees it: its tombstone and the field registers it
/// read or wrote.
#[derive(Clone)]
struct RowSlot {
    tombstone: Option<Stamp>,
    tombstone_dirty: bool,
    /// Whether `fields` holds every stored field of the row (a delete, or
    /// clearing the row, loads them all).
    all_fields: bool,
    /// By full field key. A field absent from the view has the default
    /// (invisible) state.
    fields: BTreeMap<Vec<u8>, FieldSlot>,
}

#[derive(Clone)]
struct FieldSlot {
    state: FieldState,
    /// Changed by this group: written (or deleted, when invisible) at the end.
    dirty: bool,
}

impl RowSlot {
    /// Reads the row's tombstone: a new slot.
    fn load(view: &DB, row_id: &[u8]) -> Result<RowSlot, Error> {
        let key = keys::tombstone_of_row(row_id);
        let tombstone = match view.get_pinned(&key)? {
            Some(bytes) => Some(decode(&bytes, &key)?),
            None => None,
        };
        Ok(RowSlot {
            tombstone,
            tombstone_dirty: false,
            all_fields: false,
            fields: BTreeMap::new(),
        })
    }

    /// The field under `key` (a field key of this row), read on first use.
    fn field(&mut self, view: &DB, key: Vec<u8>) -> Result<&mut FieldSlot, Error> {
        use std::collections::btree_map::Entry as Slot;
        match self.fields.entry(key) {
            Slot::Occupied(slot) => Ok(slot.into_mut()),
            Slot::Vacant(slot) => {
                let state = if self.all_fields {
                    FieldState::default()
                } else {
                    match view.get_pinned(slot.key())? {
                        Some(bytes) => decode(&bytes, slot.key())?,
                        None => FieldState::default(),
                    }
                };
                Ok(slot.insert(FieldSlot {
                    state,
                    dirty: false,
                }))
            }
        }
    }

    /// Loads every stored field of the row not loaded yet.
    fn load_all_fields(&mut self, view: &DB, row_id: &[u8]) -> Result<(), Error> {
        if self.all_fields {
            return Ok(());
        }
        let prefix = keys::fields_of_row(row_id);
        for item in view.iterator(IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            if !self.fields.contains_key(&*key) {
                let state = decode(&value, &key)?;
                self.fields.insert(
                    key.to_vec(),
                    FieldSlot {
                        state,
                        dirty: false,
                    },
                );
            }
        }
        self.all_fields = true;
        Ok(())
    }
}

impl Raw<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        debug_assert!(
            !keys::is_row_state(key),
            "row state is read through its slot"
        );
        if let Some(value) = self.writes.get(key) {
            return Ok(value.clone());
        }
        if let Some(value) = self.carried.as_ref().and_then(|c| c.writes.get(key)) {
            return Ok(value.clone());
        }
        if let Some(value) = self.read.borrow().get(key) {
            return Ok(value.clone());
        }
        let value = self.view.get(key)?;
        self.read.borrow_mut().insert(key.to_vec(), value.clone());
        Ok(value)
    }

    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.get(key)?.is_some())
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        debug_assert!(!keys::is_row_state(&key), "row state goes through its slot");
        self.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        debug_assert!(!keys::is_row_state(&key), "row state goes through its slot");
        self.writes.insert(key, None);
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, Error> {
        debug_assert!(
            !keys::is_row_state(prefix),
            "row state is read through its slot"
        );
        let mut merged = BTreeMap::new();
        for item in self
            .view
            .iterator(IteratorMode::From(prefix, Direction::Forward))
        {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            merged.insert(key.to_vec(), Some(value.to_vec()));
        }
        let end = keys::prefix_end(prefix);
        let layers = self.carried.iter().map(|c| &c.writes);
        for writes in layers.chain([&self.writes]) {
            let range = match &end {
                Some(end) => writes.range(prefix.to_vec()..end.clone()),
                None => writes.range(prefix.to_vec()..),
            };
            for (key, value) in range {
                merged.insert(key.clone(), value.clone());
            }
        }
        Ok(merged
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect())
    }
}

impl<'a> Group<'a> {
    pub fn new(view: &'a DB) -> Self {
        Group::after(view, None)
    }

    /// A group that reads through `carried`, the writes of the group
    /// before, whose write into RocksDB may not have landed yet (it must
    /// land before the group after this one starts: see [`Carried`]).
    pub fn after(view: &'a DB, carried: Option<Arc<Carried>>) -> Self {
        Group {
            raw: Raw {
                view,
                carried,
                writes: BTreeMap::new(),
                read: RefCell::new(HashMap::default()),
            },
            rows: HashMap::default(),
        }
    }

    /// The value of a key other than a field register or a tombstone.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.raw.get(key)
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        self.raw.contains(key)
    }

    /// Writes a key other than a field register or a tombstone.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.raw.put(key, value);
    }

    /// Writes a stored entry of any family (a snapshot's, for a row being
    /// recomputed): field registers and tombstones go to their row's slot.
    pub fn put_entry(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        if !keys::is_row_state(&key) {
            self.raw.put(key, value);
            return Ok(());
        }
        let Some(row_end) = keys::row_end(&key) else {
            return Err(Error::ViewCorrupt { key });
        };
        let slot = row_slot(&self.raw, &mut self.rows, &key[1..row_end])?;
        if key[0] == keys::TOMBSTONES {
            slot.tombstone = Some(decode(&value, &key)?);
            slot.tombstone_dirty = true;
        } else {
            let state = decode(&value, &key)?;
            let field = slot.field(self.raw.view, key)?;
            field.state = state;
            field.dirty = true;
        }
        Ok(())
    }

    /// Every live (key, value) whose key starts with `prefix`, in key
    /// order; not for field registers or tombstones (read through slots).
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, Error> {
        self.raw.scan_prefix(prefix)
    }

    /// What the group wrote: its RocksDB batch ([`Carried::batch`]), and
    /// what the next group reads through until that batch has landed.
    pub fn into_carried(self) -> Carried {
        let rows = self
            .rows
            .into_iter()
            .filter(|(_, slot)| slot.tombstone_dirty || slot.fields.values().any(|f| f.dirty))
            .collect();
        Carried {
            rows,
            writes: self.raw.writes,
        }
    }
}

impl Carried {
    /// The group's writes as one RocksDB batch.
    pub fn batch(&self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        // In key order, family by family: RocksDB's memtable inserts a key
        // next to the one it inserted before for less than a key anywhere
        // else, which costs a walk down its skip list (`peers rebuild` of
        // 100k changes: 2.04 s against 2.05-2.24 s with fields in hash
        // order).
        let mut rows: Vec<(&Vec<u8>, &RowSlot)> = self.rows.iter().collect();
        rows.sort_unstable_by_key(|(row_id, _)| *row_id);
        for (_, slot) in &rows {
            for (key, field) in &slot.fields {
                if !field.dirty {
                    continue;
                }
                if field.state.visible() {
                    batch.put(key, encode(&field.state));
                } else {
                    batch.delete(key);
                }
            }
        }
        for (row_id, slot) in &rows {
            if slot.tombstone_dirty {
                let key = keys::tombstone_of_row(row_id);
                match slot.tombstone {
                    Some(stamp) => batch.put(key, encode(&stamp)),
                    None => batch.delete(key),
                }
            }
        }
        for (key, value) in &self.writes {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        batch
    }
}

/// The slot of the row `row_id`, read on first use: as the carried group
/// left it if it wrote the row, else from RocksDB.
fn row_slot<'r>(
    raw: &Raw<'_>,
    rows: &'r mut HashMap<Vec<u8>, RowSlot>,
    row_id: &[u8],
) -> Result<&'r mut RowSlot, Error> {
    if !rows.contains_key(row_id) {
        let carried = raw.carried.as_ref().and_then(|c| c.rows.get(row_id));
        let slot = match carried {
            // Written by the group before: clean in this one.
            Some(slot) => {
                let mut slot = slot.clone();
                slot.tombstone_dirty = false;
                for field in slot.fields.values_mut() {
                    field.dirty = false;
                }
                slot
            }
            None => RowSlot::load(raw.view, row_id)?,
        };
        rows.insert(row_id.to_vec(), slot);
    }
    Ok(rows.get_mut(row_id).expect("inserted above"))
}

/// Applies one op of a valid change to the view.
pub(crate) fn apply_op(group: &mut Group<'_>, stamp: Stamp, op: &Op) -> Result<(), Error> {
    match op {
        Op::Set {
            table,
            row,
            field,
            value,
        } => apply_set(group, stamp, table, row, field, value),
        Op::Delete { table, row } => apply_delete(group, stamp, table, row),
        Op::Increment {
            table,
            row,
            field,
            delta,
        } => apply_increment(group, stamp, table, row, field, *delta),
        // Membership ops act through authorization, not on rows.
        Op::Genesis { .. }
        | Op::Grant { .. }
        | Op::Revoke { .. }
        | Op::MembersOnly
        | Op::Checkpoint { .. } => Ok(()),
    }
}

fn apply_set(
    group: &mut Group<'_>,
    stamp: Stamp,
    table: &str,
    row: &str,
    field: &str,
    value: &Value,
) -> Result<(), Error> {
    let (key, row_end) = keys::field_and_row_end(table, row, field);
    let Group { raw, rows } = group;
    let slot = row_slot(raw, rows, &key[1..row_end])?;
    if slot.tombstone.is_some_and(|deleted| deleted > stamp) {
        return Ok(());
    }
    let entry = slot.field(raw.view, key)?;
    if entry
        .state
        .set
        .as_ref()
        .is_some_and(|(current, _)| *current >= stamp)
    {
        return Ok(());
    }
    entry.state.set = Some((stamp, value.clone()));
    drop_increments_below(raw, table, row, field, stamp, &mut entry.state)?;
    entry.dirty = true;
    Ok(())
}

fn apply_increment(
    group: &mut Group<'_>,
    stamp: Stamp,
    table: &str,
    row: &str,
    field: &str,
    delta: i64,
) -> Result<(), Error> {
    let (key, row_end) = keys::field_and_row_end(table, row, field);
    let Group { raw, rows } = group;
    let slot = row_slot(raw, rows, &key[1..row_end])?;
    if slot.tombstone.is_some_and(|deleted| deleted > stamp) {
        return Ok(());
    }
    let entry = slot.field(raw.view, key)?;
    if entry
        .state
        .set
        .as_ref()
        .is_some_and(|(set, _)| *set > stamp)
    {
        return Ok(());
    }
    let increment_key = keys::increment(table, row, field, &stamp);
    debug_assert!(!raw.contains(&increment_key)?, "an op is applied once");
    raw.put(increment_key, encode(&delta));
    entry.state.increments_sum = entry.state.increments_sum.wrapping_add(delta);
    entry.state.increments_live += 1;
    entry.dirty = true;
    Ok(())
}

fn apply_delete(group: &mut Group<'_>, stamp: Stamp, table: &str, row: &str) -> Result<(), Error> {
    let row_id = keys::row_id(table, row);
    let Group { raw, rows } = group;
    let slot = row_slot(raw, rows, &row_id)?;
    if slot.tombstone.is_some_and(|deleted| deleted >= stamp) {
        return Ok(());
    }
    slot.tombstone = Some(stamp);
    slot.tombstone_dirty = true;
    slot.load_all_fields(raw.view, &row_id)?;
    let field_start = 1 + row_id.len();
    for (key, entry) in &mut slot.fields {
        let state = &mut entry.state;
        if state.set.as_ref().is_some_and(|(set, _)| *set < stamp) {
            state.set = None;
            entry.dirty = true;
        }
        if state.increments_live > 0 {
            let Some((field, _)) = keys::take_component(&key[field_start..]) else {
                return Err(Error::ViewCorrupt { key: key.clone() });
            };
            let live = state.increments_live;
            drop_increments_below(raw, table, row, &field, stamp, state)?;
            entry.dirty |= state.increments_live != live;
        }
    }
    Ok(())
}

/// Removes the field's increments stamped below `threshold` (a set or delete
/// now hides them for good: thresholds only rise).
fn drop_increments_below(
    raw: &mut Raw<'_>,
    table: &str,
    row: &str,
    field: &str,
    threshold: Stamp,
    state: &mut FieldState,
) -> Result<(), Error> {
    if state.increments_live == 0 {
        return Ok(());
    }
    let prefix = keys::increments_prefix(table, row, field);
    let mut threshold_key = prefix.clone();
    threshold.push_key(&mut threshold_key);
    for (key, bytes) in raw.scan_prefix(&prefix)? {
        if key >= threshold_key {
            break;
        }
        let delta: i64 = decode(&bytes, &key)?;
        state.increments_sum = state.increments_sum.wrapping_sub(delta);
        state.increments_live -= 1;
        raw.delete(key);
    }
    Ok(())
}

/// Removes a row from the view entirely (before recomputing it).
pub(crate) fn clear_row(group: &mut Group<'_>, table: &str, row: &str) -> Result<(), Error> {
    let Group { raw, rows } = group;
    for (key, _) in raw.scan_prefix(&keys::row_prefix(keys::INCREMENTS, table, row))? {
        raw.delete(key);
    }
    let row_id = keys::row_id(table, row);
    let slot = row_slot(raw, rows, &row_id)?;
    slot.load_all_fields(raw.view, &row_id)?;
    for entry in slot.fields.values_mut() {
        entry.state = FieldState::default();
        entry.dirty = true;
    }
    slot.tombstone = None;
    slot.tombstone_dirty = true;
    Ok(())
}

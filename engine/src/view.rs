//! The materialized view: LWW field registers, row tombstones and counters.
//!
//! Writes of one applied group go to a [`Group`], an in-memory overlay over
//! RocksDB that later reads in the same group see; the group becomes one
//! `WriteBatch`. The merge rules (docs/DESIGN.md "Merge") live in the `apply_*`
//! functions here and nowhere else.

use std::cell::RefCell;
use std::collections::BTreeMap;

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
pub(crate) struct Group<'a> {
    view: &'a DB,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What point reads found in RocksDB, absent keys included: the view
    /// does not change while a group is open (only its writer writes it, at
    /// the end), and the ops of a group read the same rows' tombstones again
    /// and again.
    read: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl<'a> Group<'a> {
    pub fn new(view: &'a DB) -> Self {
        Group {
            view,
            writes: BTreeMap::new(),
            read: RefCell::new(HashMap::default()),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(value) = self.writes.get(key) {
            return Ok(value.clone());
        }
        if let Some(value) = self.read.borrow().get(key) {
            return Ok(value.clone());
        }
        let value = self.view.get(key)?;
        self.read.borrow_mut().insert(key.to_vec(), value.clone());
        Ok(value)
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.get(key)?.is_some())
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Every live (key, value) whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, Error> {
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
        let range = match keys::prefix_end(prefix) {
            Some(end) => self.writes.range(prefix.to_vec()..end),
            None => self.writes.range(prefix.to_vec()..),
        };
        for (key, value) in range {
            merged.insert(key.clone(), value.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect())
    }

    pub fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in self.writes {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        batch
    }

    fn field_state(&self, key: &[u8]) -> Result<FieldState, Error> {
        match self.get(key)? {
            Some(bytes) => decode(&bytes, key),
            None => Ok(FieldState::default()),
        }
    }

    fn save_field(&mut self, key: Vec<u8>, state: &FieldState) {
        if state.visible() {
            let bytes = encode(state);
            self.put(key, bytes);
        } else {
            self.delete(key);
        }
    }

    fn tombstone(&self, table: &str, row: &str) -> Result<Option<Stamp>, Error> {
        let key = keys::tombstone(table, row);
        self.get(&key)?
            .map(|bytes| decode(&bytes, &key))
            .transpose()
    }
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
    if group
        .tombstone(table, row)?
        .is_some_and(|deleted| deleted > stamp)
    {
        return Ok(());
    }
    let key = keys::field(table, row, field);
    let mut state = group.field_state(&key)?;
    if state
        .set
        .as_ref()
        .is_some_and(|(current, _)| *current >= stamp)
    {
        return Ok(());
    }
    state.set = Some((stamp, value.clone()));
    drop_increments_below(group, table, row, field, stamp, &mut state)?;
    group.save_field(key, &state);
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
    if group
        .tombstone(table, row)?
        .is_some_and(|deleted| deleted > stamp)
    {
        return Ok(());
    }
    let key = keys::field(table, row, field);
    let mut state = group.field_state(&key)?;
    if state.set.as_ref().is_some_and(|(set, _)| *set > stamp) {
        return Ok(());
    }
    let increment_key = keys::increment(table, row, field, &stamp);
    debug_assert!(!group.contains(&increment_key)?, "an op is applied once");
    group.put(increment_key, encode(&delta));
    state.increments_sum = state.increments_sum.wrapping_add(delta);
    state.increments_live += 1;
    group.save_field(key, &state);
    Ok(())
}

fn apply_delete(group: &mut Group<'_>, stamp: Stamp, table: &str, row: &str) -> Result<(), Error> {
    if group
        .tombstone(table, row)?
        .is_some_and(|deleted| deleted >= stamp)
    {
        return Ok(());
    }
    group.put(keys::tombstone(table, row), encode(&stamp));
    let prefix = keys::row_prefix(keys::FIELDS, table, row);
    for (key, bytes) in group.scan_prefix(&prefix)? {
        let mut state: FieldState = decode(&bytes, &key)?;
        let Some((field, _)) = keys::take_component(&key[prefix.len()..]) else {
            return Err(Error::ViewCorrupt { key });
        };
        if state.set.as_ref().is_some_and(|(set, _)| *set < stamp) {
            state.set = None;
        }
        drop_increments_below(group, table, row, &field, stamp, &mut state)?;
        group.save_field(key, &state);
    }
    Ok(())
}

/// Removes the field's increments stamped below `threshold` (a set or delete
/// now hides them for good: thresholds only rise).
fn drop_increments_below(
    group: &mut Group<'_>,
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
    for (key, bytes) in group.scan_prefix(&prefix)? {
        if key >= threshold_key {
            break;
        }
        let delta: i64 = decode(&bytes, &key)?;
        state.increments_sum = state.increments_sum.wrapping_sub(delta);
        state.increments_live -= 1;
        group.delete(key);
    }
    Ok(())
}

/// Removes a row from the view entirely (before recomputing it).
pub(crate) fn clear_row(group: &mut Group<'_>, table: &str, row: &str) -> Result<(), Error> {
    for family in [keys::FIELDS, keys::INCREMENTS] {
        for (key, _) in group.scan_prefix(&keys::row_prefix(family, table, row))? {
            group.delete(key);
        }
    }
    group.delete(keys::tombstone(table, row));
    Ok(())
}

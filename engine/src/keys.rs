//! RocksDB key layout of the view (docs/FORMAT.md "View keys").
//!
//! One column family; every key starts with a one-byte family prefix. Names
//! (table, row, field) are written as order-preserving, prefix-free
//! components: each 0x00 byte becomes 0x00 0xFF and the component ends with
//! 0x00 0x01, so `scan(table)` walks rows in byte order of their ids and a
//! row's prefix never matches another row.

use bincode::{Decode, Encode};

use crate::change::{Author, ChangeHash};

/// Version of the view's key and value layout, stored under [`META_VIEW_FORMAT`].
/// Format 5 changes no key or value: its RocksDB tables have partitioned
/// index and filter blocks, which the view's small block cache needs
/// (`db/directory.rs`), so views of format 4 are rebuilt once.
pub const VIEW_FORMAT_VERSION: u32 = 5;

/// Family prefixes. Never reuse a retired byte.
pub(crate) const META: u8 = 0x01;
pub(crate) const FIELDS: u8 = 0x02;
pub(crate) const TOMBSTONES: u8 = 0x03;
pub(crate) const INCREMENTS: u8 = 0x04;
pub(crate) const CHANGES: u8 = 0x05;
pub(crate) const CHAIN: u8 = 0x06;
pub(crate) const AUTHORS: u8 = 0x07;
pub(crate) const HISTORY: u8 = 0x08;
// 0x09 held one key per head in view format 1; retired.
/// The owner's checkpoints, by seq (view format 4).
pub(crate) const CHECKPOINTS: u8 = 0x0A;

/// Meta keys (after the META prefix).
pub(crate) const META_VIEW_FORMAT: &[u8] = b"view-format";
pub(crate) const META_DATABASE: &[u8] = b"database";
pub(crate) const META_APPLIED: &[u8] = b"applied-position";
pub(crate) const META_HEADS: &[u8] = b"heads";
/// The authorization facts, one value (view format 3).
pub(crate) const META_ACCESS: &[u8] = b"access";
/// The standing checkpoint and what it settles ([`crate::checkpoint::Standing`]).
pub(crate) const META_STANDING: &[u8] = b"standing";

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// The stamp that orders ops: automerge's OpId order, counter first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Stamp {
    /// The change's lamport.
    pub lamport: u64,
    /// The change's author.
    pub author: Author,
    /// The op's index in its change.
    pub op_index: u32,
}

impl Stamp {
    pub(crate) fn push_key(&self, key: &mut Vec<u8>) {
        key.extend_from_slice(&self.lamport.to_be_bytes());
        key.extend_from_slice(&self.author.0);
        key.extend_from_slice(&self.op_index.to_be_bytes());
    }
}

pub(crate) fn push_component(key: &mut Vec<u8>, name: &str) {
    key.reserve(name.len() + 2);
    let mut runs = name.as_bytes().split(|&byte| byte == ESCAPE);
    if let Some(first) = runs.next() {
        key.extend_from_slice(first);
    }
    for run in runs {
        key.extend_from_slice(&[ESCAPE, ESCAPED_ZERO]);
        key.extend_from_slice(run);
    }
    key.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

/// Reads one component from the front of `bytes`; returns it and the rest.
pub(crate) fn take_component(bytes: &[u8]) -> Option<(String, &[u8])> {
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte != ESCAPE {
            out.push(byte);
            index += 1;
            continue;
        }
        match *bytes.get(index + 1)? {
            ESCAPED_ZERO => out.push(0),
            TERMINATOR => return Some((String::from_utf8(out).ok()?, &bytes[index + 2..])),
            _ => return None,
        }
        index += 2;
    }
    None
}

pub(crate) fn meta(name: &[u8]) -> Vec<u8> {
    fixed(META, &[name])
}

/// A key of `family` made of `parts`, allocated once.
fn fixed(family: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|part| part.len()).sum::<usize>());
    key.push(family);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

pub(crate) fn row_prefix(family: u8, table: &str, row: &str) -> Vec<u8> {
    let mut key = table_prefix(family, table);
    push_component(&mut key, row);
    key
}

pub(crate) fn table_prefix(family: u8, table: &str) -> Vec<u8> {
    // Room for what the longer keys append (a row, a field and a stamp, or
    // a history suffix), so building one allocates once.
    let mut key = Vec::with_capacity(table.len() + 128);
    key.push(family);
    push_component(&mut key, table);
    key
}

pub(crate) fn field(table: &str, row: &str, field: &str) -> Vec<u8> {
    let mut key = row_prefix(FIELDS, table, row);
    push_component(&mut key, field);
    key
}

/// A row's id: its table and row components, the part its field, tombstone
/// and increment keys share after the family byte.
pub(crate) fn row_id(table: &str, row: &str) -> Vec<u8> {
    let mut id = Vec::with_capacity(table.len() + row.len() + 4);
    push_component(&mut id, table);
    push_component(&mut id, row);
    id
}

/// The tombstone key of the row `row_id`.
pub(crate) fn tombstone_of_row(row_id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + row_id.len());
    key.push(TOMBSTONES);
    key.extend_from_slice(row_id);
    key
}

/// The prefix of the field keys of the row `row_id`.
pub(crate) fn fields_of_row(row_id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + row_id.len());
    key.push(FIELDS);
    key.extend_from_slice(row_id);
    key
}

/// A field's key, and where its row's part ends: `key[1..end]` is the
/// row's id.
pub(crate) fn field_and_row_end(table: &str, row: &str, field: &str) -> (Vec<u8>, usize) {
    let mut key = row_prefix(FIELDS, table, row);
    let end = key.len();
    push_component(&mut key, field);
    (key, end)
}

/// Whether `key` is a field register's or a tombstone's: the row state
/// that ops read and write.
pub(crate) fn is_row_state(key: &[u8]) -> bool {
    matches!(key.first(), Some(&FIELDS | &TOMBSTONES))
}

/// Where the row's part of a field or tombstone key ends (`key[1..end]` is
/// the row's id); `None` unless the key is one, whole.
pub(crate) fn row_end(key: &[u8]) -> Option<usize> {
    let family = *key.first()?;
    let table_end = 1 + component_len(&key[1..])?;
    let end = table_end + component_len(&key[table_end..])?;
    let rest = &key[end..];
    let whole = match family {
        TOMBSTONES => rest.is_empty(),
        FIELDS => component_len(rest) == Some(rest.len()),
        _ => false,
    };
    whole.then_some(end)
}

/// The length of the encoded component at the front of `bytes`.
fn component_len(bytes: &[u8]) -> Option<usize> {
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != ESCAPE {
            index += 1;
            continue;
        }
        match *bytes.get(index + 1)? {
            ESCAPED_ZERO => index += 2,
            TERMINATOR => return Some(index + 2),
            _ => return None,
        }
    }
    None
}

pub(crate) fn increments_prefix(table: &str, row: &str, field: &str) -> Vec<u8> {
    let mut key = row_prefix(INCREMENTS, table, row);
    push_component(&mut key, field);
    key
}

pub(crate) fn increment(table: &str, row: &str, field: &str, stamp: &Stamp) -> Vec<u8> {
    let mut key = increments_prefix(table, row, field);
    stamp.push_key(&mut key);
    key
}

pub(crate) fn change(hash: &ChangeHash) -> Vec<u8> {
    fixed(CHANGES, &[&hash.0])
}

/// The change a `changes` key names (`None` for any other key).
pub(crate) fn change_of(key: &[u8]) -> Option<ChangeHash> {
    match key {
        [CHANGES, hash @ ..] => Some(ChangeHash(hash.try_into().ok()?)),
        _ => None,
    }
}

pub(crate) fn chain_prefix(author: &Author, seq: u64) -> Vec<u8> {
    fixed(CHAIN, &[&author.0, &seq.to_be_bytes()])
}

/// A held checkpoint's key in the `CHECKPOINTS` index: seq (BE), hash.
pub(crate) fn checkpoint(seq: u64, hash: &ChangeHash) -> Vec<u8> {
    fixed(CHECKPOINTS, &[&seq.to_be_bytes(), &hash.0])
}

pub(crate) fn chain(author: &Author, seq: u64, hash: &ChangeHash) -> Vec<u8> {
    fixed(CHAIN, &[&author.0, &seq.to_be_bytes(), &hash.0])
}

/// Splits a chain key into (seq, hash).
pub(crate) fn parse_chain(key: &[u8]) -> Option<(Author, u64, ChangeHash)> {
    if key.len() != 1 + 32 + 8 + 32 || key[0] != CHAIN {
        return None;
    }
    let author = Author(key[1..33].try_into().ok()?);
    let seq = u64::from_be_bytes(key[33..41].try_into().ok()?);
    let hash = ChangeHash(key[41..73].try_into().ok()?);
    Some((author, seq, hash))
}

pub(crate) fn author(author: &Author) -> Vec<u8> {
    fixed(AUTHORS, &[&author.0])
}

pub(crate) fn history(
    table: &str,
    row: &str,
    lamport: u64,
    author: &Author,
    hash: &ChangeHash,
) -> Vec<u8> {
    let mut key = row_prefix(HISTORY, table, row);
    key.extend_from_slice(&lamport.to_be_bytes());
    key.extend_from_slice(&author.0);
    key.extend_from_slice(&hash.0);
    key
}

/// The last 32 bytes of a key, as a hash (history and heads keys end so).
pub(crate) fn trailing_hash(key: &[u8]) -> Option<ChangeHash> {
    let start = key.len().checked_sub(32)?;
    Some(ChangeHash(key[start..].try_into().ok()?))
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Components keep byte order and are prefix-free, even with 0x00 bytes.
    #[test]
    fn components_order_and_round_trip() {
        let names = ["", "\0", "\0\0", "a", "a\0", "a\0b", "ab", "b", "\u{ff}"];
        let mut encoded: Vec<Vec<u8>> = names
            .iter()
            .map(|name| {
                let mut key = Vec::new();
                push_component(&mut key, name);
                key
            })
            .collect();
        for (name, key) in names.iter().zip(&encoded) {
            let (decoded, rest) = take_component(key).expect("decodes");
            assert_eq!(&decoded, name);
            assert!(rest.is_empty());
        }
        let sorted_names = {
            let mut sorted = names.to_vec();
            sorted.sort();
            sorted
        };
        encoded.sort();
        let decoded: Vec<String> = encoded
            .iter()
            .map(|key| take_component(key).expect("decodes").0)
            .collect();
        assert_eq!(decoded, sorted_names);
        let mut row_a = row_prefix(FIELDS, "t", "a");
        let row_ab = row_prefix(FIELDS, "t", "ab");
        assert!(!row_ab.starts_with(&row_a));
        row_a.truncate(0);
    }

    /// A row's id is what its field and tombstone keys share, and
    /// `row_end` finds it in both; it refuses partial keys.
    #[test]
    fn row_ids_of_field_and_tombstone_keys() {
        let id = row_id("t\0", "r");
        let (field_key, end) = field_and_row_end("t\0", "r", "f\0g");
        assert_eq!(field_key, field("t\0", "r", "f\0g"));
        assert_eq!(&field_key[1..end], id.as_slice());
        assert_eq!(row_end(&field_key), Some(end));
        let tombstone_key = tombstone_of_row(&id);
        assert_eq!(tombstone_key, row_prefix(TOMBSTONES, "t\0", "r"));
        assert_eq!(row_end(&tombstone_key), Some(tombstone_key.len()));
        assert!(field_key.starts_with(&fields_of_row(&id)));
        assert_eq!(row_end(&field_key[..field_key.len() - 1]), None);
        assert_eq!(row_end(&row_prefix(FIELDS, "t", "r")), None);
        let mut longer = tombstone_key.clone();
        longer.push(0);
        assert_eq!(row_end(&longer), None);
        assert_eq!(
            row_end(&increment(
                "t",
                "r",
                "f",
                &Stamp {
                    lamport: 1,
                    author: crate::change::Author([0; 32]),
                    op_index: 0,
                }
            )),
            None
        );
        assert!(is_row_state(&field_key) && is_row_state(&tombstone_key));
        assert!(!is_row_state(&row_prefix(INCREMENTS, "t", "r")));
    }

    /// Fixed bytes of a field key (a FORMAT.md test vector).
    #[test]
    fn field_key_vector() {
        assert_eq!(
            hex::encode(field("t", "r\0w", "f")),
            "027400017200ff7700016600 01".replace(' ', "")
        );
    }
}

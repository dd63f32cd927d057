//! Text and JSON renderings of engine values.

use std::collections::HashSet;

use peers_engine::{
    ApplyReport, ChangeHash, HistoryEntry, Op, OpPart, Refusal, Row, Value, VersionVector,
};
use serde_json::{Value as Json, json};

pub(crate) fn value_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(flag) => json!(flag),
        Value::Int(int) => json!(int),
        Value::Uint(uint) => json!(uint),
        Value::F64(float) => serde_json::Number::from_f64(*float)
            .map_or_else(|| json!(float.to_string()), Json::Number),
        Value::Str(text) => json!(text),
        Value::Bytes(bytes) => json!({ "bytes": hex::encode(bytes) }),
        Value::Timestamp(ms) => json!({ "timestamp": ms }),
        Value::Counter(count) => json!({ "counter": count }),
    }
}

pub(crate) fn row_json(row: &Row) -> Json {
    Json::Object(
        row.iter()
            .map(|(field, value)| (field.clone(), value_json(value)))
            .collect(),
    )
}

pub(crate) fn row_text(row: &Row) -> String {
    row.iter()
        .map(|(field, value)| format!("{field}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An op as JSON: `{"op": kind, ...its parts}` (the engine's
/// [`Op::parts`], so every op has a form).
pub(crate) fn op_json(op: &Op) -> Json {
    let mut object = serde_json::Map::new();
    object.insert("op".to_owned(), json!(op.kind()));
    for part in op.parts() {
        let (name, value) = match part {
            OpPart::Name(name, text) => (name, json!(text)),
            OpPart::Value(name, value) => (name, value_json(value)),
            OpPart::Int(name, number) => (name, json!(number)),
            OpPart::Uint(name, number) => (name, json!(number)),
            OpPart::Key(name, key) => (name, json!(key.to_hex())),
            OpPart::Role(name, role) => (name, json!(role.to_string())),
            OpPart::Bytes(name, bytes) => (name, json!(hex::encode(bytes))),
            OpPart::Frontier(name, entries) => (
                name,
                entries
                    .iter()
                    .map(|entry| {
                        json!({ "author": entry.author.to_hex(), "seq": entry.seq,
                                "hash": entry.hash.to_hex() })
                    })
                    .collect(),
            ),
        };
        object.insert(name.to_owned(), value);
    }
    Json::Object(object)
}

pub(crate) fn history_json(entry: &HistoryEntry) -> Json {
    json!({
        "hash": entry.hash.to_hex(),
        "author": entry.author.to_hex(),
        "seq": entry.seq,
        "lamport": entry.lamport,
        "wall_ms": entry.wall_ms,
        "valid": entry.valid,
        "ops": entry.ops.iter().map(op_json).collect::<Vec<_>>(),
    })
}

pub(crate) fn version_vector_json(vector: &VersionVector) -> Json {
    let authors: serde_json::Map<String, Json> = vector
        .iter()
        .map(|(author, head)| {
            (
                author.to_hex(),
                json!({ "seq": head.seq, "hash": head.hash.to_hex() }),
            )
        })
        .collect();
    json!({ "authors": authors })
}

pub(crate) fn version_vector_from_json(text: &str) -> anyhow::Result<VersionVector> {
    use anyhow::Context;
    use peers_engine::{Author, ChangeHash, Head};
    let json: Json = serde_json::from_str(text).context("version vector is not JSON")?;
    let authors = json
        .get("authors")
        .and_then(Json::as_object)
        .context("version vector lacks an \"authors\" object")?;
    let mut vector = VersionVector::new();
    for (author, head) in authors {
        let author = Author::from_hex(author)
            .with_context(|| format!("author {author:?} is not 64 hex digits"))?;
        let seq = head
            .get("seq")
            .and_then(Json::as_u64)
            .context("head lacks a numeric \"seq\"")?;
        let hash = head
            .get("hash")
            .and_then(Json::as_str)
            .context("head lacks a \"hash\"")?;
        let hash = ChangeHash::from_hex(hash).context("head hash is not 64 hex digits")?;
        vector.insert(author, Head { seq, hash });
    }
    Ok(vector)
}

/// What `peers import` did, counted as it goes: a file of a million changes
/// keeps counts and the changes still pending, not a million hashes.
#[derive(Default)]
pub(crate) struct ImportTally {
    pub(crate) accepted: u64,
    pub(crate) inert: u64,
    pub(crate) duplicates: u64,
    /// Pending after the last batch: a later batch may release them.
    pub(crate) pending: HashSet<ChangeHash>,
    pub(crate) refused: Vec<(Option<ChangeHash>, Refusal)>,
}

impl ImportTally {
    /// Adds one batch's report.
    pub(crate) fn add(&mut self, part: ApplyReport) {
        self.accepted += part.accepted.len() as u64;
        self.inert += part.inert.len() as u64;
        self.duplicates += part.duplicates.len() as u64;
        for hash in &part.accepted {
            self.pending.remove(hash);
        }
        self.pending.extend(part.pending);
        self.refused.extend(part.refused);
    }

    pub(crate) fn json(&self) -> Json {
        json!({
            "accepted": self.accepted,
            "inert": self.inert,
            "duplicates": self.duplicates,
            "pending": self.pending.len(),
            "refused": self.refused.iter().map(|(hash, reason)| json!({
                "hash": hash.map(|hash| hash.to_hex()),
                "reason": reason.to_string(),
            })).collect::<Vec<_>>(),
        })
    }
}

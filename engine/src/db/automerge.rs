//! Automerge documents in and out of a table (docs/DECISIONS.md).

use super::Db;
use crate::change::ChangeHash;
use crate::error::{Error, Result};
use crate::value::Value;

impl Db {
    /// Exports a table into a new automerge document: one map per row under
    /// the root, keyed by row id (see docs/DECISIONS.md).
    pub fn export_automerge(&self, table: &str) -> Result<automerge::AutoCommit> {
        use automerge::transaction::Transactable;
        let mut document = automerge::AutoCommit::new();
        for item in self.scan(table) {
            let (row, fields) = item?;
            let object = document
                .put_object(automerge::ROOT, row.as_str(), automerge::ObjType::Map)
                .map_err(automerge_error)?;
            for (field, value) in fields {
                document
                    .put(&object, field.as_str(), automerge::ScalarValue::from(value))
                    .map_err(automerge_error)?;
            }
        }
        Ok(document)
    }

    /// Imports an automerge document laid out as [`Db::export_automerge`]
    /// writes it (a map per row under the root, keyed by row id), as one
    /// change setting every field. Returns its hash. A text object is read
    /// as its string; a root entry that is not a map, and a field holding a
    /// list or map, are [`Error::Automerge`] and nothing is written.
    pub fn import_automerge(
        &self,
        table: &str,
        document: &automerge::AutoCommit,
    ) -> Result<ChangeHash> {
        use automerge::{ObjType, ReadDoc, Value as Am};
        let unsupported = |what: String| Error::Automerge {
            message: format!("{what}: a Peers row is a map of scalars (or text) under the root"),
        };
        let mut tx = self.transaction();
        for row in document.keys(automerge::ROOT) {
            let Some((Am::Object(ObjType::Map), object)) = document
                .get(automerge::ROOT, row.as_str())
                .map_err(automerge_error)?
            else {
                return Err(unsupported(format!("{row:?} is not a map")));
            };
            for field in document.keys(&object) {
                let value = match document
                    .get(&object, field.as_str())
                    .map_err(automerge_error)?
                {
                    Some((Am::Scalar(scalar), _)) => {
                        Value::try_from(scalar.into_owned()).map_err(|_| {
                            unsupported(format!("{row}.{field} holds a value with no Peers type"))
                        })?
                    }
                    // Collaborative text (what automerge's JavaScript library
                    // makes of a string): its current text.
                    Some((Am::Object(ObjType::Text), text)) => {
                        Value::Str(document.text(&text).map_err(automerge_error)?)
                    }
                    Some((Am::Object(kind), _)) => {
                        return Err(unsupported(format!("{row}.{field} is a {kind}")));
                    }
                    None => continue,
                };
                tx.set(table, &row, &field, value);
            }
        }
        tx.commit()
    }
}

fn automerge_error(error: automerge::AutomergeError) -> Error {
    Error::Automerge {
        message: error.to_string(),
    }
}

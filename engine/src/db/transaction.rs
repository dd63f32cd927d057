//! [`Transaction`]: ops collected for one signed change.

use super::Db;
use crate::change::{ChangeHash, Op};
use crate::error::Result;
use crate::value::Value;

/// Ops collected for one change.
pub struct Transaction<'a> {
    pub(super) db: &'a Db,
    pub(super) ops: Vec<Op>,
}

impl Transaction<'_> {
    /// Sets a field.
    pub fn set(
        &mut self,
        table: &str,
        row: &str,
        field: &str,
        value: impl Into<Value>,
    ) -> &mut Self {
        self.ops.push(Op::Set {
            table: table.into(),
            row: row.into(),
            field: field.into(),
            value: value.into(),
        });
        self
    }
    /// Deletes a row.
    pub fn delete(&mut self, table: &str, row: &str) -> &mut Self {
        self.ops.push(Op::Delete {
            table: table.into(),
            row: row.into(),
        });
        self
    }
    /// Adds `delta` to a counter field.
    pub fn increment(&mut self, table: &str, row: &str, field: &str, delta: i64) -> &mut Self {
        self.ops.push(Op::Increment {
            table: table.into(),
            row: row.into(),
            field: field.into(),
            delta,
        });
        self
    }
    /// Ops collected so far.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    /// Signs the ops as one change, makes it durable and applies it.
    pub fn commit(self) -> Result<ChangeHash> {
        self.db.commit(self.ops)
    }
}

//! Field values: automerge's scalar model.
//!
//! `Value` mirrors `automerge::ScalarValue` one to one (except automerge's
//! `Unknown`, which has no meaning here and is refused on conversion), so a table
//! can be exported to an automerge document without loss.

use bincode::{Decode, Encode};

/// A field's value. The variants and their order are part of the change format
/// (docs/FORMAT.md, "Value"): never reorder them.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Value {
    /// No value (distinct from an absent field).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// An unsigned 64-bit integer.
    Uint(u64),
    /// A 64-bit float. Compared by bit pattern in merges, never by `==`.
    F64(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    /// A counter: `Increment` ops add to it (see docs/DESIGN.md "Merge").
    Counter(i64),
}

impl Value {
    /// The counter base this value provides, if it is a counter.
    pub(crate) fn counter_base(&self) -> Option<i64> {
        match self {
            Value::Counter(base) => Some(*base),
            _ => None,
        }
    }

    /// Parses a command-line value: a JSON scalar (`null`, `true`, `42`, `-1`,
    /// `1.5`, `"text"`), or else the text itself as a string.
    pub fn parse_cli(text: &str) -> Value {
        let trimmed = text.trim();
        if trimmed == "null" {
            return Value::Null;
        }
        if trimmed == "true" || trimmed == "false" {
            return Value::Bool(trimmed == "true");
        }
        if let Ok(int) = trimmed.parse::<i64>() {
            return Value::Int(int);
        }
        if let Ok(uint) = trimmed.parse::<u64>() {
            return Value::Uint(uint);
        }
        if let Ok(float) = trimmed.parse::<f64>()
            && trimmed.chars().any(|c| c.is_ascii_digit())
        {
            return Value::F64(float);
        }
        if trimmed.len() >= 2
            && trimmed.starts_with('"')
            && trimmed.ends_with('"')
            && let Ok(decoded) = serde_json_string(trimmed)
        {
            return Value::Str(decoded);
        }
        Value::Str(text.to_owned())
    }
}

/// Decodes a JSON string literal (quotes included) without a JSON dependency
/// in the engine: only the escapes JSON defines.
fn serde_json_string(literal: &str) -> Result<String, ()> {
    let inner = &literal[1..literal.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().ok_or(())? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16).map_err(|_| ())?;
                out.push(char::from_u32(code).ok_or(())?);
            }
            _ => return Err(()),
        }
    }
    Ok(out)
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => write!(f, "null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Uint(u) => write!(f, "{u}"),
            Value::F64(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "0x{}", hex::encode(b)),
            Value::Timestamp(t) => write!(f, "@{t}"),
            Value::Counter(c) => write!(f, "{c}"),
        }
    }
}

impl From<Value> for automerge::ScalarValue {
    fn from(value: Value) -> Self {
        use automerge::ScalarValue as S;
        match value {
            Value::Null => S::Null,
            Value::Bool(b) => S::Boolean(b),
            Value::Int(i) => S::Int(i),
            Value::Uint(u) => S::Uint(u),
            Value::F64(x) => S::F64(x),
            Value::Str(s) => S::Str(s.into()),
            Value::Bytes(b) => S::Bytes(b),
            Value::Timestamp(t) => S::Timestamp(t),
            Value::Counter(c) => S::Counter(c.into()),
        }
    }
}

/// An automerge scalar that has no Peers equivalent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("automerge scalar of unknown type code {type_code} has no Peers value")]
pub struct UnknownScalar {
    /// Automerge's type code for the unknown scalar.
    pub type_code: u8,
}

impl TryFrom<automerge::ScalarValue> for Value {
    type Error = UnknownScalar;

    fn try_from(value: automerge::ScalarValue) -> Result<Self, Self::Error> {
        use automerge::ScalarValue as S;
        Ok(match value {
            S::Null => Value::Null,
            S::Boolean(b) => Value::Bool(b),
            S::Int(i) => Value::Int(i),
            S::Uint(u) => Value::Uint(u),
            S::F64(x) => Value::F64(x),
            S::Str(s) => Value::Str(s.to_string()),
            S::Bytes(b) => Value::Bytes(b),
            S::Timestamp(t) => Value::Timestamp(t),
            S::Counter(c) => Value::Counter(i64::from(&c)),
            S::Unknown { type_code, .. } => return Err(UnknownScalar { type_code }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Peers value survives a round trip through automerge's scalar.
    #[test]
    fn automerge_round_trip() {
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Uint(u64::MAX),
            Value::F64(1.5),
            Value::Str("héllo".into()),
            Value::Bytes(vec![0, 255]),
            Value::Timestamp(1_700_000_000_000),
            Value::Counter(-3),
        ];
        for value in values {
            let scalar = automerge::ScalarValue::from(value.clone());
            assert_eq!(Value::try_from(scalar).expect("convertible"), value);
        }
    }

    /// An automerge `Unknown` scalar is refused, not guessed.
    #[test]
    fn unknown_scalar_refused() {
        let scalar = automerge::ScalarValue::Unknown {
            type_code: 42,
            bytes: vec![1],
        };
        assert_eq!(
            Value::try_from(scalar),
            Err(UnknownScalar { type_code: 42 })
        );
    }

    /// CLI values are JSON scalars, else strings.
    #[test]
    fn parse_cli_values() {
        assert_eq!(Value::parse_cli("null"), Value::Null);
        assert_eq!(Value::parse_cli("true"), Value::Bool(true));
        assert_eq!(Value::parse_cli("-12"), Value::Int(-12));
        assert_eq!(
            Value::parse_cli("18446744073709551615"),
            Value::Uint(u64::MAX)
        );
        assert_eq!(Value::parse_cli("2.5"), Value::F64(2.5));
        assert_eq!(Value::parse_cli("\"a\\nb\""), Value::Str("a\nb".into()));
        assert_eq!(
            Value::parse_cli("hello world"),
            Value::Str("hello world".into())
        );
        assert_eq!(Value::parse_cli("inf"), Value::Str("inf".into()));
    }
}

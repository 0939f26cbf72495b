//! A TOML document as a tree that keeps the byte span of every key and
//! value, so that validation after parsing can still say where a bad value
//! is.
//!
//! The `toml` crate reports spans through serde by offering a struct with
//! three private field names (the protocol behind `toml::Spanned`). A
//! [`Node`] asks for that struct for every value and every key and accepts
//! both answers: the spanned map when the parser knows a span, the plain
//! value when it does not (implicit tables, arrays of tables). So a missing
//! span costs precision of the report, never a failure.

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Struct name and fields by which `toml` hands out spans
/// (`serde_spanned` 0.6). Checked by the tests below.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
static SPANNED_FIELDS: [&str; 3] = [SPANNED_START, SPANNED_END, SPANNED_VALUE];
/// Key of the one-entry map by which `toml` hands out a date-time.
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// Byte range in the source text.
pub(crate) type Span = Range<usize>;

/// A value and where it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub span: Option<Span>,
    pub kind: Kind,
}

/// A TOML value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

/// One `key = value` of a table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_span: Option<Span>,
    pub value: Node,
}

impl Kind {
    /// "a string", "an integer", ...: for "expected X, found Y".
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Datetime(_) => "a date-time",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }
}

impl Node {
    fn bare(kind: Kind) -> Node {
        Node { span: None, kind }
    }

    /// Parses a whole document.
    pub(crate) fn parse(text: &str) -> Result<Node, toml::de::Error> {
        toml::from_str(text)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, &SPANNED_FIELDS, NodeVisitor)
    }
}

/// Deserialises the value inside a spanned wrapper.
struct AnySeed;

impl<'de> DeserializeSeed<'de> for AnySeed {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::bare(Kind::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::bare(Kind::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        // TOML integers are i64; larger ones never come from the parser.
        Ok(Node::bare(Kind::Int(i64::try_from(v).unwrap_or(i64::MAX))))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::bare(Kind::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::bare(Kind::Str(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::bare(Kind::Str(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Node::bare(Kind::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key::<Key>()? else {
            return Ok(Node::bare(Kind::Table(Vec::new())));
        };
        if first.name == SPANNED_START {
            let start: usize = map.next_value()?;
            expect_key(&mut map, SPANNED_END)?;
            let end: usize = map.next_value()?;
            expect_key(&mut map, SPANNED_VALUE)?;
            let inner = map.next_value_seed(AnySeed)?;
            return Ok(Node {
                span: Some(start..end.max(start)),
                kind: inner.kind,
            });
        }
        if first.name == DATETIME_FIELD {
            let s: String = map.next_value()?;
            return Ok(Node::bare(Kind::Datetime(s)));
        }
        let mut entries = Vec::new();
        let mut key = first;
        loop {
            let value: Node = map.next_value()?;
            entries.push(Entry {
                key: key.name,
                key_span: key.span,
                value,
            });
            match map.next_key::<Key>()? {
                Some(k) => key = k,
                None => break,
            }
        }
        Ok(Node::bare(Kind::Table(entries)))
    }
}

fn expect_key<'de, A: MapAccess<'de>>(map: &mut A, want: &str) -> Result<(), A::Error> {
    match map.next_key::<Key>()? {
        Some(k) if k.name == want => Ok(()),
        _ => Err(de::Error::custom("malformed spanned value")),
    }
}

/// A table key and, when known, its span.
struct Key {
    name: String,
    span: Option<Span>,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, &SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(Key {
            name: v.to_owned(),
            span: None,
        })
    }
    fn visit_string<E>(self, v: String) -> Result<Key, E> {
        Ok(Key {
            name: v,
            span: None,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let (mut start, mut end, mut name) = (None, None, None);
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => name = Some(map.next_value::<String>()?),
                _ => return Err(de::Error::custom("malformed spanned key")),
            }
        }
        let name = name.ok_or_else(|| de::Error::custom("spanned key without a value"))?;
        let span = match (start, end) {
            (Some(s), Some(e)) => Some(s..e.max(s)),
            _ => None,
        };
        Ok(Key { name, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: &Node) -> &[Entry] {
        match &n.kind {
            Kind::Table(t) => t,
            other => panic!("not a table: {other:?}"),
        }
    }

    #[test]
    fn spans_of_keys_and_values() {
        let text = "a = 1\n[t]\nb = \"x\"\nc = [true, 2.5]\n";
        let root = Node::parse(text).expect("valid");
        let top = table(&root);
        assert_eq!(top[0].key, "a");
        assert_eq!(top[0].key_span, Some(0..1));
        assert_eq!(top[0].value.kind, Kind::Int(1));
        assert_eq!(top[0].value.span, Some(4..5));
        let t = table(&top[1].value);
        assert_eq!(t[0].key, "b");
        let b = t[0].key_span.clone().expect("key span");
        assert_eq!(&text[b], "b");
        let v = t[0].value.span.clone().expect("value span");
        assert_eq!(&text[v], "\"x\"");
        match &t[1].value.kind {
            Kind::Array(items) => {
                assert_eq!(items[0].kind, Kind::Bool(true));
                assert_eq!(items[1].kind, Kind::Float(2.5));
                let s = items[1].span.clone().expect("span");
                assert_eq!(&text[s], "2.5");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn datetimes_arrays_of_tables_and_dotted_keys() {
        let text = "d = 1979-05-27\n[[f]]\nx = 1\n[[f]]\nx = 2\n[a.b]\nc = 3\n";
        let root = Node::parse(text).expect("valid");
        let top = table(&root);
        assert!(matches!(&top[0].value.kind, Kind::Datetime(s) if s == "1979-05-27"));
        assert_eq!(top[0].value.kind.type_name(), "a date-time");
        match &top[1].value.kind {
            Kind::Array(items) => {
                assert_eq!(items.len(), 2);
                let x = &table(&items[1])[0];
                assert_eq!(x.value.kind, Kind::Int(2));
                assert!(x.value.span.is_some());
            }
            other => panic!("{other:?}"),
        }
        let a = table(&top[2].value);
        let c = &table(&a[0].value)[0];
        assert_eq!(c.key, "c");
        assert_eq!(c.value.kind, Kind::Int(3));
    }

    #[test]
    fn syntax_errors_have_spans() {
        let e = Node::parse("a = 1\na = 2\n").expect_err("duplicate");
        assert!(e.span().is_some());
        let e = Node::parse("a = \n").expect_err("missing value");
        assert!(e.span().is_some());
    }
}

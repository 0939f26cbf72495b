//! Typed access to the spanned tree: each getter either returns the typed
//! value or an error that names the key path and points at the value.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::error::{ConfigError, Source};
use crate::tree::{Entry, Kind, Node, Span};

pub(crate) type Result<T> = std::result::Result<T, ConfigError>;

/// One value with its key path.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a> {
    pub src: Source<'a>,
    pub path: String,
    pub node: &'a Node,
    /// The value's span, or the nearest enclosing one when the parser did
    /// not record it.
    pub span: Option<Span>,
}

/// A table whose keys were checked against the allowed set.
#[derive(Debug, Clone)]
pub(crate) struct Table<'a> {
    src: Source<'a>,
    path: String,
    span: Option<Span>,
    entries: &'a [Entry],
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Field<'a> {
    /// The document root.
    pub(crate) fn root(src: Source<'a>, node: &'a Node) -> Field<'a> {
        Field {
            src,
            path: String::new(),
            node,
            span: node.span.clone(),
        }
    }

    /// An error about this value.
    pub(crate) fn err(&self, message: impl Into<String>) -> ConfigError {
        self.src.error(self.span.as_ref(), &self.path, message)
    }

    fn wrong_type(&self, expected: &str) -> ConfigError {
        self.err(format!(
            "expected {expected}, found {}",
            self.node.kind.type_name()
        ))
    }

    pub(crate) fn str(&self) -> Result<&'a str> {
        match &self.node.kind {
            Kind::Str(s) => Ok(s),
            _ => Err(self.wrong_type("a string")),
        }
    }

    pub(crate) fn bool(&self) -> Result<bool> {
        match self.node.kind {
            Kind::Bool(b) => Ok(b),
            _ => Err(self.wrong_type("a boolean (true or false)")),
        }
    }

    pub(crate) fn int(&self) -> Result<i64> {
        match self.node.kind {
            Kind::Int(i) => Ok(i),
            _ => Err(self.wrong_type("an integer")),
        }
    }

    /// An integer in `range`, converted to `T`.
    pub(crate) fn int_in<T: TryFrom<i64>>(&self, range: RangeInclusive<i64>) -> Result<T> {
        let v = self.int()?;
        if !range.contains(&v) {
            return Err(self.err(format!(
                "{v} is out of range (allowed {}..={})",
                range.start(),
                range.end()
            )));
        }
        T::try_from(v).map_err(|_| self.err(format!("{v} does not fit")))
    }

    /// A string parsed with `FromStr`; the parse error is the message.
    pub(crate) fn parse<T>(&self) -> Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let s = self.str()?;
        s.parse().map_err(|e: T::Err| self.err(e.to_string()))
    }

    /// The elements of an array, with paths `key[i]`.
    pub(crate) fn array(&self, what: &str) -> Result<Vec<Field<'a>>> {
        match &self.node.kind {
            Kind::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, n)| Field {
                    src: self.src,
                    path: format!("{}[{i}]", self.path),
                    node: n,
                    span: n.span.clone().or_else(|| self.span.clone()),
                })
                .collect()),
            _ => Err(self.wrong_type(&format!("an array of {what}"))),
        }
    }

    /// A table that may only contain `allowed` keys.
    pub(crate) fn table(&self, allowed: &[&str]) -> Result<Table<'a>> {
        let Kind::Table(entries) = &self.node.kind else {
            return Err(self.wrong_type("a table"));
        };
        let t = Table {
            src: self.src,
            path: self.path.clone(),
            span: self.span.clone(),
            entries,
        };
        if let Some(e) = entries.iter().find(|e| !allowed.contains(&e.key.as_str())) {
            let span = e
                .key_span
                .clone()
                .or_else(|| e.value.span.clone())
                .or_else(|| self.span.clone());
            let list = if allowed.is_empty() {
                "this table takes no keys".to_owned()
            } else {
                format!("allowed: {}", allowed.join(", "))
            };
            return Err(self.src.error(
                span.as_ref(),
                &join(&self.path, &e.key),
                format!("unknown key `{}` ({list})", e.key),
            ));
        }
        Ok(t)
    }
}

impl<'a> Table<'a> {
    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<Field<'a>> {
        self.entries.iter().find(|e| e.key == key).map(|e| Field {
            src: self.src,
            path: join(&self.path, key),
            node: &e.value,
            span: e
                .value
                .span
                .clone()
                .or_else(|| e.key_span.clone())
                .or_else(|| self.span.clone()),
        })
    }

    /// The value of a required `key`; `what` says what is expected.
    pub(crate) fn required(&self, key: &str, what: &str) -> Result<Field<'a>> {
        self.get(key)
            .ok_or_else(|| self.error(key, format!("missing required key ({what})")))
    }

    /// An error about `key` of this table, pointing at the table.
    pub(crate) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.src
            .error(self.span.as_ref(), &join(&self.path, key), message)
    }

    /// Applies `f` to the value of `key` when present.
    pub(crate) fn opt<T>(
        &self,
        key: &str,
        f: impl FnOnce(&Field<'a>) -> Result<T>,
    ) -> Result<Option<T>> {
        self.get(key).map(|v| f(&v)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn with_root<R>(text: &str, f: impl FnOnce(Field<'_>) -> R) -> R {
        let node = Node::parse(text).expect("valid toml");
        let src = Source {
            text,
            origin: Path::new("t.toml"),
        };
        f(Field::root(src, &node))
    }

    #[test]
    fn typed_getters() {
        with_root("a = 5\nb = \"x\"\nc = [\"p\", \"q\"]\n", |root| {
            let t = root.table(&["a", "b", "c"]).expect("table");
            let a: u16 = t
                .required("a", "n")
                .and_then(|f| f.int_in(1..=9))
                .expect("a");
            assert_eq!(a, 5);
            let e = t
                .required("a", "n")
                .and_then(|f| f.int_in::<u16>(6..=9))
                .expect_err("range");
            assert_eq!(
                e.to_string(),
                "t.toml:1:5: a: 5 is out of range (allowed 6..=9)"
            );
            let e = t
                .required("b", "n")
                .and_then(|f| f.int())
                .expect_err("type");
            assert_eq!(
                e.to_string(),
                "t.toml:2:5: b: expected an integer, found a string"
            );
            let c = t.required("c", "x").expect("c");
            let items = c.array("strings").expect("array");
            assert_eq!(items[1].str().expect("str"), "q");
            assert_eq!(items[1].path, "c[1]");
            let e = t.required("d", "a number").expect_err("missing");
            assert!(e.to_string().contains("d: missing required key (a number)"));
        });
    }

    #[test]
    fn unknown_keys() {
        with_root("a = 1\nzz = 2\n", |root| {
            let e = root.table(&["a", "b"]).expect_err("unknown");
            assert_eq!(
                e.to_string(),
                "t.toml:2:1: zz: unknown key `zz` (allowed: a, b)"
            );
        });
    }
}

//! Config errors: every problem in a file is reported as
//! `FILE:LINE:COLUMN: KEY.PATH: what is wrong (what is allowed)`.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    ///
    /// The cause is part of the message and deliberately not a
    /// [`source`](std::error::Error::source): printed as a chain (anyhow's
    /// `{:#}`) it would repeat (`Is a directory (os error 21): Is a
    /// directory (os error 21)`).
    #[error("{}: cannot read config file: {cause}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error (its kind tells `NotFound` from the rest).
        cause: io::Error,
    },
    /// The file was read but is not a valid config: a syntax error, an
    /// unknown key, a wrong type, a bad value or a missing key.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl ConfigError {
    /// The diagnostic of an [`Invalid`](ConfigError::Invalid) error.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            ConfigError::Invalid(d) => Some(d),
            ConfigError::Read { .. } => None,
        }
    }

    /// 1-based line of the problem, if it is in the file.
    pub fn line(&self) -> Option<usize> {
        self.diagnostic().map(|d| d.line)
    }
}

/// One problem at one place of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (as given to [`load`](crate::load) or [`parse`](crate::parse)).
    pub origin: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted key path (`interface.mtu`, `forward[1].proto`); empty for
    /// syntax errors that belong to no key.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            self.origin.display(),
            self.line,
            self.column
        )?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Where errors of one file are reported: the file name and its text (to
/// turn byte offsets into line and column).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub text: &'a str,
    pub origin: &'a Path,
}

impl Source<'_> {
    /// An error at `span` (start of the file when unknown).
    pub(crate) fn error(
        &self,
        span: Option<&Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_col(self.text, span.map_or(0, |s| s.start));
        ConfigError::Invalid(Box::new(Diagnostic {
            origin: self.origin.to_path_buf(),
            line,
            column,
            key: cut(key, MAX_ECHO_KEY),
            message: cut(&message.into(), MAX_ECHO_MESSAGE),
        }))
    }

    /// The dotted key whose value starts before `offset`, read off the
    /// text (for errors the TOML parser reports without a key, such as
    /// an integer out of range): the `key =` on that line, under the last
    /// table header above it. `None` when the line is no `key = value`.
    fn key_at(&self, offset: usize) -> Option<String> {
        let mut off = offset.min(self.text.len());
        while !self.text.is_char_boundary(off) {
            off -= 1;
        }
        let before = &self.text[..off];
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        let (key, _) = before[start..].split_once('=')?;
        let key = key.trim().trim_matches('"');
        let bare = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if key.is_empty() || !key.chars().all(bare) {
            return None;
        }
        let table = before[..start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
        Some(match table {
            Some(t) if !t.is_empty() => format!("{t}.{key}"),
            _ => key.to_owned(),
        })
    }

    /// A TOML syntax error (or a deserialiser error) from the `toml` crate.
    pub(crate) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        // Multi-line messages (e.g. "invalid table header\nduplicate key")
        // become one line so that the report stays `FILE:LINE:COL: ...`.
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let span = e.span();
        let key = span
            .as_ref()
            .and_then(|s| self.key_at(s.start))
            .unwrap_or_default();
        let message = if message.contains("number too large") {
            format!("{message} (TOML integers are 64-bit signed: at most 9223372036854775807)")
        } else {
            message
        };
        self.error(span.as_ref(), &key, message)
    }
}

/// Longest key echoed back in an error: a key is a word or a dotted path,
/// anything longer is cut (a 600 KB key is not repeated in full).
pub const MAX_ECHO_KEY: usize = 80;
/// Longest message: the value echoed in it is cut to fit.
pub const MAX_ECHO_MESSAGE: usize = 400;

/// `s` cut to at most `max` characters, saying how much was left out.
fn cut(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    let kept: String = s.chars().take(max).collect();
    format!("{kept}… ({} more characters)", n - max)
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
/// Offsets past the end or inside a character are clamped, never panic.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "ab\ncdé\nf";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 1), (1, 2));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 5), (2, 3));
        // Inside the two-byte é: clamped back to its start.
        assert_eq!(line_col(t, 6), (2, 3));
        assert_eq!(line_col(t, 7), (2, 4));
        assert_eq!(line_col(t, 8), (3, 1));
        assert_eq!(line_col(t, 1000), (3, 2));
        assert_eq!(line_col("", 5), (1, 1));
    }

    #[test]
    fn display_format() {
        let d = Diagnostic {
            origin: PathBuf::from("/etc/tbbridge/tb0.toml"),
            line: 7,
            column: 7,
            key: "interface.mtu".into(),
            message: "70000 is out of range (allowed 1280..=65535)".into(),
        };
        assert_eq!(
            d.to_string(),
            "/etc/tbbridge/tb0.toml:7:7: interface.mtu: 70000 is out of range (allowed 1280..=65535)"
        );
        let d = Diagnostic {
            key: String::new(),
            ..d
        };
        assert!(d
            .to_string()
            .starts_with("/etc/tbbridge/tb0.toml:7:7: 70000"));
    }
}

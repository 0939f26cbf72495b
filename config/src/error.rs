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
    #[error("{}: cannot read config file: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
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
            key: key.to_owned(),
            message: message.into(),
        }))
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
        self.error(e.span().as_ref(), "", message)
    }
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

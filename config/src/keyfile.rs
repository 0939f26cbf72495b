//! `[session] psk_file`: the pre-shared key that authenticates the peer
//! (see `tbbridge_transport::session::auth` and `docs/auth.md`).
//!
//! The file holds the key as text (`tbbridge genkey` writes 64 hex
//! digits); surrounding whitespace is not part of it. It must be a regular
//! file that only its owner can read or write (mode 0600 or 0400): a key
//! that others can read is no secret, so `up` and `check` refuse it,
//! naming the key and line of the config and the mode found. The key is
//! never printed, logged or shown in `status`.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use tbbridge_transport::session::auth::Psk;

use crate::error::{ConfigError, Diagnostic};
use crate::reader::{Field, Result};

/// Largest key file read: a key is tens of bytes.
pub const MAX_KEY_FILE: u64 = 4096;

/// Where the key is, and where the config said so (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// The key file.
    pub path: PathBuf,
    /// The `psk_file` entry of the config, for errors.
    at: Diagnostic,
}

impl KeyFile {
    pub(crate) fn parse(f: &Field<'_>) -> Result<KeyFile> {
        let s = f.str()?;
        if !s.starts_with('/') {
            return Err(f.err(format!("{s:?} is not an absolute path")));
        }
        let at = match f.err("") {
            ConfigError::Invalid(d) => *d,
            other => return Err(other),
        };
        Ok(KeyFile {
            path: PathBuf::from(s),
            at,
        })
    }

    fn fail(&self, message: String) -> ConfigError {
        ConfigError::Invalid(Box::new(Diagnostic {
            message: format!("{}: {message}", self.path.display()),
            ..self.at.clone()
        }))
    }

    /// Reads and checks the key.
    pub fn load(&self) -> std::result::Result<Psk, ConfigError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(self.fail("not a regular file".into()));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(self.fail(format!(
                "mode {mode:04o} lets group or others read or write the key: chmod 600 {}",
                self.path.display()
            )));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| self.fail(e.to_string()))?;
        let mut key = Vec::new();
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut key)
            .map_err(|e| self.fail(e.to_string()))?;
        if key.len() as u64 > MAX_KEY_FILE {
            return Err(self.fail(format!("larger than {MAX_KEY_FILE} bytes: not a key")));
        }
        Psk::new(&key).map_err(|e| self.fail(format!("{e} (tbbridge genkey makes one)")))
    }
}

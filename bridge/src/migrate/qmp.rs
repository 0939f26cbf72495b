//! A small synchronous QMP client (QEMU's JSON monitor protocol over a Unix
//! socket): the greeting, `qmp_capabilities`, then one command at a time;
//! asynchronous events in between are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be used.
    #[error("QMP {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// QEMU sent something that is not QMP.
    #[error("QMP {path}: unexpected answer {answer}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What it sent.
        answer: String,
    },
    /// QEMU refused the command.
    #[error("QMP {path}: {command}: {class}: {desc}")]
    Command {
        /// The socket.
        path: PathBuf,
        /// The command.
        command: String,
        /// QEMU's error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// A connected QMP monitor.
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Longest line a monitor may send (a `query-migrate` is ~2 KiB).
const MAX_LINE: u64 = 1 << 20;

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation.
    pub fn connect(path: &Path) -> Result<Self, QmpError> {
        let io = |source| QmpError::Io {
            path: path.to_owned(),
            source,
        };
        let s = UnixStream::connect(path).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io)?;
        let writer = s.try_clone().map_err(io)?;
        let mut q = Qmp {
            path: path.to_owned(),
            reader: BufReader::new(s),
            writer,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(q.protocol(&greeting));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn protocol(&self, v: &Value) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            answer: v.to_string(),
        }
    }

    fn read(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = std::io::Read::take(&mut self.reader, MAX_LINE)
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Io {
                path: self.path.clone(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol {
            path: self.path.clone(),
            answer: line.trim().to_owned(),
        })
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let req = if arguments.as_object().is_some_and(|o| o.is_empty()) {
            json!({ "execute": command })
        } else {
            json!({ "execute": command, "arguments": arguments })
        };
        let mut text = req.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                return Err(QmpError::Command {
                    path: self.path.clone(),
                    command: command.to_owned(),
                    class: s("class"),
                    desc: s("desc"),
                });
            }
            return Err(self.protocol(&v));
        }
    }

    /// `query-status`'s `status` (`running`, `paused`, `inmigrate`...).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let v = self.execute("query-status", json!({}))?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }
}

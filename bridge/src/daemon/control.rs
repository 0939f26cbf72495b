//! The control socket: one JSON request per line, one JSON answer per line.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"down"}`. Only root (the socket is
//! mode 0600 in a root-owned directory) can talk to it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;

/// What the daemon is asked to do.
#[derive(Debug)]
pub enum Request {
    /// Answer with the status document.
    Status(tokio::sync::oneshot::Sender<Value>),
    /// Shut down cleanly.
    Down,
}

/// Serves the control socket, forwarding requests to the daemon loop.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Request>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = tokio::io::BufReader::new(r).take(MAX_REQUEST as u64);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let req: Value = serde_json::from_str(line.trim()).unwrap_or(Value::Null);
            let answer = match req.get("cmd").and_then(Value::as_str) {
                Some("status") => {
                    let (otx, orx) = tokio::sync::oneshot::channel();
                    if tx.send(Request::Status(otx)).await.is_err() {
                        return;
                    }
                    orx.await.unwrap_or(Value::Null)
                }
                Some("down") => {
                    let _ = tx.send(Request::Down).await;
                    serde_json::json!({"ok": true})
                }
                _ => {
                    serde_json::json!({"error": "unknown request; use {\"cmd\":\"status\"} or {\"cmd\":\"down\"}"})
                }
            };
            let mut out = answer.to_string();
            out.push('\n');
            let _ = w.write_all(out.as_bytes()).await;
        });
    }
}

use tokio::io::AsyncReadExt as _;

/// Sends one request to a running daemon and returns its answer.
pub fn request(socket: &Path, cmd: &str, timeout: Duration) -> anyhow::Result<Value> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("no bridge answers at {}", socket.display()))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    writeln!(s, "{}", serde_json::json!({ "cmd": cmd }))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .context("reading the bridge's answer")?;
    serde_json::from_str(line.trim()).context("the bridge's answer is not JSON")
}

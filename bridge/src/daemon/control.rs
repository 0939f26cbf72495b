//! The control socket: one JSON request per line, one JSON answer per line.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"down"}`, and
//! `{"cmd":"pipe","service":NAME}`, after which the connection carries a
//! pipe (see `crate::pipe`). Only root (the socket is mode 0600 in a
//! root-owned directory) can talk to it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;
/// A client must send its request line within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the daemon is asked to do.
#[derive(Debug)]
pub enum Request {
    /// Answer with the status document.
    Status(tokio::sync::oneshot::Sender<Value>),
    /// Shut down cleanly.
    Down,
    /// Carry a pipe on this connection.
    Pipe {
        /// The pipe's name.
        service: String,
        /// The client's connection (its request line consumed).
        stream: tokio::net::UnixStream,
    },
}

/// Reads one request line byte by byte, so that nothing after it is taken
/// from the socket (a pipe's data follows the line on the same connection).
async fn read_line(s: &tokio::net::UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        s.readable().await?;
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_REQUEST => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "request line too long",
                ))
            }
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Serves the control socket, forwarding requests to the daemon loop.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Request>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(Ok(line)) = tokio::time::timeout(REQUEST_TIMEOUT, read_line(&stream)).await
            else {
                return;
            };
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
                Some("pipe") => match req.get("service").and_then(Value::as_str) {
                    Some(service) => {
                        let service = service.to_owned();
                        let _ = tx.send(Request::Pipe { service, stream }).await;
                        return;
                    }
                    None => serde_json::json!({"error": "pipe needs a service"}),
                },
                _ => {
                    serde_json::json!({"error": "unknown request; use {\"cmd\":\"status\"} or {\"cmd\":\"down\"}"})
                }
            };
            let mut out = answer.to_string();
            out.push('\n');
            let _ = stream.write_all(out.as_bytes()).await;
        });
    }
}

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

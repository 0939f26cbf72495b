//! Counters of one `[[rpc]]` service, shared by its tasks and `status`
//! (and, later, the metrics exporter: every field is a plain counter).

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tbbridge_rpc::ErrorCode;

/// Error answers by code, in this order (the last is "any other code").
const CODES: [ErrorCode; 9] = [
    ErrorCode::TooLarge,
    ErrorCode::NoServer,
    ErrorCode::ServerGone,
    ErrorCode::NoService,
    ErrorCode::Link,
    ErrorCode::Busy,
    ErrorCode::BadMessage,
    ErrorCode::ServerExists,
    ErrorCode::Other(0),
];

/// The label of an error code in `status` and metrics.
pub fn code_name(c: ErrorCode) -> &'static str {
    match c {
        ErrorCode::TooLarge => "too_large",
        ErrorCode::NoServer => "no_server",
        ErrorCode::ServerGone => "server_gone",
        ErrorCode::NoService => "no_service",
        ErrorCode::Link => "link",
        ErrorCode::Busy => "busy",
        ErrorCode::BadMessage => "bad_message",
        ErrorCode::ServerExists => "server_exists",
        ErrorCode::Other(_) => "application",
    }
}

fn code_index(c: ErrorCode) -> usize {
    CODES
        .iter()
        .position(|x| code_name(*x) == code_name(c))
        .unwrap_or(CODES.len() - 1)
}

/// Problems are logged at most this often per service (the rest are
/// counted; the next line says how many were not shown).
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Live counters of one RPC service.
#[derive(Debug, Default)]
pub struct RpcStats {
    label: String,
    /// Client connections taken on, and of those open now.
    pub clients: AtomicU64,
    /// Client connections open now.
    pub clients_active: AtomicU64,
    /// Client connections refused (over `max_connections`).
    pub clients_refused: AtomicU64,
    /// Calls of local clients sent across the cable.
    pub calls_out: AtomicU64,
    /// Answers (replies and errors of the peer) handed to local clients.
    pub answers_in: AtomicU64,
    /// Calls of the peer's clients handed to the local server.
    pub calls_in: AtomicU64,
    /// Replies of the local server sent back across.
    pub replies_out: AtomicU64,
    /// Servers that registered; 1 while one is registered now.
    pub servers: AtomicU64,
    /// A server is registered now (0 or 1).
    pub server_active: AtomicU64,
    /// Peer channels accepted, open now, and refused (over the limit, wrong
    /// kind, or a peer flooding calls past its window of answers).
    pub peer_channels: AtomicU64,
    /// Peer channels open now.
    pub peer_channels_active: AtomicU64,
    /// Peer channels refused or reset for misbehaving.
    pub peer_channels_refused: AtomicU64,
    /// Answers from the server to calls it does not have (late, or made
    /// up): dropped.
    pub unknown_answers: AtomicU64,
    /// Bytes of request and reply bodies out to the cable, and in.
    pub bytes_out: AtomicU64,
    /// Bytes of bodies in from the cable.
    pub bytes_in: AtomicU64,
    errors: [AtomicU64; CODES.len()],
    log: Mutex<(Option<Instant>, u64)>,
}

impl RpcStats {
    /// Counters for `rpc NAME` in the log.
    pub fn new(label: String) -> Self {
        Self {
            label,
            ..Self::default()
        }
    }

    /// An error answer sent to a caller (here or across the cable).
    pub fn error(&self, code: ErrorCode) {
        self.errors[code_index(code)].fetch_add(1, Relaxed);
    }

    /// Error answers of `code` so far.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors[code_index(code)].load(Relaxed)
    }

    /// Logs a problem (a warning, rate-limited).
    pub fn warn(&self, what: impl Display) {
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        let now = Instant::now();
        if log.0.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            log.1 += 1;
            return;
        }
        let hidden = std::mem::take(&mut log.1);
        log.0 = Some(now);
        drop(log);
        if hidden > 0 {
            tracing::warn!("{}: {what} ({hidden} more since the last line)", self.label);
        } else {
            tracing::warn!("{}: {what}", self.label);
        }
    }

    /// As JSON for `status`.
    pub fn to_json(&self) -> Value {
        let errors: serde_json::Map<String, Value> = CODES
            .iter()
            .map(|c| (code_name(*c).to_owned(), json!(self.errors(*c))))
            .collect();
        let l = |a: &AtomicU64| a.load(Relaxed);
        json!({
            "clients": l(&self.clients),
            "clients_active": l(&self.clients_active),
            "clients_refused": l(&self.clients_refused),
            "calls_out": l(&self.calls_out),
            "answers_in": l(&self.answers_in),
            "calls_in": l(&self.calls_in),
            "replies_out": l(&self.replies_out),
            "servers": l(&self.servers),
            "server_active": l(&self.server_active),
            "peer_channels": l(&self.peer_channels),
            "peer_channels_active": l(&self.peer_channels_active),
            "peer_channels_refused": l(&self.peer_channels_refused),
            "unknown_answers": l(&self.unknown_answers),
            "bytes_out": l(&self.bytes_out),
            "bytes_in": l(&self.bytes_in),
            "errors": errors,
        })
    }
}

/// Counts one open thing (`active`) for as long as it lives.
#[derive(Debug)]
pub struct Active<'a>(pub &'a AtomicU64);

impl<'a> Active<'a> {
    /// Counts one more in `active` (and in `total`).
    pub fn new(total: &AtomicU64, active: &'a AtomicU64) -> Self {
        total.fetch_add(1, Relaxed);
        active.fetch_add(1, Relaxed);
        Active(active)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_by_code() {
        let s = RpcStats::default();
        s.error(ErrorCode::NoServer);
        s.error(ErrorCode::Other(200));
        s.error(ErrorCode::Other(201));
        let j = s.to_json();
        assert_eq!(j["errors"]["no_server"], 1);
        assert_eq!(j["errors"]["application"], 2);
        {
            let _a = Active::new(&s.clients, &s.clients_active);
            assert_eq!(s.to_json()["clients_active"], 1);
        }
        assert_eq!(s.to_json()["clients_active"], 0);
        assert_eq!(s.to_json()["clients"], 1);
    }
}

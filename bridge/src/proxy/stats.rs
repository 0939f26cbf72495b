//! Counters of one forward or service, shared by its tasks and `status`.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Why a connection or channel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More connections than `max_connections`.
    OverLimit,
    /// The peer has no such service.
    NoService,
    /// The peer is out of channels or memory.
    PeerBusy,
    /// Opening the channel failed otherwise (link gone, refused).
    OpenFailed,
    /// The target refused the connection.
    ConnectFailed,
    /// The target did not accept within the timeout.
    ConnectTimeout,
    /// The peer's channel kind does not fit this endpoint (a UDP forward
    /// asking for a TCP service, say).
    KindMismatch,
}

impl Refusal {
    const ALL: [Refusal; 7] = [
        Refusal::OverLimit,
        Refusal::NoService,
        Refusal::PeerBusy,
        Refusal::OpenFailed,
        Refusal::ConnectFailed,
        Refusal::ConnectTimeout,
        Refusal::KindMismatch,
    ];

    /// The label in `status` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::OverLimit => "over_limit",
            Refusal::NoService => "no_service",
            Refusal::PeerBusy => "peer_busy",
            Refusal::OpenFailed => "open_failed",
            Refusal::ConnectFailed => "connect_failed",
            Refusal::ConnectTimeout => "connect_timeout",
            Refusal::KindMismatch => "kind_mismatch",
        }
    }
}

/// Refusals are logged at most this often per forward or service (the
/// rest are counted, and the next line says how many were not shown): a
/// client retrying in a loop must not flood the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// Live counters of one forward or service.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// `forward NAME` or `service NAME`, for the log.
    label: String,
    /// Connections (or UDP flows) taken on.
    pub accepted: AtomicU64,
    /// Of those, open now.
    pub active: AtomicU64,
    /// Bytes from the local socket towards the peer.
    pub bytes_out: AtomicU64,
    /// Bytes from the peer to the local socket.
    pub bytes_in: AtomicU64,
    /// Connections ended by a reset (either side).
    pub resets: AtomicU64,
    refused: [AtomicU64; 7],
    /// When a refusal was last logged, and how many were not since.
    log: Mutex<(Option<Instant>, u64)>,
}

impl ProxyStats {
    /// Counters for the front-end called `label` in the log.
    pub fn new(label: String) -> Self {
        Self {
            label,
            ..Self::default()
        }
    }

    /// Counts a refusal and logs it (a warning, rate-limited).
    pub fn refuse(&self, why: Refusal, detail: impl Display) {
        self.refused[why as usize].fetch_add(1, Relaxed);
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        let now = Instant::now();
        if log
            .0
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_EVERY)
        {
            log.1 += 1;
            return;
        }
        let hidden = std::mem::take(&mut log.1);
        log.0 = Some(now);
        drop(log);
        if hidden > 0 {
            tracing::warn!(
                "{}: refused ({}): {detail} ({hidden} more refusals since the last line)",
                self.label,
                why.name()
            );
        } else {
            tracing::warn!("{}: refused ({}): {detail}", self.label, why.name());
        }
    }

    /// Refusals of one kind so far.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Relaxed)
    }

    /// A connection starts: `false` (and counted) if that is over `max`.
    pub fn try_start(&self, max: usize) -> bool {
        let n = self.active.fetch_add(1, Relaxed);
        if n >= max as u64 {
            self.active.fetch_sub(1, Relaxed);
            self.refuse(
                Refusal::OverLimit,
                format_args!("over max_connections = {max}"),
            );
            return false;
        }
        self.accepted.fetch_add(1, Relaxed);
        true
    }

    /// A connection ended.
    pub fn end(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// The counters as metrics (the same as [`to_json`](Self::to_json)).
    pub fn export(&self, o: &mut crate::metrics::Out<'_>) {
        use crate::metrics::defs::*;
        o.counter(&PROXY_ACCEPTED, &[], self.accepted.load(Relaxed));
        o.gauge(&PROXY_ACTIVE, &[], self.active.load(Relaxed) as f64);
        o.counter(&PROXY_RESETS, &[], self.resets.load(Relaxed));
        o.counter(
            &PROXY_BYTES,
            &[("direction", "tx")],
            self.bytes_out.load(Relaxed),
        );
        o.counter(
            &PROXY_BYTES,
            &[("direction", "rx")],
            self.bytes_in.load(Relaxed),
        );
        for r in Refusal::ALL {
            o.counter(&PROXY_REFUSED, &[("reason", r.name())], self.refused(r));
        }
    }

    /// As JSON for `status`.
    pub fn to_json(&self) -> Value {
        let refused: serde_json::Map<String, Value> = Refusal::ALL
            .iter()
            .map(|r| (r.name().to_owned(), json!(self.refused(*r))))
            .collect();
        json!({
            "accepted": self.accepted.load(Relaxed),
            "active": self.active.load(Relaxed),
            "bytes_out": self.bytes_out.load(Relaxed),
            "bytes_in": self.bytes_in.load(Relaxed),
            "resets": self.resets.load(Relaxed),
            "refused": refused,
        })
    }
}

/// Holds one connection slot of a [`ProxyStats`] and gives it back when
/// dropped, whichever way the connection ends.
#[derive(Debug)]
pub struct Slot<'a>(pub &'a ProxyStats);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_refusals_are_counted() {
        let s = ProxyStats::default();
        assert!(s.try_start(2));
        assert!(s.try_start(2));
        assert!(!s.try_start(2), "third over a limit of two");
        assert_eq!(s.refused(Refusal::OverLimit), 1);
        s.refuse(Refusal::NoService, "x");
        s.refuse(Refusal::NoService, "x");
        assert_eq!(
            s.refused(Refusal::NoService),
            2,
            "counted even when not logged"
        );
        drop(Slot(&s));
        assert!(s.try_start(2), "a slot came free");
        assert_eq!(s.to_json()["accepted"], 3);
        assert_eq!(s.to_json()["refused"]["over_limit"], 1);
    }
}

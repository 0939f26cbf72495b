//! `[session]`: optional overrides of the transport's session tunables.
//! Every key is optional; an absent key keeps the default documented (with
//! its reason) on [`tbbridge_transport::SessionConfig`].

use std::time::Duration;

use tbbridge_transport::wire::{MAX_BATCH_BODY, MAX_RECORD_LEN, RECORD_HEADER_LEN};
use tbbridge_transport::SessionConfig;

use crate::keyfile::KeyFile;
use crate::reader::{Field, Result};

/// Overrides of [`SessionConfig`]; `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTunables {
    /// `keepalive_ms`: ping interval.
    pub keepalive: Option<Duration>,
    /// `idle_timeout_ms`: silence that counts as a link fault.
    pub idle_timeout: Option<Duration>,
    /// `handshake_retry_ms`: Hello resend interval.
    pub handshake_retry: Option<Duration>,
    /// `goodbye_timeout_ms`: wait for the goodbye exchange on close.
    pub goodbye_timeout: Option<Duration>,
    /// `resync_timeout_ms`: how long an in-band resync after corruption
    /// may take before the device is reopened (0: reopen on every
    /// corruption).
    pub resync_timeout: Option<Duration>,
    /// `resume_timeout_ms`: how long reliable channels wait for a lost
    /// link to come back before they are reset (0: for ever).
    pub resume_timeout: Option<Duration>,
    /// `max_batch_body`: largest batch (the CRC unit).
    pub max_batch_body: Option<usize>,
    /// `max_transmit`: most bytes per device write.
    pub max_transmit: Option<usize>,
    /// `max_chunk`: largest payload per data record.
    pub max_chunk: Option<usize>,
    /// `inline_limit`: payloads copied into the batch up to this size.
    pub inline_limit: Option<usize>,
    /// `stream_window`: receive window of a stream channel.
    pub stream_window: Option<u64>,
    /// `message_window`: receive window of a message channel.
    pub message_window: Option<u64>,
    /// `min_window`: a new channel's window (it grows with use).
    pub min_window: Option<u64>,
    /// `dgram_send_queue`: datagram bytes queued per channel for sending.
    pub dgram_send_queue: Option<usize>,
    /// `dgram_recv_queue`: received datagram bytes kept per channel.
    pub dgram_recv_queue: Option<usize>,
    /// `recv_budget`: all receive windows together.
    pub recv_budget: Option<u64>,
    /// `max_channels`: most live channels.
    pub max_channels: Option<usize>,
    /// `starvation_limit`: records of a higher class per lower-class one.
    pub starvation_limit: Option<u32>,
    /// `latency_in_flight`: bulk bytes in the cable while latency-class
    /// records flow.
    pub latency_in_flight: Option<u64>,
    /// `latency_hold_ms`: how long latency mode lasts after the last
    /// latency-class record.
    pub latency_hold: Option<Duration>,
    /// `busy_poll_us`: the pump spins on the device this long before it
    /// sleeps (0: off, the default). Not a session tunable but the pump's
    /// (`tbbridge_transport::pump::PumpOptions`).
    pub busy_poll: Option<Duration>,
    /// `psk_file`: the pre-shared key the peer must hold (read at `up` and
    /// `check` with [`KeyFile::load`]).
    pub psk_file: Option<KeyFile>,
}

impl SessionTunables {
    /// Writes the set values into `cfg` and leaves the others alone.
    pub fn apply(&self, cfg: &mut SessionConfig) {
        fn set<T: Copy>(dst: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *dst = v;
            }
        }
        set(&mut cfg.keepalive_interval, self.keepalive);
        set(&mut cfg.idle_timeout, self.idle_timeout);
        set(&mut cfg.handshake_retry, self.handshake_retry);
        set(&mut cfg.goodbye_timeout, self.goodbye_timeout);
        set(&mut cfg.resync_timeout, self.resync_timeout);
        set(&mut cfg.resume_timeout, self.resume_timeout);
        set(&mut cfg.max_batch_body, self.max_batch_body);
        set(&mut cfg.max_transmit, self.max_transmit);
        set(&mut cfg.max_chunk, self.max_chunk);
        set(&mut cfg.inline_limit, self.inline_limit);
        set(&mut cfg.stream_window, self.stream_window);
        set(&mut cfg.message_window, self.message_window);
        set(&mut cfg.min_window, self.min_window);
        set(&mut cfg.dgram_send_queue, self.dgram_send_queue);
        set(&mut cfg.dgram_recv_queue, self.dgram_recv_queue);
        set(&mut cfg.recv_budget, self.recv_budget);
        set(&mut cfg.max_channels, self.max_channels);
        set(&mut cfg.starvation_limit, self.starvation_limit);
        set(&mut cfg.latency_in_flight, self.latency_in_flight);
        set(&mut cfg.latency_hold, self.latency_hold);
    }

    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == SessionTunables::default()
    }
}

const KEYS: &[&str] = &[
    "psk_file",
    "keepalive_ms",
    "idle_timeout_ms",
    "handshake_retry_ms",
    "goodbye_timeout_ms",
    "resync_timeout_ms",
    "resume_timeout_ms",
    "max_batch_body",
    "max_transmit",
    "max_chunk",
    "inline_limit",
    "stream_window",
    "message_window",
    "min_window",
    "dgram_send_queue",
    "dgram_recv_queue",
    "recv_budget",
    "max_channels",
    "starvation_limit",
    "latency_in_flight",
    "latency_hold_ms",
    "busy_poll_us",
];

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const U32: u64 = u32::MAX as u64;

/// A byte size: an integer, or a string with a binary unit
/// (`"256KiB"`, `"8 MiB"`, `"1G"`: K/KiB, M/MiB, G/GiB are all 1024-based).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.len() > 20 {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => KIB,
        "M" | "MiB" => MIB,
        "G" | "GiB" => GIB,
        _ => return None,
    };
    n.checked_mul(mult)
}

pub(crate) fn size(f: &Field<'_>, lo: u64, hi: u64) -> Result<u64> {
    let v = match f.str() {
        Ok(s) => parse_size(s).ok_or_else(|| {
            f.err(format!(
                "{s:?} is not a size (allowed: an integer, or a number with K/KiB, M/MiB or G/GiB)"
            ))
        })?,
        Err(_) => {
            let i = f.int().map_err(|_| {
                f.err(format!(
                    "expected a size (an integer or a string such as \"8MiB\"), found {}",
                    f.node.kind.type_name()
                ))
            })?;
            u64::try_from(i).map_err(|_| f.err(format!("{i} is negative")))?
        }
    };
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(f.err(format!("{v} is out of range (allowed {lo}..={hi})")))
    }
}

fn usize_size(f: &Field<'_>, lo: u64, hi: u64) -> Result<usize> {
    let v = size(f, lo, hi)?;
    usize::try_from(v).map_err(|_| f.err(format!("{v} does not fit this machine")))
}

fn millis(f: &Field<'_>, lo: i64, hi: i64) -> Result<Duration> {
    f.int_in::<u64>(lo..=hi).map(Duration::from_millis)
}

/// Parses `[session]`.
pub(crate) fn parse_session(f: &Field<'_>) -> Result<SessionTunables> {
    let t = f.table(KEYS)?;
    let max_chunk = (MAX_RECORD_LEN - RECORD_HEADER_LEN - 64) as u64;
    let s = SessionTunables {
        keepalive: t.opt("keepalive_ms", |f| millis(f, 10, 60_000))?,
        idle_timeout: t.opt("idle_timeout_ms", |f| millis(f, 50, 3_600_000))?,
        handshake_retry: t.opt("handshake_retry_ms", |f| millis(f, 10, 10_000))?,
        goodbye_timeout: t.opt("goodbye_timeout_ms", |f| millis(f, 0, 60_000))?,
        resync_timeout: t.opt("resync_timeout_ms", |f| millis(f, 0, 60_000))?,
        resume_timeout: t.opt("resume_timeout_ms", |f| millis(f, 0, 86_400_000))?,
        max_batch_body: t.opt("max_batch_body", |f| {
            usize_size(f, 4 * KIB, MAX_BATCH_BODY as u64)
        })?,
        max_transmit: t.opt("max_transmit", |f| usize_size(f, 4 * KIB, GIB))?,
        max_chunk: t.opt("max_chunk", |f| usize_size(f, 512, max_chunk))?,
        inline_limit: t.opt("inline_limit", |f| usize_size(f, 0, 64 * KIB))?,
        stream_window: t.opt("stream_window", |f| size(f, 4 * KIB, U32))?,
        message_window: t.opt("message_window", |f| size(f, 4 * KIB, U32))?,
        min_window: t.opt("min_window", |f| size(f, 4 * KIB, U32))?,
        dgram_send_queue: t.opt("dgram_send_queue", |f| usize_size(f, 4 * KIB, U32))?,
        dgram_recv_queue: t.opt("dgram_recv_queue", |f| usize_size(f, 4 * KIB, U32))?,
        recv_budget: t.opt("recv_budget", |f| size(f, MIB, 64 * GIB))?,
        max_channels: t.opt("max_channels", |f| f.int_in(1..=1_000_000))?,
        starvation_limit: t.opt("starvation_limit", |f| f.int_in(1..=1_000_000))?,
        latency_in_flight: t.opt("latency_in_flight", |f| size(f, 64 * KIB, 64 * MIB))?,
        latency_hold: t.opt("latency_hold_ms", |f| millis(f, 0, 3_600_000))?,
        busy_poll: t.opt("busy_poll_us", |f| {
            f.int_in::<u64>(0..=10_000).map(Duration::from_micros)
        })?,
        psk_file: t.opt("psk_file", KeyFile::parse)?,
    };
    // The idle timeout must leave room for keepalives, or an idle but
    // healthy link is declared dead.
    let d = SessionConfig::default();
    let keepalive = s.keepalive.unwrap_or(d.keepalive_interval);
    let idle = s.idle_timeout.unwrap_or(d.idle_timeout);
    if idle <= keepalive {
        let key = if s.idle_timeout.is_some() {
            "idle_timeout_ms"
        } else {
            "keepalive_ms"
        };
        let msg = format!(
            "idle_timeout_ms ({} ms) must be larger than keepalive_ms ({} ms); \
             four keepalives is the default ratio",
            idle.as_millis(),
            keepalive.as_millis()
        );
        return Err(match t.get(key) {
            Some(field) => field.err(msg),
            None => t.error(key, msg),
        });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("256KiB"), Some(256 * 1024));
        assert_eq!(parse_size("8 MiB"), Some(8 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2k"), Some(2048));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("8 MB"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
        assert_eq!(parse_size("18446744073709551615G"), None);
    }

    #[test]
    fn apply_sets_only_given_values() {
        let mut cfg = SessionConfig::default();
        let t = SessionTunables {
            keepalive: Some(Duration::from_millis(250)),
            stream_window: Some(16 << 20),
            ..Default::default()
        };
        assert!(!t.is_empty());
        t.apply(&mut cfg);
        assert_eq!(cfg.keepalive_interval, Duration::from_millis(250));
        assert_eq!(cfg.stream_window, 16 << 20);
        let d = SessionConfig::default();
        assert_eq!(cfg.idle_timeout, d.idle_timeout);
        assert_eq!(cfg.max_batch_body, d.max_batch_body);
        let mut cfg2 = SessionConfig::default();
        SessionTunables::default().apply(&mut cfg2);
        assert_eq!(cfg2, d);
    }
}

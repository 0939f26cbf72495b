//! Every metric tbbridge exports: name, type, unit, labels and help, in
//! one table ([`ALL`]). `docs/metrics.md` lists the same (a test compares
//! the two), the exporter describes each one from here, and histogram
//! buckets are set from here before the recorder is built.
//!
//! Names follow the Prometheus conventions: the `tbbridge_` prefix,
//! `_total` on counters only, base units in the name (`_bytes`,
//! `_seconds`). Labels are bounded: `interface` (the instance, on every
//! metric), `direction` (`tx`: towards the peer, `rx`: from it), `kind`,
//! `class`, `service` (names from the local configuration, at most
//! `MAX_TRAFFIC_KEYS` of them), `front_end` (configured front-ends),
//! `reason`, `lane`, `result` (fixed sets). Never a connection or channel
//! number.

use metrics::Unit;

/// The type of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Only grows (resets only when the daemon restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, with these bucket upper bounds.
    Histogram(&'static [f64]),
}

/// One metric.
#[derive(Debug)]
pub struct Def {
    /// Its full name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its unit.
    pub unit: Unit,
    /// Its labels besides `interface` (and `front_end`, which front-end
    /// metrics get from [`Out`](super::Out) and list here too).
    pub labels: &'static [&'static str],
    /// What it means.
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
    help: &'static str,
) -> Def {
    Def {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// Device read and write sizes: 64 B to 16 MiB in powers of 4 (a lone ping
/// is a few dozen bytes, a bulk write up to `max_transmit`, 8 MiB).
pub const SIZE_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];
/// Round trips: 10 µs (a good cable's ping) to 1 s (a stuck peer), about
/// three buckets per decade.
pub const RTT_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
    1.0,
];
/// In-band resyncs: 50 µs (two round trips on a real cable) to 1 s (past
/// the default `resync_timeout`, 500 ms, it is a link reset).
pub const RESYNC_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// RPC calls: 10 µs to 10 s.
pub const CALL_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
    1.0, 10.0,
];

// ---- the bridge ----
/// Build information.
pub static BUILD_INFO: Def = def(
    "tbbridge_build_info",
    Gauge,
    Unit::Count,
    &["version", "protocol"],
    "Always 1; the labels name the tbbridge version and its wire protocol version.",
);
/// Link state.
pub static LINK_UP: Def = def(
    "tbbridge_link_up",
    Gauge,
    Unit::Count,
    &[],
    "1 while the link is up (handshake done on an open device), 0 while waiting for the peer.",
);
/// Links brought up.
pub static LINKS_UP: Def = def(
    "tbbridge_links_up_total",
    Counter,
    Unit::Count,
    &[],
    "Links brought up (handshakes completed), the first one included.",
);
/// Resumes.
pub static RESUMES: Def = def("tbbridge_link_resumes_total", Counter, Unit::Count, &[], "Links that resumed the previous session: every stream and message channel continued without loss.");
/// Link resets by reason.
pub static LINK_RESETS: Def = def("tbbridge_link_resets_total", Counter, Unit::Count, &["reason"], "Links that ended in a fault and were reopened, by reason (unplugged, peer_closed, corrupt, malformed, protocol_violation, incompatible, idle_timeout, resync_failed, device_error).");
/// Handshake failures.
pub static HANDSHAKE_FAILURES: Def = def(
    "tbbridge_handshake_failures_total",
    Counter,
    Unit::Count,
    &[],
    "Links that ended in a fault before their handshake completed.",
);
/// Authentication failures.
pub static AUTH_FAILURES: Def = def(
    "tbbridge_auth_failures_total",
    Counter,
    Unit::Count,
    &[],
    "Links on which the peer failed pre-shared-key authentication (wrong or missing key, an old link's Hello), once per link.",
);
/// Peer restarts.
pub static PEER_RESTARTS: Def = def(
    "tbbridge_peer_restarts_total",
    Counter,
    Unit::Count,
    &[],
    "Sessions that ended with the peer's goodbye (its down, a reboot); a fresh session followed.",
);
/// Corrupt batches.
pub static CORRUPT_BATCHES: Def = def("tbbridge_corrupt_batches_total", Counter, Unit::Count, &[], "Batches whose checksum did not match; never delivered. Recovered in-band (tbbridge_resyncs_total) or, when that fails, a link reset with reason resync_failed or corrupt.");
/// Channels expired.
pub static CHANNELS_EXPIRED: Def = def("tbbridge_channels_expired_total", Counter, Unit::Count, &[], "Stream and message channels reset because the link stayed down longer than resume_timeout (their applications were told).");
/// In-band resyncs.
pub static RESYNCS: Def = def("tbbridge_resyncs_total", Counter, Unit::Count, &["result"], "In-band resyncs after corruption: result=ok when the link came back on the open device (nothing lost, no reset), result=failed when it did not within resync_timeout (then a link reset).");
/// In-band resync durations.
pub static RESYNC_TIME: Def = def(
    "tbbridge_resync_seconds",
    Histogram(RESYNC_BUCKETS),
    Unit::Seconds,
    &[],
    "How long each in-band resync took, from the corrupt batch to the link being up again on the same device.",
);
/// Session bytes.
pub static SESSION_BYTES: Def = def(
    "tbbridge_session_bytes_total",
    Counter,
    Unit::Bytes,
    &["direction"],
    "Bytes written to (tx) and read from (rx) the device by the session, framing included.",
);
/// Session batches.
pub static SESSION_BATCHES: Def = def(
    "tbbridge_session_batches_total",
    Counter,
    Unit::Count,
    &["direction"],
    "Checksummed batches sent and received.",
);
/// Session records.
pub static SESSION_RECORDS: Def = def(
    "tbbridge_session_records_total",
    Counter,
    Unit::Count,
    &["direction"],
    "Records sent and received, control records included.",
);
/// Channel payload bytes.
pub static CHANNEL_BYTES: Def = def("tbbridge_channel_bytes_total", Counter, Unit::Bytes, &["direction", "kind", "class", "service"], "Payload bytes of channels by kind, class and service (first transmissions), closed channels included.");
/// Channel records.
pub static CHANNEL_RECORDS: Def = def(
    "tbbridge_channel_records_total",
    Counter,
    Unit::Count,
    &["direction", "kind", "class", "service"],
    "Data records of channels by kind, class and service.",
);
/// Retransmitted bytes.
pub static CHANNEL_RETRANSMITTED: Def = def(
    "tbbridge_channel_retransmitted_bytes_total",
    Counter,
    Unit::Bytes,
    &["kind", "class", "service"],
    "Payload bytes sent again after a resume.",
);
/// Channels opened.
pub static CHANNELS_OPENED: Def = def(
    "tbbridge_channels_opened_total",
    Counter,
    Unit::Count,
    &["kind", "class", "service"],
    "Channels opened (by either side) by kind, class and service.",
);
/// Channels active.
pub static CHANNELS_ACTIVE: Def = def(
    "tbbridge_channels_active",
    Gauge,
    Unit::Count,
    &["kind", "class", "service"],
    "Live channels now.",
);
/// Datagram drops.
pub static DATAGRAM_DROPS: Def = def(
    "tbbridge_datagram_drops_total",
    Counter,
    Unit::Count,
    &["kind", "class", "service"],
    "Datagrams the session dropped: send queue full, or the reader too slow.",
);
/// Transmit queue.
pub static TX_QUEUE: Def = def(
    "tbbridge_transmit_queue_bytes",
    Gauge,
    Unit::Bytes,
    &["class"],
    "Bytes queued in the session for sending now (not yet in a batch), by class.",
);
/// Credit stalls.
pub static CREDIT_STALLS: Def = def("tbbridge_credit_stalls_total", Counter, Unit::Count, &[], "Times a reliable channel with bytes to send ran out of the peer's credit (its receive window limited the sender).");
/// Receive budget held.
pub static RECV_HELD: Def = def("tbbridge_receive_held_bytes", Gauge, Unit::Bytes, &[], "Receive memory held now: credit granted beyond what applications took, and buffered datagrams.");
/// Open refusals.
pub static OPEN_REFUSALS: Def = def("tbbridge_channel_open_refusals_total", Counter, Unit::Count, &["side", "reason"], "Channel opens refused here: side=peer for the peer's opens (no_service, too_many, no_memory, backlog), side=local for our own (too_many, no_memory).");
/// RTT.
pub static RTT: Def = def(
    "tbbridge_link_rtt_seconds",
    Histogram(RTT_BUCKETS),
    Unit::Seconds,
    &[],
    "Round-trip times of the keepalive pings (one per keepalive interval while the link is up).",
);
/// Device read sizes.
pub static READ_SIZE: Def = def(
    "tbbridge_device_read_size_bytes",
    Histogram(SIZE_BUCKETS),
    Unit::Bytes,
    &[],
    "Bytes returned by each device read.",
);
/// Device write sizes.
pub static WRITE_SIZE: Def = def(
    "tbbridge_device_write_size_bytes",
    Histogram(SIZE_BUCKETS),
    Unit::Bytes,
    &[],
    "Bytes taken by each device write.",
);
/// Short writes.
pub static SHORT_WRITES: Def = def(
    "tbbridge_device_short_writes_total",
    Counter,
    Unit::Count,
    &[],
    "Device writes that took only part of what was offered (the ring was full).",
);
/// Link speed (unit bytes: the facade has no bytes-per-second unit, and
/// the exposition format does not carry units; the name says it).
pub static LINK_SPEED: Def = def("tbbridge_device_link_speed_bytes_per_second", Gauge, Unit::Bytes, &["direction"], "The Thunderbolt link's rate (speed per lane times lanes) from sysfs; only with a configfs device whose link sysfs describes.");
/// Link lanes.
pub static LINK_LANES: Def = def(
    "tbbridge_device_link_lanes",
    Gauge,
    Unit::Count,
    &["direction"],
    "Lanes of the Thunderbolt link from sysfs; only where known.",
);

// ---- the front-end host ----
/// Front-end running.
pub static FRONTEND_UP: Def = def(
    "tbbridge_frontend_up",
    Gauge,
    Unit::Count,
    &["front_end"],
    "1 while the front-end runs, 0 while it waits to be restarted or stopped.",
);
/// Front-end restarts.
pub static FRONTEND_RESTARTS: Def = def(
    "tbbridge_frontend_restarts_total",
    Counter,
    Unit::Count,
    &["front_end"],
    "Times the supervisor restarted the front-end after a failure.",
);

// ---- TUN ----
/// TUN packets.
pub static TUN_PACKETS: Def = def("tbbridge_tun_packets_total", Counter, Unit::Count, &["front_end", "direction"], "Packets read from the interface for the peer (tx) and written to it from the peer (rx); a superpacket counts once.");
/// TUN bytes.
pub static TUN_BYTES: Def = def(
    "tbbridge_tun_bytes_total",
    Counter,
    Unit::Bytes,
    &["front_end", "direction"],
    "IP bytes of those packets.",
);
/// TUN superpackets.
pub static TUN_SUPERPACKETS: Def = def(
    "tbbridge_tun_superpackets_total",
    Counter,
    Unit::Count,
    &["front_end", "direction"],
    "Of those packets, TSO/USO superpackets.",
);
/// TUN lanes.
pub static TUN_LANE_PACKETS: Def = def(
    "tbbridge_tun_lane_packets_total",
    Counter,
    Unit::Count,
    &["front_end", "lane"],
    "Packets sent per lane of the fair queue (latency, ack, bulk).",
);
/// TUN drops.
pub static TUN_DROPS: Def = def("tbbridge_tun_drops_total", Counter, Unit::Count, &["front_end", "reason"], "Packets dropped, by reason: aqm (CoDel), overflow (queue limit), link_down, malformed_tun, malformed_peer, queue_full, too_big, tun_write.");
/// TUN ECN marks.
pub static TUN_ECN_MARKS: Def = def(
    "tbbridge_tun_ecn_marks_total",
    Counter,
    Unit::Count,
    &["front_end"],
    "Packets CoDel marked Congestion Experienced instead of dropping them.",
);
/// TUN queue.
pub static TUN_QUEUE: Def = def(
    "tbbridge_tun_queue_bytes",
    Gauge,
    Unit::Bytes,
    &["front_end"],
    "Bytes held in the interface's fair queue now.",
);
/// TUN carrier.
pub static TUN_CARRIER: Def = def(
    "tbbridge_tun_carrier",
    Gauge,
    Unit::Count,
    &["front_end"],
    "1 while the interface has carrier (the link is up).",
);

// ---- proxies ----
/// Accepted connections.
pub static PROXY_ACCEPTED: Def = def(
    "tbbridge_proxy_connections_accepted_total",
    Counter,
    Unit::Count,
    &["front_end"],
    "Connections (or UDP flows) a forward or service took on.",
);
/// Active connections.
pub static PROXY_ACTIVE: Def = def(
    "tbbridge_proxy_connections_active",
    Gauge,
    Unit::Count,
    &["front_end"],
    "Of those, open now.",
);
/// Refused connections.
pub static PROXY_REFUSED: Def = def("tbbridge_proxy_connections_refused_total", Counter, Unit::Count, &["front_end", "reason"], "Connections refused, by reason: over_limit, no_service, peer_busy, open_failed, connect_failed, connect_timeout, kind_mismatch.");
/// Connection resets.
pub static PROXY_RESETS: Def = def(
    "tbbridge_proxy_connection_resets_total",
    Counter,
    Unit::Count,
    &["front_end"],
    "Connections ended by a reset (either side).",
);
/// Proxy bytes.
pub static PROXY_BYTES: Def = def(
    "tbbridge_proxy_bytes_total",
    Counter,
    Unit::Bytes,
    &["front_end", "direction"],
    "Bytes from local sockets towards the peer (tx) and from the peer to them (rx).",
);

// ---- pipes ----
/// Pipe transfers.
pub static PIPE_TRANSFERS: Def = def("tbbridge_pipe_transfers_total", Counter, Unit::Count, &["front_end", "result"], "Pipe transfers finished, by result (completed, failed); front_end is `pipes` (the [[pipe]] sinks) or `pipe clients` (tbbridge pipe on this host).");
/// Pipe bytes.
pub static PIPE_BYTES: Def = def(
    "tbbridge_pipe_bytes_total",
    Counter,
    Unit::Bytes,
    &["front_end", "direction"],
    "Pipe payload bytes sent to the peer (tx) and received from it (rx).",
);

// ---- RPC and migration (issue 9 and the migrate front-end export these) ----
/// RPC calls.
pub static RPC_CALLS: Def = def(
    "tbbridge_rpc_calls_total",
    Counter,
    Unit::Count,
    &["front_end"],
    "RPC calls made or served. (Exported by the RPC front-end.)",
);
/// RPC errors.
pub static RPC_ERRORS: Def = def(
    "tbbridge_rpc_errors_total",
    Counter,
    Unit::Count,
    &["front_end", "reason"],
    "RPC calls that failed, by reason. (Exported by the RPC front-end.)",
);
/// RPC latency.
pub static RPC_DURATION: Def = def(
    "tbbridge_rpc_call_duration_seconds",
    Histogram(CALL_BUCKETS),
    Unit::Seconds,
    &["front_end"],
    "Time from an RPC request to its answer. (Exported by the RPC front-end.)",
);
/// Migration bytes.
pub static MIGRATION_BYTES: Def = def(
    "tbbridge_migration_bytes_total",
    Counter,
    Unit::Bytes,
    &["front_end", "direction"],
    "VM migration bytes moved. (Exported by the migrate front-end.)",
);
/// Migration channels.
pub static MIGRATION_CHANNELS: Def = def(
    "tbbridge_migration_channels",
    Gauge,
    Unit::Count,
    &["front_end"],
    "Channels of migrations under way. (Exported by the migrate front-end.)",
);

/// Every metric, in the order of `docs/metrics.md`.
pub static ALL: &[&Def] = &[
    &BUILD_INFO,
    &LINK_UP,
    &LINKS_UP,
    &RESUMES,
    &LINK_RESETS,
    &HANDSHAKE_FAILURES,
    &AUTH_FAILURES,
    &PEER_RESTARTS,
    &CORRUPT_BATCHES,
    &RESYNCS,
    &CHANNELS_EXPIRED,
    &RESYNC_TIME,
    &SESSION_BYTES,
    &SESSION_BATCHES,
    &SESSION_RECORDS,
    &CHANNEL_BYTES,
    &CHANNEL_RECORDS,
    &CHANNEL_RETRANSMITTED,
    &CHANNELS_OPENED,
    &CHANNELS_ACTIVE,
    &DATAGRAM_DROPS,
    &TX_QUEUE,
    &CREDIT_STALLS,
    &RECV_HELD,
    &OPEN_REFUSALS,
    &RTT,
    &READ_SIZE,
    &WRITE_SIZE,
    &SHORT_WRITES,
    &LINK_SPEED,
    &LINK_LANES,
    &FRONTEND_UP,
    &FRONTEND_RESTARTS,
    &TUN_PACKETS,
    &TUN_BYTES,
    &TUN_SUPERPACKETS,
    &TUN_LANE_PACKETS,
    &TUN_DROPS,
    &TUN_ECN_MARKS,
    &TUN_QUEUE,
    &TUN_CARRIER,
    &PROXY_ACCEPTED,
    &PROXY_ACTIVE,
    &PROXY_REFUSED,
    &PROXY_RESETS,
    &PROXY_BYTES,
    &PIPE_TRANSFERS,
    &PIPE_BYTES,
    &RPC_CALLS,
    &RPC_ERRORS,
    &RPC_DURATION,
    &MIGRATION_BYTES,
    &MIGRATION_CHANNELS,
];

/// The definition named `name`.
pub fn find(name: &str) -> Option<&'static Def> {
    ALL.iter().copied().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus naming conventions, checked for every metric.
    #[test]
    fn names_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("tbbridge_"), "{}", d.name);
            assert!(
                d.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                d.name
            );
            let total = d.name.ends_with("_total");
            assert_eq!(
                total,
                d.kind == Kind::Counter,
                "{}: _total on counters only",
                d.name
            );
            match d.unit {
                Unit::Bytes => assert!(d.name.contains("_bytes"), "{}", d.name),
                Unit::Seconds => assert!(d.name.contains("_seconds"), "{}", d.name),
                _ => assert!(!d.name.contains("_seconds"), "{}", d.name),
            }
            if let Kind::Histogram(b) = d.kind {
                assert!(
                    b.windows(2).all(|w| w[0] < w[1]),
                    "{}: buckets ascend",
                    d.name
                );
            }
            assert!(!d.help.is_empty());
            for l in d.labels {
                assert!(
                    [
                        "direction",
                        "kind",
                        "class",
                        "service",
                        "front_end",
                        "reason",
                        "lane",
                        "result",
                        "side",
                        "version",
                        "protocol"
                    ]
                    .contains(l),
                    "{}: label {l} is not one of the bounded set",
                    d.name
                );
            }
        }
    }

    /// docs/metrics.md has a row for every metric, with its type and
    /// labels, and names no metric that does not exist.
    #[test]
    fn docs_list_every_metric() {
        let doc = include_str!("../../../docs/metrics.md");
        for d in ALL {
            let kind = match d.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram(_) => "histogram",
            };
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", d.name)))
                .unwrap_or_else(|| panic!("docs/metrics.md has no row for {}", d.name));
            assert!(
                row.contains(&format!("| {kind} |")),
                "{}: type in {row}",
                d.name
            );
            for l in d.labels {
                assert!(
                    row.contains(&format!("`{l}`")),
                    "{}: label {l} in {row}",
                    d.name
                );
            }
        }
        for l in doc.lines().filter(|l| l.starts_with("| `tbbridge_")) {
            let name = l.trim_start_matches("| `").split('`').next().unwrap_or("");
            assert!(
                find(name).is_some(),
                "docs/metrics.md names {name}, which is not exported"
            );
        }
    }
}

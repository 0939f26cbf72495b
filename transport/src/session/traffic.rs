//! Channel traffic summed by kind, class and service, for `status` and the
//! metrics exporter: totals that only grow, closed channels included.
//!
//! Per-channel counters live on the channel (the hot path adds to them and
//! to nothing else). When a channel is removed its counters are folded
//! into [`Retired`], one entry per (kind, class, service); [`Session::traffic`]
//! adds the live channels to those at the time it is asked (one pass over
//! the channels, the same work `status` does for its channel list).
//! Service names come from the local configuration (a peer can only open
//! channels to services that listen here), but the table is capped at
//! [`MAX_TRAFFIC_KEYS`] all the same: beyond it, traffic is summed under
//! the service name [`OTHER_SERVICE`], so a label set can never grow
//! without bound.

use super::{ChannelKind, ChannelStats, Class, Session, SessionStats};

/// Most distinct (kind, class, service) entries kept.
pub const MAX_TRAFFIC_KEYS: usize = 128;
/// The service name traffic beyond [`MAX_TRAFFIC_KEYS`] is summed under.
pub const OTHER_SERVICE: &str = "(other)";

/// What traffic is summed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrafficKey {
    /// The channels' kind.
    pub kind: ChannelKind,
    /// Their class.
    pub class: Class,
    /// The service they were opened to.
    pub service: String,
}

/// Totals of the channels of one [`TrafficKey`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Payload bytes sent (first transmissions).
    pub bytes_tx: u64,
    /// Payload bytes received.
    pub bytes_rx: u64,
    /// Records sent.
    pub records_tx: u64,
    /// Records received.
    pub records_rx: u64,
    /// Datagrams dropped.
    pub drops: u64,
    /// Payload bytes sent again after a resume.
    pub bytes_retransmitted: u64,
    /// Channels ever opened (live and closed).
    pub opened: u64,
    /// Live channels now.
    pub active: u64,
    /// Bytes queued for sending now (stream and message bytes not yet
    /// sent, datagrams waiting).
    pub queued_bytes: u64,
}

impl Traffic {
    fn add_stats(&mut self, s: &ChannelStats) {
        self.bytes_tx += s.bytes_tx;
        self.bytes_rx += s.bytes_rx;
        self.records_tx += s.records_tx;
        self.records_rx += s.records_rx;
        self.drops += s.drops;
        self.bytes_retransmitted += s.bytes_retransmitted;
    }

    /// Adds every counter of `o` (to carry totals over a new session).
    pub fn add(&mut self, o: &Traffic) {
        self.bytes_tx += o.bytes_tx;
        self.bytes_rx += o.bytes_rx;
        self.records_tx += o.records_tx;
        self.records_rx += o.records_rx;
        self.drops += o.drops;
        self.bytes_retransmitted += o.bytes_retransmitted;
        self.opened += o.opened;
        self.active += o.active;
        self.queued_bytes += o.queued_bytes;
    }
}

/// Totals of removed channels (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Retired {
    entries: Vec<(TrafficKey, Traffic)>,
}

/// The entry for (kind, class, service) in `entries`, made if missing
/// (under [`OTHER_SERVICE`] once the table is full).
pub(crate) fn entry<'a>(
    entries: &'a mut Vec<(TrafficKey, Traffic)>,
    kind: ChannelKind,
    class: Class,
    service: &str,
) -> &'a mut Traffic {
    let find = |e: &[(TrafficKey, Traffic)], svc: &str| {
        e.iter()
            .position(|(k, _)| k.kind == kind && k.class == class && k.service == svc)
    };
    let i = match find(entries, service) {
        Some(i) => i,
        None => {
            let svc = if entries.len() < MAX_TRAFFIC_KEYS {
                service
            } else {
                OTHER_SERVICE
            };
            match find(entries, svc) {
                Some(i) => i,
                None => {
                    entries.push((
                        TrafficKey {
                            kind,
                            class,
                            service: svc.to_owned(),
                        },
                        Traffic::default(),
                    ));
                    entries.len() - 1
                }
            }
        }
    };
    &mut entries[i].1
}

impl SessionStats {
    /// `self` + `later`: the counters added, the gauges (`recv_held`,
    /// `rtt`) `later`'s (`rtt` ours if `later` has none). For totals over
    /// sessions that replaced one another.
    pub fn plus(&self, later: &SessionStats) -> SessionStats {
        SessionStats {
            bytes_tx: self.bytes_tx + later.bytes_tx,
            bytes_rx: self.bytes_rx + later.bytes_rx,
            batches_tx: self.batches_tx + later.batches_tx,
            batches_rx: self.batches_rx + later.batches_rx,
            records_tx: self.records_tx + later.records_tx,
            records_rx: self.records_rx + later.records_rx,
            transmits: self.transmits + later.transmits,
            corrupt_batches: self.corrupt_batches + later.corrupt_batches,
            resyncs: self.resyncs + later.resyncs,
            resync_failures: self.resync_failures + later.resync_failures,
            expired_channels: self.expired_channels + later.expired_channels,
            resync_last: later.resync_last.or(self.resync_last),
            links_up: self.links_up + later.links_up,
            resumes: self.resumes + later.resumes,
            dgram_drops: self.dgram_drops + later.dgram_drops,
            stale_records: self.stale_records + later.stale_records,
            resync_bytes: self.resync_bytes + later.resync_bytes,
            compacted_bytes: self.compacted_bytes + later.compacted_bytes,
            stale_hellos: self.stale_hellos + later.stale_hellos,
            refused_too_many: self.refused_too_many + later.refused_too_many,
            refused_no_memory: self.refused_no_memory + later.refused_no_memory,
            refused_backlog: self.refused_backlog + later.refused_backlog,
            auth_failures: self.auth_failures + later.auth_failures,
            open_too_many: self.open_too_many + later.open_too_many,
            open_no_memory: self.open_no_memory + later.open_no_memory,
            window_grows: self.window_grows + later.window_grows,
            window_shrinks: self.window_shrinks + later.window_shrinks,
            credit_stalls: self.credit_stalls + later.credit_stalls,
            rtt_samples: self.rtt_samples + later.rtt_samples,
            recv_held: later.recv_held,
            rtt: later.rtt.or(self.rtt),
        }
    }
}

impl Retired {
    /// Folds a removed channel's counters in.
    pub fn retire(&mut self, kind: ChannelKind, class: Class, service: &str, s: &ChannelStats) {
        let t = entry(&mut self.entries, kind, class, service);
        t.add_stats(s);
        t.opened += 1;
    }
}

impl Session {
    /// Channel traffic by kind, class and service: closed channels'
    /// totals plus the live channels' counters now (see the module doc).
    pub fn traffic(&self) -> Vec<(TrafficKey, Traffic)> {
        let mut out = self.retired.entries.clone();
        for c in self.channels.values() {
            let t = entry(&mut out, c.kind, c.class, &c.service);
            t.add_stats(&c.stats);
            t.opened += 1;
            t.active += 1;
            t.queued_bytes += if c.reliable() {
                c.write_offset - c.send_offset
            } else {
                c.dgram_bytes as u64
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::{connected, drain_stream, open, pattern};
    use crate::session::{Recv, SendError};

    fn key<'a>(
        t: &'a [(TrafficKey, Traffic)],
        kind: ChannelKind,
        svc: &str,
    ) -> Option<&'a Traffic> {
        t.iter()
            .find(|(k, _)| k.kind == kind && k.service == svc)
            .map(|(_, t)| t)
    }

    /// Totals per kind, class and service keep the bytes of closed
    /// channels (a counter must never go down), count live channels and
    /// what waits to be sent; a sender held by the peer's window counts a
    /// credit stall.
    #[test]
    fn traffic_outlives_channels_and_stalls_are_counted() {
        let mut p = connected(11);
        let (a, b) = open(&mut p, ChannelKind::Stream, Class::Bulk, "svc");
        let (da, db) = open(&mut p, ChannelKind::Datagram, Class::Latency, "dg");
        // B does not read: A runs out of credit with bytes still queued.
        let mut sent = 0u64;
        while let Ok(n) = p.a.send(a, pattern(3, 64 * 1024)) {
            sent += n as u64;
            p.drive().expect("drive");
        }
        assert!(matches!(
            p.a.send(a, pattern(3, 10)),
            Err(SendError::Blocked)
        ));
        assert!(p.a.stats().credit_stalls >= 1, "{:?}", p.a.stats());
        let t = p.a.traffic();
        let s = key(&t, ChannelKind::Stream, "svc").expect("stream entry");
        assert_eq!((s.active, s.opened), (1, 1));
        assert!(s.queued_bytes > 0, "bytes wait for credit: {s:?}");
        assert!(p.a.send_datagram(da, pattern(4, 100)).expect("dgram"));
        p.drive().expect("drive");
        // B reads everything; both close.
        let mut got = Vec::new();
        p.a.finish(a).expect("finish");
        for _ in 0..1000 {
            if drain_stream(&mut p.b, b, &mut got) {
                break;
            }
            p.drive().expect("drive");
        }
        assert_eq!(got.len() as u64, sent);
        assert!(matches!(p.b.recv_datagram(db), Ok(Recv::Data(_))));
        p.b.finish(b).expect("finish");
        p.drive().expect("drive");
        let _ = drain_stream(&mut p.a, a, &mut Vec::new());
        let _ = p.a.release(a);
        let _ = p.b.release(b);
        p.drive().expect("drive");
        assert!(p.a.channel_stats(a).is_none(), "channel gone at A");
        let t = p.a.traffic();
        let s = key(&t, ChannelKind::Stream, "svc").expect("kept after close");
        assert_eq!(s.bytes_tx, sent);
        assert_eq!((s.active, s.opened, s.queued_bytes), (0, 1, 0));
        let d = key(&t, ChannelKind::Datagram, "dg").expect("dgram entry");
        assert_eq!((d.bytes_tx, d.records_tx, d.active), (100, 1, 1));
        let tb = p.b.traffic();
        assert_eq!(
            key(&tb, ChannelKind::Stream, "svc").map(|s| s.bytes_rx),
            Some(sent)
        );
    }

    #[test]
    fn entries_are_capped() {
        let mut e = Vec::new();
        for i in 0..MAX_TRAFFIC_KEYS + 10 {
            entry(&mut e, ChannelKind::Stream, Class::Bulk, &format!("s{i}")).bytes_tx += 1;
        }
        assert_eq!(e.len(), MAX_TRAFFIC_KEYS + 1);
        let other = e
            .iter()
            .find(|(k, _)| k.service == OTHER_SERVICE)
            .map(|(_, t)| t.bytes_tx);
        assert_eq!(other, Some(10));
        // A known key is still found after the cap.
        entry(&mut e, ChannelKind::Stream, Class::Bulk, "s3").bytes_tx += 1;
        assert_eq!(e[3].1.bytes_tx, 2);
    }

    #[test]
    fn plus_adds_counters_and_keeps_the_later_gauges() {
        let a = SessionStats {
            bytes_tx: 5,
            links_up: 2,
            recv_held: 100,
            rtt: Some(std::time::Duration::from_micros(50)),
            ..Default::default()
        };
        let b = SessionStats {
            bytes_tx: 7,
            links_up: 1,
            recv_held: 3,
            ..Default::default()
        };
        let c = a.plus(&b);
        assert_eq!((c.bytes_tx, c.links_up, c.recv_held), (12, 3, 3));
        assert_eq!(c.rtt, a.rtt);
    }
}

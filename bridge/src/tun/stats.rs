//! Counters of the TUN front-end, shared with `status` and the metrics
//! exporter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Live counters (atomics, updated by the forwarding tasks). "tx" is from
/// the interface to the peer, "rx" from the peer to the interface.
#[derive(Debug, Default)]
pub struct TunStats {
    /// Packets read from the interface and queued for the peer.
    pub tx_packets: AtomicU64,
    /// Their bytes (IP packets, without the virtio header).
    pub tx_bytes: AtomicU64,
    /// Of these, TSO/USO superpackets.
    pub tx_superpackets: AtomicU64,
    /// Packets received from the peer and written to the interface (a
    /// superpacket segmented here counts once).
    pub rx_packets: AtomicU64,
    /// Their bytes.
    pub rx_bytes: AtomicU64,
    /// Of these, superpackets.
    pub rx_superpackets: AtomicU64,
    /// Superpackets or partial checksums completed in software because the
    /// interface here has no offloads.
    pub rx_software_offload: AtomicU64,

    /// Dropped: read from the interface but not a sane IP packet.
    pub drop_malformed_tun: AtomicU64,
    /// Dropped: received from the peer but not a sane IP packet.
    pub drop_malformed_peer: AtomicU64,
    /// Dropped: the channel's send queue was full (should not happen: the
    /// fair queue hands over only while it is short).
    pub drop_queue_full: AtomicU64,
    /// Dropped: the link was down or the channel not (yet) open.
    pub drop_link_down: AtomicU64,
    /// Dropped: larger than a record may be.
    pub drop_too_big: AtomicU64,
    /// Dropped: the kernel refused to take a packet written to the
    /// interface (e.g. interface down).
    pub drop_tun_write: AtomicU64,

    /// Packets sent on each lane (latency, ack, bulk).
    pub tx_lane: [AtomicU64; super::flow::LANES],
    /// Fair queue: dropped by CoDel (waited above the target for an
    /// interval).
    pub fq_aqm_drops: AtomicU64,
    /// Fair queue: marked Congestion Experienced by CoDel instead.
    pub fq_ecn_marks: AtomicU64,
    /// Fair queue: dropped from the fattest flow at the queue's limit.
    pub fq_overflow_drops: AtomicU64,
    /// Fair queue: flows that became active (served first while sparse).
    pub fq_new_flows: AtomicU64,
    /// Fair queue: bytes held now, all queues and lanes.
    pub fq_backlog_bytes: AtomicU64,
    /// Fair queue: most bytes one queue held (both lanes).
    pub fq_backlog_max: AtomicU64,

    /// Send channels opened to the peer (more than the queue count means
    /// reopens after the peer restarted).
    pub channel_opens: AtomicU64,
    /// Send channels lost (reset by a peer restart, or closed).
    pub channel_resets: AtomicU64,
    /// Receive channels accepted from the peer.
    pub channel_accepts: AtomicU64,
    /// Carrier changes made.
    pub carrier_changes: AtomicU64,

    /// Carrier is on (the link is up).
    pub carrier: AtomicBool,
    /// Offloads are on.
    pub offload: AtomicBool,
    /// Number of queues in use.
    pub queues: AtomicU64,
}

/// A copy of [`TunStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TunCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_superpackets: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_superpackets: u64,
    pub rx_software_offload: u64,
    pub drop_malformed_tun: u64,
    pub drop_malformed_peer: u64,
    pub drop_queue_full: u64,
    pub drop_link_down: u64,
    pub drop_too_big: u64,
    pub drop_tun_write: u64,
    pub tx_latency: u64,
    pub tx_ack: u64,
    pub tx_bulk: u64,
    pub fq_aqm_drops: u64,
    pub fq_ecn_marks: u64,
    pub fq_overflow_drops: u64,
    pub fq_new_flows: u64,
    pub fq_backlog_bytes: u64,
    pub fq_backlog_max: u64,
    pub channel_opens: u64,
    pub channel_resets: u64,
    pub channel_accepts: u64,
    pub carrier_changes: u64,
    pub carrier: bool,
    pub offload: bool,
    pub queues: u64,
}

impl TunCounters {
    /// All drops together.
    pub fn drops(&self) -> u64 {
        self.drop_malformed_tun
            + self.drop_malformed_peer
            + self.drop_queue_full
            + self.drop_link_down
            + self.drop_too_big
            + self.drop_tun_write
            + self.fq_aqm_drops
            + self.fq_overflow_drops
    }
}

impl TunStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> TunCounters {
        TunCounters {
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_superpackets: self.tx_superpackets.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            rx_superpackets: self.rx_superpackets.load(Relaxed),
            rx_software_offload: self.rx_software_offload.load(Relaxed),
            drop_malformed_tun: self.drop_malformed_tun.load(Relaxed),
            drop_malformed_peer: self.drop_malformed_peer.load(Relaxed),
            drop_queue_full: self.drop_queue_full.load(Relaxed),
            drop_link_down: self.drop_link_down.load(Relaxed),
            drop_too_big: self.drop_too_big.load(Relaxed),
            drop_tun_write: self.drop_tun_write.load(Relaxed),
            tx_latency: self.tx_lane[0].load(Relaxed),
            tx_ack: self.tx_lane[1].load(Relaxed),
            tx_bulk: self.tx_lane[2].load(Relaxed),
            fq_aqm_drops: self.fq_aqm_drops.load(Relaxed),
            fq_ecn_marks: self.fq_ecn_marks.load(Relaxed),
            fq_overflow_drops: self.fq_overflow_drops.load(Relaxed),
            fq_new_flows: self.fq_new_flows.load(Relaxed),
            fq_backlog_bytes: self.fq_backlog_bytes.load(Relaxed),
            fq_backlog_max: self.fq_backlog_max.load(Relaxed),
            channel_opens: self.channel_opens.load(Relaxed),
            channel_resets: self.channel_resets.load(Relaxed),
            channel_accepts: self.channel_accepts.load(Relaxed),
            carrier_changes: self.carrier_changes.load(Relaxed),
            carrier: self.carrier.load(Relaxed),
            offload: self.offload.load(Relaxed),
            queues: self.queues.load(Relaxed),
        }
    }

    /// The counters as a JSON object (for `status --json`), with the drops
    /// grouped by reason.
    pub fn to_json(&self) -> serde_json::Value {
        let c = self.snapshot();
        serde_json::json!({
            "carrier": c.carrier,
            "offload": c.offload,
            "queues": c.queues,
            "tx": {
                "packets": c.tx_packets, "bytes": c.tx_bytes,
                "superpackets": c.tx_superpackets,
                "lanes": {
                    "latency": c.tx_latency, "ack": c.tx_ack, "bulk": c.tx_bulk,
                },
            },
            "queue": {
                "backlog_bytes": c.fq_backlog_bytes,
                "backlog_max_bytes": c.fq_backlog_max,
                "new_flows": c.fq_new_flows,
                "ecn_marks": c.fq_ecn_marks,
                "drops": {
                    "aqm": c.fq_aqm_drops,
                    "overflow": c.fq_overflow_drops,
                },
            },
            "rx": {
                "packets": c.rx_packets, "bytes": c.rx_bytes,
                "superpackets": c.rx_superpackets,
                "software_offload": c.rx_software_offload,
            },
            "drops": {
                "aqm": c.fq_aqm_drops,
                "overflow": c.fq_overflow_drops,
                "malformed_tun": c.drop_malformed_tun,
                "malformed_peer": c.drop_malformed_peer,
                "queue_full": c.drop_queue_full,
                "link_down": c.drop_link_down,
                "too_big": c.drop_too_big,
                "tun_write": c.drop_tun_write,
            },
            "channels": {
                "opens": c.channel_opens, "resets": c.channel_resets,
                "accepts": c.channel_accepts,
            },
            "carrier_changes": c.carrier_changes,
        })
    }
}

impl TunStats {
    /// The counters as metrics (the same as [`to_json`](Self::to_json)).
    pub fn export(&self, o: &mut crate::metrics::Out<'_>) {
        use crate::metrics::defs::*;
        let c = self.snapshot();
        for (dir, packets, bytes, sp) in [
            ("tx", c.tx_packets, c.tx_bytes, c.tx_superpackets),
            ("rx", c.rx_packets, c.rx_bytes, c.rx_superpackets),
        ] {
            o.counter(&TUN_PACKETS, &[("direction", dir)], packets);
            o.counter(&TUN_BYTES, &[("direction", dir)], bytes);
            o.counter(&TUN_SUPERPACKETS, &[("direction", dir)], sp);
        }
        for (lane, n) in [
            ("latency", c.tx_latency),
            ("ack", c.tx_ack),
            ("bulk", c.tx_bulk),
        ] {
            o.counter(&TUN_LANE_PACKETS, &[("lane", lane)], n);
        }
        for (reason, n) in [
            ("aqm", c.fq_aqm_drops),
            ("overflow", c.fq_overflow_drops),
            ("malformed_tun", c.drop_malformed_tun),
            ("malformed_peer", c.drop_malformed_peer),
            ("queue_full", c.drop_queue_full),
            ("link_down", c.drop_link_down),
            ("too_big", c.drop_too_big),
            ("tun_write", c.drop_tun_write),
        ] {
            o.counter(&TUN_DROPS, &[("reason", reason)], n);
        }
        o.counter(&TUN_ECN_MARKS, &[], c.fq_ecn_marks);
        o.gauge(&TUN_QUEUE, &[], c.fq_backlog_bytes as f64);
        o.gauge(&TUN_CARRIER, &[], f64::from(u8::from(c.carrier)));
    }
}

/// `counter += 1`.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// `counter += n`.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status --json` shows the fair queue's drops by reason, and they
    /// count among all drops.
    #[test]
    fn queue_drops_by_reason_in_the_json() {
        let s = TunStats::default();
        add(&s.fq_aqm_drops, 3);
        add(&s.fq_overflow_drops, 5);
        add(&s.fq_ecn_marks, 7);
        add(&s.tx_lane[0], 2);
        let j = s.to_json();
        assert_eq!(j.pointer("/queue/drops/aqm"), Some(&3.into()));
        assert_eq!(j.pointer("/queue/drops/overflow"), Some(&5.into()));
        assert_eq!(j.pointer("/queue/ecn_marks"), Some(&7.into()));
        assert_eq!(j.pointer("/drops/aqm"), Some(&3.into()));
        assert_eq!(j.pointer("/tx/lanes/latency"), Some(&2.into()));
        assert_eq!(s.snapshot().drops(), 8);
    }
}

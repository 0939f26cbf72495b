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
    /// Dropped: the channel's send queue was full (the cable is busy).
    pub drop_queue_full: AtomicU64,
    /// Dropped: the link was down or the channel not (yet) open.
    pub drop_link_down: AtomicU64,
    /// Dropped: larger than a record may be.
    pub drop_too_big: AtomicU64,
    /// Dropped: the kernel refused to take a packet written to the
    /// interface (e.g. interface down).
    pub drop_tun_write: AtomicU64,

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
            },
            "rx": {
                "packets": c.rx_packets, "bytes": c.rx_bytes,
                "superpackets": c.rx_superpackets,
                "software_offload": c.rx_software_offload,
            },
            "drops": {
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

/// `counter += 1`.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// `counter += n`.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

//! What the fair queue needs to know of a packet: its flow and its lane.
//!
//! * **Flow**: a keyed hash of the 5-tuple (addresses, protocol, ports) for
//!   TCP and UDP over IPv4 and IPv6 (IPv6 hop-by-hop, routing and
//!   destination-options headers are skipped), as `fq_codel` hashes with
//!   the kernel's flow dissector. Other protocols, and fragments (only the
//!   first carries the ports, and all of a datagram's fragments must stay
//!   in one queue, in order), hash the addresses and the protocol. The key is
//!   random per process (`RandomState`), so a remote host cannot aim
//!   packets of different flows at one queue.
//! * **Lane**: [`Lane::Latency`] for packets someone waits on and that
//!   carry little: ICMP and ICMPv6, DSCP EF (46), CS6 (48) and CS7 (56)
//!   (voice, network control), and UDP with at most [`SMALL_UDP`] bytes of
//!   payload (DNS, NTP, game and VoIP packets, QUIC acknowledgements).
//!   [`Lane::Ack`] for TCP segments without payload other than FIN and RST
//!   (pure ACKs, SYNs; a FIN or RST overtaking the data before it would be
//!   taken for the end early). Everything else is [`Lane::Bulk`].
//!
//!   Pure ACKs get a lane of their own, a normal-class channel: the session
//!   sends it before bulk (so the ACKs of a transfer one way do not wait
//!   behind the data of another the other way), but it does not switch on
//!   the transport's latency mode, which every TCP transfer would keep on
//!   with its ACKs and so cap its own data in the cable at 128 KiB
//!   (measured: one stream fell from ~4.3 to ~3.2 Gbit/s).
//!
//! Works on records that passed [`packet::check`](super::packet::check)
//! (the IP header is sane and its length is the packet's); never panics on
//! any input (every read is bounds-checked).

use std::hash::BuildHasher;

use super::packet::VNET_HDR_LEN;

/// UDP payloads up to this size go on the latency lane: a DNS query, an NTP
/// or VoIP packet, a game update or a QUIC acknowledgement fits; a bulk UDP
/// sender's datagrams (iperf3 uses the MTU) do not.
pub const SMALL_UDP: usize = 256;

/// Which datagram channel a packet takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A latency-class channel: served first by the session, and bulk is
    /// held back in the cable while it is used.
    Latency = 0,
    /// A normal-class channel for pure TCP ACKs: before bulk, without
    /// latency mode.
    Ack = 1,
    /// A bulk-class channel.
    Bulk = 2,
}

/// Number of lanes.
pub const LANES: usize = 3;

impl Lane {
    /// All, in the order the arrays indexed by lane use.
    pub const ALL: [Lane; LANES] = [Lane::Latency, Lane::Ack, Lane::Bulk];
}

/// The flow and lane of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    /// Keyed hash of the flow's identity.
    pub hash: u64,
    /// The lane.
    pub lane: Lane,
}

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
/// DSCP values that always go on the latency lane: EF, CS6, CS7.
const LATENCY_DSCP: [u8; 3] = [46, 48, 56];
/// TCP flags FIN and RST.
const FIN_RST: u8 = 0x01 | 0x04;

/// The parts of the headers that decide.
#[derive(Hash)]
struct Key<'a> {
    src: &'a [u8],
    dst: &'a [u8],
    proto: u8,
    ports: [u8; 4],
}

/// Classifies one record (virtio header + IP packet). `hasher` keys the
/// flow hash.
pub fn classify(record: &[u8], hasher: &impl BuildHasher) -> FlowInfo {
    let pkt = record.get(VNET_HDR_LEN..).unwrap_or_default();
    let Some(ip) = parse_ip(pkt) else {
        // Not IP (cannot happen after `check`): one flow for all of these.
        return FlowInfo {
            hash: 0,
            lane: Lane::Bulk,
        };
    };
    let l4 = pkt.get(ip.l4..).unwrap_or_default();
    let ports: [u8; 4] = match (ip.fragmented, ip.proto) {
        (false, TCP | UDP) => l4
            .get(..4)
            .and_then(|p| p.try_into().ok())
            .unwrap_or_default(),
        _ => [0; 4],
    };
    let hash = hasher.hash_one(Key {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        ports,
    });
    let lane = if LATENCY_DSCP.contains(&ip.dscp) || matches!(ip.proto, ICMP | ICMPV6) {
        Lane::Latency
    } else if ip.fragmented {
        // A fragmented datagram is large by definition.
        Lane::Bulk
    } else {
        match ip.proto {
            TCP => match (l4.get(12), l4.get(13)) {
                (Some(off), Some(&flags)) => {
                    let doff = usize::from(off >> 4) * 4;
                    let payload = l4.len().saturating_sub(doff);
                    if payload == 0 && flags & FIN_RST == 0 {
                        Lane::Ack
                    } else {
                        Lane::Bulk
                    }
                }
                _ => Lane::Bulk,
            },
            UDP if l4.len() <= 8 + SMALL_UDP => Lane::Latency,
            _ => Lane::Bulk,
        }
    };
    FlowInfo { hash, lane }
}

struct Ip<'a> {
    src: &'a [u8],
    dst: &'a [u8],
    proto: u8,
    dscp: u8,
    /// Offset of the transport header.
    l4: usize,
    /// Part of a fragmented datagram.
    fragmented: bool,
}

fn parse_ip(pkt: &[u8]) -> Option<Ip<'_>> {
    match pkt.first()? >> 4 {
        4 => {
            let ihl = usize::from(pkt.first()? & 0x0f) * 4;
            let frag = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]);
            let offset = frag & 0x1fff;
            let more = frag & 0x2000 != 0;
            Some(Ip {
                src: pkt.get(12..16)?,
                dst: pkt.get(16..20)?,
                proto: *pkt.get(9)?,
                dscp: pkt.get(1)? >> 2,
                l4: ihl,
                fragmented: more || offset != 0,
            })
        }
        6 => {
            let tc = (u16::from_be_bytes([*pkt.first()?, *pkt.get(1)?]) >> 4) as u8;
            let mut next = *pkt.get(6)?;
            let mut at = 40;
            let mut fragmented = false;
            // Hop-by-hop, routing, destination options: skip (a few at
            // most; a packet with more is hashed by its addresses).
            for _ in 0..4 {
                match next {
                    0 | 43 | 60 => {
                        next = *pkt.get(at)?;
                        at += (usize::from(*pkt.get(at + 1)?) + 1) * 8;
                    }
                    44 => {
                        fragmented = true;
                        next = *pkt.get(at)?;
                        at += 8;
                    }
                    _ => break,
                }
            }
            Some(Ip {
                src: pkt.get(8..24)?,
                dst: pkt.get(24..40)?,
                proto: next,
                dscp: tc >> 2,
                l4: at,
                fragmented,
            })
        }
        _ => None,
    }
}

/// Marks a packet Congestion Experienced (RFC 3168) instead of dropping
/// it, if its sender said it understands ECN (ECT(0) or ECT(1)); returns
/// whether it did. IPv4's header checksum is updated (RFC 1624). A TSO
/// superpacket is marked as a whole, as the kernel's `fq_codel` does: every
/// segment cut from it carries the mark.
pub fn mark_ce(record: &mut [u8]) -> bool {
    let Some(pkt) = record.get_mut(VNET_HDR_LEN..) else {
        return false;
    };
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            let tos = pkt[1];
            if tos & 0x03 == 0 {
                return false;
            }
            if tos & 0x03 == 0x03 {
                return true;
            }
            let old = u16::from_be_bytes([pkt[0], tos]);
            let new = old | 0x03;
            pkt[1] = tos | 0x03;
            // HC' = ~(~HC + ~m + m')
            let hc = u16::from_be_bytes([pkt[10], pkt[11]]);
            let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            pkt[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            true
        }
        Some(6) if pkt.len() >= 40 => {
            // Traffic class: low nibble of byte 0, high nibble of byte 1;
            // ECN is its two low bits, bits 4-5 of byte 1.
            let ecn = (pkt[1] >> 4) & 0x03;
            if ecn == 0 {
                return false;
            }
            pkt[1] |= 0x30;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use std::hash::RandomState;

    /// A record (zero virtio header) of the packet built by `b` with
    /// `payload` bytes.
    macro_rules! rec {
        ($b:expr, $payload:expr) => {{
            let mut v = vec![0u8; VNET_HDR_LEN];
            let payload: Vec<u8> = std::iter::repeat_n(1u8, $payload).collect();
            $b.write(&mut v, &payload).expect("build");
            v
        }};
    }

    fn v4() -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
    }

    #[test]
    fn lanes() {
        let h = RandomState::new();
        let lane = |r: &[u8]| classify(r, &h).lane;
        assert_eq!(
            lane(&rec!(v4().icmpv4_echo_request(1, 1), 56)),
            Lane::Latency
        );
        assert_eq!(lane(&rec!(v4().tcp(1, 2, 3, 100).ack(5), 0)), Lane::Ack);
        assert_eq!(lane(&rec!(v4().tcp(1, 2, 3, 100).syn(), 0)), Lane::Ack);
        assert_eq!(
            lane(&rec!(v4().tcp(1, 2, 3, 100).fin().ack(5), 0)),
            Lane::Bulk
        );
        assert_eq!(lane(&rec!(v4().tcp(1, 2, 3, 100).rst(), 0)), Lane::Bulk);
        assert_eq!(lane(&rec!(v4().tcp(1, 2, 3, 100).ack(5), 1)), Lane::Bulk);
        assert_eq!(lane(&rec!(v4().udp(53, 53), SMALL_UDP)), Lane::Latency);
        assert_eq!(lane(&rec!(v4().udp(53, 53), SMALL_UDP + 1)), Lane::Bulk);
        let v6 = || PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64);
        assert_eq!(
            lane(&rec!(v6().icmpv6_echo_request(1, 1), 56)),
            Lane::Latency
        );
        assert_eq!(lane(&rec!(v6().udp(1, 2), 1000)), Lane::Bulk);
        assert_eq!(lane(&rec!(v6().tcp(1, 2, 3, 100).ack(1), 0)), Lane::Ack);
        // DSCP EF on a large packet: latency.
        let mut r = rec!(v4().udp(1, 2), 1000);
        r[VNET_HDR_LEN + 1] = 46 << 2;
        assert_eq!(lane(&r), Lane::Latency);
        // Garbage never panics.
        for n in 0..60 {
            let _ = classify(&vec![0x45u8; n], &h);
            let _ = classify(&vec![0x60u8; n], &h);
            let _ = mark_ce(&mut vec![0x46u8; n]);
        }
    }

    #[test]
    fn flows_are_5_tuples() {
        let h = RandomState::new();
        let f = |src: u16, dst: u16| classify(&rec!(v4().udp(src, dst), 1000), &h).hash;
        assert_eq!(f(1, 2), f(1, 2));
        assert_ne!(f(1, 2), f(1, 3));
        assert_ne!(f(1, 2), f(2, 2));
        // Payload does not matter; the protocol does.
        let t = |n| classify(&rec!(v4().tcp(1, 2, 3, 100), n), &h).hash;
        assert_eq!(t(0), t(1000));
        assert_ne!(t(0), f(1, 2));
        // A later IPv4 fragment hashes like its first fragment would
        // without ports: both on addresses only.
        let mut a = rec!(v4().udp(1, 2), 1000);
        let mut b = rec!(v4().udp(7, 8), 1000);
        for r in [&mut a, &mut b] {
            r[VNET_HDR_LEN + 6] = 0x20; // more fragments
        }
        assert_eq!(classify(&a, &h).hash, classify(&b, &h).hash);
    }

    #[test]
    fn ce_marking() {
        let mut r = rec!(v4().udp(1, 2), 100);
        assert!(!mark_ce(&mut r), "not ECN-capable");
        r[VNET_HDR_LEN + 1] = 0x02; // ECT(0)
                                    // Fix the checksum for the new TOS, then mark.
        let h = etherparse::Ipv4HeaderSlice::from_slice(&r[VNET_HDR_LEN..])
            .expect("v4")
            .to_header();
        let sum = h.calc_header_checksum();
        r[VNET_HDR_LEN + 10..VNET_HDR_LEN + 12].copy_from_slice(&sum.to_be_bytes());
        assert!(mark_ce(&mut r));
        let h = etherparse::Ipv4HeaderSlice::from_slice(&r[VNET_HDR_LEN..])
            .expect("v4")
            .to_header();
        assert_eq!(h.ecn.value(), 3);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let mut r6 = rec!(PacketBuilder::ipv6([1; 16], [2; 16], 64).udp(1, 2), 10);
        assert!(!mark_ce(&mut r6));
        r6[VNET_HDR_LEN + 1] |= 0x10; // ECT(1)
        assert!(mark_ce(&mut r6));
        assert_eq!((r6[VNET_HDR_LEN + 1] >> 4) & 3, 3);
    }
}

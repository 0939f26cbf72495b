//! One TUN packet as a datagram record, and the checks applied to it.
//!
//! # Record format
//!
//! Every record on the `tun` datagram channel is
//!
//! ```text
//! +------------------------------+-------------------------------------+
//! | virtio_net_hdr (10 bytes, LE) | IPv4 or IPv6 packet (no link header) |
//! +------------------------------+-------------------------------------+
//! ```
//!
//! The header is the one the Linux TUN driver reads and writes with
//! `IFF_VNET_HDR` (`struct virtio_net_hdr`, little-endian as on every
//! little-endian host): GSO type and segment size of a TSO/USO superpacket,
//! and `NEEDS_CSUM` with `csum_start`/`csum_offset` when the transport
//! checksum is still to be completed (`CHECKSUM_PARTIAL`). A side whose TUN
//! has offloads passes the kernel's header through unchanged (after the
//! checks below), so a 64 KiB superpacket crosses the cable as one record and
//! the far kernel receives it with the same GSO and checksum metadata; a side
//! without offloads sends an all-zero header and, when it receives a
//! superpacket or a packet with `NEEDS_CSUM`, segments it and completes the
//! checksums in software before writing it.
//!
//! # Checks
//!
//! [`check`] accepts a record only if the IP header is sane and its length
//! field matches the packet exactly, and if the virtio header is consistent
//! with the packet (GSO type matches the IP version and transport, checksum
//! field inside the packet, transport header complete). It normalises
//! `hdr_len` (the kernel reports the whole linear part for forwarded
//! packets) and clears flags it does not know. Neither side's kernel is
//! trusted blindly: both directions run the same checks.

use etherparse::{IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice};

/// Length of the virtio-net header in front of every packet.
pub const VNET_HDR_LEN: usize = 10;
/// Largest IP packet carried: an IPv4 packet is at most 65535 bytes, an
/// IPv6 packet (without jumbo payload) 40 + 65535.
pub const MAX_PACKET: usize = 40 + 65535;
/// Largest record.
pub const MAX_RECORD: usize = VNET_HDR_LEN + MAX_PACKET;
/// Most segments a superpacket may expand to when segmented in software.
pub const MAX_SEGMENTS: usize = 1024;

/// `flags`: the transport checksum is partial (`csum_start`, `csum_offset`).
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was verified by the sending side's kernel.
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a superpacket.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: IPv4 TCP superpacket (TSO).
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: IPv6 TCP superpacket (TSO).
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP superpacket (USO), IPv4 or IPv6.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: TCP with ECN (CWR on the first segment only).
pub const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr`, decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Decodes the first [`VNET_HDR_LEN`] bytes of `b` (which must be that
    /// long).
    pub fn decode(b: &[u8]) -> VnetHdr {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// A TSO/USO superpacket.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// The transport checksum still has to be completed.
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// The header as tun-rs's software segmentation wants it.
    pub(crate) fn to_tun_rs(self) -> tun_rs::VirtioNetHdr {
        tun_rs::VirtioNetHdr {
            flags: self.flags,
            gso_type: self.gso_type,
            hdr_len: self.hdr_len,
            gso_size: self.gso_size,
            csum_start: self.csum_start,
            csum_offset: self.csum_offset,
        }
    }
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Headers insane or inconsistent with the length.
    Malformed(&'static str),
    /// Larger than any IP packet can be.
    TooBig,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::Malformed(why) => write!(f, "malformed: {why}"),
            Reject::TooBig => write!(f, "larger than {MAX_PACKET} bytes"),
        }
    }
}

/// A record that passed [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The header, normalised.
    pub hdr: VnetHdr,
    /// The normalised header differs from the record's bytes.
    pub changed: bool,
    /// IPv6 (else IPv4).
    pub is_v6: bool,
}

const MALFORMED_SHORT: Reject = Reject::Malformed("shorter than an IP header");

/// Checks one record (virtio header + IP packet); see the module docs.
pub fn check(record: &[u8]) -> Result<Checked, Reject> {
    if record.len() > MAX_RECORD {
        return Err(Reject::TooBig);
    }
    if record.len() < VNET_HDR_LEN + 20 {
        return Err(MALFORMED_SHORT);
    }
    let raw = VnetHdr::decode(&record[..VNET_HDR_LEN]);
    let pkt = &record[VNET_HDR_LEN..];
    let len = pkt.len();

    // The IP header: sane, and its length field says exactly this packet.
    let (is_v6, ip_hdr_len, proto) = match pkt[0] >> 4 {
        4 => {
            let h = Ipv4HeaderSlice::from_slice(pkt)
                .map_err(|_| Reject::Malformed("bad IPv4 header"))?;
            if usize::from(h.total_len()) != len {
                return Err(Reject::Malformed(
                    "IPv4 total length differs from the packet",
                ));
            }
            (false, h.slice().len(), Some(h.protocol()))
        }
        6 => {
            let h = Ipv6HeaderSlice::from_slice(pkt)
                .map_err(|_| Reject::Malformed("bad IPv6 header"))?;
            if 40 + usize::from(h.payload_length()) != len {
                return Err(Reject::Malformed(
                    "IPv6 payload length differs from the packet",
                ));
            }
            // Extension headers may sit between it and the transport.
            let proto = (h.next_header() == IpNumber::TCP || h.next_header() == IpNumber::UDP)
                .then(|| h.next_header());
            (true, 40, proto)
        }
        _ => return Err(Reject::Malformed("not IPv4 or IPv6")),
    };

    let mut hdr = raw;
    hdr.flags &= F_NEEDS_CSUM | F_DATA_VALID;
    if hdr.needs_csum() {
        let start = usize::from(hdr.csum_start);
        if start < ip_hdr_len {
            return Err(Reject::Malformed("checksum start inside the IP header"));
        }
        if start + usize::from(hdr.csum_offset) + 2 > len {
            return Err(Reject::Malformed("checksum field beyond the packet"));
        }
    } else {
        hdr.csum_start = 0;
        hdr.csum_offset = 0;
    }

    let base = hdr.gso_type & !GSO_ECN;
    let ecn = hdr.gso_type & GSO_ECN != 0;
    if base == GSO_NONE {
        if ecn {
            return Err(Reject::Malformed("ECN flag without GSO"));
        }
        hdr.gso_size = 0;
        hdr.hdr_len = 0;
    } else {
        let tcp = match base {
            GSO_TCPV4 if !is_v6 => true,
            GSO_TCPV6 if is_v6 => true,
            GSO_UDP_L4 if !ecn => false,
            _ => return Err(Reject::Malformed("GSO type does not fit the packet")),
        };
        if !hdr.needs_csum() {
            return Err(Reject::Malformed("superpacket without a partial checksum"));
        }
        if hdr.gso_size == 0 {
            return Err(Reject::Malformed("superpacket with segment size 0"));
        }
        let want_proto = if tcp { IpNumber::TCP } else { IpNumber::UDP };
        if proto.is_some_and(|p| p != want_proto) {
            return Err(Reject::Malformed("GSO type does not match the transport"));
        }
        if hdr.csum_offset != if tcp { 16 } else { 6 } {
            return Err(Reject::Malformed(
                "checksum offset does not match the transport",
            ));
        }
        let start = usize::from(hdr.csum_start);
        let l4_len = if tcp {
            let doff = pkt
                .get(start + 12)
                .map(|b| usize::from(b >> 4) * 4)
                .ok_or(Reject::Malformed("TCP header cut short"))?;
            if !(20..=60).contains(&doff) {
                return Err(Reject::Malformed("bad TCP header length"));
            }
            doff
        } else {
            8
        };
        if start + l4_len > len {
            return Err(Reject::Malformed("transport header cut short"));
        }
        let payload = len - start - l4_len;
        if payload.div_ceil(usize::from(hdr.gso_size)) > MAX_SEGMENTS {
            return Err(Reject::Malformed("too many segments"));
        }
        // The kernel reports the whole linear part for forwarded packets;
        // what the far side needs is the headers' length.
        hdr.hdr_len = (start + l4_len) as u16;
    }
    Ok(Checked {
        hdr,
        changed: hdr != raw,
        is_v6,
    })
}

/// Turns checked records into plain IP packets for a TUN without offloads:
/// superpackets are segmented and partial checksums completed, in software.
/// Keeps its buffers between calls.
#[derive(Debug, Default)]
pub struct Plain {
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    scratch: Vec<u8>,
    /// What the last `prepare` produced.
    out: PlainOut,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum PlainOut {
    /// The record's own packet, unchanged.
    #[default]
    Record,
    /// One packet in `scratch`.
    Scratch,
    /// This many segments in `bufs`/`sizes`.
    Segments(usize),
}

impl Plain {
    /// Prepares `record` (which passed [`check`] as `c`); returns how many
    /// packets [`packet`](Self::packet) then yields, and whether software
    /// had to do the offload work.
    pub fn prepare(&mut self, record: &[u8], c: &Checked) -> Result<(usize, bool), Reject> {
        let pkt = &record[VNET_HDR_LEN..];
        if c.hdr.is_gso() {
            self.scratch.clear();
            self.scratch.extend_from_slice(pkt);
            let seg_len = usize::from(c.hdr.hdr_len) + usize::from(c.hdr.gso_size);
            let n = (pkt.len() - usize::from(c.hdr.hdr_len))
                .div_ceil(usize::from(c.hdr.gso_size))
                .max(1);
            if self.bufs.len() < n {
                self.bufs.resize_with(n, Vec::new);
            }
            for b in &mut self.bufs[..n] {
                if b.len() < seg_len {
                    b.resize(seg_len, 0);
                }
            }
            self.sizes.clear();
            self.sizes.resize(n, 0);
            let got = tun_rs::gso_split(
                &mut self.scratch,
                c.hdr.to_tun_rs(),
                &mut self.bufs[..n],
                &mut self.sizes,
                0,
                c.is_v6,
            )
            .map_err(|_| Reject::Malformed("superpacket cannot be segmented"))?;
            self.out = PlainOut::Segments(got);
            Ok((got, true))
        } else if c.hdr.needs_csum() {
            self.scratch.clear();
            self.scratch.extend_from_slice(pkt);
            complete_checksum(&mut self.scratch, c.hdr.csum_start, c.hdr.csum_offset);
            self.out = PlainOut::Scratch;
            Ok((1, true))
        } else {
            self.out = PlainOut::Record;
            Ok((1, false))
        }
    }

    /// Packet `i` of the last [`prepare`](Self::prepare)d `record`.
    pub fn packet<'a>(&'a self, record: &'a [u8], i: usize) -> &'a [u8] {
        match self.out {
            PlainOut::Record => &record[VNET_HDR_LEN..],
            PlainOut::Scratch => &self.scratch,
            PlainOut::Segments(_) => &self.bufs[i][..self.sizes[i]],
        }
    }
}

/// Completes a partial transport checksum (`CHECKSUM_PARTIAL`): the field
/// holds the pseudo-header sum; add the bytes from `start` on and store the
/// complement. Bounds were checked by [`check`].
pub fn complete_checksum(pkt: &mut [u8], start: u16, offset: u16) {
    let at = usize::from(start) + usize::from(offset);
    let initial = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    pkt[at] = 0;
    pkt[at + 1] = 0;
    let mut sum = !tun_rs::checksum(&pkt[usize::from(start)..], u64::from(initial));
    if offset == 6 && sum == 0 {
        // UDP: zero means "no checksum".
        sum = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/TCP packet with `payload` bytes, checksums complete.
    fn tcp4(payload: usize) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .tcp(1000, 2000, 7, 65000)
            .ack(99);
        let data: Vec<u8> = (0..payload).map(|i| i as u8).collect();
        let mut v = Vec::new();
        b.write(&mut v, &data).expect("build");
        v
    }

    fn record(h: VnetHdr, pkt: &[u8]) -> Vec<u8> {
        let mut r = h.encode().to_vec();
        r.extend_from_slice(pkt);
        r
    }

    #[test]
    fn header_roundtrip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::decode(&h.encode()), h);
    }

    #[test]
    fn plain_packet_passes() {
        let p = tcp4(100);
        let c = check(&record(VnetHdr::default(), &p)).expect("ok");
        assert!(!c.changed);
        assert!(!c.is_v6);
    }

    #[test]
    fn rejects_bad_lengths_and_versions() {
        let mut p = tcp4(100);
        p.push(0); // trailing byte: length field disagrees
        assert!(matches!(
            check(&record(VnetHdr::default(), &p)),
            Err(Reject::Malformed(_))
        ));
        let mut p = tcp4(100);
        p[0] = 0x55;
        assert!(matches!(
            check(&record(VnetHdr::default(), &p)),
            Err(Reject::Malformed(_))
        ));
        assert!(matches!(check(&[0u8; 12]), Err(Reject::Malformed(_))));
        assert_eq!(check(&vec![0u8; MAX_RECORD + 1]), Err(Reject::TooBig));
    }

    #[test]
    fn gso_must_match_the_packet() {
        let p = tcp4(3000);
        let good = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 1500, // as the kernel reports it for a forwarded packet
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 16,
        };
        let c = check(&record(good, &p)).expect("ok");
        assert_eq!(c.hdr.hdr_len, 40);
        assert!(c.changed);
        for bad in [
            VnetHdr {
                gso_type: GSO_TCPV6,
                ..good
            },
            VnetHdr {
                gso_size: 0,
                ..good
            },
            VnetHdr { flags: 0, ..good },
            VnetHdr {
                csum_offset: 6,
                ..good
            },
            VnetHdr {
                csum_start: 10,
                ..good
            },
            VnetHdr {
                csum_start: 4000,
                ..good
            },
            VnetHdr {
                gso_type: 3,
                ..good
            },
            VnetHdr {
                gso_size: 1,
                ..good
            },
        ] {
            assert!(check(&record(bad, &p)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ipv6_superpackets() {
        let b = etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).udp(53, 5353);
        let data = vec![7u8; 5000];
        let mut p = Vec::new();
        b.write(&mut p, &data).expect("build");
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 0,
            gso_size: 1200,
            csum_start: 40,
            csum_offset: 6,
        };
        let rec = record(h, &p);
        let c = check(&rec).expect("ok");
        assert!(c.is_v6);
        assert_eq!(c.hdr.hdr_len, 48);
        let mut plain = Plain::default();
        let (n, _) = plain.prepare(&rec, &c).expect("split");
        assert_eq!(n, 5);
        let total: usize = (0..n).map(|i| plain.packet(&rec, i).len() - 48).sum();
        assert_eq!(total, 5000);
        // TCP GSO type on a UDP packet, or the IPv4 type on IPv6: refused.
        for gso_type in [GSO_TCPV6, GSO_TCPV4] {
            assert!(check(&record(VnetHdr { gso_type, ..h }, &p)).is_err());
        }
        // IPv6 payload length must match.
        let mut q = p.clone();
        q.push(0);
        assert!(check(&record(VnetHdr::default(), &q)).is_err());
    }

    #[test]
    fn software_segmentation_and_checksums() {
        // A superpacket with the TCP checksum field holding the pseudo
        // header sum, as the kernel hands it out.
        let full = tcp4(3000);
        let mut p = full.clone();
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 16,
        };
        let pseudo = pseudo_v4(&p[12..16], &p[16..20], 6, p.len() - 20);
        p[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let rec = record(hdr, &p);
        let c = check(&rec).expect("ok");
        let mut plain = Plain::default();
        let (n, soft) = plain.prepare(&rec, &c).expect("split");
        assert!(soft);
        let segs: Vec<Vec<u8>> = (0..n).map(|i| plain.packet(&rec, i).to_vec()).collect();
        assert_eq!(segs.len(), 3);
        let mut payload = Vec::new();
        for s in &segs {
            let sl = etherparse::SlicedPacket::from_ip(s).expect("parse");
            let Some(etherparse::NetSlice::Ipv4(ip)) = &sl.net else {
                panic!("v4")
            };
            let Some(etherparse::TransportSlice::Tcp(tcp)) = &sl.transport else {
                panic!("tcp")
            };
            let want = tcp
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                .expect("csum");
            assert_eq!(tcp.checksum(), want);
            payload.extend_from_slice(tcp.payload());
        }
        assert_eq!(payload, full[40..]);

        // Not a superpacket, partial checksum: completed in place.
        let mut small = tcp4(500);
        let csum = u16::from_be_bytes([small[36], small[37]]);
        let pseudo = pseudo_v4(&small[12..16], &small[16..20], 6, small.len() - 20);
        small[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let rec = record(h, &small);
        let c = check(&rec).expect("ok");
        let mut plain = Plain::default();
        assert_eq!(plain.prepare(&rec, &c).expect("csum"), (1, true));
        let got = plain.packet(&rec, 0).to_vec();
        assert_eq!(u16::from_be_bytes([got[36], got[37]]), csum);
    }

    /// The folded (not complemented) pseudo-header sum.
    fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u16 {
        let mut sum: u32 = 0;
        for c in src.chunks(2).chain(dst.chunks(2)) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        sum += u32::from(proto) + len as u32;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }
}

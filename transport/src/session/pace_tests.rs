//! Latency mode on the simulated pair: bulk held to the in-flight limit
//! while latency records flow, and never stalled by it.

use bytes::Bytes;

use super::tests::{connected, open};
use super::{ChannelKind, Class, Recv, SessionConfig};
use crate::sim::Pair;

/// Bytes A writes before anything comes back from B (no reports, no
/// acks): onto the wire, not yet delivered.
fn written_without_feedback(p: &mut Pair) -> usize {
    let before = p.wire_bytes[0];
    p.transmit();
    (p.wire_bytes[0] - before) as usize
}

#[test]
fn latency_mode_holds_bulk_to_the_in_flight_limit() {
    // Whole windows at once: bulk alone must be able to fill the wire.
    let mut p = super::tests::connected_with(super::tests::full_windows(), 31);
    let (bulk, _) = open(&mut p, ChannelKind::Stream, Class::Bulk, "bulk");
    let (lat, lat_b) = open(&mut p, ChannelKind::Message, Class::Latency, "rpc");
    let limit = SessionConfig::default().latency_in_flight as usize;
    // Without latency traffic bulk goes as far as credit allows.
    assert_eq!(p.a.send(bulk, Bytes::from(vec![1u8; 4 << 20])), Ok(4 << 20));
    let free = written_without_feedback(&mut p);
    assert!(free > 2 << 20, "bulk alone is not held: {free}");
    p.drive().expect("drive");
    // A latency record turns the mode on: the next bulk stops at the limit
    // (plus the one record that crossed it and the latency record).
    p.a.send_message(lat, Bytes::from_static(b"ping"))
        .expect("send");
    assert_eq!(p.a.send(bulk, Bytes::from(vec![2u8; 4 << 20])), Ok(4 << 20));
    let held = written_without_feedback(&mut p);
    assert!(
        held < limit + 80_000,
        "{held} bytes in flight, limit {limit}"
    );
    // B's reports release the rest; everything arrives.
    p.drive().expect("drive");
    assert_eq!(
        p.b.recv_message(lat_b),
        Ok(Recv::Data(Bytes::from_static(b"ping")))
    );
}

/// A's latency datagram is lost with the link (datagrams are not resent):
/// A is in latency mode, B is not, so B sends no reports of its own. A must
/// not wait for the mode to end (two seconds of a stalled bulk transfer):
/// it asks for a report.
#[test]
fn a_held_back_sender_asks_for_reports_instead_of_stalling() {
    let mut p = connected(37);
    let (bulk, bulk_b) = open(&mut p, ChannelKind::Stream, Class::Bulk, "bulk");
    let (lat, _) = open(&mut p, ChannelKind::Datagram, Class::Latency, "ping");
    assert_eq!(
        p.a.send_datagram(lat, Bytes::from_static(b"lost")),
        Ok(true)
    );
    p.transmit();
    p.link_reset();
    p.drive().expect("resume");
    let total = 8 << 20;
    let mut sent = 0;
    let mut got = 0;
    for _ in 0..10_000 {
        if sent < total {
            if let Ok(n) = p.a.send(bulk, Bytes::from(vec![3u8; total - sent])) {
                sent += n;
            }
        }
        p.drive().expect("drive");
        while let Ok(Recv::Data(b)) = p.b.recv(bulk_b, usize::MAX) {
            got += b.len();
        }
        if got == total {
            break;
        }
    }
    assert_eq!(
        got, total,
        "bulk stalled in latency mode without the clock moving"
    );
}

/// Issue 7 found the pump spinning at full CPU: latency mode ended while
/// more than the limit was in flight (the peer stops reporting when the
/// mode ends), and the mode's end, already past, stayed the session's next
/// deadline for ever. Its end must stop being a deadline once passed.
#[test]
fn the_end_of_latency_mode_is_no_deadline_once_passed() {
    // Whole windows at once: more than the limit must be in flight.
    let mut p = super::tests::connected_with(super::tests::full_windows(), 41);
    let (bulk, _) = open(&mut p, ChannelKind::Stream, Class::Bulk, "bulk");
    let (lat, _) = open(&mut p, ChannelKind::Datagram, Class::Latency, "ping");
    assert_eq!(p.a.send_datagram(lat, Bytes::from_static(b"x")), Ok(true));
    assert_eq!(p.a.send(bulk, Bytes::from(vec![4u8; 4 << 20])), Ok(4 << 20));
    // Held at the limit, nothing comes back.
    written_without_feedback(&mut p);
    let later = p.now + SessionConfig::default().latency_hold + std::time::Duration::from_millis(1);
    p.a.handle_timeout(later).expect("timers");
    let due = p.a.poll_timeout().expect("a keepalive at least");
    assert!(due > later, "a deadline in the past: the driver would spin");
}

//! Scenario tests on the simulated pair (`crate::sim::Pair`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::sim::{Pair, Side};
use crate::wire::{Record, TransmitBuilder, RECORD_HEADER_LEN};

pub(crate) fn pattern(seed: u8, n: usize) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[0] ^ seed)
            .collect::<Vec<u8>>(),
    )
}

/// The channels the peer opened, in the order `Incoming` announced them.
pub(crate) fn incoming(events: &[Event]) -> Vec<ChannelId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Incoming { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

pub(crate) fn connected(seed: u64) -> Pair {
    connected_with(SessionConfig::default(), seed)
}

/// Every channel gets its whole window at open (as before windows grew):
/// for tests of the scheduler, the pacing and resumes that want a lot in
/// flight at once on fresh channels.
pub(crate) fn full_windows() -> SessionConfig {
    SessionConfig {
        grow_windows: false,
        ..SessionConfig::default()
    }
}

pub(crate) fn connected_with(cfg: SessionConfig, seed: u64) -> Pair {
    let mut p = Pair::new(cfg, seed);
    p.drive().expect("handshake");
    assert!(p.a.is_connected() && p.b.is_connected());
    assert!(p.events_a.contains(&Event::Connected { resumed: false }));
    p.events_a.clear();
    p.events_b.clear();
    p
}

/// Opens a channel from A and accepts it on B; returns (A's id, B's id).
pub(crate) fn open(
    p: &mut Pair,
    kind: ChannelKind,
    class: Class,
    svc: &str,
) -> (ChannelId, ChannelId) {
    let a = p.a.open(kind, class, svc).expect("open");
    p.drive().expect("drive");
    let b = p
        .events_b
        .iter()
        .find_map(|e| match e {
            Event::Incoming { id, service, .. } if service == svc => Some(*id),
            _ => None,
        })
        .expect("incoming");
    p.b.accept(b).expect("accept");
    p.drive().expect("drive");
    assert!(p.events_a.contains(&Event::Opened(a)));
    (a, b)
}

/// Reads everything available on a stream channel.
pub(crate) fn drain_stream(s: &mut Session, id: ChannelId, out: &mut Vec<u8>) -> bool {
    loop {
        match s.recv(id, 100_000).expect("recv") {
            Recv::Data(b) => out.extend_from_slice(&b),
            Recv::Blocked => return false,
            Recv::Fin => return true,
        }
    }
}

/// Sends `data` from A to B on a stream, driving the pair, with B reading.
fn transfer(p: &mut Pair, a: ChannelId, b: ChannelId, data: &Bytes) -> Vec<u8> {
    let mut rest = data.clone();
    let mut got = Vec::new();
    for _ in 0..100_000 {
        if !rest.is_empty() {
            match p.a.send(a, rest.clone()) {
                Ok(n) => {
                    let _ = rest.split_to(n);
                }
                Err(SendError::Blocked) => {}
                Err(e) => panic!("send: {e}"),
            }
            if rest.is_empty() {
                p.a.finish(a).expect("finish");
            }
        }
        p.drive().expect("drive");
        if drain_stream(&mut p.b, b, &mut got) {
            return got;
        }
    }
    panic!("transfer stalled after {} bytes", got.len());
}

#[test]
fn handshake_then_stream_with_awkward_reads() {
    let mut p = connected(1);
    p.max_read = 7001;
    let (a, b) = open(&mut p, ChannelKind::Stream, Class::Normal, "bulk");
    let data = pattern(3, 10 << 20);
    let got = transfer(&mut p, a, b, &data);
    assert_eq!(got.len(), data.len());
    assert!(got == data[..], "bytes differ");
    assert_eq!(
        p.b.channel_stats(b).map(|s| s.bytes_rx),
        Some(data.len() as u64)
    );
}

#[test]
fn reads_split_at_every_boundary() {
    // Every prefix length of a small exchange, delivered in two pieces.
    let mut base = Pair::new(SessionConfig::default(), 9);
    base.drive().expect("handshake");
    let a = base
        .a
        .open(ChannelKind::Message, Class::Latency, "rpc")
        .expect("open");
    let mut b_session = std::mem::replace(
        &mut base.b,
        Session::new(SessionConfig::default(), 5, base.now),
    );
    let _ = &mut b_session;
    // Build A's bytes for the Open plus a message once, then replay them.
    let now = base.now;
    let mut wire = Vec::new();
    while let Some(t) = base.a.poll_transmit(now) {
        wire.extend_from_slice(&t.to_vec());
    }
    assert!(!wire.is_empty());
    let _ = a;
    for cut in 0..=wire.len() {
        let mut s = Session::new(SessionConfig::default(), 77, now);
        s.handle_link_up(now);
        // The receiver needs A's Hello first.
        let mut hello = TransmitBuilder::new(1 << 20, 1024);
        hello.push(&Record::Hello {
            version: crate::wire::VERSION,
            seen_peer: true,
            caps: 0,
            max_batch: 1 << 20,
            max_record: 1 << 18,
            session_id: 0xA11CE | 1,
            resume_of: 0,
            max_message: 0,
            open_credit: 0,
            auth: None,
            ident: None,
        });
        let mut buf = BytesMut::from(&hello.finish().to_vec()[..]);
        s.handle_input(now, &mut buf).expect("hello");
        buf.extend_from_slice(&wire[..cut]);
        s.handle_input(now, &mut buf).expect("first piece");
        buf.extend_from_slice(&wire[cut..]);
        s.handle_input(now, &mut buf).expect("second piece");
        assert!(buf.is_empty(), "cut {cut}: bytes left over");
        let mut incoming = 0;
        while let Some(e) = s.poll_event() {
            if matches!(e, Event::Incoming { .. }) {
                incoming += 1;
            }
        }
        assert_eq!(incoming, 1, "cut {cut}");
    }
}

#[test]
fn credit_exhaustion_and_refill() {
    let cfg = SessionConfig {
        stream_window: 256 * 1024,
        ..Default::default()
    };
    let w = cfg.min_window as usize;
    let mut p = Pair::new(cfg, 2);
    p.drive().expect("handshake");
    let (a, b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    // B does not read: A can send B's starting window (a reader that does
    // not read never grows it), and buffer twice its credit, no more.
    let mut sent = 0usize;
    loop {
        match p.a.send(a, pattern(1, 64 * 1024)) {
            Ok(n) => sent += n,
            Err(SendError::Blocked) => break,
            Err(e) => panic!("{e}"),
        }
        p.drive().expect("drive");
        assert!(sent <= 4 * w, "sender not blocked by credit");
    }
    // One window sits in B's receive buffer (acknowledged, so freed at A),
    // two more in A's send buffer waiting for credit.
    assert_eq!(sent, 3 * w);
    assert_eq!(p.b.channel_stats(b).map(|s| s.bytes_rx), Some(w as u64));
    assert_eq!(p.b.channel_stats(b).map(|s| s.recv_window), Some(w as u64));
    // B reads: credit comes back and A is told it can write again.
    let mut got = Vec::new();
    drain_stream(&mut p.b, b, &mut got);
    p.drive().expect("drive");
    assert_eq!(got.len(), w);
    assert!(p.events_a.contains(&Event::Writable(a)));
    for _ in 0..10 {
        drain_stream(&mut p.b, b, &mut got);
        p.drive().expect("drive");
    }
    assert_eq!(got.len(), 3 * w);
    assert!(p.a.send(a, pattern(1, 1000)).expect("send") > 0);
}

#[test]
fn many_channels_interleaved() {
    let mut p = connected(3);
    p.max_read = 100_000;
    let chans: Vec<_> = (0..64)
        .map(|i| open(&mut p, ChannelKind::Stream, Class::Bulk, &format!("c{i}")))
        .collect();
    let data: Vec<Bytes> = (0..64)
        .map(|i| pattern(i as u8, 300_000 + i * 1000))
        .collect();
    // Each send takes what the channel's buffer holds now (it follows the
    // credit, which grows as the reader keeps up).
    let mut rest = data.clone();
    let mut got = vec![Vec::new(); 64];
    let mut done = [false; 64];
    for _ in 0..10_000 {
        for (i, (a, _)) in chans.iter().enumerate() {
            if !rest[i].is_empty() {
                if let Ok(n) = p.a.send(*a, rest[i].clone()) {
                    let _ = rest[i].split_to(n);
                    if rest[i].is_empty() {
                        p.a.finish(*a).expect("finish");
                    }
                }
            }
        }
        p.drive().expect("drive");
        for (i, (_, b)) in chans.iter().enumerate() {
            if !done[i] {
                done[i] = drain_stream(&mut p.b, *b, &mut got[i]);
            }
        }
        if done.iter().all(|d| *d) {
            break;
        }
    }
    for i in 0..64 {
        assert!(done[i], "channel {i} did not finish");
        assert!(got[i] == data[i][..], "channel {i} bytes differ");
    }
}

#[test]
fn small_messages_overtake_bulk() {
    let mut p = connected_with(full_windows(), 4);
    let (bulk_a, _bulk_b) = open(&mut p, ChannelKind::Stream, Class::Bulk, "bulk");
    let (rpc_a, rpc_b) = open(&mut p, ChannelKind::Message, Class::Latency, "rpc");
    // Fill the bulk channel's whole window, then queue one small message.
    let window = p.a.config().stream_window as usize;
    assert_eq!(p.a.send(bulk_a, pattern(1, window)).expect("send"), window);
    p.a.send_message(rpc_a, Bytes::from_static(b"ping"))
        .expect("msg");
    // The first transmit carries the message ahead of the bulk bytes.
    let now = p.now;
    let t = p.a.poll_transmit(now).expect("transmit");
    let first = t.to_vec();
    let pos = first
        .windows(4)
        .position(|w| w == b"ping")
        .expect("message in first transmit");
    assert!(pos < 200, "message behind bulk data (at byte {pos})");
    // And it keeps winning while bulk traffic flows: a message queued later
    // goes out before the bulk data queued before it.
    let mut rx = BytesMut::from(&first[..]);
    p.b.handle_input(now, &mut rx).expect("input");
    assert_eq!(
        p.b.recv_message(rpc_b).expect("recv"),
        Recv::Data(Bytes::from_static(b"ping"))
    );
    p.a.send_message(rpc_a, Bytes::from_static(b"pong"))
        .expect("msg");
    let t2 = p.a.poll_transmit(now).expect("transmit").to_vec();
    let pos2 = t2
        .windows(4)
        .position(|w| w == b"pong")
        .expect("second message");
    assert!(pos2 < 200);
}

#[test]
fn bulk_does_not_starve_within_class() {
    let cfg = SessionConfig {
        max_transmit: 1 << 20,
        ..Default::default()
    };
    let mut p = connected_with(
        SessionConfig {
            grow_windows: false,
            ..cfg
        },
        5,
    );
    let (big, big_b) = open(&mut p, ChannelKind::Stream, Class::Bulk, "big");
    let (small, small_b) = open(&mut p, ChannelKind::Stream, Class::Bulk, "small");
    p.a.send(big, pattern(1, 8 << 20)).expect("send");
    p.a.send(small, pattern(2, 100_000)).expect("send");
    p.a.finish(small).expect("finish");
    // One 1 MiB transmit: the small channel completes in it, round robin.
    let now = p.now;
    let t = p.a.poll_transmit(now).expect("transmit");
    let mut rx = BytesMut::from(&t.to_vec()[..]);
    p.b.handle_input(now, &mut rx).expect("input");
    let mut got = Vec::new();
    assert!(
        drain_stream(&mut p.b, small_b, &mut got),
        "small channel waited for bulk"
    );
    assert_eq!(got.len(), 100_000);
    let mut big_got = Vec::new();
    drain_stream(&mut p.b, big_b, &mut big_got);
    assert!(
        big_got.len() < 1 << 20 && big_got.len() > 800_000,
        "{}",
        big_got.len()
    );
}

#[test]
fn resume_mid_transfer_both_directions() {
    let mut p = connected(7);
    let (a, b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    let (ma, mb) = open(&mut p, ChannelKind::Message, Class::Latency, "m");
    let data = pattern(9, 5 << 20);
    let back = pattern(10, 2 << 20);
    let (mut rest_ab, mut rest_ba) = (data.clone(), back.clone());
    // Sends take what the buffers hold now; the rest is fed below.
    let feed = |p: &mut Pair, rest_ab: &mut Bytes, rest_ba: &mut Bytes| {
        for (s, id, rest) in [(Side::A, a, rest_ab), (Side::B, b, rest_ba)] {
            if rest.is_empty() {
                continue;
            }
            if let Ok(n) = p.side(s).send(id, rest.clone()) {
                let _ = rest.split_to(n);
                if rest.is_empty() {
                    p.side(s).finish(id).expect("finish");
                }
            }
        }
    };
    feed(&mut p, &mut rest_ab, &mut rest_ba);
    for i in 0..20u8 {
        p.a.send_message(ma, Bytes::from(vec![i; 1000 + usize::from(i)]))
            .expect("msg");
    }
    // Some bytes get across, then the cable is pulled.
    p.transmit();
    p.deliver().expect("deliver");
    p.transmit();
    p.link_reset();
    let (mut got_ab, mut got_ba) = (Vec::new(), Vec::new());
    let (mut fin_ab, mut fin_ba) = (false, false);
    let mut msgs = Vec::new();
    for _ in 0..10_000 {
        feed(&mut p, &mut rest_ab, &mut rest_ba);
        p.drive().expect("drive");
        fin_ab = fin_ab || drain_stream(&mut p.b, b, &mut got_ab);
        fin_ba = fin_ba || drain_stream(&mut p.a, a, &mut got_ba);
        while let Recv::Data(m) = p.b.recv_message(mb).expect("recv") {
            msgs.push(m);
        }
        if fin_ab && fin_ba && msgs.len() == 20 {
            break;
        }
    }
    assert!(got_ab == data[..] && fin_ab, "A->B after resume");
    assert!(got_ba == back[..] && fin_ba, "B->A after resume");
    assert_eq!(msgs.len(), 20);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.len(), 1000 + i);
        assert!(m.iter().all(|x| usize::from(*x) == i));
    }
    assert_eq!(p.a.stats().resumes, 1);
}

#[test]
fn peer_restart_resets_channels() {
    let mut p = connected(8);
    let (a, _b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    p.restart(Side::B, SessionConfig::default(), 0xDEAD);
    p.drive().expect("drive");
    assert!(p.events_a.contains(&Event::Connected { resumed: false }));
    assert!(p
        .events_a
        .contains(&Event::Reset(a, ResetReason::PeerRestarted)));
    assert_eq!(
        p.a.send(a, Bytes::from_static(b"x")),
        Err(SendError::UnknownChannel)
    );
    // New channels work with the new peer.
    let _ = open(&mut p, ChannelKind::Stream, Class::Normal, "again");
}

#[test]
fn keepalive_holds_and_silence_expires() {
    let mut p = connected(9);
    // Pings every second keep an idle link up for a minute of virtual time.
    for _ in 0..60 {
        p.advance(Duration::from_millis(1000)).expect("alive");
        p.drive().expect("drive");
    }
    assert!(p.a.stats().rtt.is_some());
    // Nothing delivered any more: the idle timeout fires.
    let timeout = p.a.config().idle_timeout;
    let deadline = p.a.poll_timeout().expect("timer armed");
    assert!(deadline <= p.now + timeout);
    let r = p.advance(timeout);
    assert!(matches!(r, Err((_, SessionError::IdleTimeout(_)))), "{r:?}");
}

#[test]
fn goodbye_confirms_delivery() {
    let mut p = connected(10);
    let (a, b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    let data = pattern(4, 1 << 20);
    // What the send buffer takes now; the goodbye waits for all of it.
    let n = p.a.send(a, data.clone()).expect("send");
    let data = data.slice(..n);
    p.a.close(p.now);
    // B reads as data comes (its window holds less than A sends).
    let mut got = Vec::new();
    for _ in 0..100 {
        p.drive().expect("drive");
        drain_stream(&mut p.b, b, &mut got);
    }
    assert!(
        p.events_a.contains(&Event::Closed { clean: true }),
        "{:?}",
        p.events_a
    );
    assert!(
        p.events_b.contains(&Event::Closed { clean: true }),
        "{:?}",
        p.events_b
    );
    assert!(p.a.is_closed() && p.b.is_closed());
    assert_eq!(p.a.unacked(a), Some(0));
    drain_stream(&mut p.b, b, &mut got);
    assert!(got == data[..]);
    assert_eq!(
        p.a.open(ChannelKind::Stream, Class::Normal, "x").err(),
        Some(api::OpenError::Closing)
    );
}

#[test]
fn goodbye_times_out_when_peer_silent() {
    let mut p = connected(11);
    p.a.close(p.now);
    p.transmit(); // Goodbye is lost: B never sees it.
    p.link_reset();
    p.link_reset();
    // No delivery at all from here on.
    let t = p.a.config().goodbye_timeout;
    p.now += t;
    let now = p.now;
    let _ = p.a.handle_timeout(now);
    p.collect_events();
    assert!(p.events_a.contains(&Event::Closed { clean: false }));
}

#[test]
fn message_boundaries_and_large_messages() {
    let mut p = connected(12);
    p.max_read = 3000;
    let (a, b) = open(&mut p, ChannelKind::Message, Class::Normal, "m");
    let sizes = [0usize, 1, 64, 65_536, 65_537, 1 << 20, 3];
    for (i, n) in sizes.iter().enumerate() {
        p.a.send_message(a, pattern(i as u8, *n)).expect("send");
    }
    // B reads as they come: messages larger than its window grow it.
    let mut got = Vec::new();
    for _ in 0..1000 {
        p.drive().expect("drive");
        while let Recv::Data(m) = p.b.recv_message(b).expect("recv") {
            got.push(m);
        }
        if got.len() == sizes.len() {
            break;
        }
    }
    assert_eq!(got.len(), sizes.len());
    for (i, n) in sizes.iter().enumerate() {
        assert!(got[i] == pattern(i as u8, *n), "message {i}");
    }
    let too_big = p.a.config().message_window as usize + 1;
    assert!(matches!(
        p.a.send_message(a, Bytes::from(vec![0; too_big])),
        Err(SendError::TooLarge { .. })
    ));
}

#[test]
fn datagrams_drop_under_pressure_and_count() {
    let cfg = SessionConfig {
        dgram_send_queue: 15_000,
        // 20 datagrams of 1500 bytes plus 64 bytes of bookkeeping each.
        dgram_recv_queue: 20 * (1500 + 64),
        ..Default::default()
    };
    let mut p = Pair::new(cfg, 13);
    p.drive().expect("handshake");
    let (a, b) = open(&mut p, ChannelKind::Datagram, Class::Normal, "tun");
    let mut accepted = 0;
    for i in 0..100u8 {
        if p.a
            .send_datagram(a, Bytes::from(vec![i; 1500]))
            .expect("send")
        {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 10, "send queue holds 10 × 1500 bytes");
    assert_eq!(p.a.channel_stats(a).map(|s| s.drops), Some(90));
    p.drive().expect("drive");
    // Receiver does not read: its queue holds 20, the rest drop.
    for _ in 0..3 {
        for i in 0..10u8 {
            p.a.send_datagram(a, Bytes::from(vec![i; 1500]))
                .expect("send");
        }
        p.drive().expect("drive");
    }
    let mut got = 0;
    while let Recv::Data(d) = p.b.recv_datagram(b).expect("recv") {
        assert_eq!(d.len(), 1500);
        got += 1;
    }
    assert_eq!(got, 20);
    assert_eq!(p.b.channel_stats(b).map(|s| s.drops), Some(20));
}

/// Feeds hand-made records to a connected session.
fn hostile(records: &[Record]) -> Result<(), SessionError> {
    let mut p = connected(15);
    let mut t = TransmitBuilder::new(1 << 20, 1024);
    for r in records {
        t.push(r);
    }
    let mut buf = BytesMut::from(&t.finish().to_vec()[..]);
    let now = p.now;
    p.b.handle_input(now, &mut buf)
}

#[test]
fn hostile_inputs_are_rejected_without_panic() {
    // Channel ids never opened.
    let r = hostile(&[Record::Data {
        chan: 41,
        offset: 0,
        end: false,
        payload: Bytes::from_static(b"x"),
    }]);
    assert!(matches!(r, Err(SessionError::Protocol(_))), "{r:?}");
    let r = hostile(&[Record::Window {
        chan: 6,
        received: 0,
        limit: 100,
        resume: false,
    }]);
    assert!(matches!(r, Err(SessionError::Protocol(_))), "{r:?}");
    // Data past the credit limit.
    let r = hostile(&[
        Record::Open {
            chan: 1,
            kind: ChannelKind::Stream,
            class: Class::Normal,
            window: 1000,
            service: "s".into(),
        },
        Record::Data {
            chan: 1,
            offset: 0,
            end: false,
            payload: Bytes::from(vec![0; 100]),
        },
    ]);
    // Before accept the channel has its full window, so this is fine...
    assert!(r.is_ok(), "{r:?}");
    let r = hostile(&[
        Record::Open {
            chan: 1,
            kind: ChannelKind::Stream,
            class: Class::Normal,
            window: 1000,
            service: "s".into(),
        },
        Record::Data {
            chan: 1,
            offset: 0,
            end: false,
            payload: Bytes::from(vec![0; 100]),
        },
        Record::Data {
            chan: 1,
            offset: 1 << 40,
            end: false,
            payload: Bytes::from(vec![0; 100]),
        },
    ]);
    assert!(matches!(r, Err(SessionError::Protocol(_))), "gap: {r:?}");
    // Acknowledging bytes never sent.
    let mut p = connected(16);
    let (a, _) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    let mut t = TransmitBuilder::new(1 << 20, 1024);
    t.push(&Record::Window {
        chan: a.peer_view() ^ 1,
        received: 1 << 30,
        limit: 1 << 31,
        resume: false,
    });
    let mut buf = BytesMut::from(&t.finish().to_vec()[..]);
    let now = p.now;
    assert!(matches!(
        p.a.handle_input(now, &mut buf),
        Err(SessionError::Protocol(_))
    ));
}

#[test]
fn malformed_bytes_are_link_faults() {
    let mut p = connected(17);
    let now = p.now;
    // Unknown record type inside a valid batch.
    let mut body = vec![0x7f, 0, 0, 0, 0, 0, 0, 0];
    let head = crate::wire::BatchHeader {
        len: body.len() as u32,
        body_crc: crate::wire::crc::crc32c(&body),
    }
    .encode();
    let mut buf = BytesMut::from(&head[..]);
    buf.extend_from_slice(&body);
    assert_eq!(
        p.b.handle_input(now, &mut buf),
        Err(SessionError::Decode(crate::wire::DecodeError::UnknownType(
            0x7f
        )))
    );
    // A record length running past its batch.
    body = vec![0x20, 0, 0, 0, 0xff, 0xff, 0, 0];
    let head = crate::wire::BatchHeader {
        len: body.len() as u32,
        body_crc: crate::wire::crc::crc32c(&body),
    }
    .encode();
    let mut buf = BytesMut::from(&head[..]);
    buf.extend_from_slice(&body);
    assert!(matches!(
        p.b.handle_input(now, &mut buf),
        Err(SessionError::Decode(
            crate::wire::DecodeError::BadRecordLength { .. }
        ))
    ));
    // An oversized batch is refused from its header alone.
    let head = crate::wire::BatchHeader {
        len: u32::MAX,
        body_crc: 0,
    }
    .encode();
    let mut buf = BytesMut::from(&head[..]);
    assert!(matches!(
        p.b.handle_input(now, &mut buf),
        Err(SessionError::Decode(
            crate::wire::DecodeError::BatchTooLong { .. }
        ))
    ));
    let _ = RECORD_HEADER_LEN;
}

#[test]
fn stale_bytes_before_hello_are_skipped() {
    // The peer's previous link may still deliver the middle of a batch
    // before its Hello on the new link: skip to the Hello, don't fault.
    let mut p = Pair::new(SessionConfig::default(), 19);
    let now = p.now;
    let hello_and_more = {
        let mut v = Vec::new();
        while let Some(t) = p.a.poll_transmit(now) {
            v.extend_from_slice(&t.to_vec());
        }
        v
    };
    let mut buf = BytesMut::from(&pattern(5, 10_000)[..]);
    buf.extend_from_slice(&crate::wire::MAGIC.to_le_bytes()); // a false start
    buf.extend_from_slice(&[0u8; 20]);
    buf.extend_from_slice(&hello_and_more);
    p.b.handle_input(now, &mut buf)
        .expect("garbage before Hello is skipped");
    assert!(p.b.stats().resync_bytes >= 10_000);
    // B has A's Hello; the link is up once A confirms it has B's.
    assert!(!p.b.is_connected());
    p.drive().expect("handshake completes");
    assert!(p.a.is_connected() && p.b.is_connected());
    // Once the link is up, garbage is never skipped as stale: it is
    // corruption, counted, and starts an in-band resync (see `resync`)
    // that brings the link back on the same byte stream.
    let now = p.now;
    let mut junk = BytesMut::from(&[0x55u8; 64][..]);
    p.b.handle_input(now, &mut junk)
        .expect("resync, not a fault");
    assert_eq!(p.b.stats().corrupt_batches, 1);
    assert!(!p.b.is_connected(), "B is resyncing");
    p.drive().expect("resync completes");
    assert!(p.a.is_connected() && p.b.is_connected());
    assert_eq!((p.a.stats().resyncs, p.b.stats().resyncs), (1, 1));
    assert_eq!(p.b.stats().links_up, 1);
}

#[test]
fn corruption_right_after_the_hello_is_a_fault_not_a_skip() {
    // Found by the session_ops fuzzer: a peer that sent an Open in the
    // same batch as its Hello lost it silently when that batch was
    // corrupted and skipped as "stale bytes". Now nothing but Hellos goes
    // out before both Hellos crossed, and a corrupt batch after the
    // peer's Hello is a link fault (and the Open is announced again).
    let mut p = Pair::new(SessionConfig::default(), 20);
    p.transmit(); // both Hellos in flight
    p.deliver().expect("hellos");
    let a =
        p.a.open(ChannelKind::Datagram, Class::Latency, "x")
            .expect("open");
    p.transmit();
    assert!(p.in_flight(Side::A) > 40, "A's Hello reply and Open");
    assert!(p.corrupt(Side::A, 30, 1));
    assert!(
        p.deliver().is_err(),
        "corrupt batch after the Hello was skipped"
    );
    p.link_reset();
    p.drive().expect("drive");
    let b = *incoming(&p.events_b).first().expect("the Open arrived");
    p.b.accept(b).expect("accept");
    p.drive().expect("drive");
    assert!(p.events_a.contains(&Event::Opened(a)));
}

//! Opening channels on the simulated pair and against a scripted peer:
//! the fast path (data and `Close` before the `OpenOk`), refusals that
//! name the limit they hit, older peers, and a peer opening channels as
//! fast as it can.

use bytes::Bytes;

use super::tests::{connected, connected_with, incoming};
use super::{
    api, ChannelId, ChannelKind, Class, Event, Recv, RejectReason, SendError, SessionConfig,
};
use crate::sim::{Pair, RawPeer};
use crate::wire::{Record, TransmitBuilder};

/// Moves what `from` sends into `to` once (one direction of a round trip).
fn hop(p: &mut Pair, from: crate::sim::Side) -> usize {
    let now = p.now;
    let (tx, rx) = match from {
        crate::sim::Side::A => (&mut p.a, &mut p.b),
        crate::sim::Side::B => (&mut p.b, &mut p.a),
    };
    let mut n = 0;
    let mut buf = bytes::BytesMut::new();
    while let Some(t) = tx.poll_transmit(now) {
        n += 1;
        buf.extend_from_slice(&t.to_vec());
    }
    rx.handle_input(now, &mut buf).expect("input");
    p.collect_events();
    n
}

#[test]
fn request_response_and_close_take_one_round_trip() {
    let mut p = connected(71);
    let a =
        p.a.open(ChannelKind::Stream, Class::Normal, "rpc")
            .expect("open");
    let req = Bytes::from(vec![1u8; 1024]);
    assert_eq!(p.a.send(a, req.clone()), Ok(1024));
    p.a.finish(a).expect("finish");
    // There: Open, the request and its Close in one transmit.
    assert_eq!(hop(&mut p, crate::sim::Side::A), 1);
    let b = incoming(&p.events_b)[0];
    p.b.accept(b).expect("accept");
    assert_eq!(p.b.recv(b, 4096), Ok(Recv::Data(req)));
    assert_eq!(p.b.recv(b, 4096), Ok(Recv::Fin));
    let resp = Bytes::from(vec![2u8; 1024]);
    assert_eq!(p.b.send(b, resp.clone()), Ok(1024));
    p.b.finish(b).expect("finish");
    // Back: OpenOk, the acknowledgement, the response and its Close.
    assert_eq!(hop(&mut p, crate::sim::Side::B), 1);
    assert!(p.events_a.contains(&Event::Opened(a)));
    assert_eq!(p.a.recv(a, 4096), Ok(Recv::Data(resp)));
    assert_eq!(p.a.recv(a, 4096), Ok(Recv::Fin));
    // The request was acknowledged with the answer: A is done with the
    // channel after this one round trip.
    assert_eq!(p.a.channels().count(), 0);
    // What is left is A's last acknowledgement; then B lets go too.
    p.drive().expect("drive");
    assert_eq!(p.a.channels().count() + p.b.channels().count(), 0);
}

#[test]
fn data_before_the_open_ok_stays_within_the_open_credit() {
    let mut p = connected(72);
    let credit = p.b.config().min_window as usize;
    let a =
        p.a.open(ChannelKind::Stream, Class::Bulk, "s")
            .expect("open");
    let data = super::tests::pattern(9, 4 * credit);
    let taken = p.a.send(a, data.clone()).expect("send");
    hop(&mut p, crate::sim::Side::A);
    let b = incoming(&p.events_b)[0];
    // B holds exactly the credit it announces, unacknowledged.
    assert_eq!(
        p.b.channel_stats(b).map(|s| s.bytes_rx),
        Some(credit as u64)
    );
    p.b.accept(b).expect("accept");
    let mut rest = data.slice(taken..);
    let mut got = Vec::new();
    for _ in 0..100 {
        if let Ok(n) = p.a.send(a, rest.clone()) {
            let _ = rest.split_to(n);
        }
        p.drive().expect("drive");
        super::tests::drain_stream(&mut p.b, b, &mut got);
    }
    assert!(got == data[..]);
}

#[test]
fn data_with_a_refused_open_is_dropped_quietly() {
    let mut p = connected(73);
    let a =
        p.a.open(ChannelKind::Message, Class::Normal, "nope")
            .expect("open");
    p.a.send_message(a, Bytes::from_static(b"request"))
        .expect("send");
    p.a.finish(a).expect("finish");
    hop(&mut p, crate::sim::Side::A);
    let b = incoming(&p.events_b)[0];
    p.b.reject(b, RejectReason::NoService).expect("reject");
    p.drive().expect("no link fault");
    assert!(p
        .events_a
        .contains(&Event::Rejected(a, RejectReason::NoService)));
    assert_eq!(p.a.channels().count() + p.b.channels().count(), 0);
}

#[test]
fn data_sent_before_the_open_ok_survives_a_cable_pull() {
    let mut p = connected(74);
    let a =
        p.a.open(ChannelKind::Stream, Class::Normal, "s")
            .expect("open");
    let data = super::tests::pattern(3, 30_000);
    assert_eq!(p.a.send(a, data.clone()), Ok(30_000));
    p.a.finish(a).expect("finish");
    // Sent, and lost with the link.
    let now = p.now;
    while p.a.poll_transmit(now).is_some() {}
    p.link_reset();
    p.drive().expect("resume");
    let b = incoming(&p.events_b)[0];
    p.b.accept(b).expect("accept");
    p.drive().expect("drive");
    let mut got = Vec::new();
    assert!(super::tests::drain_stream(&mut p.b, b, &mut got));
    assert!(got == data[..], "{} bytes", got.len());
}

#[test]
fn released_before_the_open_ok_still_delivers() {
    let mut p = connected(75);
    let a =
        p.a.open(ChannelKind::Stream, Class::Normal, "s")
            .expect("open");
    assert_eq!(p.a.send(a, Bytes::from_static(b"fire and forget")), Ok(15));
    p.a.release(a).expect("release");
    p.drive().expect("drive");
    let b = incoming(&p.events_b)[0];
    p.b.accept(b).expect("accept");
    p.drive().expect("drive");
    assert_eq!(
        p.b.recv(b, 100),
        Ok(Recv::Data(Bytes::from_static(b"fire and forget")))
    );
    assert_eq!(p.b.recv(b, 100), Ok(Recv::Fin));
    p.b.finish(b).expect("finish");
    p.drive().expect("drive");
    assert_eq!(p.a.channels().count() + p.b.channels().count(), 0);
}

#[test]
fn unknown_service_is_rejected() {
    let mut p = connected(14);
    let a =
        p.a.open(ChannelKind::Stream, Class::Normal, "nope")
            .expect("open");
    p.drive().expect("drive");
    let b = *incoming(&p.events_b).first().expect("incoming");
    p.b.reject(b, RejectReason::NoService).expect("reject");
    p.drive().expect("drive");
    assert!(p
        .events_a
        .contains(&Event::Rejected(a, RejectReason::NoService)));
    assert_eq!(
        p.a.send(a, Bytes::from_static(b"x")),
        Err(SendError::UnknownChannel)
    );
}

/// The peer's refusals name the limit hit; each is counted.
#[test]
fn refusals_name_the_limit_they_hit() {
    let rejections = |p: &Pair, why: RejectReason| {
        p.events_a
            .iter()
            .filter(|e| matches!(e, Event::Rejected(_, r) if *r == why))
            .count()
    };
    // max_channels.
    let cfg = SessionConfig {
        max_channels: 5,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(SessionConfig::default(), 76);
    p.b = super::Session::new(cfg, 0xB0B3, p.now);
    p.b.handle_link_up(p.now);
    p.drive().expect("handshake");
    for i in 0..8 {
        p.a.open(ChannelKind::Stream, Class::Normal, &format!("s{i}"))
            .expect("open");
    }
    p.drive().expect("drive");
    assert_eq!(rejections(&p, RejectReason::TooMany), 3);
    assert_eq!(p.b.stats().refused_too_many, 3);
    // max_pending_opens: the application accepts nothing.
    let cfg = SessionConfig {
        max_pending_opens: 4,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(SessionConfig::default(), 77);
    p.b = super::Session::new(cfg, 0xB0B3, p.now);
    p.b.handle_link_up(p.now);
    p.drive().expect("handshake");
    for i in 0..6 {
        p.a.open(ChannelKind::Stream, Class::Normal, &format!("s{i}"))
            .expect("open");
    }
    p.drive().expect("drive");
    assert_eq!(rejections(&p, RejectReason::Backlog), 2);
    assert_eq!(p.b.stats().refused_backlog, 2);
    // Accepting makes room again.
    for id in incoming(&p.events_b) {
        let _ = p.b.accept(id);
    }
    p.a.open(ChannelKind::Stream, Class::Normal, "later")
        .expect("open");
    p.drive().expect("drive");
    assert_eq!(rejections(&p, RejectReason::Backlog), 2);
    // recv_budget: room for the reserve and three starting windows.
    let d = SessionConfig::default();
    let cfg = SessionConfig {
        recv_budget: d.message_window - d.min_window + 3 * d.min_window,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(SessionConfig::default(), 78);
    p.b = super::Session::new(cfg, 0xB0B3, p.now);
    p.b.handle_link_up(p.now);
    p.drive().expect("handshake");
    for i in 0..5 {
        p.a.open(ChannelKind::Stream, Class::Normal, &format!("s{i}"))
            .expect("open");
    }
    p.drive().expect("drive");
    assert_eq!(rejections(&p, RejectReason::NoMemory), 2);
    assert_eq!(p.b.stats().refused_no_memory, 2);
    // Datagram channels hold only what they buffer: still welcome.
    p.a.open(ChannelKind::Datagram, Class::Normal, "d")
        .expect("open");
    p.drive().expect("drive");
    assert_eq!(rejections(&p, RejectReason::NoMemory), 2);
    // And locally: B's own opens fail with the same distinction.
    assert_eq!(
        p.b.open(ChannelKind::Stream, Class::Normal, "mine").err(),
        Some(api::OpenError::NoMemory)
    );
    assert_eq!(p.b.stats().open_no_memory, 1);
}

#[test]
fn local_opens_stop_at_max_channels() {
    let cfg = SessionConfig {
        max_channels: 2,
        ..SessionConfig::default()
    };
    let mut p = connected_with(cfg, 79);
    p.a.open(ChannelKind::Stream, Class::Normal, "a")
        .expect("open");
    p.a.open(ChannelKind::Stream, Class::Normal, "b")
        .expect("open");
    assert_eq!(
        p.a.open(ChannelKind::Stream, Class::Normal, "c").err(),
        Some(api::OpenError::TooMany)
    );
    assert_eq!(p.a.stats().open_too_many, 1);
}

/// An older peer (no growing windows in its Hello) is given whole windows,
/// as it expects, and no data before its `OpenOk`.
#[test]
fn older_peer_gets_whole_windows_and_no_early_data() {
    let cfg = SessionConfig::default();
    let (sw, mw) = (cfg.stream_window as u32, cfg.message_window as u32);
    let mut r = RawPeer::connected(cfg);
    let id =
        r.s.open(ChannelKind::Stream, Class::Normal, "s")
            .expect("open");
    r.s.send(id, Bytes::from_static(b"early")).expect("send");
    let sent = r.take();
    assert!(
        sent.iter()
            .any(|x| matches!(x, Record::Open { window, .. } if *window == sw)),
        "{sent:?}"
    );
    assert!(
        !sent.iter().any(|x| matches!(x, Record::Data { .. })),
        "{sent:?}"
    );
    // A channel it opens is accepted with the whole window too.
    r.send(&[Record::Open {
        chan: 1,
        kind: ChannelKind::Message,
        class: Class::Normal,
        window: 1 << 20,
        service: "m".into(),
    }])
    .expect("open");
    r.s.accept(ChannelId(1)).expect("accept");
    let sent = r.take();
    assert!(
        sent.iter()
            .any(|x| matches!(x, Record::OpenOk { chan: 0, window } if *window == mw)),
        "{sent:?}"
    );
    // It takes messages up to the window it announced, not more.
    assert!(matches!(
        r.s.send_message(ChannelId(1), Bytes::from(vec![0u8; 1 << 20])),
        Err(SendError::TooLarge { .. })
    ));
}

/// A peer of this build is given the starting window, and may send data
/// within its `open_credit` before the `OpenOk`.
#[test]
fn peer_with_growing_windows_gets_the_starting_window() {
    let cfg = SessionConfig::default();
    let start = cfg.min_window as u32;
    let mut r = RawPeer::connected_growing(cfg, 1 << 20, 4096);
    let id =
        r.s.open(ChannelKind::Stream, Class::Normal, "s")
            .expect("open");
    r.s.send(id, Bytes::from(vec![5u8; 10_000])).expect("send");
    let sent = r.take();
    assert!(sent
        .iter()
        .any(|x| matches!(x, Record::Open { window, .. } if *window == start)));
    let early: usize = sent
        .iter()
        .map(|x| match x {
            Record::Data { payload, .. } => payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(early, 4096, "data before the OpenOk within the open credit");
}

/// A peer opening channels as fast as it can, each with as much data as
/// the open credit allows, and never reading our answers until the end of
/// each burst: what it gets is bounded by the limits, refused by name, and
/// what it makes us hold stays within the budget.
#[test]
fn open_flood_is_held_to_the_limits_with_bounded_memory() {
    let cfg = SessionConfig {
        max_channels: 2000,
        max_pending_opens: 500,
        recv_budget: 64 << 20,
        ..SessionConfig::default()
    };
    let budget = cfg.recv_budget;
    let credit = cfg.min_window as usize;
    let mut r = RawPeer::connected_growing(cfg, 1 << 20, 0);
    let payload = Bytes::from(vec![0xEEu8; credit]);
    let mut chan = 1u32;
    for _burst in 0..40 {
        let mut b = TransmitBuilder::new(256 << 10, 1 << 20);
        let mut raw = Vec::new();
        for _ in 0..500 {
            b.push(&Record::Open {
                chan,
                kind: ChannelKind::Stream,
                class: Class::Bulk,
                window: 1 << 20,
                service: "flood".into(),
            });
            b.push(&Record::Data {
                chan,
                offset: 0,
                end: false,
                payload: payload.clone(),
            });
            chan += 2;
            if b.len() > 128 << 10 {
                raw.extend_from_slice(&b.finish().to_vec());
            }
        }
        raw.extend_from_slice(&b.finish().to_vec());
        r.send_bytes(&raw)
            .expect("a flood is not a protocol violation");
        let st = r.s.stats();
        assert!(st.recv_held <= budget, "{st:?}");
        assert!(r.s.channels().count() <= 500);
        let _ = r.take();
    }
    let st = r.s.stats();
    // 20,000 opens: 500 wait for accept, every other one was refused.
    assert_eq!(r.s.channels().count(), 500);
    assert_eq!(st.refused_backlog + st.refused_no_memory, 20_000 - 500);
    assert!(st.refused_backlog > 0);
    // What the early data holds is within the budget (500 starting
    // windows), and the refused channels' data was dropped.
    assert_eq!(st.recv_held, 500 * credit as u64);
    assert!(st.stale_records >= 19_500);
}

//! Regression tests for the defects a review of the session found (issue
//! 6), one per defect; each failed on the code before its fix.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;

use crate::session::tests::{connected, open};
use crate::session::{ChannelId, ChannelKind, Class, Event, Recv, Session, SessionConfig};
use crate::sim::{Pair, RawPeer};
use crate::wire::Record;

/// Runs `f` on another thread; fails the test if it does not return within
/// `secs` (a livelock would otherwise hang the whole test run).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("did not return within {secs} s: livelock"),
    }
}

/// Defect 1: a message channel whose remaining credit equals the bytes
/// left of the next message (its end unit does not fit) was "sendable" to
/// the scheduler, but `take_chunk` could take nothing: the channel was
/// re-queued forever and `poll_transmit` never returned (with the pump's
/// state lock held). Plain traffic reaches it: window 4096, a 4094-byte
/// message acknowledged but unread, then a 1-byte message.
#[test]
fn message_whose_end_does_not_fit_the_credit_does_not_spin() {
    let cfg = SessionConfig {
        message_window: 4096,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(cfg, 5);
    p.drive().expect("handshake");
    let (a, b) = open(&mut p, ChannelKind::Message, Class::Normal, "m");
    p.a.send_message(a, Bytes::from(vec![1u8; 4094]))
        .expect("send");
    p.drive().expect("drive");
    p.a.send_message(a, Bytes::from_static(b"x")).expect("send");
    let mut p = within(10, move || {
        p.drive().expect("drive");
        p
    });
    // The reader takes the first message: credit for the second.
    assert_eq!(
        p.b.recv_message(b),
        Ok(Recv::Data(Bytes::from(vec![1u8; 4094])))
    );
    p.drive().expect("drive");
    assert_eq!(
        p.b.recv_message(b),
        Ok(Recv::Data(Bytes::from_static(b"x")))
    );
}

/// Defect 1, forced by a peer: a `Window` whose limit leaves room for the
/// bytes of a message but not for its end unit.
#[test]
fn window_leaving_no_room_for_a_message_end_does_not_spin() {
    let mut r = RawPeer::connected(SessionConfig::default());
    let id =
        r.s.open(ChannelKind::Message, Class::Normal, "m")
            .expect("open");
    r.take();
    r.send(&[Record::OpenOk {
        chan: 0,
        window: 11,
    }])
    .expect("OpenOk");
    r.s.send_message(id, Bytes::from_static(b"hello"))
        .expect("send");
    r.take();
    r.send(&[Record::Window {
        chan: 0,
        received: 6,
        limit: 11,
        resume: false,
    }])
    .expect("window");
    // 6 units are acknowledged; "abcde" and its end take 6 of the 5 left.
    r.s.send_message(id, Bytes::from_static(b"abcde"))
        .expect("send");
    let (mut r, recs) = within(10, move || {
        let recs = r.take();
        (r, recs)
    });
    let data: Vec<(u64, bool, Bytes)> = recs
        .into_iter()
        .filter_map(|x| match x {
            Record::Data {
                offset,
                end,
                payload,
                ..
            } => Some((offset, end, payload)),
            _ => None,
        })
        .collect();
    assert_eq!(data, vec![(6, false, Bytes::from_static(b"abcd"))]);
    r.send(&[Record::Window {
        chan: 0,
        received: 10,
        limit: 12,
        resume: false,
    }])
    .expect("window");
    let rest: Vec<Record> = r.take();
    assert!(
        rest.iter().any(|x| matches!(x, Record::Data { offset: 10, end: true, payload, .. } if &payload[..] == b"e")),
        "the rest of the message went out: {rest:?}"
    );
}

/// Defect 3: a peer that answers every resume `Window` of a gone channel
/// with more of them and never answers a ping grew the list of Resets to
/// confirm without bound; past 65,536 of them the control-flood check then
/// faulted every later link. Resets are kept once per channel.
#[test]
fn repeated_resume_windows_for_a_gone_channel_keep_one_reset() {
    let mut r = RawPeer::connected(SessionConfig::default());
    let id =
        r.s.open(ChannelKind::Stream, Class::Normal, "s")
            .expect("open");
    r.take();
    r.send(&[Record::OpenOk {
        chan: 0,
        window: 1 << 20,
    }])
    .expect("OpenOk");
    r.s.reset(id).expect("reset");
    r.take();
    let resume = Record::Window {
        chan: 0,
        received: 0,
        limit: 0,
        resume: true,
    };
    for _ in 0..70 {
        r.send(&vec![resume.clone(); 1000]).expect("resume windows");
        let resets = r
            .take()
            .iter()
            .filter(|x| matches!(x, Record::Reset { .. }))
            .count();
        assert!(resets <= 1000);
    }
    // A new link to the same peer: the Resets not yet confirmed go again.
    let me = r.s.local_id();
    let again = r.link_up(me);
    let resets = again
        .iter()
        .filter(|x| matches!(x, Record::Reset { .. }))
        .count();
    assert_eq!(resets, 1, "one Reset per gone channel, not one per request");
    r.send(&[Record::Ping { token: 1 }])
        .expect("the next link works");
}

/// Defect 4: the last acknowledgement of a channel finished both ways is
/// queued when the channel is freed; lost with the link, the peer asked to
/// resume a channel we no longer had, and we answered with a `Reset`: the
/// peer's application saw an abort although everything was delivered.
#[test]
fn last_ack_lost_at_a_cable_pull_does_not_reset_a_finished_channel() {
    let mut p = connected(13);
    let (a, b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    // B's direction first: sent, finished, read by A.
    assert_eq!(p.b.send(b, Bytes::from_static(&[2; 100])), Ok(100));
    p.b.finish(b).expect("finish");
    p.drive().expect("drive");
    assert_eq!(
        p.a.recv(a, usize::MAX),
        Ok(Recv::Data(Bytes::from_static(&[2; 100])))
    );
    assert_eq!(p.a.recv(a, usize::MAX), Ok(Recv::Fin));
    // A's direction: B reads it all, frees the channel, and queues its last
    // acknowledgement...
    assert_eq!(p.a.send(a, Bytes::from_static(&[1; 100])), Ok(100));
    p.a.finish(a).expect("finish");
    p.transmit();
    p.deliver().expect("deliver");
    assert_eq!(
        p.b.recv(b, usize::MAX),
        Ok(Recv::Data(Bytes::from_static(&[1; 100])))
    );
    assert_eq!(p.b.recv(b, usize::MAX), Ok(Recv::Fin));
    assert!(p.b.channel_stats(b).is_none(), "B freed its end");
    // ...which the cable pull loses.
    p.link_reset();
    p.drive().expect("resume");
    p.collect_events();
    let resets: Vec<&Event> = p
        .events_a
        .iter()
        .filter(|e| matches!(e, Event::Reset(..)))
        .collect();
    assert!(resets.is_empty(), "A's channel was aborted: {resets:?}");
    assert!(p.a.channel_stats(a).is_none(), "A's end is freed too");
}

/// Defect 5: channel ids were allocated with `wrapping_add(2)`, so after
/// 2^31 opens a new channel took the id of a live one (id 0, the TUN's,
/// first of all), and the peer, which took any id below the highest it had
/// seen for a repeated `Open`, refused the new channel. Ids in use are now
/// skipped, and an id the peer reuses after its own wrap is a new channel.
#[test]
fn channel_ids_wrap_without_touching_live_channels() {
    let mut p = connected(17);
    let (a0, b0) = open(&mut p, ChannelKind::Stream, Class::Normal, "tun");
    assert_eq!(a0, ChannelId(0));
    p.a.set_next_channel_id(u32::MAX - 1);
    let (hi, _) = open(&mut p, ChannelKind::Stream, Class::Normal, "high");
    assert_eq!(hi, ChannelId(u32::MAX - 1));
    let (wrapped, wb) = open(&mut p, ChannelKind::Stream, Class::Normal, "wrapped");
    assert_ne!(wrapped, a0, "the wrapped id overwrote a live channel");
    assert_eq!(p.a.send(a0, Bytes::from_static(b"still here")), Ok(10));
    assert_eq!(p.a.send(wrapped, Bytes::from_static(b"new")), Ok(3));
    p.drive().expect("drive");
    assert_eq!(
        p.b.recv(b0, 100),
        Ok(Recv::Data(Bytes::from_static(b"still here")))
    );
    assert_eq!(
        p.b.recv(wb, 100),
        Ok(Recv::Data(Bytes::from_static(b"new")))
    );
}

/// Defect 6: the peer's advertised window sized our send buffer (up to
/// 4 GiB per channel): a peer announcing a huge window made us hold that
/// much of the application's data. Our own limit caps it.
#[test]
fn peer_window_does_not_size_our_send_buffer() {
    let small = SessionConfig {
        stream_window: 1 << 20,
        ..SessionConfig::default()
    };
    let big = SessionConfig {
        stream_window: 64 << 20,
        recv_budget: 1 << 30,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(small, 19);
    p.b = Session::new(big, 0xB0B1, p.now);
    p.b.handle_link_up(p.now);
    p.drive().expect("handshake");
    let (a, _b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    let taken = p.a.send(a, Bytes::from(vec![0u8; 64 << 20])).expect("send");
    assert!(
        taken <= 1 << 20,
        "took {taken} bytes into a 1 MiB send buffer"
    );
}

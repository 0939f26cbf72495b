//! Regression tests for the growing windows, the budget and the open fast
//! path (issue 13): one per bug, found by `session_ops` on the kept corpus
//! or by review. Each failed on the code before its fix.

use std::time::Duration;

use bytes::Bytes;

use crate::session::tests::{connected_with, open};
use crate::session::{ChannelKind, Class, Recv, SessionConfig};

/// Found by `session_ops` (regression v1 crash-d57526ed): a message
/// larger than the receiver's window arrived behind empty messages the
/// application had not read yet. The grant that saw the peer out of
/// credit came long after the previous one (the clock had moved), so the
/// window did not grow; the application then read the empty messages,
/// which freed too little credit to ask for a grant, and nothing else
/// would ever ask: the message never completed. A stuck message now asks
/// for credit by itself.
#[test]
fn message_behind_unread_ones_is_not_stuck_after_a_pause() {
    let cfg = SessionConfig {
        min_window: 4096,
        ..SessionConfig::default()
    };
    let mut p = connected_with(cfg, 51);
    let (a, b) = open(&mut p, ChannelKind::Message, Class::Normal, "m");
    // One exchange sets the time of the last grant.
    p.a.send_message(a, Bytes::from(vec![1u8; 3000]))
        .expect("send");
    p.drive().expect("drive");
    assert!(matches!(p.b.recv_message(b), Ok(Recv::Data(_))));
    p.drive().expect("drive");
    p.advance(Duration::from_millis(10)).expect("timers");
    // Three empty messages, then one larger than B's window; B reads
    // nothing while they arrive.
    for _ in 0..3 {
        p.a.send_message(a, Bytes::new()).expect("send");
    }
    let big = Bytes::from(vec![7u8; 10_000]);
    p.a.send_message(a, big.clone()).expect("send");
    p.drive().expect("drive");
    let mut got = Vec::new();
    for _ in 0..50 {
        while let Ok(Recv::Data(m)) = p.b.recv_message(b) {
            got.push(m);
        }
        p.drive().expect("drive");
    }
    assert_eq!(got.len(), 4, "the large message never completed");
    assert_eq!(got[3], big);
}

/// Found by `session_ops` (crash-361d08d2): a message sent with its `Open`,
/// before the `OpenOk`, then a cable pull before the acceptor's
/// application accepted. The link going down forgets the delayed
/// acknowledgement, and a channel not accepted yet is not re-announced on
/// the new link, so after the accept nothing acknowledged the message: the
/// opener held it forever, and once the acceptor (finished both ways) let
/// the channel go, took it for acknowledged already, the opener kept the
/// channel too. The `OpenOk` is now followed by an acknowledgement of
/// whatever arrived, and a channel let go of acknowledges what it has not.
#[test]
fn data_sent_with_the_open_is_acknowledged_after_a_cable_pull() {
    let mut p = connected_with(SessionConfig::default(), 52);
    let a =
        p.a.open(ChannelKind::Message, Class::Normal, "m")
            .expect("open");
    p.a.send_message(a, Bytes::from_static(b"hello"))
        .expect("send");
    p.a.finish(a).expect("finish");
    p.drive().expect("drive");
    let b = crate::session::tests::incoming(&p.events_b)[0];
    p.link_reset();
    p.drive().expect("resume");
    p.b.accept(b).expect("accept");
    p.drive().expect("drive");
    assert_eq!(
        p.a.unacked(a),
        Some(0),
        "the message was never acknowledged"
    );
    assert_eq!(
        p.b.recv_message(b),
        Ok(Recv::Data(Bytes::from_static(b"hello")))
    );
    assert_eq!(p.b.recv_message(b), Ok(Recv::Fin));
    p.b.finish(b).expect("finish");
    p.drive().expect("drive");
    assert_eq!(p.a.recv_message(a), Ok(Recv::Fin));
    p.drive().expect("drive");
    assert_eq!(p.a.channels().count() + p.b.channels().count(), 0);
}

/// Found by `session_ops` (crash-981f602f): the opener sent the first part
/// of a message with its `Open`, as far as the open credit goes; the
/// acceptor's application accepted, and the cable was pulled before the
/// `OpenOk` went out. The resumed link re-announced the channel with its
/// limit where the opener already stood: the message could not finish,
/// the application could not take a part of it, and the grant that lets a
/// stuck message complete only came with arriving data, which never came.
/// A message stuck on resume now gets its grant right after the resume.
#[test]
fn message_past_the_open_credit_completes_after_a_cable_pull() {
    let cfg = SessionConfig {
        min_window: 4096,
        ..SessionConfig::default()
    };
    let mut p = connected_with(cfg, 53);
    let a =
        p.a.open(ChannelKind::Message, Class::Normal, "m")
            .expect("open");
    let big = Bytes::from(vec![9u8; 40_349]);
    p.a.send_message(a, big.clone()).expect("send");
    p.drive().expect("drive");
    let b = crate::session::tests::incoming(&p.events_b)[0];
    assert_eq!(
        p.b.recv_message(b),
        Ok(Recv::Blocked),
        "only the open credit's part arrived"
    );
    p.b.accept(b).expect("accept");
    p.link_reset();
    // No read until the link is quiet: an application reads when data
    // arrives, and a read of a stuck message asks for credit itself,
    // which would hide the bug.
    for _ in 0..5 {
        p.drive().expect("drive");
    }
    assert_eq!(
        p.b.recv_message(b),
        Ok(Recv::Data(big)),
        "the message never completed after the resume"
    );
}

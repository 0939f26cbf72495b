//! Resume limits (see `pause`): reliable channels wait `resume_timeout`
//! for a lost link, then are reset and freed; datagram channels resume.

use std::time::Duration;

use bytes::Bytes;

use super::tests::{connected_with, full_windows, open, pattern};
use super::*;

fn cfg(timeout: Duration) -> SessionConfig {
    SessionConfig {
        resume_timeout: timeout,
        ..full_windows()
    }
}

#[test]
fn reliable_channels_are_reset_when_the_link_stays_away() {
    let timeout = Duration::from_secs(3);
    let mut p = connected_with(cfg(timeout), 31);
    let (sa, sb) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    let (ma, _mb) = open(&mut p, ChannelKind::Message, Class::Latency, "m");
    let (da, db) = open(&mut p, ChannelKind::Datagram, Class::Latency, "d");
    // Unacknowledged bytes are kept for the resume...
    p.a.send(sa, pattern(1, 256 << 10)).expect("send");
    p.transmit();
    // ...and the cable is pulled: both devices closed, nothing opens.
    p.a.handle_link_down();
    p.b.handle_link_down();
    let deadline =
        p.a.poll_timeout()
            .expect("a deadline while the link is down");
    assert!(deadline <= p.now + timeout, "{deadline:?}");
    // Just before it: still waiting.
    p.now += timeout - Duration::from_millis(1);
    p.a.handle_timeout(p.now).expect("timers");
    assert!(p.a.channel_kind(sa).is_some());
    p.now += Duration::from_millis(2);
    p.a.handle_timeout(p.now).expect("timers");
    p.b.handle_timeout(p.now).expect("timers");
    p.collect_events();
    for (id, ev) in [(sa, &p.events_a), (ma, &p.events_a), (sb, &p.events_b)] {
        assert!(
            ev.contains(&Event::Reset(id, ResetReason::LinkLost)),
            "{id}: {ev:?}"
        );
    }
    assert_eq!(p.a.channel_kind(sa), None, "the stream was freed");
    assert_eq!(p.a.unacked(sa), None);
    assert_eq!(p.a.stats().expired_channels, 2);
    // The datagram channel waits on and works once the cable is back.
    assert_eq!(p.a.channel_kind(da), Some(ChannelKind::Datagram));
    p.a.handle_link_up(p.now);
    p.b.handle_link_up(p.now);
    p.drive().expect("link back");
    assert!(p.a.is_connected() && p.b.is_connected());
    assert_eq!(p.a.send_datagram(da, Bytes::from_static(b"hi")), Ok(true));
    p.drive().expect("drive");
    assert_eq!(
        p.b.recv_datagram(db),
        Ok(Recv::Data(Bytes::from_static(b"hi")))
    );
    // No channel came back from the dead on either side.
    assert_eq!(p.b.channel_kind(sb), None);
}

#[test]
fn a_link_back_in_time_resumes_everything() {
    let timeout = Duration::from_secs(3);
    let mut p = connected_with(cfg(timeout), 32);
    let (sa, sb) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    p.a.send(sa, pattern(2, 64 << 10)).expect("send");
    p.transmit();
    p.link_reset();
    p.now += timeout / 2;
    p.a.handle_timeout(p.now).expect("timers");
    p.drive().expect("resume");
    // Well past the first deadline: the link came back, nothing expires.
    p.now += timeout;
    p.a.handle_timeout(p.now).expect("timers");
    assert!(p.a.channel_kind(sa).is_some() && p.b.channel_kind(sb).is_some());
    assert_eq!(p.a.stats().expired_channels, 0);
}

#[test]
fn zero_waits_for_ever() {
    let mut p = connected_with(cfg(Duration::ZERO), 33);
    let (sa, _) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    p.a.handle_link_down();
    assert_eq!(p.a.poll_timeout(), None);
    p.now += Duration::from_secs(86_400);
    p.a.handle_timeout(p.now).expect("timers");
    assert!(p.a.channel_kind(sa).is_some());
}

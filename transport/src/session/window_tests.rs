//! Growing windows and the receive budget on the simulated pair (see
//! `session::window`): windows grow for a reader that keeps up and only
//! then, idle ones shrink, the budget bounds what is granted and is shared,
//! and the largest message still completes when it is tight.

use std::time::Duration;

use bytes::Bytes;

use super::tests::{connected_with, drain_stream, open, pattern};
use super::{ChannelId, ChannelKind, Class, Recv, SessionConfig};
use crate::sim::Pair;

/// Sends `total` bytes A→B on `(a, b)`, B reading every `read_every` of
/// virtual time (zero: at once); checks them and returns B's largest
/// receive window seen.
fn stream(p: &mut Pair, (a, b): (ChannelId, ChannelId), total: usize, read_every: Duration) -> u64 {
    let data = pattern(3, total);
    let mut rest = data.clone();
    let mut got = Vec::new();
    let mut widest = 0;
    for _ in 0..200_000 {
        if !rest.is_empty() {
            if let Ok(n) = p.a.send(a, rest.clone()) {
                let _ = rest.split_to(n);
                if rest.is_empty() {
                    p.a.finish(a).expect("finish");
                }
            }
        }
        p.drive().expect("drive");
        if !read_every.is_zero() {
            p.advance(read_every).expect("timers");
        }
        let done = drain_stream(&mut p.b, b, &mut got);
        if let Some(s) = p.b.channel_stats(b) {
            widest = widest.max(s.recv_window);
        }
        if done {
            assert!(got == data[..], "bytes differ");
            return widest;
        }
    }
    panic!("stalled after {} of {total} bytes", got.len());
}

#[test]
fn window_grows_to_stream_window_for_a_reader_that_keeps_up() {
    let cfg = SessionConfig::default();
    let (start, max) = (cfg.min_window, cfg.stream_window);
    let mut p = connected_with(cfg, 61);
    let ch = open(&mut p, ChannelKind::Stream, Class::Bulk, "bulk");
    assert_eq!(p.b.channel_stats(ch.1).map(|s| s.recv_window), Some(start));
    let widest = stream(&mut p, ch, 64 << 20, Duration::ZERO);
    assert_eq!(widest, max, "the window stopped growing at {widest}");
    assert!(p.b.stats().window_grows >= 7, "{:?}", p.b.stats());
}

#[test]
fn window_of_a_slow_reader_does_not_grow() {
    let mut p = connected_with(SessionConfig::default(), 62);
    let start = p.b.config().min_window;
    let ch = open(&mut p, ChannelKind::Stream, Class::Bulk, "slow");
    // B reads 10 ms apart: the peer runs out of credit every time, but the
    // reader, not the window, is what limits the channel.
    let widest = stream(&mut p, ch, 4 << 20, Duration::from_millis(10));
    assert_eq!(widest, start);
    assert_eq!(p.b.stats().window_grows, 0);
}

#[test]
fn idle_window_shrinks_and_its_budget_comes_back() {
    let mut p = connected_with(SessionConfig::default(), 63);
    let (start, idle) = (p.b.config().min_window, p.b.config().window_idle);
    let base = p.b.stats().recv_held;
    let (a, b) = open(&mut p, ChannelKind::Stream, Class::Bulk, "burst");
    let data = pattern(4, 32 << 20);
    let mut rest = data.clone();
    let mut got = Vec::new();
    while !rest.is_empty() {
        if let Ok(n) = p.a.send(a, rest.clone()) {
            let _ = rest.split_to(n);
        }
        p.drive().expect("drive");
        drain_stream(&mut p.b, b, &mut got);
    }
    p.drive().expect("drive");
    drain_stream(&mut p.b, b, &mut got);
    let grown = p.b.channel_stats(b).map_or(0, |s| s.recv_window);
    assert!(grown > 8 * start, "did not grow: {grown}");
    // Idle: every idle period halves the window, down to the start...
    for _ in 0..20 {
        p.advance(idle).expect("timers");
        p.drive().expect("drive");
    }
    assert_eq!(p.b.channel_stats(b).map(|s| s.recv_window), Some(start));
    // ...but credit granted is not taken back: it still holds it, until
    // the peer uses it (and is granted no more than the small window).
    let still = p.b.channel_stats(b).map_or(0, |s| s.recv_held);
    assert!(still > start, "{still}");
    let more = pattern(5, grown as usize);
    let mut rest = more.clone();
    for _ in 0..1000 {
        if !rest.is_empty() {
            if let Ok(n) = p.a.send(a, rest.clone()) {
                let _ = rest.split_to(n);
            }
        }
        p.drive().expect("drive");
        drain_stream(&mut p.b, b, &mut got);
        if rest.is_empty() && got.len() == data.len() + more.len() {
            break;
        }
    }
    assert_eq!(got.len(), data.len() + more.len());
    assert_eq!(p.b.channel_stats(b).map(|s| s.recv_held), Some(start));
    assert_eq!(p.b.stats().recv_held, base + start);
}

#[test]
fn opening_holds_only_the_starting_window_and_one_channel_still_grows() {
    let mut p = connected_with(SessionConfig::default(), 64);
    let (start, max) = (p.b.config().min_window, p.b.config().stream_window);
    let before = (p.a.stats().recv_held, p.b.stats().recv_held);
    let n = 10_000u64;
    // In two waves: more than `max_pending_opens` (8192) unaccepted at once
    // would be refused as a backlog.
    for wave in 0..2 {
        for i in 0..n / 2 {
            p.a.open(
                ChannelKind::Stream,
                Class::Normal,
                &format!("idle{wave}.{i}"),
            )
            .expect("open");
        }
        p.drive().expect("drive");
        for e in std::mem::take(&mut p.events_b) {
            if let super::Event::Incoming { id, .. } = e {
                p.b.accept(id).expect("accept");
            }
        }
        p.drive().expect("drive");
    }
    assert_eq!(p.b.channels().count() as u64, n);
    // Each side holds one starting window per channel, nothing more.
    assert_eq!(p.a.stats().recv_held - before.0, n * start);
    assert_eq!(p.b.stats().recv_held - before.1, n * start);
    // A new channel beside them still grows to the whole window.
    let ch = open(&mut p, ChannelKind::Stream, Class::Bulk, "busy");
    let widest = stream(&mut p, ch, 64 << 20, Duration::ZERO);
    assert_eq!(widest, max);
}

/// Many channels moving at once with a budget that holds a small part of
/// their windows: the budget is never exceeded, every channel keeps
/// moving (none starves), and none holds much more than an equal share.
#[test]
fn tight_budget_is_shared_between_the_moving_channels() {
    let cfg = SessionConfig {
        recv_budget: 24 << 20,
        message_window: 1 << 20,
        ..SessionConfig::default()
    };
    let total = cfg.recv_budget;
    let reserve = cfg.message_window - cfg.min_window;
    let mut p = connected_with(cfg, 65);
    let n = 16;
    let chans: Vec<_> = (0..n)
        .map(|i| open(&mut p, ChannelKind::Stream, Class::Bulk, &format!("c{i}")))
        .collect();
    let data = pattern(6, 1 << 20);
    let mut got = vec![0usize; n];
    let mut last = vec![0usize; n];
    for round in 0..400 {
        for &(a, _) in &chans {
            let _ = p.a.send(a, data.clone());
        }
        p.drive().expect("drive");
        for (i, &(_, b)) in chans.iter().enumerate() {
            let mut v = Vec::new();
            drain_stream(&mut p.b, b, &mut v);
            got[i] += v.len();
        }
        let held = p.b.stats().recv_held;
        assert!(held <= total, "budget exceeded: {held} > {total}");
        if round % 50 == 49 {
            for i in 0..n {
                assert!(got[i] > last[i], "channel {i} starved in round {round}");
            }
            last.clone_from(&got);
        }
    }
    // Shares: what the channels hold is close to equal.
    let share = (total - reserve) / n as u64;
    for (i, &(_, b)) in chans.iter().enumerate() {
        let w = p.b.channel_stats(b).map_or(0, |s| s.recv_window);
        assert!(
            w <= share + share / 2,
            "channel {i} holds {w}, share {share}"
        );
    }
    let (min, max) = (got.iter().min(), got.iter().max());
    let (Some(&min), Some(&max)) = (min, max) else {
        unreachable!("16 channels");
    };
    assert!(min * 10 >= max * 8, "bytes per channel {min}..{max}");
}

/// The largest message the peer takes (`message_window - 1` bytes) is
/// delivered on several channels at once while the budget holds far less
/// than their windows: one completes from the reserve at a time.
#[test]
fn largest_message_completes_under_a_tight_budget() {
    let cfg = SessionConfig {
        message_window: 4 << 20,
        min_window: 64 << 10,
        // Room for the reserve and little more than the channels' starts.
        recv_budget: (4 << 20) + (1 << 20),
        ..SessionConfig::default()
    };
    let max = cfg.message_window as usize - 1;
    let mut p = connected_with(cfg, 66);
    let chans: Vec<_> = (0..6)
        .map(|i| {
            open(
                &mut p,
                ChannelKind::Message,
                Class::Normal,
                &format!("m{i}"),
            )
        })
        .collect();
    for (i, &(a, _)) in chans.iter().enumerate() {
        p.a.send_message(a, pattern(i as u8, max)).expect("send");
    }
    let mut got = vec![None; chans.len()];
    for _ in 0..20_000 {
        p.drive().expect("drive");
        for (i, &(_, b)) in chans.iter().enumerate() {
            if let Ok(Recv::Data(m)) = p.b.recv_message(b) {
                got[i] = Some(m);
            }
        }
        assert!(p.b.stats().recv_held <= (5 << 20));
        if got.iter().all(Option::is_some) {
            break;
        }
    }
    for (i, m) in got.iter().enumerate() {
        assert!(
            m.as_ref().is_some_and(|m| *m == pattern(i as u8, max)),
            "message {i} did not arrive whole"
        );
    }
    // One byte more is refused at the sender: the peer's Hello said so.
    let too_big = Bytes::from(vec![0u8; max + 1]);
    assert!(matches!(
        p.a.send_message(chans[0].0, too_big),
        Err(super::SendError::TooLarge { .. })
    ));
}

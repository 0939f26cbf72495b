//! In-band resync (see `resync`): corruption on an up link is recovered
//! on the open byte stream, with nothing lost and no link fault.

use std::time::Duration;

use bytes::Bytes;

use super::tests::{connected_with, drain_stream, full_windows, open, pattern};
use super::*;
use crate::sim::{Pair, Side};

/// Sends `data` on a new stream channel A -> B, flips a bit of the bytes
/// in flight at `at`, and drives until B has it all (advancing the clock
/// so resent Hellos go out). Returns the pair and what B received.
fn transfer_with_flip(cfg: SessionConfig, at: usize, data: &[u8]) -> (Pair, Vec<u8>) {
    let mut p = connected_with(cfg, 6);
    p.max_read = 50_000;
    let (a, b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    assert_eq!(
        p.a.send(a, Bytes::copy_from_slice(data)).expect("send"),
        data.len()
    );
    p.a.finish(a).expect("finish");
    p.transmit();
    assert!(p.corrupt(Side::A, at, 3), "nothing in flight at {at}");
    let mut got = Vec::new();
    for _ in 0..2000 {
        if drain_stream(&mut p.b, b, &mut got) {
            break;
        }
        p.drive().expect("no link fault: the resync is in-band");
        p.advance(Duration::from_millis(1)).expect("timers");
    }
    (p, got)
}

#[test]
fn corruption_is_recovered_in_band_and_loses_nothing() {
    let data = pattern(7, 3 << 20);
    let (p, got) = transfer_with_flip(full_windows(), 200_000, &data);
    assert!(got == data[..], "stream differs ({} bytes)", got.len());
    let (sa, sb) = (p.a.stats(), p.b.stats());
    assert_eq!(sb.corrupt_batches, 1);
    assert_eq!((sa.resyncs, sb.resyncs), (1, 1), "both sides resynced once");
    assert_eq!(
        (sa.links_up, sb.links_up),
        (1, 1),
        "the device was not reopened"
    );
    assert!(sb.resync_last.is_some());
    // The application saw nothing of it: no new Connected, no reset.
    for ev in [&p.events_a, &p.events_b] {
        let ups = ev
            .iter()
            .filter(|e| matches!(e, Event::Connected { .. }))
            .count();
        assert_eq!(ups, 0, "{ev:?}");
        assert!(!ev.iter().any(|e| matches!(e, Event::Reset(..))), "{ev:?}");
    }
    // The skipped tail of the old stream was counted.
    assert!(sb.resync_bytes > 0);
}

#[test]
fn a_corrupted_batch_header_is_recovered_too() {
    // Offset 4..16 of the first batch in flight: its length or a CRC.
    let data = pattern(9, 1 << 20);
    for at in [0, 5, 9, 13] {
        let (p, got) = transfer_with_flip(full_windows(), at, &data);
        assert!(got == data[..], "flip at {at}: stream differs");
        assert_eq!(p.b.stats().links_up, 1, "flip at {at}: reopened");
        assert_eq!(p.b.stats().resyncs, 1, "flip at {at}");
    }
}

#[test]
fn with_resync_off_corruption_is_a_link_fault() {
    let cfg = SessionConfig {
        resync_timeout: Duration::ZERO,
        ..full_windows()
    };
    let mut p = connected_with(cfg, 6);
    let (a, _b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    p.a.send(a, pattern(1, 1 << 20)).expect("send");
    p.transmit();
    assert!(p.corrupt(Side::A, 100_000, 3));
    let err = loop {
        match p.deliver() {
            Err(e) => break e,
            Ok(true) => continue,
            Ok(false) => panic!("corruption not detected"),
        }
    };
    assert_eq!(err.0, Side::B);
    assert!(matches!(err.1, SessionError::Decode(_)), "{err:?}");
    assert_eq!(p.b.stats().resyncs, 0);
}

#[test]
fn a_lost_resync_hello_is_resent_within_milliseconds() {
    let mut p = connected_with(full_windows(), 8);
    let (a, b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    let data = pattern(3, 512 << 10);
    p.a.send(a, data.clone()).expect("send");
    p.a.finish(a).expect("finish");
    p.transmit();
    assert!(p.corrupt(Side::A, 1000, 1));
    p.deliver().expect("in-band");
    // B now sends its resync Hello; it is corrupted on the way too.
    p.transmit();
    let n = p.in_flight(Side::B);
    assert!(n > 0, "B sent its Hello");
    assert!(p.corrupt(Side::B, n - 1, 0));
    // A finds that batch corrupt and resyncs as well; both resend their
    // Hellos every INBAND_HELLO_RETRY until the link is back.
    let mut got = Vec::new();
    let mut waited = Duration::ZERO;
    for _ in 0..500 {
        if drain_stream(&mut p.b, b, &mut got) {
            break;
        }
        p.drive().expect("in-band");
        p.advance(Duration::from_millis(1)).expect("timers");
        waited += Duration::from_millis(1);
    }
    assert!(got == data[..], "stream differs ({} bytes)", got.len());
    assert!(waited < Duration::from_millis(50), "took {waited:?}");
    assert_eq!((p.a.stats().links_up, p.b.stats().links_up), (1, 1));
}

#[test]
fn a_resync_that_cannot_complete_is_a_link_fault_in_time() {
    let cfg = full_windows();
    let timeout = cfg.resync_timeout;
    let mut p = connected_with(cfg, 9);
    let (a, _b) = open(&mut p, ChannelKind::Stream, Class::Normal, "s");
    p.a.send(a, pattern(2, 256 << 10)).expect("send");
    p.transmit();
    assert!(p.corrupt(Side::A, 500, 1));
    p.deliver().expect("in-band");
    // Nothing B sends reaches A from now on (a cable that lost one way).
    let mut elapsed = Duration::ZERO;
    let err = loop {
        p.transmit();
        p.drop_in_flight(Side::B);
        p.deliver().expect("A takes B's lost bytes for silence");
        elapsed += Duration::from_millis(10);
        match p.advance(Duration::from_millis(10)) {
            Err(e) => break e,
            Ok(()) => assert!(elapsed <= timeout * 2, "no fault after {elapsed:?}"),
        }
    };
    assert!(
        matches!(err.1, SessionError::ResyncFailed(_)),
        "{err:?} after {elapsed:?}"
    );
    assert!(elapsed >= timeout, "gave up after {elapsed:?}");
    assert_eq!(p.b.stats().resync_failures, 1);
}

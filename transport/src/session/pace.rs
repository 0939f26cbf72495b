//! Latency mode: while latency-class records flow, bulk is kept out of the
//! cable's own queue.
//!
//! The device has a ring (up to 16 MiB) and, on the emulated cable, socket
//! buffers besides; a bulk sender fills them all, and a ping, a Pong or an
//! RPC written after that waits until they drained (measured: 1.6 ms at
//! 1 GB/s with the default ring, whatever tbbridge does with its own
//! queues). Nothing tells a writer how full the ring is, so the receiver
//! tells: it reports, in a `Progress` record, how many record bytes it has
//! read on this link, and the sender keeps what it wrote and the peer has
//! not read yet (what is in the pump, the ring and the cable) under
//! [`latency_in_flight`](super::SessionConfig::latency_in_flight), BQL and
//! TCP small queues in one, with the peer's reads for completions.
//!
//! Only while it matters: a latency-class record sent or received turns the
//! mode on for [`latency_hold`](super::SessionConfig::latency_hold) (the
//! request and its answer cross, so usually on both sides), so bulk alone
//! keeps whole rings and multi-MiB writes (the hardware needs them, spec
//! §4), and the reports cost nothing when nobody waits. A receiver in the
//! mode reports every quarter of the limit it read; a sender held back by
//! the limit asks for a report once (`want`), so it waits at most a round
//! trip even when the peer's mode is off (its latency record was lost with
//! a link, say).
//!
//! Both sides count the bytes of every record but Hellos from the moment
//! the link went up; only Hellos travel before both are up, and everything
//! after arrives in order or the link ends, so the counts agree exactly.

use std::time::Instant;

/// Counters of one link, and the mode's deadline.
#[derive(Debug, Default)]
pub(crate) struct Pacing {
    /// Record bytes we wrote on this link (Hellos not counted).
    sent: u64,
    /// Of those, what the peer reported read.
    peer_read: u64,
    /// Record bytes we read on this link (Hellos not counted).
    read: u64,
    /// `read` at our last report.
    reported: u64,
    /// We asked the peer for a report and have none since.
    asked: bool,
    /// The peer asked us for one.
    answer_due: bool,
    /// Latency mode is on until then.
    until: Option<Instant>,
}

impl Pacing {
    /// A new link: counts start over (the mode stays).
    pub fn link_up(&mut self) {
        *self = Pacing {
            until: self.until,
            ..Pacing::default()
        };
    }

    /// A latency-class record went out or came in.
    pub fn latency_seen(&mut self, now: Instant, hold: std::time::Duration) {
        self.until = Some(now + hold);
    }

    pub fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| u > now)
    }

    /// Forgets the mode's end once it passed: the mode stays off (as
    /// `active` says) and its end is no longer a deadline. Without this a
    /// sender left with more than the limit in flight when the mode ended
    /// (the peer stops reporting then) had a deadline in the past, and its
    /// driver spun on it.
    pub fn expire(&mut self, now: Instant) {
        if self.until.is_some_and(|u| u <= now) {
            self.until = None;
        }
    }

    /// When the mode ends, if it is on.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// What we wrote that the peer has not read yet.
    pub fn in_flight(&self) -> u64 {
        self.sent - self.peer_read
    }

    pub fn sent(&mut self, n: usize) {
        self.sent += n as u64;
    }

    pub fn received(&mut self, n: usize) {
        self.read += n as u64;
    }

    /// The peer's report. A report past what we sent is the peer's error;
    /// it cannot make us send more than the limit allows beyond it.
    pub fn on_progress(&mut self, read: u64, want: bool) {
        self.peer_read = self.peer_read.max(read.min(self.sent));
        self.asked = false;
        self.answer_due |= want;
    }

    /// We are held back by the limit: ask the peer for a report, once.
    pub fn ask(&mut self) -> bool {
        !std::mem::replace(&mut self.asked, true)
    }

    /// What we have read, for a request of our own.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// A report is due: the peer asked, or in latency mode `step` bytes
    /// were read since the last one.
    pub fn report_due(&mut self, now: Instant, step: u64) -> Option<u64> {
        let due = self.answer_due || (self.active(now) && self.read - self.reported >= step);
        if due {
            self.answer_due = false;
            self.reported = self.read;
            Some(self.read)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn in_flight_follows_the_reports_and_the_mode_expires() {
        let t0 = Instant::now();
        let mut p = Pacing::default();
        assert!(!p.active(t0));
        p.latency_seen(t0, Duration::from_millis(10));
        assert!(p.active(t0 + Duration::from_millis(9)));
        assert!(!p.active(t0 + Duration::from_millis(10)));
        // Its end stops being a deadline once it passed.
        p.expire(t0 + Duration::from_millis(9));
        assert!(p.until().is_some());
        p.expire(t0 + Duration::from_millis(10));
        assert_eq!(p.until(), None);
        p.latency_seen(t0, Duration::from_millis(10));
        p.sent(1000);
        assert_eq!(p.in_flight(), 1000);
        p.on_progress(400, false);
        assert_eq!(p.in_flight(), 600);
        // A report beyond what was sent is capped; an old one is ignored.
        p.on_progress(5000, false);
        assert_eq!(p.in_flight(), 0);
        p.on_progress(10, false);
        assert_eq!(p.in_flight(), 0);
        // One request until an answer comes.
        assert!(p.ask());
        assert!(!p.ask());
        p.on_progress(10, false);
        assert!(p.ask());
        // Asked, we answer out of the mode too.
        p.on_progress(10, true);
        assert_eq!(p.report_due(t0 + Duration::from_secs(9), 256), Some(0));
        // Reports go out per `step` read, in the mode only.
        p.received(300);
        assert_eq!(p.report_due(t0, 256), Some(300));
        p.received(100);
        assert_eq!(p.report_due(t0, 256), None);
        p.received(200);
        assert_eq!(p.report_due(t0 + Duration::from_secs(1), 256), None);
        assert_eq!(p.report_due(t0, 256), Some(600));
    }
}

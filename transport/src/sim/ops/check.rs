//! The application side of the interpreter: receiving with checks, and the
//! end-of-run invariants.

use super::harness::{Chan, Harness};
use super::pattern::{check_pattern, seed_of, seq_off};
use super::S;
use crate::session::{ChannelId, ChannelKind, Recv, SessionError};

impl Harness {
    /// One receive call on a channel of kind `c.kind`; returns whether
    /// something (data or the end) came.
    pub(crate) fn recv_one(&mut self, s: S, id: ChannelId, c: Chan, max: usize) -> bool {
        let sender = s.other();
        let seed = seed_of(c.key, sender.idx());
        let sess = self.pair.side(s.side());
        let r = match c.kind {
            ChannelKind::Stream => sess.recv(id, max),
            ChannelKind::Message => sess.recv_message(id),
            ChannelKind::Datagram => sess.recv_datagram(id),
        };
        let Ok(r) = r else {
            return false;
        };
        // Named only when an assertion fails (this runs for every read).
        let what = || format!("{s:?} {id} ({:?}, {:?})", c.kind, c.key);
        let f = self.flow(c.key, sender);
        match r {
            Recv::Blocked => false,
            Recv::Data(b) => {
                assert!(!f.fin_seen, "{}: data after the end", what());
                match c.kind {
                    ChannelKind::Stream => {
                        assert!(max == 0 || !b.is_empty(), "{}: empty stream read", what());
                        assert!(b.len() <= max, "{}: read {} > {max}", what(), b.len());
                        assert!(
                            f.recvd + b.len() as u64 <= f.sent,
                            "{}: received {} bytes, only {} sent",
                            what(),
                            f.recvd + b.len() as u64,
                            f.sent
                        );
                        check_pattern(seed, f.recvd, &b, &what);
                        f.recvd += b.len() as u64;
                    }
                    ChannelKind::Message => {
                        let seq = f.msgs_recvd;
                        let len = f
                            .msgs
                            .pop_front()
                            .unwrap_or_else(|| panic!("{}: message {seq} was never sent", what()));
                        assert_eq!(b.len(), len, "{}: message {seq} length", what());
                        check_pattern(seed, seq_off(seq), &b, &what);
                        f.msgs_recvd += 1;
                    }
                    ChannelKind::Datagram => {
                        assert!(b.len() >= 8, "{}: datagram of {} bytes", what(), b.len());
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&b[..8]);
                        let seq = u64::from_le_bytes(n);
                        assert!(seq < f.dgrams_sent, "{}: datagram {seq} never sent", what());
                        assert!(
                            f.last_dgram.is_none_or(|l| seq > l),
                            "{}: datagram {seq} after {:?}",
                            what(),
                            f.last_dgram
                        );
                        f.last_dgram = Some(seq);
                        check_pattern(seed, seq_off(seq), &b[8..], &what);
                    }
                }
                true
            }
            Recv::Fin => {
                if f.fin_seen {
                    return false;
                }
                assert!(
                    f.finished,
                    "{}: end of a channel the peer never finished",
                    what()
                );
                match c.kind {
                    ChannelKind::Stream => assert_eq!(f.recvd, f.sent, "{}: early end", what()),
                    ChannelKind::Message => {
                        assert_eq!(f.msgs_recvd, f.msgs_sent, "{}: early end", what())
                    }
                    ChannelKind::Datagram => {}
                }
                f.fin_seen = true;
                true
            }
        }
    }

    /// Accepts everything pending and reads everything readable.
    pub(crate) fn app_catch_up(&mut self) -> bool {
        let mut any = false;
        for s in [S::A, S::B] {
            for id in std::mem::take(&mut self.pending[s.idx()]) {
                any |= self.accept(s, id);
            }
            let chans: Vec<(ChannelId, Chan)> = self.chans[s.idx()]
                .iter()
                .map(|(id, c)| (ChannelId(*id), *c))
                .collect();
            for (id, c) in chans {
                while self.recv_one(s, id, c, usize::MAX) {
                    any = true;
                }
            }
        }
        self.events();
        self.prune();
        any
    }

    /// Lets everything settle, then checks the end state.
    pub(crate) fn settle(&mut self) {
        for _ in 0..1000 {
            let moved = self.drive();
            let read = self.app_catch_up();
            if moved || read {
                continue;
            }
            let up = self.pair.a.is_connected() && self.pair.b.is_connected();
            if up || self.closing {
                return;
            }
            // A lost Hello is resent on the handshake timer.
            let d = self.cfg.handshake_retry;
            if let Err((_, e)) = self.pair.advance(d) {
                assert!(
                    matches!(e, SessionError::IdleTimeout(_)) || self.timer_fault_ok(&e),
                    "timer fault: {e}"
                );
                self.link_reset();
            }
        }
        panic!("the pair never settles");
    }

    /// Lets everything settle and checks the end state; with `finish_all`,
    /// then finishes every channel and checks that all are freed.
    pub(crate) fn finish(&mut self, finish_all: bool) {
        self.settle();
        if self.closing {
            return;
        }
        self.check_settled();
        if !finish_all {
            return;
        }
        for s in [S::A, S::B] {
            let ids: Vec<ChannelId> = self
                .pair
                .side(s.side())
                .channels()
                .map(|(id, ..)| id)
                .collect();
            for id in ids {
                if self.pair.side(s.side()).finish(id).is_ok() {
                    if let Some(c) = self.chans[s.idx()].get(&id.0).copied() {
                        self.flow(c.key, s).finished = true;
                    }
                }
            }
        }
        self.settle();
        self.check_settled();
        for s in [S::A, S::B] {
            let left: Vec<String> = self
                .pair
                .side(s.side())
                .channels()
                .map(|(id, k, ..)| format!("{id} {k:?}"))
                .collect();
            assert!(
                left.is_empty(),
                "{s:?}: channels finished both ways and read to the end stay: {left:?}"
            );
        }
    }

    /// Both links up, the same channels on both sides, everything sent on
    /// them received.
    pub(crate) fn check_settled(&mut self) {
        assert!(self.pair.a.is_connected() && self.pair.b.is_connected());
        for s in [S::A, S::B] {
            let o = s.other();
            let mine: Vec<(ChannelId, ChannelKind)> = self
                .pair
                .side(s.side())
                .channels()
                .map(|(id, k, _, _)| (id, k))
                .collect();
            for (id, kind) in mine {
                let peer = ChannelId(id.0 ^ 1);
                let theirs = self
                    .pair
                    .side(o.side())
                    .channels()
                    .find(|(i, ..)| *i == peer)
                    .map(|(_, k, _, _)| k);
                assert_eq!(
                    theirs,
                    Some(kind),
                    "{s:?} has {id} ({kind:?}), {o:?} does not have {peer}"
                );
                // The channel as either application knows it (one side may
                // have released it: it lingers until the peer finishes).
                let Some(key) = self.chans[s.idx()]
                    .get(&id.0)
                    .or_else(|| self.chans[o.idx()].get(&peer.0))
                    .map(|c| c.key)
                else {
                    continue;
                };
                if !self.chans[o.idx()].contains_key(&peer.0) {
                    // The receiving application let go of it.
                    continue;
                }
                // What we sent on it arrived.
                let f = self.flow(key, s);
                let (recvd, sent, msgs, finished, fin_seen) = (
                    f.recvd,
                    f.sent,
                    (f.msgs_recvd, f.msgs_sent),
                    f.finished,
                    f.fin_seen,
                );
                let what = format!("{s:?} {id} -> {o:?} ({kind:?}, {key:?})");
                assert_eq!(recvd, sent, "{what}: stream bytes");
                assert_eq!(msgs.0, msgs.1, "{what}: messages");
                if finished {
                    assert!(fin_seen, "{what}: finish never arrived");
                }
            }
        }
    }
}

//! Sequences of application and cable operations on a [`Pair`] of
//! sessions (quinn's `fuzz_targets/streams.rs`, one level up: whole
//! sessions over a simulated cable instead of one stream table).
//!
//! Every byte sent is a pattern derived from (channel, direction, offset),
//! so the receiver checks content and order without keeping copies.
//! Checked all along:
//! * stream bytes arrive in order, unaltered, never more than were sent,
//!   and the end of a stream comes exactly after its last byte;
//! * messages arrive whole, in order, none lost or repeated;
//! * datagrams arrive unaltered, in order, never repeated (they may be
//!   dropped);
//! * the only link faults are those after an injected bit flip (at most 3
//!   per link, which CRC32C always detects) and idle timeouts after the
//!   clock jumped: any other fault (a protocol error, say) is a bug of the
//!   sending session.
//!
//! After the operations, the application accepts and reads everything and
//! the pair is driven (without corruption) until nothing moves. Then:
//! * both links are up and both sessions know the same live channels;
//! * every stream byte and message sent on a live channel was received
//!   and acknowledged, and every finish was seen by the peer.

#![no_main]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tbbridge_transport::session::{
    ChannelId, ChannelKind, Class, Event, Recv, RejectReason, SessionConfig, SessionError,
};
use tbbridge_transport::sim::{Pair, Side};

#[path = "session_ops/params.rs"]
mod params;
#[path = "session_ops/pattern.rs"]
mod pattern;
use params::Params;
use pattern::{check_pattern, dgram_bytes, pattern_bytes, seed_of};

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum S {
    A,
    B,
}

impl S {
    fn side(self) -> Side {
        match self {
            S::A => Side::A,
            S::B => Side::B,
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
    fn other(self) -> S {
        match self {
            S::A => S::B,
            S::B => S::A,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    Datagram,
    Stream,
    Message,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Empty,
    Tiny(u8),
    Small(u16),
    /// Several 64 KiB chunks (up to ~512 KiB).
    Chunks(u8),
}

impl Size {
    fn bytes(self) -> usize {
        match self {
            Size::Empty => 0,
            Size::Tiny(n) => usize::from(n),
            Size::Small(n) => usize::from(n),
            Size::Chunks(n) => usize::from(n % 9) * 65_536 + usize::from(n),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open(S, Kind, Class2, u8),
    Accept(S, u8),
    Reject(S, u8, u8),
    Send(S, u8, Size),
    SendMessage(S, u8, Size),
    SendDatagram(S, u8, Size),
    Recv(S, u8, u16),
    RecvMessage(S, u8),
    RecvDatagram(S, u8),
    Finish(S, u8),
    Reset(S, u8),
    Release(S, u8),
    Advance(u16),
    LinkReset,
    Restart(S),
    Corrupt(S, u16, u8),
    Drive,
    Transmit,
    Deliver,
    Close(S),
    Ping(S),
    MaxRead(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Class2 {
    Latency,
    Normal,
    Bulk,
}

const SERVICES: [&str; 4] = ["echo", "rpc", "é/ü", "x"];

/// Identifies a channel across both sides and generations (restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    gen: u32,
    opener: usize,
    /// The opener's id for it.
    id: u32,
}

/// One direction of a channel.
#[derive(Debug, Default)]
struct Flow {
    /// Stream bytes taken by `send`.
    sent: u64,
    /// Lengths of the messages taken by `send_message`, not yet received.
    msgs: VecDeque<usize>,
    msgs_sent: u64,
    dgrams_sent: u64,
    finished: bool,
    /// Stream bytes received.
    recvd: u64,
    msgs_recvd: u64,
    last_dgram: Option<u64>,
    fin_seen: bool,
    /// The receiving application released the channel.
    released: bool,
}

#[derive(Debug, Clone, Copy)]
struct Chan {
    kind: ChannelKind,
    key: Key,
    /// Both sides agreed (opener: `Opened` came; acceptor: accepted).
    open: bool,
}

/// Flips at most this many bits per link: CRC32C detects any 3-bit error
/// in a batch (Hamming distance 4 up to 2^31 bits), so the invariants
/// stay exact.
const MAX_FLIPS: usize = 3;

struct Harness {
    pair: Pair,
    cfg: SessionConfig,
    gen: u32,
    chans: [BTreeMap<u32, Chan>; 2],
    pending: [Vec<ChannelId>; 2],
    flows: HashMap<(Key, usize), Flow>,
    flips: usize,
    closing: bool,
    restarts: u64,
}

impl Harness {
    fn new(p: &Params) -> Self {
        let cfg = p.config();
        let mut pair = Pair::new(cfg.clone(), p.seed);
        pair.max_read = usize::from(p.max_read);
        Self {
            pair,
            cfg,
            gen: 0,
            chans: [BTreeMap::new(), BTreeMap::new()],
            pending: [Vec::new(), Vec::new()],
            flows: HashMap::new(),
            flips: 0,
            closing: false,
            restarts: 0,
        }
    }

    fn pick(&self, s: S, i: u8) -> Option<(ChannelId, Chan)> {
        let m = &self.chans[s.idx()];
        if m.is_empty() {
            return None;
        }
        let (id, c) = m.iter().nth(usize::from(i) % m.len())?;
        Some((ChannelId(*id), *c))
    }

    fn flow(&mut self, key: Key, sender: S) -> &mut Flow {
        self.flows.entry((key, sender.idx())).or_default()
    }

    fn link_fault(&mut self, side: Side, e: SessionError) {
        // Corruption usually shows as a checksum error; while a side is
        // handshaking it skips garbage instead, and then may fail on what
        // follows a lost Hello. Without a flip, no fault is acceptable.
        assert!(
            self.flips > 0,
            "link fault on {side:?} without any bit flip: {e}"
        );
        self.link_reset();
    }

    fn link_reset(&mut self) {
        self.pair.link_reset();
        self.flips = 0;
    }

    /// Transmits and delivers until nothing moves.
    fn drive(&mut self) -> bool {
        let mut moved = false;
        for _ in 0..50_000 {
            let t = self.pair.transmit();
            let d = match self.pair.deliver() {
                Ok(d) => d,
                Err((side, e)) => {
                    self.link_fault(side, e);
                    true
                }
            };
            self.events();
            if !t && !d {
                return moved;
            }
            moved = true;
        }
        panic!("the sessions never stop transmitting (livelock)");
    }

    fn events(&mut self) {
        self.pair.collect_events();
        for s in [S::A, S::B] {
            let evs = std::mem::take(match s {
                S::A => &mut self.pair.events_a,
                S::B => &mut self.pair.events_b,
            });
            for ev in evs {
                self.event(s, ev);
            }
        }
    }

    fn event(&mut self, s: S, ev: Event) {
        match ev {
            Event::Incoming { id, kind, .. } => {
                assert!(id.is_remote(), "{s:?}: Incoming with a local id {id}");
                // The opener's key (it may predate a restart of ours).
                let key = self.chans[s.other().idx()].get(&(id.0 ^ 1)).map_or(
                    Key {
                        gen: self.gen,
                        opener: s.other().idx(),
                        id: id.0 ^ 1,
                    },
                    |c| c.key,
                );
                let old = self.chans[s.idx()].insert(
                    id.0,
                    Chan {
                        kind,
                        key,
                        open: false,
                    },
                );
                assert!(old.is_none(), "{s:?}: second Incoming for {id}");
                self.pending[s.idx()].push(id);
            }
            Event::Rejected(id, _) | Event::Reset(id, _) => {
                self.chans[s.idx()].remove(&id.0);
            }
            Event::Closed { clean } => {
                self.closing = true;
                if clean {
                    // "Everything was confirmed delivered", on the channels
                    // both sides accepted. (Not on the others yet: see
                    // `wire::proptests::clean_close_means_everything_was_delivered`.)
                    let sess = self.pair.side(s.side());
                    let left: Vec<(ChannelId, u64)> = self.chans[s.idx()]
                        .iter()
                        .filter(|(_, c)| c.open && c.kind != ChannelKind::Datagram)
                        .map(|(id, _)| (ChannelId(*id), sess.unacked(ChannelId(*id)).unwrap_or(0)))
                        .filter(|(_, n)| *n > 0)
                        .collect();
                    assert!(
                        left.is_empty(),
                        "{s:?}: clean close with unacknowledged data: {left:?}"
                    );
                }
            }
            Event::Opened(id) => {
                if let Some(c) = self.chans[s.idx()].get_mut(&id.0) {
                    c.open = true;
                }
            }
            Event::Connected { .. } | Event::Readable(_) | Event::Writable(_) => {}
        }
    }

    /// Forgets channels the session no longer has (finished both ways).
    fn prune(&mut self) {
        for s in [S::A, S::B] {
            let sess = self.pair.side(s.side());
            let gone: Vec<u32> = self.chans[s.idx()]
                .keys()
                .copied()
                .filter(|id| sess.channel_stats(ChannelId(*id)).is_none())
                .collect();
            for id in gone {
                self.chans[s.idx()].remove(&id);
            }
            let chans = &self.chans[s.idx()];
            self.pending[s.idx()].retain(|id| chans.contains_key(&id.0));
        }
    }

    fn op(&mut self, op: Op) {
        match op {
            Op::Open(s, kind, class, svc) => {
                let kind = match kind {
                    Kind::Datagram => ChannelKind::Datagram,
                    Kind::Stream => ChannelKind::Stream,
                    Kind::Message => ChannelKind::Message,
                };
                let class = match class {
                    Class2::Latency => Class::Latency,
                    Class2::Normal => Class::Normal,
                    Class2::Bulk => Class::Bulk,
                };
                let service = SERVICES[usize::from(svc) % SERVICES.len()];
                if let Ok(id) = self.pair.side(s.side()).open(kind, class, service) {
                    assert!(!id.is_remote());
                    let key = Key {
                        gen: self.gen,
                        opener: s.idx(),
                        id: id.0,
                    };
                    let old = self.chans[s.idx()].insert(
                        id.0,
                        Chan {
                            kind,
                            key,
                            open: false,
                        },
                    );
                    assert!(old.is_none(), "{s:?}: open returned a live id {id}");
                }
            }
            Op::Accept(s, i) => {
                let p = &mut self.pending[s.idx()];
                if !p.is_empty() {
                    let id = p.remove(usize::from(i) % p.len());
                    self.accept(s, id);
                }
            }
            Op::Reject(s, i, reason) => {
                let p = &mut self.pending[s.idx()];
                if !p.is_empty() {
                    let id = p.remove(usize::from(i) % p.len());
                    let reason = match reason % 4 {
                        0 => RejectReason::NoService,
                        1 => RejectReason::TooMany,
                        2 => RejectReason::Refused,
                        _ => RejectReason::Closed,
                    };
                    if self.pair.side(s.side()).reject(id, reason).is_ok() {
                        self.chans[s.idx()].remove(&id.0);
                    }
                }
            }
            Op::Send(s, i, size) => self.send(s, i, size.bytes()),
            Op::SendMessage(s, i, size) => self.send_message(s, i, size.bytes()),
            Op::SendDatagram(s, i, size) => self.send_datagram(s, i, size.bytes()),
            Op::Recv(s, i, max) => {
                if let Some((id, c)) = self.pick(s, i) {
                    self.recv_one(s, id, c, usize::from(max));
                }
            }
            Op::RecvMessage(s, i) | Op::RecvDatagram(s, i) => {
                if let Some((id, c)) = self.pick(s, i) {
                    self.recv_one(s, id, c, 0);
                }
            }
            Op::Finish(s, i) => {
                if let Some((id, c)) = self.pick(s, i) {
                    if self.pair.side(s.side()).finish(id).is_ok() {
                        self.flow(c.key, s).finished = true;
                    }
                }
            }
            Op::Reset(s, i) => {
                if let Some((id, _)) = self.pick(s, i) {
                    if self.pair.side(s.side()).reset(id).is_ok() {
                        self.chans[s.idx()].remove(&id.0);
                    }
                }
            }
            Op::Release(s, i) => {
                if let Some((id, c)) = self.pick(s, i) {
                    if self.pair.side(s.side()).release(id).is_ok() {
                        self.flow(c.key, s).finished = true;
                        self.flow(c.key, s.other()).released = true;
                        // The application let go of it.
                        self.chans[s.idx()].remove(&id.0);
                    }
                }
            }
            Op::Advance(ms) => {
                let d = Duration::from_millis(u64::from(ms));
                if let Err((_, e)) = self.pair.advance(d) {
                    assert!(
                        matches!(e, SessionError::IdleTimeout(t) if t >= self.cfg.idle_timeout),
                        "timer fault: {e}"
                    );
                    self.link_reset();
                }
            }
            Op::LinkReset => self.link_reset(),
            Op::Restart(s) => {
                self.restarts += 1;
                self.gen += 1;
                let id = 0xc0ff_ee00 + (self.restarts << 1 | 1);
                self.pair.restart(s.side(), self.cfg.clone(), id);
                self.flips = 0;
                // The restarted side forgot its channels; the other side
                // resets its own when it sees the new identity (events), or
                // keeps them if it never met the old one.
                self.chans[s.idx()].clear();
                self.pending[s.idx()].clear();
            }
            Op::Corrupt(s, off, bit) => {
                let n = self.pair.in_flight(s.side());
                if n > 0
                    && self.flips < MAX_FLIPS
                    && self.pair.corrupt(s.side(), usize::from(off) % n, bit)
                {
                    self.flips += 1;
                }
            }
            Op::Drive => {
                self.drive();
            }
            Op::Transmit => {
                self.pair.transmit();
            }
            Op::Deliver => {
                if let Err((side, e)) = self.pair.deliver() {
                    self.link_fault(side, e);
                }
            }
            Op::Close(s) => {
                self.closing = true;
                let now = self.pair.now;
                self.pair.side(s.side()).close(now);
            }
            Op::Ping(s) => {
                let now = self.pair.now;
                self.pair.side(s.side()).ping(now);
            }
            Op::MaxRead(n) => self.pair.max_read = usize::from(n),
        }
        self.events();
        self.prune();
    }

    fn accept(&mut self, s: S, id: ChannelId) -> bool {
        let ok = self.pair.side(s.side()).accept(id).is_ok();
        if ok {
            if let Some(c) = self.chans[s.idx()].get_mut(&id.0) {
                c.open = true;
            }
        }
        ok
    }

    fn send(&mut self, s: S, i: u8, len: usize) {
        let Some((id, c)) = self.pick(s, i) else {
            return;
        };
        if c.kind != ChannelKind::Stream {
            // Wrong kind: must be refused without effect.
            let r = self.pair.side(s.side()).send(id, Bytes::from_static(b"x"));
            assert!(r.is_err(), "send on a {:?} channel: {r:?}", c.kind);
            return;
        }
        let seed = seed_of(c.key, s.idx());
        let off = self.flow(c.key, s).sent;
        let data = pattern_bytes(seed, off, len);
        if let Ok(n) = self.pair.side(s.side()).send(id, data) {
            assert!(n <= len);
            self.flow(c.key, s).sent += n as u64;
        }
    }

    fn send_message(&mut self, s: S, i: u8, len: usize) {
        let Some((id, c)) = self.pick(s, i) else {
            return;
        };
        let seed = seed_of(c.key, s.idx());
        let seq = self.flow(c.key, s).msgs_sent;
        let m = pattern_bytes(seed, seq << 32, len);
        let r = self.pair.side(s.side()).send_message(id, m);
        if c.kind != ChannelKind::Message {
            assert!(r.is_err(), "send_message on a {:?} channel", c.kind);
        } else if r.is_ok() {
            let f = self.flow(c.key, s);
            f.msgs_sent += 1;
            f.msgs.push_back(len);
        }
    }

    fn send_datagram(&mut self, s: S, i: u8, len: usize) {
        let Some((id, c)) = self.pick(s, i) else {
            return;
        };
        let seed = seed_of(c.key, s.idx());
        let seq = self.flow(c.key, s).dgrams_sent;
        let d = dgram_bytes(seed, seq, len);
        let r = self.pair.side(s.side()).send_datagram(id, d);
        if c.kind != ChannelKind::Datagram {
            assert!(r.is_err(), "send_datagram on a {:?} channel", c.kind);
        } else if r.is_ok() {
            // Queued or dropped: the sequence number is used either way.
            self.flow(c.key, s).dgrams_sent += 1;
        }
    }

    /// One receive call on a channel of kind `c.kind`; returns whether
    /// something (data or the end) came.
    fn recv_one(&mut self, s: S, id: ChannelId, c: Chan, max: usize) -> bool {
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
        let what = format!("{s:?} {id} ({:?}, {:?})", c.kind, c.key);
        let f = self.flow(c.key, sender);
        match r {
            Recv::Blocked => false,
            Recv::Data(b) => {
                assert!(!f.fin_seen, "{what}: data after the end");
                match c.kind {
                    ChannelKind::Stream => {
                        assert!(max == 0 || !b.is_empty(), "{what}: empty stream read");
                        assert!(b.len() <= max, "{what}: read {} > {max}", b.len());
                        assert!(
                            f.recvd + b.len() as u64 <= f.sent,
                            "{what}: received {} bytes, only {} sent",
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
                            .unwrap_or_else(|| panic!("{what}: message {seq} was never sent"));
                        assert_eq!(b.len(), len, "{what}: message {seq} length");
                        check_pattern(seed, seq << 32, &b, &what);
                        f.msgs_recvd += 1;
                    }
                    ChannelKind::Datagram => {
                        assert!(b.len() >= 8, "{what}: datagram of {} bytes", b.len());
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&b[..8]);
                        let seq = u64::from_le_bytes(n);
                        assert!(seq < f.dgrams_sent, "{what}: datagram {seq} never sent");
                        assert!(
                            f.last_dgram.is_none_or(|l| seq > l),
                            "{what}: datagram {seq} after {:?}",
                            f.last_dgram
                        );
                        f.last_dgram = Some(seq);
                        check_pattern(seed, seq << 32, &b[8..], &what);
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
                    "{what}: end of a channel the peer never finished"
                );
                match c.kind {
                    ChannelKind::Stream => assert_eq!(f.recvd, f.sent, "{what}: early end"),
                    ChannelKind::Message => {
                        assert_eq!(f.msgs_recvd, f.msgs_sent, "{what}: early end")
                    }
                    ChannelKind::Datagram => {}
                }
                f.fin_seen = true;
                true
            }
        }
    }

    /// Accepts everything pending and reads everything readable.
    fn app_catch_up(&mut self) -> bool {
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
    fn settle(&mut self) {
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
                    matches!(e, SessionError::IdleTimeout(_)),
                    "timer fault: {e}"
                );
                self.link_reset();
            }
        }
        panic!("the pair never settles");
    }

    /// Lets everything settle and checks the end state; with `finish_all`,
    /// then finishes every channel and checks that all are freed.
    fn finish(&mut self, finish_all: bool) {
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
    fn check_settled(&mut self) {
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

#[derive(Arbitrary, Debug)]
struct Input {
    params: Params,
    ops: Vec<Op>,
    /// At the end, finish every channel and check that all are freed.
    finish_all: bool,
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(&input.params);
    for op in input.ops {
        h.op(op);
    }
    h.finish(input.finish_all);
});

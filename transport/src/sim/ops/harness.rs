//! The interpreter's state: both sessions, what each application knows of
//! its channels, and what was sent on each direction of each channel.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::pattern::{dgram_bytes, pattern_bytes, seed_of, seq_off};
use super::{Class2, Kind, Op, Params, S, SERVICES};
use crate::session::{
    ChannelId, ChannelKind, Class, Event, RejectReason, SessionConfig, SessionError,
};
use crate::sim::{Pair, Side};

/// Identifies a channel across both sides and generations (restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub gen: u32,
    pub opener: usize,
    /// The opener's id for it.
    pub id: u32,
}

/// One direction of a channel.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Stream bytes taken by `send`.
    pub sent: u64,
    /// Lengths of the messages taken by `send_message`, not yet received.
    pub msgs: VecDeque<usize>,
    pub msgs_sent: u64,
    pub dgrams_sent: u64,
    pub finished: bool,
    /// Stream bytes received.
    pub recvd: u64,
    pub msgs_recvd: u64,
    pub last_dgram: Option<u64>,
    pub fin_seen: bool,
    /// The receiving application released the channel.
    pub released: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Chan {
    pub kind: ChannelKind,
    pub key: Key,
    /// Both sides agreed (opener: `Opened` came; acceptor: accepted).
    pub open: bool,
}

/// Flips at most this many bits per link: CRC32C detects any 3-bit error
/// in a batch (Hamming distance 4 up to 2^31 bits), so the invariants
/// stay exact.
const MAX_FLIPS: usize = 3;

pub(crate) struct Harness {
    pub pair: Pair,
    pub cfg: SessionConfig,
    /// Side B's (an older build's, for some inputs: `Params::older_b`).
    pub cfg_b: SessionConfig,
    pub gen: u32,
    pub chans: [BTreeMap<u32, Chan>; 2],
    pub pending: [Vec<ChannelId>; 2],
    /// Channels the application released that the session still has (a
    /// released channel lingers until the peer finished; one released
    /// before its Open went out still reaches the peer, finished).
    pub released: [BTreeMap<u32, Key>; 2],
    pub flows: HashMap<(Key, usize), Flow>,
    pub flips: usize,
    pub closing: bool,
    pub restarts: u64,
    /// Every event both sessions produced, in order (when logging).
    pub log: Option<Vec<String>>,
}

impl Harness {
    pub(crate) fn new(p: &Params) -> Self {
        let cfg = p.config();
        let cfg_b = p.config_b();
        let mut pair = Pair::new(cfg.clone(), p.seed);
        if p.older_b() {
            pair.restart(Side::B, cfg_b.clone(), pair.b.local_id());
        }
        pair.max_read = usize::from(p.max_read);
        if p.high_ids {
            // A few opens from the wrap of the id space.
            pair.a.set_next_channel_id(u32::MAX - 15);
            pair.b.set_next_channel_id(u32::MAX - 15);
        }
        Self {
            pair,
            cfg,
            cfg_b,
            gen: 0,
            chans: [BTreeMap::new(), BTreeMap::new()],
            pending: [Vec::new(), Vec::new()],
            released: [BTreeMap::new(), BTreeMap::new()],
            flows: HashMap::new(),
            flips: 0,
            closing: false,
            restarts: 0,
            log: None,
        }
    }

    pub(crate) fn pick(&self, s: S, i: u8) -> Option<(ChannelId, Chan)> {
        let m = &self.chans[s.idx()];
        if m.is_empty() {
            return None;
        }
        let (id, c) = m.iter().nth(usize::from(i) % m.len())?;
        Some((ChannelId(*id), *c))
    }

    pub(crate) fn flow(&mut self, key: Key, sender: S) -> &mut Flow {
        self.flows.entry((key, sender.idx())).or_default()
    }

    pub(crate) fn link_fault(&mut self, side: Side, e: SessionError) {
        // Corruption usually shows as a checksum error; while a side is
        // handshaking it skips garbage instead, and then may fail on what
        // follows a lost Hello. Without a flip, no fault is acceptable.
        assert!(
            self.flips > 0,
            "link fault on {side:?} without any bit flip: {e}"
        );
        self.link_reset();
    }

    /// A timer may end a link only by the idle timeout, or by an in-band
    /// resync running out of time after a bit flip.
    pub(crate) fn timer_fault_ok(&self, e: &SessionError) -> bool {
        match e {
            SessionError::IdleTimeout(t) => *t >= self.cfg.idle_timeout,
            SessionError::ResyncFailed(t) => self.flips > 0 && *t >= self.cfg.resync_timeout,
            _ => false,
        }
    }

    pub(crate) fn link_reset(&mut self) {
        self.pair.link_reset();
        self.flips = 0;
    }

    /// Transmits and delivers until nothing moves.
    pub(crate) fn drive(&mut self) -> bool {
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

    pub(crate) fn events(&mut self) {
        self.pair.collect_events();
        for s in [S::A, S::B] {
            let evs = std::mem::take(match s {
                S::A => &mut self.pair.events_a,
                S::B => &mut self.pair.events_b,
            });
            for ev in evs {
                if let Some(log) = self.log.as_mut() {
                    log.push(format!("{s:?} {ev:?}"));
                }
                self.event(s, ev);
            }
        }
    }

    pub(crate) fn event(&mut self, s: S, ev: Event) {
        match ev {
            Event::Incoming { id, kind, .. } => {
                assert!(id.is_remote(), "{s:?}: Incoming with a local id {id}");
                // The opener's key (it may predate a restart of ours).
                // A channel released before its Open went out still
                // arrives, finished: its key is kept in `released`.
                let other = s.other().idx();
                let key = self.chans[other]
                    .get(&(id.0 ^ 1))
                    .map(|c| c.key)
                    .or_else(|| self.released[other].get(&(id.0 ^ 1)).copied())
                    .unwrap_or(Key {
                        gen: self.gen,
                        opener: other,
                        id: id.0 ^ 1,
                    });
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
            Event::Connected { .. } => {
                // The peer's host identity, as its Hello carried it.
                let theirs = self.pair.side(s.other().side()).config().ident.clone();
                let seen = self.pair.side(s.side()).peer_ident().cloned();
                assert_eq!(seen, theirs, "{s:?}: connected with a wrong peer identity");
            }
            Event::Readable(_) | Event::Writable(_) => {}
            // Both sides hold the same key, or neither does: only an old
            // link's Hello (its MAC over an earlier nonce) may fail.
            Event::AuthFailed(why) => assert_eq!(
                why,
                crate::session::auth::AuthFailure::WrongKey,
                "{s:?}: authentication failed: {why}"
            ),
        }
    }

    /// Forgets channels the session no longer has (finished both ways).
    pub(crate) fn prune(&mut self) {
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
            let sess = self.pair.side(s.side());
            self.released[s.idx()].retain(|id, _| sess.channel_stats(ChannelId(*id)).is_some());
        }
    }

    pub(crate) fn op(&mut self, op: Op) {
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
                    self.release(s, id, c);
                }
            }
            Op::Advance(ms) => {
                let d = Duration::from_millis(u64::from(ms));
                if let Err((_, e)) = self.pair.advance(d) {
                    assert!(self.timer_fault_ok(&e), "timer fault: {e}");
                    self.link_reset();
                }
            }
            Op::LinkReset => self.link_reset(),
            Op::Restart(s) => {
                self.restarts += 1;
                let id = 0xc0ff_ee00 + (self.restarts << 1 | 1);
                self.restart(s, id);
            }
            Op::RestartSameId(s) => {
                let id = self.pair.side(s.side()).local_id();
                self.restart(s, id);
            }
            Op::DeliverSome(s, n) => {
                if let Err((side, e)) = self.pair.deliver_some(s.side(), usize::from(n)) {
                    self.link_fault(side, e);
                }
            }
            Op::FinishAll(s) => {
                let all: Vec<(ChannelId, Chan)> = self.chans[s.idx()]
                    .iter()
                    .map(|(id, c)| (ChannelId(*id), *c))
                    .collect();
                for (id, c) in all {
                    if self.pair.side(s.side()).finish(id).is_ok() {
                        self.flow(c.key, s).finished = true;
                    }
                }
            }
            Op::ReleaseAll(s) => {
                let all: Vec<(ChannelId, Chan)> = self.chans[s.idx()]
                    .iter()
                    .map(|(id, c)| (ChannelId(*id), *c))
                    .collect();
                for (id, c) in all {
                    self.release(s, id, c);
                }
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

    /// The application of side `s` drops its handle of `id`.
    fn release(&mut self, s: S, id: ChannelId, c: Chan) {
        if self.pair.side(s.side()).release(id).is_ok() {
            self.flow(c.key, s).finished = true;
            self.flow(c.key, s.other()).released = true;
            // The application let go of it.
            self.chans[s.idx()].remove(&id.0);
            if !id.is_remote() {
                self.released[s.idx()].insert(id.0, c.key);
            }
        }
    }

    /// Side `s` restarts as session `id` (a new one, or its old one).
    fn restart(&mut self, s: S, id: u64) {
        self.gen += 1;
        let cfg = match s {
            S::A => self.cfg.clone(),
            S::B => self.cfg_b.clone(),
        };
        self.pair.restart(s.side(), cfg, id);
        self.flips = 0;
        // The restarted side forgot its channels; the other side resets
        // its own when it sees the restart (events), or keeps them if it
        // never met the old one.
        self.chans[s.idx()].clear();
        self.pending[s.idx()].clear();
        self.released[s.idx()].clear();
    }

    pub(crate) fn accept(&mut self, s: S, id: ChannelId) -> bool {
        let ok = self.pair.side(s.side()).accept(id).is_ok();
        if ok {
            if let Some(c) = self.chans[s.idx()].get_mut(&id.0) {
                c.open = true;
            }
        }
        ok
    }

    pub(crate) fn send(&mut self, s: S, i: u8, len: usize) {
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

    pub(crate) fn send_message(&mut self, s: S, i: u8, len: usize) {
        let Some((id, c)) = self.pick(s, i) else {
            return;
        };
        let seed = seed_of(c.key, s.idx());
        let seq = self.flow(c.key, s).msgs_sent;
        let m = pattern_bytes(seed, seq_off(seq), len);
        let r = self.pair.side(s.side()).send_message(id, m);
        if c.kind != ChannelKind::Message {
            assert!(r.is_err(), "send_message on a {:?} channel", c.kind);
        } else if r.is_ok() {
            let f = self.flow(c.key, s);
            f.msgs_sent += 1;
            f.msgs.push_back(len);
        }
    }

    pub(crate) fn send_datagram(&mut self, s: S, i: u8, len: usize) {
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
}

//! A deterministic two-session harness: two [`Session`]s joined by an
//! in-memory byte stream with seeded awkward read splits, byte corruption
//! and link resets, and a virtual clock. Used by the scenario tests, the
//! fuzz targets and the benches; pure like the core (no I/O, no clock).

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::session::{Event, Session, SessionConfig, SessionError};

#[cfg(feature = "fuzz-ops")]
pub mod ops;
mod raw;

pub use raw::{RawPeer, RAW_PEER_ID};

/// Which end of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first session.
    A,
    /// The second session.
    B,
}

/// Two sessions over a simulated cable.
#[derive(Debug)]
pub struct Pair {
    /// Session A.
    pub a: Session,
    /// Session B.
    pub b: Session,
    /// The virtual clock.
    pub now: Instant,
    /// Bytes on the way from A to B, and from B to A.
    a_to_b: BytesMut,
    b_to_a: BytesMut,
    /// Receive buffers (what each session has read but not consumed).
    a_rx: BytesMut,
    b_rx: BytesMut,
    /// Deliver in pieces of random size up to this (0: all at once).
    pub max_read: usize,
    /// Events taken from the sessions, per side.
    pub events_a: Vec<Event>,
    /// Events of B.
    pub events_b: Vec<Event>,
    rng: u64,
    /// Bytes that went A→B and B→A (statistics).
    pub wire_bytes: [u64; 2],
    /// When set, a copy of every byte sent A→B and B→A.
    pub tap: Option<[Vec<u8>; 2]>,
}

impl Pair {
    /// Two connected sessions (handshake done), reads of arbitrary size.
    pub fn new(cfg: SessionConfig, seed: u64) -> Self {
        let now = Instant::now();
        let mut p = Self {
            a: Session::new(cfg.clone(), 0xA11CE | 1, now),
            b: Session::new(cfg, 0xB0B0 | 1, now),
            now,
            a_to_b: BytesMut::new(),
            b_to_a: BytesMut::new(),
            a_rx: BytesMut::new(),
            b_rx: BytesMut::new(),
            max_read: 0,
            events_a: Vec::new(),
            events_b: Vec::new(),
            rng: seed | 1,
            wire_bytes: [0; 2],
            tap: None,
        };
        p.a.handle_link_up(now);
        p.b.handle_link_up(now);
        p
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*: deterministic per seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The session on one side.
    pub fn side(&mut self, s: Side) -> &mut Session {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Moves everything both sessions want to send into the wires.
    pub fn transmit(&mut self) -> bool {
        let mut any = false;
        while let Some(t) = self.a.poll_transmit(self.now) {
            self.wire_bytes[0] += t.len() as u64;
            for s in t.segments() {
                self.a_to_b.extend_from_slice(s);
                if let Some(tap) = self.tap.as_mut() {
                    tap[0].extend_from_slice(s);
                }
            }
            any = true;
        }
        while let Some(t) = self.b.poll_transmit(self.now) {
            self.wire_bytes[1] += t.len() as u64;
            for s in t.segments() {
                self.b_to_a.extend_from_slice(s);
                if let Some(tap) = self.tap.as_mut() {
                    tap[1].extend_from_slice(s);
                }
            }
            any = true;
        }
        any
    }

    /// Delivers wire bytes to the receivers (in random pieces when
    /// `max_read` is set). An error names the side that detected it.
    pub fn deliver(&mut self) -> Result<bool, (Side, SessionError)> {
        let mut any = false;
        for side in [Side::B, Side::A] {
            loop {
                let wire_len = match side {
                    Side::B => self.a_to_b.len(),
                    Side::A => self.b_to_a.len(),
                };
                if wire_len == 0 {
                    break;
                }
                let n = if self.max_read == 0 {
                    wire_len
                } else {
                    1 + (self.rand() as usize % self.max_read).min(wire_len - 1)
                };
                any = true;
                let now = self.now;
                let (wire, rx, sess) = match side {
                    Side::B => (&mut self.a_to_b, &mut self.b_rx, &mut self.b),
                    Side::A => (&mut self.b_to_a, &mut self.a_rx, &mut self.a),
                };
                let piece = wire.split_to(n.min(wire.len()));
                rx.extend_from_slice(&piece);
                sess.handle_input(now, rx).map_err(|e| (side, e))?;
            }
        }
        Ok(any)
    }

    /// Delivers at most `max` of the bytes in flight from `from` (one
    /// piece; the rest stays on the wire).
    pub fn deliver_some(&mut self, from: Side, max: usize) -> Result<(), (Side, SessionError)> {
        let now = self.now;
        let (wire, rx, sess, to) = match from {
            Side::A => (&mut self.a_to_b, &mut self.b_rx, &mut self.b, Side::B),
            Side::B => (&mut self.b_to_a, &mut self.a_rx, &mut self.a, Side::A),
        };
        let piece = wire.split_to(max.min(wire.len()));
        if piece.is_empty() {
            return Ok(());
        }
        rx.extend_from_slice(&piece);
        sess.handle_input(now, rx).map_err(|e| (to, e))
    }

    /// Takes the events of both sessions into `events_a` / `events_b`.
    pub fn collect_events(&mut self) {
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
    }

    /// Transmits and delivers until nothing moves (at most `limit` rounds).
    pub fn drive(&mut self) -> Result<(), (Side, SessionError)> {
        for _ in 0..100_000 {
            let t = self.transmit();
            let d = self.deliver()?;
            self.collect_events();
            if !t && !d {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Advances the clock and runs both sessions' timers.
    pub fn advance(&mut self, d: Duration) -> Result<(), (Side, SessionError)> {
        self.now += d;
        let now = self.now;
        self.a.handle_timeout(now).map_err(|e| (Side::A, e))?;
        self.b.handle_timeout(now).map_err(|e| (Side::B, e))?;
        Ok(())
    }

    /// Flips bit `bit` of the byte at `offset` of the bytes in flight from
    /// `from` (if there are that many).
    pub fn corrupt(&mut self, from: Side, offset: usize, bit: u8) -> bool {
        let wire = match from {
            Side::A => &mut self.a_to_b,
            Side::B => &mut self.b_to_a,
        };
        match wire.get_mut(offset) {
            Some(b) => {
                *b ^= 1 << (bit % 8);
                true
            }
            None => false,
        }
    }

    /// Loses the bytes in flight from `from` (a cable that drops them);
    /// returns how many.
    pub fn drop_in_flight(&mut self, from: Side) -> usize {
        let wire = match from {
            Side::A => &mut self.a_to_b,
            Side::B => &mut self.b_to_a,
        };
        let n = wire.len();
        wire.clear();
        n
    }

    /// Bytes in flight from `from`.
    pub fn in_flight(&self, from: Side) -> usize {
        match from {
            Side::A => self.a_to_b.len(),
            Side::B => self.b_to_a.len(),
        }
    }

    /// A cable pull: bytes in flight are lost, both devices are reopened.
    pub fn link_reset(&mut self) {
        self.a_to_b.clear();
        self.b_to_a.clear();
        self.a_rx.clear();
        self.b_rx.clear();
        self.a.handle_link_down();
        self.b.handle_link_down();
        self.a.handle_link_up(self.now);
        self.b.handle_link_up(self.now);
    }

    /// Replaces one side's session with a fresh one (a peer restart) and
    /// reopens the link.
    pub fn restart(&mut self, side: Side, cfg: SessionConfig, id: u64) {
        *self.side(side) = Session::new(cfg, id, self.now);
        self.link_reset();
    }
}

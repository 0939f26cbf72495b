//! A session facing a peer whose records the test writes by hand: for
//! hostile and malformed peers, and for exact record sequences that a real
//! session would never produce. Pure like the core.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::session::{Event, Session, SessionConfig, SessionError};
use crate::wire::{BatchDecoder, Record, RecordIter, TransmitBuilder, MAX_BATCH_BODY, VERSION};

/// The hand-driven peer's session identity.
pub const RAW_PEER_ID: u64 = 0xA11CE | 1;

/// A [`Session`] (the one under test) and a scripted peer.
#[derive(Debug)]
pub struct RawPeer {
    /// The session under test.
    pub s: Session,
    /// The virtual clock.
    pub now: Instant,
    /// Events the session produced, in order.
    pub events: Vec<Event>,
    decoder: BatchDecoder,
    rx: BytesMut,
    /// What the scripted peer's Hellos announce: capability bits, largest
    /// message, credit before `OpenOk` (an older build's: all 0).
    hello: (u32, u32, u32),
}

impl RawPeer {
    /// A session with `cfg` whose link is up with the scripted peer, an
    /// older build (its Hello announces no growing windows: the session
    /// grants each channel its whole window at open, as such a peer
    /// expects).
    pub fn connected(cfg: SessionConfig) -> Self {
        Self::connected_as(cfg, (0, 0, 0))
    }

    /// Like [`connected`](Self::connected), with a peer of this build: its
    /// Hello announces growing windows, `max_message` and `open_credit`.
    pub fn connected_growing(cfg: SessionConfig, max_message: u32, open_credit: u32) -> Self {
        Self::connected_as(cfg, (crate::wire::CAP_WINDOWS, max_message, open_credit))
    }

    fn connected_as(cfg: SessionConfig, hello: (u32, u32, u32)) -> Self {
        let now = Instant::now();
        let mut r = Self {
            s: Session::new(cfg, 0xB0B0 | 1, now),
            now,
            events: Vec::new(),
            decoder: BatchDecoder::new(MAX_BATCH_BODY),
            rx: BytesMut::new(),
            hello,
        };
        r.link_up(0);
        r
    }

    /// (Re)opens the link and handshakes as [`RAW_PEER_ID`], resuming
    /// `resume_of` (0: a first meeting); returns what the session sent.
    pub fn link_up(&mut self, resume_of: u64) -> Vec<Record> {
        self.s.handle_link_down();
        self.s.handle_link_up(self.now);
        self.rx.clear();
        self.decoder.reset();
        let hello = Record::Hello {
            version: VERSION,
            seen_peer: true,
            caps: self.hello.0,
            max_batch: MAX_BATCH_BODY as u32,
            max_record: crate::wire::MAX_RECORD_LEN as u32,
            session_id: RAW_PEER_ID,
            resume_of,
            max_message: self.hello.1,
            open_credit: self.hello.2,
            auth: None,
            ident: None,
        };
        // A handshake failing here is a bug of the test, not of the peer.
        if let Err(e) = self.send(&[hello]) {
            panic!("handshake with the scripted peer failed: {e}");
        }
        let sent = self.take();
        assert!(self.s.is_connected(), "the session did not come up");
        sent
    }

    /// Feeds `recs` to the session as one batch.
    pub fn send(&mut self, recs: &[Record]) -> Result<(), SessionError> {
        let mut b = TransmitBuilder::new(MAX_BATCH_BODY, 1 << 20);
        for r in recs {
            b.push(r);
        }
        self.send_bytes(&b.finish().to_vec())
    }

    /// Feeds raw bytes to the session.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let mut buf = BytesMut::from(bytes);
        let r = self.s.handle_input(self.now, &mut buf);
        self.collect();
        r
    }

    /// Everything the session sends now, decoded.
    pub fn take(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        while let Some(t) = self.s.poll_transmit(self.now) {
            self.rx.extend_from_slice(&t.to_vec());
        }
        while let Ok(Some(body)) = self.decoder.decode(&mut self.rx) {
            out.extend(RecordIter::new(body).filter_map(Result::ok));
        }
        self.collect();
        out
    }

    /// Advances the clock and runs the session's timers.
    pub fn advance(&mut self, d: Duration) -> Result<(), SessionError> {
        self.now += d;
        let r = self.s.handle_timeout(self.now);
        self.collect();
        r
    }

    fn collect(&mut self) {
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }
}

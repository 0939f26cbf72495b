//! Inputs: link state changes and bytes from the device.

use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::channel::{ChanState, Channel, Held};
use super::{
    ChannelId, ChannelKind, CloseState, Event, LinkState, RejectReason, ResetReason, Session,
    SessionError,
};
use crate::wire::{Record, RecordIter, VERSION};

/// Receive-side cost of one queued datagram beyond its bytes.
pub(crate) const DGRAM_OVERHEAD: usize = 64;
/// Control records (answers to the peer) we queue at most: far above what
/// any well-behaved exchange needs, far below what would hurt memory.
const MAX_CTRL_QUEUE: usize = 65_536;
/// Old Hellos (see `hello_is_live`) skipped per link before one that keeps
/// coming is taken as live: a stale tail holds a few at most, and a live
/// peer resends its Hello every 100 ms.
const STALE_HELLOS_MAX: u32 = 8;
/// Largest batch body accepted before the peer's Hello: one Hello record
/// and room for a later version's longer one.
const HELLO_BATCH_MAX: usize = 4096;
/// Payloads below this size are copied out of the receive buffer: a few
/// bytes must not pin a multi-MiB read buffer while they wait for a slow
/// reader (the window counts bytes, not the buffers behind them).
const OWN_BELOW: usize = 4096;

fn own_if_small(b: bytes::Bytes) -> Held {
    if b.len() < OWN_BELOW {
        Held {
            data: bytes::Bytes::copy_from_slice(&b),
            borrowed: false,
        }
    } else {
        Held {
            data: b,
            borrowed: true,
        }
    }
}

pub(super) fn violation(what: impl Into<String>) -> SessionError {
    SessionError::Protocol(what.into())
}

impl Session {
    /// The device was (re)opened: start the handshake. The link's
    /// authentication nonce is derived from the session identity and a
    /// counter: deterministic, for harnesses. A driver that authenticates
    /// peers gives a random one with
    /// [`handle_link_up_with_nonce`](Self::handle_link_up_with_nonce).
    pub fn handle_link_up(&mut self, now: Instant) {
        self.nonce_counter += 1;
        let mut nonce = [0u8; super::auth::NONCE_LEN];
        nonce[..8].copy_from_slice(&self.local_id.to_le_bytes());
        nonce[8..].copy_from_slice(&self.nonce_counter.to_le_bytes());
        self.handle_link_up_with_nonce(now, nonce);
    }

    /// [`handle_link_up`](Self::handle_link_up) with this link's nonce:
    /// random bytes, never used for another link (an old link's MACs then
    /// prove nothing on this one).
    pub fn handle_link_up_with_nonce(&mut self, now: Instant, nonce: [u8; super::auth::NONCE_LEN]) {
        self.handle_link_down();
        self.resync_since = None;
        self.stats.links_up += 1;
        self.begin_link(now, nonce);
    }

    /// A new link on the byte stream: a fresh device open, or an in-band
    /// resync on the open one (see `resync`). The handshake starts over.
    pub(super) fn begin_link(&mut self, now: Instant, nonce: [u8; super::auth::NONCE_LEN]) {
        self.link_nonce = nonce;
        self.peer_nonce = None;
        self.auth_failed_here = false;
        self.link = LinkState::Handshaking;
        self.seen_peer_hello = false;
        self.peer_saw_us = false;
        self.stale_hellos_here = 0;
        // Who we knew before this link: only a peer we met (its link was
        // up, so it knows us). A peer whose Hello we merely saw, or learnt
        // during this link's handshake, is not one to resume: a restarted
        // peer would echo our id back and be taken for the old one.
        self.hello_resume_of = self.peer_id.filter(|_| self.met_peer).unwrap_or(0);
        self.sent_seen = false;
        self.pending_connected = None;
        self.hello_due = Some(now);
        self.last_rx = now;
        self.pacing.link_up();
    }

    /// The device failed or was closed: forget everything tied to the byte
    /// stream. Channels stay; reliable ones resume on the next link if the
    /// peer is the same session.
    pub fn handle_link_down(&mut self) {
        self.link_down(true);
    }

    /// [`handle_link_down`](Self::handle_link_down); `drop_dgrams`: queued
    /// datagrams go too (not on an in-band resync, which takes
    /// milliseconds: they are sent once the link is back).
    pub(super) fn link_down(&mut self, drop_dgrams: bool) {
        if self.link == LinkState::Up {
            self.lost_at = Some(self.last_rx);
        }
        self.link = LinkState::Down;
        self.decoder.reset();
        let _ = self.builder.finish();
        // Everything queued is re-derived on the next handshake (opens,
        // answers, credit: see `resume_channel`), except the last words
        // about channels that are gone here: they go again (`gone`).
        self.ctrl.clear();
        self.ctrl.extend(self.gone.link_down());
        self.window_dirty.clear();
        for c in self.channels.values_mut() {
            c.window_dirty = false;
        }
        self.hello_due = None;
        self.hello_reply = false;
        self.ping_out = None;
        self.pong_due = None;
        self.unacked_rx.clear();
        self.ack_due = None;
        for c in self.channels.values_mut() {
            // A channel waiting for its OpenOk may have sent data too.
            if c.reliable() && c.state != ChanState::PendingAccept {
                c.link_down();
            }
            c.ack_owed = false;
            if !drop_dgrams {
                continue;
            }
            // Datagrams are not worth delivering late.
            let dropped = c.dgrams.len() as u64;
            c.stats.drops += dropped;
            self.stats.dgram_drops += dropped;
            c.dgrams.clear();
            c.dgram_bytes = 0;
        }
    }

    /// Consumes every complete batch at the front of `buf`; a partial batch
    /// stays there for the next call. An error is a link fault.
    ///
    /// This is [`handle_batch`](Self::handle_batch) and
    /// [`handle_bad_input`](Self::handle_bad_input) with the session's own
    /// decoder; a driver that checks batches off its state lock uses those
    /// two with a [`BatchDecoder`](crate::wire::BatchDecoder) of its own.
    pub fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) -> Result<(), SessionError> {
        if self.link == LinkState::Down {
            buf.clear();
            return Ok(());
        }
        loop {
            self.decoder.set_max_body(self.accepted_batch_len());
            match self.decoder.decode(buf) {
                Ok(Some(body)) => self.handle_batch(now, body)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.handle_bad_input(now, &e)?;
                    self.decoder.reset();
                    let skip = crate::wire::resync_point(buf);
                    self.skipped(skip);
                    buf.advance(skip);
                }
            }
        }
    }

    /// Largest batch body to accept now. Before the peer's Hello on this
    /// link, everything valid the peer sends is a lone Hello (it sends
    /// nothing else before it has ours): a header announcing more is the
    /// stale tail of the previous link, or garbage, and waiting for its
    /// body would swallow the Hellos that follow (a peer that sent such a
    /// header stalled the handshake for good).
    pub fn accepted_batch_len(&self) -> usize {
        if self.seen_peer_hello {
            self.cfg.max_batch_body
        } else {
            HELLO_BATCH_MAX
        }
    }

    /// One verified batch body (its checksum matched). An error is a link
    /// fault.
    pub fn handle_batch(&mut self, now: Instant, body: bytes::Bytes) -> Result<(), SessionError> {
        if self.link == LinkState::Down {
            return Ok(());
        }
        self.last_rx = now;
        self.stats.batches_rx += 1;
        self.stats.bytes_rx += (body.len() + crate::wire::BATCH_HEADER_LEN) as u64;
        for rec in RecordIter::new(body) {
            let rec = rec?;
            self.stats.records_rx += 1;
            self.handle_record(now, rec)?;
            if self.ctrl.len() > MAX_CTRL_QUEUE {
                // Answers pile up only if the peer keeps asking and
                // never reads them.
                return Err(violation("control records flood (peer does not read)"));
            }
        }
        Ok(())
    }

    /// The input could not be decoded (`e`). Before the peer's Hello on this
    /// link that is expected on real hardware (the peer may still write the
    /// tail of the previous link's stream, mid-batch, until it notices our
    /// reopen): `Ok`, and the caller skips to the next possible batch start
    /// ([`resync_point`](crate::wire::resync_point)). After it, corruption
    /// (a checksum or the magic wrong) starts an in-band resync (see
    /// `resync`): `Ok` too, and the caller skips the same way. Anything
    /// else is a link fault: `Err`.
    pub fn handle_bad_input(
        &mut self,
        now: Instant,
        e: &crate::wire::DecodeError,
    ) -> Result<(), SessionError> {
        if !self.seen_peer_hello {
            return Ok(());
        }
        if e.is_corruption() {
            self.stats.corrupt_batches += 1;
            if self.start_resync(now) {
                return Ok(());
            }
        }
        Err(e.clone().into())
    }

    /// The caller skipped `n` undecodable bytes (see `handle_bad_input`).
    pub fn skipped(&mut self, n: usize) {
        self.stats.resync_bytes += n as u64;
    }

    /// Copies received payloads that are still slices of the driver's
    /// receive buffers into memory of their own, so those buffers can be
    /// reused: a slow reader then holds what its window allows, not the
    /// multi-MiB buffers behind a few of its bytes. Returns the bytes
    /// copied. A driver calls this when it finds no buffer to reuse.
    pub fn compact_received(&mut self) -> usize {
        let n: usize = self.channels.values_mut().map(Channel::compact).sum();
        self.stats.compacted_bytes += n as u64;
        n
    }

    /// How many more bytes complete the batch being received (a hint for
    /// sizing the next read).
    pub fn input_missing(&self, buf: &BytesMut) -> usize {
        self.decoder.missing(buf)
    }

    fn handle_record(&mut self, now: Instant, rec: Record) -> Result<(), SessionError> {
        if let Record::Hello {
            version,
            seen_peer,
            max_batch,
            max_record,
            session_id,
            resume_of,
            caps,
            max_message,
            open_credit,
            auth,
            ident,
            ..
        } = rec
        {
            if version != VERSION {
                return Err(SessionError::Incompatible {
                    ours: VERSION,
                    theirs: version,
                });
            }
            if !seen_peer && self.peer_relinks(session_id, resume_of) {
                // The peer found our bytes corrupt and starts over on this
                // byte stream: so do we; this Hello is the new link's.
                self.join_resync(now)?;
            }
            if !self.hello_is_live(session_id, resume_of) {
                return Ok(());
            }
            if !self.hello_authenticated(session_id, auth) {
                return Ok(());
            }
            if seen_peer {
                self.peer_saw_us = true;
            }
            if !self.sent_seen {
                // Tell the peer we have its Hello: it sends nothing else
                // before it knows (see `maybe_up`).
                self.hello_reply = true;
            }
            if self.seen_peer_hello {
                self.maybe_up(now);
                return Ok(());
            }
            self.peer_max_batch = (max_batch as usize)
                .clamp(4096, crate::wire::MAX_BATCH_BODY)
                .min(self.cfg.max_batch_body);
            self.peer_max_record = (max_record as usize).clamp(4096, crate::wire::MAX_RECORD_LEN);
            self.builder.set_max_batch(self.peer_max_batch);
            let grows = caps & crate::wire::CAP_WINDOWS != 0;
            self.peer_grows = grows;
            self.peer_max_message = if grows { u64::from(max_message) } else { 0 };
            self.peer_open_credit = if grows { u64::from(open_credit) } else { 0 };
            self.peer_ident = ident.map(|i| *i);
            self.on_peer_hello(now, session_id, resume_of);
            self.maybe_up(now);
            return Ok(());
        }
        if !self.seen_peer_hello {
            if self.resync_since.is_some() {
                // In-band resync: the rest of the old link's stream,
                // sent before the peer saw our Hello.
                self.stats.resync_bytes += rec.encoded_len() as u64;
                return Ok(());
            }
            return Err(violation("record before Hello"));
        }
        self.pacing.received(rec.encoded_len());
        // The peer sends this only once its link is up: it knows us.
        self.met_peer = true;
        match rec {
            Record::Hello { .. } => Ok(()),
            Record::Ping { token } => {
                self.pong_due = Some(token);
                Ok(())
            }
            Record::Pong { token } => {
                // Everything sent before that ping has been read.
                self.gone.confirm(token);
                if let Some((t, sent)) = self.ping_out {
                    if t == token {
                        self.stats.rtt = Some(now.saturating_duration_since(sent));
                        self.stats.rtt_samples += 1;
                        self.ping_out = None;
                    }
                }
                Ok(())
            }
            Record::Goodbye { seen_peer } => {
                self.on_goodbye(now, seen_peer);
                Ok(())
            }
            Record::GoodbyeAck => {
                self.on_goodbye_ack();
                Ok(())
            }
            Record::Progress { read, want } => {
                self.pacing.on_progress(read, want);
                Ok(())
            }
            Record::Open {
                chan,
                kind,
                class,
                window,
                service,
            } => self.on_open(ChannelId(chan), kind, class, u64::from(window), service),
            Record::OpenOk { chan, window } => self.on_open_ok(ChannelId(chan), u64::from(window)),
            Record::OpenReject { chan, reason } => {
                let id = ChannelId(chan);
                if self
                    .lookup(id)?
                    .is_some_and(|c| c.state == ChanState::Opening)
                {
                    self.remove_channel(id);
                    self.push_event(Event::Rejected(id, RejectReason::from_code(reason)));
                }
                Ok(())
            }
            Record::Close { chan, final_offset } => self.on_close(ChannelId(chan), final_offset),
            Record::Reset { chan, .. } => {
                let id = ChannelId(chan);
                if id.is_remote() && id.0 > self.max_remote {
                    // The peer aborted a channel whose Open we never got
                    // (lost with a link): nothing to do.
                    self.stats.stale_records += 1;
                    return Ok(());
                }
                if self.lookup(id)?.is_some() {
                    self.remove_channel(id);
                    self.push_event(Event::Reset(id, ResetReason::Peer));
                }
                Ok(())
            }
            Record::Data {
                chan,
                offset,
                end,
                payload,
            } => self.on_data(now, ChannelId(chan), offset, end, payload),
            Record::Dgram { chan, payload } => self.on_dgram(now, ChannelId(chan), payload),
            Record::Window {
                chan,
                received,
                limit,
                resume,
            } => self.on_window(ChannelId(chan), received, limit, resume),
        }
    }

    /// Finds a channel the peer refers to. `Ok(None)`: it existed once and
    /// is gone (late records are normal). `Err`: the id was never valid.
    pub(super) fn lookup(&mut self, id: ChannelId) -> Result<Option<&mut Channel>, SessionError> {
        let never = if id.is_remote() {
            id.0 > self.max_remote
        } else {
            !self.local_wrapped && id.0 >= self.next_local
        };
        if never {
            return Err(violation(format!("channel {id} was never opened")));
        }
        match self.channels.get_mut(&id.0) {
            Some(c) => Ok(Some(c)),
            None => {
                self.stats.stale_records += 1;
                Ok(None)
            }
        }
    }

    /// Whether a Hello is the peer's Hello on this link, not an old one:
    ///
    /// * our own identity: our bytes come back (a cable looped to itself,
    ///   a reflecting peer). A session never talks to itself;
    /// * the peer we have met, not knowing us: every Hello of a live peer
    ///   that met us names us in `resume_of`, so this is a Hello of an
    ///   earlier link (the stale tail of the old byte stream after a
    ///   replug), and taking it for a restart would reset every channel;
    /// * the peer session we had before it restarted: its stale tail.
    ///
    /// Such Hellos are skipped and counted; the live one follows (Hellos
    /// are resent until the link is up). A stale tail holds a few old
    /// Hellos at most: one that keeps coming on this link is live after
    /// all (a peer restarted with its old identity) and is taken as a
    /// restart. Our own identity never is.
    fn hello_is_live(&mut self, session_id: u64, resume_of: u64) -> bool {
        if session_id == self.local_id {
            self.stats.stale_hellos += 1;
            return false;
        }
        let old = (self.met_peer && self.peer_id == Some(session_id) && resume_of != self.local_id)
            || self.retired_peer == Some(session_id);
        if old && self.stale_hellos_here < STALE_HELLOS_MAX {
            self.stale_hellos_here += 1;
            self.stats.stale_hellos += 1;
            return false;
        }
        if old {
            // It came back with the identity it had: a restart.
            self.retired_peer = None;
        }
        true
    }

    /// With a pre-shared key: whether this Hello proves the peer holds it
    /// (see `auth`). Until one does, the peer's Hellos change nothing but
    /// its nonce (which our own proof needs) and our reply. The proof
    /// travels whether or not the Hello is flagged "seen": "seen" keeps its
    /// meaning (the sender has *taken* our Hello, so it reads what follows
    /// in step), or a side would go up and send data that the other, still
    /// reading as before a Hello, skips (a fuzz input found that). Without a key:
    /// whether the peer does not require one. Failures are counted once
    /// per link.
    fn hello_authenticated(
        &mut self,
        session_id: u64,
        auth: Option<crate::wire::HelloAuth>,
    ) -> bool {
        use super::auth::AuthFailure;
        let failure = match (&self.cfg.psk, auth) {
            (None, None) => return true,
            (None, Some(_)) => AuthFailure::NoKeyHere,
            (Some(_), None) => AuthFailure::PeerHasNoKey,
            (Some(k), Some(a)) => {
                if self.peer_nonce != Some((session_id, a.nonce)) {
                    // Our proof needs its nonce: send it now.
                    self.peer_nonce = Some((session_id, a.nonce));
                    self.hello_reply = true;
                }
                if a.mac == [0; crate::session::auth::MAC_LEN] {
                    // It has not had our nonce yet: no proof to check.
                    return false;
                }
                if k.verify(
                    session_id,
                    self.local_id,
                    &a.nonce,
                    &self.link_nonce,
                    &a.mac,
                ) {
                    return true;
                }
                AuthFailure::WrongKey
            }
        };
        if !self.auth_failed_here {
            self.auth_failed_here = true;
            self.stats.auth_failures += 1;
            self.push_event(Event::AuthFailed(failure));
        }
        self.last_auth_failure = Some(failure);
        false
    }

    /// The link is up once both Hellos crossed: we have the peer's, and the
    /// peer's says it has ours. Only then do we send anything else, so
    /// everything after a Hello is read by a peer that is in step with
    /// this link's byte stream (and so faults, rather than skips, on
    /// corruption: see the resync in `handle_input`).
    fn maybe_up(&mut self, now: Instant) {
        if self.link == LinkState::Handshaking && self.seen_peer_hello && self.peer_saw_us {
            self.link = LinkState::Up;
            self.met_peer = true;
            self.hello_due = None;
            let resync = self.end_resync(now);
            self.lost_at = None;
            if let Some(resumed) = self.pending_connected.take() {
                // An in-band resync that resumed is no news to the
                // application: the link never went away for it.
                if !(resync && resumed) {
                    self.push_event(Event::Connected { resumed });
                }
            }
        }
    }

    fn on_peer_hello(&mut self, _now: Instant, session_id: u64, resume_of: u64) {
        self.seen_peer_hello = true;
        let same_peer = self.peer_id == Some(session_id);
        let resumed = same_peer && resume_of == self.local_id;
        // A peer we met that no longer knows us restarted, even with the
        // same identity (`hello_is_live` let it through).
        let restarted = self.peer_id.is_some() && (!same_peer || self.met_peer);
        let ids: Vec<ChannelId> = self.channels.keys().map(|k| ChannelId(*k)).collect();
        if resumed {
            self.stats.resumes += 1;
            self.resume_close();
            for id in ids {
                self.resume_channel(id);
            }
        } else if restarted {
            // A different peer session: nothing it knows of ours survives,
            // and nothing queued for the old one may reach the new one.
            self.retired_peer = self.peer_id;
            self.met_peer = false;
            self.ctrl.clear();
            self.window_dirty.clear();
            self.unacked_rx.clear();
            self.gone.clear();
            if self.close != CloseState::Open {
                // The peer we were saying goodbye to is gone.
                self.finish_close(false);
            }
            for id in ids {
                self.remove_channel(id);
                self.push_event(Event::Reset(id, ResetReason::PeerRestarted));
            }
            self.max_remote = 0;
        } else {
            // First handshake (or the same peer, which never got ours on
            // an earlier link and so never opened anything with us): opens
            // made before it may have been dropped with an earlier link;
            // announce those again.
            for id in ids {
                let queued = self
                    .ctrl
                    .iter()
                    .any(|r| matches!(r, Record::Open { chan, .. } if *chan == id.peer_view()));
                if !queued {
                    self.resume_channel(id);
                }
            }
        }
        self.peer_id = Some(session_id);
        self.pending_connected = Some(resumed);
        self.early_credit();
    }

    /// Channels opened before the peer's Hello may now send within the
    /// credit it grants every new channel (not a message channel holding a
    /// message larger than the peer takes: its `OpenOk` aborts it).
    fn early_credit(&mut self) {
        if !self.growing() || self.peer_open_credit == 0 {
            return;
        }
        let credit = self.peer_open_credit;
        let max_message = self.peer_max_message;
        let mut ids = Vec::new();
        for (id, c) in self.channels.iter_mut() {
            let too_big = c.kind == ChannelKind::Message
                && c.pending.iter().any(|m| m.data.len() as u64 > max_message);
            if c.state == ChanState::Opening && c.reliable() && !too_big {
                c.peer_limit = c.peer_limit.max(credit);
                ids.push(ChannelId(*id));
            }
        }
        for id in ids {
            self.activate(id);
        }
    }

    fn on_data(
        &mut self,
        now: Instant,
        id: ChannelId,
        offset: u64,
        end: bool,
        mut payload: bytes::Bytes,
    ) -> Result<(), SessionError> {
        let Some(c) = self.lookup(id)? else {
            return Ok(());
        };
        if c.class == super::Class::Latency {
            let hold = self.cfg.latency_hold;
            self.pacing.latency_seen(now, hold);
        }
        let Some(c) = self.channels.get_mut(&id.0) else {
            return Ok(());
        };
        if !c.reliable() {
            return Err(violation(format!("{id}: Data on a datagram channel")));
        }
        if c.state == ChanState::Opening {
            return Err(violation(format!("{id}: Data before OpenOk")));
        }
        if end && c.kind != ChannelKind::Message {
            return Err(violation(format!("{id}: message end on a stream")));
        }
        // Units of offset space: the bytes, plus one for a message's end.
        let len = payload.len() as u64 + u64::from(end);
        if offset.checked_add(len).is_none() {
            return Err(violation(format!("{id}: offset overflows")));
        }
        if offset > c.recv_offset {
            return Err(violation(format!("{id}: gap in the byte sequence")));
        }
        if offset + len > c.advertised {
            return Err(violation(format!("{id}: sent past the credit limit")));
        }
        if c.peer_fin.is_some_and(|f| offset + len > f) {
            return Err(violation(format!("{id}: Data after Close")));
        }
        if offset + len <= c.recv_offset {
            // Already have it (a retransmission overlapping what arrived).
            self.stats.stale_records += 1;
            return Ok(());
        }
        let skip = ((c.recv_offset - offset) as usize).min(payload.len());
        let _ = payload.split_to(skip);
        c.recv_offset = offset + len;
        c.rx_tick = true;
        // The peer used all its credit (a message's end needs one unit
        // with its last byte): it waits for us (see `window`).
        if c.advertised - c.recv_offset <= u64::from(c.kind == ChannelKind::Message) {
            c.hit_limit = true;
        }
        let newly_owed = !c.ack_owed;
        c.ack_owed = true;
        c.stats.bytes_rx += payload.len() as u64;
        c.stats.records_rx += 1;
        let mut completed = false;
        let released = c.released;
        if released {
            c.consumed = c.recv_offset;
        } else if c.kind == ChannelKind::Message {
            if let Some(m) = c.assemble(own_if_small(payload), end) {
                c.recv_bytes += m.data.len();
                c.hold(m);
                completed = true;
            }
        } else if !payload.is_empty() {
            c.recv_bytes += payload.len();
            c.hold(own_if_small(payload));
        }
        let want_window = c.wants_window();
        let readable = !c.recv_queue.is_empty();
        if completed {
            self.message_completed(id);
        }
        if released {
            // Discarded at once: it holds no budget.
            self.sync_held(id);
        }
        if newly_owed {
            // Delayed acknowledgement: bytes below the window thresholds
            // are acknowledged within `ack_delay` (frees the sender's
            // buffer, lets a goodbye confirm delivery) without a Window
            // per message of a request/response exchange.
            self.unacked_rx.push_back(id);
            self.ack_due.get_or_insert(now + self.cfg.ack_delay);
        }
        if want_window {
            self.mark_window(id);
        }
        if readable {
            self.signal_readable(id);
        }
        Ok(())
    }

    fn on_dgram(
        &mut self,
        now: Instant,
        id: ChannelId,
        payload: bytes::Bytes,
    ) -> Result<(), SessionError> {
        let Some(c) = self.lookup(id)? else {
            return Ok(());
        };
        if c.class == super::Class::Latency {
            let hold = self.cfg.latency_hold;
            self.pacing.latency_seen(now, hold);
        }
        let Some(c) = self.channels.get_mut(&id.0) else {
            return Ok(());
        };
        if c.kind != ChannelKind::Datagram {
            return Err(violation(format!("{id}: Dgram on a reliable channel")));
        }
        if c.state == ChanState::Opening {
            return Err(violation(format!("{id}: Dgram before OpenOk")));
        }
        // Each queued datagram also costs its bookkeeping: empty ones are
        // not free, so a flood of them is bounded like any other. What is
        // queued holds budget; what the budget cannot hold is dropped.
        let size = payload.len() + DGRAM_OVERHEAD;
        if c.recv_bytes + size > c.window as usize || (size as u64) > self.budget.spare() {
            c.stats.drops += 1;
            self.stats.dgram_drops += 1;
            return Ok(());
        }
        c.stats.bytes_rx += payload.len() as u64;
        c.stats.records_rx += 1;
        if c.released {
            return Ok(());
        }
        c.recv_bytes += size;
        c.hold(own_if_small(payload));
        self.sync_held(id);
        self.signal_readable(id);
        Ok(())
    }

    fn on_window(
        &mut self,
        id: ChannelId,
        received: u64,
        limit: u64,
        resume: bool,
    ) -> Result<(), SessionError> {
        let Some(c) = self.lookup(id)? else {
            if resume {
                // The peer resumes a channel we let go of: our last word
                // again (the final acknowledgement of a finished channel,
                // whose application must not see an abort), or a Reset.
                let word = self.gone.get(id).unwrap_or(super::gone::LastWord::Reset(0));
                self.ctrl
                    .extend(super::gone::Gone::records(id, word, false));
            }
            return Ok(());
        };
        if !c.reliable() {
            return Err(violation(format!("{id}: Window on a datagram channel")));
        }
        if received > c.high_water || received < c.acked {
            return Err(violation(format!(
                "{id}: acknowledged {received}, sent {}..{}",
                c.acked, c.high_water
            )));
        }
        if resume {
            c.resume_at(received);
        } else {
            c.ack(received);
        }
        c.peer_limit = c.peer_limit.max(limit);
        let blocked = c.blocked;
        let wake = blocked && self.has_send_room(id);
        if wake {
            if let Some(c) = self.channels.get_mut(&id.0) {
                c.blocked = false;
            }
            self.push_event(Event::Writable(id));
        }
        self.activate(id);
        self.maybe_gc(id);
        // The last acknowledgement may complete a goodbye.
        self.maybe_closed();
        Ok(())
    }
}

//! Inputs: link state changes and bytes from the device.

use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::channel::{ChanState, Channel};
use super::{
    ChannelId, ChannelKind, CloseState, Event, LinkState, RejectReason, ResetReason, Session,
    SessionError,
};
use crate::wire::{Record, RecordIter, VERSION};

/// Where the next batch could start: the next occurrence of the magic
/// after the first byte (or the end, keeping a possible partial magic).
fn resync_point(buf: &BytesMut) -> usize {
    let magic = crate::wire::MAGIC.to_le_bytes();
    buf.windows(4)
        .skip(1)
        .position(|w| w == magic)
        .map_or(buf.len().saturating_sub(3).max(1), |p| p + 1)
}

/// Receive-side cost of one queued datagram beyond its bytes.
pub(crate) const DGRAM_OVERHEAD: usize = 64;
/// Control records (answers to the peer) we queue at most: far above what
/// any well-behaved exchange needs, far below what would hurt memory.
const MAX_CTRL_QUEUE: usize = 65_536;
/// Payloads below this size are copied out of the receive buffer: a few
/// bytes must not pin a multi-MiB read buffer while they wait for a slow
/// reader (the window counts bytes, not the buffers behind them).
const OWN_BELOW: usize = 4096;

fn own_if_small(b: bytes::Bytes) -> bytes::Bytes {
    if b.len() < OWN_BELOW {
        bytes::Bytes::copy_from_slice(&b)
    } else {
        b
    }
}

fn violation(what: impl Into<String>) -> SessionError {
    SessionError::Protocol(what.into())
}

impl Session {
    /// The device was (re)opened: start the handshake.
    pub fn handle_link_up(&mut self, now: Instant) {
        self.handle_link_down();
        self.link = LinkState::Handshaking;
        self.seen_peer_hello = false;
        self.peer_saw_us = false;
        self.sent_seen = false;
        self.pending_connected = None;
        self.hello_due = Some(now);
        self.last_rx = now;
        self.stats.links_up += 1;
    }

    /// The device failed or was closed: forget everything tied to the byte
    /// stream. Channels stay; reliable ones resume on the next link if the
    /// peer is the same session.
    pub fn handle_link_down(&mut self) {
        self.link = LinkState::Down;
        self.decoder.reset();
        let _ = self.builder.finish();
        // Everything queued is re-derived on the next handshake (opens,
        // answers, credit: see `resume_channel`), except aborts: a channel
        // we reset is gone here, so only its Reset can tell the peer.
        self.ctrl.retain(|r| matches!(r, Record::Reset { .. }));
        // Resets that went out but may have been lost with the link: the
        // channel is gone here, so they are the only news of it.
        for (chan, code, _) in std::mem::take(&mut self.resets_unconfirmed) {
            self.ctrl.push_back(Record::Reset { chan, code });
        }
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
            c.ack_owed = false;
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
    pub fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) -> Result<(), SessionError> {
        if self.link == LinkState::Down {
            buf.clear();
            return Ok(());
        }
        loop {
            let before = buf.len();
            let body = match self.decoder.decode(buf) {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(_) if !self.seen_peer_hello && !buf.is_empty() => {
                    // Before the peer's Hello, garbage is expected on real
                    // hardware: the peer may still write the tail of the
                    // previous link's stream (mid-batch) until it notices
                    // our reopen. Skip to the next magic instead of failing.
                    self.decoder.reset();
                    let skip = resync_point(buf);
                    self.stats.resync_bytes += skip as u64;
                    buf.advance(skip);
                    continue;
                }
                Err(e) => {
                    if matches!(
                        e,
                        crate::wire::DecodeError::BodyChecksum { .. }
                            | crate::wire::DecodeError::HeaderChecksum
                            | crate::wire::DecodeError::BadMagic { .. }
                    ) {
                        self.stats.corrupt_batches += 1;
                    }
                    return Err(e.into());
                }
            };
            self.last_rx = now;
            self.stats.batches_rx += 1;
            self.stats.bytes_rx += (before - buf.len()) as u64 + 16;
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
        }
        Ok(())
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
            ..
        } = rec
        {
            if version != VERSION {
                return Err(SessionError::Incompatible {
                    ours: VERSION,
                    theirs: version,
                });
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
                self.maybe_up();
                return Ok(());
            }
            self.peer_max_batch = (max_batch as usize)
                .clamp(4096, crate::wire::MAX_BATCH_BODY)
                .min(self.cfg.max_batch_body);
            self.peer_max_record = (max_record as usize).clamp(4096, crate::wire::MAX_RECORD_LEN);
            self.builder.set_max_batch(self.peer_max_batch);
            self.on_peer_hello(now, session_id, resume_of);
            self.maybe_up();
            return Ok(());
        }
        if !self.seen_peer_hello {
            return Err(violation("record before Hello"));
        }
        match rec {
            Record::Hello { .. } => Ok(()),
            Record::Ping { token } => {
                self.pong_due = Some(token);
                Ok(())
            }
            Record::Pong { token } => {
                // Everything sent before that ping has been read.
                self.resets_unconfirmed.retain(|(_, _, t)| *t > token);
                if let Some((t, sent)) = self.ping_out {
                    if t == token {
                        self.stats.rtt = Some(now.saturating_duration_since(sent));
                        self.ping_out = None;
                    }
                }
                Ok(())
            }
            Record::Goodbye => self.on_goodbye(now),
            Record::GoodbyeAck => {
                if self.close == CloseState::GoodbyeSent {
                    self.finish_close(true);
                }
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
            Record::Dgram { chan, payload } => self.on_dgram(ChannelId(chan), payload),
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
    fn lookup(&mut self, id: ChannelId) -> Result<Option<&mut Channel>, SessionError> {
        let never = if id.is_remote() {
            id.0 > self.max_remote
        } else {
            id.0 >= self.next_local
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

    /// The link is up once both Hellos crossed: we have the peer's, and the
    /// peer's says it has ours. Only then do we send anything else, so
    /// everything after a Hello is read by a peer that is in step with
    /// this link's byte stream (and so faults, rather than skips, on
    /// corruption: see the resync in `handle_input`).
    fn maybe_up(&mut self) {
        if self.link == LinkState::Handshaking && self.seen_peer_hello && self.peer_saw_us {
            self.link = LinkState::Up;
            self.hello_due = None;
            if let Some(resumed) = self.pending_connected.take() {
                self.push_event(Event::Connected { resumed });
            }
        }
    }

    fn on_peer_hello(&mut self, _now: Instant, session_id: u64, resume_of: u64) {
        self.seen_peer_hello = true;
        let resumed = self.peer_id == Some(session_id) && resume_of == self.local_id;
        let ids: Vec<ChannelId> = self.channels.keys().map(|k| ChannelId(*k)).collect();
        if resumed {
            self.stats.resumes += 1;
            if self.close == CloseState::GoodbyeSent {
                // Our Goodbye may be lost: send it again after whatever
                // the channels retransmit.
                self.close = CloseState::Draining;
            }
            for id in ids {
                self.resume_channel(id);
            }
        } else if self.peer_id.is_some() {
            // A different peer session: nothing it knows of ours survives,
            // and nothing queued for the old one may reach the new one.
            self.ctrl.clear();
            self.window_dirty.clear();
            self.unacked_rx.clear();
            self.resets_unconfirmed.clear();
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
            // First handshake: opens made before it may have been dropped
            // with an earlier link; announce those again.
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
    }

    /// Re-announces a channel's state on a resumed link.
    fn resume_channel(&mut self, id: ChannelId) {
        let Some(c) = self.channels.get_mut(&id.0) else {
            return;
        };
        match c.state {
            ChanState::Opening => self.ctrl.push_back(Record::Open {
                chan: id.peer_view(),
                kind: c.kind,
                class: c.class,
                window: c.window as u32,
                service: c.service.clone(),
            }),
            ChanState::PendingAccept => {}
            ChanState::Open => {
                if id.is_remote() {
                    self.ctrl.push_back(Record::OpenOk {
                        chan: id.peer_view(),
                        window: c.window as u32,
                    });
                }
                let done =
                    c.peer_fin == Some(c.recv_offset) && c.fin_sent && c.acked == c.write_offset;
                if c.reliable() && done {
                    // Everything arrived both ways; the peer may have let
                    // the channel go already, so don't ask it to resume.
                } else if c.reliable() {
                    c.advertised = c.consumed + c.window;
                    c.acked_sent = c.recv_offset;
                    c.ack_owed = false;
                    self.ctrl.push_back(Record::Window {
                        chan: id.peer_view(),
                        received: c.recv_offset,
                        limit: c.advertised,
                        resume: true,
                    });
                } else if c.fin_sent {
                    c.fin_sent = false;
                    self.activate(id);
                }
            }
        }
    }

    fn on_open(
        &mut self,
        id: ChannelId,
        kind: ChannelKind,
        class: super::Class,
        window: u64,
        service: String,
    ) -> Result<(), SessionError> {
        if !id.is_remote() {
            return Err(violation("Open with a locally allocated id"));
        }
        if id.0 <= self.max_remote {
            // A repeat after a resume: answer again if we still know it.
            match self.channels.get_mut(&id.0) {
                Some(c) if c.state == ChanState::Open => {
                    // The opener never saw our OpenOk, so nothing we sent
                    // after it either: send it all again.
                    c.rewind(c.acked);
                    let window = c.window as u32;
                    self.ctrl.push_back(Record::OpenOk {
                        chan: id.peer_view(),
                        window,
                    });
                    self.activate(id);
                }
                Some(_) => {}
                None => self.ctrl.push_back(Record::OpenReject {
                    chan: id.peer_view(),
                    reason: RejectReason::Closed.code(),
                }),
            }
            return Ok(());
        }
        self.max_remote = id.0;
        if self.close != CloseState::Open {
            self.ctrl.push_back(Record::OpenReject {
                chan: id.peer_view(),
                reason: RejectReason::Refused.code(),
            });
            return Ok(());
        }
        let Some(own) = self.reserve_window(kind) else {
            self.ctrl.push_back(Record::OpenReject {
                chan: id.peer_view(),
                reason: RejectReason::TooMany.code(),
            });
            return Ok(());
        };
        let mut c = Channel::new(kind, class, service.clone(), ChanState::PendingAccept, own);
        c.peer_limit = window;
        c.peer_window = window;
        self.channels.insert(id.0, c);
        self.push_event(Event::Incoming {
            id,
            kind,
            class,
            service,
        });
        Ok(())
    }

    fn on_open_ok(&mut self, id: ChannelId, window: u64) -> Result<(), SessionError> {
        let Some(c) = self.lookup(id)? else {
            return Ok(());
        };
        if c.state != ChanState::Opening {
            return Ok(()); // a repeat after a resume
        }
        c.state = ChanState::Open;
        c.peer_window = window;
        c.peer_limit = c.peer_limit.max(window);
        let too_big = c.kind == ChannelKind::Message
            && c.pending.iter().any(|m| m.data.len() as u64 >= window);
        if too_big {
            self.remove_channel(id);
            self.ctrl.push_back(Record::Reset {
                chan: id.peer_view(),
                code: 0,
            });
            self.push_event(Event::Reset(id, ResetReason::Local));
            return Ok(());
        }
        self.push_event(Event::Opened(id));
        self.activate(id);
        Ok(())
    }

    fn on_close(&mut self, id: ChannelId, final_offset: u64) -> Result<(), SessionError> {
        let Some(c) = self.lookup(id)? else {
            return Ok(());
        };
        if c.reliable() && final_offset < c.recv_offset {
            return Err(violation(format!("{id}: Close below received data")));
        }
        if c.peer_fin.is_some_and(|f| f != final_offset) {
            return Err(violation(format!("{id}: Close moved the end")));
        }
        c.peer_fin = Some(final_offset);
        if c.released {
            c.fin_delivered = true;
        }
        // The sender is done: acknowledge at once, not after the delay.
        let ack_now = c.reliable() && c.ack_owed;
        if ack_now {
            self.mark_window(id);
        }
        self.signal_readable(id);
        self.maybe_gc(id);
        Ok(())
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
        let payload = own_if_small(payload);
        c.recv_offset = offset + len;
        let newly_owed = !c.ack_owed;
        c.ack_owed = true;
        c.stats.bytes_rx += payload.len() as u64;
        c.stats.records_rx += 1;
        if c.released {
            c.consumed = c.recv_offset;
        } else if c.kind == ChannelKind::Message {
            if let Some(m) = c.assemble(payload, end) {
                c.recv_bytes += m.len();
                c.recv_queue.push_back(m);
            }
        } else if !payload.is_empty() {
            c.recv_bytes += payload.len();
            c.recv_queue.push_back(payload);
        }
        let want_window = c.wants_window();
        let readable = !c.recv_queue.is_empty();
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

    fn on_dgram(&mut self, id: ChannelId, payload: bytes::Bytes) -> Result<(), SessionError> {
        let Some(c) = self.lookup(id)? else {
            return Ok(());
        };
        if c.kind != ChannelKind::Datagram {
            return Err(violation(format!("{id}: Dgram on a reliable channel")));
        }
        if c.state == ChanState::Opening {
            return Err(violation(format!("{id}: Dgram before OpenOk")));
        }
        let payload = own_if_small(payload);
        // Each queued datagram also costs its bookkeeping: empty ones are
        // not free, so a flood of them is bounded like any other.
        if c.recv_bytes + payload.len() + DGRAM_OVERHEAD > c.window as usize {
            c.stats.drops += 1;
            self.stats.dgram_drops += 1;
            return Ok(());
        }
        c.stats.bytes_rx += payload.len() as u64;
        c.stats.records_rx += 1;
        if c.released {
            return Ok(());
        }
        c.recv_bytes += payload.len() + DGRAM_OVERHEAD;
        c.recv_queue.push_back(payload);
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
                // The peer resumes a channel we dropped: tell it.
                self.ctrl.push_back(Record::Reset {
                    chan: id.peer_view(),
                    code: 0,
                });
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
            c.rewind(received);
        } else {
            c.ack(received);
        }
        c.peer_limit = c.peer_limit.max(limit);
        let wake = c.blocked && c.send_buffered() < c.peer_window.max(1);
        if wake {
            c.blocked = false;
            self.push_event(Event::Writable(id));
        }
        self.activate(id);
        self.maybe_gc(id);
        Ok(())
    }

    fn on_goodbye(&mut self, now: Instant) -> Result<(), SessionError> {
        self.peer_goodbye = true;
        // Whoever started it, the close ends by the deadline.
        self.close_deadline
            .get_or_insert(now + self.cfg.goodbye_timeout);
        // Acknowledge everything the peer sent: it all arrived before this.
        let ids: Vec<ChannelId> = self.channels.keys().map(|k| ChannelId(*k)).collect();
        for id in ids {
            if self.channels.get(&id.0).is_some_and(|c| c.reliable()) {
                self.mark_window(id);
            }
        }
        match self.close {
            CloseState::Open => {
                // The peer is leaving: drain our side, then answer.
                self.close = CloseState::Draining;
            }
            CloseState::Draining => {}
            CloseState::GoodbyeSent => {
                // Both said Goodbye: confirm and stop.
                self.ctrl.push_back(Record::GoodbyeAck);
                self.finish_close(true);
            }
            CloseState::Closed => {}
        }
        Ok(())
    }

    pub(crate) fn finish_close(&mut self, clean: bool) {
        if self.close != CloseState::Closed {
            self.close = CloseState::Closed;
            self.close_clean = clean;
            self.push_event(Event::Closed { clean });
        }
    }
}

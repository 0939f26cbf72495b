//! Outputs: the transmit scheduler and the timers.

use std::collections::VecDeque;
use std::time::Instant;

use super::channel::ChanState;
use super::{ChannelKind, Class, CloseState, LinkState, Session, SessionError};
use crate::wire::{Record, Transmit, Unsealed, VERSION};

/// Smallest chunk of a paced (latency mode) bulk record: below a page the
/// per-record cost shows.
const MIN_PACED_CHUNK: usize = 4096;

impl Session {
    /// Builds the next transmit: control records first, then data chosen by
    /// the scheduler, up to `max_transmit` bytes in batches of at most the
    /// peer's batch size. `None` when there is nothing to send.
    ///
    /// A lone small record comes back at once (nothing waits for company);
    /// under load, whatever queued while the previous write was in the
    /// device comes back together, so writes grow to several MiB exactly
    /// when the cable is busy.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.poll_transmit_max(now, self.cfg.max_transmit)
    }

    /// [`poll_transmit`](Self::poll_transmit) with data up to about `max`
    /// bytes (at least one record; control records are never held back).
    /// A driver keeps `max` near what the device takes now: once built, a
    /// transmit is committed, and a latency-class record that queues later
    /// waits behind whatever of it the device has not taken yet.
    pub fn poll_transmit_max(&mut self, now: Instant, max: usize) -> Option<Transmit> {
        self.poll_transmit_unsealed(now, max).map(Unsealed::seal)
    }

    /// [`poll_transmit_max`](Self::poll_transmit_max) without the batch
    /// checksums: the driver seals the transmit (off its lock) before
    /// writing it.
    pub fn poll_transmit_unsealed(&mut self, now: Instant, max: usize) -> Option<Unsealed> {
        if self.link == LinkState::Down {
            return None;
        }
        self.push_handshake(now);
        if self.link == LinkState::Up {
            self.push_control(now);
            self.schedule(now, max.clamp(1, self.cfg.max_transmit));
            self.piggyback_acks(now);
            self.push_goodbye();
        }
        if self.builder.is_empty() {
            return None;
        }
        let t = self.builder.finish_unsealed();
        self.stats.transmits += 1;
        self.stats.batches_tx += t.batches() as u64;
        self.stats.records_tx += t.records() as u64;
        self.stats.bytes_tx += t.len() as u64;
        Some(t)
    }

    fn push_handshake(&mut self, now: Instant) {
        let due = self.hello_due.is_some_and(|d| d <= now);
        if !(due || self.hello_reply) {
            return;
        }
        self.hello_reply = false;
        if due {
            self.hello_due = Some(now + self.hello_interval());
        }
        let seen = self.seen_peer_hello;
        self.sent_seen |= seen;
        // With a key: our nonce, and our proof as soon as we have the
        // peer's nonce (zeros before), whether or not we took its Hello.
        let auth = self.cfg.psk.as_ref().map(|k| crate::wire::HelloAuth {
            nonce: self.link_nonce,
            mac: match self.peer_nonce {
                Some((peer, peer_nonce)) => {
                    k.sign(self.local_id, peer, &self.link_nonce, &peer_nonce)
                }
                None => [0; 32],
            },
        });
        // With growing windows: the largest message we take, and the credit
        // every channel the peer opens has before our OpenOk (our starting
        // window: `admit` gives no channel less).
        let grows = self.cfg.grow_windows;
        let credit = self
            .base_window(ChannelKind::Stream)
            .min(self.base_window(ChannelKind::Message));
        self.builder.push(&Record::Hello {
            version: VERSION,
            seen_peer: seen,
            caps: if grows { crate::wire::CAP_WINDOWS } else { 0 },
            max_batch: self.cfg.max_batch_body as u32,
            max_record: crate::wire::MAX_RECORD_LEN as u32,
            session_id: self.local_id,
            resume_of: self.hello_resume_of,
            max_message: if grows {
                (self.cfg.message_window - 1) as u32
            } else {
                0
            },
            open_credit: if grows { credit as u32 } else { 0 },
            auth,
            ident: self.cfg.ident.clone().map(Box::new),
        });
    }

    fn push_control(&mut self, now: Instant) {
        // The pong goes after what was queued before it: the peer takes a
        // pong as proof we read its last words about channels (see
        // `gone`) and then forgets them, so a record of ours queued
        // before we read them (a repeated `Open` from a resume) must reach
        // it first, or it is taken for a new channel (found by
        // `session_ops` after an in-band resync).
        let pong = self.pong_due.take();
        while let Some(mut rec) = self.ctrl.pop_front() {
            if let Record::Open { chan, window, .. } = &mut rec {
                // Queued (at a resume, say) for a channel that went since:
                // the peer may have forgotten it already, and would take
                // the stale Open for a new channel.
                let id = super::ChannelId(*chan ^ 1);
                let opening = self
                    .channels
                    .get(&id.0)
                    .is_some_and(|c| c.state == ChanState::Opening);
                if !opening {
                    continue;
                }
                // The peer's Hello is known now: an older peer gets the
                // whole window it expects.
                if !self.growing() {
                    self.widen(id);
                }
                if let Some(c) = self.channels.get(&id.0) {
                    *window = c.window.min(u64::from(u32::MAX)) as u32;
                }
            }
            // A last word about a gone channel is kept until the pong of
            // the ping that follows it proves the peer read it: ask soon.
            if self.gone.sent(&rec, self.next_token) {
                self.ping_wanted = true;
            }
            self.emit(&rec);
        }
        if let Some(token) = pong {
            self.emit(&Record::Pong { token });
        }
        if self.ping_wanted && self.ping_out.is_none() {
            let token = self.next_token;
            self.next_token += 1;
            self.ping_out = Some((token, now));
            self.ping_wanted = false;
            self.ping_due = now + self.cfg.keepalive_interval;
            self.emit(&Record::Ping { token });
        }
        while let Some(id) = self.window_dirty.pop_front() {
            if let Some(c) = self.channels.get_mut(&id.0) {
                c.window_dirty = false;
            }
            self.push_window(id, now);
        }
        let step = self.cfg.latency_in_flight / 4;
        if let Some(read) = self.pacing.report_due(now, step) {
            self.emit(&Record::Progress { read, want: false });
        }
    }

    /// Acknowledgement and credit for one channel.
    fn push_window(&mut self, id: super::ChannelId, now: Instant) {
        let Some(c) = self.channels.get(&id.0) else {
            return;
        };
        if c.state != ChanState::Open || !c.reliable() {
            return;
        }
        self.grant(id, now);
        let Some(c) = self.channels.get_mut(&id.0) else {
            return;
        };
        c.acked_sent = c.recv_offset;
        c.ack_owed = false;
        let rec = Record::Window {
            chan: id.peer_view(),
            received: c.recv_offset,
            limit: c.advertised,
            resume: false,
        };
        self.emit(&rec);
    }

    /// Something goes out anyway: the acknowledgements that wait for their
    /// delay ride along (an RPC's answer acknowledges its request), so a
    /// request/response exchange needs no write of its own for them.
    fn piggyback_acks(&mut self, now: Instant) {
        if self.builder.is_empty() || self.unacked_rx.is_empty() {
            return;
        }
        while let Some(id) = self.unacked_rx.pop_front() {
            if self.channels.get(&id.0).is_some_and(|c| c.ack_owed) {
                self.push_window(id, now);
            }
        }
        self.ack_due = None;
    }

    /// Something for `poll_transmit` to send, now or when credit comes.
    pub fn has_transmit_work(&self) -> bool {
        !self.ctrl.is_empty()
            || !self.window_dirty.is_empty()
            || self.pong_due.is_some()
            || self.active.iter().any(|q| !q.is_empty())
            || self.close == CloseState::Draining
    }

    /// Appends a record to the transmit under way, counting it for the
    /// latency mode's in-flight limit (Hellos travel before the link is up
    /// and are not counted, by either side).
    pub(super) fn emit(&mut self, rec: &Record) {
        if !matches!(rec, Record::Hello { .. }) {
            self.pacing.sent(rec.encoded_len());
        }
        self.builder.push(rec);
    }

    /// Strict priority between classes, round robin within a class (one
    /// record per turn), and every `starvation_limit` records one turn for
    /// a waiting lower class.
    fn schedule(&mut self, now: Instant, max: usize) {
        let max_chunk = self
            .cfg
            .max_chunk
            .min(self.peer_max_record.saturating_sub(64))
            .min(self.peer_max_batch.saturating_sub(64));
        // Turns in a row that sent nothing. A channel that sends nothing is
        // not queued again (`activate` asks `sendable`), so more such turns
        // than channels queued would mean the queues and `sendable`
        // disagree: stop instead of spinning with the state lock held
        // (quinn's `IO_LOOP_BOUND`: bounded work whatever the state).
        let mut idle = 0usize;
        while self.builder.len() < max {
            if idle > self.active.iter().map(VecDeque::len).sum::<usize>() {
                break;
            }
            let Some(mut class) = self.pick_class() else {
                break;
            };
            let paced = class != Class::Latency && self.pacing.active(now);
            if paced && self.pacing.in_flight() >= self.cfg.latency_in_flight {
                // Latency mode: the cable holds enough of ours; the rest
                // waits for the peer's reads (asking for a report once).
                // Latency-class records go on.
                if self.pacing.ask() {
                    let read = self.pacing.read();
                    self.emit(&Record::Progress { read, want: true });
                }
                if self.active[Class::Latency as usize].is_empty() {
                    break;
                }
                class = Class::Latency;
            }
            let Some(id) = self.active[class as usize].pop_front() else {
                break;
            };
            let Some(c) = self.channels.get_mut(&id.0) else {
                idle += 1;
                continue;
            };
            c.in_active = false;
            // In latency mode a bulk chunk is cut to the room left under
            // the limit, so the cable never holds more than the limit.
            let chunk = if paced {
                let room = self
                    .cfg
                    .latency_in_flight
                    .saturating_sub(self.pacing.in_flight());
                max_chunk.min((room as usize).max(MIN_PACED_CHUNK))
            } else {
                max_chunk
            };
            let mut drained = false;
            let rec = if c.kind == ChannelKind::Datagram {
                match c.dgrams.pop_front() {
                    Some(d) => {
                        c.dgram_bytes -= d.len();
                        if c.dgram_wake_at.is_some_and(|w| c.dgram_bytes <= w) {
                            c.dgram_wake_at = None;
                            drained = true;
                        }
                        c.stats.bytes_tx += d.len() as u64;
                        c.stats.records_tx += 1;
                        Some(Record::Dgram {
                            chan: id.peer_view(),
                            payload: d,
                        })
                    }
                    None => None,
                }
            } else {
                c.take_chunk(chunk).map(|ch| Record::Data {
                    chan: id.peer_view(),
                    offset: ch.offset,
                    end: ch.end,
                    payload: ch.data,
                })
            };
            let rec = match rec {
                Some(r) => Some(r),
                None if c.fin_queued && !c.fin_sent && c.pending.is_empty() => {
                    c.fin_sent = true;
                    Some(Record::Close {
                        chan: id.peer_view(),
                        final_offset: c.write_offset,
                    })
                }
                None => None,
            };
            // Room freed in the send buffer is signalled by the
            // acknowledgements; a datagram queue drained to the mark a
            // sender asked for, here.
            if drained {
                self.push_event(super::Event::Writable(id));
            }
            match rec {
                Some(rec) => {
                    if class == Class::Latency {
                        self.pacing.latency_seen(now, self.cfg.latency_hold);
                    }
                    self.emit(&rec);
                    idle = 0;
                }
                None => idle += 1,
            }
            self.activate(id);
            self.maybe_gc(id);
        }
    }

    fn pick_class(&mut self) -> Option<Class> {
        let mut first = None;
        for class in Class::ALL {
            if !self.active[class as usize].is_empty() {
                match first {
                    None => first = Some(class),
                    Some(_) if self.streak >= self.cfg.starvation_limit => {
                        self.streak = 0;
                        return Some(class);
                    }
                    Some(_) => {
                        self.streak += 1;
                        return first;
                    }
                }
            }
        }
        self.streak = 0;
        first
    }

    /// Everything the application queued went out (a channel still
    /// waiting for its `OpenOk` counts as pending: its data is owed too).
    pub(super) fn nothing_pending(&self) -> bool {
        self.ctrl.is_empty()
            && self.window_dirty.is_empty()
            && self.channels.values().all(|c| {
                c.dgrams.is_empty() && c.pending.is_empty() && (c.fin_sent || !c.fin_queued)
            })
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        min(self
            .close_deadline
            .filter(|_| self.close != CloseState::Closed));
        min(self.resume_deadline());
        match self.link {
            LinkState::Down => {}
            LinkState::Handshaking => {
                min(self.hello_due);
                min(self.resync_deadline());
            }
            LinkState::Up => {
                min(self.ack_due);
                min(self.decay_due);
                if self.ping_out.is_none() && !self.ping_wanted {
                    min(Some(self.ping_due));
                }
                min(Some(self.last_rx + self.cfg.idle_timeout));
                if self.pacing.in_flight() >= self.cfg.latency_in_flight {
                    // Held-back bulk goes when the mode ends.
                    min(self.pacing.until());
                }
            }
        }
        t
    }

    /// Runs the timers. An error is a link fault (the peer went silent).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        if self
            .close_deadline
            .is_some_and(|d| d <= now && self.close != CloseState::Closed)
        {
            self.finish_close(false);
        }
        self.check_pause(now);
        if self.decay_due.is_some_and(|d| d <= now) {
            self.decay_windows(now);
        }
        if self.ack_due.is_some_and(|d| d <= now) {
            self.ack_due = None;
            while let Some(id) = self.unacked_rx.pop_front() {
                if self.channels.get(&id.0).is_some_and(|c| c.ack_owed) {
                    self.mark_window(id);
                }
            }
        }
        // Timers only raise flags and move on: `poll_transmit` may not run
        // for a while (a write is pending), and a deadline left in the
        // past would make the driver spin.
        if self.hello_due.is_some_and(|d| d <= now) {
            self.hello_reply = true;
            self.hello_due = Some(now + self.hello_interval());
        }
        self.check_resync(now)?;
        if self.link == LinkState::Up && self.ping_out.is_none() && self.ping_due <= now {
            self.ping_wanted = true;
            self.ping_due = now + self.cfg.keepalive_interval;
        }
        // Latency mode over: its end is no deadline any more (bulk held
        // back by it goes with the next transmit).
        self.pacing.expire(now);
        if self.link == LinkState::Up {
            let silent = now.saturating_duration_since(self.last_rx);
            if silent >= self.cfg.idle_timeout {
                return Err(SessionError::IdleTimeout(silent));
            }
        }
        Ok(())
    }

    /// Sends a ping now (the RTT lands in [`stats`](Self::stats)).
    pub fn ping(&mut self, now: Instant) {
        self.ping_due = now;
        self.ping_out = None;
        self.ping_wanted = true;
    }
}

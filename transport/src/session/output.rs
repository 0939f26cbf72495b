//! Outputs: the transmit scheduler and the timers.

use std::time::Instant;

use super::channel::ChanState;
use super::{ChannelKind, Class, CloseState, LinkState, Session, SessionError};
use crate::wire::{Record, Transmit, VERSION};

/// Capability bits this build announces (none defined yet).
const CAPS: u32 = 0;

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
        if self.link == LinkState::Down {
            return None;
        }
        self.push_handshake(now);
        if self.link == LinkState::Up {
            self.push_control(now);
            self.schedule();
            if self.close == CloseState::Draining && self.nothing_pending() {
                self.builder.push(&Record::Goodbye);
                self.close = CloseState::GoodbyeSent;
            }
        }
        if self.builder.is_empty() {
            return None;
        }
        let t = self.builder.finish();
        self.stats.transmits += 1;
        self.stats.batches_tx += t.batches as u64;
        self.stats.records_tx += t.records as u64;
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
            self.hello_due = Some(now + self.cfg.handshake_retry);
        }
        self.sent_seen |= self.seen_peer_hello;
        self.builder.push(&Record::Hello {
            version: VERSION,
            seen_peer: self.seen_peer_hello,
            caps: CAPS,
            max_batch: self.cfg.max_batch_body as u32,
            max_record: crate::wire::MAX_RECORD_LEN as u32,
            session_id: self.local_id,
            resume_of: self.peer_id.unwrap_or(0),
        });
    }

    fn push_control(&mut self, now: Instant) {
        if let Some(token) = self.pong_due.take() {
            self.builder.push(&Record::Pong { token });
        }
        if self.ping_wanted && self.ping_out.is_none() {
            let token = self.next_token;
            self.next_token += 1;
            self.ping_out = Some((token, now));
            self.ping_wanted = false;
            self.ping_due = now + self.cfg.keepalive_interval;
            self.builder.push(&Record::Ping { token });
        }
        while let Some(rec) = self.ctrl.pop_front() {
            if let Record::Reset { chan, code } = rec {
                // Kept until a later ping's pong proves the peer read it.
                self.resets_unconfirmed.push((chan, code, self.next_token));
            }
            self.builder.push(&rec);
        }
        while let Some(id) = self.window_dirty.pop_front() {
            let Some(c) = self.channels.get_mut(&id.0) else {
                continue;
            };
            c.window_dirty = false;
            if c.state != ChanState::Open {
                continue;
            }
            c.advertised = c.advertised.max(c.consumed + c.window);
            c.acked_sent = c.recv_offset;
            c.ack_owed = false;
            let rec = Record::Window {
                chan: id.peer_view(),
                received: c.recv_offset,
                limit: c.advertised,
                resume: false,
            };
            self.builder.push(&rec);
        }
    }

    /// Strict priority between classes, round robin within a class (one
    /// record per turn), and every `starvation_limit` records one turn for
    /// a waiting lower class.
    fn schedule(&mut self) {
        let max_chunk = self
            .cfg
            .max_chunk
            .min(self.peer_max_record.saturating_sub(64))
            .min(self.peer_max_batch.saturating_sub(64));
        while self.builder.len() < self.cfg.max_transmit {
            let Some(class) = self.pick_class() else {
                break;
            };
            let Some(id) = self.active[class as usize].pop_front() else {
                break;
            };
            let Some(c) = self.channels.get_mut(&id.0) else {
                continue;
            };
            c.in_active = false;
            let rec = if c.kind == ChannelKind::Datagram {
                match c.dgrams.pop_front() {
                    Some(d) => {
                        c.dgram_bytes -= d.len();
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
                c.take_chunk(max_chunk).map(|ch| Record::Data {
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
            // Room freed in a datagram queue or the send buffer: nothing to
            // signal here; acknowledgements free stream buffers.
            if let Some(rec) = rec {
                self.builder.push(&rec);
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
    fn nothing_pending(&self) -> bool {
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
        match self.link {
            LinkState::Down => {}
            LinkState::Handshaking => min(self.hello_due),
            LinkState::Up => {
                min(self.ack_due);
                if self.ping_out.is_none() && !self.ping_wanted {
                    min(Some(self.ping_due));
                }
                min(Some(self.last_rx + self.cfg.idle_timeout));
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
            self.hello_due = Some(now + self.cfg.handshake_retry);
        }
        if self.link == LinkState::Up && self.ping_out.is_none() && self.ping_due <= now {
            self.ping_wanted = true;
            self.ping_due = now + self.cfg.keepalive_interval;
        }
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

//! Application commands: open, accept, send, receive, finish, close.

use std::time::Instant;

use bytes::Bytes;

use super::channel::{ChanState, Channel};
use super::{
    ChannelError, ChannelId, ChannelKind, Class, CloseState, Recv, RejectReason, SendError, Session,
};
use crate::wire::{Record, MAX_SERVICE_NAME};

/// Errors of [`Session::open`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Service names are 1..=255 bytes.
    #[error("service name must be 1 to {MAX_SERVICE_NAME} bytes, got {0}")]
    BadServiceName(usize),
    /// Channel limit or receive budget exhausted.
    #[error("too many channels (or no receive memory left)")]
    TooMany,
    /// The session is shutting down.
    #[error("session closing")]
    Closing,
}

impl Session {
    fn chan_mut(&mut self, id: ChannelId) -> Result<&mut Channel, ChannelError> {
        self.channels
            .get_mut(&id.0)
            .ok_or(ChannelError::UnknownChannel)
    }

    /// Opens a channel to `service` on the peer. Sends may start at once;
    /// they go out after [`Event::Opened`](super::Event::Opened).
    pub fn open(
        &mut self,
        kind: ChannelKind,
        class: Class,
        service: &str,
    ) -> Result<ChannelId, OpenError> {
        if service.is_empty() || service.len() > MAX_SERVICE_NAME {
            return Err(OpenError::BadServiceName(service.len()));
        }
        if self.close != CloseState::Open {
            return Err(OpenError::Closing);
        }
        let window = self.reserve_window(kind).ok_or(OpenError::TooMany)?;
        let id = ChannelId(self.next_local);
        self.next_local = self.next_local.wrapping_add(2);
        let ch = Channel::new(kind, class, service.to_owned(), ChanState::Opening, window);
        self.channels.insert(id.0, ch);
        self.ctrl.push_back(Record::Open {
            chan: id.peer_view(),
            kind,
            class,
            window: window as u32,
            service: service.to_owned(),
        });
        Ok(id)
    }

    /// Accepts a channel announced by [`Event::Incoming`](super::Event::Incoming).
    pub fn accept(&mut self, id: ChannelId) -> Result<(), ChannelError> {
        let ch = self.chan_mut(id)?;
        if ch.state != ChanState::PendingAccept {
            return Err(ChannelError::Invalid("not waiting for accept"));
        }
        ch.state = ChanState::Open;
        let window = ch.window as u32;
        self.ctrl.push_back(Record::OpenOk {
            chan: id.peer_view(),
            window,
        });
        self.activate(id);
        Ok(())
    }

    /// Refuses a channel announced by [`Event::Incoming`](super::Event::Incoming).
    pub fn reject(&mut self, id: ChannelId, reason: RejectReason) -> Result<(), ChannelError> {
        let ch = self.chan_mut(id)?;
        if ch.state != ChanState::PendingAccept {
            return Err(ChannelError::Invalid("not waiting for accept"));
        }
        self.remove_channel(id);
        self.ctrl.push_back(Record::OpenReject {
            chan: id.peer_view(),
            reason: reason.code(),
        });
        Ok(())
    }

    fn check_send(&mut self, id: ChannelId, kind: ChannelKind) -> Result<&mut Channel, SendError> {
        let closing = self.close != CloseState::Open;
        let ch = self
            .channels
            .get_mut(&id.0)
            .ok_or(SendError::UnknownChannel)?;
        if ch.kind != kind {
            return Err(SendError::WrongKind(ch.kind));
        }
        if ch.fin_queued {
            return Err(SendError::Finished);
        }
        if closing {
            return Err(SendError::Closing);
        }
        Ok(ch)
    }

    /// Queues stream bytes; returns how many were taken (a prefix of
    /// `data`, no copy). `Err(Blocked)` when none fit: wait for
    /// [`Event::Writable`](super::Event::Writable).
    pub fn send(&mut self, id: ChannelId, mut data: Bytes) -> Result<usize, SendError> {
        let limit = self.cfg.stream_window;
        let ch = self.check_send(id, ChannelKind::Stream)?;
        let cap = if ch.peer_window > 0 {
            ch.peer_window
        } else {
            limit
        };
        let room = cap.saturating_sub(ch.send_buffered()) as usize;
        if room == 0 && !data.is_empty() {
            ch.blocked = true;
            return Err(SendError::Blocked);
        }
        let n = data.len().min(room);
        if n < data.len() {
            data.truncate(n);
        }
        if n > 0 {
            ch.push_data(data, false);
            self.activate(id);
        }
        Ok(n)
    }

    /// Queues one whole message. `Err(Blocked)` when the send buffer cannot
    /// take it now.
    pub fn send_message(&mut self, id: ChannelId, msg: Bytes) -> Result<(), SendError> {
        let limit = self.cfg.message_window;
        let ch = self.check_send(id, ChannelKind::Message)?;
        let cap = if ch.peer_window > 0 {
            ch.peer_window
        } else {
            limit
        };
        // A message takes its length plus one unit for its end.
        let units = msg.len() as u64 + 1;
        if units > cap {
            return Err(SendError::TooLarge {
                len: msg.len(),
                max: cap - 1,
            });
        }
        if ch.send_buffered() + units > cap {
            ch.blocked = true;
            return Err(SendError::Blocked);
        }
        ch.push_data(msg, true);
        self.activate(id);
        Ok(())
    }

    /// Queues one datagram. Returns `Ok(false)` when it was dropped because
    /// the channel's queue is full (counted in the stats), as a NIC would.
    pub fn send_datagram(&mut self, id: ChannelId, d: Bytes) -> Result<bool, SendError> {
        let max_queue = self.cfg.dgram_send_queue;
        let max_len = self.max_datagram();
        let ch = self.check_send(id, ChannelKind::Datagram)?;
        if d.len() > max_len {
            return Err(SendError::TooLarge {
                len: d.len(),
                max: max_len as u64,
            });
        }
        if ch.dgram_bytes + d.len() > max_queue {
            ch.stats.drops += 1;
            self.stats.dgram_drops += 1;
            return Ok(false);
        }
        ch.dgram_bytes += d.len();
        ch.dgrams.push_back(d);
        self.activate(id);
        Ok(true)
    }

    /// Largest datagram that fits one record for the peer.
    pub fn max_datagram(&self) -> usize {
        let record_max = self.peer_max_record.min(self.peer_max_batch);
        record_max.saturating_sub(crate::wire::RECORD_HEADER_LEN + 4)
    }

    /// Takes up to `max` received stream bytes.
    pub fn recv(&mut self, id: ChannelId, max: usize) -> Result<Recv, ChannelError> {
        let ch = self.chan_mut(id)?;
        if ch.kind != ChannelKind::Stream {
            return Err(ChannelError::Invalid("recv is for stream channels"));
        }
        let r = match ch.take_stream(max) {
            Some(b) => Recv::Data(b),
            None => Self::end_or_blocked(ch),
        };
        self.after_recv(id);
        Ok(r)
    }

    /// Takes one received message.
    pub fn recv_message(&mut self, id: ChannelId) -> Result<Recv, ChannelError> {
        self.recv_whole(id, ChannelKind::Message)
    }

    /// Takes one received datagram.
    pub fn recv_datagram(&mut self, id: ChannelId) -> Result<Recv, ChannelError> {
        self.recv_whole(id, ChannelKind::Datagram)
    }

    fn recv_whole(&mut self, id: ChannelId, kind: ChannelKind) -> Result<Recv, ChannelError> {
        let ch = self.chan_mut(id)?;
        if ch.kind != kind {
            return Err(ChannelError::Invalid("wrong receive call for this kind"));
        }
        let r = match ch.take_whole() {
            Some(b) => Recv::Data(b),
            None => Self::end_or_blocked(ch),
        };
        self.after_recv(id);
        Ok(r)
    }

    fn end_or_blocked(ch: &mut Channel) -> Recv {
        ch.readable_signalled = false;
        match ch.peer_fin {
            Some(fin) if !ch.reliable() || fin == ch.recv_offset => {
                ch.fin_delivered = true;
                Recv::Fin
            }
            _ => Recv::Blocked,
        }
    }

    fn after_recv(&mut self, id: ChannelId) {
        if self.channels.get(&id.0).is_some_and(Channel::wants_window) {
            self.mark_window(id);
        }
        self.maybe_gc(id);
    }

    /// Ends our direction of a channel after the queued data (a `Close`
    /// follows the last byte). The peer still may send until it finishes.
    pub fn finish(&mut self, id: ChannelId) -> Result<(), ChannelError> {
        let ch = self.chan_mut(id)?;
        ch.fin_queued = true;
        self.activate(id);
        self.maybe_gc(id);
        Ok(())
    }

    /// The application dropped its handle: finish our direction after the
    /// queued data, discard what is buffered and what still arrives (credit
    /// keeps flowing, so the peer is never stuck), and let the channel go
    /// when the peer finished too. A channel still waiting for an answer to
    /// its `Open` is reset instead.
    pub fn release(&mut self, id: ChannelId) -> Result<(), ChannelError> {
        let ch = self.chan_mut(id)?;
        if ch.state != ChanState::Open {
            return self.reset(id);
        }
        ch.fin_queued = true;
        ch.released = true;
        ch.consumed = ch.recv_offset;
        ch.recv_queue.clear();
        ch.recv_bytes = 0;
        ch.partial.clear();
        ch.partial_len = 0;
        if ch.peer_fin.is_some() {
            ch.fin_delivered = true;
        }
        if ch.wants_window() {
            self.mark_window(id);
        }
        self.activate(id);
        self.maybe_gc(id);
        Ok(())
    }

    /// Control records (credit, acknowledgements) wait to go out: a driver
    /// should run `poll_transmit` soon.
    pub fn has_control(&self) -> bool {
        !self.ctrl.is_empty() || !self.window_dirty.is_empty()
    }

    /// Aborts a channel in both directions; queued data is discarded.
    pub fn reset(&mut self, id: ChannelId) -> Result<(), ChannelError> {
        self.chan_mut(id)?;
        self.remove_channel(id);
        self.ctrl.push_back(Record::Reset {
            chan: id.peer_view(),
            code: 0,
        });
        Ok(())
    }

    /// Removes a channel that is done in both directions: our `Close` went
    /// out and everything we sent was acknowledged, the peer's `Close`
    /// arrived and the application saw the end.
    pub(crate) fn maybe_gc(&mut self, id: ChannelId) {
        let done = self.channels.get(&id.0).is_some_and(|c| {
            c.fin_sent && c.acked == c.write_offset && c.peer_fin.is_some() && c.fin_delivered
        });
        if done {
            if let Some(c) = self.channels.get(&id.0) {
                if c.ack_owed || c.window_dirty {
                    // The peer keeps its channel until everything it sent
                    // is acknowledged: send the last acknowledgement now,
                    // the channel will not be there to send it later.
                    self.ctrl.push_back(Record::Window {
                        chan: id.peer_view(),
                        received: c.recv_offset,
                        limit: c.advertised.max(c.consumed + c.window),
                        resume: false,
                    });
                }
            }
            self.remove_channel(id);
        }
    }

    /// Shuts the session down cleanly: queued data goes out, then both
    /// sides exchange `Goodbye` (each confirming it received everything the
    /// other sent) before the device may be closed. [`Event::Closed`]
    /// reports the outcome; give up after the configured goodbye timeout.
    ///
    /// [`Event::Closed`]: super::Event::Closed
    pub fn close(&mut self, now: Instant) {
        if self.close == CloseState::Open {
            self.close = CloseState::Draining;
            self.close_deadline = Some(now + self.cfg.goodbye_timeout);
        }
    }
}

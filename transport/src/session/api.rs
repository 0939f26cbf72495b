//! Application commands: open, accept, send, receive, finish, close.

use bytes::Bytes;

use super::channel::{ChanState, Channel};
use super::gone::{Gone, LastWord};
use super::window::Limit;
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
    /// At `max_channels` (or, after 2^31 opens, no free id).
    #[error("too many channels (max_channels reached)")]
    TooMany,
    /// The receive budget cannot hold another channel's starting window.
    #[error("no receive memory left for another channel (recv_budget)")]
    NoMemory,
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
        let window = match self.admit(kind, false) {
            Ok(w) => w,
            Err(Limit::Memory) => {
                self.stats.open_no_memory += 1;
                return Err(OpenError::NoMemory);
            }
            Err(_) => {
                self.stats.open_too_many += 1;
                return Err(OpenError::TooMany);
            }
        };
        let Some(id) = self.alloc_local_id() else {
            self.stats.open_too_many += 1;
            return Err(OpenError::TooMany);
        };
        let mut ch = Channel::new(kind, class, service.to_owned(), ChanState::Opening, window);
        if ch.reliable() && self.growing() {
            // The peer grants this much to every channel opened to it:
            // data (and the Close) may follow the Open at once.
            ch.peer_limit = self.peer_open_credit;
        }
        self.insert_channel(id, ch);
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
        self.budget.pending -= 1;
        if !self.growing() {
            self.widen(id);
        }
        let Some(ch) = self.channels.get(&id.0) else {
            return Err(ChannelError::UnknownChannel);
        };
        // At most what we granted: the window never exceeds the limit.
        let window = ch.window.min(u64::from(u32::MAX)) as u32;
        // Data that came with the Open is acknowledged with the answer
        // (whatever the delayed acknowledgement knew of it: a link reset
        // forgets that, and nothing re-announces a channel not accepted).
        let owed = ch.recv_offset > ch.acked_sent || ch.wants_window();
        self.ctrl.push_back(Record::OpenOk {
            chan: id.peer_view(),
            window,
        });
        if owed {
            self.mark_window(id);
        }
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
        self.refuse(id, reason);
        Ok(())
    }

    /// Answers an `Open` with `OpenReject`, kept as the channel's last word
    /// (a repeated `Open` crossing our answer gets it again, rather than
    /// being taken for a new channel).
    pub(crate) fn refuse(&mut self, id: ChannelId, reason: RejectReason) {
        let word = LastWord::Rejected(reason.code());
        self.gone.insert(id, word);
        self.ctrl.extend(Gone::records(id, word, false));
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
        let floor = 2 * self.base_window(ChannelKind::Stream);
        let ch = self.check_send(id, ChannelKind::Stream)?;
        let cap = ch.stream_capacity(limit, floor);
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

    /// Bytes a stream channel's send buffer takes now (0: wait for
    /// [`Event::Writable`](super::Event::Writable)).
    pub fn send_room(&mut self, id: ChannelId) -> Result<usize, SendError> {
        let limit = self.cfg.stream_window;
        let floor = 2 * self.base_window(ChannelKind::Stream);
        let ch = self.check_send(id, ChannelKind::Stream)?;
        let room = ch
            .stream_capacity(limit, floor)
            .saturating_sub(ch.send_buffered());
        Ok(room.min(usize::MAX as u64) as usize)
    }

    /// Queues one whole message. `Err(Blocked)` when the send buffer cannot
    /// take it now.
    pub fn send_message(&mut self, id: ChannelId, msg: Bytes) -> Result<(), SendError> {
        let cap = self.message_capacity(id);
        let ch = self.check_send(id, ChannelKind::Message)?;
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

    /// A blocked sender on channel `id` could queue something now.
    pub(super) fn has_send_room(&self, id: ChannelId) -> bool {
        let Some(c) = self.channels.get(&id.0) else {
            return false;
        };
        let cap = match c.kind {
            ChannelKind::Stream => c.stream_capacity(
                self.cfg.stream_window,
                2 * self.base_window(ChannelKind::Stream),
            ),
            ChannelKind::Message => self.message_capacity(id),
            ChannelKind::Datagram => return true,
        };
        c.send_buffered() < cap
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

    /// Bytes of datagrams queued on channel `id` and not yet taken into a
    /// transmit. With `wake_at`, when more than that is queued, an
    /// [`Event::Writable`](super::Event::Writable) follows once the queue
    /// has drained to `wake_at` or below: a sender that keeps its own
    /// queue (the TUN front-end's fair queue) hands packets over only
    /// while this one is short, and learns when to hand over more.
    pub fn datagram_queued(
        &mut self,
        id: ChannelId,
        wake_at: Option<usize>,
    ) -> Result<usize, SendError> {
        let ch = self.check_send(id, ChannelKind::Datagram)?;
        let queued = ch.dgram_bytes;
        ch.dgram_wake_at = wake_at.filter(|&w| queued > w);
        Ok(queued)
    }

    /// Units (bytes plus one for the end) of the largest message channel
    /// `id` may send, and so the most its send buffer holds: our own
    /// `message_window` (the peer must not size our memory), and no more
    /// than the peer accepts: its Hello says, or for an older peer the
    /// window of its `Open`/`OpenOk`; before either, ours (an `OpenOk`
    /// then aborts a channel holding a message too large).
    pub(super) fn message_capacity(&self, id: ChannelId) -> u64 {
        let own = self.cfg.message_window;
        match self.channels.get(&id.0) {
            _ if self.peer_max_message > 0 && self.growing() => {
                own.min(self.peer_max_message.saturating_add(1))
            }
            Some(c) if c.peer_window > 0 && !self.growing() => own.min(c.peer_window),
            _ => own,
        }
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
        // What the application took no longer holds budget.
        self.sync_held(id);
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
    /// when the peer finished too. A reliable channel still waiting for an
    /// answer to its `Open` does the same (what it sent before the answer
    /// is delivered if the peer accepts); any other unanswered channel is
    /// reset.
    pub fn release(&mut self, id: ChannelId) -> Result<(), ChannelError> {
        let ch = self.chan_mut(id)?;
        let early = ch.state == ChanState::Opening && ch.reliable();
        if ch.state != ChanState::Open && !early {
            return self.reset(id);
        }
        ch.fin_queued = true;
        ch.released = true;
        ch.consumed = ch.recv_offset;
        ch.discard_received();
        if ch.peer_fin.is_some() {
            ch.fin_delivered = true;
        }
        let wants = ch.wants_window();
        self.sync_held(id);
        if wants {
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
        self.abort(id);
        Ok(())
    }

    /// Removes a channel and tells the peer with a `Reset`, kept as the
    /// channel's last word until the peer is known to have read it.
    pub(crate) fn abort(&mut self, id: ChannelId) {
        self.remove_channel(id);
        let word = LastWord::Reset(0);
        self.gone.insert(id, word);
        self.ctrl.extend(Gone::records(id, word, false));
    }

    /// The next free local id: ids of live channels and of channels the
    /// peer may still know are skipped, so after 2^31 opens the ids wrap
    /// around without touching a live one. `None` when all are taken.
    fn alloc_local_id(&mut self) -> Option<ChannelId> {
        for _ in 0..=self.channels.len() + self.gone.len() {
            let id = ChannelId(self.next_local);
            self.next_local = self.next_local.wrapping_add(2);
            if self.next_local < id.0 {
                self.local_wrapped = true;
            }
            if !self.channels.contains_key(&id.0) && !self.gone.contains(id) {
                return Some(id);
            }
        }
        None
    }

    /// Starts local channel ids at `id` (rounded down to even), so that
    /// tests reach the wrap of the id space without 2^31 opens.
    #[cfg(any(test, feature = "fuzz-ops"))]
    pub fn set_next_channel_id(&mut self, id: u32) {
        self.next_local = id & !1;
    }

    /// Removes a channel that is done in both directions: our `Close` went
    /// out and everything we sent was acknowledged, the peer's `Close`
    /// arrived and the application saw the end.
    pub(crate) fn maybe_gc(&mut self, id: ChannelId) {
        let done = self.channels.get(&id.0).is_some_and(|c| {
            c.fin_sent && c.acked == c.write_offset && c.peer_fin.is_some() && c.fin_delivered
        });
        if !done {
            return;
        }
        let Some(c) = self.channels.get(&id.0) else {
            return;
        };
        let reliable = c.reliable();
        let owed = reliable && (c.ack_owed || c.window_dirty || c.acked_sent < c.recv_offset);
        let final_offset = c.write_offset;
        let word = LastWord::Finished {
            final_offset,
            received: reliable.then_some(c.recv_offset),
        };
        self.remove_channel(id);
        // Nothing confirms our Close, and the peer keeps its channel until
        // it has it (and, reliable, until everything it sent is
        // acknowledged); either can be lost with the link: they are the
        // channel's last word (`gone`), datagram channels included (they
        // do not resume: the peer would keep its end forever).
        self.gone.insert(id, word);
        if owed {
            // The Close went out already; the acknowledgement goes now.
            self.ctrl.extend(
                Gone::records(id, word, false).filter(|r| !matches!(r, Record::Close { .. })),
            );
        } else {
            // Sent already (maybe on a link that is about to fail): the
            // next ping confirms it.
            let rec = Record::Close {
                chan: id.peer_view(),
                final_offset,
            };
            self.gone.sent(&rec, self.next_token);
            self.ping_wanted = true;
        }
    }
}

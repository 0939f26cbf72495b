//! Per-channel state: send and receive buffers, credits, offsets.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::wire::{ChannelKind, Class};

/// A piece of a reliable channel's byte sequence.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub offset: u64,
    pub data: Bytes,
    /// The chunk ends a message (one more unit of offset after `data`).
    pub end: bool,
}

impl Chunk {
    /// Offset just past this chunk.
    pub fn end_offset(&self) -> u64 {
        self.offset + self.data.len() as u64 + u64::from(self.end)
    }
}

/// A received payload waiting for the application.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub data: Bytes,
    /// Still a slice of the driver's receive buffer (zero-copy while the
    /// reader keeps up, but it keeps that whole buffer alive: see
    /// [`Channel::compact`]).
    pub borrowed: bool,
}

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChanState {
    /// We sent `Open`, no answer yet.
    Opening,
    /// The peer asked; the application has not accepted or rejected yet.
    PendingAccept,
    /// Both sides agreed.
    Open,
}

/// Per-channel counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Payload bytes sent (first transmissions).
    pub bytes_tx: u64,
    /// Payload bytes received.
    pub bytes_rx: u64,
    /// Records (frames) sent.
    pub records_tx: u64,
    /// Records (frames) received.
    pub records_rx: u64,
    /// Datagrams dropped on send (queue full) or receive (reader too slow).
    pub drops: u64,
    /// Payload bytes sent again after a resume.
    pub bytes_retransmitted: u64,
    /// Our receive window now (see `session::window`).
    pub recv_window: u64,
    /// What the channel holds against the receive budget now.
    pub recv_held: u64,
}

#[derive(Debug)]
pub(crate) struct Channel {
    pub kind: ChannelKind,
    pub class: Class,
    pub service: String,
    pub state: ChanState,
    pub stats: ChannelStats,

    // ---- send side ----
    /// Queued, not yet sent.
    pub pending: VecDeque<Chunk>,
    /// Sent, not yet acknowledged (kept for resume).
    pub unacked: VecDeque<Chunk>,
    /// Offset of the next byte to send.
    pub send_offset: u64,
    /// Offset after the last byte queued.
    pub write_offset: u64,
    /// Everything below was acknowledged by the peer.
    pub acked: u64,
    /// Highest offset ever sent (tells first sends from resends).
    pub high_water: u64,
    /// The peer's credit: we may send below this offset.
    pub peer_limit: u64,
    /// The peer's receive window (largest message it can take).
    pub peer_window: u64,
    /// `finish` called: a `Close` follows the data.
    pub fin_queued: bool,
    /// The `Close` went out.
    pub fin_sent: bool,
    /// Datagrams waiting to be sent, and their total size.
    pub dgrams: VecDeque<Bytes>,
    pub dgram_bytes: usize,
    /// Emit `Writable` once `dgram_bytes` drained to this (armed by
    /// `Session::datagram_queued`).
    pub dgram_wake_at: Option<usize>,
    /// A send was refused for lack of room: tell the app when there is some.
    pub blocked: bool,

    // ---- receive side ----
    /// Next offset expected from the peer.
    pub recv_offset: u64,
    /// Bytes the application took.
    pub consumed: u64,
    /// The credit limit we last advertised.
    pub advertised: u64,
    /// The `received` we last acknowledged.
    pub acked_sent: u64,
    /// Our receive window: the credit kept ahead of what the application
    /// took. It starts at `min_window` and grows with use (see
    /// `session::window`); for a datagram channel, its queue limit.
    pub window: u64,
    /// What this channel holds against the session's budget now (see
    /// [`Channel::held_now`]).
    pub held: u64,
    /// The window is above the kind's starting window (counted in the
    /// budget's fair shares).
    pub grown: bool,
    /// The peer used all the credit we gave (it waits for more) since the
    /// last grant that gave it more.
    pub hit_limit: bool,
    /// Something arrived since the last idle check (`session::window`).
    pub rx_tick: bool,
    /// Waiting for budget to complete a message (in the budget's list).
    pub starved: bool,
    /// When we last granted credit.
    pub last_grant: Option<std::time::Instant>,
    /// Received stream chunks / complete messages / datagrams.
    pub recv_queue: VecDeque<Held>,
    pub recv_bytes: usize,
    /// The message being reassembled.
    pub partial: Vec<Held>,
    pub partial_len: usize,
    /// Payloads in `recv_queue` and `partial` that are borrowed.
    pub borrowed: usize,
    /// The peer finished at this offset.
    pub peer_fin: Option<u64>,
    /// The application saw the end of the stream.
    pub fin_delivered: bool,
    /// The application is gone: arriving data is discarded (and credited).
    pub released: bool,
    /// A `Readable` event is outstanding.
    pub readable_signalled: bool,

    // ---- scheduling ----
    pub in_active: bool,
    /// Counted as stalled on the peer's credit (until it sends again).
    pub credit_stalled: bool,
    pub window_dirty: bool,
    /// Data arrived since our last acknowledgement.
    pub ack_owed: bool,
}

impl Channel {
    pub fn new(
        kind: ChannelKind,
        class: Class,
        service: String,
        state: ChanState,
        window: u64,
    ) -> Self {
        Self {
            kind,
            class,
            service,
            state,
            stats: ChannelStats::default(),
            pending: VecDeque::new(),
            unacked: VecDeque::new(),
            send_offset: 0,
            write_offset: 0,
            acked: 0,
            high_water: 0,
            peer_limit: 0,
            peer_window: 0,
            fin_queued: false,
            fin_sent: false,
            dgrams: VecDeque::new(),
            dgram_bytes: 0,
            dgram_wake_at: None,
            blocked: false,
            recv_offset: 0,
            consumed: 0,
            advertised: window,
            acked_sent: 0,
            window,
            held: 0,
            grown: false,
            hit_limit: false,
            rx_tick: false,
            starved: false,
            last_grant: None,
            recv_queue: VecDeque::new(),
            recv_bytes: 0,
            partial: Vec::new(),
            partial_len: 0,
            borrowed: 0,
            peer_fin: None,
            fin_delivered: false,
            released: false,
            readable_signalled: false,
            in_active: false,
            credit_stalled: false,
            window_dirty: false,
            ack_owed: false,
        }
    }

    pub fn reliable(&self) -> bool {
        self.kind != ChannelKind::Datagram
    }

    /// Bytes held for sending (queued and unacknowledged).
    pub fn send_buffered(&self) -> u64 {
        self.write_offset - self.acked
    }

    /// Most bytes a stream's send buffer holds: twice the credit the peer
    /// gives us now (more could not be in flight anyway, and a sender with
    /// more queued than credit shows the peer that its window limits us),
    /// at least `floor`, and never more than our own `limit`, whatever the
    /// peer grants (up to 4 GiB: it must not size our memory).
    pub fn stream_capacity(&self, limit: u64, floor: u64) -> u64 {
        let credit = self.peer_limit.saturating_sub(self.acked);
        credit.saturating_mul(2).max(floor).min(limit)
    }

    /// What this channel holds against the session's budget: for a
    /// reliable channel its window, or the credit it granted beyond what
    /// the application took if that is more (credit cannot be taken back,
    /// so a window that shrank holds its old credit until the peer used
    /// it); for a datagram channel what it buffers.
    pub fn held_now(&self) -> u64 {
        if self.reliable() {
            let granted = self.advertised.saturating_sub(self.consumed);
            self.window.max(granted)
        } else {
            self.recv_bytes as u64
        }
    }

    /// A message is being reassembled, the application took everything
    /// else, and the peer has no credit left to finish it: only a larger
    /// window lets it complete (the application cannot consume a part).
    pub fn stuck_message(&self) -> bool {
        self.kind == ChannelKind::Message
            && !self.partial.is_empty()
            && self.recv_queue.is_empty()
            && self.advertised.saturating_sub(self.recv_offset) <= 1
    }

    /// Is there something the scheduler could send right now? A reliable
    /// channel still waiting for its `OpenOk` sends within the credit the
    /// peer grants every channel it is opened (`open_credit` of its Hello;
    /// the `Open` goes out first, with the control records).
    pub fn sendable(&self) -> bool {
        let early = self.state == ChanState::Opening && self.reliable();
        if self.state != ChanState::Open && !early {
            return false;
        }
        if self.kind == ChannelKind::Datagram {
            return !self.dgrams.is_empty() || (self.fin_queued && !self.fin_sent);
        }
        match self.pending.front() {
            // Exactly when `take_chunk` would take something: a channel
            // that looks sendable but is not would be re-queued forever.
            Some(_) => self.next_chunk(usize::MAX).is_some(),
            None => self.fin_queued && !self.fin_sent,
        }
    }

    /// How `take_chunk(max)` would cut the next chunk: its payload length
    /// and whether it is the whole front chunk (a message's end included).
    /// `None` when the credit left cannot carry a single unit of it: a
    /// message's end only travels with at least its last byte (or alone,
    /// for an empty message), never in front of them.
    fn next_chunk(&self, max: usize) -> Option<(usize, bool)> {
        let credit = self.peer_limit.saturating_sub(self.send_offset);
        let front = self.pending.front()?;
        let len = front.data.len();
        if len as u64 + u64::from(front.end) <= credit && len <= max {
            return Some((len, true));
        }
        // A strict prefix: the end (if any) stays with the rest.
        let cap = if front.end {
            len.saturating_sub(1)
        } else {
            len
        };
        let n = cap.min(max).min(credit.min(usize::MAX as u64) as usize);
        (n > 0).then_some((n, false))
    }

    /// Queues reliable bytes. The end of a message takes one unit of the
    /// offset space of its own, so every message (an empty one too) has a
    /// distinct extent and a resume can never deliver one twice.
    pub fn push_data(&mut self, data: Bytes, end: bool) {
        let units = data.len() as u64 + u64::from(end);
        self.pending.push_back(Chunk {
            offset: self.write_offset,
            data,
            end,
        });
        self.write_offset += units;
    }

    /// Takes the next chunk to send, at most `max` bytes and within credit.
    pub fn take_chunk(&mut self, max: usize) -> Option<Chunk> {
        let (n, whole) = self.next_chunk(max)?;
        let chunk = if whole {
            self.pending.pop_front()?
        } else {
            let front = self.pending.front_mut()?;
            let data = front.data.split_to(n);
            let c = Chunk {
                offset: front.offset,
                data,
                end: false,
            };
            front.offset += n as u64;
            c
        };
        if chunk.end_offset() <= self.high_water {
            self.stats.bytes_retransmitted += chunk.data.len() as u64;
        } else {
            self.stats.bytes_tx += chunk.data.len() as u64;
        }
        self.stats.records_tx += 1;
        self.send_offset = chunk.end_offset();
        self.high_water = self.high_water.max(self.send_offset);
        self.unacked.push_back(chunk.clone());
        Some(chunk)
    }

    /// The peer acknowledged everything below `received`: free it.
    pub fn ack(&mut self, received: u64) {
        if received <= self.acked {
            return;
        }
        self.acked = received;
        while let Some(c) = self.unacked.front_mut() {
            if c.end_offset() <= received {
                self.unacked.pop_front();
            } else {
                if c.offset < received {
                    let cut = ((received - c.offset) as usize).min(c.data.len());
                    let _ = c.data.split_to(cut);
                    c.offset = received;
                }
                break;
            }
        }
    }

    /// The link went down: what was sent and not acknowledged may be lost
    /// with it. Sending starts again at the last acknowledged offset, which
    /// the peer certainly has, so the next link never carries a byte past
    /// a gap (the peer drops what it already had, and its resume `Window`
    /// skips us ahead: see [`resume_at`](Self::resume_at)).
    pub fn link_down(&mut self) {
        while let Some(c) = self.unacked.pop_back() {
            self.pending.push_front(c);
        }
        self.send_offset = self.acked;
        if self.acked < self.write_offset {
            // The Close follows the data again.
            self.fin_sent = false;
        }
    }

    /// The peer's resume `Window`: it has everything below `received`.
    /// What we sent since the link came up is in order behind that, so
    /// only what is still queued below `received` is skipped, and the
    /// `Close` goes out again (it may have been lost).
    pub fn resume_at(&mut self, received: u64) {
        self.ack(received);
        while let Some(c) = self.pending.front_mut() {
            if c.end_offset() <= received {
                self.pending.pop_front();
            } else {
                if c.offset < received {
                    let cut = ((received - c.offset) as usize).min(c.data.len());
                    let _ = c.data.split_to(cut);
                    c.offset = received;
                }
                break;
            }
        }
        self.send_offset = self.send_offset.max(received);
        self.fin_sent = false;
    }

    /// Queues a received payload (a stream chunk, a whole message, a
    /// datagram) for the application.
    pub fn hold(&mut self, h: Held) {
        self.borrowed += usize::from(h.borrowed);
        self.recv_queue.push_back(h);
    }

    fn pop_held(&mut self) -> Option<Bytes> {
        let h = self.recv_queue.pop_front()?;
        self.borrowed -= usize::from(h.borrowed);
        Some(h.data)
    }

    /// Takes received stream bytes (at most `max`).
    pub fn take_stream(&mut self, max: usize) -> Option<Bytes> {
        let front = self.recv_queue.front_mut()?;
        let b = if front.data.len() <= max {
            self.pop_held()?
        } else {
            front.data.split_to(max)
        };
        self.recv_bytes -= b.len();
        self.consumed += b.len() as u64;
        Some(b)
    }

    /// Takes one received message or datagram.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        let b = self.pop_held()?;
        if self.reliable() {
            self.recv_bytes -= b.len();
            // The message plus its end unit.
            self.consumed += b.len() as u64 + 1;
        } else {
            self.recv_bytes -= b.len() + super::input::DGRAM_OVERHEAD;
        }
        Some(b)
    }

    /// Adds a piece of a message; returns the whole message at its end.
    pub fn assemble(&mut self, piece: Held, end: bool) -> Option<Held> {
        if !end {
            self.partial_len += piece.data.len();
            self.borrowed += usize::from(piece.borrowed);
            self.partial.push(piece);
            return None;
        }
        if self.partial.is_empty() {
            return Some(piece);
        }
        let mut m = BytesMut::with_capacity(self.partial_len + piece.data.len());
        for p in self.partial.drain(..) {
            self.borrowed -= usize::from(p.borrowed);
            m.extend_from_slice(&p.data);
        }
        m.extend_from_slice(&piece.data);
        self.partial_len = 0;
        Some(Held {
            data: m.freeze(),
            borrowed: false,
        })
    }

    /// Drops everything received and not yet taken.
    pub fn discard_received(&mut self) {
        self.recv_queue.clear();
        self.recv_bytes = 0;
        self.partial.clear();
        self.partial_len = 0;
        self.borrowed = 0;
    }

    /// Copies borrowed payloads into memory of their own, so the driver's
    /// receive buffers they were slices of can be reused (quinn-proto's
    /// `Assembler::defragment`). Returns the bytes copied.
    pub fn compact(&mut self) -> usize {
        if self.borrowed == 0 {
            return 0;
        }
        let mut copied = 0;
        for h in self.recv_queue.iter_mut().chain(self.partial.iter_mut()) {
            if h.borrowed {
                h.data = Bytes::copy_from_slice(&h.data);
                h.borrowed = false;
                copied += h.data.len();
            }
        }
        self.borrowed = 0;
        copied
    }

    /// Should a `Window` (credit + ack) go out? When the application took
    /// a quarter window, when half a window is unacknowledged, and when a
    /// message cannot complete without more credit (nothing else would
    /// ask: the application cannot take a part of it), unless that waits
    /// for budget already.
    pub fn wants_window(&self) -> bool {
        if !self.reliable() || self.state != ChanState::Open {
            return false;
        }
        let limit = self.consumed + self.window;
        limit.saturating_sub(self.advertised) >= self.window / 4
            || self.recv_offset.saturating_sub(self.acked_sent) >= self.window / 2
            || (!self.starved && self.stuck_message())
    }
}

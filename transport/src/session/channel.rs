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
    /// Our receive window (reserved from the session's budget).
    pub window: u64,
    /// Received stream chunks / complete messages / datagrams.
    pub recv_queue: VecDeque<Bytes>,
    pub recv_bytes: usize,
    /// The message being reassembled.
    pub partial: Vec<Bytes>,
    pub partial_len: usize,
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
            blocked: false,
            recv_offset: 0,
            consumed: 0,
            advertised: window,
            acked_sent: 0,
            window,
            recv_queue: VecDeque::new(),
            recv_bytes: 0,
            partial: Vec::new(),
            partial_len: 0,
            peer_fin: None,
            fin_delivered: false,
            released: false,
            readable_signalled: false,
            in_active: false,
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

    /// Is there something the scheduler could send right now?
    pub fn sendable(&self) -> bool {
        if self.state != ChanState::Open {
            return false;
        }
        if self.kind == ChannelKind::Datagram {
            return !self.dgrams.is_empty() || (self.fin_queued && !self.fin_sent);
        }
        match self.pending.front() {
            Some(c) => c.offset < self.peer_limit,
            None => self.fin_queued && !self.fin_sent,
        }
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
        let credit = self.peer_limit.saturating_sub(self.send_offset);
        let front = self.pending.front_mut()?;
        let len = front.data.len();
        // A message's end takes one unit of credit too.
        let whole = len as u64 + u64::from(front.end) <= credit && len <= max;
        let n = if whole {
            len
        } else {
            // A strict prefix: the end (if any) stays with the rest.
            let cap = if front.end {
                len.saturating_sub(1)
            } else {
                len
            };
            cap.min(max).min(credit.min(usize::MAX as u64) as usize)
        };
        if n == 0 && !whole {
            return None;
        }
        let chunk = if whole {
            self.pending.pop_front()?
        } else {
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

    /// Resume: the peer has everything below `received`; send the rest again.
    pub fn rewind(&mut self, received: u64) {
        self.ack(received);
        while let Some(c) = self.unacked.pop_back() {
            self.pending.push_front(c);
        }
        self.send_offset = received;
        if self.fin_sent {
            self.fin_sent = false;
        }
    }

    /// Takes received stream bytes (at most `max`).
    pub fn take_stream(&mut self, max: usize) -> Option<Bytes> {
        let front = self.recv_queue.front_mut()?;
        let b = if front.len() <= max {
            self.recv_queue.pop_front()?
        } else {
            front.split_to(max)
        };
        self.recv_bytes -= b.len();
        self.consumed += b.len() as u64;
        Some(b)
    }

    /// Takes one received message or datagram.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        let b = self.recv_queue.pop_front()?;
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
    pub fn assemble(&mut self, data: Bytes, end: bool) -> Option<Bytes> {
        if !end {
            self.partial_len += data.len();
            self.partial.push(data);
            return None;
        }
        if self.partial.is_empty() {
            return Some(data);
        }
        let mut m = BytesMut::with_capacity(self.partial_len + data.len());
        for p in self.partial.drain(..) {
            m.extend_from_slice(&p);
        }
        m.extend_from_slice(&data);
        self.partial_len = 0;
        Some(m.freeze())
    }

    /// Should a `Window` (credit + ack) go out?
    pub fn wants_window(&self) -> bool {
        if !self.reliable() || self.state != ChanState::Open {
            return false;
        }
        let limit = self.consumed + self.window;
        limit.saturating_sub(self.advertised) >= self.window / 4
            || self.recv_offset.saturating_sub(self.acked_sent) >= self.window / 2
    }
}

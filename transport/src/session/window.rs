//! Receive windows that grow with use, and the memory they hold.
//!
//! A channel's receive window is the credit it keeps granted ahead of what
//! its application took. It starts at `min_window` (64 KiB: a channel
//! costs little to open) and doubles, up to `stream_window` or
//! `message_window`, when it is what limits the channel, as TCP's receive
//! buffer auto-tuning and QUIC's flow-control window growth do:
//!
//! * the peer used all the credit it had (it waits for us: `hit_limit`),
//! * the application keeps up: it holds at most half a window unread, and
//!   this grant comes within two round trips of the previous one (a quarter
//!   window was taken that fast; a slow reader's grants are far apart).
//!
//! # What the budget holds
//! Each channel holds against `recv_budget` its window, or the credit it
//! granted beyond what its application took if that is more (credit once
//! granted cannot be taken back: a window that shrank holds its old credit
//! until the peer used it, and is granted nothing more until then); a
//! datagram channel holds what it buffers. So the budget bounds what is
//! buffered or may arrive, not what channels could grow to. A channel
//! grows only from what is free, and a new channel is refused (`NoMemory`)
//! when not even its starting window is.
//!
//! # Fair shares
//! What the channels at their starting window do not hold is shared
//! equally between the channels that grew (and one that wants to): a
//! channel grows to at most that share, and one above it (it grew while
//! fewer were moving) shrinks to it at its next grant, freeing budget as
//! its peer uses the credit it has. No channel falls below its starting
//! window, so none starves; none takes more than its share.
//!
//! # Idle channels
//! A channel that received nothing for `window_idle` halves its window,
//! down to the start: a busy channel keeps what it grew, an idle one gives
//! it back as soon as its peer uses the credit it still holds.
//!
//! # Messages
//! A message is delivered whole, so a message larger than the window
//! cannot complete by consumption: its channel grows while the message is
//! stuck, whatever the timing. When fair shares or the budget stop that,
//! one channel at a time may complete its message from a reserve of
//! `message_window` that nothing else uses (the *completer*): its credit
//! then advances a window at a time past what arrived, up to a message
//! window past what the application took. So a message of up to
//! `message_window - 1` bytes, the largest the Hello announces, always
//! completes; others wait their turn (`starved`). The reserve is whole
//! again once the completer's application took its message: it was
//! granted at most a window beyond it.
//!
//! # Older peers
//! A peer whose Hello does not announce growing windows (`CAP_WINDOWS`)
//! takes the window of `Open`/`OpenOk` as the largest message and sizes
//! its sends by it: toward it, windows are granted whole when announced
//! and never shrink, as that build expects.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{ChannelId, ChannelKind, RejectReason, Session};

/// A grant within this many round trips of the previous one means the
/// application takes a quarter window that fast: the window, not the
/// reader, limits the channel (Chromium's QUIC auto-tuning uses the same
/// two round trips).
const GROW_RTTS: u32 = 2;

/// Round trips below this are not measured meaningfully (the pump's wake
/// ups take tens of µs), and before the first ping there is no figure.
const RTT_FLOOR: Duration = Duration::from_micros(100);

/// The session-wide receive budget and what holds it.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// `recv_budget`.
    pub total: u64,
    /// Held by all channels (see [`Channel::held_now`](super::channel::Channel::held_now)).
    pub held: u64,
    /// Held by the channels that grew.
    pub held_grown: u64,
    /// Channels whose window is above their starting window.
    pub grown: usize,
    /// Kept free for the one message completing beyond fair shares.
    pub reserve: u64,
    /// The channel completing a message from the reserve.
    pub completer: Option<ChannelId>,
    /// Channels whose message waits for the reserve, in order.
    pub starved: VecDeque<ChannelId>,
    /// Channels the peer opened that wait for accept or reject.
    pub pending: usize,
}

impl Budget {
    /// Not held by any channel.
    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.held)
    }

    /// Free beyond the reserve: what opening and growing may use.
    pub fn spare(&self) -> u64 {
        self.free().saturating_sub(self.reserve)
    }
}

/// Which limit refused a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `max_channels`.
    Channels,
    /// `recv_budget`.
    Memory,
    /// `max_pending_opens`.
    Backlog,
}

impl Limit {
    pub fn reason(self) -> RejectReason {
        match self {
            Limit::Channels => RejectReason::TooMany,
            Limit::Memory => RejectReason::NoMemory,
            Limit::Backlog => RejectReason::Backlog,
        }
    }
}

impl Session {
    /// The window a channel of `kind` starts with (and never goes below).
    pub(super) fn base_window(&self, kind: ChannelKind) -> u64 {
        match kind {
            ChannelKind::Stream => self.cfg.min_window.min(self.cfg.stream_window),
            ChannelKind::Message => self.cfg.min_window.min(self.cfg.message_window),
            ChannelKind::Datagram => self.cfg.dgram_recv_queue as u64,
        }
    }

    /// The largest window of a channel of `kind`.
    pub(super) fn max_window(&self, kind: ChannelKind) -> u64 {
        match kind {
            ChannelKind::Stream => self.cfg.stream_window,
            ChannelKind::Message => self.cfg.message_window,
            ChannelKind::Datagram => self.cfg.dgram_recv_queue as u64,
        }
    }

    /// Windows start small and grow: both sides announce it (before the
    /// peer's Hello we assume so, and widen at the first announcement to
    /// a peer that turns out not to; see [`widen`](Self::widen)).
    pub(super) fn growing(&self) -> bool {
        self.cfg.grow_windows && self.peer_grows
    }

    /// Whether a new channel fits the limits; its starting window if so.
    pub(super) fn admit(&self, kind: ChannelKind, remote: bool) -> Result<u64, Limit> {
        if self.channels.len() >= self.cfg.max_channels {
            return Err(Limit::Channels);
        }
        if remote && self.budget.pending >= self.cfg.max_pending_opens {
            return Err(Limit::Backlog);
        }
        if kind == ChannelKind::Datagram {
            // Holds only what it buffers, and drops what does not fit.
            return Ok(self.base_window(kind));
        }
        let w = if self.cfg.grow_windows {
            self.base_window(kind)
        } else {
            self.max_window(kind)
        };
        if self.budget.spare() < w {
            return Err(Limit::Memory);
        }
        Ok(w)
    }

    /// Adds a channel and what it holds to the budget.
    pub(super) fn insert_channel(&mut self, id: ChannelId, c: super::channel::Channel) {
        if c.state == super::channel::ChanState::PendingAccept {
            self.budget.pending += 1;
        }
        self.channels.insert(id.0, c);
        self.sync_held(id);
    }

    /// Removes a channel and gives what it held back to the budget.
    pub(super) fn remove_channel(&mut self, id: ChannelId) {
        let Some(c) = self.channels.remove(&id.0) else {
            return;
        };
        self.retired.retire(c.kind, c.class, &c.service, &c.stats);
        self.budget.held -= c.held;
        if c.grown {
            self.budget.held_grown -= c.held;
            self.budget.grown -= 1;
        }
        if c.state == super::channel::ChanState::PendingAccept {
            self.budget.pending -= 1;
        }
        if self.budget.completer == Some(id) {
            self.budget.completer = None;
        }
        self.wake_starved();
    }

    /// Brings the budget up to date with what channel `id` holds now; call
    /// after its window, credit, consumption or buffer changed.
    pub(super) fn sync_held(&mut self, id: ChannelId) {
        let base = match self.channels.get(&id.0) {
            Some(c) => self.base_window(c.kind),
            None => return,
        };
        let Some(c) = self.channels.get_mut(&id.0) else {
            return;
        };
        let held = c.held_now();
        let grown = c.reliable() && c.window > base;
        let b = &mut self.budget;
        b.held = b.held - c.held + held;
        if c.grown {
            b.held_grown -= c.held;
            b.grown -= 1;
        }
        if grown {
            b.held_grown += held;
            b.grown += 1;
        }
        c.held = held;
        c.grown = grown;
        if b.completer.is_none() && !b.starved.is_empty() {
            self.wake_starved();
        }
    }

    /// A message waiting for the reserve gets its turn once the reserve is
    /// free and nobody completes from it.
    fn wake_starved(&mut self) {
        if self.budget.completer.is_some() || self.budget.free() < self.budget.reserve {
            return;
        }
        while let Some(id) = self.budget.starved.pop_front() {
            if let Some(c) = self.channels.get_mut(&id.0) {
                if c.starved {
                    c.starved = false;
                    self.mark_window(id);
                    return;
                }
            }
        }
    }

    /// The largest window channel `id` may have: an equal share of what the
    /// channels at their starting window leave, among those that grew (and
    /// this one, if it has not yet).
    fn fair_share(&self, id: ChannelId) -> u64 {
        let b = &self.budget;
        let (mine, grown) = self
            .channels
            .get(&id.0)
            .map_or((0, false), |c| (c.held, c.grown));
        let small = b.held - b.held_grown - if grown { 0 } else { mine };
        let pool = b.total.saturating_sub(b.reserve).saturating_sub(small);
        pool / (b.grown + usize::from(!grown)).max(1) as u64
    }

    /// Sets channel `id`'s credit before a `Window` goes out: grows or
    /// shrinks its window (module doc), then grants up to its window past
    /// what the application took (never less than granted before).
    pub(super) fn grant(&mut self, id: ChannelId, now: Instant) {
        let Some(c) = self.channels.get(&id.0) else {
            return;
        };
        let (base, max) = (self.base_window(c.kind), self.max_window(c.kind));
        let growing = self.growing();
        let fair = self.fair_share(id).max(base);
        let spare = self.budget.spare();
        let rtt = self.stats.rtt.unwrap_or(RTT_FLOOR).max(RTT_FLOOR);
        let Some(c) = self.channels.get_mut(&id.0) else {
            return;
        };
        let stuck = c.stuck_message();
        let keeps_up = c.recv_bytes as u64 <= c.window / 2;
        let frequent = c
            .last_grant
            .is_none_or(|t| now.saturating_duration_since(t) < rtt * GROW_RTTS);
        let old_window = c.window;
        if growing {
            let mut w = c.window;
            if (c.hit_limit || stuck) && keeps_up && (frequent || stuck) {
                // Never past what is spare; a shrunk share comes next.
                let room = c.held.saturating_add(spare);
                w = (w.saturating_mul(2)).min(max).min(room).max(w);
            }
            c.window = w.min(fair);
        }
        c.advertised = c.advertised.max(c.consumed + c.window);
        if c.stuck_message() {
            if growing {
                self.complete_from_reserve(id);
            } else {
                // Windows are whole: a message larger than ours breaks
                // the peer's own limit. Nothing to grant; ask no more.
                c.starved = true;
            }
        }
        let Some(c) = self.channels.get_mut(&id.0) else {
            return;
        };
        if keeps_up {
            // The exhaustion was answered (or the reader was too slow to
            // tell); a reader still behind keeps it for its next grant.
            c.hit_limit = false;
        }
        c.last_grant = Some(now);
        if c.window > old_window {
            self.stats.window_grows += 1;
            self.decay_due.get_or_insert(now + self.cfg.window_idle);
        } else if c.window < old_window {
            self.stats.window_shrinks += 1;
        }
        self.sync_held(id);
    }

    /// Channel `id` cannot complete its message within its fair share:
    /// it completes from the reserve if that is free, else waits its turn.
    fn complete_from_reserve(&mut self, id: ChannelId) {
        let max = self.cfg.message_window;
        let free = self.budget.free();
        let mine = self.budget.completer == Some(id);
        let Some(c) = self.channels.get_mut(&id.0) else {
            return;
        };
        let ceiling = c.consumed + max;
        let need = ceiling.saturating_sub(c.advertised);
        if mine || (self.budget.completer.is_none() && free >= need) {
            self.budget.completer = Some(id);
            let next = (c.recv_offset + c.window).min(ceiling);
            c.advertised = c.advertised.max(next);
        } else if !c.starved {
            c.starved = true;
            self.budget.starved.push_back(id);
        }
    }

    /// A message of channel `id` completed: if it was the completer, the
    /// reserve is for the next one (once its application took this one).
    pub(super) fn message_completed(&mut self, id: ChannelId) {
        if self.budget.completer == Some(id) {
            self.budget.completer = None;
            self.wake_starved();
        }
    }

    /// Toward a peer without growing windows, or with them off here: the
    /// channel's window becomes whole (as far as the budget allows) before
    /// it is announced in an `Open` or `OpenOk`.
    pub(super) fn widen(&mut self, id: ChannelId) {
        let spare = self.budget.spare();
        let Some(c) = self.channels.get(&id.0) else {
            return;
        };
        if !c.reliable() {
            return;
        }
        let max = self.max_window(c.kind);
        let Some(c) = self.channels.get_mut(&id.0) else {
            return;
        };
        let target = max.min(c.held.saturating_add(spare));
        if target > c.window {
            c.window = target;
            c.advertised = c.advertised.max(c.consumed + c.window);
            self.sync_held(id);
        }
    }

    /// The idle check (every `window_idle`): channels that received
    /// nothing since the last one halve their window, down to the start.
    pub(super) fn decay_windows(&mut self, now: Instant) {
        self.decay_due = None;
        if !self.growing() {
            return;
        }
        let mut idle = Vec::new();
        for (id, c) in self.channels.iter_mut() {
            if c.grown && !c.rx_tick && self.budget.completer != Some(ChannelId(*id)) {
                idle.push(ChannelId(*id));
            }
            c.rx_tick = false;
        }
        for id in idle {
            let Some(c) = self.channels.get(&id.0) else {
                continue;
            };
            let base = self.base_window(c.kind);
            if let Some(c) = self.channels.get_mut(&id.0) {
                c.window = (c.window / 2).max(base);
                self.stats.window_shrinks += 1;
            }
            self.sync_held(id);
        }
        if self.budget.grown > 0 {
            self.decay_due = Some(now + self.cfg.window_idle);
        }
    }
}

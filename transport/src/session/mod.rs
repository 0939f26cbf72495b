//! The sans-IO session: one per cable, over one device byte stream.
//!
//! # Call contract
//!
//! A [`Session`] never touches a device, a clock or a thread. The driver (the
//! pump, a test harness, a fuzzer) feeds it and drains it:
//!
//! * **Link:** after opening the device call [`handle_link_up`]; when the
//!   device fails (ENXIO, EOF, a fault returned by any `handle_*`) close it,
//!   call [`handle_link_down`], reopen, and call [`handle_link_up`] again.
//!   Reliable channels survive: the handshake on the new link tells both
//!   sides whether the peer is the same session, and if so every stream and
//!   message channel resumes where the peer's receiver stopped.
//! * **Inputs:** [`handle_input`] with the bytes read from the device (any
//!   split is fine; complete batches are consumed, the rest stays in the
//!   buffer); [`handle_timeout`] when the instant from [`poll_timeout`] has
//!   passed.
//! * **Application commands:** [`open`], [`accept`], [`reject`], [`send`],
//!   [`send_message`], [`send_datagram`], [`recv`], [`recv_message`],
//!   [`recv_datagram`], [`finish`], [`reset`], [`close`].
//! * **Outputs**, to drain after every input or command, in this order:
//!   1. [`poll_transmit`] until `None`: bytes to write to the device, as
//!      segments for one `writev` (a short write is fine: keep the rest of
//!      the [`Transmit`] and write it before asking for more);
//!   2. [`poll_event`] until `None`: what the application should learn;
//!   3. [`poll_timeout`]: when to call [`handle_timeout`] next.
//!
//! Any `handle_*` returning an error means the byte stream can no longer be
//! trusted (corruption, protocol violation, idle timeout): treat it as a link
//! fault as above. Nothing in here panics on peer input.
//!
//! [`handle_link_up`]: Session::handle_link_up
//! [`handle_link_down`]: Session::handle_link_down
//! [`handle_input`]: Session::handle_input
//! [`handle_timeout`]: Session::handle_timeout
//! [`poll_timeout`]: Session::poll_timeout
//! [`poll_transmit`]: Session::poll_transmit
//! [`poll_event`]: Session::poll_event
//! [`open`]: Session::open
//! [`accept`]: Session::accept
//! [`reject`]: Session::reject
//! [`send`]: Session::send
//! [`send_message`]: Session::send_message
//! [`send_datagram`]: Session::send_datagram
//! [`recv`]: Session::recv
//! [`recv_message`]: Session::recv_message
//! [`recv_datagram`]: Session::recv_datagram
//! [`finish`]: Session::finish
//! [`reset`]: Session::reset
//! [`close`]: Session::close
//! [`Transmit`]: crate::wire::Transmit

mod api;
mod channel;
mod config;
mod input;
mod output;
#[cfg(test)]
mod regressions;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use self::channel::ChannelStats;
pub use self::config::SessionConfig;
use crate::wire::{BatchDecoder, DecodeError, Record, TransmitBuilder};
pub use crate::wire::{ChannelKind, Class};
use channel::Channel;

/// A channel, as seen by this side. Bit 0 is set for channels the peer
/// opened, so both sides can allocate ids without coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u32);

impl ChannelId {
    /// The peer opened this channel.
    pub fn is_remote(self) -> bool {
        self.0 & 1 == 1
    }
    /// The id as the peer sees it (what goes on the wire).
    pub(crate) fn peer_view(self) -> u32 {
        self.0 ^ 1
    }
}

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.is_remote() { "r" } else { "l" };
        write!(f, "{side}{}", self.0 >> 1)
    }
}

/// Why an `Open` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No such service, or not allowed by the local configuration.
    NoService,
    /// Too many channels, or no receive memory left.
    TooMany,
    /// The application refused.
    Refused,
    /// The channel is gone (late or repeated open).
    Closed,
}

impl RejectReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            RejectReason::NoService => 1,
            RejectReason::TooMany => 2,
            RejectReason::Refused => 3,
            RejectReason::Closed => 4,
        }
    }
    pub(crate) fn from_code(c: u8) -> Self {
        match c {
            1 => RejectReason::NoService,
            2 => RejectReason::TooMany,
            4 => RejectReason::Closed,
            _ => RejectReason::Refused,
        }
    }
}

/// Why a channel was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The peer's application aborted it.
    Peer,
    /// The link came back to a different peer session: nothing to resume.
    PeerRestarted,
    /// The local side aborted it.
    Local,
}

/// What the application should learn; see [`Session::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed on a new link. `resumed`: the peer is the
    /// same session as before and every reliable channel continues.
    Connected {
        /// Channels resumed (false on the first link or after a peer restart).
        resumed: bool,
    },
    /// The peer opened a channel: [`Session::accept`] or [`Session::reject`].
    Incoming {
        /// The new channel.
        id: ChannelId,
        /// Its kind.
        kind: ChannelKind,
        /// Its class.
        class: Class,
        /// The service it asks for.
        service: String,
    },
    /// Our `open` was accepted.
    Opened(ChannelId),
    /// Our `open` was refused; the channel is gone.
    Rejected(ChannelId, RejectReason),
    /// Data (or the end of it) can be received.
    Readable(ChannelId),
    /// A blocked send has room again.
    Writable(ChannelId),
    /// The channel was aborted; it is gone.
    Reset(ChannelId, ResetReason),
    /// The session shut down after a goodbye exchange (`clean`: both sides
    /// confirmed delivery) or a timeout.
    Closed {
        /// Everything was confirmed delivered.
        clean: bool,
    },
}

/// A link fault: the byte stream is unusable; reopen the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Corruption or malformed framing.
    #[error("link fault: {0}")]
    Decode(#[from] DecodeError),
    /// The peer broke the protocol.
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    /// The peer speaks another version.
    #[error("peer speaks protocol version {theirs}, this build speaks {ours}")]
    Incompatible {
        /// Our version.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// Nothing arrived for too long.
    #[error("peer silent for {0:?} (idle timeout)")]
    IdleTimeout(Duration),
}

/// Errors of the send calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No such channel (never opened, or gone).
    #[error("no such channel")]
    UnknownChannel,
    /// Wrong call for the channel's kind.
    #[error("operation does not fit a {0:?} channel")]
    WrongKind(ChannelKind),
    /// No room now; wait for [`Event::Writable`].
    #[error("send buffer full")]
    Blocked,
    /// `finish` was called already.
    #[error("channel finished")]
    Finished,
    /// The message exceeds what the peer can take.
    #[error("message of {len} bytes exceeds the peer's window of {max}")]
    TooLarge {
        /// Message length.
        len: usize,
        /// Maximum.
        max: u64,
    },
    /// The session is shutting down.
    #[error("session closing")]
    Closing,
}

/// Result of a receive call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recv {
    /// Bytes, a message or a datagram.
    Data(bytes::Bytes),
    /// Nothing now; wait for [`Event::Readable`].
    Blocked,
    /// The peer finished; nothing more will come.
    Fin,
}

/// Errors of the receive and channel calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// No such channel (never opened, or gone).
    #[error("no such channel")]
    UnknownChannel,
    /// Wrong call for the channel's kind or state.
    #[error("operation does not fit this channel ({0})")]
    Invalid(&'static str),
}

/// Session-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes handed to the device / taken from it.
    pub bytes_tx: u64,
    /// Bytes read from the device and consumed.
    pub bytes_rx: u64,
    /// Batches sent / received.
    pub batches_tx: u64,
    /// Batches received.
    pub batches_rx: u64,
    /// Records sent.
    pub records_tx: u64,
    /// Records received.
    pub records_rx: u64,
    /// Transmits (device writes) produced.
    pub transmits: u64,
    /// Link faults from corruption.
    pub corrupt_batches: u64,
    /// Links brought up.
    pub links_up: u64,
    /// Links that resumed the previous session.
    pub resumes: u64,
    /// Datagrams dropped (both directions).
    pub dgram_drops: u64,
    /// Records for channels that are gone, ignored.
    pub stale_records: u64,
    /// Bytes skipped while looking for the first batch of a new link (the
    /// tail of the previous link's stream).
    pub resync_bytes: u64,
    /// Last round-trip time measured by a ping.
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// No device open.
    Down,
    /// Device open, waiting for the peer's Hello.
    Handshaking,
    /// Hello exchanged.
    Up,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseState {
    Open,
    /// `close` called: our Goodbye goes out once all queued data is sent.
    Draining,
    /// Our Goodbye went out; waiting for the peer's.
    GoodbyeSent,
    /// Done.
    Closed,
}

/// The session state machine. See the module documentation for the call
/// contract.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    local_id: u64,
    peer_id: Option<u64>,
    link: LinkState,
    close: CloseState,
    /// The peer said Goodbye.
    peer_goodbye: bool,
    close_clean: bool,
    close_deadline: Option<Instant>,

    decoder: BatchDecoder,
    builder: TransmitBuilder,
    /// Peer's limits learnt from its Hello.
    peer_max_batch: usize,
    peer_max_record: usize,

    channels: HashMap<u32, Channel>,
    next_local: u32,
    /// Highest peer-opened id seen (our view), 0 if none.
    max_remote: u32,
    /// Receive memory not yet reserved by a channel window.
    recv_budget: u64,

    /// Control records waiting to go out (before any data).
    ctrl: VecDeque<Record>,
    /// Resets sent and not yet known to be read: (channel, code, the token
    /// of the next ping at the time). Sent again after a link reset.
    resets_unconfirmed: Vec<(u32, u8, u64)>,
    /// Channels that owe the peer a `Window`.
    window_dirty: VecDeque<ChannelId>,
    /// Channels that received data since their last acknowledgement.
    unacked_rx: VecDeque<ChannelId>,
    /// When the delayed acknowledgement of `unacked_rx` is due.
    ack_due: Option<Instant>,
    /// Channels with something to send, per class.
    active: [VecDeque<ChannelId>; 3],
    /// Records served from higher classes while a lower one waited.
    streak: u32,

    events: VecDeque<Event>,

    // timers
    hello_due: Option<Instant>,
    hello_reply: bool,
    /// We have the peer's Hello on this link.
    seen_peer_hello: bool,
    /// The peer's Hello says it has ours.
    peer_saw_us: bool,
    /// We sent a Hello saying we have the peer's.
    sent_seen: bool,
    /// `Event::Connected` to emit once the link is up (resumed or not).
    pending_connected: Option<bool>,
    last_rx: Instant,
    ping_due: Instant,
    /// A keepalive ping should go out with the next transmit.
    ping_wanted: bool,
    ping_out: Option<(u64, Instant)>,
    pong_due: Option<u64>,
    next_token: u64,

    stats: SessionStats,
}

impl Session {
    /// A session with identity `local_id` (random, unique per process
    /// lifetime; the peer uses it to recognise us after a link reset).
    pub fn new(cfg: SessionConfig, local_id: u64, now: Instant) -> Self {
        let cfg = cfg.sanitized();
        Self {
            decoder: BatchDecoder::new(cfg.max_batch_body),
            builder: TransmitBuilder::new(cfg.max_batch_body, cfg.inline_limit),
            peer_max_batch: crate::wire::MAX_BATCH_BODY.min(cfg.max_batch_body),
            peer_max_record: crate::wire::MAX_RECORD_LEN,
            recv_budget: cfg.recv_budget,
            cfg,
            local_id,
            peer_id: None,
            link: LinkState::Down,
            close: CloseState::Open,
            peer_goodbye: false,
            close_clean: false,
            close_deadline: None,
            channels: HashMap::new(),
            next_local: 0,
            max_remote: 0,
            ctrl: VecDeque::new(),
            resets_unconfirmed: Vec::new(),
            window_dirty: VecDeque::new(),
            unacked_rx: VecDeque::new(),
            ack_due: None,
            active: Default::default(),
            streak: 0,
            events: VecDeque::new(),
            hello_due: None,
            hello_reply: false,
            seen_peer_hello: false,
            peer_saw_us: false,
            sent_seen: false,
            pending_connected: None,
            last_rx: now,
            ping_due: now,
            ping_wanted: true,
            ping_out: None,
            pong_due: None,
            next_token: 1,
            stats: SessionStats::default(),
        }
    }

    /// This session's identity.
    pub fn local_id(&self) -> u64 {
        self.local_id
    }

    /// The peer's identity, once a handshake completed.
    pub fn peer_id(&self) -> Option<u64> {
        self.peer_id
    }

    /// The handshake completed on the current link.
    pub fn is_connected(&self) -> bool {
        self.link == LinkState::Up
    }

    /// The session shut down (goodbye exchanged or timed out) and its last
    /// transmit was taken.
    pub fn is_closed(&self) -> bool {
        self.close == CloseState::Closed
    }

    /// Session counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The effective configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Counters and identity of one channel.
    pub fn channel_stats(&self, id: ChannelId) -> Option<ChannelStats> {
        self.channels.get(&id.0).map(|c| c.stats)
    }

    /// All live channels: id, kind, class, service.
    pub fn channels(&self) -> impl Iterator<Item = (ChannelId, ChannelKind, Class, &str)> + '_ {
        self.channels
            .iter()
            .map(|(id, c)| (ChannelId(*id), c.kind, c.class, c.service.as_str()))
    }

    /// Bytes sent on a reliable channel and not yet acknowledged.
    pub fn unacked(&self, id: ChannelId) -> Option<u64> {
        self.channels.get(&id.0).map(|c| c.write_offset - c.acked)
    }

    /// Takes the next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn push_event(&mut self, ev: Event) {
        self.events.push_back(ev);
    }

    fn signal_readable(&mut self, id: ChannelId) {
        if let Some(c) = self.channels.get_mut(&id.0) {
            if !c.readable_signalled {
                c.readable_signalled = true;
                self.events.push_back(Event::Readable(id));
            }
        }
    }

    fn activate(&mut self, id: ChannelId) {
        if let Some(c) = self.channels.get_mut(&id.0) {
            if !c.in_active && c.sendable() {
                c.in_active = true;
                self.active[c.class as usize].push_back(id);
            }
        }
    }

    fn mark_window(&mut self, id: ChannelId) {
        if let Some(c) = self.channels.get_mut(&id.0) {
            if !c.window_dirty {
                c.window_dirty = true;
                self.window_dirty.push_back(id);
            }
        }
    }

    /// Removes a channel and gives its window back to the budget.
    fn remove_channel(&mut self, id: ChannelId) {
        if let Some(c) = self.channels.remove(&id.0) {
            self.recv_budget += c.window;
        }
    }

    /// Reserves a receive window for a new channel from the budget.
    fn reserve_window(&mut self, kind: ChannelKind) -> Option<u64> {
        let want = match kind {
            ChannelKind::Stream => self.cfg.stream_window,
            ChannelKind::Message => self.cfg.message_window,
            ChannelKind::Datagram => self.cfg.dgram_recv_queue as u64,
        };
        let min = match kind {
            ChannelKind::Message => want,
            _ => self.cfg.min_window.min(want),
        };
        let got = want.min(self.recv_budget);
        if got < min || self.channels.len() >= self.cfg.max_channels {
            return None;
        }
        self.recv_budget -= got;
        Some(got)
    }
}

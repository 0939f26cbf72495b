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
pub mod auth;
#[cfg(test)]
mod auth_tests;
mod channel;
mod close;
mod config;
mod gone;
mod input;
mod open;
#[cfg(test)]
mod open_tests;
mod output;
mod pace;
#[cfg(test)]
mod pace_tests;
mod pause;
#[cfg(test)]
mod pause_tests;
#[cfg(test)]
mod regressions;
mod resync;
#[cfg(test)]
mod resync_tests;
#[cfg(test)]
pub(crate) mod tests;
mod traffic;
mod window;
#[cfg(test)]
mod window_tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub use self::api::OpenError;
pub use self::channel::ChannelStats;
pub use self::config::SessionConfig;
#[cfg(feature = "io")]
pub(crate) use self::traffic::entry as traffic_entry;
pub use self::traffic::{Traffic, TrafficKey, MAX_TRAFFIC_KEYS, OTHER_SERVICE};
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
    /// The peer is at its channel limit (`max_channels`).
    TooMany,
    /// The application refused.
    Refused,
    /// The channel is gone (late or repeated open).
    Closed,
    /// The peer has no receive memory left for another channel
    /// (`recv_budget`).
    NoMemory,
    /// Too many channels opened to the peer wait for its application to
    /// accept them (`max_pending_opens`).
    Backlog,
}

impl RejectReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            RejectReason::NoService => 1,
            RejectReason::TooMany => 2,
            RejectReason::Refused => 3,
            RejectReason::Closed => 4,
            RejectReason::NoMemory => 5,
            RejectReason::Backlog => 6,
        }
    }
    /// Unknown codes (a later build's) read as a plain refusal.
    pub(crate) fn from_code(c: u8) -> Self {
        match c {
            1 => RejectReason::NoService,
            2 => RejectReason::TooMany,
            4 => RejectReason::Closed,
            5 => RejectReason::NoMemory,
            6 => RejectReason::Backlog,
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
    /// The link was down longer than `resume_timeout`: the channel could
    /// not wait for it any longer (see `session::pause`).
    LinkLost,
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
    /// The peer's Hellos failed authentication on this link (once per
    /// link; see `auth`). The link stays in its handshake, waiting for
    /// the right peer.
    AuthFailed(auth::AuthFailure),
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
    /// An in-band resync after corruption did not bring the link back in
    /// time (`resync_timeout`): reopen.
    #[error("in-band resync after corruption did not complete in {0:?}")]
    ResyncFailed(Duration),
}

impl SessionError {
    /// A short, fixed name for counters and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Decode(e) if e.is_corruption() => "corrupt",
            SessionError::Decode(_) => "malformed",
            SessionError::Protocol(_) => "protocol_violation",
            SessionError::Incompatible { .. } => "incompatible",
            SessionError::IdleTimeout(_) => "idle_timeout",
            SessionError::ResyncFailed(_) => "resync_failed",
        }
    }
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
    /// Batches whose checksum did not match (never delivered).
    pub corrupt_batches: u64,
    /// In-band resyncs completed: corruption recovered on the open device
    /// without a link fault (see `session::resync`).
    pub resyncs: u64,
    /// In-band resyncs that did not complete in `resync_timeout` (each
    /// then a link fault).
    pub resync_failures: u64,
    /// Reliable channels reset because the link stayed down longer than
    /// `resume_timeout`.
    pub expired_channels: u64,
    /// How long the last in-band resync took, from the corrupt batch to
    /// the link being up again.
    pub resync_last: Option<Duration>,
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
    /// Bytes of slow readers' payloads copied out of receive buffers so
    /// the buffers could be reused (see `Session::compact_received`).
    pub compacted_bytes: u64,
    /// Hellos skipped as not the peer's on this link: our own reflected,
    /// or an old link's (see `Session::hello_is_live`).
    pub stale_hellos: u64,
    /// Peer opens refused at `max_channels`.
    pub refused_too_many: u64,
    /// Peer opens refused for lack of receive memory (`recv_budget`).
    pub refused_no_memory: u64,
    /// Peer opens refused because too many wait for accept
    /// (`max_pending_opens`).
    pub refused_backlog: u64,
    /// Links on which the peer failed authentication (a wrong or missing
    /// pre-shared key, an old link's Hello): counted once per link.
    pub auth_failures: u64,
    /// Our opens refused here at `max_channels` (or no free id).
    pub open_too_many: u64,
    /// Our opens refused here for lack of receive memory.
    pub open_no_memory: u64,
    /// Receive windows grown / shrunk (see `session::window`).
    pub window_grows: u64,
    /// Receive windows shrunk (idle, or above their fair share).
    pub window_shrinks: u64,
    /// Receive budget held now: credit granted beyond what applications
    /// took, and buffered datagrams (at most `recv_budget`).
    pub recv_held: u64,
    /// Times a reliable channel with bytes to send ran out of the peer's
    /// credit (counted once per stall, when the scheduler finds it blocked).
    pub credit_stalls: u64,
    /// Round-trip times measured (pings answered).
    pub rtt_samples: u64,
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
    /// The host identity and name in the peer's last Hello (`None`: none
    /// yet, or its build sends none).
    peer_ident: Option<crate::wire::HelloIdent>,
    /// A link with `peer_id` came up at least once, on our side or (it
    /// sent us more than Hellos) on its side: it knows our id.
    met_peer: bool,
    /// The peer session before the last restart: Hellos naming it are
    /// the stale tail of an old link.
    retired_peer: Option<u64>,
    /// Old Hellos skipped on this link (see `input::hello_is_live`).
    stale_hellos_here: u32,
    /// The `resume_of` of our Hellos on this link: the peer we knew when
    /// it came up.
    hello_resume_of: u64,
    /// Our nonce for this link's authentication (see `auth`).
    link_nonce: [u8; auth::NONCE_LEN],
    /// The identity and nonce of the peer's latest Hello on this link
    /// (authenticated or not: our own proof needs them).
    peer_nonce: Option<(u64, [u8; auth::NONCE_LEN])>,
    /// Links brought up, for nonces when the driver gives none.
    nonce_counter: u64,
    /// The peer failed authentication on this link (counted once).
    auth_failed_here: bool,
    /// The last authentication failure, for logs and status.
    last_auth_failure: Option<auth::AuthFailure>,
    link: LinkState,
    close: CloseState,
    /// The peer's Goodbye arrived: we have everything it sent.
    peer_goodbye: bool,
    /// The peer confirmed our Goodbye (a `GoodbyeAck`, or a Goodbye that
    /// answers ours): it has everything we sent.
    peer_has_ours: bool,
    /// We owe the peer a `GoodbyeAck` (our Goodbyes crossed).
    goodbye_ack_due: bool,
    close_deadline: Option<Instant>,

    decoder: BatchDecoder,
    builder: TransmitBuilder,
    /// Peer's limits learnt from its Hello.
    peer_max_batch: usize,
    peer_max_record: usize,

    channels: BTreeMap<u32, Channel>,
    /// Counters of removed channels by kind, class and service.
    retired: traffic::Retired,
    /// The next local id to try (even; ids in use or in `gone` are skipped).
    next_local: u32,
    /// Local ids wrapped around at least once: a record for an id above
    /// `next_local` may be for a live channel.
    local_wrapped: bool,
    /// Highest peer-opened id seen (our view), 0 if none.
    max_remote: u32,
    /// The receive budget and what holds it (see `window`).
    budget: window::Budget,
    /// The peer's Hello announced growing windows (`CAP_WINDOWS`); true
    /// until a Hello says otherwise.
    peer_grows: bool,
    /// The largest message the peer accepts, from its Hello (0: unknown;
    /// then its `Open`/`OpenOk` window says).
    peer_max_message: u64,
    /// Credit the peer grants every channel we open, before its `OpenOk`.
    peer_open_credit: u64,
    /// When the next idle check of the windows is due (see `window`).
    decay_due: Option<Instant>,

    /// Control records waiting to go out (before any data).
    ctrl: VecDeque<Record>,
    /// Channels we let go of, until the peer is known to have read our
    /// last word about them (see `gone`).
    gone: gone::Gone,
    /// Channels that owe the peer a `Window`.
    window_dirty: VecDeque<ChannelId>,
    /// Channels that received data since their last acknowledgement.
    unacked_rx: VecDeque<ChannelId>,
    /// When the delayed acknowledgement of `unacked_rx` is due.
    ack_due: Option<Instant>,
    /// Channels with something to send, per class.
    active: [VecDeque<ChannelId>; 3],
    /// Latency mode: the in-flight limit and its counts (see `pace`).
    pacing: pace::Pacing,
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
    /// An in-band resync is under way since then (see `resync`).
    resync_since: Option<Instant>,
    /// The link went away then (the last input of the link that was up)
    /// and has not come back (see `pause`).
    lost_at: Option<Instant>,
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
            budget: window::Budget {
                total: cfg.recv_budget,
                reserve: cfg.message_window - cfg.min_window.min(cfg.message_window),
                ..Default::default()
            },
            peer_grows: true,
            peer_max_message: 0,
            peer_open_credit: 0,
            decay_due: None,
            cfg,
            local_id,
            peer_id: None,
            peer_ident: None,
            met_peer: false,
            retired_peer: None,
            stale_hellos_here: 0,
            link_nonce: [0; auth::NONCE_LEN],
            peer_nonce: None,
            nonce_counter: 0,
            auth_failed_here: false,
            last_auth_failure: None,
            hello_resume_of: 0,
            link: LinkState::Down,
            close: CloseState::Open,
            peer_goodbye: false,
            peer_has_ours: false,
            goodbye_ack_due: false,
            close_deadline: None,
            channels: BTreeMap::new(),
            retired: traffic::Retired::default(),
            next_local: 0,
            local_wrapped: false,
            max_remote: 0,
            ctrl: VecDeque::new(),
            gone: gone::Gone::default(),
            window_dirty: VecDeque::new(),
            unacked_rx: VecDeque::new(),
            ack_due: None,
            active: Default::default(),
            pacing: pace::Pacing::default(),
            streak: 0,
            events: VecDeque::new(),
            hello_due: None,
            hello_reply: false,
            seen_peer_hello: false,
            peer_saw_us: false,
            sent_seen: false,
            pending_connected: None,
            resync_since: None,
            lost_at: None,
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

    /// Why the peer's Hellos were last refused by authentication (`None`:
    /// never).
    pub fn last_auth_failure(&self) -> Option<auth::AuthFailure> {
        self.last_auth_failure
    }

    /// The peer's identity, once a handshake completed.
    pub fn peer_id(&self) -> Option<u64> {
        self.peer_id
    }

    /// The peer's host identity and name, from its Hello on the latest
    /// link (`None` before one, or when its Hello carries none).
    pub fn peer_ident(&self) -> Option<&crate::wire::HelloIdent> {
        self.peer_ident.as_ref()
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
        SessionStats {
            recv_held: self.budget.held,
            ..self.stats
        }
    }

    /// The effective configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Counters and identity of one channel.
    pub fn channel_stats(&self, id: ChannelId) -> Option<ChannelStats> {
        self.channels.get(&id.0).map(|c| ChannelStats {
            recv_window: c.window,
            recv_held: c.held,
            ..c.stats
        })
    }

    /// The kind of a live channel.
    pub fn channel_kind(&self, id: ChannelId) -> Option<ChannelKind> {
        self.channels.get(&id.0).map(|c| c.kind)
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

    /// Events are waiting for [`poll_event`](Self::poll_event).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Before the peer's Hello on this link: the input is one Hello at a
    /// time (see [`accepted_batch_len`](Self::accepted_batch_len)).
    pub fn awaiting_peer_hello(&self) -> bool {
        !self.seen_peer_hello
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
            if !c.in_active {
                if c.sendable() {
                    c.in_active = true;
                    c.credit_stalled = false;
                    self.active[c.class as usize].push_back(id);
                } else if !c.credit_stalled
                    && c.reliable()
                    && c.state == channel::ChanState::Open
                    && !c.pending.is_empty()
                {
                    // Bytes to send and no credit for them: the peer's
                    // window limits this channel (once per stall).
                    c.credit_stalled = true;
                    self.stats.credit_stalls += 1;
                }
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
}

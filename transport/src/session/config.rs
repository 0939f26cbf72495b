//! Session tunables, each with the reason for its default.

use std::time::Duration;

use crate::wire::{MAX_BATCH_BODY, MAX_RECORD_LEN, RECORD_HEADER_LEN};

/// Tunables of a [`Session`](super::Session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// A ping goes out this often; it measures RTT and keeps an idle link
    /// provably alive. 1 s costs nothing and detects a dead peer quickly.
    pub keepalive_interval: Duration,
    /// Nothing received for this long is a link fault. Four keepalives.
    pub idle_timeout: Duration,
    /// Hello is resent this often until the peer's arrives: data written
    /// before the peer opened its device may be lost (spec §3).
    pub handshake_retry: Duration,
    /// How long `close` waits for the goodbye exchange before giving up.
    pub goodbye_timeout: Duration,
    /// Received bytes are acknowledged at the latest this long after they
    /// arrived (sooner when a window threshold is crossed). 1 ms keeps the
    /// sender's retransmit buffer short after a burst and costs at most
    /// one Window record per channel per millisecond.
    pub ack_delay: Duration,
    /// Largest batch body we send and accept. A batch is the CRC unit and
    /// the receiver delivers nothing of it before it is complete; 256 KiB
    /// keeps that delay under 100 µs at 5 GB/s while making the 16-byte
    /// header and the per-batch work negligible.
    pub max_batch_body: usize,
    /// Most bytes one [`poll_transmit`](super::Session::poll_transmit)
    /// returns. The device reached 5.0 GB/s only with multi-MiB writes
    /// (spec §4); 8 MiB is what a 2048-frame ring holds.
    pub max_transmit: usize,
    /// Largest payload per data record. The scheduler switches channels
    /// between records, so this bounds head-of-line blocking: 64 KiB is
    /// 13 µs of cable at 5 GB/s.
    pub max_chunk: usize,
    /// Payloads up to this size are copied into the batch instead of being
    /// referenced as their own `writev` segment.
    pub inline_limit: usize,
    /// Largest receive window of a stream channel: what the peer may send
    /// ahead of our application once the window has grown (see
    /// `session::window`). It must cover the bytes in flight in the rings
    /// and batches (a few MiB) so one channel can fill the cable.
    pub stream_window: u64,
    /// Largest receive window of a message channel, and so the largest
    /// message the peer may send (announced in our Hello): any message up
    /// to this size minus one is delivered, however tight the budget.
    pub message_window: u64,
    /// The receive window every reliable channel starts with (and the
    /// credit a channel the peer opens has before our `OpenOk`), and the
    /// least it keeps: what opening a channel holds against the budget.
    /// 64 KiB carries a request, a response or a proxied connection's
    /// first bytes in one go; 10,000 idle channels hold 625 MiB of credit
    /// and nothing else. Windows double from there while they are used.
    pub min_window: u64,
    /// A channel that received nothing for this long halves its window
    /// (down to `min_window`): busy channels keep what they grew, idle
    /// ones give it back. 1 s: a pause in a transfer costs nothing, a
    /// channel done with its burst frees its share within seconds.
    pub window_idle: Duration,
    /// Let windows start small and grow (and announce it in the Hello).
    /// Off: every channel gets its whole window at open, as builds before
    /// growing windows did (what a session does anyway toward a peer whose
    /// Hello does not announce them).
    pub grow_windows: bool,
    /// Bytes of datagrams queued per channel for sending before new ones
    /// are dropped (a TUN interface's queue; drops are counted).
    pub dgram_send_queue: usize,
    /// Bytes of received datagrams kept per channel before dropping.
    pub dgram_recv_queue: usize,
    /// What all channels together may buffer or have granted beyond what
    /// their applications took: a peer opening thousands of channels, or
    /// filling them, cannot make us buffer more.
    pub recv_budget: u64,
    /// Most live channels (ours and the peer's together). Each costs a few
    /// hundred bytes here and `min_window` of budget: 16,384 of them hold
    /// the 1 GiB budget exactly, so the count limit bites first only when
    /// some windows grew.
    pub max_channels: usize,
    /// Most channels the peer opened that the application has not
    /// accepted or rejected yet: a peer opening channels faster than the
    /// application takes them gets `Backlog` refusals, rather than filling
    /// the whole channel table (half of `max_channels` by default) with
    /// channels nobody asked for.
    pub max_pending_opens: usize,
    /// Every N records served from a higher class while a lower class
    /// waits, one record of the lower class goes out: strict priority with
    /// a floor, so bulk traffic slows under latency traffic but never stops.
    pub starvation_limit: u32,
    /// In latency mode (see `session::pace`), at most this many bytes of
    /// ours sit unread in the pump, the ring and the cable, so a latency
    /// record waits behind at most this much: 256 KiB is 90 µs at
    /// 2.8 GB/s, 260 µs at 1 GB/s, and still eight full batches, enough
    /// to keep the cable busy while the peer's reports come back.
    pub latency_in_flight: u64,
    /// How long latency mode stays on after the last latency-class record
    /// went out or came in. 2 s: `ping`'s default interval is 1 s, and an
    /// RPC client pausing between bursts should not meet a full ring.
    pub latency_hold: Duration,
    /// A pre-shared key both hosts must hold (see `session::auth`);
    /// `None`: no authentication, anything on the cable is a peer.
    pub psk: Option<super::auth::Psk>,
    /// This host's identity and name, sent in every Hello
    /// ([`crate::wire::CAP_IDENT`]); the peer's shows in
    /// [`Session::peer_ident`](super::Session::peer_ident). `None`: the
    /// Hello carries none.
    pub ident: Option<crate::wire::HelloIdent>,
    /// Corruption on an up link is recovered in-band (see
    /// `session::resync`): the bad batch is dropped, both sides exchange
    /// Hellos on the open device and resume. A resync that has not brought
    /// the link back within this time is a link fault (the device is
    /// closed and reopened). Zero: every corruption is a link fault.
    pub resync_timeout: Duration,
    /// How long reliable channels wait for a link that went down (a pulled
    /// cable, a rebooting peer) to come back and resume them; after that
    /// they are reset (`ResetReason::LinkLost`) and their applications
    /// told, and what they kept for retransmission is freed. Datagram
    /// channels always just resume. Zero: wait for ever.
    pub resume_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(4),
            handshake_retry: Duration::from_millis(100),
            goodbye_timeout: Duration::from_secs(5),
            ack_delay: Duration::from_millis(1),
            max_batch_body: 256 * 1024,
            max_transmit: 8 << 20,
            max_chunk: 64 * 1024,
            inline_limit: 1024,
            stream_window: 8 << 20,
            message_window: 16 << 20,
            min_window: 64 * 1024,
            window_idle: Duration::from_secs(1),
            grow_windows: true,
            dgram_send_queue: 4 << 20,
            dgram_recv_queue: 4 << 20,
            recv_budget: 1 << 30,
            max_channels: 16_384,
            max_pending_opens: 8192,
            starvation_limit: 16,
            latency_in_flight: 128 * 1024,
            latency_hold: Duration::from_secs(2),
            psk: None,
            ident: None,
            resync_timeout: Duration::from_millis(500),
            resume_timeout: Duration::from_secs(600),
        }
    }
}

impl SessionConfig {
    /// Clamps values into what the wire format can carry.
    pub(crate) fn sanitized(mut self) -> Self {
        self.max_batch_body = self.max_batch_body.clamp(4096, MAX_BATCH_BODY);
        let max_chunk = MAX_RECORD_LEN - RECORD_HEADER_LEN - 64;
        self.max_chunk = self
            .max_chunk
            .clamp(512, max_chunk.min(self.max_batch_body / 2));
        self.max_transmit = self.max_transmit.max(self.max_batch_body);
        self.stream_window = self.stream_window.clamp(4096, u64::from(u32::MAX));
        self.message_window = self.message_window.clamp(4096, u64::from(u32::MAX));
        self.min_window = self.min_window.clamp(4096, self.stream_window);
        self.max_pending_opens = self.max_pending_opens.max(1);
        // A decay pass walks every channel: not more often than this.
        self.window_idle = self.window_idle.max(Duration::from_millis(10));
        self.dgram_recv_queue = self.dgram_recv_queue.min(u32::MAX as usize);
        self.starvation_limit = self.starvation_limit.max(1);
        // Reports come every quarter of it: below a few records it would
        // cost a report per record.
        self.latency_in_flight = self.latency_in_flight.max(64 * 1024);
        self
    }
}

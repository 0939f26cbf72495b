//! Session tunables chosen by the fuzzer.

use crate::session::SessionConfig;
use arbitrary::Arbitrary;

/// Session tunables, kept small so flow control, batching and the
/// budget limits are exercised.
#[derive(Arbitrary, Debug)]
pub struct Params {
    pub seed: u64,
    pub max_read: u16,
    pub stream_window: u32,
    pub message_window: u32,
    pub max_batch_body: u32,
    pub max_chunk: u32,
    pub inline_limit: u16,
    pub max_transmit: u32,
    pub dgram_queue: u32,
    pub recv_budget: Option<u32>,
    pub max_channels: u8,
    pub starvation_limit: u8,
    /// Latency mode's in-flight limit (0: the default).
    pub latency_in_flight: u32,
    /// Start channel ids just below the wrap of the id space.
    pub high_ids: bool,
}

impl Params {
    /// Side B is an older build, without growing windows: bit 0 of the
    /// seed, which the read-split generator does not use (it forces it),
    /// so inputs kept before this choice existed keep their splits.
    pub fn older_b(&self) -> bool {
        self.seed & 1 == 1
    }

    /// Both sides hold the same pre-shared key: bit 31 of
    /// `latency_in_flight`, which its modulo does not use.
    pub fn keyed(&self) -> bool {
        self.latency_in_flight & (1 << 31) != 0
    }

    /// The configuration of side B.
    pub fn config_b(&self) -> SessionConfig {
        SessionConfig {
            grow_windows: !self.older_b(),
            // An older build sends no host identity either.
            ident: (!self.older_b()).then(|| crate::wire::HelloIdent::new([0xb; 16], "host-b")),
            ..self.config()
        }
    }
}

impl Params {
    /// The session configuration these parameters stand for.
    pub fn config(&self) -> SessionConfig {
        let d = SessionConfig::default();
        SessionConfig {
            stream_window: u64::from(self.stream_window % (4 << 20)),
            message_window: u64::from(self.message_window % (4 << 20)),
            min_window: 4096,
            ident: Some(crate::wire::HelloIdent::new([0xa; 16], "host-a")),
            max_batch_body: self.max_batch_body as usize % (1 << 20),
            max_chunk: self.max_chunk as usize % (256 << 10),
            inline_limit: usize::from(self.inline_limit),
            max_transmit: self.max_transmit as usize % (16 << 20),
            dgram_send_queue: self.dgram_queue as usize % (1 << 20),
            dgram_recv_queue: (self.dgram_queue >> 8) as usize % (1 << 20),
            recv_budget: self.recv_budget.map_or(d.recv_budget, u64::from),
            max_channels: usize::from(self.max_channels) + 1,
            starvation_limit: u32::from(self.starvation_limit),
            latency_in_flight: match self.latency_in_flight & !(1 << 31) {
                0 => d.latency_in_flight,
                n => u64::from(n % (1 << 20)),
            },
            psk: self
                .keyed()
                .then(|| crate::session::auth::Psk::new(&[b'k'; 32]).expect("a valid key")),
            ..d
        }
    }
}

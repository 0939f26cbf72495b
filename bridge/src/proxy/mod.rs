//! Socket proxies: `[[forward]]` listens here and carries each connection
//! to a service of the peer; `[[service]]` accepts the peer's channels for
//! a name this config defines and connects where it says. The peer names
//! services, never addresses (see `tbbridge_config::ForwardConfig`).
//!
//! * TCP and Unix stream connections: a stream channel each, relayed with
//!   `tokio::io::copy_bidirectional` over [`ChannelIo`]: half-close
//!   travels across (shutdown of one direction, the other keeps flowing),
//!   a reset on either side resets the other (a TCP RST where there is a
//!   TCP socket), backpressure is the channel's credit (a slow reader slows
//!   its own sender, nothing buffers without bound).
//! * Unix `SOCK_SEQPACKET`: a message channel, one message per packet.
//! * UDP: a datagram channel per client flow, closed after an idle time;
//!   replies go back to the client that sent.
//!
//! [`ChannelIo`]: tbbridge_transport::pump::ChannelIo

mod forward;
pub(crate) mod relay;
mod service;
pub(crate) mod sockets;
pub(crate) mod stats;
mod udp;

use std::sync::Arc;

use tbbridge_config::Config;

use crate::frontend::FrontEnd;
pub use stats::{ProxyStats, Refusal};

/// Prefix of the channel service names of `[[service]]` entries: the
/// name space is shared with the TUN (`tun`) and pipes (`pipe:`).
pub const SERVICE_PREFIX: &str = "svc:";

/// Socket buffers of the relays: large enough that one read or write moves
/// a cable record's worth (64 KiB) several times over, small enough that
/// 1,000 connections cost 256 MiB at most only while all are busy.
pub const RELAY_BUF: usize = 128 * 1024;

/// The forwards and services `cfg` asks for. Listening sockets are bound
/// here, so `up` reports a port that is taken before it says it is up.
pub fn front_ends(cfg: &Config) -> anyhow::Result<Vec<Arc<dyn FrontEnd>>> {
    let mut v: Vec<Arc<dyn FrontEnd>> = Vec::new();
    for f in &cfg.forwards {
        v.push(Arc::new(forward::Forward::new(f.clone())?));
    }
    for s in &cfg.services {
        v.push(Arc::new(service::Service::new(s.clone())));
    }
    Ok(v)
}

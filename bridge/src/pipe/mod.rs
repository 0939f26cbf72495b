//! Byte pipes: `tar c /data | tbbridge pipe tb0 backup` on one host, and on
//! the other either `tbbridge pipe tb0 backup > data.tar` or a `[[pipe]]`
//! named `backup` in the config (a file, or a command's stdin). The TUN
//! and the proxies keep running meanwhile; a pipe is a stream channel of
//! the bulk class, so it yields to them and survives cable pulls.
//!
//! * [`client`]: the `tbbridge pipe` command (it needs no device of its
//!   own: it talks to the running daemon over its control socket).
//! * [`host`]: the daemon's side of a client.
//! * [`Sinks`]: the front-end of the `[[pipe]]` entries.
//!
//! Completion is end to end: the sender exits 0 only when the peer's
//! session acknowledged every byte and the receiving end finished without
//! a reset. A sink finishes only after the file is complete on disk (or
//! the command exited 0); anything else resets the channel, and the sender
//! exits non-zero with the reason.

pub mod client;
pub mod host;
mod proto;
mod sink;

use std::sync::Arc;

use tbbridge_config::Config;

use crate::frontend::FrontEnd;
pub use host::{serve_client, PipeClientStats};
pub use sink::Sinks;

/// Prefix of pipe channel service names.
pub const PIPE_PREFIX: &str = "pipe:";

/// The `[[pipe]]` sinks of `cfg` (one front-end for all of them).
pub fn front_ends(cfg: &Config) -> anyhow::Result<Vec<Arc<dyn FrontEnd>>> {
    if cfg.pipes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Arc::new(Sinks::new(cfg.pipes.clone()))])
}

//! `[[service]]`: takes the peer's channels for a name this config defines
//! and connects each to the configured target.

use std::sync::Arc;

use serde_json::{json, Value};
use tbbridge_config::{Endpoint, ServiceConfig};
use tbbridge_transport::pump::Channel;
use tbbridge_transport::ChannelKind;
use tokio::task::JoinSet;

use super::relay::{relay, Ended};
use super::sockets;
use super::stats::{ProxyStats, Refusal, Slot};
use super::SERVICE_PREFIX;
use crate::frontend::{Ctx, Failure, FrontEnd, RunFuture};

/// One `[[service]]`.
#[derive(Debug)]
pub struct Service {
    cfg: ServiceConfig,
    stats: Arc<ProxyStats>,
}

impl Service {
    /// A service for `cfg` (nothing to bind: it listens on the bridge).
    pub fn new(cfg: ServiceConfig) -> Self {
        Self {
            stats: Arc::new(ProxyStats::new(format!("service {}", cfg.name))),
            cfg,
        }
    }

    fn expected_kind(&self) -> ChannelKind {
        match &self.cfg.connect {
            Endpoint::Udp(_) => ChannelKind::Datagram,
            Endpoint::SeqPacket(_) => ChannelKind::Message,
            _ => ChannelKind::Stream,
        }
    }

    async fn serve(self: Arc<Self>, ctx: Ctx) -> Result<(), Failure> {
        let name = format!("{SERVICE_PREFIX}{}", self.cfg.name);
        let mut listener = ctx.bridge.listen(&name).map_err(Failure::retry)?;
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                ch = listener.accept() => {
                    let Some(ch) = ch else {
                        // The bridge stopped.
                        return if ctx.cancel.is_cancelled() {
                            Ok(())
                        } else {
                            Err(Failure::retry(anyhow::anyhow!("the bridge stopped")))
                        };
                    };
                    if ch.kind() != self.expected_kind() {
                        self.stats.refuse(
                            Refusal::KindMismatch,
                            format_args!("a {:?} channel for a {} target", ch.kind(), self.cfg.connect),
                        );
                        let _ = ch.reset();
                        continue;
                    }
                    if !self.stats.try_start(self.cfg.max_connections) {
                        let _ = ch.reset();
                        continue;
                    }
                    let me = self.clone();
                    conns.spawn(async move { me.carry(ch).await });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = ctx.cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// One of the peer's channels: connect, then relay.
    async fn carry(&self, ch: Channel) {
        let _slot = Slot(&self.stats);
        if let Endpoint::Udp(target) = &self.cfg.connect {
            super::udp::serve_flow(ch, target, self.cfg.idle_timeout, &self.stats).await;
            return;
        }
        let conn = match sockets::connect(&self.cfg.connect, self.cfg.connect_timeout).await {
            Ok(c) => c,
            Err(e) => {
                let why = if e.kind() == std::io::ErrorKind::TimedOut {
                    Refusal::ConnectTimeout
                } else {
                    Refusal::ConnectFailed
                };
                self.stats
                    .refuse(why, format_args!("connecting to {}: {e}", self.cfg.connect));
                // The peer's client sees the reset at once (a TCP RST
                // there), as it would for a refused connection.
                let _ = ch.reset();
                return;
            }
        };
        match relay(conn, ch, &self.stats).await {
            Ended::Done => {}
            Ended::ChannelGone(e) | Ended::SocketFailed(e) => {
                tracing::debug!("service {}: connection ended: {e}", self.cfg.name);
            }
        }
    }
}

impl FrontEnd for Service {
    fn name(&self) -> String {
        format!("service {}", self.cfg.name)
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> RunFuture {
        Box::pin(self.serve(ctx))
    }

    fn metrics(&self, out: &mut crate::metrics::Out<'_>) {
        self.stats.export(out);
    }

    fn status(&self) -> Value {
        json!({
            "connect": self.cfg.connect.to_string(),
            "max_connections": self.cfg.max_connections,
            "stats": self.stats.to_json(),
        })
    }
}

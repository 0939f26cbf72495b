//! `[[forward]]`: listens here and carries each connection (or UDP flow)
//! to a service of the peer.

use std::sync::Arc;

use anyhow::Context;
use serde_json::{json, Value};
use tbbridge_config::{Endpoint, ForwardConfig};
use tbbridge_transport::pump::{Bridge, OpenError};
use tbbridge_transport::ChannelKind;
use tokio::task::JoinSet;

use super::relay::{relay, Ended};
use super::sockets::{self, Conn, Listener};
use super::stats::{ProxyStats, Refusal, Slot};
use super::SERVICE_PREFIX;
use crate::frontend::{Ctx, Failure, FrontEnd, Prebound, RunFuture};

/// One `[[forward]]`.
#[derive(Debug)]
pub struct Forward {
    cfg: ForwardConfig,
    /// Bound at start-up (so `up` reports a taken port); bound again after
    /// a restart.
    listener: Prebound<Listener>,
    stats: Arc<ProxyStats>,
}

impl Forward {
    /// Binds the listening socket.
    pub fn new(cfg: ForwardConfig) -> anyhow::Result<Self> {
        let l = sockets::bind(&cfg.listen)
            .with_context(|| format!("forward {}: listening on {}", cfg.name, cfg.listen))?;
        Ok(Self {
            stats: Arc::new(ProxyStats::new(format!("forward {}", cfg.name))),
            cfg,
            listener: Prebound::new(l),
        })
    }

    fn kind(&self) -> ChannelKind {
        match &self.cfg.listen {
            Endpoint::Udp(_) => ChannelKind::Datagram,
            Endpoint::SeqPacket(_) => ChannelKind::Message,
            _ => ChannelKind::Stream,
        }
    }

    fn service(&self) -> String {
        format!("{SERVICE_PREFIX}{}", self.cfg.service)
    }

    async fn serve(self: Arc<Self>, ctx: Ctx) -> Result<(), Failure> {
        let listener = self.listener.take_or(|| {
            sockets::bind(&self.cfg.listen)
                .with_context(|| format!("listening on {}", self.cfg.listen))
                .map_err(Failure::retry)
        })?;
        if let Listener::Udp(sock) = listener {
            return super::udp::forward(
                sock,
                ctx,
                self.service(),
                self.cfg.class,
                self.cfg.max_connections,
                self.stats.clone(),
            )
            .await;
        }
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let conn = r
                        .with_context(|| format!("accepting on {}", self.cfg.listen))
                        .map_err(Failure::retry)?;
                    if !self.stats.try_start(self.cfg.max_connections) {
                        refuse_conn(conn);
                        continue;
                    }
                    let me = self.clone();
                    let bridge = ctx.bridge.clone();
                    conns.spawn(async move { me.carry(conn, bridge).await });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = ctx.cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// One accepted connection: a channel to the peer's service, then the
    /// relay. The slot taken by `try_start` is given back at the end.
    async fn carry(&self, conn: Conn, bridge: Bridge) {
        let _slot = Slot(&self.stats);
        let ch = match bridge
            .open(self.kind(), self.cfg.class, &self.service())
            .await
        {
            Ok(ch) => ch,
            Err(e) => {
                let why = match e {
                    OpenError::NoService(_) => Refusal::NoService,
                    OpenError::PeerBusy(_) => Refusal::PeerBusy,
                    _ => Refusal::OpenFailed,
                };
                self.stats.refuse(why, &e);
                refuse_conn(conn);
                return;
            }
        };
        match relay(conn, ch, &self.stats).await {
            Ended::Done => {}
            Ended::ChannelGone(e) | Ended::SocketFailed(e) => {
                tracing::debug!("forward {}: connection ended: {e}", self.cfg.name);
            }
        }
    }
}

/// Closes a connection we will not carry: a TCP reset, so the client
/// learns at once (a connection accepted and closed cleanly would look
/// like an empty answer).
fn refuse_conn(conn: Conn) {
    if let Conn::Tcp(s) = &conn {
        sockets::reset_tcp(s);
    }
}

impl FrontEnd for Forward {
    fn name(&self) -> String {
        format!("forward {}", self.cfg.name)
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> RunFuture {
        Box::pin(self.serve(ctx))
    }

    fn metrics(&self, out: &mut crate::metrics::Out<'_>) {
        self.stats.export(out);
    }

    fn status(&self) -> Value {
        json!({
            "listen": self.cfg.listen.to_string(),
            "service": self.cfg.service,
            "max_connections": self.cfg.max_connections,
            "stats": self.stats.to_json(),
        })
    }
}

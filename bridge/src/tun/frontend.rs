//! The TUN interface as a front-end of the daemon (see `crate::frontend`).
//!
//! The interface is created when the front-end is built (so `up` fails,
//! with the reason, before it reports success) and moved into `run`; it
//! cannot be created again behind the operator's back, so a TUN front-end
//! that fails is fatal: the daemon exits non-zero and systemd (or the
//! operator) decides.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::{json, Value};
use tbbridge_config::{Config, InterfaceConfig};

use super::{TunDevice, TunOptions, TunStats};
use crate::frontend::{Ctx, Failure, FrontEnd, RunFuture};

/// The `[interface]` front-end.
#[derive(Debug)]
pub struct TunFrontEnd {
    name: String,
    mtu: u16,
    dev: Mutex<Option<TunDevice>>,
    stats: Arc<TunStats>,
}

/// The TUN front-end `cfg` asks for: none without `[interface]`.
pub fn front_ends(cfg: &Config) -> anyhow::Result<Vec<Arc<dyn FrontEnd>>> {
    let Some(i) = &cfg.interface else {
        return Ok(Vec::new());
    };
    let dev = TunDevice::create(&tun_options(i))
        .with_context(|| format!("creating interface {}", i.name))?;
    Ok(vec![Arc::new(TunFrontEnd {
        name: i.name.as_str().to_owned(),
        mtu: i.mtu,
        dev: Mutex::new(Some(dev)),
        stats: Arc::new(TunStats::default()),
    })])
}

/// The TUN front-end's options from the `[interface]` section.
pub fn tun_options(i: &InterfaceConfig) -> TunOptions {
    TunOptions {
        name: i.name.as_str().to_owned(),
        addresses: i.addresses.iter().map(|p| (p.addr, p.len)).collect(),
        mtu: u32::from(i.mtu),
        routes: i
            .routes
            .iter()
            .filter(|r| r.via.is_none())
            .map(|r| (r.to.addr, r.to.len))
            .collect(),
        offload: i.offload,
        queues: usize::from(i.queues),
    }
}

impl FrontEnd for TunFrontEnd {
    fn name(&self) -> String {
        format!("interface {}", self.name)
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> RunFuture {
        Box::pin(async move {
            let dev = self.dev.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some(dev) = dev else {
                return Err(Failure::Fatal(anyhow::anyhow!(
                    "interface {} is gone and is not re-created behind your back",
                    self.name
                )));
            };
            tokio::select! {
                r = super::run(ctx.bridge.clone(), dev, self.stats.clone()) => match r {
                    Ok(()) if ctx.cancel.is_cancelled() => Ok(()),
                    Ok(()) => Err(Failure::Fatal(anyhow::anyhow!("the bridge stopped"))),
                    Err(e) => Err(Failure::Fatal(e)),
                },
                _ = ctx.cancel.cancelled() => Ok(()),
            }
        })
    }

    fn metrics(&self, out: &mut crate::metrics::Out<'_>) {
        self.stats.export(out);
    }

    fn status(&self) -> Value {
        json!({
            "interface": self.name,
            "mtu": self.mtu,
            "stats": self.stats.to_json(),
        })
    }
}

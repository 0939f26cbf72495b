//! Two bridges over an in-process emulated cable with an RPC service on
//! each: for the example, `tbbridge bench --rpc` and tests (no root, no
//! daemon).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tbbridge_config::RpcConfig;
use tbbridge_transport::device::emu::{CableOptions, EmuCable};
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::{CableEnd, SessionConfig};
use tokio_util::sync::CancellationToken;

use super::Rpc;
use crate::frontend::{Ctx, FrontEnd};

/// Hosts A and B: a bridge each, and the `[[rpc]]` services given.
#[derive(Debug)]
pub struct LocalPair {
    /// The cable (unplug it to test resumption).
    pub cable: Arc<EmuCable>,
    /// The bridges of A and B.
    pub bridges: [Bridge; 2],
    /// The RPC front-ends of A and B, in the order given.
    pub rpcs: [Vec<Arc<Rpc>>; 2],
    cancel: CancellationToken,
}

/// An `[[rpc]]` with the defaults and `name`.
pub fn rpc_config(name: &str) -> RpcConfig {
    RpcConfig {
        name: name.to_owned(),
        class: tbbridge_transport::Class::Latency,
        max_message: tbbridge_config::DEFAULT_RPC_MESSAGE as u32,
        max_calls: tbbridge_config::DEFAULT_RPC_CALLS,
        max_connections: tbbridge_config::DEFAULT_RPC_CONNECTIONS,
        socket: None,
        group: None,
    }
}

impl LocalPair {
    /// Starts both bridges and the services (sockets in `dir/a/NAME.sock`
    /// and `dir/b/NAME.sock`) and waits for the link.
    pub async fn start(
        dir: &Path,
        a: &[RpcConfig],
        b: &[RpcConfig],
        cable: CableOptions,
        session: SessionConfig,
    ) -> anyhow::Result<LocalPair> {
        let cable = Arc::new(EmuCable::new(cable)?);
        let bridges = [
            Bridge::on_emu(&cable, CableEnd::A, session.clone()),
            Bridge::on_emu(&cable, CableEnd::B, session),
        ];
        let cancel = CancellationToken::new();
        let mut rpcs: [Vec<Arc<Rpc>>; 2] = [Vec::new(), Vec::new()];
        for (i, (side, cfgs)) in [("a", a), ("b", b)].into_iter().enumerate() {
            for c in cfgs {
                let path = c
                    .socket
                    .clone()
                    .unwrap_or_else(|| dir.join(side).join(format!("{}.sock", c.name)));
                let r = Arc::new(Rpc::bind(c.clone(), path)?);
                let ctx = Ctx {
                    bridge: bridges[i].clone(),
                    cancel: cancel.clone(),
                };
                tokio::spawn(r.clone().run(ctx));
                rpcs[i].push(r);
            }
        }
        for b in &bridges {
            b.connected().await?;
        }
        Ok(LocalPair {
            cable,
            bridges,
            rpcs,
            cancel,
        })
    }

    /// The socket of service `i` of side `side` (0 = A, 1 = B).
    pub fn socket(&self, side: usize, i: usize) -> PathBuf {
        self.rpcs[side][i].path().to_path_buf()
    }
}

impl Drop for LocalPair {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

//! The front-end host: one abstraction every front-end implements, one
//! supervisor that runs them all for the daemon.
//!
//! A front-end is built from its config section ([`from_config`], one line
//! per kind), run with the bridge and a cancellation token, and reports its
//! own section of `status` from its own counters. The [`Supervisor`] owns
//! every front-end's task (a `JoinSet`): one that fails is logged with its
//! error, counted and restarted with backoff, or, when restarting cannot
//! help ([`Failure::Fatal`]: the interface vanished), ends the daemon with
//! an error. A daemon with no `[interface]` (proxies only) is as normal as
//! one with no proxies.
//!
//! # Adding a front-end
//!
//! 1. A folder `bridge/src/NAME/` with a type implementing [`FrontEnd`]
//!    and a `pub fn front_ends(cfg: &Config) -> anyhow::Result<Vec<Arc<dyn
//!    FrontEnd>>>` (plus what it needs, e.g. the instance name for RPC
//!    sockets) that builds one per config entry (validate and bind
//!    what can fail at start-up there, so `up` reports it).
//! 2. One line in [`from_config`].
//! 3. Its config section in `tbbridge-config` (and out of
//!    `config/src/reserved.rs` if it was refused there).
//! 4. Its metrics: [`FrontEnd::metrics`] (see [`crate::metrics`]).

mod supervisor;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tbbridge_config::Config;
use tbbridge_transport::pump::Bridge;
use tokio_util::sync::CancellationToken;

pub use supervisor::Supervisor;

/// What a front-end's `run` returns.
pub type RunFuture = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>;

/// Why a front-end stopped (other than being cancelled).
#[derive(Debug)]
pub enum Failure {
    /// Restart it with backoff: a bind that failed, a socket that died.
    Retry(anyhow::Error),
    /// Restarting cannot help (the interface it serves vanished): the
    /// daemon exits with this error.
    Fatal(anyhow::Error),
}

impl Failure {
    /// `Retry` from anything that converts to `anyhow::Error`.
    pub fn retry(e: impl Into<anyhow::Error>) -> Self {
        Failure::Retry(e.into())
    }
}

/// A socket a front-end binds when it is built (so `up` reports a taken
/// address at once) and its first run takes; a run after a restart binds
/// again.
#[derive(Debug)]
pub struct Prebound<L>(std::sync::Mutex<Option<L>>);

impl<L> Prebound<L> {
    /// Holds `l` for the first run.
    pub fn new(l: L) -> Self {
        Self(std::sync::Mutex::new(Some(l)))
    }

    /// The socket bound at start-up, or a new one from `bind`.
    pub fn take_or(&self, bind: impl FnOnce() -> Result<L, Failure>) -> Result<L, Failure> {
        let taken = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match taken {
            Some(l) => Ok(l),
            None => bind(),
        }
    }
}

/// What a front-end runs with.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The bridge (one session over the cable).
    pub bridge: Bridge,
    /// Fires when the daemon goes down: return `Ok(())` promptly.
    pub cancel: CancellationToken,
}

/// One front-end: the TUN interface, a forward, a service, the pipes...
pub trait FrontEnd: Send + Sync + std::fmt::Debug + 'static {
    /// Unique and stable: `interface tb0`, `forward web`, `service web`.
    fn name(&self) -> String;
    /// Runs until `ctx.cancel` fires (then `Ok`) or it fails. Called again
    /// after a [`Failure::Retry`]: state that must survive a restart lives
    /// in `self`.
    fn run(self: Arc<Self>, ctx: Ctx) -> RunFuture;
    /// Its section of `status` (counters and state), as JSON.
    fn status(&self) -> Value;
    /// Its metrics, copied from the same counters as [`status`](Self::status)
    /// at each refresh of the exporter; `out` adds the `front_end` label
    /// (see [`crate::metrics`], "Exporting a front-end's counters").
    /// The default exports nothing beyond what the supervisor exports
    /// for every front-end (running, restarts).
    fn metrics(&self, out: &mut crate::metrics::Out<'_>) {
        let _ = out;
    }
}

/// Every front-end `cfg` asks for; `instance` is the bridge's name (the
/// default place of its RPC sockets).
pub fn from_config(cfg: &Config, instance: &str) -> anyhow::Result<Vec<Arc<dyn FrontEnd>>> {
    let mut all: Vec<Arc<dyn FrontEnd>> = Vec::new();
    all.extend(crate::tun::front_ends(cfg)?);
    all.extend(crate::proxy::front_ends(cfg)?);
    all.extend(crate::pipe::front_ends(cfg)?);
    all.extend(crate::migrate::front_ends(cfg)?);
    all.extend(crate::rpc::front_ends(cfg, instance)?);
    Ok(all)
}

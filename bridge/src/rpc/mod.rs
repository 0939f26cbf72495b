//! RPC endpoints (`[[rpc]]`): request/response across the cable with no
//! TCP/IP in between.
//!
//! Each service has a Unix `SOCK_SEQPACKET` socket on each host. The first
//! message of a connection says what it is:
//!
//! * a `CALL`: a **client**. Its connection gets one latency-class message
//!   channel to the peer's service `rpc:NAME`, opened with the first call
//!   ([`Bridge::open_now`]: the call goes with the `Open`, one round trip).
//!   Calls go across as they are (header and body, one message each);
//!   answers come back on the same channel and go to the socket as they
//!   are. At most `max_calls` calls are in flight per connection: beyond,
//!   the socket is not read (backpressure, no error). See `client.rs`.
//! * a `SERVE`: the **server** of this host's side. Channels the peer's
//!   clients open arrive here; their calls go to the server with an id of
//!   the bridge's (the server sees one connection for every client),
//!   its answers go back to the channel they belong to, in the order the
//!   calls came. See `serve.rs`.
//!
//! The socket protocol is [`tbbridge_rpc::proto`] (`docs/rpc.md`).
//!
//! [`Bridge::open_now`]: tbbridge_transport::pump::Bridge::open_now

mod client;
pub mod local;
mod serve;
mod stats;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::{json, Value};
use tbbridge_config::{Config, Group, RpcConfig};
use tbbridge_rpc::socket::{Received, SeqPacket, SeqPacketListener};
use tbbridge_rpc::{ErrorCode, Header, Kind, HEADER_LEN};
use tokio::task::JoinSet;

use crate::frontend::{Ctx, Failure, FrontEnd, Prebound, RunFuture};
pub use stats::{code_name, RpcStats};

/// Prefix of the channel service names of RPC services (the name space is
/// shared with `svc:`, `pipe:` and `tun`).
pub const SERVICE_PREFIX: &str = "rpc:";

/// File mode of an RPC socket: the owner and the group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// The RPC front-ends `cfg` asks for; `instance` names the default socket
/// directory. Sockets are bound here, so `up` reports a path in use.
pub fn front_ends(cfg: &Config, instance: &str) -> anyhow::Result<Vec<Arc<dyn FrontEnd>>> {
    let mut v: Vec<Arc<dyn FrontEnd>> = Vec::new();
    for r in &cfg.rpcs {
        let path = r
            .socket
            .clone()
            .unwrap_or_else(|| tbbridge_rpc::socket_path(instance, &r.name));
        v.push(Arc::new(
            Rpc::bind(r.clone(), path).with_context(|| format!("rpc {}", r.name))?,
        ));
    }
    Ok(v)
}

/// One `[[rpc]]` service.
#[derive(Debug)]
pub struct Rpc {
    cfg: RpcConfig,
    path: PathBuf,
    listener: Prebound<SeqPacketListener>,
    stats: Arc<RpcStats>,
    server: Arc<serve::ServerSlot>,
}

fn gid_of(g: &Group) -> anyhow::Result<libc::gid_t> {
    match g {
        Group::Id(id) => Ok(*id),
        Group::Name(n) => {
            let c = CString::new(n.as_str()).context("group name")?;
            // SAFETY: getgrnam_r with buffers we own; the result pointer
            // is only read when it points at `grp`.
            let mut grp: libc::group = unsafe { std::mem::zeroed() };
            let mut buf = vec![0 as libc::c_char; 16 << 10];
            let mut out: *mut libc::group = std::ptr::null_mut();
            let r = unsafe {
                libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out)
            };
            if r != 0 || out.is_null() {
                bail!("no group {n:?} on this host");
            }
            Ok(grp.gr_gid)
        }
    }
}

fn bind_socket(cfg: &RpcConfig, path: &Path) -> anyhow::Result<SeqPacketListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let l = SeqPacketListener::bind(path, SOCKET_MODE)
        .with_context(|| format!("binding {}", path.display()))?;
    if let Some(g) = &cfg.group {
        let gid = gid_of(g)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group {gid}", path.display()))?;
    }
    Ok(l)
}

impl Rpc {
    /// Binds the socket of `cfg` at `path` (its directory is created).
    pub fn bind(cfg: RpcConfig, path: PathBuf) -> anyhow::Result<Rpc> {
        let l = bind_socket(&cfg, &path)?;
        Ok(Rpc {
            stats: Arc::new(RpcStats::new(format!("rpc {}", cfg.name))),
            server: Arc::new(serve::ServerSlot::default()),
            listener: Prebound::new(l),
            path,
            cfg,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<RpcStats> {
        &self.stats
    }

    fn service(&self) -> String {
        format!("{SERVICE_PREFIX}{}", self.cfg.name)
    }

    /// Largest message on the socket or the channel: header and body.
    fn max_wire(&self) -> usize {
        self.cfg.max_message as usize + HEADER_LEN
    }

    async fn serve(self: Arc<Self>, ctx: Ctx) -> Result<(), Failure> {
        let listener = self
            .listener
            .take_or(|| bind_socket(&self.cfg, &self.path).map_err(Failure::Retry))?;
        let mut peer = ctx.bridge.listen(&self.service()).map_err(Failure::retry)?;
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let sock = r
                        .with_context(|| format!("accepting on {}", self.path.display()))
                        .map_err(Failure::retry)?;
                    let me = self.clone();
                    let bridge = ctx.bridge.clone();
                    tasks.spawn(async move { me.connection(sock, bridge).await });
                }
                ch = peer.accept() => {
                    let Some(ch) = ch else {
                        return if ctx.cancel.is_cancelled() {
                            Ok(())
                        } else {
                            Err(Failure::retry(anyhow::anyhow!("the bridge stopped")))
                        };
                    };
                    let me = self.clone();
                    tasks.spawn(async move { serve::peer_channel(&me, ch).await });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = ctx.cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// A new socket connection: its first message says what it is.
    async fn connection(
        self: Arc<Self>,
        sock: SeqPacket,
        bridge: tbbridge_transport::pump::Bridge,
    ) {
        let mut rx = RecvBuf::default();
        let first = match rx.recv(&sock, self.max_wire()).await {
            Ok(Received::Message(m)) => m,
            Ok(Received::TooLarge { len, head }) => {
                // A client whose first call is too large: answer it and
                // carry on as a client.
                let id = head
                    .and_then(|h| Header::parse(&h).ok())
                    .map_or(0, |h| h.id);
                self.stats.error(ErrorCode::TooLarge);
                self.stats.warn(format_args!(
                    "a request of {len} bytes is over max_message = {}",
                    self.cfg.max_message
                ));
                let _ = send_error(&sock, ErrorCode::TooLarge, id).await;
                return client::run(&self, sock, bridge, rx, None).await;
            }
            Ok(Received::End) | Err(_) => return,
        };
        match Header::parse(&first) {
            Ok(h) if h.kind == Kind::Serve => serve::server(&self, sock, rx).await,
            Ok(h) if h.kind == Kind::Call => {
                client::run(&self, sock, bridge, rx, Some((h, first.freeze()))).await
            }
            Ok(h) => {
                self.stats.error(ErrorCode::BadMessage);
                let _ = send_error(&sock, ErrorCode::BadMessage, h.id).await;
            }
            Err(e) => {
                self.stats.error(ErrorCode::BadMessage);
                self.stats
                    .warn(format_args!("a connection's first message: {e}"));
                let _ = send_error(&sock, ErrorCode::BadMessage, 0).await;
            }
        }
    }
}

/// One connection's receive buffers (see `SeqPacket::recv`).
#[derive(Debug, Default)]
pub(crate) struct RecvBuf {
    buf: bytes::BytesMut,
    scratch: Vec<u8>,
}

impl RecvBuf {
    pub(crate) async fn recv(&mut self, s: &SeqPacket, max: usize) -> std::io::Result<Received> {
        s.recv(&mut self.buf, &mut self.scratch, max).await
    }
}

/// An ERROR message for call `id`.
pub(crate) fn error_msg(code: ErrorCode, id: u32) -> Bytes {
    Bytes::copy_from_slice(&Header::error(code, id).to_bytes())
}

pub(crate) async fn send_error(s: &SeqPacket, code: ErrorCode, id: u32) -> std::io::Result<()> {
    s.send(&[&Header::error(code, id).to_bytes()]).await
}

impl FrontEnd for Rpc {
    fn name(&self) -> String {
        format!("rpc {}", self.cfg.name)
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> RunFuture {
        Box::pin(self.serve(ctx))
    }

    fn status(&self) -> Value {
        json!({
            "socket": self.path.display().to_string(),
            "class": format!("{:?}", self.cfg.class).to_lowercase(),
            "max_message": self.cfg.max_message,
            "max_calls": self.cfg.max_calls,
            "max_connections": self.cfg.max_connections,
            "stats": self.stats.to_json(),
        })
    }
}

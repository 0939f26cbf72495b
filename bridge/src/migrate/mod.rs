//! `[migrate]`: VM live migration over the cable, and `tbbridge migrate`
//! (QMP driver for both QEMUs, `cli.rs`).
//!
//! The source side listens on a Unix socket that QEMU migrates to
//! (`migrate unix:PATH`); every connection QEMU makes becomes a bulk-class
//! stream channel to the peer's `migrate` service. QEMU 7.2 (Debian 12)
//! takes the first connection its `-incoming` socket accepts as the main
//! channel and the rest as multifd channels, and the postcopy-preempt
//! channel sends nothing first; so the destination must connect the
//! channels in the order the source accepted them, and cannot look at
//! their first bytes. Each channel starts with our own 8-byte header,
//! written by the source side before any of QEMU's bytes: a migration
//! number (*epoch*: a new one whenever a connection arrives while none is
//! open) and the connection's place in it. The destination connects a
//! channel to its QEMU only once every earlier one of the same epoch is
//! connected, then relays both directions (postcopy's return path rides
//! the same connection). A cable pull does not end a migration: the
//! channels resume and QEMU never notices.

pub mod cli;
pub mod qmp;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tbbridge_config::{Config, Endpoint, MigrateConfig, UnixAddr};
use tbbridge_transport::pump::{Bridge, Channel};
use tbbridge_transport::{ChannelKind, Class};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::frontend::{Ctx, Failure, FrontEnd, Prebound, RunFuture};
use crate::proxy::relay::{relay, Ended};
use crate::proxy::sockets::{self, Conn, Listener};
use crate::proxy::stats::{ProxyStats, Refusal, Slot};

/// The peer's service that takes migration channels.
pub const SERVICE: &str = "migrate";
/// Our header before QEMU's bytes: epoch, then place, big-endian u32s.
const HEADER: usize = 8;

/// The front-ends `cfg.migrate` asks for: a source side and/or a
/// destination side.
pub fn front_ends(cfg: &Config) -> anyhow::Result<Vec<Arc<dyn FrontEnd>>> {
    let mut v: Vec<Arc<dyn FrontEnd>> = Vec::new();
    if let Some(m) = &cfg.migrate {
        if let Some(p) = &m.listen {
            v.push(Arc::new(Source::new(m.clone(), p.clone())?));
        }
        if let Some(p) = &m.connect {
            v.push(Arc::new(Destination::new(m.clone(), p.clone())));
        }
    }
    Ok(v)
}

fn endpoint(p: &std::path::Path) -> Endpoint {
    Endpoint::Unix(UnixAddr::Path(p.to_owned()))
}

/// Counters of one side.
#[derive(Debug, Default)]
struct MigrateStats {
    /// Migrations (epochs) seen.
    migrations: AtomicU64,
    /// Connections of all migrations.
    channels: AtomicU64,
}

/// The source side: QEMU migrates to our socket.
#[derive(Debug)]
pub struct Source {
    cfg: MigrateConfig,
    path: PathBuf,
    listener: Prebound<Listener>,
    stats: Arc<ProxyStats>,
    counts: MigrateStats,
    /// (epoch, connections handed out in it, open now).
    epoch: Mutex<(u32, u32, u32)>,
}

impl Source {
    fn new(cfg: MigrateConfig, path: PathBuf) -> anyhow::Result<Self> {
        let l = sockets::bind(&endpoint(&path))
            .with_context(|| format!("migrate: listening on {}", path.display()))?;
        // Different from what a restarted daemon used before, so the peer
        // never takes a new migration's connection for an old one's.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() ^ d.as_secs() as u32);
        Ok(Self {
            stats: Arc::new(ProxyStats::new("migrate source".to_owned())),
            cfg,
            path,
            listener: Prebound::new(l),
            counts: MigrateStats::default(),
            epoch: Mutex::new((start, 0, 0)),
        })
    }

    /// The header of the next connection: a new epoch when none is open.
    fn next_place(&self) -> (u32, u32) {
        let mut e = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        if e.2 == 0 {
            e.0 = e.0.wrapping_add(1);
            e.1 = 0;
            self.counts.migrations.fetch_add(1, Relaxed);
        }
        let place = (e.0, e.1);
        e.1 += 1;
        e.2 += 1;
        place
    }

    fn ended(&self) {
        let mut e = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        e.2 = e.2.saturating_sub(1);
    }

    async fn serve(self: Arc<Self>, ctx: Ctx) -> Result<(), Failure> {
        let listener = self.listener.take_or(|| {
            sockets::bind(&endpoint(&self.path))
                .with_context(|| format!("listening on {}", self.path.display()))
                .map_err(Failure::retry)
        })?;
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let conn = r
                        .with_context(|| format!("accepting on {}", self.path.display()))
                        .map_err(Failure::retry)?;
                    if !self.stats.try_start(self.cfg.max_channels) {
                        continue;
                    }
                    // Numbered in accept order, here, before anything awaits.
                    let place = self.next_place();
                    self.counts.channels.fetch_add(1, Relaxed);
                    let me = self.clone();
                    let bridge = ctx.bridge.clone();
                    conns.spawn(async move {
                        me.carry(conn, bridge, place).await;
                        me.ended();
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = ctx.cancel.cancelled() => return Ok(()),
            }
        }
    }

    async fn carry(&self, conn: Conn, bridge: Bridge, (epoch, n): (u32, u32)) {
        let _slot = Slot(&self.stats);
        let ch = match bridge.open(ChannelKind::Stream, Class::Bulk, SERVICE).await {
            Ok(ch) => ch,
            Err(e) => {
                self.stats.refuse(Refusal::OpenFailed, &e);
                return;
            }
        };
        let mut head = [0u8; HEADER];
        head[..4].copy_from_slice(&epoch.to_be_bytes());
        head[4..].copy_from_slice(&n.to_be_bytes());
        if let Err(e) = ch.send(bytes::Bytes::copy_from_slice(&head)).await {
            self.stats.refuse(Refusal::OpenFailed, &e);
            return;
        }
        if let Ended::ChannelGone(e) | Ended::SocketFailed(e) = relay(conn, ch, &self.stats).await {
            tracing::warn!("migrate: connection {n} of migration {epoch:08x} ended: {e}");
        }
    }
}

impl FrontEnd for Source {
    fn name(&self) -> String {
        "migrate source".to_owned()
    }
    fn run(self: Arc<Self>, ctx: Ctx) -> RunFuture {
        Box::pin(self.serve(ctx))
    }
    fn status(&self) -> Value {
        json!({
            "listen": self.path.display().to_string(),
            "migrations": self.counts.migrations.load(Relaxed),
            "channels": self.counts.channels.load(Relaxed),
            "stats": self.stats.to_json(),
        })
    }
}

/// Whose turn it is on the destination: the epoch being connected and the
/// place of the next connection in it.
#[derive(Debug, Default)]
struct Turn {
    state: Mutex<Option<(u32, u32)>>,
    changed: Notify,
}

impl Turn {
    /// Waits until connection `n` of `epoch` may connect: the one before
    /// it did. Place 0 starts a new epoch. `false` for a connection of an
    /// epoch that is over (a newer one started).
    async fn wait(&self, epoch: u32, n: u32) -> bool {
        loop {
            let notified = self.changed.notified();
            {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match *st {
                    Some((e, next)) if e == epoch && next == n => return true,
                    Some((e, _)) if e != epoch && n == 0 => {
                        *st = Some((epoch, 0));
                        return true;
                    }
                    None if n == 0 => {
                        *st = Some((epoch, 0));
                        return true;
                    }
                    Some((e, next)) if e == epoch && next > n => return false,
                    _ => {}
                }
            }
            notified.await;
        }
    }

    /// Connection `n` of `epoch` is connected (or gave up): the next goes.
    fn done(&self, epoch: u32, n: u32) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *st == Some((epoch, n)) {
            *st = Some((epoch, n + 1));
        }
        drop(st);
        self.changed.notify_waiters();
    }
}

/// The destination side: connects the peer's migration channels to QEMU.
#[derive(Debug)]
pub struct Destination {
    cfg: MigrateConfig,
    path: PathBuf,
    stats: Arc<ProxyStats>,
    counts: MigrateStats,
    turn: Arc<Turn>,
}

impl Destination {
    fn new(cfg: MigrateConfig, path: PathBuf) -> Self {
        Self {
            stats: Arc::new(ProxyStats::new("migrate destination".to_owned())),
            cfg,
            path,
            counts: MigrateStats::default(),
            turn: Arc::default(),
        }
    }

    async fn serve(self: Arc<Self>, ctx: Ctx) -> Result<(), Failure> {
        let mut listener = ctx.bridge.listen(SERVICE).map_err(Failure::retry)?;
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                ch = listener.accept() => {
                    let Some(ch) = ch else {
                        return if ctx.cancel.is_cancelled() {
                            Ok(())
                        } else {
                            Err(Failure::retry(anyhow::anyhow!("the bridge stopped")))
                        };
                    };
                    if !self.stats.try_start(self.cfg.max_channels) {
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

    async fn carry(&self, ch: Channel) {
        let _slot = Slot(&self.stats);
        let Some((epoch, n)) = read_header(&ch, self.cfg.timeout).await else {
            let _ = ch.reset();
            return;
        };
        // Our turn, or give up (the earlier connection never came).
        match tokio::time::timeout(self.cfg.timeout, self.turn.wait(epoch, n)).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                self.stats.refuse(
                    Refusal::ConnectTimeout,
                    format_args!("connection {n} of migration {epoch:08x}: its turn never came"),
                );
                let _ = ch.reset();
                return;
            }
        }
        if n == 0 {
            self.counts.migrations.fetch_add(1, Relaxed);
        }
        self.counts.channels.fetch_add(1, Relaxed);
        let conn = sockets::connect(&endpoint(&self.path), self.cfg.timeout).await;
        self.turn.done(epoch, n);
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                self.stats.refuse(
                    Refusal::ConnectFailed,
                    format_args!("connecting to QEMU at {}: {e}", self.path.display()),
                );
                let _ = ch.reset();
                return;
            }
        };
        if let Ended::ChannelGone(e) | Ended::SocketFailed(e) = relay(conn, ch, &self.stats).await {
            tracing::warn!("migrate: connection {n} of migration {epoch:08x} ended: {e}");
        }
    }
}

/// The 8-byte header a source side writes first.
async fn read_header(ch: &Channel, timeout: Duration) -> Option<(u32, u32)> {
    let mut head = Vec::with_capacity(HEADER);
    let fut = async {
        while head.len() < HEADER {
            match ch.recv(HEADER - head.len()).await {
                Ok(Some(b)) => head.extend_from_slice(&b),
                _ => return false,
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(timeout, fut).await, Ok(true)) {
        return None;
    }
    let epoch = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let n = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    Some((epoch, n))
}

impl FrontEnd for Destination {
    fn name(&self) -> String {
        "migrate destination".to_owned()
    }
    fn run(self: Arc<Self>, ctx: Ctx) -> RunFuture {
        Box::pin(self.serve(ctx))
    }
    fn status(&self) -> Value {
        json!({
            "connect": self.path.display().to_string(),
            "migrations": self.counts.migrations.load(Relaxed),
            "channels": self.counts.channels.load(Relaxed),
            "stats": self.stats.to_json(),
        })
    }
}

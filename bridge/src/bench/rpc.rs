//! `tbbridge bench --rpc`: round trips of RPC endpoints (a client on host
//! A calling a server on host B through both bridges' sockets), idle and
//! while a bulk stream channel saturates the same cable, side by side in
//! one run with (a) a raw Unix `SOCK_SEQPACKET` ping-pong, (b) the raw
//! emulated cable's echo and, with `--tun` (root), (c) a TCP ping-pong
//! through the TUN interfaces of two daemons. Rounds are interleaved as in
//! `latency.rs`, so drifting noise hits every target alike.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use tbbridge_rpc::socket::{Received, SeqPacket};
use tbbridge_rpc::{Client, Server};
use tbbridge_transport::device::emu::EmuCable;
use tokio::sync::oneshot;

use super::latency::summarize;
use super::raw::RawEcho;
use super::report::{LatencyRow, RunResult};
use super::throughput::Load;
use super::tun_tcp::TunTcp;
use super::{BenchArgs, Listeners};
use crate::rpc::local::{rpc_config, LocalPair};

const MAX_ROUNDS: usize = 20_000;
const MIN_ROUNDS: usize = 20;
const WARMUP: usize = 10;
const PASSES: u32 = 4;
/// Bounds a hang only.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A raw seqpacket ping-pong: a socket pair, an echo task.
struct SeqEcho {
    a: SeqPacket,
    buf: BytesMut,
    scratch: Vec<u8>,
    echo: tokio::task::JoinHandle<()>,
}

impl SeqEcho {
    fn start() -> anyhow::Result<SeqEcho> {
        let (a, b) = SeqPacket::pair()?;
        let echo = tokio::spawn(async move {
            let (mut buf, mut scratch) = (BytesMut::new(), Vec::new());
            while let Ok(Received::Message(m)) = b.recv(&mut buf, &mut scratch, 1 << 20).await {
                if b.send(&[&m]).await.is_err() {
                    return;
                }
            }
        });
        Ok(SeqEcho {
            a,
            buf: BytesMut::new(),
            scratch: Vec::new(),
            echo,
        })
    }

    async fn round(&mut self, msg: &[u8]) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.a.send(&[msg]).await?;
        match self
            .a
            .recv(&mut self.buf, &mut self.scratch, 1 << 20)
            .await?
        {
            Received::Message(m) if m.len() == msg.len() => Ok(t0.elapsed()),
            other => anyhow::bail!("seqpacket echo: {other:?}"),
        }
    }
}

impl Drop for SeqEcho {
    fn drop(&mut self) {
        self.echo.abort();
    }
}

/// A series of calls for the client thread.
struct Job {
    msg: Bytes,
    budget: Duration,
    done: oneshot::Sender<anyhow::Result<Vec<Duration>>>,
}

/// The RPC client and server run on threads of their own, each with a
/// one-thread runtime, as the separate processes they are in real use:
/// on the bridges' runtime their wake-ups would queue behind the bulk
/// load's tasks, which measures the bench, not the endpoints.
struct AppThreads {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn one_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

impl AppThreads {
    fn start(
        client_sock: std::path::PathBuf,
        server_sock: std::path::PathBuf,
    ) -> anyhow::Result<AppThreads> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let server = std::thread::spawn(move || {
            let rt = match one_thread_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                match Server::register_path(&server_sock).await {
                    Ok(server) => {
                        let _ = ready_tx.send(Ok(()));
                        let _ = server
                            .serve(|req: Bytes| async move { Ok::<_, u8>(req) })
                            .await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the RPC server thread did not start")??;
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let client = std::thread::spawn(move || {
            let Ok(rt) = one_thread_runtime() else {
                return;
            };
            rt.block_on(async move {
                let c = match Client::connect_path(&client_sock).await {
                    Ok(c) => c,
                    Err(e) => {
                        for job in rx {
                            let _ = job.done.send(Err(anyhow::anyhow!("connect: {e}")));
                        }
                        return;
                    }
                };
                for job in rx.iter() {
                    let r = async {
                        for _ in 0..WARMUP {
                            rpc_round(&c, &job.msg).await?;
                        }
                        let (start, mut v) = (Instant::now(), Vec::new());
                        while v.len() < MAX_ROUNDS
                            && (v.len() < MIN_ROUNDS || start.elapsed() < job.budget)
                        {
                            v.push(rpc_round(&c, &job.msg).await?);
                        }
                        Ok(v)
                    }
                    .await;
                    let _ = job.done.send(r);
                }
            });
        });
        Ok(AppThreads {
            jobs: Some(jobs),
            threads: vec![server, client],
        })
    }

    async fn series(&self, msg: &Bytes, budget: Duration) -> anyhow::Result<Vec<Duration>> {
        let (done, rx) = oneshot::channel();
        self.jobs
            .as_ref()
            .context("no client thread")?
            .send(Job {
                msg: msg.clone(),
                budget,
                done,
            })
            .map_err(|_| anyhow::anyhow!("the RPC client thread ended"))?;
        rx.await.context("the RPC client thread ended")?
    }
}

impl Drop for AppThreads {
    fn drop(&mut self) {
        // The client thread ends with its job queue; the server's when the
        // bridge's socket goes (the pair is dropped after this).
        self.jobs = None;
        if let Some(c) = self.threads.pop() {
            let _ = c.join();
        }
    }
}

async fn rpc_round(c: &Client, msg: &Bytes) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let r = c.call(msg, CALL_TIMEOUT).await?;
    let rtt = t0.elapsed();
    anyhow::ensure!(r.len() == msg.len(), "rpc echo returned {} bytes", r.len());
    Ok(rtt)
}

enum Target<'a> {
    Seq(SeqEcho),
    Raw(RawEcho),
    Tcp(&'a TunTcp),
    Rpc(&'a AppThreads),
    Loaded(&'a AppThreads),
}

impl Target<'_> {
    fn label(&self) -> &'static str {
        match self {
            Target::Seq(_) => "seqpkt",
            Target::Raw(_) => "raw",
            Target::Tcp(_) => "tcp-tun",
            Target::Rpc(_) => "rpc",
            Target::Loaded(_) => "rpc-load",
        }
    }

    async fn round(&mut self, msg: &Bytes) -> anyhow::Result<Duration> {
        match self {
            Target::Seq(s) => s.round(msg).await,
            Target::Raw(r) => r.round(msg).await,
            Target::Tcp(_) | Target::Rpc(_) | Target::Loaded(_) => {
                anyhow::bail!("runs series on its own thread")
            }
        }
    }

    async fn series(&mut self, msg: &Bytes, budget: Duration) -> anyhow::Result<Vec<Duration>> {
        match self {
            Target::Tcp(t) => {
                t.series(msg.len(), WARMUP, WARMUP, budget).await?;
                return t.series(msg.len(), MIN_ROUNDS, MAX_ROUNDS, budget).await;
            }
            Target::Rpc(a) | Target::Loaded(a) => return a.series(msg, budget).await,
            _ => {}
        }
        for _ in 0..WARMUP {
            self.round(msg).await?;
        }
        let (start, mut v) = (Instant::now(), Vec::new());
        while v.len() < MAX_ROUNDS && (v.len() < MIN_ROUNDS || start.elapsed() < budget) {
            v.push(self.round(msg).await?);
        }
        Ok(v)
    }
}

/// Runs the RPC latency comparison (in this process; `--tun` adds the
/// daemons in namespaces).
pub async fn run(args: &BenchArgs) -> anyhow::Result<Vec<RunResult>> {
    let sizes: Vec<u64> = args.sizes.clone();
    let max = sizes.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(
        max <= tbbridge_config::MAX_RPC_MESSAGE,
        "--sizes: RPC bodies are at most {} bytes",
        tbbridge_config::MAX_RPC_MESSAGE
    );
    let raw_cable = EmuCable::new(args.cable_options()).context("starting the emulated cable")?;
    let dir = std::env::temp_dir().join(format!("tbbridge-bench-rpc-{}", std::process::id()));
    let mut cfg = rpc_config("bench");
    cfg.max_message = max as u32;
    let pair = LocalPair::start(
        &dir,
        std::slice::from_ref(&cfg),
        std::slice::from_ref(&cfg),
        args.cable_options(),
        super::bench_config(),
    )
    .await?;
    // The bulk load's sink on B, and the RPC echo server on B.
    let sinks = tokio::spawn(super::serve_on(Listeners::new(&pair.bridges[1])?));
    let (csock, ssock) = (pair.socket(0, 0), pair.socket(1, 0));
    let apps = tokio::task::spawn_blocking(move || AppThreads::start(csock, ssock)).await??;
    let tun = if args.tun {
        Some(tokio::task::spawn_blocking(TunTcp::start).await??)
    } else {
        None
    };

    let mut targets: Vec<Target<'_>> = vec![
        Target::Seq(SeqEcho::start()?),
        Target::Raw(RawEcho::start(&raw_cable).await?),
    ];
    if let Some(t) = &tun {
        targets.push(Target::Tcp(t));
    }
    targets.push(Target::Rpc(&apps));
    targets.push(Target::Loaded(&apps));
    let series = targets.len() * sizes.len();
    let budget = args.duration() / (series as u32 * PASSES).max(1);
    let mut samples: Vec<Vec<Vec<Duration>>> = vec![vec![Vec::new(); sizes.len()]; targets.len()];
    let msgs: Vec<Bytes> = sizes
        .iter()
        .map(|&n| Bytes::from(vec![0x3Cu8; n as usize]))
        .collect();
    let mut load_figures = Vec::new();
    for _ in 0..PASSES {
        for (t, target) in targets.iter_mut().enumerate() {
            let load = match target {
                Target::Loaded(_) => Some(Load::start(&pair.bridges[0], args).await?),
                _ => None,
            };
            for (s, msg) in msgs.iter().enumerate() {
                let v = target.series(msg, budget).await?;
                samples[t][s].extend(v);
            }
            if let Some(l) = load {
                load_figures.push(l.stop().await?);
            }
        }
    }
    sinks.abort();
    drop(pair);
    let _ = std::fs::remove_dir_all(&dir);

    let mut rows: Vec<Vec<LatencyRow>> = Vec::new();
    for (t, target) in targets.iter().enumerate() {
        let r: Vec<LatencyRow> = sizes
            .iter()
            .zip(samples[t].iter_mut())
            .map(|(&size, v)| summarize(size, v))
            .collect();
        if !args.json {
            for row in &r {
                row.print(target.label());
            }
        }
        rows.push(r);
    }
    let idx = |l: &str| targets.iter().position(|t| t.label() == l);
    if !args.json {
        println!();
        for (s, size) in sizes.iter().enumerate() {
            let p50 = |l| idx(l).map(|i| rows[i][s].p50_us);
            let (Some(a), Some(b), Some(rpc)) = (p50("seqpkt"), p50("raw"), p50("rpc")) else {
                continue;
            };
            let bound = b + 2.0 * a + 20.0;
            let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
            println!(
                "{size:>6} B: idle rpc p50 {rpc:.1} µs vs raw cable {b:.1} + 2 x seqpacket {a:.1} + 20 = {bound:.1} µs: {}",
                verdict(rpc <= bound)
            );
            if let Some(c) = p50("tcp-tun") {
                println!(
                    "          rpc p50 / tcp-through-tun p50 = {rpc:.1} / {c:.1} = {:.2}x (target <= 0.5x): {}",
                    rpc / c,
                    verdict(rpc <= 0.5 * c)
                );
            }
            if let Some(i) = idx("rpc-load") {
                let p99 = rows[i][s].p99_us;
                println!(
                    "          rpc under bulk load p99 {p99:.1} µs (target <= 250 µs): {}",
                    verdict(p99 <= 250.0)
                );
            }
        }
    }
    let mut runs = Vec::new();
    for (t, target) in targets.iter().enumerate() {
        let name = match target {
            Target::Seq(_) => "(a) raw Unix SOCK_SEQPACKET ping-pong".to_owned(),
            Target::Raw(_) => "(b) raw emulated cable echo (no tbbridge)".to_owned(),
            Target::Tcp(_) => {
                "(c) TCP ping-pong through the TUN interfaces (two daemons)".to_owned()
            }
            Target::Rpc(_) => "tbbridge RPC endpoint (latency class), idle cable".to_owned(),
            Target::Loaded(_) => {
                let n = load_figures.len().max(1) as f64;
                let gbits = load_figures.iter().map(|f| f.0).sum::<f64>() / n;
                format!("(d) tbbridge RPC endpoint under a bulk stream at {gbits:.2} Gbit/s")
            }
        };
        runs.push(RunResult::latency(name, std::mem::take(&mut rows[t])));
    }
    Ok(runs)
}

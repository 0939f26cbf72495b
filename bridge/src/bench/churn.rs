//! `--churn`: channels opened, used for one request/response and closed,
//! as a proxy does for each short connection; and `--idle N`: channels
//! held open and idle beside the runs, with what they cost in memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tbbridge_transport::pump::{Bridge, Channel};
use tbbridge_transport::ChannelKind;
use tokio::task::JoinSet;

use super::latency::summarize;
use super::report::RunResult;
use super::{BenchArgs, SVC_RR, SVC_SINK};

/// Bytes of each request and of its response.
pub const RR_SIZE: usize = 1024;

/// Runs `workers` loops for the run's duration, each opening a stream
/// channel with its 1 KiB request on the open (`Bridge::open_now`: about
/// one round trip), half-closing, reading the 1 KiB response to the end
/// and dropping the channel.
pub async fn run(bridge: &Bridge, args: &BenchArgs, workers: usize) -> anyhow::Result<RunResult> {
    let dur = args.duration();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let req = Bytes::from(vec![0x5Au8; RR_SIZE]);
    let cpu0 = super::report::process_cpu_secs();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (bridge, stop, ops, req) = (bridge.clone(), stop.clone(), ops.clone(), req.clone());
        set.spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                one(&bridge, &req).await?;
                samples.push(t0.elapsed());
                ops.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(samples)
        });
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    while let Some(r) = set.join_next().await {
        samples.extend(r.context("churn worker")??);
    }
    let secs = start.elapsed().as_secs_f64();
    let row = summarize(RR_SIZE as u64, &mut samples);
    Ok(RunResult::Churn {
        name: format!("tbbridge, open + 1 KiB request/response + close, {workers} at once"),
        workers,
        ops: ops.load(Ordering::Relaxed),
        secs,
        row,
        cpu_secs: super::report::process_cpu_secs() - cpu0,
    })
}

/// One short exchange, on a normal-class channel (what a proxy's short
/// connections use).
async fn one(bridge: &Bridge, req: &Bytes) -> anyhow::Result<()> {
    let ch = bridge
        .open_now(
            ChannelKind::Stream,
            tbbridge_transport::Class::Normal,
            SVC_RR,
        )
        .context("opening a churn channel")?;
    ch.send(req.clone()).await.context("sending the request")?;
    ch.finish().context("half-closing")?;
    let mut got = 0;
    while let Some(b) = ch.recv(RR_SIZE).await.context("reading the response")? {
        got += b.len();
    }
    anyhow::ensure!(got == RR_SIZE, "response of {got} bytes, not {RR_SIZE}");
    Ok(())
}

/// Server side of `bench.rr`: read the request to its end, answer as many
/// bytes, close.
pub async fn serve(ch: Channel) -> std::io::Result<()> {
    let mut n = 0;
    while let Some(b) = ch.recv(64 << 10).await? {
        n += b.len();
    }
    ch.send(Bytes::from(vec![0xA5u8; n]))
        .await
        .map_err(std::io::Error::other)?;
    ch.finish().map_err(std::io::Error::other)?;
    // The response is delivered after the handle goes (the channel lingers
    // until the peer has everything).
    Ok(())
}

/// Channels held open and idle while the runs go on.
pub struct Idle {
    _channels: Vec<Channel>,
    /// Resident memory of this process before they were opened and after.
    pub rss_before: u64,
    pub rss_after: u64,
}

/// Opens `n` idle stream channels to the sink (16 openers at a time).
pub async fn open_idle(bridge: &Bridge, n: usize) -> anyhow::Result<Idle> {
    let rss_before = rss_bytes();
    let mut set = JoinSet::new();
    let tasks = 16.min(n.max(1));
    for t in 0..tasks {
        let bridge = bridge.clone();
        let mine = (t..n).step_by(tasks).count();
        set.spawn(async move {
            let mut v = Vec::with_capacity(mine);
            for _ in 0..mine {
                v.push(
                    bridge
                        .open(
                            ChannelKind::Stream,
                            tbbridge_transport::Class::Normal,
                            SVC_SINK,
                        )
                        .await
                        .context("opening an idle channel")?,
                );
            }
            anyhow::Ok(v)
        });
    }
    let mut channels = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        channels.extend(r.context("idle opener")??);
    }
    // Let both bridges settle (the accepts on the server side).
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Idle {
        _channels: channels,
        rss_before,
        rss_after: rss_bytes(),
    })
}

/// Resident set size of this process (`VmRSS`), 0 where unknown.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

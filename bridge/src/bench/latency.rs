//! Round-trip latency per message size over a message channel, side by
//! side with the raw cable and, with `--load`, under a saturating bulk
//! stream.
//!
//! The targets are measured in interleaved rounds (every target, every
//! size, then again): on a shared machine the noise drifts over seconds,
//! and interleaving spreads it over the targets alike, so their ratio
//! means something even when the absolute figures wander.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tbbridge_transport::pump::{Bridge, Channel};
use tbbridge_transport::{ChannelKind, Class};

use super::raw::RawEcho;
use super::report::{LatencyRow, RunResult};
use super::throughput::Load;
use super::{BenchArgs, SVC_ECHO};

/// Round trips per size and target at most, per round.
const MAX_ROUNDS: usize = 20_000;
/// At least this many per size and target per round (time permitting).
const MIN_ROUNDS: usize = 20;
/// Unmeasured round trips before each measured series.
const WARMUP: usize = 10;
/// Interleaved rounds over the targets.
const PASSES: u32 = 4;

/// Percentiles and mean of round-trip samples (sorted in place).
pub fn summarize(size: u64, samples: &mut [Duration]) -> LatencyRow {
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i.min(samples.len() - 1)].as_secs_f64() * 1e6
    };
    let mean = if samples.is_empty() {
        0.0
    } else {
        samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e6
    };
    LatencyRow {
        size,
        rounds: samples.len(),
        min_us: pct(0.0),
        p50_us: pct(0.5),
        p90_us: pct(0.9),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        mean_us: mean,
    }
}

/// What a series of round trips runs over.
enum Target<'a> {
    Raw(&'a mut RawEcho),
    Bridge(&'a Channel),
    Loaded(&'a Channel),
}

impl Target<'_> {
    fn name(&self) -> &'static str {
        match self {
            Target::Raw(_) => "raw",
            Target::Bridge(_) => "tbbridge",
            Target::Loaded(_) => "loaded",
        }
    }

    async fn round(&mut self, msg: &Bytes) -> anyhow::Result<Duration> {
        match self {
            Target::Raw(r) => r.round(msg).await,
            Target::Bridge(ch) | Target::Loaded(ch) => round(ch, msg).await,
        }
    }
}

/// Measures the round trip of each size over a latency-class message
/// channel of `bridge`; with `raw`, the raw cable's echo in the same
/// rounds; with `--load`, again while a bulk-class stream channel
/// saturates the same cable in the same direction.
pub async fn sweep(
    bridge: &Bridge,
    args: &BenchArgs,
    mut raw: Option<RawEcho>,
) -> anyhow::Result<Vec<RunResult>> {
    let ch = bridge
        .open(ChannelKind::Message, Class::Latency, SVC_ECHO)
        .await
        .context("opening the echo channel")?;
    let mut targets: Vec<Target<'_>> = Vec::new();
    if let Some(r) = raw.as_mut() {
        targets.push(Target::Raw(r));
    }
    targets.push(Target::Bridge(&ch));
    if args.load {
        targets.push(Target::Loaded(&ch));
    }
    let series = targets.len() * args.sizes.len();
    let budget = args.duration() / (series as u32 * PASSES).max(1);
    let mut samples: Vec<Vec<Vec<Duration>>> =
        vec![vec![Vec::new(); args.sizes.len()]; targets.len()];
    let msgs: Vec<Bytes> = args
        .sizes
        .iter()
        .map(|&n| Bytes::from(vec![0x3Cu8; n as usize]))
        .collect();
    let mut load_figures = Vec::new();
    for _ in 0..PASSES {
        for (t, target) in targets.iter_mut().enumerate() {
            let load = match target {
                Target::Loaded(_) => Some(Load::start(bridge, args).await?),
                _ => None,
            };
            for (s, msg) in msgs.iter().enumerate() {
                for _ in 0..WARMUP {
                    target.round(msg).await?;
                }
                let start = Instant::now();
                let v = &mut samples[t][s];
                let n0 = v.len();
                while v.len() - n0 < MAX_ROUNDS
                    && (v.len() - n0 < MIN_ROUNDS || start.elapsed() < budget)
                {
                    v.push(target.round(msg).await?);
                }
            }
            if let Some(l) = load {
                load_figures.push(l.stop().await?);
            }
        }
    }
    let mut runs = Vec::new();
    for (t, target) in targets.iter().enumerate() {
        let rows: Vec<LatencyRow> = args
            .sizes
            .iter()
            .zip(samples[t].iter_mut())
            .map(|(&size, v)| summarize(size, v))
            .collect();
        if !args.json {
            for r in &rows {
                r.print(target.name());
            }
        }
        let name = match target {
            Target::Raw(_) => "raw cable (no tbbridge)".to_owned(),
            Target::Bridge(_) => "tbbridge, message channel (latency class), idle cable".to_owned(),
            Target::Loaded(_) => {
                let n = load_figures.len().max(1) as f64;
                let gbits = load_figures.iter().map(|f| f.0).sum::<f64>() / n;
                let cpu = load_figures.iter().map(|f| f.1).sum::<f64>() / n;
                format!(
                    "tbbridge, message channel (latency class), under a bulk stream at {gbits:.2} Gbit/s ({cpu:.2} CPU s/GB)"
                )
            }
        };
        runs.push(RunResult::latency(name, rows));
    }
    Ok(runs)
}

async fn round(ch: &Channel, msg: &Bytes) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    ch.send_message(msg.clone()).await?;
    let back = ch.recv_message().await?.context("echo channel closed")?;
    let rtt = t0.elapsed();
    anyhow::ensure!(
        back.len() == msg.len(),
        "echo returned {} bytes, sent {}",
        back.len(),
        msg.len()
    );
    Ok(rtt)
}

/// Server side of `bench.echo`: every message goes back as it came.
pub async fn echo(ch: Channel) -> std::io::Result<()> {
    while let Some(m) = ch.recv_message().await? {
        ch.send_message(m).await?;
    }
    Ok(())
}

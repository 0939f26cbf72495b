//! Round-trip latency per message size over a message channel.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tbbridge_transport::pump::{Bridge, Channel};
use tbbridge_transport::{ChannelKind, Class};

use super::report::{LatencyRow, RunResult};
use super::{BenchArgs, SVC_ECHO};

/// Round trips per size at most, and at least (time permitting).
const MAX_ROUNDS: usize = 20_000;
const MIN_ROUNDS: usize = 20;
/// Unmeasured round trips per size (warm caches, grown buffers).
const WARMUP: usize = 10;

/// Time budget for one size: the run time shared among the sizes.
pub fn budget(args: &BenchArgs) -> Duration {
    args.duration() / args.sizes.len().max(1) as u32
}

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
        p99_us: pct(0.99),
        mean_us: mean,
    }
}

/// Measures the round trip of each size over one message channel.
pub async fn sweep(bridge: &Bridge, args: &BenchArgs) -> anyhow::Result<RunResult> {
    let ch = bridge
        .open(ChannelKind::Message, Class::Latency, SVC_ECHO)
        .await
        .context("opening the echo channel")?;
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let msg = Bytes::from(vec![0x3Cu8; size as usize]);
        let mut samples = Vec::new();
        let budget = budget(args);
        for _ in 0..WARMUP {
            round(&ch, &msg).await?;
        }
        let start = Instant::now();
        while samples.len() < MAX_ROUNDS && (samples.len() < MIN_ROUNDS || start.elapsed() < budget)
        {
            samples.push(round(&ch, &msg).await?);
        }
        let row = summarize(size, &mut samples);
        if !args.json {
            row.print("tbbridge");
        }
        rows.push(row);
    }
    Ok(RunResult::latency("tbbridge, message channel".into(), rows))
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

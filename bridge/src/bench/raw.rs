//! The baseline: the same emulated cable driven directly, as `dd` would
//! use the device, with no tbbridge in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use tbbridge_transport::device::emu::EmuCable;
use tbbridge_transport::device::AsyncDevice;
use tbbridge_transport::CableEnd;

use super::latency::{budget, summarize};
use super::report::{sample_intervals, RunResult};
use super::BenchArgs;

/// Write size of the raw copy: the device reached its best figures with
/// multi-MiB writes (spec §4), so the baseline gets them too.
const RAW_WRITE: usize = 4 << 20;

/// Both ends of the cable, opened as `dd` would open the device.
async fn open_ends(cable: &EmuCable) -> anyhow::Result<(AsyncDevice, AsyncDevice)> {
    let a = cable
        .open_async(CableEnd::A)
        .await
        .context("opening end A")?;
    let b = cable
        .open_async(CableEnd::B)
        .await
        .context("opening end B")?;
    Ok((a, b))
}

/// One direction, A to B, big writes and big reads, for `-t` seconds.
pub async fn throughput(cable: &EmuCable, args: &BenchArgs) -> anyhow::Result<RunResult> {
    let (a, b) = open_ends(cable).await?;
    let dur = args.duration();
    let received = Arc::new(AtomicU64::new(0));
    let cpu0 = super::report::process_cpu_secs();
    let start = Instant::now();
    let deadline = start + dur;
    let writer = tokio::spawn(async move {
        let buf = vec![0xA5u8; RAW_WRITE];
        while Instant::now() < deadline {
            a.write_all(&buf).await?;
        }
        Ok::<_, std::io::Error>(a)
    });
    let rx = received.clone();
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(RAW_WRITE);
        loop {
            buf.clear();
            let n = b.read_buf(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            rx.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let intervals = sample_intervals(args, "raw", start, deadline, || {
        received.load(Ordering::Relaxed)
    })
    .await;
    // Everything written must arrive: close the writer, read to EOF.
    let a = writer.await.context("raw writer panicked")??;
    drop(a);
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .context("raw reader did not reach EOF")?
        .context("raw reader panicked")??;
    let elapsed = start.elapsed().as_secs_f64();
    let total = received.load(Ordering::Relaxed);
    Ok(RunResult::throughput(
        "raw cable (4 MiB writes, no tbbridge)".into(),
        1,
        elapsed,
        vec![total],
        intervals,
        super::report::process_cpu_secs() - cpu0,
    ))
}

/// Ping-pong of each size straight over the cable: A writes, B reads it
/// all and writes it back, A reads it all.
pub async fn latency(cable: &EmuCable, args: &BenchArgs) -> anyhow::Result<RunResult> {
    let (a, b) = open_ends(cable).await?;
    let sizes = args.sizes.clone();
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = b.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            b.write_all(&buf[..n]).await?;
        }
    });
    let mut rows = Vec::new();
    let mut rbuf = vec![0u8; 1 << 20];
    for &size in &sizes {
        let msg = vec![0x3Cu8; size as usize];
        let budget = budget(args);
        let mut samples = Vec::new();
        let start = Instant::now();
        for i in 0.. {
            if i >= 20_000 || (i >= 20 && start.elapsed() >= budget) {
                break;
            }
            let t0 = Instant::now();
            a.write_all(&msg).await?;
            let mut got = 0;
            while got < msg.len() {
                let want = (msg.len() - got).min(rbuf.len());
                let n = a.read(&mut rbuf[..want]).await?;
                anyhow::ensure!(n > 0, "raw echo closed");
                got += n;
            }
            if i >= 10 {
                samples.push(t0.elapsed());
            }
        }
        let row = summarize(size, &mut samples);
        if !args.json {
            row.print("raw");
        }
        rows.push(row);
    }
    drop(a);
    echo.abort();
    Ok(RunResult::latency("raw cable (no tbbridge)".into(), rows))
}

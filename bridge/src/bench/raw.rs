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

/// The cable driven directly as an echo: A writes, B reads it all and
/// writes it back, A reads it all (what a `dd`-style user gets).
#[derive(Debug)]
pub struct RawEcho {
    a: AsyncDevice,
    echo: tokio::task::JoinHandle<std::io::Result<()>>,
    rbuf: Vec<u8>,
}

impl RawEcho {
    pub async fn start(cable: &EmuCable) -> anyhow::Result<RawEcho> {
        let (a, b) = open_ends(cable).await?;
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
        Ok(RawEcho {
            a,
            echo,
            rbuf: vec![0u8; 1 << 20],
        })
    }

    /// One round trip of `msg`.
    pub async fn round(&mut self, msg: &[u8]) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        self.a.write_all(msg).await?;
        let mut got = 0;
        while got < msg.len() {
            let want = (msg.len() - got).min(self.rbuf.len());
            let n = self.a.read(&mut self.rbuf[..want]).await?;
            anyhow::ensure!(n > 0, "raw echo closed");
            got += n;
        }
        Ok(t0.elapsed())
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        self.echo.abort();
    }
}

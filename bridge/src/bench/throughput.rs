//! Throughput over N bridge channels (`-P`), one or both directions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use tbbridge_transport::pump::{Bridge, Channel};
use tbbridge_transport::ChannelKind;

use super::report::{sample_intervals, RunResult};
use super::{BenchArgs, SVC_SINK, SVC_SOURCE};

/// Largest read a receiver asks for at once.
const RECV_MAX: usize = 16 << 20;

/// One channel's counters.
#[derive(Debug)]
struct Flow {
    ch: Arc<Channel>,
    /// Bytes handed to `send` (client sends) or received (client receives).
    bytes: AtomicU64,
    sending: bool,
}

impl Flow {
    /// Bytes that reached the other side: received, or sent and acknowledged.
    fn delivered(&self) -> u64 {
        let b = self.bytes.load(Ordering::Relaxed);
        if self.sending {
            b.saturating_sub(self.ch.unacked())
        } else {
            b
        }
    }
}

/// Runs one throughput test with `p` channels per direction.
pub async fn run(bridge: &Bridge, args: &BenchArgs, p: usize) -> anyhow::Result<RunResult> {
    let dur = args.duration();
    let payload = Bytes::from(vec![0xA5u8; args.len as usize]);
    let mut flows = Vec::new();
    let forward = !args.reverse || args.bidir;
    let backward = args.reverse || args.bidir;
    for _ in 0..p {
        if forward {
            let ch = bridge
                .open(ChannelKind::Stream, args.class, SVC_SINK)
                .await
                .context("opening a bench channel")?;
            flows.push(Arc::new(Flow {
                ch: Arc::new(ch),
                bytes: AtomicU64::new(0),
                sending: true,
            }));
        }
        if backward {
            let ch = bridge
                .open(ChannelKind::Stream, args.class, SVC_SOURCE)
                .await
                .context("opening a bench channel")?;
            flows.push(Arc::new(Flow {
                ch: Arc::new(ch),
                bytes: AtomicU64::new(0),
                sending: false,
            }));
        }
    }
    let cpu0 = super::report::process_cpu_secs();
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for f in &flows {
        let f = f.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            if f.sending {
                while Instant::now() < deadline {
                    f.ch.send(payload.clone()).await?;
                    f.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                }
                f.ch.finish()?;
            } else {
                let mut req = BytesMut::new();
                req.extend_from_slice(&(dur.as_micros() as u64).to_le_bytes());
                req.extend_from_slice(&(payload.len() as u64).to_le_bytes());
                f.ch.send(req.freeze()).await?;
                f.ch.finish()?;
                while let Some(b) = f.ch.recv(RECV_MAX).await? {
                    f.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    // Interval reports while the flows run.
    let intervals = sample_intervals(args, &format!("P={p}"), start, deadline, || {
        flows.iter().map(|f| f.delivered()).sum()
    })
    .await;
    // Stop sending and wait until everything sent was delivered: the total
    // counts delivered bytes over the time it took to deliver them.
    for task in tasks {
        task.await.context("bench task panicked")??;
    }
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    while flows.iter().any(|f| f.sending && f.ch.unacked() > 0) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let per_channel: Vec<u64> = flows.iter().map(|f| f.delivered()).collect();
    Ok(RunResult::throughput(
        format!(
            "tbbridge, {p} stream channel{}",
            if p == 1 { "" } else { "s" }
        ),
        p,
        elapsed,
        per_channel,
        intervals,
        super::report::process_cpu_secs() - cpu0,
    ))
}

/// Server side of `bench.sink`: read and discard.
pub async fn sink(ch: Channel, count: Option<Arc<AtomicU64>>) -> std::io::Result<()> {
    while let Some(b) = ch.recv(RECV_MAX).await? {
        if let Some(c) = &count {
            c.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Server side of `bench.source`: read the request (duration in µs, write
/// length), then send for that long.
pub async fn source(ch: Channel) -> std::io::Result<()> {
    let mut req = Vec::new();
    while let Some(b) = ch.recv(16).await? {
        req.extend_from_slice(&b);
    }
    let field = |i: usize| {
        req.get(i * 8..i * 8 + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(us), Some(len)) = (field(0), field(1)) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad bench.source request",
        ));
    };
    // Bounded, whatever the peer asked for.
    let dur = Duration::from_micros(us.min(3_600_000_000));
    let payload = Bytes::from(vec![0x5Au8; len.clamp(1, 256 << 20) as usize]);
    let deadline = Instant::now() + dur;
    while Instant::now() < deadline {
        ch.send(payload.clone()).await?;
    }
    ch.finish()?;
    // Keep the handle until everything is acknowledged, then let it go.
    while ch.unacked() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// A bulk-class stream channel kept saturated in the background (for
/// latency under load).
#[derive(Debug)]
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    start: Instant,
    sent0: u64,
    cpu0: f64,
}

impl Load {
    pub async fn start(bridge: &Bridge, args: &BenchArgs) -> anyhow::Result<Load> {
        let ch = bridge
            .open(
                ChannelKind::Stream,
                tbbridge_transport::Class::Bulk,
                SVC_SINK,
            )
            .await
            .context("opening the load channel")?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let payload = Bytes::from(vec![0xA5u8; args.len as usize]);
        let (s, n) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                ch.send(payload.clone()).await?;
                n.fetch_add(payload.len() as u64, Ordering::Relaxed);
            }
            ch.finish()?;
            Ok(())
        });
        // Let it reach full speed before anything is measured.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Load {
            stop,
            sent0: sent.load(Ordering::Relaxed),
            sent,
            task,
            start: Instant::now(),
            cpu0: super::report::process_cpu_secs(),
        })
    }

    /// Stops the load; returns its Gbit/s and CPU s/GB while it ran.
    pub async fn stop(self) -> anyhow::Result<(f64, f64)> {
        let secs = self.start.elapsed().as_secs_f64();
        let cpu = super::report::process_cpu_secs() - self.cpu0;
        let gb = (self.sent.load(Ordering::Relaxed) - self.sent0) as f64 / 1e9;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("load task")??;
        Ok((gb * 8.0 / secs.max(1e-9), cpu / gb.max(1e-9)))
    }
}

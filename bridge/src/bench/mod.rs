//! `tbbridge bench`: throughput and latency over bridge channels, side by
//! side with the same emulated cable driven directly (no tbbridge).
//!
//! Without `--device` everything runs in this process: one emulated cable,
//! a bridge on each end, a client on end A and a server on end B. With
//! `--device` this process is one side (`--server` or `--client`) and the
//! other side runs elsewhere (another namespace, another host).

mod latency;
mod raw;
mod report;
mod throughput;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tbbridge_transport::device::emu::{CableOptions, EmuCable};
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::{CableEnd, Class, DeviceSpec, SessionConfig};

use crate::units::parse_size;
pub use report::Report;

/// Service names the bench server answers.
pub const SVC_SINK: &str = "bench.sink";
pub const SVC_SOURCE: &str = "bench.source";
pub const SVC_ECHO: &str = "bench.echo";

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Channels in parallel; a comma list runs each in turn (e.g. `1,64`).
    #[arg(
        short = 'P',
        long = "parallel",
        default_value = "1",
        value_delimiter = ','
    )]
    pub parallel: Vec<usize>,
    /// Seconds per run.
    #[arg(short = 't', long = "time", default_value_t = 10.0)]
    pub time: f64,
    /// Bytes per application write (K/M suffixes).
    #[arg(short = 'l', long = "len", default_value = "1M", value_parser = parse_size)]
    pub len: u64,
    /// Reverse: the server (end B) sends, the client receives.
    #[arg(short = 'R', long)]
    pub reverse: bool,
    /// Both directions at once.
    #[arg(long)]
    pub bidir: bool,
    /// Seconds between interval reports.
    #[arg(short = 'i', long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Latency mode: sweep message sizes, print p50/p99 round trip per size.
    #[arg(long)]
    pub latency: bool,
    /// Message sizes for `--latency` (comma list, K/M suffixes).
    #[arg(long, value_delimiter = ',', value_parser = parse_size,
          default_value = "64,256,1K,4K,10K,64K,256K,1M")]
    pub sizes: Vec<u64>,
    /// Also measure the raw emulated cable (no tbbridge) in the same run
    /// and print the ratio.
    #[arg(long)]
    pub compare: bool,
    /// Scheduling class of the bench channels (latency mode uses `latency`).
    #[arg(long, default_value = "bulk", value_parser = parse_class)]
    pub class: Class,
    /// Emulated cable: ring length in 4 KiB frames (32..4096).
    #[arg(long, default_value_t = 256)]
    pub ring_size: u32,
    /// Emulated cable: rate cap in bytes/s (K/M/G suffixes), default none.
    #[arg(long, value_parser = parse_size)]
    pub rate: Option<u64>,
    /// Emulated cable: added one-way latency in microseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_us: u64,
    /// Run against a device (`/dev/tbstreamN`, `emu:NAME/a`) instead of an
    /// in-process cable; needs `--server` or `--client`.
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Serve bench channels on `--device` until interrupted.
    #[arg(long, conflicts_with = "client")]
    pub server: bool,
    /// Run the bench against a `--server` on the other end of `--device`.
    #[arg(long)]
    pub client: bool,
}

fn parse_class(s: &str) -> Result<Class, String> {
    match s {
        "latency" => Ok(Class::Latency),
        "normal" => Ok(Class::Normal),
        "bulk" => Ok(Class::Bulk),
        _ => Err(format!("{s:?}: use latency, normal or bulk")),
    }
}

impl BenchArgs {
    fn cable_options(&self) -> CableOptions {
        CableOptions {
            ring_size: self.ring_size,
            rate: self.rate,
            latency_us: self.latency_us,
        }
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.time.max(0.1))
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.len == 0 || args.len > (256 << 20) {
        bail!("-l/--len must be 1 byte to 256 MiB, got {}", args.len);
    }
    if args.parallel.iter().any(|p| *p == 0 || *p > 4096) {
        bail!("-P/--parallel must be 1 to 4096 channels");
    }
    if args.device.is_some() && args.server == args.client {
        bail!("--device needs exactly one of --server or --client");
    }
    if args.device.is_none() && (args.server || args.client) {
        bail!("--server/--client need --device (without it the bench runs both sides here)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let report = match &args.device {
            Some(spec) if args.server => {
                let bridge = Bridge::on_device(spec.clone(), Default::default(), bench_config());
                serve(bridge).await?;
                return Ok(());
            }
            Some(spec) => {
                let bridge = Bridge::on_device(spec.clone(), Default::default(), bench_config());
                connect(&bridge).await?;
                client(&args, bridge).await?
            }
            None => in_process(&args).await?,
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            report.print_summary();
        }
        Ok(())
    })
}

/// The session configuration the bench uses (the defaults: a bench that
/// tuned itself would measure something users don't get).
fn bench_config() -> SessionConfig {
    SessionConfig::default()
}

async fn connect(bridge: &Bridge) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(30), bridge.connected())
        .await
        .context("no peer within 30 s (is the other side running?)")??;
    Ok(())
}

/// Both sides in this process over one emulated cable; with `--compare`
/// the raw cable is measured first, on a fresh cable with the same options.
async fn in_process(args: &BenchArgs) -> anyhow::Result<Report> {
    let mut report = Report::new(args);
    if args.compare {
        let cable = EmuCable::new(args.cable_options()).context("starting the emulated cable")?;
        let r = if args.latency {
            raw::latency(&cable, args).await?
        } else {
            raw::throughput(&cable, args).await?
        };
        report.push(r);
    }
    let cable =
        Arc::new(EmuCable::new(args.cable_options()).context("starting the emulated cable")?);
    let a = Bridge::on_emu(&cable, CableEnd::A, bench_config());
    let b = Bridge::on_emu(&cable, CableEnd::B, bench_config());
    connect(&a).await?;
    connect(&b).await?;
    let server = tokio::spawn(serve(b.clone()));
    let r = client(args, a.clone()).await;
    server.abort();
    let r = r?;
    report.extend(r);
    let _ = tokio::time::timeout(Duration::from_secs(5), a.close()).await;
    Ok(report)
}

/// Runs the client side: throughput for each `-P`, or the latency sweep.
async fn client(args: &BenchArgs, bridge: Bridge) -> anyhow::Result<Report> {
    let mut report = Report::new(args);
    if args.latency {
        report.push(latency::sweep(&bridge, args).await?);
    } else {
        for &p in &args.parallel {
            report.push(throughput::run(&bridge, args, p).await?);
        }
    }
    Ok(report)
}

/// The server: sinks, sources and echoes whatever channels the client opens.
pub async fn serve(bridge: Bridge) -> anyhow::Result<()> {
    let mut sink = bridge.listen(SVC_SINK);
    let mut source = bridge.listen(SVC_SOURCE);
    let mut echo = bridge.listen(SVC_ECHO);
    loop {
        tokio::select! {
            Some(ch) = sink.accept() => { tokio::spawn(throughput::sink(ch, None)); }
            Some(ch) = source.accept() => { tokio::spawn(throughput::source(ch)); }
            Some(ch) = echo.accept() => { tokio::spawn(latency::echo(ch)); }
            else => break,
        }
    }
    Ok(())
}

//! `tbbridge bench`: throughput and latency over bridge channels, side by
//! side with the same emulated cable driven directly (no tbbridge).
//!
//! Without `--device` everything runs in this process: one emulated cable,
//! a bridge on each end, a client on end A and a server on end B. With
//! `--device` this process is one side (`--server` or `--client`) and the
//! other side runs elsewhere (another namespace, another host).

mod churn;
mod latency;
mod raw;
mod report;
mod rpc;
mod throughput;
mod tun_tcp;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tbbridge_transport::device::emu::{CableOptions, EmuCable};
use tbbridge_transport::pump::{Bridge, Listener, PumpOptions};
use tbbridge_transport::{CableEnd, Class, DeviceSpec, SessionConfig};

use crate::units::parse_size;
pub use report::Report;

/// Service names the bench server answers.
pub const SVC_SINK: &str = "bench.sink";
pub const SVC_SOURCE: &str = "bench.source";
pub const SVC_ECHO: &str = "bench.echo";
pub const SVC_RR: &str = "bench.rr";

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
    /// With `--latency`: measure again while a bulk stream channel
    /// saturates the cable in the same direction.
    #[arg(long, requires = "latency")]
    pub load: bool,
    /// Open/close rate mode: each of the `-P` workers opens a channel with
    /// a 1 KiB request, reads the 1 KiB response and closes it, for `-t`
    /// seconds; prints exchanges per second and their p50/p99.
    #[arg(long, conflicts_with = "latency")]
    pub churn: bool,
    /// Open this many idle channels before the runs (they stay open beside
    /// them) and print the process's resident memory before and after.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// Busy-poll the device this many microseconds before the pump parks
    /// (0: off, the default; see `[session] busy_poll_us`).
    #[arg(long, default_value_t = 0)]
    pub busy_poll_us: u64,
    /// RPC mode: round trips through RPC endpoints (both bridges' sockets),
    /// idle and under a bulk stream, beside a raw seqpacket ping-pong and
    /// the raw cable's echo (sizes default to 64,1K,10K,64K).
    #[arg(long, conflicts_with_all = ["latency", "device"])]
    pub rpc: bool,
    /// With `--rpc` (root): also a TCP ping-pong through the TUN
    /// interfaces of two daemons in network namespaces.
    #[arg(long, requires = "rpc")]
    pub tun: bool,
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
    /// With the metrics exporter's recorder installed and its histograms
    /// recording every device read and write and RTT, as `up` with
    /// `[metrics]` does (no listener): what the exporter costs the pump.
    #[arg(long)]
    pub metrics: bool,
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

    fn pump_options(&self) -> PumpOptions {
        PumpOptions {
            busy_poll: Duration::from_micros(self.busy_poll_us),
            observer: self.metrics.then(|| {
                crate::metrics::PumpHistograms::new()
                    as std::sync::Arc<dyn tbbridge_transport::pump::PumpObserver>
            }),
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
    let most = SessionConfig::default().max_channels;
    if args
        .parallel
        .iter()
        .any(|p| *p == 0 || *p + args.idle > most)
    {
        bail!("-P/--parallel (plus --idle) must be 1 to {most} channels (max_channels)");
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
    let handle = if args.metrics {
        Some(rt.block_on(async { crate::metrics::install_recorder_only() })?)
    } else {
        None
    };
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
                client(&args, bridge, None).await?
            }
            None if args.rpc => {
                let mut args = args.clone();
                if args.sizes == default_sizes() {
                    args.sizes = vec![64, 1 << 10, 10 << 10, 64 << 10];
                }
                let mut report = Report::new(&args);
                for r in rpc::run(&args).await? {
                    report.push(r);
                }
                report
            }
            None => in_process(&args).await?,
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json())?);
        } else {
            report.print_summary();
        }
        if let Some(h) = &handle {
            // What the histograms saw: proof that they were recording.
            for l in h.render().lines().filter(|l| l.contains("_count")) {
                eprintln!("metrics: {l}");
            }
        }
        Ok(())
    })
}

fn default_sizes() -> Vec<u64> {
    [
        64,
        256,
        1 << 10,
        4 << 10,
        10 << 10,
        64 << 10,
        256 << 10,
        1 << 20,
    ]
    .to_vec()
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
    // The raw cable: measured first (throughput), or in the same rounds
    // as the bridges (latency).
    let raw_cable = match args.compare {
        true => Some(EmuCable::new(args.cable_options()).context("starting the emulated cable")?),
        false => None,
    };
    let mut raw_echo = None;
    if let Some(cable) = &raw_cable {
        if args.latency {
            raw_echo = Some(raw::RawEcho::start(cable).await?);
        } else {
            report.push(raw::throughput(cable, args).await?);
        }
    }
    let cable =
        Arc::new(EmuCable::new(args.cable_options()).context("starting the emulated cable")?);
    let a = Bridge::on_emu_with(&cable, CableEnd::A, bench_config(), args.pump_options());
    let b = Bridge::on_emu_with(&cable, CableEnd::B, bench_config(), args.pump_options());
    connect(&a).await?;
    connect(&b).await?;
    // The listeners exist before the client opens anything.
    let server = tokio::spawn(serve_on(Listeners::new(&b)?));
    let r = client(args, a.clone(), raw_echo).await;
    server.abort();
    let r = r?;
    report.extend(r);
    let _ = tokio::time::timeout(Duration::from_secs(5), a.close()).await;
    Ok(report)
}

/// Runs the client side: throughput for each `-P`, or the latency sweep.
async fn client(
    args: &BenchArgs,
    bridge: Bridge,
    raw: Option<raw::RawEcho>,
) -> anyhow::Result<Report> {
    let mut report = Report::new(args);
    let _idle = match args.idle {
        0 => None,
        n => {
            let idle = churn::open_idle(&bridge, n).await?;
            report.idle = Some((n, idle.rss_before, idle.rss_after));
            Some(idle)
        }
    };
    if args.churn {
        for &p in &args.parallel {
            report.push(churn::run(&bridge, args, p).await?);
        }
    } else if args.latency {
        for r in latency::sweep(&bridge, args, raw).await? {
            report.push(r);
        }
    } else {
        for &p in &args.parallel {
            report.push(throughput::run(&bridge, args, p).await?);
        }
    }
    Ok(report)
}

/// The bench services, listening.
struct Listeners {
    sink: Listener,
    source: Listener,
    echo: Listener,
    rr: Listener,
}

impl Listeners {
    fn new(bridge: &Bridge) -> anyhow::Result<Self> {
        Ok(Self {
            sink: bridge.listen(SVC_SINK)?,
            source: bridge.listen(SVC_SOURCE)?,
            echo: bridge.listen(SVC_ECHO)?,
            rr: bridge.listen(SVC_RR)?,
        })
    }
}

/// The server: sinks, sources and echoes whatever channels the client opens.
pub async fn serve(bridge: Bridge) -> anyhow::Result<()> {
    serve_on(Listeners::new(&bridge)?).await
}

async fn serve_on(l: Listeners) -> anyhow::Result<()> {
    let Listeners {
        mut sink,
        mut source,
        mut echo,
        mut rr,
    } = l;
    loop {
        tokio::select! {
            Some(ch) = sink.accept() => { tokio::spawn(throughput::sink(ch, None)); }
            Some(ch) = source.accept() => { tokio::spawn(throughput::source(ch)); }
            Some(ch) = echo.accept() => { tokio::spawn(latency::echo(ch)); }
            Some(ch) = rr.accept() => { tokio::spawn(churn::serve(ch)); }
            else => break,
        }
    }
    Ok(())
}

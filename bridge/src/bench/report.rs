//! What the bench prints: iperf-like lines, a summary table, JSON.

use serde_json::{json, Value};

use super::BenchArgs;
use crate::units::{bitrate, bytes, gbits};

/// One interval of a throughput run.
#[derive(Debug, Clone)]
pub struct Interval {
    pub start: f64,
    pub end: f64,
    pub bytes: u64,
}

impl Interval {
    pub fn print(&self, label: &str) {
        println!(
            "[{label:>6}] {:6.2}-{:<6.2} sec  {:>12}  {:>14}",
            self.start,
            self.end,
            bytes(self.bytes),
            bitrate(self.bytes, self.end - self.start)
        );
    }
}

/// Samples `total()` (bytes delivered so far) every `args.interval` from
/// `start` until `deadline`, printing each interval unless `--json`.
pub async fn sample_intervals(
    args: &super::BenchArgs,
    label: &str,
    start: std::time::Instant,
    deadline: std::time::Instant,
    total: impl Fn() -> u64,
) -> Vec<Interval> {
    let mut intervals = Vec::new();
    let step = std::time::Duration::from_secs_f64(args.interval.max(0.1));
    let (mut t, mut last) = (start, 0u64);
    while t + step <= deadline + std::time::Duration::from_millis(1) {
        tokio::time::sleep_until((t + step).into()).await;
        let now = total();
        let iv = Interval {
            start: (t - start).as_secs_f64(),
            end: (t + step - start).as_secs_f64(),
            bytes: now.saturating_sub(last),
        };
        if !args.json {
            iv.print(label);
        }
        intervals.push(iv);
        last = now;
        t += step;
    }
    intervals
}

/// Round-trip figures for one message size.
#[derive(Debug, Clone)]
pub struct LatencyRow {
    pub size: u64,
    pub rounds: usize,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub mean_us: f64,
}

impl LatencyRow {
    pub fn print(&self, label: &str) {
        println!(
            "[{label:>8}] {:>8} B  p50 {:>8.1}  p90 {:>8.1}  p99 {:>8.1}  p99.9 {:>8.1} µs  min {:>7.1}  ({} round trips)",
            self.size, self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.min_us, self.rounds
        );
    }
}

/// One measured run (a baseline or a tbbridge configuration).
#[derive(Debug, Clone)]
pub enum RunResult {
    Throughput {
        name: String,
        channels: usize,
        secs: f64,
        per_channel: Vec<u64>,
        intervals: Vec<Interval>,
        /// CPU seconds this process used during the run (user + system,
        /// all threads, the in-process cable relay included).
        cpu_secs: f64,
    },
    Latency {
        name: String,
        rows: Vec<LatencyRow>,
    },
    /// `--churn`: short channels opened, used and closed.
    Churn {
        name: String,
        workers: usize,
        ops: u64,
        secs: f64,
        /// Time of one open + request/response + close.
        row: LatencyRow,
        cpu_secs: f64,
    },
}

impl RunResult {
    pub fn throughput(
        name: String,
        channels: usize,
        secs: f64,
        per_channel: Vec<u64>,
        intervals: Vec<Interval>,
        cpu_secs: f64,
    ) -> Self {
        RunResult::Throughput {
            name,
            channels,
            secs,
            per_channel,
            intervals,
            cpu_secs,
        }
    }

    /// CPU seconds per GB delivered (lower is better; independent of what
    /// else the machine is doing, unlike Gbit/s).
    fn cpu_per_gb(&self) -> Option<f64> {
        match self {
            RunResult::Throughput {
                per_channel,
                cpu_secs,
                ..
            } => {
                let gb = per_channel.iter().sum::<u64>() as f64 / 1e9;
                (gb > 0.0).then(|| cpu_secs / gb)
            }
            RunResult::Latency { .. } | RunResult::Churn { .. } => None,
        }
    }

    pub fn latency(name: String, rows: Vec<LatencyRow>) -> Self {
        RunResult::Latency { name, rows }
    }

    fn gbits(&self) -> Option<f64> {
        match self {
            RunResult::Throughput {
                secs, per_channel, ..
            } => Some(gbits(per_channel.iter().sum(), *secs)),
            RunResult::Latency { .. } | RunResult::Churn { .. } => None,
        }
    }
}

/// CPU time (user + system) of this whole process so far, in seconds.
pub fn process_cpu_secs() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: initialised by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Everything one `tbbridge bench` invocation measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub settings: Value,
    pub runs: Vec<RunResult>,
    /// `--idle`: (channels, RSS before, RSS with them open), bytes.
    pub idle: Option<(usize, u64, u64)>,
}

impl Report {
    pub fn new(args: &BenchArgs) -> Self {
        Report {
            settings: json!({
                "time_s": args.time,
                "len": args.len,
                "reverse": args.reverse,
                "bidir": args.bidir,
                "ring_size": args.ring_size,
                "rate": args.rate,
                "latency_us": args.latency_us,
                "class": format!("{:?}", args.class),
                "device": args.device.as_ref().map(|d| d.to_string()),
            }),
            runs: Vec::new(),
            idle: None,
        }
    }

    pub fn push(&mut self, r: RunResult) {
        self.runs.push(r);
    }

    pub fn extend(&mut self, other: Report) {
        self.runs.extend(other.runs);
        self.idle = self.idle.or(other.idle);
    }

    /// The first raw-cable throughput, the reference for ratios.
    fn baseline_gbits(&self) -> Option<f64> {
        self.runs.iter().find_map(|r| match r {
            RunResult::Throughput { name, .. } if name.starts_with("raw") => r.gbits(),
            _ => None,
        })
    }

    pub fn print_summary(&self) {
        let base = self.baseline_gbits();
        println!();
        if let Some((n, before, after)) = self.idle {
            println!(
                "{n} idle channels open beside the runs: resident memory {} before, {} with them \
                 (both bridges, this process)",
                bytes(before),
                bytes(after)
            );
        }
        println!(
            "{:<44} {:>10} {:>8} {:>12}",
            "run", "Gbit/s", "vs raw", "CPU s/GB"
        );
        for r in &self.runs {
            match r {
                RunResult::Throughput {
                    name,
                    secs,
                    per_channel,
                    channels,
                    ..
                } => {
                    let g = r.gbits().unwrap_or(0.0);
                    let ratio = base.map_or("-".to_string(), |b| format!("{:.2}x", g / b));
                    let cpu = r
                        .cpu_per_gb()
                        .map_or("-".to_string(), |c| format!("{c:.3}"));
                    println!("{name:<44} {g:>10.2} {ratio:>8} {cpu:>12}");
                    if *channels > 1 {
                        let min = per_channel.iter().min().copied().unwrap_or(0);
                        let max = per_channel.iter().max().copied().unwrap_or(0);
                        println!(
                            "{:<44} per channel min {} / max {} ({:.2} min/max) over {:.2} s",
                            "",
                            bytes(min),
                            bytes(max),
                            min as f64 / max.max(1) as f64,
                            secs
                        );
                    }
                }
                RunResult::Latency { name, rows } => {
                    println!("{name}:");
                    for row in rows {
                        row.print("");
                    }
                }
                RunResult::Churn {
                    name,
                    ops,
                    secs,
                    row,
                    cpu_secs,
                    ..
                } => {
                    println!("{name}:");
                    println!(
                        "    {:.0} exchanges/s ({ops} in {secs:.2} s), each p50 {:.1} µs p99 {:.1} µs, \
                         {:.1} µs CPU each",
                        *ops as f64 / secs,
                        row.p50_us,
                        row.p99_us,
                        cpu_secs * 1e6 / (*ops).max(1) as f64
                    );
                }
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let base = self.baseline_gbits();
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| match r {
                RunResult::Throughput {
                    name,
                    channels,
                    secs,
                    per_channel,
                    intervals,
                    cpu_secs,
                } => {
                    let g = r.gbits().unwrap_or(0.0);
                    json!({
                        "kind": "throughput",
                        "name": name,
                        "channels": channels,
                        "seconds": secs,
                        "bytes": per_channel.iter().sum::<u64>(),
                        "gbit_per_s": g,
                        "vs_raw": base.map(|b| g / b),
                        "cpu_seconds": cpu_secs,
                        "cpu_seconds_per_gb": r.cpu_per_gb(),
                        "per_channel_bytes": per_channel,
                        "intervals": intervals.iter().map(|i| json!({
                            "start": i.start, "end": i.end, "bytes": i.bytes,
                            "gbit_per_s": gbits(i.bytes, i.end - i.start),
                        })).collect::<Vec<_>>(),
                    })
                }
                RunResult::Churn {
                    name,
                    workers,
                    ops,
                    secs,
                    row,
                    cpu_secs,
                } => json!({
                    "kind": "churn",
                    "name": name,
                    "workers": workers,
                    "exchanges": ops,
                    "seconds": secs,
                    "exchanges_per_s": *ops as f64 / secs,
                    "p50_us": row.p50_us,
                    "p99_us": row.p99_us,
                    "cpu_seconds": cpu_secs,
                }),
                RunResult::Latency { name, rows } => json!({
                    "kind": "latency",
                    "name": name,
                    "sizes": rows.iter().map(|r| json!({
                        "size": r.size, "rounds": r.rounds, "min_us": r.min_us,
                        "p50_us": r.p50_us, "p90_us": r.p90_us, "p99_us": r.p99_us,
                        "p999_us": r.p999_us, "mean_us": r.mean_us,
                    })).collect::<Vec<_>>(),
                }),
            })
            .collect();
        let idle = self.idle.map(|(n, before, after)| {
            json!({ "channels": n, "rss_before_bytes": before, "rss_with_bytes": after })
        });
        json!({ "settings": self.settings, "runs": runs, "idle": idle })
    }
}

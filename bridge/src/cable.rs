//! `tbbridge cable ...`: serve and control an emulated USB4STREAM cable
//! (spec §5), so that two tbbridge instances can be run against each other
//! on one machine with `--device emu:NAME/a` and `--device emu:NAME/b`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tbbridge_transport::device::emu::{
    self, CableFaults, CableOptions, ControlCommand, Probability, DEFAULT_CABLE_ROOT,
    DEFAULT_RING_SIZE, MAX_RING_SIZE, MAX_STALE_BYTES, MIN_RING_SIZE,
};
use tbbridge_transport::CableEnd;

/// Which cable a control command is for.
#[derive(Debug, Clone, clap::Args)]
pub struct CableRef {
    /// Cable name (1-64 characters from A-Z a-z 0-9 _ . -).
    pub name: String,
    /// Directory holding the cables.
    #[arg(long, default_value = DEFAULT_CABLE_ROOT)]
    pub root: PathBuf,
}

/// The seeded faults (all off unless given).
#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    /// Reads on both ends return random small amounts even when more has
    /// arrived (1 byte to 256 KiB, mostly at most 4 KiB); every byte still
    /// arrives, in order.
    #[arg(long)]
    pub read_splits: bool,
    /// Probability per 4 KiB frame of flipping 1-3 of its bits, e.g. 1e-4.
    #[arg(long, value_name = "P", default_value = "0", value_parser = parse_prob)]
    pub corrupt_prob: Probability,
    /// After a replug, each reader first gets this many bytes left over
    /// from the old link (the last ones written in that direction).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_STALE_BYTES))
    )]
    pub stale_bytes: u32,
    /// Seed of the random faults: the same seed and the same traffic give
    /// the same faults.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl FaultArgs {
    /// The setting these flags describe.
    pub fn faults(&self) -> CableFaults {
        CableFaults {
            seed: self.seed,
            read_splits: self.read_splits,
            corrupt_prob: self.corrupt_prob,
            stale_bytes: self.stale_bytes,
        }
    }
}

fn parse_prob(s: &str) -> Result<Probability, String> {
    s.parse().map_err(|e: emu::FaultError| e.to_string())
}

/// The `cable` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CableCmd {
    /// Serve an emulated cable until SIGINT/SIGTERM. Its ends are the Unix
    /// sockets ROOT/NAME/a and ROOT/NAME/b, opened as emu:NAME/a and
    /// emu:NAME/b.
    Run {
        /// Cable name (1-64 characters from A-Z a-z 0-9 _ . -).
        name: String,
        /// Rate cap per direction in bytes/s; k, M and G suffixes are
        /// decimal (2.8G models TB4). Default: no cap.
        #[arg(long, value_name = "BYTES_PER_S", value_parser = parse_rate)]
        rate: Option<u64>,
        /// Added one-way latency in microseconds.
        #[arg(long, value_name = "MICROSECONDS", default_value_t = 0)]
        latency_us: u64,
        /// Ring length in 4 KiB frames per direction, as the driver's
        /// configfs ring_size (32..=4096).
        #[arg(
            long,
            value_name = "FRAMES",
            default_value_t = DEFAULT_RING_SIZE,
            value_parser = clap::value_parser!(u32).range(i64::from(MIN_RING_SIZE)..=i64::from(MAX_RING_SIZE))
        )]
        ring_size: u32,
        #[command(flatten)]
        faults: FaultArgs,
        /// Directory holding the cables.
        #[arg(long, default_value = DEFAULT_CABLE_ROOT)]
        root: PathBuf,
        /// Plug end a into a fake host: its `/` for `tbbridge up
        /// --sys-root DIR` (sysfs and configfs show the peer on host B,
        /// while the cable runs).
        #[arg(long, value_name = "DIR", requires = "host_b")]
        host_a: Option<PathBuf>,
        /// Plug end b into a fake host (see --host-a).
        #[arg(long, value_name = "DIR", requires = "host_a")]
        host_b: Option<PathBuf>,
    },
    /// Pull the cable: data in flight is lost, open ends get ENXIO, opens
    /// wait until the replug.
    Unplug(CableRef),
    /// Plug the cable back in: waiting opens complete.
    Replug(CableRef),
    /// Flip 1-3 bits in the next 4 KiB frame crossing the cable.
    Corrupt(CableRef),
    /// Replace the seeded faults of a running cable (flags not given are
    /// off): `tbbridge cable faults lab --corrupt-prob 1e-4 --seed 7`.
    Faults {
        #[command(flatten)]
        cable: CableRef,
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Print the cable's state as one line of JSON.
    Status(CableRef),
}

/// Parses a byte rate: digits with an optional fraction and an optional
/// decimal suffix k/K, M, G (`2.8G` = 2 800 000 000 bytes/s).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'M')) => (&t[..i], 1e6),
        Some((i, 'G')) => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    let ok_chars = !num.is_empty() && num.chars().all(|c| c.is_ascii_digit() || c == '.');
    let value: f64 = if ok_chars { num.parse().ok() } else { None }
        .ok_or_else(|| format!("bad rate {s:?}: expected bytes per second such as 500M or 2.8G"))?;
    let bytes = (value * mult).round();
    if !(1.0..=1e15).contains(&bytes) {
        return Err(format!(
            "rate {s:?} out of range: between 1 byte/s and 1000 TB/s"
        ));
    }
    Ok(bytes as u64)
}

fn control(cable: &CableRef, cmd: ControlCommand) -> Result<()> {
    let status = emu::control(&cable.root, &cable.name, cmd)
        .with_context(|| format!("cable {}: {cmd} failed", cable.name))?;
    println!("{status}");
    Ok(())
}

/// Runs a `tbbridge cable` subcommand.
pub fn run(cmd: CableCmd) -> Result<()> {
    match cmd {
        CableCmd::Run {
            name,
            rate,
            latency_us,
            ring_size,
            faults,
            root,
            host_a,
            host_b,
        } => {
            let opts = CableOptions {
                ring_size,
                rate,
                latency_us,
            };
            if let Err(e) = opts.validate() {
                bail!("bad cable options: {e}");
            }
            let faults = faults.faults();
            if let Err(e) = faults.validate(ring_size) {
                bail!("bad cable faults: {e}");
            }
            let dir = root.join(&name);
            eprintln!(
                "tbbridge cable {name}: starting at {} (devices emu:{name}/a and emu:{name}/b; \
                 ring {ring_size} frames, rate {}, latency {latency_us} us{}); Ctrl-C stops",
                dir.display(),
                rate.map_or_else(|| "uncapped".to_owned(), |r| format!("{r} B/s")),
                if faults == CableFaults::default() {
                    String::new()
                } else {
                    format!("; faults {}", faults.to_words())
                },
            );
            // Held while the cable runs: the peers go when it stops.
            let _hosts = match (&host_a, &host_b) {
                (Some(a), Some(b)) => {
                    let attach = |dir: &PathBuf, peer: &PathBuf, end| {
                        crate::fakehost::attach(dir, peer, &name, end).with_context(|| {
                            format!("plugging cable {name} into {}", dir.display())
                        })
                    };
                    let pair = (attach(a, b, CableEnd::A)?, attach(b, a, CableEnd::B)?);
                    eprintln!(
                        "tbbridge cable {name}: plugged into hosts {} and {} (tbbridge up --sys-root DIR)",
                        a.display(),
                        b.display()
                    );
                    Some(pair)
                }
                _ => None,
            };
            tracing::info!(cable = %name, root = %root.display(), "emulated cable serving");
            if let Err(e) = emu::serve_with_faults(&root, &name, opts, faults) {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (use --root DIR for a writable directory)"
                } else {
                    ""
                };
                return Err(e).with_context(|| {
                    format!(
                        "serving emulated cable {name} under {}{hint}",
                        root.display()
                    )
                });
            }
            eprintln!("tbbridge cable {name}: stopped");
            Ok(())
        }
        CableCmd::Unplug(c) => control(&c, ControlCommand::Unplug),
        CableCmd::Replug(c) => control(&c, ControlCommand::Replug),
        CableCmd::Corrupt(c) => control(&c, ControlCommand::Corrupt),
        CableCmd::Faults { cable, faults } => {
            control(&cable, ControlCommand::Faults(faults.faults()))
        }
        CableCmd::Status(c) => control(&c, ControlCommand::Status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate("2.8G"), Ok(2_800_000_000));
        assert_eq!(parse_rate("100M"), Ok(100_000_000));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-5").is_err());
        assert!(parse_rate("G").is_err());
        assert!(parse_rate("1e9").is_err());
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: CableCmd,
    }

    #[test]
    fn fault_flags_parse() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "cable",
            "run",
            "lab",
            "--read-splits",
            "--corrupt-prob",
            "1e-4",
            "--seed",
            "7",
            "--stale-bytes",
            "4096",
        ])
        .expect("parse");
        let CableCmd::Run { faults, .. } = cli.cmd else {
            panic!("not run: {cli:?}");
        };
        let f = faults.faults();
        assert!(f.read_splits);
        assert_eq!(f.corrupt_prob.get(), 1e-4);
        assert_eq!((f.seed, f.stale_bytes), (7, 4096));
        let cli =
            Cli::try_parse_from(["cable", "faults", "lab", "--root", "/tmp/x"]).expect("parse");
        let CableCmd::Faults { cable, faults } = cli.cmd else {
            panic!("not faults: {cli:?}");
        };
        assert_eq!(cable.name, "lab");
        assert_eq!(faults.faults(), CableFaults::default());
        assert!(Cli::try_parse_from(["cable", "run", "lab", "--corrupt-prob", "2"]).is_err());
        assert!(Cli::try_parse_from(["cable", "run", "lab", "--stale-bytes", "99999999"]).is_err());
    }
}

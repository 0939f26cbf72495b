//! `tbbridge`: a network bridge over USB4STREAM (`/dev/tbstreamX`).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

use tbbridge::daemon::{self, Target};
use tbbridge::{bench, cable, demo};

/// A network bridge over USB4/Thunderbolt stream devices (/dev/tbstreamX).
#[derive(Debug, Parser)]
#[command(name = "tbbridge", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run or control an emulated cable (two endpoints under /run/tbbridge/cable/NAME).
    #[command(subcommand)]
    Cable(cable::CableCmd),
    /// iperf-style throughput and latency benchmark over bridge channels.
    Bench(bench::BenchArgs),
    /// Bring a bridge up from /etc/tbbridge/NAME.toml (or --config); with
    /// no name and no such file (or --auto), zero-configuration: find the
    /// peer on the cable and derive the stream and the addresses.
    Up {
        /// Instance name (and interface name of a zero-configuration
        /// setup); default tb0.
        name: Option<String>,
        /// Config file instead of /etc/tbbridge/NAME.toml.
        #[arg(long, conflicts_with = "auto")]
        config: Option<PathBuf>,
        /// Stay in the foreground (systemd, containers, debugging).
        #[arg(long)]
        foreground: bool,
        /// Zero-configuration even if /etc/tbbridge/NAME.toml exists.
        #[arg(long)]
        auto: bool,
        /// Print the zero-configuration setup as a config file and exit
        /// (keep it as /etc/tbbridge/NAME.toml and edit it).
        #[arg(long, conflicts_with = "config")]
        print_config: bool,
        /// The peer's XDomain service (e.g. 0-1.0) when there are several.
        #[arg(long, conflicts_with = "config")]
        service: Option<String>,
        /// A fake host's root directory instead of / (configfs, sysfs and
        /// machine-id under it), as `tbbridge cable run --host-a DIR`
        /// writes it.
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        sys_root: Option<PathBuf>,
    },
    /// Take a bridge down (goodbye to the peer, interface removed).
    Down {
        /// Instance name.
        name: String,
    },
    /// Link state, peer, uptime, per-channel counters, RTT.
    Status {
        /// Instance name (default: all running instances).
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file without touching the system.
    Check {
        /// Instance name.
        name: String,
        /// Config file instead of /etc/tbbridge/NAME.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Connect standard input and output to a pipe of a running bridge
    /// (`tar c /data | tbbridge pipe tb0 backup`).
    Pipe {
        /// Instance name of the running bridge.
        name: String,
        /// The pipe: a `[[pipe]]` of the peer's config, or the peer's own
        /// `tbbridge pipe NAME SERVICE`.
        service: String,
        /// Bytes expected (for the ETA; a regular file on stdin gives it).
        #[arg(long, value_parser = tbbridge::units::parse_size)]
        size: Option<u64>,
    },
    /// Two namespaces, an emulated cable, a bridge and a NIC on each side:
    /// ping, a throughput test, then clean up.
    Demo(demo::DemoArgs),
    /// Live-migrate a VM between two QEMUs over the bridges' `[migrate]`
    /// sockets, driving both over QMP.
    Migrate(tbbridge::migrate::cli::MigrateArgs),
    /// Print a new pre-shared key (256 random bits, hex) for `[session]
    /// psk_file`: `umask 077; tbbridge genkey > /etc/tbbridge/tb0.psk`,
    /// then copy the file to the peer.
    Genkey,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TBBRIDGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !matches!(
        cli.cmd,
        Cmd::Up { .. } | Cmd::Cable(_) | Cmd::Demo(_) | Cmd::Pipe { .. }
    ) {
        // Short-lived commands die quietly when their output pipe closes
        // (`tbbridge status --json | grep -q ...`), as CLI tools do. The
        // daemons keep Rust's default (SIGPIPE ignored): a peer closing a
        // socket must never kill them.
        // SAFETY: resetting a signal disposition before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let r = match cli.cmd {
        Cmd::Cable(c) => cable::run(c),
        Cmd::Bench(b) => bench::run(b),
        Cmd::Up {
            name,
            config,
            foreground,
            auto,
            print_config,
            service,
            sys_root,
        } => {
            let instance = name
                .clone()
                .unwrap_or_else(|| tbbridge_config::auto::AUTO_INSTANCE.to_owned());
            let zero_conf = auto
                || print_config
                || service.is_some()
                || sys_root.is_some()
                || (name.is_none()
                    && config.is_none()
                    && !tbbridge_config::path_for(&instance).exists());
            let args = daemon::auto::AutoArgs { service, sys_root };
            if print_config {
                daemon::auto::print_config(&instance, &args)
            } else {
                let t = if zero_conf {
                    daemon::auto::target(&instance, &args)
                } else {
                    Target::new(&instance, config)
                };
                t.and_then(|t| {
                    if foreground {
                        daemon::up_foreground(&t)
                    } else {
                        daemon::up_detached(&t)
                    }
                })
            }
        }
        Cmd::Down { name } => daemon::down(&name),
        Cmd::Status { name, json } => daemon::status(name.as_deref(), json),
        Cmd::Check { name, config } => Target::new(&name, config).and_then(|t| daemon::check(&t)),
        Cmd::Demo(d) => demo::run(d),
        Cmd::Migrate(m) => tbbridge::migrate::cli::run(m),
        Cmd::Genkey => daemon::genkey(),
        Cmd::Pipe {
            name,
            service,
            size,
        } => tbbridge::pipe::client::run(&name, &service, size),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tbbridge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! `tbbridge`: a network bridge over USB4STREAM (`/dev/tbstreamX`).

use clap::{Parser, Subcommand};
use tbbridge::{bench, cable};

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
    let r = match cli.cmd {
        Cmd::Cable(c) => cable::run(c),
        Cmd::Bench(b) => bench::run(b),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tbbridge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

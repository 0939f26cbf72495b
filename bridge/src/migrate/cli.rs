//! `tbbridge migrate`: drives both QEMUs over QMP for the common case.
//!
//! The destination QEMU runs with `-incoming defer` and the source QEMU
//! with the VM; the bridges carry `[migrate]` (source: `listen`,
//! destination: `connect`). This sets the capabilities and parameters on
//! both sides (multifd channels on the destination before it listens),
//! starts the destination listening on its `-incoming` socket and the
//! source migrating to the bridge's socket, shows progress from
//! `query-migrate`, and prints the total time, downtime and throughput.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use super::qmp::Qmp;
use crate::units::parse_size;

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// QMP socket of the source QEMU (`-qmp unix:PATH,server,wait=off`).
    #[arg(long)]
    pub source_qmp: PathBuf,
    /// QMP socket of the destination QEMU (started with `-incoming defer`).
    #[arg(long)]
    pub dest_qmp: PathBuf,
    /// Where the source migrates to: the source bridge's `[migrate] listen`
    /// socket (`unix:/run/tbbridge/migrate.sock`).
    #[arg(long)]
    pub to: String,
    /// Where the destination QEMU listens: the destination bridge's
    /// `[migrate] connect` socket (`unix:/run/qemu/incoming.sock`).
    #[arg(long)]
    pub incoming: String,
    /// Multifd channels (0: a single channel).
    #[arg(long, default_value_t = 0)]
    pub multifd: u32,
    /// Bandwidth limit in bytes/s (K/M/G); QEMU's default (128 MiB/s) would
    /// hide the cable, so it is lifted unless given.
    #[arg(long, value_parser = parse_size, default_value = "64G")]
    pub max_bandwidth: u64,
    /// Longest pause of the VM QEMU may plan for, milliseconds.
    #[arg(long, default_value_t = 300)]
    pub downtime_ms: u64,
    /// Resume the VM on the destination when the migration completed.
    #[arg(long = "cont")]
    pub cont: bool,
    /// Give up after this many seconds (the migration is cancelled).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Print one JSON document with the result.
    #[arg(long)]
    pub json: bool,
}

fn unix_uri(s: &str) -> anyhow::Result<String> {
    let p = s.strip_prefix("unix:").unwrap_or(s);
    if !p.starts_with('/') {
        bail!("{s:?}: a Unix socket path (unix:/path)");
    }
    Ok(format!("unix:{p}"))
}

fn capabilities(q: &mut Qmp, multifd: bool) -> anyhow::Result<()> {
    q.execute(
        "migrate-set-capabilities",
        json!({ "capabilities": [ { "capability": "multifd", "state": multifd } ] }),
    )?;
    Ok(())
}

pub fn run(a: MigrateArgs) -> anyhow::Result<()> {
    let (to, incoming) = (unix_uri(&a.to)?, unix_uri(&a.incoming)?);
    let mut dst = Qmp::connect(&a.dest_qmp).context("the destination QEMU")?;
    let st = dst.status()?;
    if st != "inmigrate" {
        bail!(
            "the destination QEMU is {st:?}, not waiting for a migration (start it with -incoming defer)"
        );
    }
    let mut src = Qmp::connect(&a.source_qmp).context("the source QEMU")?;
    let multifd = a.multifd > 0;
    capabilities(&mut dst, multifd)?;
    capabilities(&mut src, multifd)?;
    if multifd {
        dst.execute(
            "migrate-set-parameters",
            json!({ "multifd-channels": a.multifd }),
        )?;
    }
    dst.execute("migrate-incoming", json!({ "uri": incoming }))?;
    let mut params = json!({
        "max-bandwidth": a.max_bandwidth,
        "downtime-limit": a.downtime_ms,
    });
    if multifd {
        params["multifd-channels"] = json!(a.multifd);
    }
    src.execute("migrate-set-parameters", params)?;
    let start = Instant::now();
    src.execute("migrate", json!({ "uri": to }))?;
    let tty = std::io::stderr().is_terminal() && !a.json;
    let deadline = start + Duration::from_secs(a.timeout);
    let done = loop {
        let q = src.execute("query-migrate", json!({}))?;
        match q.get("status").and_then(Value::as_str).unwrap_or("") {
            "completed" => break q,
            "failed" | "cancelled" => {
                if tty {
                    eprintln!();
                }
                bail!(
                    "migration {}: {}",
                    q["status"].as_str().unwrap_or("failed"),
                    q.get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                );
            }
            _ => {}
        }
        if tty {
            let ram = |k: &str| q.pointer(&format!("/ram/{k}")).and_then(Value::as_u64);
            if let (Some(done), Some(total)) = (ram("transferred"), ram("total")) {
                eprint!(
                    "\r{} transferred of {} RAM, {:.1} s",
                    crate::units::bytes(done),
                    crate::units::bytes(total),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        if Instant::now() > deadline {
            let _ = src.execute("migrate_cancel", json!({}));
            bail!(
                "migration did not complete within {} s; cancelled",
                a.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if tty {
        eprintln!();
    }
    let total_ms = done.get("total-time").and_then(Value::as_u64).unwrap_or(0);
    let downtime_ms = done.get("downtime").and_then(Value::as_u64).unwrap_or(0);
    let bytes = done
        .pointer("/ram/transferred")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    // The source is done once it sent everything; the destination is
    // still loading what the bridges carry.
    let t = Instant::now();
    loop {
        let d = dst.execute("query-migrate", json!({}))?;
        match d.get("status").and_then(Value::as_str).unwrap_or("") {
            "completed" => break,
            "failed" | "cancelled" => bail!(
                "the destination's migration {}: {}",
                d["status"].as_str().unwrap_or("failed"),
                d.get("error-desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
            ),
            _ => {}
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the source completed, the destination did not finish loading within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let total_ms = total_ms.max(start.elapsed().as_millis() as u64);
    let mut dest_status = dst.status()?;
    if a.cont {
        dst.execute("cont", json!({}))?;
        let t = Instant::now();
        loop {
            dest_status = dst.status()?;
            if dest_status == "running" || t.elapsed() > Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if dest_status != "running" {
            bail!("the destination VM is {dest_status:?} after cont");
        }
    }
    let gbps = if total_ms > 0 {
        bytes as f64 * 8.0 / (total_ms as f64 / 1000.0) / 1e9
    } else {
        0.0
    };
    if a.json {
        println!(
            "{}",
            json!({
                "total_ms": total_ms, "downtime_ms": downtime_ms, "ram_bytes": bytes,
                "gbit_per_s": gbps, "multifd": a.multifd, "destination": dest_status,
            })
        );
    } else {
        println!(
            "migration completed: total {total_ms} ms (until the destination loaded it all), \
             downtime {downtime_ms} ms, {} of RAM \
             at {gbps:.2} Gbit/s{}; destination {dest_status}",
            crate::units::bytes(bytes),
            if multifd {
                format!(" over {} multifd channels", a.multifd)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

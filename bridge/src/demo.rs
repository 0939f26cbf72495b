//! `tbbridge demo`: the whole thing on one machine with no hardware.
//!
//! Two network namespaces, an emulated cable between them, a `tbbridge up`
//! daemon in each with a TUN interface (198.18.0.1/30 and 198.18.0.2/30),
//! a ping across, a short TCP throughput test, then everything is removed
//! again, also on Ctrl-C.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::daemon::{control, paths::InstancePaths};
use crate::netns::{self, NetNs};

const ADDR_A: &str = "198.18.0.1";
const ADDR_B: &str = "198.18.0.2";

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Seconds of the throughput test.
    #[arg(short = 't', long, default_value_t = 3)]
    pub time: u64,
    /// Emulated cable rate cap in bytes/s (K/M/G), default none.
    #[arg(long)]
    pub rate: Option<String>,
}

/// Everything the demo started; dropping it stops and removes all of it.
struct Demo {
    children: Vec<Child>,
    instances: Vec<String>,
    dir: PathBuf,
    // Declared last: namespaces go after the daemons in them stopped.
    ns: Vec<NetNs>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for name in &self.instances {
            let p = InstancePaths::new(name);
            let _ = control::request(&p.socket, "down", Duration::from_secs(2));
        }
        let deadline = Instant::now() + Duration::from_secs(8);
        for c in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.ns.clear();
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(why) = netns::unavailable() {
        bail!("the demo {why}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    install_sigint(&stop);
    let tag = std::process::id();
    let exe = std::env::current_exe().context("finding the tbbridge executable")?;
    let dir = std::env::temp_dir().join(format!("tbbridge-demo-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let mut demo = Demo {
        children: Vec::new(),
        instances: Vec::new(),
        dir: dir.clone(),
        ns: Vec::new(),
    };

    let cable = format!("demo-{tag}");
    println!("==> emulated cable {cable}");
    let mut c = Command::new(&exe);
    c.args(["cable", "run", &cable]);
    if let Some(r) = &args.rate {
        c.args(["--rate", r]);
    }
    demo.children.push(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the cable")?,
    );

    for (end, addr) in [("a", ADDR_A), ("b", ADDR_B)] {
        let ns = NetNs::new(&format!("tbdemo-{tag}-{end}"))?;
        let name = format!("demo-{tag}-{end}");
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[device]\npath = \"emu:{cable}/{end}\"\n\n[interface]\nname = \"tb0\"\naddresses = [\"{addr}/30\"]\n"
            ),
        )?;
        println!(
            "==> namespace {} : tbbridge up {name} (tb0 {addr}/30)",
            ns.name()
        );
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = ns
            .cmd(
                &exe.to_string_lossy(),
                &[
                    "up",
                    &name,
                    "--config",
                    &cfg.to_string_lossy(),
                    "--foreground",
                ],
            )
            .env("TBBRIDGE_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tbbridge up")?;
        demo.children.push(child);
        demo.instances.push(name);
        demo.ns.push(ns);
    }
    wait_connected(&demo, &stop)?;

    let (a, b) = (&demo.ns[0], &demo.ns[1]);
    println!("==> ping {ADDR_B} from {}", a.name());
    let out = netns::run(&mut a.cmd("ping", &["-c", "3", "-i", "0.2", "-W", "2", ADDR_B]))?;
    for l in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("time=") || l.contains("rtt"))
    {
        println!("    {l}");
    }
    check_stop(&stop)?;
    println!(
        "==> TCP throughput {} -> {ADDR_B}, {} s",
        a.name(),
        args.time
    );
    let (bytes, secs) = tcp_throughput(a, b, Duration::from_secs(args.time))?;
    println!(
        "    {:.2} GBytes in {secs:.2} s = {:.2} Gbit/s (one TCP stream through tb0, checked byte for byte)",
        bytes as f64 / (1u64 << 30) as f64,
        bytes as f64 * 8.0 / secs / 1e9
    );
    println!("==> status");
    for name in &demo.instances {
        let p = InstancePaths::new(name);
        if let Ok(v) = control::request(&p.socket, "status", Duration::from_secs(2)) {
            println!(
                "    {name}: connected={} rtt_us={} tx={} rx={}",
                v.pointer("/link/connected")
                    .unwrap_or(&serde_json::Value::Null),
                v.pointer("/link/rtt_us")
                    .unwrap_or(&serde_json::Value::Null),
                v.pointer("/session/bytes_tx")
                    .unwrap_or(&serde_json::Value::Null),
                v.pointer("/session/bytes_rx")
                    .unwrap_or(&serde_json::Value::Null),
            );
        }
    }
    println!("==> cleaning up");
    drop(demo);
    println!("done");
    Ok(())
}

fn check_stop(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted; cleaned up");
    }
    Ok(())
}

fn wait_connected(demo: &Demo, stop: &AtomicBool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        check_stop(stop)?;
        let all = demo.instances.iter().all(|n| {
            control::request(
                &InstancePaths::new(n).socket,
                "status",
                Duration::from_secs(1),
            )
            .ok()
            .and_then(|v| {
                v.pointer("/link/connected")
                    .and_then(serde_json::Value::as_bool)
            }) == Some(true)
        });
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = demo
                .instances
                .iter()
                .map(|n| {
                    std::fs::read_to_string(demo.dir.join(format!("{n}.log"))).unwrap_or_default()
                })
                .collect();
            bail!(
                "the bridges did not connect within 20 s; logs:\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One TCP stream from namespace `a` to `b` (at the demo's address) for
/// `dur`; the receiver checks every byte. Returns (bytes, seconds).
pub fn tcp_throughput(a: &NetNs, b: &NetNs, dur: Duration) -> anyhow::Result<(u64, f64)> {
    tcp_throughput_to(a, b, ADDR_B, dur)
}

/// One TCP stream from namespace `a` to `addr` in namespace `b` for `dur`;
/// the receiver checks every byte against the sender's pattern.
pub fn tcp_throughput_to(
    a: &NetNs,
    b: &NetNs,
    addr: &str,
    dur: Duration,
) -> anyhow::Result<(u64, f64)> {
    let addr: std::net::IpAddr = addr.parse().context("address")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = b.spawn(move || {
        let l = TcpListener::bind((addr, 5201)).with_context(|| format!("listening on {addr}"))?;
        let _ = ready_tx.send(());
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total: u64 = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            for (i, b) in buf[..n].iter().enumerate() {
                if *b != pattern_byte(total + i as u64) {
                    bail!("byte {} differs", total + i as u64);
                }
            }
            total += n as u64;
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("server did not start")?;
    let client = a.spawn(move || {
        let mut s =
            TcpStream::connect((addr, 5201)).with_context(|| format!("connecting to {addr}"))?;
        let chunk: Vec<u8> = (0..(1u64 << 20)).map(pattern_byte).collect();
        let start = Instant::now();
        let mut sent: u64 = 0;
        while start.elapsed() < dur {
            // The pattern repeats every 1 MiB, so aligned chunks line up.
            s.write_all(&chunk)?;
            sent += chunk.len() as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok((sent, start))
    });
    let (sent, start) = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))??;
    let got = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(got == sent, "sent {sent} bytes, received {got}");
    Ok((got, secs))
}

fn pattern_byte(i: u64) -> u8 {
    let i = i % (1 << 20);
    (i.wrapping_mul(2_654_435_761) >> 7) as u8
}

fn install_sigint(stop: &Arc<AtomicBool>) {
    static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let _ = STOP.set(stop.clone());
    extern "C" fn on_sigint(_: libc::c_int) {
        if let Some(s) = STOP.get() {
            s.store(true, Ordering::Relaxed);
        }
    }
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

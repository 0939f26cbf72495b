//! `tbbridge demo`: the whole thing on one machine with no hardware.
//!
//! Two network namespaces, an emulated cable between them, a `tbbridge up`
//! daemon in each with a TUN interface (198.18.0.1/30 and 198.18.0.2/30),
//! a ping across, a short TCP throughput test through the NIC, an HTTP
//! download through a socket proxy (`[[forward]]` on A, `[[service]]` on
//! B), a file through a byte pipe (`tbbridge pipe` to B's `[[pipe]]`),
//! each checked byte for byte, then everything is removed again, also on
//! Ctrl-C.

mod traffic;

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

use self::traffic::WEB_PORT;
pub use self::traffic::{tcp_throughput, tcp_throughput_to};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Seconds of the throughput test.
    #[arg(short = 't', long, default_value_t = 3)]
    pub time: u64,
    /// Emulated cable rate cap in bytes/s (K/M/G), default none.
    #[arg(long)]
    pub rate: Option<String>,
    /// Bytes of the HTTP download and of the piped file (K/M/G).
    #[arg(long, default_value = "256M")]
    pub size: String,
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
    if Command::new("ping").arg("-V").output().is_err() {
        bail!("the demo needs `ping` (apt-get install iputils-ping)");
    }
    let size = crate::units::parse_size(&args.size)
        .map_err(|e| anyhow::anyhow!("--size {}: {e}", args.size))? as usize;
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

    let received = dir.join("received.bin");
    for (end, addr) in [("a", ADDR_A), ("b", ADDR_B)] {
        let ns = NetNs::new(&format!("tbdemo-{tag}-{end}"))?;
        let name = format!("demo-{tag}-{end}");
        let cfg = dir.join(format!("{name}.toml"));
        // A forwards its loopback's web port to B's web server; B keeps
        // what A pipes to it.
        let front_ends = if end == "a" {
            format!("[[forward]]\nname = \"web\"\nlisten = \"tcp:127.0.0.1:{WEB_PORT}\"\n")
        } else {
            format!(
                "[[service]]\nname = \"web\"\nconnect = \"tcp:127.0.0.1:{WEB_PORT}\"\n\n\
                 [[pipe]]\nname = \"backup\"\nfile = \"{}\"\n",
                received.display()
            )
        };
        std::fs::write(
            &cfg,
            format!(
                "[device]\npath = \"emu:{cable}/{end}\"\n\n[interface]\nname = \"tb0\"\naddresses = [\"{addr}/30\"]\n\n{front_ends}"
            ),
        )?;
        println!(
            "==> namespace {} : tbbridge up {name} (tb0 {addr}/30, {})",
            ns.name(),
            if end == "a" {
                "[[forward]] web"
            } else {
                "[[service]] web, [[pipe]] backup"
            }
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
    check_stop(&stop)?;
    let mib = size as f64 / f64::from(1u32 << 20);
    println!(
        "==> ping {ADDR_B} from {} every 0.2 s while a forward and a pipe fill the cable",
        a.name()
    );
    let pinger = a
        .cmd("ping", &["-i", "0.2", "-W", "2", ADDR_B])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ping")?;
    let pinger = Pinger(Some(pinger));
    println!(
        "==> HTTP GET of {mib:.0} MiB from {}'s 127.0.0.1:{WEB_PORT} ([[forward]] web) \
         to the web server on {}'s 127.0.0.1:{WEB_PORT} ([[service]] web)",
        a.name(),
        b.name()
    );
    let secs = traffic::http_through_forward(a, b, size)?;
    println!(
        "    {mib:.0} MiB in {secs:.2} s = {:.2} Gbit/s, SHA-256 matches",
        size as f64 * 8.0 / secs / 1e9
    );
    check_stop(&stop)?;
    println!(
        "==> tbbridge pipe {} backup < {mib:.0} MiB file (B's [[pipe]] backup writes {})",
        demo.instances[0],
        received.display()
    );
    let secs = traffic::file_through_pipe(
        &exe,
        &demo.instances[0],
        &dir.join("sent.bin"),
        &received,
        size,
    )?;
    println!(
        "    {mib:.0} MiB in {secs:.2} s = {:.2} Gbit/s, SHA-256 matches",
        size as f64 * 8.0 / secs / 1e9
    );
    for l in pinger
        .finish()?
        .lines()
        .filter(|l| l.contains("packets") || l.contains("rtt"))
    {
        println!("    ping meanwhile: {l}");
    }
    println!("==> status");
    for name in &demo.instances {
        let p = InstancePaths::new(name);
        if let Ok(v) = control::request(&p.socket, "status", Duration::from_secs(2)) {
            print_status(name, &v);
        }
    }
    println!("==> cleaning up");
    drop(demo);
    println!("done");
    Ok(())
}

/// A background `ping`; interrupted (for its summary) or killed when
/// dropped.
struct Pinger(Option<Child>);

impl Pinger {
    /// Interrupts it and returns what it printed.
    fn finish(mut self) -> anyhow::Result<String> {
        let Some(c) = self.0.take() else {
            return Ok(String::new());
        };
        // SAFETY: kill with a pid of our own child, which has not been
        // waited for yet.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGINT);
        }
        let out = c.wait_with_output().context("waiting for ping")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The link's line and one line per front-end of a daemon's status.
fn print_status(name: &str, v: &serde_json::Value) {
    let n = |v: &serde_json::Value, k: &str| v.pointer(k).and_then(serde_json::Value::as_u64);
    let show = |o: Option<u64>| o.map_or("-".to_owned(), |x| x.to_string());
    println!(
        "    {name}: link connected={} rtt_us={} bytes tx={} rx={}",
        v.pointer("/link/connected")
            .and_then(serde_json::Value::as_bool)
            == Some(true),
        show(n(v, "/link/rtt_us")),
        show(n(v, "/session/bytes_tx")),
        show(n(v, "/session/bytes_rx")),
    );
    for fe in v
        .get("front_ends")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        let c = fe.get("counters").cloned().unwrap_or_default();
        let what = if let Some(tx) = n(&c, "/stats/tx/packets") {
            format!(
                "packets tx={tx} rx={}, queue drops aqm={} overflow={}",
                show(n(&c, "/stats/rx/packets")),
                show(n(&c, "/stats/queue/drops/aqm")),
                show(n(&c, "/stats/queue/drops/overflow")),
            )
        } else if let Some(acc) = n(&c, "/stats/accepted") {
            format!(
                "connections={acc} active={} bytes out={} in={}",
                show(n(&c, "/stats/active")),
                show(n(&c, "/stats/bytes_out")),
                show(n(&c, "/stats/bytes_in")),
            )
        } else if let Some(done) = n(&c, "/completed") {
            format!(
                "completed={done} failed={} bytes={}",
                show(n(&c, "/failed")),
                show(n(&c, "/bytes")),
            )
        } else {
            c.to_string()
        };
        println!(
            "      {:<18} {:<8} restarts={} {what}",
            fe.get("name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?"),
            fe.get("state")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?"),
            show(n(fe, "/restarts")),
        );
    }
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

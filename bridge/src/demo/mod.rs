//! `tbbridge demo`: the whole thing on one machine with no hardware.
//!
//! Two network namespaces stand for two hosts (`host-a`, `host-b`, each
//! with its own host name and a fake `/sys` and configfs), an emulated
//! cable between them (`tbbridge cable run --host-a --host-b`, which shows
//! each host the other as a Thunderbolt peer), then as an operator would:
//!
//! 1. `tbbridge up` with no config on each host: the peer is found, the
//!    stream and the addresses derived (an IPv4 /30 from 169.254.0.0/16
//!    and IPv6 link-local); a ping across both, a TCP stream through the
//!    NIC checked byte for byte;
//! 2. the setup kept (`tbbridge up --print-config`) and edited: a
//!    `[[forward]] web` added on A, `[[service]] web` and `[[pipe]] backup`
//!    on B, brought up again from those files; an HTTP download through
//!    the forward and a file through `tbbridge pipe`, each checked by
//!    SHA-256, with a ping running meanwhile;
//!
//! then everything is removed again, also on Ctrl-C.

mod traffic;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

use crate::daemon::control;
use crate::netns::{self, NetNs};

/// The instance name both zero-configuration daemons take.
const INSTANCE: &str = tbbridge_config::auto::AUTO_INSTANCE;

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

/// One of the demo's hosts: a namespace with its own host name, a fake
/// `/` for `--sys-root` and a runtime directory for its daemon.
struct Host {
    hostname: String,
    root: PathBuf,
    run: PathBuf,
    ns: NetNs,
}

impl Host {
    /// `tbbridge ARGS` on this host: in its namespace, under its host
    /// name (`unshare -u`), with its own runtime directory.
    fn tbbridge(&self, exe: &Path, args: &[&str]) -> Command {
        let exe = exe.to_string_lossy();
        let mut all = vec![
            "-u",
            "sh",
            "-c",
            "hostname \"$0\" && exec \"$@\"",
            &self.hostname,
            &exe,
        ];
        all.extend_from_slice(args);
        let mut c = self.ns.cmd("unshare", &all);
        c.env("TBBRIDGE_RUN_DIR", &self.run);
        c
    }

    fn socket(&self) -> PathBuf {
        self.run.join(format!("{INSTANCE}.sock"))
    }

    fn status(&self) -> Option<Value> {
        control::request(&self.socket(), "status", Duration::from_secs(1)).ok()
    }

    fn log(&self) -> PathBuf {
        self.run.join("demo.log")
    }
}

/// Everything the demo started; dropping it stops and removes all of it.
struct Demo {
    daemons: Vec<Child>,
    cable: Option<Child>,
    dir: PathBuf,
    // Declared last: namespaces go after the daemons in them stopped.
    hosts: Vec<Host>,
}

impl Demo {
    /// `down` to both daemons, and waits for them to exit.
    fn stop_daemons(&mut self) {
        for h in &self.hosts {
            let _ = control::request(&h.socket(), "down", Duration::from_secs(2));
        }
        let deadline = Instant::now() + Duration::from_secs(8);
        for c in &mut self.daemons {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.daemons.clear();
    }

    /// `tbbridge ARGS --foreground` on every host (`args` of the host),
    /// logging to the host's demo log.
    fn start_daemons(
        &mut self,
        exe: &Path,
        args: impl Fn(&Host) -> Vec<String>,
    ) -> anyhow::Result<()> {
        for h in &self.hosts {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(h.log())?;
            let a = args(h);
            let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
            a.push("--foreground");
            let child = h
                .tbbridge(exe, &a)
                .env("TBBRIDGE_LOG", "info")
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting tbbridge up")?;
            self.daemons.push(child);
        }
        Ok(())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop_daemons();
        if let Some(c) = &mut self.cable {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.hosts.clear();
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(why) = netns::unavailable() {
        bail!("the demo {why}");
    }
    if Command::new("ping").arg("-V").output().is_err() {
        bail!("the demo needs `ping` (apt-get install iputils-ping)");
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        bail!("the demo needs `unshare` (apt-get install util-linux)");
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
        daemons: Vec::new(),
        cable: None,
        dir: dir.clone(),
        hosts: Vec::new(),
    };
    for end in ["a", "b"] {
        let hostname = format!("host-{end}");
        let run = dir.join(format!("run-{hostname}"));
        std::fs::create_dir_all(&run)?;
        demo.hosts.push(Host {
            root: dir.join(&hostname),
            run,
            ns: NetNs::new(&format!("tbdemo-{tag}-{end}"))?,
            hostname,
        });
    }

    let cable = format!("demo-{tag}");
    let (ha, hb) = (&demo.hosts[0], &demo.hosts[1]);
    println!(
        "==> emulated cable {cable} between {} (namespace {}) and {} (namespace {})",
        ha.hostname,
        ha.ns.name(),
        hb.hostname,
        hb.ns.name()
    );
    let mut c = Command::new(&exe);
    c.args(["cable", "run", &cable, "--host-a"])
        .arg(&ha.root)
        .arg("--host-b")
        .arg(&hb.root);
    if let Some(r) = &args.rate {
        c.args(["--rate", r]);
    }
    demo.cable = Some(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the cable")?,
    );

    // 1. Zero configuration: `tbbridge up` and nothing else.
    for h in &demo.hosts {
        println!(
            "==> {}: tbbridge up   (no config file; on this emulated host with --sys-root {})",
            h.hostname,
            h.root.display()
        );
    }
    demo.start_daemons(&exe, |h| {
        vec![
            "up".into(),
            "--sys-root".into(),
            h.root.to_string_lossy().into_owned(),
        ]
    })?;
    wait_connected(&demo, &stop)?;
    let (a, b) = (&demo.hosts[0], &demo.hosts[1]);
    for h in [a, b] {
        let v = h.status().unwrap_or_default();
        let peer = v
            .pointer("/link/peer_host/hostname")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let (v4, v6) = addresses(&h.ns, "tb0");
        println!(
            "    {}: tb0 {}, {}; peer: {peer}",
            h.hostname,
            v4.as_deref().unwrap_or("-"),
            v6.as_deref().unwrap_or("-")
        );
    }
    let (Some(peer4), Some(peer6)) = addresses(&b.ns, "tb0") else {
        bail!("{} has no derived addresses on tb0", b.hostname);
    };
    let peer4 = strip_len(&peer4).to_owned();
    let peer6 = format!("{}%tb0", strip_len(&peer6));
    for to in [&peer4, &peer6] {
        println!("==> ping {to} from {}", a.hostname);
        let out = netns::run(&mut a.ns.cmd("ping", &["-c", "3", "-i", "0.2", "-W", "2", to]))?;
        for l in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("time=") || l.contains("rtt"))
        {
            println!("    {l}");
        }
        check_stop(&stop)?;
    }
    println!(
        "==> TCP throughput {} -> {peer4}, {} s",
        a.hostname, args.time
    );
    let (bytes, secs) = tcp_throughput_to(&a.ns, &b.ns, &peer4, Duration::from_secs(args.time))?;
    println!(
        "    {:.2} GBytes in {secs:.2} s = {:.2} Gbit/s (one TCP stream through tb0, checked byte for byte)",
        bytes as f64 / (1u64 << 30) as f64,
        bytes as f64 * 8.0 / secs / 1e9
    );
    check_stop(&stop)?;

    // 2. Keep the setup, add front-ends, bring it up from the files.
    let received = dir.join("received.bin");
    let mut files = Vec::new();
    for (i, h) in demo.hosts.iter().enumerate() {
        let root = h.root.to_string_lossy().into_owned();
        let out =
            netns::run(&mut h.tbbridge(&exe, &["up", "--print-config", "--sys-root", &root]))?;
        let mut text = String::from_utf8(out.stdout).context("the printed config")?;
        // A forwards its loopback's web port to B's web server; B keeps
        // what A pipes to it.
        let (added, what) = if i == 0 {
            (
                format!("\n[[forward]]\nname = \"web\"\nlisten = \"tcp:127.0.0.1:{WEB_PORT}\"\n"),
                "[[forward]] web",
            )
        } else {
            (
                format!(
                    "\n[[service]]\nname = \"web\"\nconnect = \"tcp:127.0.0.1:{WEB_PORT}\"\n\n\
                     [[pipe]]\nname = \"backup\"\nfile = \"{}\"\n",
                    received.display()
                ),
                "[[service]] web, [[pipe]] backup",
            )
        };
        text.push_str(&added);
        let file = dir.join(format!("{}.toml", h.hostname));
        std::fs::write(&file, text)?;
        println!(
            "==> {}: tbbridge up --print-config > {}, plus {what}",
            h.hostname,
            file.display()
        );
        files.push(file);
    }
    demo.stop_daemons();
    for (h, f) in demo.hosts.iter().zip(&files) {
        println!(
            "==> {}: tbbridge down {INSTANCE}; tbbridge up {INSTANCE} --config {}",
            h.hostname,
            f.display()
        );
    }
    demo.start_daemons(&exe, |h| {
        let f = dir.join(format!("{}.toml", h.hostname));
        vec![
            "up".into(),
            INSTANCE.into(),
            "--config".into(),
            f.to_string_lossy().into_owned(),
        ]
    })?;
    wait_connected(&demo, &stop)?;

    let (a, b) = (&demo.hosts[0], &demo.hosts[1]);
    let mib = size as f64 / f64::from(1u32 << 20);
    println!(
        "==> ping {peer4} from {} every 0.2 s while a forward and a pipe fill the cable",
        a.hostname
    );
    let pinger =
        a.ns.cmd("ping", &["-i", "0.2", "-W", "2", &peer4])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping")?;
    let pinger = Pinger(Some(pinger));
    println!(
        "==> HTTP GET of {mib:.0} MiB from {}'s 127.0.0.1:{WEB_PORT} ([[forward]] web) \
         to the web server on {}'s 127.0.0.1:{WEB_PORT} ([[service]] web)",
        a.hostname, b.hostname
    );
    let secs = traffic::http_through_forward(&a.ns, &b.ns, size)?;
    println!(
        "    {mib:.0} MiB in {secs:.2} s = {:.2} Gbit/s, SHA-256 matches",
        size as f64 * 8.0 / secs / 1e9
    );
    check_stop(&stop)?;
    println!(
        "==> {}: tbbridge pipe {INSTANCE} backup < {mib:.0} MiB file ({}'s [[pipe]] backup writes {})",
        a.hostname,
        b.hostname,
        received.display()
    );
    let secs = traffic::file_through_pipe(
        a.tbbridge(&exe, &["pipe", INSTANCE, "backup"]),
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
    for h in &demo.hosts {
        if let Some(v) = h.status() {
            print_status(&h.hostname, &v);
        }
    }
    println!("==> cleaning up");
    drop(demo);
    println!("done");
    Ok(())
}

/// The IPv4 and the IPv6 link-local address (with prefix length) of
/// `ifname` in `ns`.
fn addresses(ns: &NetNs, ifname: &str) -> (Option<String>, Option<String>) {
    let Ok(out) = ns
        .cmd("ip", &["-j", "addr", "show", "dev", ifname])
        .output()
    else {
        return (None, None);
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut v4 = None;
    let mut v6 = None;
    for a in v
        .pointer("/0/addr_info")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let local = a.get("local").and_then(Value::as_str).unwrap_or_default();
        let len = a.get("prefixlen").and_then(Value::as_u64).unwrap_or(0);
        let it = Some(format!("{local}/{len}"));
        match a.get("family").and_then(Value::as_str) {
            Some("inet") => v4 = it,
            Some("inet6") if local.starts_with("fe80:") => v6 = it,
            _ => {}
        }
    }
    (v4, v6)
}

fn strip_len(a: &str) -> &str {
    a.split('/').next().unwrap_or(a)
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
        let what = crate::daemon::status::counters_line(&c);
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
        let all = demo.hosts.iter().all(|h| {
            h.status()
                .and_then(|v| v.pointer("/link/connected").and_then(Value::as_bool))
                == Some(true)
        });
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = demo
                .hosts
                .iter()
                .map(|h| {
                    format!(
                        "--- {}\n{}",
                        h.hostname,
                        std::fs::read_to_string(h.log()).unwrap_or_default()
                    )
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

//! Two hosts for end-to-end tests: a cross-process emulated cable
//! (`tbbridge cable run`), two network namespaces, a `tbbridge up` daemon
//! in each; everything removed on drop.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tbbridge::netns::NetNs;

/// The `tbbridge` binary beside the test executable (built by
/// `scripts/test` before the tests run).
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let b = dir.join("tbbridge");
    assert!(
        b.exists(),
        "{} missing: build it first (scripts/test does)",
        b.display()
    );
    b
}

/// Skips (see [`crate::skip`]) unless namespaces and TUN can be used.
pub fn skip_unless_possible() -> bool {
    match tbbridge::netns::unavailable() {
        Some(why) => crate::skip(&format!("this end-to-end test {why}")),
        None => false,
    }
}

/// Polls `f` every 50 ms until it holds; fails the test after `limit`.
pub fn wait(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cable, two namespaces, two daemons.
#[derive(Debug)]
pub struct Lab {
    /// Unique per process: names of the cable, namespaces and instances.
    pub tag: String,
    cable: Child,
    /// `TBBRIDGE_RUN_DIR` of both daemons.
    pub run_dir: tempfile::TempDir,
    /// Where the config files are written.
    pub cfg_dir: tempfile::TempDir,
    /// The two hosts, A and B.
    pub ns: Vec<NetNs>,
}

impl Lab {
    /// A cable `TAG<pid>` and namespaces `TAG<pid>-a`, `-b`.
    pub fn new(tag: &str) -> Lab {
        Self::with_cable(tag, &[])
    }

    /// [`new`](Self::new) with options of `tbbridge cable run` (a rate
    /// cap, seeded faults).
    pub fn with_cable(tag: &str, cable_args: &[&str]) -> Lab {
        let tag = format!("{tag}{}", std::process::id());
        let cable = Command::new(bin())
            .args(["cable", "run", &tag])
            .args(cable_args)
            .stdout(Stdio::null())
            .spawn()
            .expect("cable run");
        let lab = Lab {
            cable,
            run_dir: tempfile::tempdir().expect("tmp"),
            cfg_dir: tempfile::tempdir().expect("tmp"),
            ns: vec![
                NetNs::new(&format!("{tag}-a")).expect("ns a"),
                NetNs::new(&format!("{tag}-b")).expect("ns b"),
            ],
            tag,
        };
        let sock = PathBuf::from(format!("/run/tbbridge/cable/{}/a", lab.tag));
        wait(Duration::from_secs(10), "cable sockets", || sock.exists());
        lab
    }

    /// `tbbridge ARGS` in namespace `ns` (or here), with the lab's run dir.
    pub fn tb(&self, ns: Option<usize>, args: &[&str]) -> Command {
        let mut c = match ns {
            Some(i) => self.ns[i].cmd(&bin().to_string_lossy(), args),
            None => {
                let mut c = Command::new(bin());
                c.args(args);
                c
            }
        };
        c.env("TBBRIDGE_RUN_DIR", self.run_dir.path());
        c
    }

    /// The instance name of host `i`.
    pub fn name(&self, i: usize) -> String {
        format!("{}-{}", self.tag, ["a", "b"][i])
    }

    /// `tbbridge up` (detached) on host `i` with a `tb0` at `addr`.
    pub fn up(&self, i: usize, addr: &str) {
        self.up_with(
            i,
            &format!("[interface]\nname = \"tb0\"\naddresses = [\"{addr}\"]\n"),
        );
    }

    /// `tbbridge up` (detached) on host `i`; `rest` is the config after
    /// `[device]`.
    pub fn up_with(&self, i: usize, rest: &str) {
        let out = self.try_up(i, rest);
        assert!(
            out.status.success(),
            "up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `tbbridge up` on host `i`, whatever it returns.
    pub fn try_up(&self, i: usize, rest: &str) -> std::process::Output {
        let name = self.name(i);
        let cfg = self.cfg_dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[device]\npath = \"emu:{}/{}\"\n\n{rest}",
                self.tag,
                ["a", "b"][i]
            ),
        )
        .expect("config");
        self.tb(Some(i), &["up", &name, "--config", &cfg.to_string_lossy()])
            .output()
            .expect("up")
    }

    /// `tbbridge status --json` of host `i`.
    pub fn status(&self, i: usize) -> Value {
        let out = self
            .tb(None, &["status", &self.name(i), "--json"])
            .output()
            .expect("status");
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// The status of front-end `name` of host `i`.
    pub fn front_end(&self, i: usize, name: &str) -> Value {
        let st = self.status(i);
        st.get("front_ends")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|f| f.get("name").and_then(Value::as_str) == Some(name))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no front-end {name:?} in {st}"))
    }

    /// Host `i`'s link is up.
    pub fn connected(&self, i: usize) -> bool {
        self.status(i)
            .pointer("/link/connected")
            .and_then(Value::as_bool)
            == Some(true)
    }

    /// Waits until both links are up.
    pub fn wait_connected(&self) {
        wait(Duration::from_secs(20), "both links", || {
            self.connected(0) && self.connected(1)
        });
    }

    /// `tbbridge cable CMD` on the lab's cable.
    pub fn cable(&self, cmd: &str) {
        let out = self
            .tb(None, &["cable", cmd, &self.tag])
            .output()
            .expect("cable ctl");
        assert!(
            out.status.success(),
            "cable {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Two pings from host `from` to `to` answered.
    pub fn ping(&self, from: usize, to: &str) -> bool {
        self.ns[from]
            .cmd("ping", &["-c", "2", "-i", "0.2", "-W", "2", to])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `python3 -m http.server PORT` on host `i`'s loopback serving `dir`,
    /// once it listens.
    pub fn http_server(&self, i: usize, port: u16, dir: &std::path::Path) -> Proc {
        self.http_server_on(i, "127.0.0.1", port, dir)
    }

    /// [`http_server`](Self::http_server) bound to `addr` (an address of
    /// host `i`, e.g. its `tb0`'s).
    pub fn http_server_on(&self, i: usize, addr: &str, port: u16, dir: &std::path::Path) -> Proc {
        let p = Proc(
            self.ns[i]
                .cmd(
                    "python3",
                    &[
                        "-m",
                        "http.server",
                        &port.to_string(),
                        "--bind",
                        addr,
                        "--directory",
                        &dir.to_string_lossy(),
                    ],
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("http.server"),
        );
        self.wait_listening(i, port);
        p
    }

    /// An endless `iperf3` TCP stream from host 0 to host 1's `tb0`
    /// (198.18.0.2): the server (once it listens) and the client.
    pub fn iperf_through_tb0(&self) -> (Proc, Proc) {
        let server = Proc(
            self.ns[1]
                .cmd("iperf3", &["-s", "-B", "198.18.0.2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("iperf3 -s"),
        );
        self.wait_listening(1, 5201);
        let client = Proc(
            self.ns[0]
                .cmd("iperf3", &["-c", "198.18.0.2", "-t", "86400"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("iperf3 -c"),
        );
        (server, client)
    }

    /// Waits until something listens on TCP `port` of host `i`.
    pub fn wait_listening(&self, i: usize, port: u16) {
        wait(Duration::from_secs(10), &format!("port {port}"), || {
            self.ns[i]
                .cmd("sh", &["-c", &format!("ss -ltn | grep -q ':{port} '")])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// `/sys/class/net/tb0/carrier` of host `i`.
    pub fn carrier(&self, i: usize) -> String {
        let out = self.ns[i]
            .cmd("cat", &["/sys/class/net/tb0/carrier"])
            .output()
            .expect("cat");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test shows what the daemons said.
            for i in 0..2 {
                let log = self.run_dir.path().join(format!("{}.log", self.name(i)));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- {} (last {} lines) ---", log.display(), tail.len());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        for i in 0..2 {
            let _ = self.tb(None, &["down", &self.name(i)]).output();
        }
        let _ = self.cable.kill();
        let _ = self.cable.wait();
    }
}

/// Kills a child process when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs async code on a thread inside host `i`'s namespace.
pub fn in_ns<T: Send + 'static>(
    lab: &Lab,
    i: usize,
    f: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    lab.ns[i].spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f)
    })
}

/// Sends SIGINT to a running `ping` and returns (transmitted, received)
/// from its summary.
pub fn stop_ping(mut p: Proc) -> (u64, u64) {
    // SAFETY: kill(2) on a child we own.
    unsafe { libc::kill(p.0.id() as i32, libc::SIGINT) };
    let mut out = String::new();
    if let Some(mut so) = p.0.stdout.take() {
        let _ = so.read_to_string(&mut out);
    }
    let _ = p.0.wait();
    // "12 packets transmitted, 12 received, 0% packet loss, time 2203ms"
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out:?}"));
    let nums: Vec<u64> = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    eprintln!("ping meanwhile: {line}");
    if let Some(rtt) = out.lines().find(|l| l.starts_with("rtt")) {
        eprintln!("  {rtt}");
    }
    (nums[0], nums[1])
}

//! End to end, as an operator runs it: `tbbridge cable run`, then
//! `tbbridge up` in two network namespaces (real TUN devices), traffic,
//! a cable pull, `tbbridge down`. Needs root; skips with a reason otherwise.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tbbridge::netns::{self, NetNs};

/// The `tbbridge` binary next to this test's directory (built by
/// `scripts/test` before the tests run).
fn bin() -> PathBuf {
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

fn skip() -> bool {
    if let Some(why) = netns::unavailable() {
        eprintln!("SKIP: this end-to-end test {why}");
        return true;
    }
    false
}

/// A cable, two namespaces, two daemons; all removed on drop.
struct Lab {
    tag: String,
    cable: Child,
    run_dir: tempfile::TempDir,
    cfg_dir: tempfile::TempDir,
    ns: Vec<NetNs>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let tag = format!("{tag}{}", std::process::id());
        let cable = Command::new(bin())
            .args(["cable", "run", &tag])
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

    fn tb(&self, ns: Option<usize>, args: &[&str]) -> Command {
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

    fn name(&self, i: usize) -> String {
        format!("{}-{}", self.tag, ["a", "b"][i])
    }

    /// `tbbridge up` (detached) in namespace `i`.
    fn up(&self, i: usize, addr: &str) {
        let name = self.name(i);
        let cfg = self.cfg_dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[device]\npath = \"emu:{}/{}\"\n\n[interface]\nname = \"tb0\"\naddresses = [\"{addr}\"]\n",
                self.tag,
                ["a", "b"][i]
            ),
        )
        .expect("config");
        let out = self
            .tb(Some(i), &["up", &name, "--config", &cfg.to_string_lossy()])
            .output()
            .expect("up");
        assert!(
            out.status.success(),
            "up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn status(&self, i: usize) -> Value {
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

    fn connected(&self, i: usize) -> bool {
        self.status(i)
            .pointer("/link/connected")
            .and_then(Value::as_bool)
            == Some(true)
    }

    fn cable(&self, cmd: &str) {
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

    fn ping(&self, from: usize, to: &str) -> bool {
        self.ns[from]
            .cmd("ping", &["-c", "2", "-i", "0.2", "-W", "2", to])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn carrier(&self, i: usize) -> String {
        let out = self.ns[i]
            .cmd("cat", &["/sys/class/net/tb0/carrier"])
            .output()
            .expect("cat");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..2 {
            let _ = self.tb(None, &["down", &self.name(i)]).output();
        }
        let _ = self.cable.kill();
        let _ = self.cable.wait();
    }
}

fn wait(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_hosts_ping_tcp_unplug_replug_down() {
    if skip() {
        return;
    }
    let lab = Lab::new("tbe");
    lab.up(0, "198.18.0.1/30");
    lab.up(1, "198.18.0.2/30");
    wait(Duration::from_secs(20), "both links", || {
        lab.connected(0) && lab.connected(1)
    });

    assert!(lab.ping(0, "198.18.0.2"), "ping a -> b");
    assert!(lab.ping(1, "198.18.0.1"), "ping b -> a");

    let (bytes, secs) =
        tbbridge::demo::tcp_throughput(&lab.ns[0], &lab.ns[1], Duration::from_secs(2))
            .expect("TCP transfer checked byte for byte");
    assert!(bytes > 0);
    eprintln!(
        "TCP through tb0: {:.2} Gbit/s",
        bytes as f64 * 8.0 / secs / 1e9
    );

    // Pull the cable: the carrier goes down on both sides.
    lab.cable("unplug");
    wait(Duration::from_secs(10), "carrier down", || {
        lab.carrier(0) == "0" && lab.carrier(1) == "0"
    });
    assert!(
        !lab.ping(0, "198.18.0.2"),
        "ping crossed an unplugged cable"
    );
    // Plug it back: traffic flows again without anyone running `up`.
    lab.cable("replug");
    wait(Duration::from_secs(20), "relink", || {
        lab.connected(0) && lab.connected(1)
    });
    wait(Duration::from_secs(10), "carrier up", || {
        lab.carrier(0) == "1"
    });
    assert!(lab.ping(0, "198.18.0.2"), "ping after replug");
    let st = lab.status(0);
    assert!(
        st.pointer("/link/links_up").and_then(Value::as_u64) >= Some(2),
        "{st}"
    );

    // Down removes everything.
    for i in 0..2 {
        let out = lab
            .tb(None, &["down", &lab.name(i)])
            .output()
            .expect("down");
        assert!(
            out.status.success(),
            "down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let gone = lab.ns[i]
            .cmd("ip", &["link", "show", "tb0"])
            .output()
            .expect("ip");
        assert!(!gone.status.success(), "tb0 still exists after down");
        assert!(!lab
            .run_dir
            .path()
            .join(format!("{}.pid", lab.name(i)))
            .exists());
    }
}

#[test]
fn routed_traffic_from_a_third_namespace() {
    if skip() {
        return;
    }
    let lab = Lab::new("tbr");
    lab.up(0, "198.18.0.5/30");
    lab.up(1, "198.18.0.6/30");
    wait(Duration::from_secs(20), "both links", || {
        lab.connected(0) && lab.connected(1)
    });
    // Namespace C sits behind B on a veth pair; B routes between them.
    let c = NetNs::new(&format!("{}-c", lab.tag)).expect("ns c");
    let (b, a) = (&lab.ns[1], &lab.ns[0]);
    let veth_b = format!("vb{}", std::process::id() % 100_000);
    let run = |mut cmd: Command| netns::run(&mut cmd).expect("setup");
    run(b.cmd(
        "ip",
        &[
            "link",
            "add",
            &veth_b,
            "type",
            "veth",
            "peer",
            "name",
            "vc0",
            "netns",
            c.name(),
        ],
    ));
    run(b.cmd("ip", &["addr", "add", "198.19.1.1/30", "dev", &veth_b]));
    run(b.cmd("ip", &["link", "set", &veth_b, "up"]));
    run(b.cmd("sysctl", &["-qw", "net.ipv4.ip_forward=1"]));
    run(c.cmd("ip", &["addr", "add", "198.19.1.2/30", "dev", "vc0"]));
    run(c.cmd("ip", &["link", "set", "vc0", "up"]));
    run(c.cmd("ip", &["route", "add", "default", "via", "198.19.1.1"]));
    run(a.cmd("ip", &["route", "add", "198.19.1.0/30", "dev", "tb0"]));
    assert!(
        c.cmd("ping", &["-c", "2", "-i", "0.2", "-W", "2", "198.18.0.5"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "ping from C to A through B's tb0"
    );
    // TCP from C to A, byte for byte, through offloaded TUN and a forward.
    let (bytes, _) = tbbridge::demo::tcp_throughput_to(&c, a, "198.18.0.5", Duration::from_secs(2))
        .expect("routed TCP transfer");
    assert!(bytes > 1 << 20);
}

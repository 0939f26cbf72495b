//! Zero-configuration `tbbridge up` (no config file) on fake hosts and the
//! emulated cable, as an operator runs it: `tbbridge cable run NAME
//! --host-a DIR --host-b DIR` plugs a cable into two fake hosts (their
//! sysfs and configfs show the peer), and `tbbridge up --sys-root DIR` in
//! each host's namespace (its own host name, `unshare -u`) finds the peer
//! and derives the stream and the addresses. Needs root.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tbbridge::netns::NetNs;
use tbbridge_tests::lab::{bin, skip_unless_possible, wait, Proc};

const LIMIT: Duration = Duration::from_secs(20);

/// One fake host: a namespace, a `--sys-root`, a run directory.
struct Host {
    ns: NetNs,
    hostname: String,
    root: PathBuf,
    run: PathBuf,
}

/// Hosts and the cables between them; everything goes on drop.
struct World {
    _dir: tempfile::TempDir,
    tag: String,
    hosts: Vec<Host>,
    cables: Vec<Proc>,
}

impl World {
    fn new(tag: &str, n: usize) -> World {
        let tag = format!("{tag}{}", std::process::id());
        let dir = tempfile::tempdir().expect("tmp");
        let hosts = (0..n)
            .map(|i| {
                let hostname = format!("host-{}", (b'a' + i as u8) as char);
                let root = dir.path().join(&hostname);
                let run = dir.path().join(format!("run-{hostname}"));
                std::fs::create_dir_all(&run).expect("run dir");
                Host {
                    ns: NetNs::new(&format!("{tag}-{i}")).expect("ns"),
                    hostname,
                    root,
                    run,
                }
            })
            .collect();
        World {
            _dir: dir,
            tag,
            hosts,
            cables: Vec::new(),
        }
    }

    /// `tbbridge cable run` between hosts `a` and `b`; returns once both
    /// hosts show the peer.
    fn cable(&mut self, a: usize, b: usize) -> String {
        let name = format!("{}-c{}", self.tag, self.cables.len());
        let (ra, rb) = (&self.hosts[a].root, &self.hosts[b].root);
        let child = Command::new(bin())
            .args(["cable", "run", &name, "--host-a"])
            .arg(ra)
            .arg("--host-b")
            .arg(rb)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cable run");
        self.cables.push(Proc(child));
        let sock = PathBuf::from(format!("/run/tbbridge/cable/{name}/a"));
        wait(LIMIT, "cable sockets and peers", || {
            sock.exists() && marker_for(ra, &name) && marker_for(rb, &name)
        });
        name
    }

    /// `tbbridge ARGS` on host `i`: in its namespace, under its host name.
    fn tb(&self, i: usize, args: &[&str]) -> Command {
        let h = &self.hosts[i];
        let mut all = vec![
            "-u",
            "sh",
            "-c",
            "hostname \"$0\" && exec \"$@\"",
            &h.hostname,
        ];
        let b = bin();
        let b = b.to_string_lossy();
        all.push(&b);
        all.extend_from_slice(args);
        let mut c = h.ns.cmd("unshare", &all);
        c.env("TBBRIDGE_RUN_DIR", &h.run);
        c
    }

    /// `tbbridge up ARGS --sys-root DIR` on host `i`.
    fn up(&self, i: usize, args: &[&str]) -> Output {
        let root = self.hosts[i].root.to_string_lossy().into_owned();
        let mut a = vec!["up"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--sys-root", &root]);
        self.tb(i, &a).output().expect("up")
    }

    fn up_ok(&self, i: usize, args: &[&str]) {
        ok(i, self.up(i, args));
    }

    fn status(&self, i: usize, name: &str) -> Value {
        let out = Command::new(bin())
            .args(["status", name, "--json"])
            .env("TBBRIDGE_RUN_DIR", &self.hosts[i].run)
            .output()
            .expect("status");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn connected(&self, i: usize, name: &str) -> bool {
        self.status(i, name).pointer("/link/connected") == Some(&Value::Bool(true))
    }

    /// The IPv4 address (with prefix) and the IPv6 link-local addresses
    /// of interface `ifname` on host `i`.
    fn addrs(&self, i: usize, ifname: &str) -> (Option<(Ipv4Addr, u64)>, Vec<String>) {
        let out = self.hosts[i]
            .ns
            .cmd("ip", &["-j", "addr", "show", "dev", ifname])
            .output()
            .expect("ip addr");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let infos = v
            .pointer("/0/addr_info")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut v4 = None;
        let mut v6 = Vec::new();
        for a in infos {
            let local = a.get("local").and_then(Value::as_str).unwrap_or_default();
            let len = a.get("prefixlen").and_then(Value::as_u64).unwrap_or(0);
            match a.get("family").and_then(Value::as_str) {
                Some("inet") => v4 = local.parse().ok().map(|ip| (ip, len)),
                Some("inet6") => v6.push(local.to_owned()),
                _ => {}
            }
        }
        (v4, v6)
    }

    fn ping(&self, from: usize, to: &str) -> bool {
        self.hosts[from]
            .ns
            .cmd("ping", &["-c", "2", "-i", "0.2", "-W", "2", to])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for h in &self.hosts {
            for name in ["tb0", "tb1"] {
                let _ = Command::new(bin())
                    .args(["down", name])
                    .env("TBBRIDGE_RUN_DIR", &h.run)
                    .output();
            }
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", h.ns.name()));
        }
        self.cables.clear();
    }
}

/// `up` on host `i` succeeded.
fn ok(i: usize, out: Output) {
    assert!(
        out.status.success(),
        "up on host {i} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Host `root` shows a peer on cable `name`.
fn marker_for(root: &Path, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(root.join("tbbridge-emu")) else {
        return false;
    };
    rd.filter_map(Result::ok).any(|e| {
        std::fs::read_to_string(e.path()).is_ok_and(|s| s.contains(&format!("emu:{name}/")))
    })
}

fn block(a: Ipv4Addr) -> u32 {
    u32::from(a) & !3
}

/// The two ends of a link: the same /30 of 169.254.1.0-169.254.254.255,
/// one `.1` and one `.2`; both ping each other over IPv4 and IPv6.
fn check_pair(w: &World, (a, ifa): (usize, &str), (b, ifb): (usize, &str)) -> u32 {
    let (va, la) = w.addrs(a, ifa);
    let (vb, lb) = w.addrs(b, ifb);
    let ((va, pa), (vb, pb)) = (va.expect("v4 on a"), vb.expect("v4 on b"));
    assert_eq!((pa, pb), (30, 30), "{va} {vb}");
    assert_eq!(block(va), block(vb), "one /30: {va} and {vb}");
    let mut ends = [u32::from(va) & 3, u32::from(vb) & 3];
    ends.sort_unstable();
    assert_eq!(ends, [1, 2], "{va} and {vb}");
    let o = va.octets();
    assert!(
        o[0] == 169 && o[1] == 254 && (1..=254).contains(&o[2]),
        "{va}"
    );
    assert!(w.ping(a, &vb.to_string()), "ping {va} -> {vb}");
    assert!(w.ping(b, &va.to_string()), "ping {vb} -> {va}");
    // Each side's derived link-local address answers too.
    let peer_ll = lb.first().expect("v6 on b").clone();
    assert!(la.iter().all(|l| l.starts_with("fe80:")), "{la:?}");
    assert!(
        !la.contains(&peer_ll),
        "link-local collision: {la:?} {lb:?}"
    );
    assert!(w.ping(a, &format!("{peer_ll}%{ifa}")), "ping {peer_ll}");
    block(va)
}

#[test]
fn two_hosts_without_a_config_come_up_and_the_printed_config_reproduces_it() {
    if skip_unless_possible() {
        return;
    }
    let mut w = World::new("tbz", 2);
    w.cable(0, 1);
    w.up_ok(0, &[]);
    w.up_ok(1, &[]);
    wait(LIMIT, "both links", || {
        w.connected(0, "tb0") && w.connected(1, "tb0")
    });
    let first = [all_addrs(&w, 0), all_addrs(&w, 1)];
    check_pair(&w, (0, "tb0"), (1, "tb0"));
    // The host names crossed in the handshake: `status` names the peer.
    let st = w.status(0, "tb0");
    assert_eq!(
        st.pointer("/link/peer_host/hostname")
            .and_then(Value::as_str),
        Some("host-b"),
        "{st}"
    );
    let text = w.tb(0, &["status", "tb0"]).output().expect("status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("peer:      host-b"), "{text}");

    // A second `up` of the running instance is refused and leaves the
    // config it runs from as it was; `down` removes that generated file.
    let generated = w.hosts[0].run.join("tb0.auto.toml");
    let before = std::fs::read_to_string(&generated).expect("tb0.auto.toml while up");
    std::fs::write(&generated, format!("{before}# kept\n")).expect("mark");
    let again = w.up(0, &[]);
    assert!(!again.status.success(), "a second up of tb0 must fail");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already up"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&generated).expect("still there"),
        format!("{before}# kept\n"),
        "the refused up rewrote the running config"
    );

    // `--print-config`, kept and edited (the opt-in hosts hook), then
    // fed back with `--config`: the same addresses on both hosts.
    for i in 0..2 {
        assert!(w.tb(i, &["down", "tb0"]).status().expect("down").success());
        let f = w.hosts[i].run.join("tb0.auto.toml");
        assert!(!f.exists(), "down left {}", f.display());
    }
    let mut files = Vec::new();
    let mut wants = Vec::new();
    for (i, had) in first.iter().enumerate() {
        let out = w.up(i, &["--auto", "--print-config"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let printed = tbbridge_config::parse(&text, Path::new("printed.toml")).expect("valid");
        let want: Vec<String> = printed
            .interface
            .expect("an interface")
            .addresses
            .iter()
            .map(|a| format!("{}/{}", a.addr, a.len))
            .collect();
        assert_eq!(want.len(), 2, "IPv4 and IPv6: {want:?}");
        for a in &want {
            assert!(
                had.contains(a),
                "printed {a}, the zero-configuration up had {had:?}"
            );
        }
        let kept = text.replace("[host]\n", "[host]\nhosts_file = \"/etc/hosts\"\n");
        assert_ne!(kept, text, "the printed config has a [host] section");
        let f = w.hosts[i].run.join("kept.toml");
        std::fs::write(&f, kept).expect("write");
        let etc = PathBuf::from(format!("/etc/netns/{}", w.hosts[i].ns.name()));
        std::fs::create_dir_all(&etc).expect("etc/netns");
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").expect("hosts");
        files.push(f);
        wants.push(want);
    }
    for (i, f) in files.iter().enumerate() {
        let out = w
            .tb(i, &["up", "tb0", "--config", &f.to_string_lossy()])
            .output();
        ok(i, out.expect("up"));
    }
    wait(LIMIT, "both links again", || {
        w.connected(0, "tb0") && w.connected(1, "tb0")
    });
    for (i, want) in wants.iter().enumerate() {
        let now = all_addrs(&w, i);
        for a in want {
            assert!(now.contains(a), "the kept config lost {a}: {now:?}");
        }
    }
    check_pair(&w, (0, "tb0"), (1, "tb0"));
    // The hook: the peer's name resolves to its address while connected.
    let (vb, _) = w.addrs(1, "tb0");
    let vb = vb.expect("v4").0.to_string();
    wait(LIMIT, "host-b in A's hosts file", || {
        let out = w.hosts[0]
            .ns
            .cmd("getent", &["hosts", "host-b"])
            .output()
            .expect("getent");
        String::from_utf8_lossy(&out.stdout).contains(&vb)
    });
    assert!(w.ping(0, "host-b"), "ping host-b by name");
    assert!(w.tb(0, &["down", "tb0"]).status().expect("down").success());
    let hosts = std::fs::read_to_string(format!("/etc/netns/{}/hosts", w.hosts[0].ns.name()))
        .expect("hosts");
    assert_eq!(hosts, "127.0.0.1 localhost\n", "down removes the line");
}

/// Every address of host `i`'s tb0 as `ADDR/LEN`.
fn all_addrs(w: &World, i: usize) -> Vec<String> {
    let out = w.hosts[i]
        .ns
        .cmd("ip", &["-j", "addr", "show", "dev", "tb0"])
        .output()
        .expect("ip addr");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.pointer("/0/addr_info")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let l = a.get("local")?.as_str()?;
            Some(format!("{l}/{}", a.get("prefixlen")?.as_u64()?))
        })
        .collect()
}

#[test]
fn three_hosts_in_a_line_two_cables_two_30s_and_no_guessing() {
    if skip_unless_possible() {
        return;
    }
    let mut w = World::new("tbz3", 3);
    let c0 = w.cable(0, 1);
    let c1 = w.cable(1, 2);
    // The middle host has two peers: it lists both and refuses to guess.
    let out = w.up(1, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up with two peers succeeded: {err}");
    assert!(
        err.contains("0-1.0")
            && err.contains("0-2.0")
            && err.contains("host-a")
            && err.contains("host-c"),
        "both peers listed: {err}"
    );
    assert!(err.contains("--service"), "says how to choose: {err}");
    assert!(w.status(1, "tb0").is_null(), "nothing came up");
    // One instance per peer, as the message says.
    w.up_ok(1, &["tb0", "--auto", "--service", "0-1.0"]);
    w.up_ok(1, &["tb1", "--auto", "--service", "0-2.0"]);
    w.up_ok(0, &[]);
    w.up_ok(2, &[]);
    wait(LIMIT, "all four links", || {
        w.connected(0, "tb0")
            && w.connected(1, "tb0")
            && w.connected(1, "tb1")
            && w.connected(2, "tb0")
    });
    assert_eq!(
        w.status(1, "tb0")
            .pointer("/device")
            .and_then(Value::as_str),
        Some(format!("emu:{c0}/b").as_str())
    );
    assert_eq!(
        w.status(1, "tb1")
            .pointer("/device")
            .and_then(Value::as_str),
        Some(format!("emu:{c1}/a").as_str())
    );
    let left = check_pair(&w, (0, "tb0"), (1, "tb0"));
    let right = check_pair(&w, (1, "tb1"), (2, "tb0"));
    assert_ne!(left, right, "two cables, two different /30s");
}

#[test]
fn a_host_whose_peer_is_not_there_yet_waits_and_comes_up() {
    if skip_unless_possible() {
        return;
    }
    let mut w = World::new("tbzw", 2);
    let log = w.hosts[0].run.join("up.err");
    let root = w.hosts[0].root.to_string_lossy().into_owned();
    let mut waiting = Proc(
        w.tb(0, &["up", "--sys-root", &root])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("up"),
    );
    wait(LIMIT, "up saying it waits", || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("waiting for one"))
    });
    assert!(
        waiting.0.try_wait().expect("try_wait").is_none(),
        "up gave up instead of waiting"
    );
    assert!(w.status(0, "tb0").is_null(), "nothing up before the peer");
    // The peer appears.
    w.cable(0, 1);
    wait(LIMIT, "the waiting up to finish", || {
        waiting.0.try_wait().ok().flatten().is_some()
    });
    let st = waiting.0.wait().expect("wait");
    assert!(
        st.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    w.up_ok(1, &[]);
    wait(LIMIT, "both links", || {
        w.connected(0, "tb0") && w.connected(1, "tb0")
    });
    check_pair(&w, (0, "tb0"), (1, "tb0"));
}

//! The TUN front-end end to end: two network namespaces joined by an
//! in-process emulated cable, a bridge per side (each on its own runtime,
//! like two processes) and a TUN interface `tb0` in each namespace, created
//! by a thread that entered the namespace with `setns`.
//!
//! Needs root (namespaces, TUN devices) and iproute2 + ping; skips with a
//! printed reason otherwise. Addresses come from 198.18.0.0/15 only, and
//! all traffic stays between the test's own namespaces.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tbbridge::tun::{self, TunCounters, TunDevice, TunOptions, TunStats};
use tbbridge_transport::device::emu::{CableOptions, EmuCable};
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::{CableEnd, SessionConfig};

const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The veth link between B and C (C is routed behind B).
const IP_BC_B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const IP_C: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and TUN devices)".into());
    }
    for (prog, arg) in [("ip", "-V"), ("ping", "-V")] {
        if Command::new(prog).arg(arg).output().is_err() {
            return Some(format!(
                "needs `{prog}` (apt-get install iproute2 iputils-ping)"
            ));
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("needs /dev/net/tun".into());
    }
    None
}

macro_rules! skip_unless_possible {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop (also when a test fails).
struct NetNs(String);

impl NetNs {
    fn new(tag: &str) -> NetNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tbt-{}-{}{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs(name);
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        run(&mut self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> bool {
        self.cmd(args).output().is_ok_and(|o| o.status.success())
    }

    /// Runs `f` on a thread that entered this namespace.
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        thread::spawn(move || {
            let f0 = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a namespace fd we hold; it only affects
            // this thread.
            let r = unsafe { libc::setns(f0.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread")
    }

    fn ping(&self, to: Ipv4Addr) -> bool {
        self.ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()])
    }

    /// The carrier of `tb0` ("1" or "0").
    fn carrier(&self) -> String {
        self.cmd(&["cat", "/sys/class/net/tb0/carrier"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    fn wait_carrier(&self, on: bool, within: Duration) {
        let want = if on { "1" } else { "0" };
        let t0 = Instant::now();
        loop {
            let c = self.carrier();
            if c == want {
                return;
            }
            assert!(
                t0.elapsed() < within,
                "{}: carrier {c:?}, wanted {want} within {within:?}",
                self.0
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// One side: a runtime (a stand-in for a process), its bridge on one end
/// of the cable and the TUN front-end on `tb0` in its namespace.
struct Side {
    rt: Option<tokio::runtime::Runtime>,
    stats: Arc<TunStats>,
    offload: bool,
    queues: usize,
}

impl Side {
    fn start(cable: &Arc<EmuCable>, end: CableEnd, ns: &NetNs, opts: TunOptions) -> Side {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let bridge = {
            let _g = rt.enter();
            Bridge::on_emu(cable, end, SessionConfig::default())
        };
        // The interface name is free again only once an earlier device of
        // the same name is gone; retry briefly.
        let t0 = Instant::now();
        let dev = loop {
            let o = opts.clone();
            match ns.enter(move || TunDevice::create(&o).map_err(|e| format!("{e:#}"))) {
                Ok(d) => break d,
                Err(e) if t0.elapsed() < Duration::from_secs(5) => {
                    eprintln!("retrying TUN creation: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("creating {} in {}: {e}", opts.name, ns.0),
            }
        };
        let (offload, queues) = (dev.offload(), dev.queues());
        let stats = Arc::new(TunStats::default());
        rt.spawn(tun::run(bridge, dev, stats.clone()));
        Side {
            rt: Some(rt),
            stats,
            offload,
            queues,
        }
    }

    fn counters(&self) -> TunCounters {
        self.stats.snapshot()
    }

    /// Stops everything at once, like a crashed process.
    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.kill();
    }
}

fn opts(addr: Ipv4Addr, offload: bool, queues: usize) -> TunOptions {
    TunOptions {
        addresses: vec![(IpAddr::V4(addr), 30)],
        offload,
        queues,
        ..TunOptions::new("tb0")
    }
}

/// Byte `i` of test stream `seed`.
fn pattern_byte(seed: u8, i: u64) -> u8 {
    ((i.wrapping_mul(2_654_435_761) >> 13) as u8) ^ seed ^ (i >> 20) as u8
}

fn fill(seed: u8, at: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, at + k as u64);
    }
}

fn send_pattern(s: &mut TcpStream, seed: u8, n: u64) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0;
    while at < n {
        let k = (n - at).min(buf.len() as u64) as usize;
        fill(seed, at, &mut buf[..k]);
        s.write_all(&buf[..k]).expect("write");
        at += k as u64;
    }
}

fn check_pattern(s: &mut TcpStream, seed: u8, n: u64) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; buf.len()];
    let mut at = 0;
    while at < n {
        let k = (n - at).min(buf.len() as u64) as usize;
        let got = s.read(&mut buf[..k]).expect("read");
        assert!(got > 0, "stream ended after {at} of {n} bytes");
        fill(seed, at, &mut want[..got]);
        if buf[..got] != want[..got] {
            let i = (0..got).find(|&i| buf[i] != want[i]).unwrap_or(0);
            panic!("byte {} differs", at + i as u64);
        }
        at += got as u64;
    }
}

/// A TCP connection from `client` to `server_ip` in `server`: the client
/// sends `up` bytes, the server checks them byte for byte and sends `down`
/// bytes back, which the client checks. Returns the duration.
fn tcp_transfer(
    server: &NetNs,
    server_ip: Ipv4Addr,
    client: &NetNs,
    up: u64,
    down: u64,
) -> Duration {
    let (tx, rx) = mpsc::channel();
    let server_path = format!("/var/run/netns/{}", server.0);
    let srv = thread::spawn(move || {
        enter_path(&server_path);
        let l = TcpListener::bind(SocketAddr::new(server_ip.into(), 0)).expect("bind");
        tx.send(l.local_addr().expect("addr")).expect("port");
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        check_pattern(&mut s, 1, up);
        send_pattern(&mut s, 2, down);
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).expect("server up");
    let t0 = Instant::now();
    client.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        send_pattern(&mut s, 1, up);
        check_pattern(&mut s, 2, down);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty(), "{} bytes too many", rest.len());
    });
    srv.join().expect("server");
    t0.elapsed()
}

fn enter_path(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: see NetNs::enter.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Namespace C behind B: a veth pair, forwarding on in B, routes both ways.
/// A needs a route to 198.19.0.0/30 via tb0 (its `TunOptions::routes`).
fn route_c_behind_b(b: &NetNs, c: &NetNs) {
    let vb = format!("tbv{}b", std::process::id() % 100_000);
    run(Command::new("ip").args([
        "link", "add", &vb, "netns", &b.0, "type", "veth", "peer", "name", "vc", "netns", &c.0,
    ]));
    b.run(&["ip", "addr", "add", &format!("{IP_BC_B}/30"), "dev", &vb]);
    b.run(&["ip", "link", "set", &vb, "up"]);
    b.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    c.run(&["ip", "addr", "add", &format!("{IP_C}/30"), "dev", "vc"]);
    c.run(&["ip", "link", "set", "vc", "up"]);
    c.run(&[
        "ip",
        "route",
        "add",
        "198.18.0.0/30",
        "via",
        &IP_BC_B.to_string(),
    ]);
}

/// Stops the daemon whose pid is in a pid file (the iperf3 server this test
/// started), in case it is still waiting for a client.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / (1 << 20) as f64
}

/// Both sides with offloads (A with two queues): ping, a checked TCP
/// transfer, traffic routed from a third namespace, unplug/replug with the
/// carrier following, and a peer restart that the surviving side recovers
/// from by itself.
#[test]
fn tun_pair_offload_unplug_and_peer_restart() {
    skip_unless_possible!();
    let (a, b, c) = (NetNs::new("a"), NetNs::new("b"), NetNs::new("c"));
    let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
    let mut opts_a = opts(IP_A, true, 2);
    opts_a.routes = vec![(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 0)), 30)];
    let side_a = Side::start(&cable, CableEnd::A, &a, opts_a);
    let mut side_b = Side::start(&cable, CableEnd::B, &b, opts(IP_B, true, 1));
    eprintln!(
        "A: offload {} queues {}; B: offload {} queues {}",
        side_a.offload, side_a.queues, side_b.offload, side_b.queues
    );
    a.wait_carrier(true, Duration::from_secs(10));
    b.wait_carrier(true, Duration::from_secs(10));

    assert!(a.ping(IP_B), "ping A -> B");
    assert!(b.ping(IP_A), "ping B -> A");
    // One large packet (no fragmentation at MTU 65520).
    assert!(a.ok(&[
        "ping",
        "-c",
        "2",
        "-W",
        "2",
        "-s",
        "60000",
        &IP_B.to_string()
    ]));

    let n = 64 << 20;
    let d = tcp_transfer(&a, IP_A, &b, n, 16 << 20);
    eprintln!(
        "TCP B -> A 64 MiB + A -> B 16 MiB in {d:?} ({:.0} MiB/s)",
        mib_per_s(n + (16 << 20), d)
    );

    // Routed: C -> B -> tb0 -> A and back, through the offloads.
    route_c_behind_b(&b, &c);
    assert!(c.ping(IP_A), "ping C -> A (routed)");
    let before = side_b.counters();
    let d = tcp_transfer(&a, IP_A, &c, 32 << 20, 32 << 20);
    eprintln!("routed TCP C <-> A 2 x 32 MiB in {d:?}");
    let after = side_b.counters();
    eprintln!("B after the routed transfer: {after:?}");
    if side_b.offload {
        assert!(
            after.tx_superpackets > before.tx_superpackets,
            "forwarded TCP crossed as superpackets"
        );
    }

    // Unplug: the carrier goes down on both sides; replug: back by itself.
    cable.unplug().expect("unplug");
    a.wait_carrier(false, Duration::from_secs(5));
    b.wait_carrier(false, Duration::from_secs(5));
    assert!(!a.ok(&["ping", "-c", "1", "-W", "1", &IP_B.to_string()]));
    cable.replug().expect("replug");
    a.wait_carrier(true, Duration::from_secs(10));
    b.wait_carrier(true, Duration::from_secs(10));
    assert!(a.ping(IP_B), "ping A -> B after replug");
    assert!(b.ping(IP_A), "ping B -> A after replug");

    // Peer restart: B dies (its interface with it) and starts again as a
    // new session; A's channels are reset and reopened without help.
    let opens_before = side_a.counters().channel_opens;
    side_b.kill();
    a.wait_carrier(false, Duration::from_secs(10));
    let side_b2 = Side::start(&cable, CableEnd::B, &b, opts(IP_B, true, 1));
    a.wait_carrier(true, Duration::from_secs(15));
    b.wait_carrier(true, Duration::from_secs(15));
    let t0 = Instant::now();
    while !a.ping(IP_B) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "ping A -> B after the peer restarted"
        );
    }
    assert!(b.ping(IP_A), "ping B -> A after the peer restarted");
    let d = tcp_transfer(&a, IP_A, &b, 16 << 20, 16 << 20);
    eprintln!("TCP after restart 2 x 16 MiB in {d:?}");
    let ca = side_a.counters();
    eprintln!("A: {ca:?}\nB2: {:?}", side_b2.counters());
    assert!(
        ca.channel_opens > opens_before,
        "A reopened its send channels"
    );
    assert!(ca.channel_resets > 0);
    assert_eq!(ca.drop_malformed_peer + ca.drop_malformed_tun, 0);
    drop(side_b2);
    drop(side_a);
}

/// A with offloads, B without: B segments A's superpackets and completes
/// partial checksums in software, for its own traffic and for traffic it
/// forwards to a namespace behind it.
#[test]
fn tun_pair_mixed_offload_routed() {
    skip_unless_possible!();
    let (a, b, c) = (NetNs::new("a"), NetNs::new("b"), NetNs::new("c"));
    let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
    let mut opts_a = opts(IP_A, true, 1);
    opts_a.routes = vec![(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 0)), 30)];
    let side_a = Side::start(&cable, CableEnd::A, &a, opts_a);
    let side_b = Side::start(&cable, CableEnd::B, &b, opts(IP_B, false, 1));
    assert!(!side_b.offload);
    a.wait_carrier(true, Duration::from_secs(10));
    b.wait_carrier(true, Duration::from_secs(10));
    assert!(a.ping(IP_B), "ping A -> B");
    assert!(b.ping(IP_A), "ping B -> A");

    let n = 64 << 20;
    let d = tcp_transfer(&b, IP_B, &a, n, n);
    eprintln!("TCP A <-> B 2 x 64 MiB in {d:?}");
    route_c_behind_b(&b, &c);
    assert!(c.ping(IP_A), "ping C -> A (routed)");
    let d = tcp_transfer(&c, IP_C, &a, 32 << 20, 32 << 20);
    eprintln!("routed TCP A <-> C 2 x 32 MiB in {d:?}");
    let (ca, cb) = (side_a.counters(), side_b.counters());
    eprintln!("A: {ca:?}\nB: {cb:?}");
    if side_a.offload {
        assert!(
            cb.rx_software_offload > 0,
            "B completed offloads in software"
        );
    }
    assert_eq!(cb.drop_malformed_peer + ca.drop_malformed_peer, 0);
    assert_eq!(cb.drop_tun_write + ca.drop_tun_write, 0);
}

/// Throughput figure (not run by default): iperf3, one TCP stream to A,
/// 5 s. `cargo test --release -p tbbridge-tests --test tun -- --ignored
/// --nocapture`. Environment: TBT_OFFLOAD=0 turns offloads off on both
/// sides, TBT_QUEUES=n, TBT_MTU=n, TBT_SECS=n, TBT_ROUTED=1 runs the client
/// in a namespace C routed behind B (veth, MTU 1500) instead of in B.
#[test]
#[ignore]
fn tun_iperf3() {
    skip_unless_possible!();
    if Command::new("iperf3").arg("-v").output().is_err() {
        eprintln!("skipping: needs iperf3");
        return;
    }
    let env = |k: &str| std::env::var(k).ok();
    let offload = env("TBT_OFFLOAD").is_none_or(|v| v != "0");
    let queues = env("TBT_QUEUES").and_then(|v| v.parse().ok()).unwrap_or(1);
    let mtu = env("TBT_MTU")
        .and_then(|v| v.parse().ok())
        .unwrap_or(tun::DEFAULT_MTU);
    let secs = env("TBT_SECS").unwrap_or_else(|| "5".into());
    let routed = env("TBT_ROUTED").is_some_and(|v| v == "1");
    let (a, b, c) = (NetNs::new("a"), NetNs::new("b"), NetNs::new("c"));
    let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
    let mut oa = opts(IP_A, offload, queues);
    oa.mtu = mtu;
    oa.routes = vec![(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 0)), 30)];
    let mut ob = opts(IP_B, offload, queues);
    ob.mtu = mtu;
    let side_a = Side::start(&cable, CableEnd::A, &a, oa);
    let side_b = Side::start(&cable, CableEnd::B, &b, ob);
    a.wait_carrier(true, Duration::from_secs(10));
    b.wait_carrier(true, Duration::from_secs(10));
    let client = if routed {
        route_c_behind_b(&b, &c);
        &c
    } else {
        &b
    };
    let pidfile = format!("/tmp/tbt-{}-iperf3.pid", std::process::id());
    let _server = KillOnDrop(pidfile.clone());
    a.run(&[
        "iperf3",
        "-s",
        "-D",
        "-1",
        "-I",
        &pidfile,
        "-B",
        &IP_A.to_string(),
    ]);
    thread::sleep(Duration::from_millis(300));
    let out = client.run(&["iperf3", "-c", &IP_A.to_string(), "-t", &secs, "-f", "g"]);
    println!(
        "offload {} queues {} mtu {mtu} routed {routed}\n{}",
        side_a.offload && side_b.offload,
        side_a.queues,
        String::from_utf8_lossy(&out.stdout)
    );
    println!("A: {:?}\nB: {:?}", side_a.counters(), side_b.counters());
}

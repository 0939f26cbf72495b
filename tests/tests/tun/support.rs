//! Shared by the TUN tests (`tun.rs`, `tun_queue.rs`): network namespaces,
//! a bridge and TUN front-end per side on its own runtime, checked TCP
//! transfers, routing through a third namespace.
//!
//! Each test crate uses only some of these.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tbbridge::tun::{self, TunCounters, TunDevice, TunOptions, TunStats};
use tbbridge_transport::device::emu::EmuCable;
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::{CableEnd, SessionConfig};

pub const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The veth link between B and C (C is routed behind B).
pub const IP_BC_B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const IP_C: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

pub fn skip_reason() -> Option<String> {
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

pub fn run(cmd: &mut Command) -> Output {
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
pub struct NetNs(pub String);

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
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

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run(&mut self.cmd(args))
    }

    pub fn ok(&self, args: &[&str]) -> bool {
        self.cmd(args).output().is_ok_and(|o| o.status.success())
    }

    /// Runs `f` on a thread that entered this namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
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

    pub fn ping(&self, to: Ipv4Addr) -> bool {
        self.ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()])
    }

    /// The carrier of `tb0` ("1" or "0").
    pub fn carrier(&self) -> String {
        self.cmd(&["cat", "/sys/class/net/tb0/carrier"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    pub fn wait_carrier(&self, on: bool, within: Duration) {
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
pub struct Side {
    pub rt: Option<tokio::runtime::Runtime>,
    pub stats: Arc<TunStats>,
    pub offload: bool,
    pub queues: usize,
}

impl Side {
    pub fn start(cable: &Arc<EmuCable>, end: CableEnd, ns: &NetNs, opts: TunOptions) -> Side {
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

    pub fn counters(&self) -> TunCounters {
        self.stats.snapshot()
    }

    /// Stops everything at once, like a crashed process.
    pub fn kill(&mut self) {
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

pub fn opts(addr: Ipv4Addr, offload: bool, queues: usize) -> TunOptions {
    TunOptions {
        addresses: vec![(IpAddr::V4(addr), 30)],
        offload,
        queues,
        ..TunOptions::new("tb0")
    }
}

/// Byte `i` of test stream `seed`.
pub fn pattern_byte(seed: u8, i: u64) -> u8 {
    ((i.wrapping_mul(2_654_435_761) >> 13) as u8) ^ seed ^ (i >> 20) as u8
}

pub fn fill(seed: u8, at: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, at + k as u64);
    }
}

pub fn send_pattern(s: &mut TcpStream, seed: u8, n: u64) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0;
    while at < n {
        let k = (n - at).min(buf.len() as u64) as usize;
        fill(seed, at, &mut buf[..k]);
        s.write_all(&buf[..k]).expect("write");
        at += k as u64;
    }
}

pub fn check_pattern(s: &mut TcpStream, seed: u8, n: u64) {
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
pub fn tcp_transfer(
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

pub fn enter_path(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: see NetNs::enter.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Namespace C behind B: a veth pair, forwarding on in B, routes both ways.
/// A needs a route to 198.19.0.0/30 via tb0 (its `TunOptions::routes`).
pub fn route_c_behind_b(b: &NetNs, c: &NetNs) {
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
pub struct KillOnDrop(pub String);

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

pub fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / (1 << 20) as f64
}

//! The TUN front-end's queue under load, end to end: two network
//! namespaces, an in-process emulated cable, a bridge and `tb0` per side
//! (see `tun/support.rs`), real TCP and UDP sockets and real `ping`.
//!
//! * A saturating TCP transfer A -> B must not make a ping A -> B wait:
//!   its p99 stays within [`PING_P99_BOUND`] of the idle p99, and the test checks that the
//!   fair queue really held a standing backlog meanwhile (else it would
//!   prove nothing).
//! * A UDP flood A -> B next to a TCP transfer A -> B: the TCP flow still
//!   gets a fair share of what B receives, and the flood's excess is
//!   dropped by the fair queue (counted by reason), not by the transport's
//!   datagram queue.
//!
//! Needs root, iproute2 and ping; skips with a printed reason otherwise.
//! Addresses from 198.18.0.0/15 only; all traffic stays between the test's
//! own namespaces.

#[path = "tun/support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use support::*;
use tbbridge::tun::queue::TARGET;
use tbbridge_transport::device::emu::{CableOptions, EmuCable};
use tbbridge_transport::CableEnd;

macro_rules! skip_unless_possible {
    () => {
        if let Some(why) = skip_reason() {
            tbbridge_tests::skip(&why);
            return;
        }
    };
}

/// What a saturating TCP transfer may add to the p99 of a ping in its
/// direction, over the idle p99 measured just before (this shared
/// machine's noise floor of the moment): 10 × CoDel's target (5 ms). A ping is a sparse flow on the
/// latency lane, so it waits for no queue of ours (the fair queue serves
/// new flows first, the session the latency class first, and latency mode
/// keeps at most 128 KiB of bulk in the cable before it); what is left is
/// the round trip itself and this shared 2-core VM's scheduling, for which
/// the margin is. Unmanaged it is far above: issue 7 measured a p99 of
/// 6.8 ms, and the old 4 MiB datagram FIFO alone holds 8 ms at 4 Gbit/s.
const PING_P99_BOUND: Duration = Duration::from_micros(TARGET.as_micros() as u64 * 10);
/// The share of the link a TCP flow keeps next to a flood. DRR's fair
/// share is a half; what TCP misses of it is the time its window needs to
/// grow back after each CoDel drop (measured 0.44 at 3 Gbit/s, 0.40 at
/// 2 Gbit/s, where the hand-off's fixed 512 KiB is a longer FIFO; see
/// `docs/nic.md`). The front-end's former FIFO gave the flood nearly
/// everything (it filled the whole 4 MiB queue).
const MIN_TCP_SHARE: f64 = 0.33;
/// The cable's cap in the flood test, bytes/s: 3 Gbit/s, below what one
/// TCP flow reaches uncapped on this machine (5-6 Gbit/s).
const FLOOD_CABLE_RATE: u64 = 375_000_000;
/// How long the loaded phases run.
const LOAD: Duration = Duration::from_secs(5);

/// The tests here load the machine on purpose: one at a time, or the flood
/// of one would be the other's load.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pair(options: CableOptions) -> (NetNs, NetNs, Side, Side) {
    let (a, b) = (NetNs::new("qa"), NetNs::new("qb"));
    let cable = Arc::new(EmuCable::new(options).expect("cable"));
    let side_a = Side::start(&cable, CableEnd::A, &a, opts(IP_A, true, 1));
    let side_b = Side::start(&cable, CableEnd::B, &b, opts(IP_B, true, 1));
    a.wait_carrier(true, Duration::from_secs(10));
    b.wait_carrier(true, Duration::from_secs(10));
    assert!(a.ping(IP_B), "ping A -> B");
    (a, b, side_a, side_b)
}

/// A TCP sink in `server` and a sender in `client` writing as fast as it
/// can until `stop`; returns the receiver's byte counter and the threads.
fn tcp_flood(
    server: &NetNs,
    client: &NetNs,
    to: Ipv4Addr,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, Vec<thread::JoinHandle<()>>) {
    let got = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let path = format!("/var/run/netns/{}", server.0);
    let g = got.clone();
    let srv = thread::spawn(move || {
        enter_path(&path);
        let l = TcpListener::bind(SocketAddr::new(to.into(), 0)).expect("bind");
        tx.send(l.local_addr().expect("addr")).expect("port");
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    g.fetch_add(n as u64, Relaxed);
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).expect("server up");
    let path = format!("/var/run/netns/{}", client.0);
    let cli = thread::spawn(move || {
        enter_path(&path);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        let buf = vec![0x5au8; 1 << 20];
        while !stop.load(Relaxed) {
            if s.write_all(&buf).is_err() {
                return;
            }
        }
    });
    (got, vec![srv, cli])
}

/// Round-trip times of `count` pings at `interval` from `ns` to `to`.
fn ping_times(ns: &NetNs, to: Ipv4Addr, count: usize, interval: &str) -> Vec<Duration> {
    let out = ns
        .cmd(&[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "1",
            &to.to_string(),
        ])
        .output()
        .expect("ping");
    String::from_utf8_lossy(&out.stdout)
        .split("time=")
        .skip(1)
        .filter_map(|s| s.split(' ').next()?.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect()
}

fn p99(mut v: Vec<Duration>) -> Duration {
    assert!(!v.is_empty(), "no ping came back");
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// Under a saturating TCP transfer A -> B, pings A -> B keep their p99
/// under the bound, and the fair queue held a standing queue meanwhile.
#[test]
fn ping_stays_fast_under_a_saturating_tcp_flow() {
    skip_unless_possible!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (a, b, side_a, _side_b) = pair(CableOptions::default());
    let idle = p99(ping_times(&a, IP_B, 50, "0.01"));
    let bound = idle + PING_P99_BOUND;
    let stop = Arc::new(AtomicBool::new(false));
    let (got, threads) = tcp_flood(&b, &a, IP_B, stop.clone());
    // Let the flow reach its rate before measuring.
    thread::sleep(Duration::from_secs(1));
    let before = side_a.counters();
    let t0 = Instant::now();
    let loaded = ping_times(&a, IP_B, (LOAD.as_millis() / 20) as usize, "0.02");
    let secs = t0.elapsed().as_secs_f64();
    let after = side_a.counters();
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let rate = (after.tx_bytes - before.tx_bytes) as f64 * 8.0 / secs / 1e9;
    eprintln!(
        "idle p99 {idle:?}; loaded: {} pings, p99 {:?} (bound {bound:?}); TCP {rate:.2} Gbit/s, \
         {} MiB received; A: {after:?}",
        loaded.len(),
        loaded.iter().max().map(|_| p99(loaded.clone())),
        got.load(Relaxed) >> 20,
    );
    assert!(
        loaded.len() as u128 >= LOAD.as_millis() / 20 * 9 / 10,
        "only {} of the pings came back",
        loaded.len()
    );
    // The load was real: a standing queue of bulk waited in the fair
    // queue (more than the transport is handed at once), so a FIFO would
    // have put the pings behind it.
    assert!(
        after.fq_backlog_max > 512 * 1024,
        "the fair queue never held more than {} bytes: not saturated",
        after.fq_backlog_max
    );
    assert!(
        after.tx_latency > before.tx_latency,
        "pings took the latency lane"
    );
    let p = p99(loaded);
    assert!(
        p < bound,
        "ping p99 {p:?} under load, bound {bound:?} (idle p99 {idle:?} + {PING_P99_BOUND:?})"
    );
    assert_eq!(
        after.drop_queue_full, 0,
        "the transport's datagram queue overflowed"
    );
}

/// A UDP flood A -> B at 1.5 times the link's rate does not starve a TCP
/// transfer A -> B: the TCP flow gets at least [`MIN_TCP_SHARE`] of what B
/// receives, and the fair queue drops the flood's excess, counted by
/// reason.
#[test]
fn a_udp_flood_does_not_starve_tcp() {
    skip_unless_possible!();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The cable, not this 2-core machine's CPU, is the bottleneck here, as
    // on hardware (40 Gbit/s of cable behind many cores): capped at
    // FLOOD_CABLE_RATE, below what TCP alone reaches uncapped, so that
    // reading the flood off the interface (to drop it) never makes the
    // TUN reader fall behind, where the kernel's TUN ring tail-drops every
    // flow alike before the fair queue sees them (a CI run with the cable
    // uncapped measured 1.8 Gbit/s in all and a TCP share of 0.22: a CPU
    // contest, not the queue).
    let (a, b, side_a, _side_b) = pair(CableOptions {
        rate: Some(FLOOD_CABLE_RATE),
        ..CableOptions::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    // The flood's sink.
    let udp_got = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let (path_b, path_a) = (
        format!("/var/run/netns/{}", b.0),
        format!("/var/run/netns/{}", a.0),
    );
    let (g, s) = (udp_got.clone(), stop.clone());
    let sink = thread::spawn(move || {
        enter_path(&path_b);
        let u = UdpSocket::bind(SocketAddr::new(IP_B.into(), 0)).expect("bind");
        u.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        tx.send(u.local_addr().expect("addr")).expect("port");
        let mut buf = vec![0u8; 65536];
        while !s.load(Relaxed) {
            if let Ok(n) = u.recv(&mut buf) {
                g.fetch_add(n as u64, Relaxed);
            }
        }
    });
    let to = rx.recv_timeout(Duration::from_secs(10)).expect("sink up");
    let (tcp_got, threads) = tcp_flood(&b, &a, IP_B, stop.clone());
    // What the link carries: TCP alone, for a second after a second.
    thread::sleep(Duration::from_secs(1));
    let t = tcp_got.load(Relaxed);
    thread::sleep(Duration::from_secs(1));
    let link = (tcp_got.load(Relaxed) - t) as f64;
    // The flood: 8 KiB datagrams (one IP packet each at this MTU) at 1.5
    // times that rate, paced: more than the link carries, without making the
    // test a contest for this 2-core machine's CPU (an unpaced sender loop
    // takes a core, and then it is the TCP sender that starves, not its
    // packets).
    let s = stop.clone();
    let flood = thread::spawn(move || {
        enter_path(&path_a);
        let u = UdpSocket::bind(SocketAddr::new(IP_A.into(), 0)).expect("bind");
        let buf = vec![0xa5u8; 8192];
        let per_s = 1.5 * link;
        let start = Instant::now();
        let mut sent = 0u64;
        while !s.load(Relaxed) {
            let due = start + Duration::from_secs_f64(sent as f64 / per_s);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            // Counted whether the kernel took it or dropped it.
            let _ = u.send_to(&buf, to);
            sent += buf.len() as u64;
        }
        sent
    });
    thread::sleep(Duration::from_millis(500));
    let (t0, u0, c0) = (
        tcp_got.load(Relaxed),
        udp_got.load(Relaxed),
        side_a.counters(),
    );
    thread::sleep(LOAD);
    let (t1, u1, c1) = (
        tcp_got.load(Relaxed),
        udp_got.load(Relaxed),
        side_a.counters(),
    );
    stop.store(true, Relaxed);
    let offered = flood.join().expect("flood");
    for t in threads {
        let _ = t.join();
    }
    let _ = sink.join();
    let (tcp, udp) = (t1 - t0, u1 - u0);
    let share = tcp as f64 / (tcp + udp).max(1) as f64;
    eprintln!(
        "link {:.2} Gbit/s (TCP alone); in {LOAD:?}: TCP {} MiB, UDP {} MiB received ({} MiB \
         offered in all), TCP share {share:.2}; aqm drops {}, overflow drops {}",
        link * 8.0 / 1e9,
        tcp >> 20,
        udp >> 20,
        offered >> 20,
        c1.fq_aqm_drops - c0.fq_aqm_drops,
        c1.fq_overflow_drops - c0.fq_overflow_drops,
    );
    assert!(udp > 0, "the flood got nothing through");
    assert!(
        share >= MIN_TCP_SHARE,
        "TCP got {share:.2} of the link next to a UDP flood (fair: 0.5)"
    );
    // The flood was more than the link: the fair queue dropped its excess,
    // and counted why; the transport's queue never had to.
    let queue_drops =
        (c1.fq_aqm_drops + c1.fq_overflow_drops) - (c0.fq_aqm_drops + c0.fq_overflow_drops);
    assert!(
        queue_drops > 0,
        "no drops: the flood did not exceed the link"
    );
    assert_eq!(
        c1.drop_queue_full, 0,
        "the transport's datagram queue overflowed"
    );
    assert_eq!(
        c1.drops(),
        c1.fq_aqm_drops
            + c1.fq_overflow_drops
            + c1.drop_link_down
            + c1.drop_malformed_tun
            + c1.drop_malformed_peer
            + c1.drop_too_big
            + c1.drop_tun_write,
        "every drop has a reason"
    );
}

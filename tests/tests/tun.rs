//! The TUN front-end end to end: two network namespaces joined by an
//! in-process emulated cable, a bridge per side (each on its own runtime,
//! like two processes) and a TUN interface `tb0` in each namespace, created
//! by a thread that entered the namespace with `setns`.
//!
//! Needs root (namespaces, TUN devices) and iproute2 + ping; skips with a
//! printed reason otherwise. Addresses come from 198.18.0.0/15 only, and
//! all traffic stays between the test's own namespaces.

#[path = "tun/support.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;
use tbbridge::tun;
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
        tbbridge_tests::skip("needs iperf3");
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

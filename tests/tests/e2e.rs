//! End to end, as an operator runs it: `tbbridge cable run`, then
//! `tbbridge up` in two network namespaces (real TUN devices), traffic,
//! a cable pull, `tbbridge down`. Needs root; skips with a reason otherwise.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tbbridge::netns::{self, NetNs};
use tbbridge_tests::lab::{skip_unless_possible, wait, Lab};

fn skip() -> bool {
    skip_unless_possible()
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

/// The README's main job as a new user runs it: `tbbridge demo` ends with
/// 0; the zero-configuration `up` gave both hosts addresses of one /30 in
/// 169.254.0.0/16 and showed each the other's host name; the ping, the TCP
/// stream, the HTTP download through the forward and the piped file all
/// check out, and a ping kept answering meanwhile.
#[test]
fn the_demo_runs_as_the_readme_says() {
    if skip() {
        return;
    }
    let out = Command::new(tbbridge_tests::lab::bin())
        .args(["demo", "-t", "1", "--size", "32M"])
        .stdin(Stdio::null())
        .output()
        .expect("running tbbridge demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let net = |host: &str, peer: &str| -> u32 {
        let l = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{host}: tb0 ")))
            .unwrap_or_else(|| panic!("no address line for {host}:\n{text}"));
        assert!(l.ends_with(&format!("peer: {peer}")), "{l}");
        assert!(l.contains(", fe80::"), "no IPv6 link-local: {l}");
        let v4: std::net::Ipv4Addr = l
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.strip_suffix("/30,"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no IPv4 /30: {l}"));
        assert_eq!(v4.octets()[..2], [169, 254], "{l}");
        u32::from(v4)
    };
    let (a, b) = (net("host-a", "host-b"), net("host-b", "host-a"));
    assert!(a != b && a & !3 == b & !3, "not one /30:\n{text}");
    assert!(text.contains("checked byte for byte"), "TCP:\n{text}");
    assert_eq!(
        text.matches("SHA-256 matches").count(),
        2,
        "the forward and the pipe:\n{text}"
    );
    let meanwhile = text
        .lines()
        .find(|l| l.contains("ping meanwhile") && l.contains("received"))
        .unwrap_or_else(|| panic!("no ping summary:\n{text}"));
    // "N packets transmitted, M received": the one in flight when ping
    // was interrupted may be missing.
    let count = |after: &str| -> u64 {
        let head = meanwhile.split(after).next().unwrap_or("");
        head.split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no count before `{after}`: {meanwhile}"))
    };
    let (sent, got) = (count(" packets transmitted"), count(" received"));
    assert!(
        sent >= 1 && got + 1 >= sent,
        "pings lost while the forward and the pipe ran: {meanwhile}"
    );
    for fe in ["interface tb0", "forward web", "service web"] {
        assert!(
            text.lines()
                .any(|l| l.contains(fe) && l.contains("running")),
            "no running `{fe}` line:\n{text}"
        );
    }
    assert!(text.trim_end().ends_with("done"), "{text}");
}

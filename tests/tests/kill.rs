//! Stop and kill (issue 12): `kill -9` of one daemon is survived by the
//! other, which reconnects by itself when the killed one is started again
//! (a new peer session: its channels are reset, the NIC works again); a
//! peer that stops answering in the middle of the goodbye exchange does
//! not wedge the survivor's `down`. Needs root.

use std::time::{Duration, Instant};

use serde_json::Value;
use tbbridge_tests::lab::{skip_unless_possible, wait, Lab};
use tbbridge_tests::load::num;

fn cfg(addr: &str) -> String {
    format!("[interface]\nname = \"tb0\"\naddresses = [\"{addr}\"]\n")
}

fn signal(pid: u64, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn kill_9_is_survived_and_a_silent_peer_does_not_wedge_down() {
    if skip_unless_possible() {
        return;
    }
    let lab = Lab::with_cable("kl", &[]);
    lab.up_with(0, &cfg("198.18.0.1/30"));
    lab.up_with(1, &cfg("198.18.0.2/30"));
    lab.wait_connected();
    assert!(lab.ping(0, "198.18.0.2"));
    let a_pid = num(&lab.status(0), "/pid");
    let b_pid = num(&lab.status(1), "/pid");
    let before = lab.status(0);

    // kill -9 B: no goodbye. A notices (the cable end closes) and waits.
    signal(b_pid, "-KILL");
    wait(Duration::from_secs(10), "B's process gone", || {
        !alive(b_pid)
    });
    wait(Duration::from_secs(10), "A sees the peer gone", || {
        !lab.connected(0)
    });
    assert!(alive(a_pid), "A died with its peer");
    // B comes back (a stale control socket and pid file are no obstacle).
    // A killed process's other threads may still be exiting after its
    // main thread is a zombie; until the last one is gone its pid file
    // stays locked and `up` says, rightly, that it is still up.
    let mut tries = 0;
    loop {
        let out = lab.try_up(1, &cfg("198.18.0.2/30"));
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        tries += 1;
        assert!(
            err.contains("already being brought up") && tries < 50,
            "up after kill -9: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let back = Instant::now();
    lab.wait_connected();
    wait(Duration::from_secs(10), "ping after B's restart", || {
        lab.ping(0, "198.18.0.2")
    });
    let after = lab.status(0);
    let peer = |v: &Value| v.pointer("/link/peer").cloned();
    assert_ne!(peer(&before), peer(&after), "B's new session is a new peer");
    println!("reconnected {:?} after B's restart", back.elapsed());

    // B stops answering (SIGSTOP) and A goes down: A's goodbye gets no
    // answer, and `down` still completes, bounded by goodbye_timeout.
    let b_pid = num(&lab.status(1), "/pid");
    signal(b_pid, "-STOP");
    let t = Instant::now();
    let out = lab
        .tb(None, &["down", &lab.name(0)])
        .output()
        .expect("down");
    let took = t.elapsed();
    signal(b_pid, "-CONT");
    assert!(
        out.status.success(),
        "down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(20),
        "down took {took:?} with a silent peer"
    );
    wait(Duration::from_secs(10), "A's daemon gone", || !alive(a_pid));
    // B, woken, sees its peer gone and waits on; A comes back and they
    // meet again.
    wait(Duration::from_secs(15), "B sees the peer gone", || {
        !lab.connected(1)
    });
    lab.up_with(0, &cfg("198.18.0.1/30"));
    lab.wait_connected();
    wait(Duration::from_secs(10), "ping after A's return", || {
        lab.ping(1, "198.18.0.1")
    });
    println!("down with a stopped peer took {took:?}");
}

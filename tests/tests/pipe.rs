//! Byte pipes end to end: `tbbridge pipe` on one host, a `[[pipe]]` sink
//! or another `tbbridge pipe` on the other, over the same cable as a
//! running NIC. Needs root; skips with a reason otherwise (and fails under
//! CI's `TBBRIDGE_NO_SKIP=1`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tbbridge_tests::files::{make_file, sha256_file};
use tbbridge_tests::lab::{skip_unless_possible, stop_ping, wait, Lab, Proc};

/// `[interface]` of host `i` in these tests.
fn nic(i: usize) -> String {
    format!(
        "[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.{}/24\"]\n",
        i + 1
    )
}

/// `tbbridge pipe NAME SERVICE` of host `i` (it talks to the daemon's
/// control socket, so it runs outside the namespace like `status`).
fn pipe_cmd(lab: &Lab, i: usize, service: &str) -> Command {
    lab.tb(None, &["pipe", &lab.name(i), service])
}

fn sink_counter(lab: &Lab, i: usize, key: &str) -> u64 {
    lab.front_end(i, "pipes")
        .pointer(&format!("/counters/{key}"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// `tbbridge pipe` moves a 1 GiB file into a `[[pipe]]` file sink; the
/// file arrives with the same SHA-256, and a ping through the NIC on the
/// same cable answers every request meanwhile.
#[test]
fn pipe_moves_a_gib_checksummed_while_ping_answers() {
    if skip_unless_possible() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src.bin");
    let dst = dir.path().join("dst.bin");
    let sum = make_file(&src, 1 << 30);
    let lab = Lab::new("tpp");
    lab.up_with(0, &nic(0));
    lab.up_with(
        1,
        &format!(
            "{}\n[[pipe]]\nname = \"backup\"\nfile = \"{}\"\n",
            nic(1),
            dst.display()
        ),
    );
    lab.wait_connected();
    assert!(lab.ping(0, "198.18.0.2"), "ping before the pipe");
    let ping = Proc(
        lab.ns[0]
            .cmd("ping", &["-i", "0.1", "-W", "1", "198.18.0.2"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("ping"),
    );
    // The first replies came back before the pipe starts.
    std::thread::sleep(Duration::from_millis(300));
    let out = pipe_cmd(&lab, 0, "backup")
        .stdin(std::fs::File::open(&src).expect("src"))
        .stdout(Stdio::null())
        .output()
        .expect("tbbridge pipe");
    let (sent, answered) = stop_ping(ping);
    assert!(
        out.status.success(),
        "pipe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "no progress when stderr is not a terminal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_file(&dst), sum, "the file that arrived");
    assert!(
        !dir.path().join("dst.bin.partial").exists(),
        "the partial file was renamed"
    );
    assert!(sent >= 3, "ping ran during the transfer ({sent} sent)");
    // SIGINT may catch one request in flight.
    assert!(
        answered + 1 >= sent,
        "ping lost {} of {sent} during the pipe",
        sent - answered
    );
    let st = lab.status(0);
    assert_eq!(
        st.pointer("/pipe_clients/completed")
            .and_then(Value::as_u64),
        Some(1),
        "{st}"
    );
    assert_eq!(sink_counter(&lab, 1, "completed"), 1);
}

/// Two `tbbridge pipe` clients, one on each host, started in either
/// order: each gets the other's file, both ways at once, and both exit 0.
#[test]
fn pipe_client_to_client_both_ways() {
    if skip_unless_possible() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (a_in, b_in) = (dir.path().join("a.in"), dir.path().join("b.in"));
    let (a_out, b_out) = (dir.path().join("a.out"), dir.path().join("b.out"));
    let a_sum = make_file(&a_in, 96 << 20);
    let b_sum = make_file(&b_in, (80 << 20) + 12345);
    let lab = Lab::new("tpq");
    lab.up_with(0, "");
    lab.up_with(1, "");
    lab.wait_connected();
    let spawn = |i: usize, input: &Path, output: &Path| {
        pipe_cmd(&lab, i, "swap")
            .stdin(std::fs::File::open(input).expect("in"))
            .stdout(std::fs::File::create(output).expect("out"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("tbbridge pipe")
    };
    // B first: it waits for A's end.
    let b = spawn(1, &b_in, &b_out);
    wait(Duration::from_secs(10), "B's client to wait", || {
        lab.status(1)
            .pointer("/pipe_clients/started")
            .and_then(Value::as_u64)
            == Some(1)
    });
    let a = spawn(0, &a_in, &a_out);
    for (name, c) in [("A", a), ("B", b)] {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{name}'s pipe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(sha256_file(&b_out), a_sum, "A's file at B");
    assert_eq!(sha256_file(&a_out), b_sum, "B's file at A");
}

/// A pipe whose receiving command fails: the sender exits non-zero and
/// says why. One whose sink is missing on the peer waits, and the client
/// leaving (Ctrl-C) is counted as failed.
#[test]
fn pipe_fails_loudly_when_the_far_end_does() {
    if skip_unless_possible() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src.bin");
    make_file(&src, 8 << 20);
    let lab = Lab::new("tpx");
    lab.up_with(0, "");
    lab.up_with(
        1,
        "[[pipe]]\nname = \"broken\"\ncommand = \"head -c 1000 > /dev/null; exit 3\"\n",
    );
    lab.wait_connected();
    let out = pipe_cmd(&lab, 0, "broken")
        .stdin(std::fs::File::open(&src).expect("src"))
        .output()
        .expect("tbbridge pipe");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a failed sink is a failed pipe");
    assert!(err.contains("did not complete"), "{err}");
    assert_eq!(sink_counter(&lab, 1, "failed"), 1);
    let st = lab.status(0);
    assert_eq!(
        st.pointer("/pipe_clients/failed").and_then(Value::as_u64),
        Some(1),
        "{st}"
    );
}

/// The cable is pulled in the middle of a pipe (after the sink has 32 MiB,
/// and while the sender has more to give) and plugged back: the stream
/// channel resumes, the file is complete and the sender exits 0.
#[test]
fn pipe_survives_a_cable_pull() {
    if skip_unless_possible() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src.bin");
    let dst = dir.path().join("dst.bin");
    let half: usize = 64 << 20;
    let sum = make_file(&src, 2 * half as u64);
    let lab = Lab::new("tpr");
    lab.up_with(0, "");
    lab.up_with(
        1,
        &format!(
            "[[pipe]]\nname = \"backup\"\nfile = \"{}\"\n",
            dst.display()
        ),
    );
    lab.wait_connected();
    // (A bare child: if the test fails, it ends with its daemon.)
    let mut client = pipe_cmd(&lab, 0, "backup")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tbbridge pipe");
    let mut stdin = client.stdin.take().expect("stdin");
    let data = std::fs::read(&src).expect("src");
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&data[..half])?;
        let _ = go_rx.recv();
        stdin.write_all(&data[half..])
        // Dropping stdin ends the input.
    });
    wait(Duration::from_secs(30), "32 MiB at the sink", || {
        sink_counter(&lab, 1, "bytes") >= 32 << 20
    });
    lab.cable("unplug");
    wait(Duration::from_secs(10), "both links down", || {
        !lab.connected(0) && !lab.connected(1)
    });
    // Mid-transfer by construction: the second half is still held back.
    let at_pull = sink_counter(&lab, 1, "bytes");
    assert!(at_pull < 2 * half as u64, "{at_pull} bytes at the sink");
    // The rest is written while the cable is out: it waits in the pipe's
    // buffers, none of it lost.
    let _ = go_tx.send(());
    lab.cable("replug");
    writer.join().expect("writer").expect("write to the pipe");
    let out = client.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "pipe failed across the pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_file(&dst), sum, "the file after the pull");
    let st = lab.status(0);
    assert!(
        st.pointer("/link/resumes").and_then(Value::as_u64) >= Some(1),
        "the session resumed: {st}"
    );
}

//! Resume limits end to end (issue 12): with `resume_timeout_ms = 1500`,
//! a cable pulled for longer fails the reliable channels with a clear
//! error that the front-ends pass on (a proxied TCP connection is reset,
//! a `tbbridge pipe` exits non-zero naming `resume_timeout`), counted in
//! `status`; the NIC's datagram channel just resumes (ping works after the
//! replug), and new connections work again. Needs root.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tbbridge_tests::lab::{skip_unless_possible, wait, Lab, Proc};
use tbbridge_tests::load::num;

const SESSION: &str = "[session]\nresume_timeout_ms = 1500\n";

/// One echo exchange on `s`.
fn echo(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    assert_eq!(got, msg);
    Ok(())
}

#[test]
fn channels_fail_clearly_after_resume_timeout_and_datagrams_resume() {
    if skip_unless_possible() {
        return;
    }
    let lab = Lab::with_cable("rl", &["--rate", "400M"]);
    lab.up_with(
        0,
        &format!(
            "[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.1/30\"]\n\n\
             [[forward]]\nname = \"echo\"\nlisten = \"tcp:127.0.0.1:8100\"\n\n{SESSION}"
        ),
    );
    lab.up_with(
        1,
        &format!(
            "[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.2/30\"]\n\n\
             [[service]]\nname = \"echo\"\nconnect = \"tcp:127.0.0.1:8101\"\n\n\
             [[pipe]]\nname = \"sink\"\ncommand = \"cat > /dev/null\"\n\n{SESSION}"
        ),
    );
    lab.wait_connected();
    let _echo = Proc(
        lab.ns[1]
            .cmd(
                "socat",
                &["tcp-listen:8101,bind=127.0.0.1,fork,reuseaddr", "exec:cat"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat"),
    );
    lab.wait_listening(1, 8101);
    // A proxied connection that is working when the cable goes.
    let conn = lab.ns[0].spawn(|| {
        let mut s = TcpStream::connect("127.0.0.1:8100")?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        echo(&mut s, b"before the pull")?;
        Ok(s)
    });
    let mut conn = conn
        .join()
        .expect("thread")
        .expect("echo through the forward");
    // A pipe transfer that is under way: 1 MiB, then its source stalls.
    let source = std::process::Command::new("sh")
        .args(["-c", "head -c 1048576 /dev/zero; sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("source");
    let mut source = Proc(source);
    let pipe = lab
        .tb(None, &["pipe", &lab.name(0), "sink"])
        .stdin(source.0.stdout.take().expect("stdout"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tbbridge pipe");
    let mut pipe = Proc(pipe);
    wait(Duration::from_secs(10), "the pipe moving bytes", || {
        num(&lab.status(0), "/pipe_clients/bytes_sent") >= 1 << 20
    });
    let before = lab.status(0);
    lab.cable("unplug");
    let pulled = Instant::now();
    // The pipe fails by itself, while the cable is still out.
    let mut status = None;
    while pulled.elapsed() < Duration::from_secs(8) {
        if let Some(s) = pipe.0.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let failed_after = pulled.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "the pipe did not give up within 8 s of the pull: {}",
            lab.status(0)
        )
    });
    let mut err = String::new();
    if let Some(mut e) = pipe.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success(), "the pipe exited 0 with its channel gone");
    assert!(err.contains("resume_timeout"), "pipe error: {err:?}");
    // Counted from the link's last input, a little before the pull.
    assert!(
        failed_after >= Duration::from_millis(1000),
        "{failed_after:?}"
    );
    // The proxied connection is reset, not left hanging.
    let mut buf = [0u8; 16];
    let r = conn.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the proxied connection was not reset: {r:?}"
    );
    let a = lab.status(0);
    assert!(
        num(&a, "/session/expired_channels") >= num(&before, "/session/expired_channels") + 2,
        "not counted: {a}"
    );
    // The cable comes back: the NIC (datagrams) just resumes, and new
    // proxied connections work.
    lab.cable("replug");
    lab.wait_connected();
    wait(Duration::from_secs(10), "ping through tb0", || {
        lab.ping(0, "198.18.0.2")
    });
    let fresh = lab.ns[0].spawn(|| {
        let mut s = TcpStream::connect("127.0.0.1:8100")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        echo(&mut s, b"after the replug")?;
        Ok(())
    });
    fresh
        .join()
        .expect("thread")
        .expect("a new connection works");
    println!(
        "pipe failed {failed_after:?} after the pull (resume_timeout 1.5 s): {}",
        err.trim()
    );
}

//! Integration tests of the emulated cable (spec §5), both flavours: the
//! in-process [`EmuCable`] and the cross-process cable of [`serve`] (the
//! code path of `tbbridge cable run`), run in a thread with a temporary
//! root.
//!
//! Timing assertions are one-sided or generous on purpose: this runs on a
//! loaded 2-core machine.

#[path = "cable/support.rs"]
mod support;

#[path = "cable/faults.rs"]
mod faults;

use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;
use tbbridge_transport::device::emu::{
    control, open_end, serve, CableOptions, ControlCommand, EmuCable, DEFAULT_RING_SIZE,
};
use tbbridge_transport::device::{self, is_link_down, AsyncDevice, DeviceFd, OpenOptions};
use tbbridge_transport::{CableEnd, DeviceSpec};

const A: CableEnd = CableEnd::A;
const B: CableEnd = CableEnd::B;
const FRAME: usize = 4096;

// ---- tests ----------------------------------------------------------------

#[test]
fn ordered_lossless_both_directions() {
    const AB: u64 = 64 << 20;
    const BA: u64 = 16 << 20;
    for rig in Rig::both(CableOptions::default()) {
        let a = rig.open(A);
        let b = rig.open(B);
        std::thread::scope(|s| {
            let wa = s.spawn(|| send_pattern(&a, 1, AB));
            let wb = s.spawn(|| send_pattern(&b, 2, BA));
            let rb = s.spawn(|| check_pattern(&b, 1, AB));
            assert_eq!(check_pattern(&a, 2, BA).expect("read B->A"), BA);
            assert_eq!(rb.join().expect("reader").expect("read A->B"), AB);
            wa.join().expect("writer").expect("write A->B");
            wb.join().expect("writer").expect("write B->A");
        });
        let st = rig.status();
        assert_eq!(num(&st, &["a_to_b", "forwarded"]), AB, "{}", rig.label());
        assert_eq!(num(&st, &["b_to_a", "forwarded"]), BA, "{}", rig.label());
        assert_eq!(num(&st, &["a_to_b", "dropped"]), 0);
    }
}

#[test]
fn many_small_writes_stay_ordered() {
    // Tiny writes use up ring slots (like the driver's frames) long before
    // ring bytes: the relay must neither stall nor reorder.
    const TOTAL: u64 = 3_000_000;
    for rig in Rig::both(CableOptions {
        ring_size: 32,
        ..CableOptions::default()
    }) {
        let a = rig.open(A);
        let b = rig.open(B);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut buf = [0u8; 37];
                let mut off = 0u64;
                while off < TOTAL {
                    let n = (buf.len() as u64).min(TOTAL - off) as usize;
                    pattern(6, off, &mut buf[..n]);
                    write_all(&a, &buf[..n]).expect("small write");
                    off += n as u64;
                }
            });
            // Let the writer get ahead, then read.
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                check_pattern(&b, 6, TOTAL).expect("read"),
                TOTAL,
                "{}",
                rig.label()
            );
        });
    }
}

/// Fills the cable from A with nothing read at B, until the relay's ring
/// (`ring` bytes A->B) is full and the writer has been refused for a while;
/// returns the bytes accepted.
fn fill_until_blocked(rig: &Rig, a: &DeviceFd, ring: u64) -> usize {
    let big = vec![0x5au8; 8 << 20];
    let mut total = 0usize;
    let first = a.write(&big).expect("first write");
    assert!(
        first > 0 && first < big.len(),
        "first write not short: {first}"
    );
    total += first;
    // The relay moves what sits in the socket into its ring behind our
    // back, so keep going until the ring is full and writes stay refused.
    let deadline = Instant::now() + STEP;
    let mut quiet_since = Instant::now();
    loop {
        match a.write(&big) {
            Ok(n) => {
                total += n;
                quiet_since = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let full = num(&rig.status(), &["a_to_b", "in_flight"]) == ring;
                if full && quiet_since.elapsed() > Duration::from_millis(100) {
                    return total;
                }
                assert!(Instant::now() < deadline, "the ring never filled");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
}

#[test]
fn short_writes_and_ring_bound() {
    for ring_size in [DEFAULT_RING_SIZE, 1024] {
        let ring = ring_size as usize * FRAME;
        let opts = CableOptions {
            ring_size,
            ..CableOptions::default()
        };
        for rig in Rig::both(opts) {
            let a = rig.open(A);
            let b = rig.open(B);
            let total = fill_until_blocked(&rig, &a, ring as u64);
            eprintln!("{}: ring {ring}, writer got {total} in", rig.label());
            // The ring fills completely; outside it only two small socket
            // buffers can hold data.
            assert!(total >= ring, "{}: {total} < ring {ring}", rig.label());
            assert!(
                total <= ring + (1 << 20),
                "{}: {total} bytes in flight with a ring of {ring}",
                rig.label()
            );
            assert_eq!(
                a.write(b"x").map_err(|e| e.kind()).expect_err("still full"),
                io::ErrorKind::WouldBlock
            );
            let st = rig.status();
            assert_eq!(num(&st, &["a_to_b", "in_flight"]), ring as u64);
            // Reading frees room: POLLOUT comes back and nothing was lost.
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0;
            while got < total {
                let n = read_some(&b, &mut buf).expect("read");
                assert!(buf[..n].iter().all(|&x| x == 0x5a));
                got += n;
            }
            assert_eq!(got, total);
            assert_ne!(poll_now(&a, libc::POLLOUT, 5000) & libc::POLLOUT, 0);
            assert_eq!(
                b.read(&mut buf).map_err(|e| e.kind()).expect_err("empty"),
                io::ErrorKind::WouldBlock
            );
        }
    }
}

#[test]
fn eof_after_peer_close() {
    for rig in Rig::both(CableOptions::default()) {
        // Peer closes with data still in flight and nobody reading yet.
        let a = rig.open(A);
        let b = rig.open(B);
        send_pattern(&a, 7, 600_000).expect("write");
        drop(a);
        assert_eq!(
            check_pattern(&b, 7, 600_000).expect("data before EOF"),
            600_000
        );
        let mut buf = [0u8; 16];
        assert_eq!(read_some(&b, &mut buf).expect("EOF"), 0, "{}", rig.label());
        assert_eq!(read_some(&b, &mut buf).expect("EOF again"), 0);
        // Writing to a closed peer: ENXIO, as the driver does.
        let deadline = Instant::now() + STEP;
        loop {
            match b.write(b"late") {
                Err(e) if is_link_down(&e) => break,
                Ok(_) | Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "write to closed peer kept working"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        // Reopening both ends gives a fresh, working pair.
        drop(b);
        let a = rig.open(A);
        let b = rig.open(B);
        write_all(&b, b"again").expect("write");
        let mut got = [0u8; 5];
        read_exact(&a, &mut got).expect("read");
        assert_eq!(&got, b"again");
    }
}

#[test]
fn blocked_writer_sees_enxio_when_peer_closes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for rig in Rig::both(CableOptions::default()) {
        let a = rig.open(A);
        let b = rig.open(B);
        // B's data for A stays in the cable (A does not read it yet), so
        // A's EOF cannot be what wakes A's writer below.
        send_pattern(&b, 5, 600_000).expect("write B->A");
        rt.block_on(async {
            let a = AsyncDevice::new(a).expect("register");
            {
                let big = vec![0u8; 64 << 20];
                let write = a.write_all(&big);
                tokio::pin!(write);
                // Nobody reads: the writer ends up waiting for ring room.
                let r = tokio::time::timeout(Duration::from_millis(300), &mut write).await;
                assert!(r.is_err(), "{}: 64 MiB fit into the cable", rig.label());
                drop(b);
                // Waiting writers must be woken with an error, not left hanging:
                // ENXIO, as the driver gives a writer after the peer's CLOSE.
                let r = tokio::time::timeout(STEP, write)
                    .await
                    .unwrap_or_else(|_| panic!("{}: writer hung after peer close", rig.label()));
                assert_enxio(r, "blocked writer after peer close");
            }
            // B's data still arrives, then EOF.
            let a = a.into_inner();
            assert_eq!(check_pattern(&a, 5, 600_000).expect("B's data"), 600_000);
            assert_eq!(read_some(&a, &mut [0u8; 8]).expect("EOF"), 0);
        });
    }
}

#[test]
fn reopen_after_peer_restart_settles() {
    // B restarts while A still holds its old fd (with B's last data not
    // yet read); then A gives up and reopens. The new pair must work: A's
    // late close must not reach the new B, or two sides that reopen on EOF
    // would keep sending each other EOFs.
    for rig in Rig::both(CableOptions::default()) {
        let a = rig.open(A);
        let b = rig.open(B);
        send_pattern(&b, 8, 1 << 20).expect("write");
        drop(b);
        let b2 = rig.open(B);
        drop(a);
        let a2 = rig.open(A);
        write_all(&a2, b"hi").expect("write");
        let mut got = [0u8; 2];
        read_exact(&b2, &mut got).expect("new pair talks");
        assert_eq!(&got, b"hi", "{}", rig.label());
        write_all(&b2, b"yo").expect("write");
        read_exact(&a2, &mut got).expect("new pair talks");
        assert_eq!(&got, b"yo", "{}", rig.label());
    }
}

#[test]
fn unplug_gives_enxio_until_reopened() {
    for rig in Rig::both(CableOptions::default()) {
        let a = rig.open(A);
        let b = rig.open(B);
        write_all(&a, &[1u8; 10_000]).expect("write");
        let st = rig.cmd(ControlCommand::Unplug);
        assert_eq!(st["plugged"], false);
        assert_enxio(b.read(&mut [0u8; 64]), "read after unplug");
        assert_enxio(a.write(b"x"), "write after unplug");
        assert_enxio(a.read(&mut [0u8; 64]), "read after unplug");
        assert_enxio(b.writev(&[IoSlice::new(b"x")]), "writev after unplug");
        // poll wakes with a hang-up.
        let ev = poll_now(&b, libc::POLLIN, 5000);
        assert_ne!(
            ev & (libc::POLLHUP | libc::POLLERR),
            0,
            "{}: revents {ev:#x}",
            rig.label()
        );
        // Replug does not revive an old fd: ENXIO sticks.
        rig.cmd(ControlCommand::Replug);
        assert_enxio(b.read(&mut [0u8; 64]), "old fd after replug");
        assert_enxio(a.write(b"x"), "old fd after replug");
        drop((a, b));
        // New opens work and data flows again, with nothing left over.
        let a = rig.open(A);
        let b = rig.open(B);
        write_all(&a, b"fresh").expect("write");
        let mut got = [0u8; 5];
        read_exact(&b, &mut got).expect("read");
        assert_eq!(&got, b"fresh", "{}", rig.label());
        assert_eq!(num(&rig.status(), &["unplugs"]), 1);
    }
}

#[test]
fn opens_block_while_unplugged() {
    for rig in Rig::both(CableOptions::default()) {
        rig.cmd(ControlCommand::Unplug);
        let e = rig
            .try_open(B, Some(Duration::from_millis(200)))
            .expect_err("open while unplugged must wait");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let rig = &rig;
            s.spawn(move || {
                let r = rig.try_open(A, None);
                let _ = tx.send(r);
            });
            assert!(
                rx.recv_timeout(Duration::from_millis(300)).is_err(),
                "{}: open completed while unplugged",
                rig.label()
            );
            let st = rig.status();
            assert_eq!(st["a"], "waiting");
            rig.cmd(ControlCommand::Replug);
            let a = rx
                .recv_timeout(STEP)
                .expect("open after replug")
                .expect("open");
            let b = rig.open(B);
            write_all(&a, b"ping").expect("write");
            let mut got = [0u8; 4];
            read_exact(&b, &mut got).expect("read");
            assert_eq!(&got, b"ping");
        });
    }
}

#[test]
fn unplug_mid_stream_then_recover() {
    for rig in Rig::both(CableOptions::default()) {
        let a = rig.open(A);
        let b = rig.open(B);
        std::thread::scope(|s| {
            let w = s.spawn(|| send_pattern(&a, 9, 1 << 40));
            let r = s.spawn(|| check_pattern(&b, 9, 1 << 40));
            // Unplug while data is moving (at an arbitrary point, most
            // likely inside a frame).
            let deadline = Instant::now() + STEP;
            while num(&rig.status(), &["a_to_b", "forwarded"]) < (4 << 20) {
                assert!(Instant::now() < deadline, "no data moved");
                std::thread::sleep(Duration::from_millis(5));
            }
            rig.cmd(ControlCommand::Unplug);
            // Both sides stop with ENXIO; what arrived was an exact prefix
            // (check_pattern panics on any wrong byte).
            assert_enxio(w.join().expect("writer"), "writer at unplug");
            assert_enxio(r.join().expect("reader"), "reader at unplug");
        });
        let st = rig.cmd(ControlCommand::Replug);
        assert!(
            num(&st, &["a_to_b", "forwarded"]) > 0,
            "{}: nothing flowed",
            rig.label()
        );
        drop((a, b));
        let a = rig.open(A);
        let b = rig.open(B);
        std::thread::scope(|s| {
            let w = s.spawn(|| send_pattern(&b, 10, 8 << 20));
            assert_eq!(
                check_pattern(&a, 10, 8 << 20).expect("after replug"),
                8 << 20
            );
            w.join().expect("writer").expect("write");
        });
    }
}

#[test]
fn corruption_hits_one_frame() {
    for rig in Rig::both(CableOptions::default()) {
        let a = rig.open(A);
        let b = rig.open(B);
        let mut data = vec![0u8; 1 << 20];
        pattern(3, 0, &mut data);
        let st = rig.cmd(ControlCommand::Corrupt);
        assert_eq!(st["corrupt_armed"], true);
        let mut got = vec![0u8; data.len()];
        std::thread::scope(|s| {
            s.spawn(|| write_all(&a, &data).expect("write"));
            read_exact(&b, &mut got).expect("read");
        });
        let diffs: Vec<usize> = (0..data.len()).filter(|&i| got[i] != data[i]).collect();
        let bits: u32 = diffs.iter().map(|&i| (got[i] ^ data[i]).count_ones()).sum();
        assert!(
            (1..=3).contains(&bits),
            "{}: {bits} bits flipped",
            rig.label()
        );
        let span = diffs.last().copied().unwrap_or(0) - diffs.first().copied().unwrap_or(0);
        assert!(span < FRAME, "{}: flips span {span} bytes", rig.label());
        let st = rig.status();
        assert_eq!(num(&st, &["corrupted_frames"]), 1);
        assert_eq!(st["corrupt_armed"], false);
        // One-shot: the next megabyte is clean, in both directions.
        std::thread::scope(|s| {
            s.spawn(|| write_all(&b, &data).expect("write"));
            read_exact(&a, &mut got).expect("read");
        });
        assert!(got == data, "{}: second transfer corrupted", rig.label());
    }
}

#[test]
fn rate_cap_is_respected() {
    const RATE: u64 = 20_000_000;
    const TOTAL: u64 = 10_000_000;
    let opts = CableOptions {
        rate: Some(RATE),
        ..CableOptions::default()
    };
    for rig in Rig::both(opts) {
        let a = rig.open(A);
        let b = rig.open(B);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| send_pattern(&a, 4, TOTAL).expect("write"));
            check_pattern(&b, 4, TOTAL).expect("read");
        });
        let dt = t0.elapsed();
        // 0.5 s at the cap; the burst allowance is 10 ms worth.
        assert!(
            dt >= Duration::from_millis(400),
            "{}: too fast: {dt:?}",
            rig.label()
        );
        assert!(
            dt <= Duration::from_secs(30),
            "{}: far too slow: {dt:?}",
            rig.label()
        );
    }
}

#[test]
fn latency_is_added() {
    let opts = CableOptions {
        latency_us: 50_000,
        ..CableOptions::default()
    };
    for rig in Rig::both(opts) {
        let a = rig.open(A);
        let b = rig.open(B);
        for _ in 0..3 {
            let t0 = Instant::now();
            write_all(&a, b"p").expect("write");
            let mut x = [0u8; 1];
            read_exact(&b, &mut x).expect("read");
            write_all(&b, b"q").expect("write");
            read_exact(&a, &mut x).expect("read");
            let rtt = t0.elapsed();
            assert!(
                rtt >= Duration::from_millis(95),
                "{}: rtt {rtt:?}",
                rig.label()
            );
            assert!(
                rtt <= Duration::from_secs(10),
                "{}: rtt {rtt:?}",
                rig.label()
            );
        }
    }
}

#[test]
fn one_open_per_end() {
    for rig in Rig::both(CableOptions::default()) {
        let a = rig.open(A);
        let e = rig.try_open(A, Some(STEP)).expect_err("second open");
        assert_eq!(
            e.kind(),
            io::ErrorKind::ResourceBusy,
            "{}: {e}",
            rig.label()
        );
        // Closing frees the end at once, even if the relay has not noticed
        // yet.
        drop(a);
        let _a = rig.open(A);
    }
}

#[test]
fn data_before_peer_open_is_dropped() {
    for rig in Rig::both(CableOptions::default()) {
        let a = rig.open(A);
        write_all(&a, &[9u8; 1000]).expect("write");
        let deadline = Instant::now() + STEP;
        while num(&rig.status(), &["a_to_b", "dropped"]) < 1000 {
            assert!(Instant::now() < deadline, "data never dropped");
            std::thread::sleep(Duration::from_millis(5));
        }
        let b = rig.open(B);
        write_all(&a, b"hello").expect("write");
        let mut got = [0u8; 5];
        read_exact(&b, &mut got).expect("read");
        assert_eq!(&got, b"hello", "{}", rig.label());
    }
}

#[test]
fn in_process_async_open() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cable = EmuCable::new(CableOptions::default()).expect("cable");
    rt.block_on(async {
        let (a, b) = tokio::join!(cable.open_async(A), cable.open_async(B));
        let (a, b) = (a.expect("open a"), b.expect("open b"));
        let n = a
            .writev(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
            .await
            .expect("writev");
        assert_eq!(n, 4);
        let mut got = [0u8; 4];
        let mut have = 0;
        while have < 4 {
            have += b.read(&mut got[have..]).await.expect("read");
        }
        assert_eq!(&got, b"abcd");
        drop((a, b));
        cable.unplug().expect("unplug");
        let e = cable
            .open_async_timeout(A, Some(Duration::from_millis(100)))
            .await
            .expect_err("unplugged");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // An abandoned open frees the end.
        cable.replug().expect("replug");
        let _a = cable.open_async(A).await.expect("open after replug");
    });
}

#[test]
fn dropping_in_process_cable_gives_enxio() {
    let cable = EmuCable::new(CableOptions::default()).expect("cable");
    let a = cable.open(A).expect("open");
    drop(cable);
    assert_enxio(a.read(&mut [0u8; 8]), "read after the cable was dropped");
}

#[test]
fn served_cable_lifecycle() {
    let rig = Rig::served(CableOptions::default());
    let root = rig.root().expect("served").to_owned();
    let dir = root.join("cab");
    for f in ["a", "b", "ctl", "state"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // A second server for the same name is refused.
    let e = serve(&root, "cab", CableOptions::default()).expect_err("second server");
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    let st = rig.status();
    assert_eq!(st["ring_size"], 256);
    assert!(st["zero_copy"].is_boolean(), "{st}");
    assert_eq!(st["rate"], serde_json::Value::Null);
    assert_eq!(st["a"], "closed");
    let a = rig.open(A);
    drop(rig); // shutdown
    assert!(!dir.exists(), "cable directory left behind");
    assert_enxio(a.read(&mut [0u8; 8]), "read after the server stopped");
    let e = open_end(&root, "cab", A, Some(Duration::from_millis(100))).expect_err("gone");
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("tbbridge cable run cab"), "{e}");
    let e = control(&root, "cab", ControlCommand::Status).expect_err("gone");
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
}

#[test]
fn device_open_of_emu_spec_is_async() {
    let rig = Rig::served(CableOptions::default());
    let root: PathBuf = rig.root().expect("served").to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let opts = OpenOptions {
            cable_root: Some(root.clone()),
            timeout: Some(STEP),
        };
        let sa: DeviceSpec = "emu:cab/a".parse().expect("spec");
        let sb: DeviceSpec = "emu:cab/b".parse().expect("spec");
        let a = device::open(&sa, &opts).await.expect("open a");
        let b = device::open(&sb, &opts).await.expect("open b");
        let msg = vec![0xabu8; 3 << 20];
        let writer = async {
            a.write_all(&msg).await.expect("write_all");
        };
        let reader = async {
            let mut buf = bytes::BytesMut::with_capacity(1 << 20);
            while buf.len() < msg.len() {
                if buf.capacity() == buf.len() {
                    buf.reserve(1 << 20);
                }
                let n = b.read_buf(&mut buf).await.expect("read_buf");
                assert!(n > 0, "early EOF");
            }
            buf
        };
        let ((), buf) = tokio::join!(writer, reader);
        assert!(buf[..] == msg[..]);
        // try_* report WouldBlock instead of waiting.
        assert_eq!(
            b.try_read(&mut [0u8; 4])
                .map_err(|e| e.kind())
                .expect_err("nothing"),
            io::ErrorKind::WouldBlock
        );
        // An unplug wakes a waiting reader with ENXIO.
        let root2 = root.clone();
        let unplug = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(100));
            control(&root2, "cab", ControlCommand::Unplug)
        });
        assert_enxio(b.read(&mut [0u8; 8]).await, "async read at unplug");
        unplug.await.expect("join").expect("unplug");
        assert_enxio(a.write_all(b"x").await, "async write after unplug");
        // An open while unplugged times out.
        let short = OpenOptions {
            cable_root: Some(root.clone()),
            timeout: Some(Duration::from_millis(100)),
        };
        drop((a, b));
        let e = device::open(&sa, &short).await.expect_err("unplugged");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    });
}

/// Raw relay throughput, the baseline for everything else. Run with
/// `cargo test --release -p tbbridge-tests --test cable -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn relay_throughput() {
    const TOTAL: usize = 4 << 30;
    const CHUNK: usize = 4 << 20;
    for rig in Rig::both(CableOptions::default()) {
        let a = rig.open(A);
        let b = rig.open(B);
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                let buf = vec![0x11u8; CHUNK];
                let mut sent = 0;
                while sent < TOTAL {
                    write_all(&a, &buf).expect("write");
                    sent += CHUNK;
                }
            });
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0;
            while got < TOTAL {
                got += read_some(&b, &mut buf).expect("read");
            }
        });
        let dt = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        // Wall-clock rate depends on what else the machine runs; the CPU
        // time spent per GB (writer + relay + reader) does much less.
        println!(
            "{} (zero_copy {}): {} MiB A->B in {dt:.3} s = {:.2} GB/s; {:.3} CPU-s per GB",
            rig.label(),
            rig.status()["zero_copy"],
            TOTAL >> 20,
            TOTAL as f64 / dt / 1e9,
            cpu / (TOTAL as f64 / 1e9)
        );
    }
}

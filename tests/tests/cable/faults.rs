//! The seeded faults of the emulated cable (issue 6): read splits,
//! corruption probability, stale bytes after a replug; both flavours, and
//! one run of two bridges over them. Faults are triggered at byte counts or
//! states, never on timers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tbbridge_transport::device::emu::{
    CableFaults, CableOptions, ControlCommand, EmuCable, Probability, MAX_READ_SPLIT,
};
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::{CableEnd, ChannelKind, Class, SessionConfig};

use super::support::*;

const A: CableEnd = CableEnd::A;
const B: CableEnd = CableEnd::B;
const FRAME: usize = 4096;

fn splits(seed: u64) -> CableFaults {
    CableFaults {
        seed,
        read_splits: true,
        ..CableFaults::default()
    }
}

#[test]
fn read_splits_deliver_every_byte_in_small_reads() {
    const TOTAL: u64 = 16 << 20;
    for rig in Rig::both_with(CableOptions::default(), splits(3)) {
        let a = rig.open(A);
        let b = rig.open(B);
        let mut sizes = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| send_pattern(&a, 12, TOTAL).expect("write"));
            // Big reads, as the pump does: they must still come back small.
            let mut buf = vec![0u8; 2 << 20];
            let mut want = vec![0u8; 2 << 20];
            let mut off = 0u64;
            while off < TOTAL {
                let n = read_some(&b, &mut buf).expect("read");
                assert!(n > 0, "{}: EOF at {off}", rig.label());
                pattern(12, off, &mut want[..n]);
                assert!(
                    buf[..n] == want[..n],
                    "{}: bytes differ near {off}",
                    rig.label()
                );
                sizes.push(n);
                off += n as u64;
            }
            assert_eq!(off, TOTAL);
        });
        let small = sizes.iter().filter(|&&n| n <= FRAME).count();
        let ones = sizes.iter().filter(|&&n| n == 1).count();
        let largest = sizes.iter().copied().max().unwrap_or(0);
        let pieces = num(&rig.status(), &["a_to_b", "pieces"]);
        eprintln!(
            "{}: {} reads, {small} of at most 4 KiB, {ones} of 1 byte, largest {largest}; \
             {pieces} pieces",
            rig.label(),
            sizes.len()
        );
        // About 800 pieces of which two thirds are at most 4 KiB and 1/18
        // a single byte; a 2 MiB read never spans two pieces.
        assert!(small >= 200, "{}: only {small} small reads", rig.label());
        assert!(ones >= 5, "{}: only {ones} one-byte reads", rig.label());
        assert!(
            largest <= MAX_READ_SPLIT,
            "{}: a read of {largest}",
            rig.label()
        );
        assert!(pieces >= 400, "{}: {pieces} pieces", rig.label());
    }
}

/// Sends `total` pattern bytes A->B on `rig` and returns what B received.
fn receive_all(rig: &Rig, seed: u64, total: usize) -> Vec<u8> {
    let a = rig.open(A);
    let b = rig.open(B);
    let mut got = vec![0u8; total];
    std::thread::scope(|s| {
        s.spawn(|| send_pattern(&a, seed, total as u64).expect("write"));
        read_exact(&b, &mut got).expect("read");
    });
    got
}

/// Stream offsets and xor masks of the bytes that differ from the pattern.
fn flips(got: &[u8], seed: u64) -> Vec<(usize, u8)> {
    let mut want = vec![0u8; got.len()];
    pattern(seed, 0, &mut want);
    (0..got.len())
        .filter(|&i| got[i] != want[i])
        .map(|i| (i, got[i] ^ want[i]))
        .collect()
}

#[test]
fn corruption_probability_is_seeded_and_counted() {
    const TOTAL: usize = 8 << 20; // 2048 frames
    let faults = |seed| CableFaults {
        seed,
        corrupt_prob: Probability::new(0.01).expect("valid"),
        ..CableFaults::default()
    };
    let mut runs = Vec::new();
    for rig in Rig::both_with(CableOptions::default(), faults(7)) {
        let got = receive_all(&rig, 13, TOTAL);
        let f = flips(&got, 13);
        let mut frames: Vec<usize> = f.iter().map(|&(i, _)| i / FRAME).collect();
        frames.dedup();
        let bits: u32 = f.iter().map(|&(_, x)| x.count_ones()).sum();
        let st = rig.status();
        eprintln!(
            "{}: {} frames corrupted, {bits} bits",
            rig.label(),
            frames.len()
        );
        // About 20 expected; each one is counted, in its direction.
        assert!(!frames.is_empty(), "{}: nothing corrupted", rig.label());
        assert!(bits as usize <= 3 * frames.len());
        assert_eq!(num(&st, &["random_corruptions"]), frames.len() as u64);
        assert_eq!(num(&st, &["a_to_b", "corrupted"]), frames.len() as u64);
        assert_eq!(num(&st, &["b_to_a", "corrupted"]), 0);
        assert_eq!(num(&st, &["corrupted_frames"]), frames.len() as u64);
        runs.push(f);
    }
    // Same seed, same bytes: the same bits flip, whatever the flavour and
    // however the relay happened to cut the stream.
    assert!(
        runs[0] == runs[1],
        "the two flavours flipped different bits"
    );
    let other = receive_all(
        &Rig::in_proc_with(CableOptions::default(), faults(8)),
        13,
        TOTAL,
    );
    assert!(
        flips(&other, 13) != runs[0],
        "another seed flipped the same bits"
    );
}

/// Polls the status until `pred` holds.
fn wait_status(rig: &Rig, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + STEP;
    loop {
        let st = rig.status();
        if pred(&st) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: never {what}: {st}",
            rig.label()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn stale_bytes_start_the_new_link() {
    const N: usize = 5000;
    const OLD: u64 = 1 << 20;
    const IN_FLIGHT: u64 = 200_000;
    for rig in Rig::both(CableOptions::default()) {
        // Set at run time: the relay switches to copying.
        let st = rig.cmd(ControlCommand::Faults(CableFaults {
            stale_bytes: N as u32,
            ..CableFaults::default()
        }));
        assert_eq!(num(&st, &["faults", "stale_bytes"]), N as u64);
        assert_eq!(st["zero_copy"], false);
        let a = rig.open(A);
        let b = rig.open(B);
        // A -> B: 1 MiB delivered, then 200 000 bytes left in the cable.
        std::thread::scope(|s| {
            s.spawn(|| send_pattern(&a, 14, OLD).expect("write"));
            check_pattern(&b, 14, OLD).expect("read");
        });
        let mut rest = vec![0u8; IN_FLIGHT as usize];
        pattern(14, OLD, &mut rest);
        write_all(&a, &rest).expect("write");
        wait_status(&rig, "all written bytes in the relay", |st| {
            num(st, &["a_to_b", "forwarded"]) + num(st, &["a_to_b", "in_flight"]) == OLD + IN_FLIGHT
        });
        // B -> A: fewer bytes than N in the whole old link.
        let mut short = vec![0u8; 3000];
        pattern(15, 0, &mut short);
        write_all(&b, &short).expect("write");
        read_exact(&a, &mut vec![0u8; short.len()]).expect("read");
        rig.cmd(ControlCommand::Unplug);
        drop((a, b));
        rig.cmd(ControlCommand::Replug);
        let a = rig.open(A);
        let b = rig.open(B);
        write_all(&a, b"fresh").expect("write");
        write_all(&b, b"new").expect("write");
        // The new link starts with exactly N old bytes: the last ones A
        // had written, in flight ones included; then the new data.
        let mut got = vec![0u8; N + 5];
        read_exact(&b, &mut got).expect("read");
        assert!(
            got[..N] == rest[rest.len() - N..],
            "{}: wrong stale bytes",
            rig.label()
        );
        assert_eq!(&got[N..], b"fresh", "{}", rig.label());
        let mut got = vec![0u8; short.len() + 3];
        read_exact(&a, &mut got).expect("read");
        assert!(
            got[..short.len()] == short[..],
            "{}: B's old bytes",
            rig.label()
        );
        assert_eq!(&got[short.len()..], b"new");
        let st = rig.status();
        assert_eq!(num(&st, &["a_to_b", "stale"]), N as u64);
        assert_eq!(num(&st, &["b_to_a", "stale"]), short.len() as u64);
        // The next link only leaves over what this one carried.
        rig.cmd(ControlCommand::Unplug);
        drop((a, b));
        rig.cmd(ControlCommand::Replug);
        let b = rig.open(B);
        let mut got = [0u8; 5];
        read_exact(&b, &mut got).expect("read");
        assert_eq!(&got, b"fresh", "{}", rig.label());
        let _a = rig.open(A);
        let st = rig.status();
        assert_eq!(num(&st, &["a_to_b", "stale"]), N as u64 + 5);
        assert_eq!(num(&st, &["b_to_a", "stale"]), short.len() as u64 + 3);
    }
}

fn bytes_pattern(seed: u64, n: usize) -> Bytes {
    let mut v = vec![0u8; n];
    pattern(seed, 0, &mut v);
    Bytes::from(v)
}

/// Opens a stream channel `from` -> `to` and sends `data` on it; returns
/// the sender's task and the receiving handle's collected bytes.
async fn stream(
    from: &Bridge,
    to: &Bridge,
    name: &str,
    data: Bytes,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::task::JoinHandle<Vec<u8>>,
) {
    let mut l = to.listen(name).expect("listen");
    let ch = from
        .open(ChannelKind::Stream, Class::Bulk, name)
        .await
        .expect("open");
    let send = tokio::spawn(async move {
        let mut rest = data;
        while !rest.is_empty() {
            ch.send(rest.split_to((1 << 20).min(rest.len())))
                .await
                .expect("send");
        }
        ch.finish().expect("finish");
        while ch.unacked() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let rx = tokio::time::timeout(STEP, l.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    let recv = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(piece) = rx.recv(1 << 20).await.expect("recv") {
            got.extend_from_slice(&piece);
        }
        got
    });
    (send, recv)
}

/// Two bridges over a cable with `faults`: `total` bytes A -> B (and B ->
/// A too if `both_ways`), the cable pulled and plugged back once a quarter
/// of it crossed (in each direction that carries data). Returns the
/// cable's and both sessions' counters after checking every byte.
async fn transfer_across_a_replug(
    faults: CableFaults,
    total: usize,
    both_ways: bool,
) -> (
    tbbridge_transport::device::emu::CableStats,
    tbbridge_transport::SessionStats,
    tbbridge_transport::SessionStats,
) {
    let cable = Arc::new(EmuCable::with_faults(CableOptions::default(), faults).expect("cable"));
    let a = Bridge::on_emu(&cable, A, SessionConfig::default());
    let b = Bridge::on_emu(&cable, B, SessionConfig::default());
    tokio::time::timeout(STEP, async {
        a.connected().await.expect("a");
        b.connected().await.expect("b");
    })
    .await
    .expect("handshake");
    let ab = bytes_pattern(16, total);
    let ba = bytes_pattern(17, if both_ways { total } else { 0 });
    let (send_ab, recv_ab) = stream(&a, &b, "ab", ab.clone()).await;
    let (send_ba, recv_ba) = stream(&b, &a, "ba", ba.clone()).await;
    let c2 = cable.clone();
    let quarter = (total / 4) as u64;
    let puller = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + STEP;
        loop {
            let st = c2.stats().expect("stats");
            if st.a_to_b.forwarded >= quarter && (!both_ways || st.b_to_a.forwarded >= quarter) {
                break;
            }
            assert!(Instant::now() < deadline, "the transfer never got going");
            std::thread::sleep(Duration::from_millis(1));
        }
        c2.unplug().expect("unplug");
        c2.replug().expect("replug");
    });
    let (got_ab, got_ba) = tokio::time::timeout(Duration::from_secs(120), async {
        (
            recv_ab.await.expect("receiver"),
            recv_ba.await.expect("receiver"),
        )
    })
    .await
    .expect("transfer within 120 s");
    puller.await.expect("puller");
    send_ab.await.expect("sender");
    send_ba.await.expect("sender");
    assert!(got_ab == ab[..], "A -> B bytes differ after the replug");
    assert!(got_ba == ba[..], "B -> A bytes differ after the replug");
    let st = cable.stats().expect("stats");
    let (sa, sb) = (a.stats(), b.stats());
    eprintln!(
        "stale delivered {} / {}, resync skipped A {} B {}, pieces {} / {}, links A {} B {}",
        st.a_to_b.stale,
        st.b_to_a.stale,
        sa.resync_bytes,
        sb.resync_bytes,
        st.a_to_b.pieces,
        st.b_to_a.pieces,
        sa.links_up,
        sb.links_up
    );
    (st, sa, sb)
}

/// Two bridges over a cable with stale bytes and read splits: transfers
/// both ways survive a replug in their middle, and both sessions skipped
/// the stale bytes (their resync before the peer's Hello) instead of
/// failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resync_over_stale_bytes_and_small_reads() {
    const STALE: u32 = 3000;
    let faults = CableFaults {
        stale_bytes: STALE,
        ..splits(5)
    };
    let (st, sa, sb) = transfer_across_a_replug(faults, 32 << 20, true).await;
    // Both old links carried megabytes: the stale bytes are the middle of
    // a batch, which the sessions must skip.
    assert_eq!(
        st.a_to_b.stale,
        u64::from(STALE),
        "no stale bytes reached B"
    );
    assert_eq!(
        st.b_to_a.stale,
        u64::from(STALE),
        "no stale bytes reached A"
    );
    assert!(sb.resync_bytes > 0, "B never skipped the stale bytes");
    assert!(sa.resync_bytes > 0, "A never skipped the stale bytes");
    assert!(sa.links_up >= 2 && sb.links_up >= 2);
    assert!(
        st.a_to_b.pieces > 100 && st.b_to_a.pieces > 100,
        "reads were not split"
    );
}

/// The same with data one way only: B -> A carried a few hundred bytes on
/// the old link, so its stale bytes are that whole stream, B's first Hello
/// included. A takes that old Hello (`resume_of` 0) for B's Hello on the
/// new link, concludes the peer restarted and resets every channel (fixed:
/// a Hello of the peer we met that does not name us is an old one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_a_replayed_old_hello() {
    // More than B -> A ever carries before the pull (acknowledgements and
    // keepalives: how many depends on how long a loaded machine takes), so
    // the whole old stream is replayed, its first Hello included.
    let stale = 1 << 20;
    let faults = CableFaults {
        stale_bytes: stale,
        ..CableFaults::default()
    };
    let (st, _, _) = transfer_across_a_replug(faults, 32 << 20, false).await;
    assert!(
        st.b_to_a.stale > 0 && st.b_to_a.stale < stale as u64,
        "{} stale bytes: not the whole old stream",
        st.b_to_a.stale
    );
}

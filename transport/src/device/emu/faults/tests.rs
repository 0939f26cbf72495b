use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::*;

fn faults(seed: u64) -> CableFaults {
    CableFaults {
        seed,
        read_splits: true,
        corrupt_prob: Probability::new(1e-3).expect("valid"),
        stale_bytes: 100,
    }
}

#[test]
fn piece_sizes_are_mostly_small_sometimes_large_sometimes_one() {
    let mut rng = Rng::new(7, 0, Purpose::Splits);
    const N: usize = 100_000;
    let sizes: Vec<usize> = (0..N).map(|_| Splitter::draw(&mut rng)).collect();
    let frac =
        |f: &dyn Fn(usize) -> bool| sizes.iter().filter(|&&s| f(s)).count() as f64 / N as f64;
    let small = frac(&|s| s <= FRAME);
    let one = frac(&|s| s == 1);
    let large = frac(&|s| s > 64 * 1024);
    // Expected 12/18, 1/18 and 2/18 (see SPLIT_BITS).
    assert!((0.63..0.70).contains(&small), "small {small}");
    assert!((0.045..0.067).contains(&one), "one byte {one}");
    assert!((0.09..0.13).contains(&large), "large {large}");
    assert!(sizes.iter().all(|&s| (1..=MAX_READ_SPLIT).contains(&s)));
    // Same seed, same sizes; another seed, others.
    let mut again = Rng::new(7, 0, Purpose::Splits);
    assert!(sizes[..100]
        .iter()
        .all(|&s| s == Splitter::draw(&mut again)));
    let mut other = Rng::new(7, 1, Purpose::Splits);
    assert!(sizes[..100]
        .iter()
        .any(|&s| s != Splitter::draw(&mut other)));
}

#[test]
fn splitter_plans_cover_the_stream_exactly() {
    let mut s = Splitter::new(&faults(3), 0);
    let mut rng = Rng::new(3, 0, Purpose::Splits);
    let mut expect = Vec::new();
    for _ in 0..50 {
        expect.push(Splitter::draw(&mut rng));
    }
    // Send in odd amounts; the marked sends must end exactly at the drawn
    // piece ends and carry at most MARK_TAIL bytes.
    let mut offset = 0usize;
    let mut ends = Vec::new();
    let mut last_end = 0usize;
    let mut k = 0usize;
    while ends.len() < expect.len() {
        k += 1;
        let avail = [1usize, 5000, 700, 1 << 20, 3][k % 5];
        let (n, mark) = s.plan(avail);
        assert!(n <= avail && n > 0);
        if mark {
            assert!(n <= MARK_TAIL);
        }
        s.sent(n, mark);
        offset += n;
        if mark {
            ends.push(offset - last_end);
            last_end = offset;
        }
    }
    assert_eq!(ends, expect);
    assert_eq!(s.pieces, expect.len() as u64);
    // Off: everything at once, never marked.
    let mut off = Splitter::new(&CableFaults::default(), 0);
    assert_eq!(off.plan(12345), (12345, false));
}

/// Corrupts `len` bytes of zeros cut into pieces of `cut` bytes.
fn corrupted(c: &mut Corrupter, len: usize, cut: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut pos = 0usize;
    while pos < len {
        let n = cut.min(len - pos);
        c.apply(&mut out[pos..pos + n], pos as u64);
        pos += n;
    }
    out
}

#[test]
fn corruption_is_seeded_and_independent_of_cuts() {
    const LEN: usize = 4 << 20; // 1024 frames
    let f = CableFaults {
        corrupt_prob: Probability::new(0.02).expect("valid"),
        ..faults(7)
    };
    let mut a = Corrupter::new(&f, 0, 0);
    let mut b = Corrupter::new(&f, 0, 0);
    let x = corrupted(&mut a, LEN, 1 << 20);
    let y = corrupted(&mut b, LEN, 37);
    assert!(x == y, "the cut changed the flipped bits");
    assert_eq!(a.injected, b.injected);
    // Each picked frame has 1 to 3 flipped bits, and a frame counts once.
    let mut frames = 0;
    for frame in x.chunks(FRAME) {
        let ones: u32 = frame.iter().map(|b| b.count_ones()).sum();
        assert!(ones <= 3);
        frames += u64::from(ones > 0);
    }
    assert_eq!(frames, a.injected);
    assert!(
        (5..=45).contains(&frames),
        "{frames} of 1024 frames at p = 0.02"
    );
    let mut other = Corrupter::new(&CableFaults { seed: 8, ..f }, 0, 0);
    assert!(corrupted(&mut other, LEN, 4096) != x, "seed ignored");
}

#[test]
fn corruption_rate_matches_the_probability() {
    for (p, frames) in [(1e-3, 1_000_000u64), (0.25, 100_000), (1.0, 1000)] {
        let f = CableFaults {
            corrupt_prob: Probability::new(p).expect("valid"),
            ..faults(11)
        };
        let mut c = Corrupter::new(&f, 1, 0);
        let mut hits = 0u64;
        while let Some(byte) = c.next_byte() {
            let frame = byte / FRAME as u64;
            if frame >= frames {
                break;
            }
            let mut one = [0u8; 1];
            c.apply(&mut one, byte);
            hits = c.injected;
        }
        let expect = p * frames as f64;
        let err = (hits as f64 - expect).abs() / expect;
        assert!(err < 0.1, "p {p}: {hits} hits for {expect}");
    }
    let mut never = Corrupter::new(&CableFaults::default(), 0, 0);
    assert_eq!(never.next_byte(), None);
    assert!(corrupted(&mut never, 1 << 20, 4096).iter().all(|&b| b == 0));
}

#[test]
fn corruption_counts_frames_from_the_base() {
    let f = CableFaults {
        corrupt_prob: Probability::new(1.0).expect("valid"),
        ..faults(5)
    };
    // Every frame is picked; frames start at offset 100.
    let mut c = Corrupter::new(&f, 0, 100);
    let first = c.next_byte().expect("a flip");
    assert!((100..100 + FRAME as u64).contains(&first));
    let buf = corrupted(&mut c, 100 + 3 * FRAME, 4096);
    assert!(buf[..100].iter().all(|&b| b == 0));
    assert_eq!(c.injected, 3);
}

#[test]
fn tail_keeps_the_last_bytes() {
    let mut t = Tail::default();
    t.push(b"ignored while off");
    assert!(t.to_vec().is_empty());
    t.set_keep(10);
    let mut all = Vec::new();
    for (i, n) in [3usize, 4, 9, 1, 25, 2, 10, 7].iter().enumerate() {
        let chunk: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
        t.push(&chunk);
        all.extend_from_slice(&chunk);
        let want = &all[all.len().saturating_sub(10)..];
        assert_eq!(t.to_vec(), want);
    }
    t.set_keep(4);
    assert_eq!(t.to_vec(), &all[all.len() - 4..]);
    t.set_keep(8);
    t.push(b"xyz");
    let mut want = all[all.len() - 4..].to_vec();
    want.extend_from_slice(b"xyz");
    assert_eq!(t.to_vec(), want);
}

#[test]
fn faults_words_round_trip_and_validate() {
    let f = faults(42);
    assert_eq!(CableFaults::from_words(&f.to_words()), Ok(f));
    assert_eq!(CableFaults::from_words(""), Ok(CableFaults::default()));
    let p = CableFaults::from_words("corrupt-prob=1e-4 seed=7").expect("parse");
    assert_eq!(p.corrupt_prob.get(), 1e-4);
    assert_eq!(p.seed, 7);
    assert!(!p.read_splits);
    for bad in [
        "seed",
        "seed=x",
        "colour=red",
        "read-splits=maybe",
        "corrupt-prob=2",
    ] {
        assert!(CableFaults::from_words(bad).is_err(), "{bad}");
    }
    assert!(Probability::new(f64::NAN).is_err());
    assert_eq!(Probability::new(-0.0), Ok(Probability::ZERO));
    assert!(f.validate(32).is_ok());
    let big = CableFaults {
        stale_bytes: 32 * 4096 + 1,
        ..f
    };
    assert!(matches!(
        big.validate(32),
        Err(FaultError::StaleTooLarge { .. })
    ));
    assert!(
        f.to_json().contains("\"corrupt_prob\":1e-3"),
        "{}",
        f.to_json()
    );
}

#[test]
fn marked_sends_end_reads() -> io::Result<()> {
    let (relay, client) = UnixStream::pair()?;
    client.set_nonblocking(true)?;
    // SAFETY: plain eventfd creation, checked below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    // SAFETY: a fresh descriptor we own.
    let mark = unsafe { OwnedFd::from_raw_fd(efd) };
    crate::device::emu::ring::send_slice(relay.as_fd(), &[1u8; 100])?;
    assert_eq!(send_marked(relay.as_fd(), &[2u8; 50], mark.as_fd())?, 50);
    assert_eq!(send_marked(relay.as_fd(), &[3u8; 1], mark.as_fd())?, 1);
    crate::device::emu::ring::send_slice(relay.as_fd(), &[4u8; 7])?;
    let mut buf = [0u8; 4096];
    let mut sizes = Vec::new();
    loop {
        match (&client).read(&mut buf) {
            Ok(n) => sizes.push(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    assert_eq!(sizes, [150, 1, 7]);
    Ok(())
}

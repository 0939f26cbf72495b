//! The byte patterns the `session_ops` target sends: every byte is a
//! function of (flow, offset), so any receive can be checked on its own.

use bytes::Bytes;

use super::harness::Key;

pub(crate) fn seed_of(key: Key, sender: usize) -> u64 {
    let mut x = (u64::from(key.gen) << 40)
        ^ ((key.opener as u64) << 36)
        ^ ((sender as u64) << 34)
        ^ u64::from(key.id);
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29)
}

fn word(seed: u64, i: u64) -> u64 {
    let mut x = seed ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 29)
}

/// The period of every flow's sequence, and the longest range one send can
/// ask for (`Size::Chunks`): the table holds a period and that much again,
/// so any range is one slice of it.
const PERIOD: usize = 1 << 22;
const MAX_RANGE: usize = 9 * 65_536;

/// One table shared by all flows (each starts at its own place in it), so
/// sends are zero-copy slices and checks one compare: building the bytes
/// per send dominated the fuzzer's time, every compare of the loop traced.
fn table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut v = Vec::with_capacity(PERIOD + MAX_RANGE);
        for i in 0..PERIOD as u64 / 8 {
            v.extend_from_slice(&word(0x7462_6272, i).to_le_bytes());
        }
        v.extend_from_within(..MAX_RANGE);
        v
    })
}

fn start(seed: u64, off: u64) -> usize {
    (seed.wrapping_add(off) % PERIOD as u64) as usize
}

pub(crate) fn pattern_bytes(seed: u64, off: u64, len: usize) -> Bytes {
    assert!(
        len <= MAX_RANGE,
        "a range of {len} bytes is longer than any send"
    );
    let p = start(seed, off);
    Bytes::from_static(&table()[p..p + len])
}

/// Where datagram and message `seq` of a flow starts in the sequence.
pub(crate) fn seq_off(seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
}

/// Checks that `data` is the flow's sequence from `off`: one slice
/// comparison (a byte loop here dominated the fuzzer's time, every compare
/// traced); `what` names the flow, built only when the check fails.
pub(crate) fn check_pattern(seed: u64, off: u64, data: &[u8], what: &dyn Fn() -> String) {
    let want = pattern_bytes(seed, off, data.len());
    if data != &want[..] {
        let i = data
            .iter()
            .zip(want.iter())
            .take_while(|(a, b)| a == b)
            .count();
        panic!("{}: wrong byte at offset {}", what(), off + i as u64);
    }
}

/// Datagrams carry their sequence number (the first 8 bytes) since some
/// may be dropped.
pub(crate) fn dgram_bytes(seed: u64, seq: u64, len: usize) -> Bytes {
    let len = len.max(8);
    let mut v = seq.to_le_bytes().to_vec();
    v.extend_from_slice(&pattern_bytes(seed, seq_off(seq), len - 8));
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any range of a flow's sequence is the same bytes as that range cut
    /// from the whole, so a receive can be checked on its own.
    #[test]
    fn ranges_agree_with_the_whole() {
        let whole = pattern_bytes(7, 0, 100);
        for off in 0..40 {
            for len in [0, 1, 7, 8, 9, 33] {
                let r = pattern_bytes(7, off as u64, len);
                assert_eq!(&r[..], &whole[off..off + len], "off {off} len {len}");
            }
        }
        check_pattern(7, 13, &whole[13..50], &|| "flow".to_owned());
        let mut bad = whole[13..50].to_vec();
        bad[5] ^= 1;
        let e = std::panic::catch_unwind(|| check_pattern(7, 13, &bad, &|| "flow".to_owned()))
            .expect_err("a wrong byte fails");
        let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(msg, "flow: wrong byte at offset 18");
    }
}

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

pub(crate) fn word(seed: u64, i: u64) -> u64 {
    let mut x = seed ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 29)
}

/// The byte at `off` of a flow's sequence.
pub(crate) fn pattern(seed: u64, off: u64) -> u8 {
    (word(seed, off >> 3) >> ((off & 7) * 8)) as u8
}

pub(crate) fn pattern_bytes(seed: u64, off: u64, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    let mut o = off;
    while v.len() < len {
        let w = word(seed, o >> 3).to_le_bytes();
        let start = (o & 7) as usize;
        let take = (8 - start).min(len - v.len());
        v.extend_from_slice(&w[start..start + take]);
        o += take as u64;
    }
    Bytes::from(v)
}

pub(crate) fn check_pattern(seed: u64, off: u64, data: &[u8], what: &str) {
    for (i, &b) in data.iter().enumerate() {
        let o = off + i as u64;
        assert_eq!(b, pattern(seed, o), "{what}: wrong byte at offset {o}");
    }
}

/// Datagrams carry their sequence number (the first 8 bytes) since some
/// may be dropped.
pub(crate) fn dgram_bytes(seed: u64, seq: u64, len: usize) -> Bytes {
    let len = len.max(8);
    let mut v = seq.to_le_bytes().to_vec();
    v.extend_from_slice(&pattern_bytes(seed, seq << 32, len - 8));
    Bytes::from(v)
}

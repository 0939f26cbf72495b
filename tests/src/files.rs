//! Test files: large pseudo-random contents with their checksum, and
//! checksums of what arrived.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

/// Writes `len` pseudo-random bytes to `path` (a fast xorshift stream:
/// /dev/urandom would take longer than the transfer); returns their
/// SHA-256.
pub fn make_file(path: &std::path::Path, len: u64) -> String {
    let mut f =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create"));
    let mut h = Sha256::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write");
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush().expect("flush");
    hex(&h.finalize())
}

/// `b` in lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of the file at `path`, in hex.
pub fn sha256_file(path: &std::path::Path) -> String {
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return hex(&h.finalize());
        }
        h.update(&buf[..n]);
    }
}

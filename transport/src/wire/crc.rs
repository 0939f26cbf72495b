//! The wire's checksum, CRC32C (Castagnoli, CRC-32/ISCSI: reflected
//! polynomial `0x82f63b78`, initial value and final XOR `0xffffffff`), in one
//! place.
//!
//! Every batch carries a CRC32C of its header's first 12 bytes and one of its
//! body (`docs/wire.md`). It is the largest CPU cost of the transport, so the
//! implementation behind these two functions is chosen by measurement (the
//! `crc` group of `benches/benches/codec.rs`); callers never name a checksum
//! crate, so it can change here alone.
//!
//! # Implementations
//! * x86-64 with AVX2 and VPCLMULQDQ (AMD Zen 3 and later, Intel Ice Lake and
//!   later), the `x86` module below: under 128 bytes the SSE4.2 `crc32`
//!   instruction; up to 1 KiB folding, 128 bytes a step with 256-bit
//!   carry-less multiplies; from 1 KiB both at once on separate parts of the
//!   input, since they run on different execution units. On this project's
//!   Zen 3 machines (the bench's `crc` group, a noisy shared VM): 5-10 GiB/s
//!   at 64 B, 12-22 at 1 KiB, 30-35 from 64 KiB on; the `crc32c` crate
//!   3-5, 11-14 and 14-22.
//! * Anywhere else: the `crc32c` crate (three interleaved `crc32`
//!   instruction streams with SSE4.2 or on AArch64, tables otherwise).
//!
//! Why not a crate for the fast path: `crc-fast` (PCLMULQDQ folding fused
//! with the `crc32` instruction) has a VPCLMULQDQ path only together with
//! AVX-512, which these CPUs lack; without it, it measured slower here than
//! the `crc32c` crate. The 256-bit VPCLMULQDQ intrinsics need Rust 1.89, above
//! our `rust-version`, so the one instruction is written as inline assembly.

/// CRC32C of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// Continues `crc` (the CRC32C of the bytes before) over `data`:
/// `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`, so a body sent as
/// several segments is checksummed as they are appended. `crc32c_append(0, x)`
/// is `crc32c(x)`.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: `available` checked the CPU features the function uses.
        return unsafe { x86::crc32c_append(crc, data) };
    }
    crc32c::crc32c_append(crc, data)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! CRC32C by folding (Intel, "Fast CRC Computation for Generic
    //! Polynomials Using PCLMULQDQ", 2009), 256 bits at a time.
    //!
    //! Bit-reflected, as the CRC is: a 128-bit lane loaded little endian
    //! holds the message's polynomial with bit `i` the coefficient of
    //! `x^(127-i)`; its low 64 bits are the high-degree half. Moving a lane
    //! `D` bits further down the message multiplies it by `x^D`: the low
    //! half is carry-less multiplied by `x^(D+32) mod P`, the high half by
    //! `x^(D-32) mod P` (the constants are stored so that the product of two
    //! reflected operands comes out aligned, see [`fold_constants`]), and the
    //! two 96-bit products XORed give a 128-bit value congruent to the lane
    //! times `x^D`, to be XORed with the data `D` bits on. The last lane is
    //! reduced to the CRC by the `crc32` instruction (which computes exactly
    //! `lane · x^32 mod P`), and the tail continues with it.
    //!
    //! From [`FUSE_MIN`] bytes on, [`fused`] runs three `crc32` instruction
    //! streams over the latter part of the input in the same loop, and joins
    //! the four CRCs by carry-less multiplication (Peter Cawley's
    //! "fast-crc32c-4k" technique, which crc-fast's "fusion" also uses).

    // Intrinsics are `unsafe fn`s in Rust 1.85 and safe in a
    // `#[target_feature]` function in later versions: the blocks must be there
    // for the one and are "unnecessary" for the other.
    #![allow(unused_unsafe)]

    use core::arch::asm;
    use core::arch::x86_64::{
        __cpuid_count, __m128i, __m256i, _mm256_castsi256_si128, _mm256_extracti128_si256,
        _mm256_loadu_si256, _mm256_set_epi32, _mm256_set_epi64x, _mm256_xor_si256,
        _mm_clmulepi64_si128, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8,
        _mm_cvtsi128_si64, _mm_cvtsi32_si128, _mm_extract_epi64, _mm_loadu_si128, _mm_set_epi64x,
        _mm_xor_si128,
    };
    use std::sync::atomic::{AtomicU8, Ordering};

    /// CRC32C's polynomial, bit-reflected (without the `x^32` term).
    const POLY: u32 = 0x82f6_3b78;

    /// Inputs shorter than this take the `crc32` instruction alone: folding
    /// starts with 128 bytes in four registers, and below that its fixed
    /// cost (the final folds) is more than the instruction's.
    const FOLD_MIN: usize = 128;

    /// `x^n mod P`, bit-reflected (bit `i` is the coefficient of `x^(31-i)`):
    /// a CRC step over a zero bit is a multiplication by `x`.
    pub(super) const fn xn_mod_p(n: u32) -> u32 {
        let mut v = 1u32 << 31;
        let mut i = 0;
        while i < n {
            v = (v >> 1) ^ if v & 1 != 0 { POLY } else { 0 };
            i += 1;
        }
        v
    }

    /// The two multipliers that move a 128-bit lane `d` bits on: for the low
    /// (high-degree) half `x^(d+32) mod P`, for the high half `x^(d-32) mod P`.
    /// Each is stored reflected and shifted left by one (bit `j` the
    /// coefficient of `x^(32-j)`), so that the carry-less product with a
    /// reflected 64-bit half lands on the bits of a reflected 128-bit lane.
    pub(super) const fn fold_constants(d: u32) -> (i64, i64) {
        (
            ((xn_mod_p(d + 32) as u64) << 1) as i64,
            ((xn_mod_p(d - 32) as u64) << 1) as i64,
        )
    }

    /// `a · b mod P`, both reflected (zlib's `multmodp`).
    const fn mul_mod_p(a: u32, mut b: u32) -> u32 {
        let mut m = 1u32 << 31;
        let mut p = 0;
        while m != 0 {
            if a & m != 0 {
                p ^= b;
            }
            m >>= 1;
            b = (b >> 1) ^ if b & 1 != 0 { POLY } else { 0 };
        }
        p
    }

    /// `x^(2^i - 33) mod P` for `i` in 6..64 (the entries below 6, which
    /// would be negative powers, are unused and 0): the factors of
    /// [`shift_constant`]. Squaring entry `i` with [`mul_x33`]'s extra
    /// `x^33` gives entry `i + 1`.
    pub(super) const POW2_X33: [u32; 64] = {
        let mut t = [0u32; 64];
        t[6] = xn_mod_p(64 - 33);
        let mut i = 7;
        while i < 64 {
            t[i] = mul_mod_p(mul_mod_p(t[i - 1], t[i - 1]), xn_mod_p(33));
            i += 1;
        }
        t
    };

    /// Bytes folded per step of [`fused`].
    const FUSE_VEC: usize = 128;
    /// Bytes per step of each of [`fused`]'s three `crc32` streams: five
    /// instructions each while the fold takes its 128 bytes.
    const FUSE_LANE: usize = 40;
    const FUSE_STEP: usize = FUSE_VEC + 3 * FUSE_LANE;
    /// Inputs from this long take [`fused`]: below, joining the streams
    /// (the folded region's reduction and three multiplies in a row) costs
    /// more than the streams save. Measured on Zen 3: 768 bytes fold
    /// faster alone, 1 KiB is faster fused.
    const FUSE_MIN: usize = 1024;

    const K1024: (i64, i64) = fold_constants(1024);
    const K256: (i64, i64) = fold_constants(256);
    const K128: (i64, i64) = fold_constants(128);

    const UNKNOWN: u8 = 0;
    const NO: u8 = 1;
    const YES: u8 = 2;
    static AVAILABLE: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// Whether this CPU (and OS) has SSE4.2, PCLMULQDQ, AVX2 and VPCLMULQDQ;
    /// detected once (CPUID traps to the hypervisor in a VM).
    #[inline]
    pub(super) fn available() -> bool {
        match AVAILABLE.load(Ordering::Relaxed) {
            YES => true,
            NO => false,
            _ => {
                let yes = detect();
                AVAILABLE.store(if yes { YES } else { NO }, Ordering::Relaxed);
                yes
            }
        }
    }

    #[cold]
    fn detect() -> bool {
        // `avx2` also says the OS saves the 256-bit registers, and that
        // CPUID leaf 7 exists. VPCLMULQDQ is its ECX bit 10, read directly:
        // `is_x86_feature_detected!("vpclmulqdq")` is stable only from
        // Rust 1.89.
        std::is_x86_feature_detected!("sse4.2")
            && std::is_x86_feature_detected!("pclmulqdq")
            && std::is_x86_feature_detected!("avx2")
            && cpuid7_ecx() & (1 << 10) != 0
    }

    fn cpuid7_ecx() -> u32 {
        // SAFETY: CPUID exists on every x86-64 CPU, and leaf 7 on every one
        // with AVX2 (checked before this is called).
        unsafe { __cpuid_count(7, 0) }.ecx
    }

    /// `crc32c_append` with the features [`available`] checks.
    ///
    /// # Safety
    /// The CPU must have SSE4.2, PCLMULQDQ, AVX2 and VPCLMULQDQ.
    #[target_feature(enable = "sse4.2,pclmulqdq,avx2")]
    pub(super) unsafe fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
        // SAFETY: the caller guarantees the features.
        let state = unsafe {
            if data.len() < FOLD_MIN {
                crc32_instr(!crc, data)
            } else if data.len() < FUSE_MIN {
                fold(!crc, data)
            } else {
                fused(!crc, data)
            }
        };
        !state
    }

    // Each `unsafe fn` below is one `unsafe` block: Rust 1.85 (our
    // `rust-version`) has every intrinsic as an `unsafe fn`, later versions
    // make most of them safe inside a `#[target_feature]` function (hence
    // the module's `allow(unused_unsafe)`). Only unaligned loads within a
    // slice, register operations and CRC instructions happen inside; the
    // safety condition is the CPU features alone.

    /// The `crc32` instruction over `data`, from and to the raw CRC state.
    ///
    /// # Safety
    /// The CPU must have SSE4.2.
    #[target_feature(enable = "sse4.2")]
    unsafe fn crc32_instr(state: u32, data: &[u8]) -> u32 {
        // SAFETY: the caller guarantees SSE4.2.
        unsafe {
            let mut words = data.chunks_exact(8);
            let mut s = u64::from(state);
            for w in &mut words {
                s = _mm_crc32_u64(s, word(w, 0));
            }
            let mut s = s as u32;
            let mut rest = words.remainder();
            if let [a, b, c, d, tail @ ..] = rest {
                s = _mm_crc32_u32(s, u32::from_le_bytes([*a, *b, *c, *d]));
                rest = tail;
            }
            if let [a, b, tail @ ..] = rest {
                s = _mm_crc32_u16(s, u16::from_le_bytes([*a, *b]));
                rest = tail;
            }
            if let [a] = rest {
                s = _mm_crc32_u8(s, *a);
            }
            s
        }
    }

    /// The little-endian `u64` at `b[at..at + 8]` (panics if outside).
    #[inline]
    fn word(b: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    }

    /// Four accumulators of 32 bytes (two lanes each) loaded from the first
    /// 128 bytes of `first`, the raw CRC `state` XORed into its first four
    /// bytes.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn start(state: u32, first: &[u8]) -> [__m256i; 4] {
        // SAFETY: the caller guarantees AVX2; loads stay in `first`.
        unsafe {
            let init = _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, state as i32);
            [
                _mm256_xor_si256(load32(first), init),
                load32(&first[32..]),
                load32(&first[64..]),
                load32(&first[96..]),
            ]
        }
    }

    /// Moves the accumulators on by 128 bytes and adds the next 128, `b`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and VPCLMULQDQ.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn step(x: &mut [__m256i; 4], b: &[u8]) {
        // SAFETY: the caller guarantees the features; loads stay in `b`.
        unsafe {
            let k1024 = _mm256_set_epi64x(K1024.1, K1024.0, K1024.1, K1024.0);
            for (i, acc) in x.iter_mut().enumerate() {
                *acc = _mm256_xor_si256(fold256(*acc, k1024), load32(&b[32 * i..]));
            }
        }
    }

    /// The raw CRC after the accumulators' bytes and then `rest`.
    ///
    /// # Safety
    /// The CPU must have SSE4.2, PCLMULQDQ, AVX2 and VPCLMULQDQ.
    #[target_feature(enable = "sse4.2,pclmulqdq,avx2")]
    unsafe fn finish(x: [__m256i; 4], rest: &[u8]) -> u32 {
        // SAFETY: the caller guarantees the features; loads stay in `rest`.
        unsafe {
            let k256 = _mm256_set_epi64x(K256.1, K256.0, K256.1, K256.0);
            let k128 = _mm_set_epi64x(K128.1, K128.0);

            // Into one accumulator, then the 32-byte steps of `rest`.
            let mut y = x[0];
            for acc in &x[1..] {
                y = _mm256_xor_si256(fold256(y, k256), *acc);
            }
            let mut steps = rest.chunks_exact(32);
            for b in &mut steps {
                y = _mm256_xor_si256(fold256(y, k256), load32(b));
            }

            // Its two lanes into one, then the 16-byte steps left.
            let mut z = _mm_xor_si128(
                fold128(_mm256_castsi256_si128(y), k128),
                _mm256_extracti128_si256::<1>(y),
            );
            let mut steps = steps.remainder().chunks_exact(16);
            for b in &mut steps {
                z = _mm_xor_si128(fold128(z, k128), load16(b));
            }

            // The last lane times x^32 mod P is the CRC of its 16 bytes
            // from a zero state; the tail (under 16 bytes) goes on from it.
            let s = _mm_crc32_u64(0, _mm_cvtsi128_si64(z) as u64);
            let s = _mm_crc32_u64(s, _mm_extract_epi64::<1>(z) as u64);
            crc32_instr(s as u32, steps.remainder())
        }
    }

    /// Folds `data` (at least [`FOLD_MIN`] bytes) from the raw CRC `state`.
    ///
    /// # Safety
    /// The CPU must have SSE4.2, PCLMULQDQ, AVX2 and VPCLMULQDQ.
    #[target_feature(enable = "sse4.2,pclmulqdq,avx2")]
    unsafe fn fold(state: u32, data: &[u8]) -> u32 {
        // SAFETY: the caller guarantees the features; loads stay in `data`.
        unsafe {
            let mut blocks = data.chunks_exact(128);
            let Some(first) = blocks.next() else {
                return crc32_instr(state, data);
            };
            let mut x = start(state, first);
            for b in &mut blocks {
                step(&mut x, b);
            }
            finish(x, blocks.remainder())
        }
    }

    /// Folding and the `crc32` instruction at once, for inputs of at least
    /// [`FUSE_MIN`] bytes: the two use different execution units, each
    /// about 8 bytes a cycle on Zen 3. The input is cut into a folded
    /// region and three `crc32` streams (`n` steps of [`FUSE_VEC`] and
    /// 3 × [`FUSE_LANE`] bytes, one loop doing a step of each), whose CRCs
    /// are joined by moving each on over the next stream's length
    /// (`crc(a ++ b) = crc(a) · x^(8|b|) + crc(b)`, with [`shift`]), and
    /// the tail (under one step) goes on from there.
    ///
    /// # Safety
    /// The CPU must have SSE4.2, PCLMULQDQ, AVX2 and VPCLMULQDQ.
    #[target_feature(enable = "sse4.2,pclmulqdq,avx2")]
    unsafe fn fused(state: u32, data: &[u8]) -> u32 {
        // SAFETY: the caller guarantees the features; loads stay in `data`.
        unsafe {
            let n = data.len() / FUSE_STEP;
            debug_assert!(n >= 2);
            let (v, rest) = data.split_at(FUSE_VEC * n);
            let (s1, rest) = rest.split_at(FUSE_LANE * n);
            let (s2, rest) = rest.split_at(FUSE_LANE * n);
            let (s3, tail) = rest.split_at(FUSE_LANE * n);

            let mut x = start(state, v);
            let (mut c1, mut c2, mut c3) = (0u64, 0u64, 0u64);
            let lanes = s1
                .chunks_exact(FUSE_LANE)
                .zip(s2.chunks_exact(FUSE_LANE))
                .zip(s3.chunks_exact(FUSE_LANE));
            // The folded region's first 128 bytes are in `x` already: its
            // steps are one fewer, and the streams' last one comes after.
            let mut blocks = v[FUSE_VEC..].chunks_exact(FUSE_VEC);
            for ((l1, l2), l3) in lanes {
                if let Some(b) = blocks.next() {
                    step(&mut x, b);
                }
                for at in (0..FUSE_LANE).step_by(8) {
                    c1 = _mm_crc32_u64(c1, word(l1, at));
                    c2 = _mm_crc32_u64(c2, word(l2, at));
                    c3 = _mm_crc32_u64(c3, word(l3, at));
                }
            }
            let mut crc = finish(x, &[]);
            let k = shift_constant(8 * (FUSE_LANE * n) as u64);
            for c in [c1, c2, c3] {
                crc = shift(crc, k) ^ c as u32;
            }
            if tail.len() >= FOLD_MIN {
                fold(crc, tail)
            } else {
                crc32_instr(crc, tail)
            }
        }
    }

    /// `a · b · x^33 mod P` (reflected): the carry-less product of two
    /// reflected 32-bit values is `a · b · x` read as a 64-bit message, and
    /// the `crc32` instruction multiplies that by `x^32` and reduces.
    ///
    /// # Safety
    /// The CPU must have SSE4.2 and PCLMULQDQ.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    unsafe fn mul_x33(a: u32, b: u32) -> u32 {
        // SAFETY: the caller guarantees the features.
        unsafe {
            let p = _mm_clmulepi64_si128::<0x00>(
                _mm_cvtsi32_si128(a as i32),
                _mm_cvtsi32_si128(b as i32),
            );
            _mm_crc32_u64(0, _mm_cvtsi128_si64(p) as u64) as u32
        }
    }

    /// `crc` moved on over `bits` zero bits, `k` being
    /// [`shift_constant`]`(bits)`: `crc · x^bits mod P`.
    ///
    /// # Safety
    /// The CPU must have SSE4.2 and PCLMULQDQ.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    unsafe fn shift(crc: u32, k: u32) -> u32 {
        // SAFETY: the caller guarantees the features.
        unsafe { mul_x33(crc, k) }
    }

    /// `x^(bits - 33) mod P` for `bits` a non-zero multiple of 64: the
    /// product of the [`POW2_X33`] entries of its one bits (each product
    /// through [`mul_x33`] keeps the `- 33`).
    ///
    /// # Safety
    /// The CPU must have SSE4.2 and PCLMULQDQ.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    unsafe fn shift_constant(bits: u64) -> u32 {
        debug_assert!(bits != 0 && bits % 64 == 0);
        // SAFETY: the caller guarantees the features.
        unsafe {
            let mut rest = bits & (bits - 1);
            let mut k = POW2_X33[bits.trailing_zeros() as usize];
            while rest != 0 {
                k = mul_x33(k, POW2_X33[rest.trailing_zeros() as usize]);
                rest &= rest - 1;
            }
            k
        }
    }

    /// The first 32 bytes of `b` (panics if shorter), unaligned.
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load32(b: &[u8]) -> __m256i {
        let b = &b[..32];
        // SAFETY: 32 readable bytes; AVX from the caller.
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    /// The first 16 bytes of `b` (panics if shorter), unaligned.
    ///
    /// # Safety
    /// The CPU must have SSE2 (every x86-64 does).
    #[inline]
    #[target_feature(enable = "sse2")]
    unsafe fn load16(b: &[u8]) -> __m128i {
        let b = &b[..16];
        // SAFETY: 16 readable bytes.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    /// One 128-bit lane moved on by `k`'s distance.
    ///
    /// # Safety
    /// The CPU must have PCLMULQDQ.
    #[inline]
    #[target_feature(enable = "pclmulqdq")]
    unsafe fn fold128(x: __m128i, k: __m128i) -> __m128i {
        // SAFETY: PCLMULQDQ from the caller.
        unsafe {
            _mm_xor_si128(
                _mm_clmulepi64_si128::<0x00>(x, k),
                _mm_clmulepi64_si128::<0x11>(x, k),
            )
        }
    }

    /// Both 128-bit lanes of `x` moved on by `k`'s distance (VPCLMULQDQ
    /// multiplies in each lane; written as assembly because the intrinsic
    /// needs Rust 1.89).
    ///
    /// # Safety
    /// The CPU must have AVX2 and VPCLMULQDQ.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn fold256(x: __m256i, k: __m256i) -> __m256i {
        let lo: __m256i;
        let hi: __m256i;
        // SAFETY: register-only instructions the caller guarantees exist.
        // `out`, not `lateout`: `lo` is written before the second
        // instruction reads `x` and `k`.
        unsafe {
            asm!(
                "vpclmulqdq {lo}, {x}, {k}, 0x00",
                "vpclmulqdq {hi}, {x}, {k}, 0x11",
                lo = out(ymm_reg) lo,
                hi = out(ymm_reg) hi,
                x = in(ymm_reg) x,
                k = in(ymm_reg) k,
                options(pure, nomem, nostack, preserves_flags),
            );
            _mm256_xor_si256(lo, hi)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of the CRC catalogue and RFC 3720's test vectors.
    #[test]
    fn known_values() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46dd_794e);
        assert_eq!(crc32c_append(crc32c(b"1234"), b"56789"), 0xe306_9283);
    }

    /// Every length around the folding path's boundaries (the first block,
    /// each 32- and 16-byte step, every tail length), at every start
    /// alignment, against the `crc32c` crate.
    #[test]
    fn every_length_near_the_boundaries() {
        let data: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..32 {
            for len in 0..600 {
                let d = &data[start..start + len];
                assert_eq!(crc32c(d), crc32c::crc32c(d), "start {start} len {len}");
                assert_eq!(
                    crc32c_append(0x1234_5678, d),
                    crc32c::crc32c_append(0x1234_5678, d),
                    "append, start {start} len {len}"
                );
            }
        }
    }

    /// Around the fused path's start (1 KiB): every length from below it
    /// to well past it, at a few alignments, and some long inputs.
    #[test]
    fn every_length_around_the_fused_path() {
        let data: Vec<u8> = (0..(3 << 20) + 64u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in [0, 1, 7, 31] {
            for len in 900..2400 {
                let d = &data[start..start + len];
                assert_eq!(crc32c(d), crc32c::crc32c(d), "start {start} len {len}");
            }
        }
        for len in [65_536, 262_144 + 17, 1 << 20, 3 << 20] {
            let d = &data[3..3 + len];
            assert_eq!(
                crc32c_append(7, d),
                crc32c::crc32c_append(7, d),
                "len {len}"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn shift_factors_are_powers_of_x() {
        for i in 6..20 {
            assert_eq!(x86::POW2_X33[i], x86::xn_mod_p((1 << i) - 33), "entry {i}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fold_constants_match_published_ones() {
        // `(x^n mod P)' << 1` for CRC32C, as in crc-fast's key table
        // (KEYS_1EDC6F41_REFLECTED): n = 160, 96; 288, 224; 1056, 992.
        let as_u64 = |(a, b): (i64, i64)| (a as u64, b as u64);
        assert_eq!(
            as_u64(x86::fold_constants(128)),
            (0xf20c_0dfe, 0x1_4cd0_0bd6)
        );
        assert_eq!(
            as_u64(x86::fold_constants(256)),
            (0x1_384a_a63a, 0xba4f_c28e)
        );
        assert_eq!(
            as_u64(x86::fold_constants(1024)),
            (0x6992_cea2, 0x0d3b_6092)
        );
        assert_eq!(x86::xn_mod_p(0), 1 << 31);
        assert_eq!(x86::xn_mod_p(32), 0x82f6_3b78);
    }
}

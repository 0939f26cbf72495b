//! The seeded faults of the emulated cable (spec §5.5, §6): random read
//! splits, a corruption probability per 4 KiB frame, and stale bytes of the
//! old link after a replug. [`CableFaults`] is the public setting; the
//! relay keeps one [`Splitter`], [`Corrupter`] and [`Tail`] per direction.
//!
//! # Determinism
//! Every random choice comes from a SplitMix64 stream seeded from
//! `(seed, direction, purpose)` and is tied to byte offsets of the
//! direction's delivered stream, never to timing: the same seed and the
//! same bytes give the same split points and the same flipped bits.
//!
//! # How a read is made to stop early
//! A Unix stream socket glues queued sends together on read, so sending
//! small pieces alone would not make the reader's reads small. But Linux
//! never reads past a queued chunk that carried a file descriptor
//! (`unix_stream_read_generic` stops after an `SCM_RIGHTS` skb). The relay
//! therefore sends the last bytes of every piece as one small message
//! carrying a descriptor (a private eventfd). The client's plain `read()`
//! has no control buffer, so the kernel drops the descriptor at once; the
//! reader only sees its read end at the piece boundary. A read smaller than
//! the rest of a marked chunk takes the mark with it, so the next read may
//! then reach to the following mark: boundaries move, bytes never do. (So
//! does a piece sent unmarked because the user has too many descriptors in
//! flight, `ETOOMANYREFS`, with a reader far behind.)

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::str::FromStr;

use super::ring::FRAME;
use super::MAX_RING_SIZE;

/// Largest piece a read split makes: 256 KiB. Reads of 2 MiB on real
/// hardware came back with as much as 90,240 bytes (spec §6); this leaves
/// room above that while staying below the endpoint socket buffers, so a
/// big read still ends at a piece boundary.
pub const MAX_READ_SPLIT: usize = 1 << SPLIT_BITS;
/// `log2(MAX_READ_SPLIT)`: piece sizes are `2^u` for `u` uniform in
/// `[0, SPLIT_BITS)`, so each power-of-two band is equally likely (1 byte
/// in 1/18 of the pieces, at most one 4 KiB frame in 12/18, above 64 KiB
/// in 2/18): mostly small, sometimes large, sometimes a single byte.
const SPLIT_BITS: u32 = 18;
/// Bytes sent in the marked message that ends a piece. It must fit one
/// socket buffer chunk (skb) so that the mark sits at the piece's end:
/// 2 KiB is below the linear part of an skb on every kernel.
pub(crate) const MARK_TAIL: usize = 2048;
/// Most stale bytes: the largest ring (4096 frames of 4 KiB). No link can
/// leave more over than its ring held.
pub const MAX_STALE_BYTES: u32 = MAX_RING_SIZE * FRAME as u32;

/// A bad fault setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// Not a number in `0..=1`.
    #[error("corruption probability {0:?} must be a number from 0 to 1 (e.g. 1e-4)")]
    Probability(String),
    /// More stale bytes than the ring can hold.
    #[error(
        "stale_bytes {got} exceeds the ring of {ring} bytes: no more than a ring's worth can be \
         left over from a link"
    )]
    StaleTooLarge {
        /// Asked for.
        got: u32,
        /// The ring's size in bytes.
        ring: u64,
    },
    /// A `key=value` word of the control line that is not understood.
    #[error(
        "bad fault setting {0:?}: expected seed=N, read-splits=on|off, corrupt-prob=P, \
         stale-bytes=N"
    )]
    Setting(String),
}

/// A probability in `0..=1`, kept as the bits of its `f64` so that it can
/// be compared exactly (`Eq`) and copied into commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Probability(u64);

impl Probability {
    /// Never.
    pub const ZERO: Probability = Probability(0);

    /// `p` if it is a number from 0 to 1.
    pub fn new(p: f64) -> Result<Probability, FaultError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(FaultError::Probability(p.to_string()));
        }
        // `+ 0.0` turns -0.0 into +0.0: one representation of zero.
        Ok(Probability((p + 0.0).to_bits()))
    }

    /// The value.
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Probability {
    /// Exponent form (`1e-4`): short on the control line for any value,
    /// and valid JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:e}", self.get())
    }
}

impl FromStr for Probability {
    type Err = FaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let p: f64 = s
            .trim()
            .parse()
            .map_err(|_| FaultError::Probability(s.chars().take(32).collect()))?;
        Probability::new(p)
    }
}

/// The seeded faults of a cable (all off by default). Set at start with
/// [`EmuCable::with_faults`](super::EmuCable::with_faults) /
/// [`serve_with_faults`](super::serve_with_faults), or later with
/// [`EmuCable::set_faults`](super::EmuCable::set_faults) /
/// [`ControlCommand::Faults`](super::ControlCommand::Faults), which replace
/// the whole setting and restart the random streams from the bytes then in
/// flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CableFaults {
    /// Seed of every random choice below (same seed, same bytes: same
    /// faults).
    pub seed: u64,
    /// Reads on both ends return random small amounts even when more is
    /// there: 1 byte to [`MAX_READ_SPLIT`], mostly below 4 KiB. Every
    /// byte still arrives, in order.
    pub read_splits: bool,
    /// Probability per 4 KiB frame (by offset in the direction's stream)
    /// that 1 to 3 of its bits flip.
    pub corrupt_prob: Probability,
    /// After a replug, the first bytes each reader gets on the new link are
    /// this many bytes of the old link's stream in that direction: the last
    /// bytes its writer had put into the cable on that link (in-flight ones
    /// included). Fewer if the old link carried fewer. At most the ring
    /// size.
    pub stale_bytes: u32,
}

impl CableFaults {
    /// Checks the setting against a ring of `ring_size` frames.
    pub fn validate(&self, ring_size: u32) -> Result<(), FaultError> {
        let ring = u64::from(ring_size) * FRAME as u64;
        if u64::from(self.stale_bytes) > ring {
            return Err(FaultError::StaleTooLarge {
                got: self.stale_bytes,
                ring,
            });
        }
        Ok(())
    }

    /// The control-line form: `seed=7 read-splits=on corrupt-prob=1e-4
    /// stale-bytes=0`.
    pub fn to_words(self) -> String {
        format!(
            "seed={} read-splits={} corrupt-prob={} stale-bytes={}",
            self.seed,
            if self.read_splits { "on" } else { "off" },
            self.corrupt_prob,
            self.stale_bytes
        )
    }

    /// Parses the words of [`to_words`](Self::to_words); missing keys are
    /// off (0).
    pub fn from_words(words: &str) -> Result<CableFaults, FaultError> {
        let mut f = CableFaults::default();
        for w in words.split_whitespace() {
            let bad = || FaultError::Setting(w.chars().take(64).collect());
            let (k, v) = w.split_once('=').ok_or_else(bad)?;
            match k {
                "seed" => f.seed = v.parse().map_err(|_| bad())?,
                "read-splits" => {
                    f.read_splits = match v {
                        "on" | "true" | "1" => true,
                        "off" | "false" | "0" => false,
                        _ => return Err(bad()),
                    }
                }
                "corrupt-prob" => f.corrupt_prob = v.parse()?,
                "stale-bytes" => f.stale_bytes = v.parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            }
        }
        Ok(f)
    }

    /// One-line JSON object.
    pub(crate) fn to_json(self) -> String {
        format!(
            "{{\"seed\":{},\"read_splits\":{},\"corrupt_prob\":{},\"stale_bytes\":{}}}",
            self.seed, self.read_splits, self.corrupt_prob, self.stale_bytes
        )
    }
}

/// What a random stream is for (mixed into its seed).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Splits = 1,
    Corrupt = 2,
}

/// SplitMix64: tiny, fast, and good enough for test faults (not secure).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// The stream for `purpose` in direction `dir` (0: A -> B, 1: B -> A).
    pub(crate) fn new(seed: u64, dir: usize, purpose: Purpose) -> Rng {
        let salt = (dir as u64) << 8 | purpose as u64;
        Rng(mix(seed ^ mix(salt.wrapping_add(0x9e37_79b9_7f4a_7c15))))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        // The top 53 bits make an exact double in [0, 1).
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Where one direction's pieces end (read splits).
#[derive(Debug)]
pub(crate) struct Splitter {
    rng: Option<Rng>,
    /// Bytes left in the current piece (0: draw a new one).
    left: usize,
    /// Pieces completed.
    pub(crate) pieces: u64,
}

impl Splitter {
    pub(crate) fn new(faults: &CableFaults, dir: usize) -> Splitter {
        Splitter {
            rng: faults
                .read_splits
                .then(|| Rng::new(faults.seed, dir, Purpose::Splits)),
            left: 0,
            pieces: 0,
        }
    }

    /// A piece size (see [`SPLIT_BITS`]).
    pub(crate) fn draw(rng: &mut Rng) -> usize {
        let size = (rng.unit() * f64::from(SPLIT_BITS)).exp2();
        (size as usize).clamp(1, MAX_READ_SPLIT)
    }

    /// Of `avail` contiguous bytes ready to leave, how many to send now and
    /// whether that send ends a piece (and must carry the mark, in one
    /// message of at most [`MARK_TAIL`] bytes).
    pub(crate) fn plan(&mut self, avail: usize) -> (usize, bool) {
        let Some(rng) = &mut self.rng else {
            return (avail, false);
        };
        if self.left == 0 {
            self.left = Self::draw(rng);
        }
        if self.left > MARK_TAIL {
            (avail.min(self.left - MARK_TAIL), false)
        } else if avail >= self.left {
            (self.left, true)
        } else {
            (avail, false)
        }
    }

    /// `n` bytes left; `ends` if they completed the piece.
    pub(crate) fn sent(&mut self, n: usize, ends: bool) {
        if self.rng.is_none() {
            return;
        }
        if ends {
            self.left = 0;
            self.pieces += 1;
        } else {
            self.left = self.left.saturating_sub(n);
        }
    }
}

/// Which bits of one direction's stream the corruption probability flips:
/// frames (4 KiB of stream offsets from `base`) are picked with geometric
/// gaps, each with 1 to 3 distinct bits, drawn ahead of time so that the
/// choice does not depend on how the bytes are cut when they leave.
#[derive(Debug)]
pub(crate) struct Corrupter {
    rng: Rng,
    /// `ln(1 - p)`; `None` when p = 0 (never).
    log_q: Option<f64>,
    base: u64,
    /// Index of the frame after the last one drawn.
    next_frame: u64,
    /// Absolute stream bit offsets still to flip, ascending.
    pending: VecDeque<u64>,
    /// The frame counted last (a frame with several flips counts once).
    last_counted: Option<u64>,
    /// Frames corrupted so far.
    pub(crate) injected: u64,
}

/// Bits in one frame.
const FRAME_BITS: u64 = FRAME as u64 * 8;

impl Corrupter {
    /// Frames count from stream offset `base` of direction `dir`.
    pub(crate) fn new(faults: &CableFaults, dir: usize, base: u64) -> Corrupter {
        let p = faults.corrupt_prob.get();
        Corrupter {
            rng: Rng::new(faults.seed, dir, Purpose::Corrupt),
            log_q: (p > 0.0).then(|| (-p).ln_1p()),
            base,
            next_frame: 0,
            pending: VecDeque::new(),
            last_counted: None,
            injected: 0,
        }
    }

    /// Draws the next picked frame's bits into `pending`.
    fn draw(&mut self) {
        let Some(log_q) = self.log_q else { return };
        // Geometric gap: frames skipped before the next picked one. For
        // p = 1, ln(1 - p) is -inf and the gap is always 0.
        let u = 1.0 - self.rng.unit(); // (0, 1]
        let gap = (u.ln() / log_q).floor();
        let gap = if gap.is_finite() && gap > 0.0 {
            gap as u64 // saturating float -> int
        } else {
            0
        };
        let frame = self.next_frame.saturating_add(gap);
        self.next_frame = frame.saturating_add(1);
        let count = 1 + self.rng.below(3) as usize;
        let mut bits: Vec<u64> = Vec::with_capacity(count);
        while bits.len() < count {
            let b = self.rng.below(FRAME_BITS);
            if !bits.contains(&b) {
                bits.push(b);
            }
        }
        bits.sort_unstable();
        let start = self
            .base
            .saturating_add(frame.saturating_mul(FRAME as u64))
            .saturating_mul(8);
        self.pending
            .extend(bits.into_iter().map(|b| start.saturating_add(b)));
    }

    /// Stream offset of the next byte with a bit to flip.
    pub(crate) fn next_byte(&mut self) -> Option<u64> {
        if self.pending.is_empty() {
            self.draw();
        }
        self.pending.front().map(|b| b / 8)
    }

    /// Flips the picked bits that fall in `buf`, which holds the stream
    /// bytes from offset `pos` on. Bits before `pos` were passed by (the
    /// setting changed under bytes already queued) and are dropped.
    pub(crate) fn apply(&mut self, buf: &mut [u8], pos: u64) {
        let end = pos.saturating_add(buf.len() as u64);
        while let Some(byte) = self.next_byte() {
            if byte >= end {
                return;
            }
            let Some(bit) = self.pending.pop_front() else {
                return;
            };
            if byte < pos {
                continue;
            }
            let i = usize::try_from(byte - pos).unwrap_or(usize::MAX);
            if let Some(b) = buf.get_mut(i) {
                *b ^= 1 << (bit % 8);
            }
            let frame = (byte - self.base) / FRAME as u64;
            if self.last_counted != Some(frame) {
                self.last_counted = Some(frame);
                self.injected += 1;
            }
        }
    }
}

/// The last `keep` bytes a direction's writer put into the cable (for
/// stale bytes after a replug): a circular buffer.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    buf: Vec<u8>,
    /// Where the next byte goes once `buf` is full.
    at: usize,
    keep: usize,
}

impl Tail {
    /// Keeps the last `keep` bytes from now on (what is there is trimmed).
    pub(crate) fn set_keep(&mut self, keep: usize) {
        if keep != self.keep {
            let mut last = self.to_vec();
            let cut = last.len().saturating_sub(keep);
            last.drain(..cut);
            self.buf = last;
            self.at = 0;
            self.keep = keep;
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.keep > 0
    }

    /// Forgets the kept bytes (a new link starts).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.at = 0;
    }

    /// Appends `data`.
    pub(crate) fn push(&mut self, mut data: &[u8]) {
        if self.keep == 0 {
            return;
        }
        if data.len() >= self.keep {
            data = &data[data.len() - self.keep..];
            self.buf.clear();
            self.buf.extend_from_slice(data);
            self.at = 0;
            return;
        }
        let room = self.keep - self.buf.len();
        let grow = room.min(data.len());
        self.buf.extend_from_slice(&data[..grow]);
        data = &data[grow..];
        while !data.is_empty() {
            let n = data.len().min(self.keep - self.at);
            self.buf[self.at..self.at + n].copy_from_slice(&data[..n]);
            self.at = (self.at + n) % self.keep;
            data = &data[n..];
        }
    }

    /// The kept bytes, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.buf.len());
        v.extend_from_slice(&self.buf[self.at..]);
        v.extend_from_slice(&self.buf[..self.at]);
        v
    }
}

/// `sendmsg(MSG_NOSIGNAL)` of `buf` with `mark` attached (`SCM_RIGHTS`):
/// the reader's read stops after these bytes (module docs).
pub(crate) fn send_marked(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    mark: BorrowedFd<'_>,
) -> io::Result<usize> {
    let fd_len = std::mem::size_of::<libc::c_int>() as u32;
    // Aligned room for one cmsghdr and one descriptor (CMSG_SPACE(4) is
    // 24 bytes on 64-bit Linux, 16 on 32-bit).
    let mut cbuf = [0u64; 8];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    if space > std::mem::size_of_val(&cbuf) {
        return Err(io::Error::other("control message buffer too small"));
    }
    let mut iov = [libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives
    // the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` zeroed, aligned bytes, enough
    // for one header and its data (checked above).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::other("no room for a control message"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        let raw = mark.as_raw_fd();
        std::ptr::copy_nonoverlapping(
            (&raw as *const libc::c_int).cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            fd_len as usize,
        );
    }
    // SAFETY: valid descriptor and message.
    let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize) // r >= 0 checked above
    }
}

#[cfg(test)]
mod tests;

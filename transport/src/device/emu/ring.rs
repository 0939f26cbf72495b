//! The relay's per-direction building blocks: the byte ring that models the
//! driver's TX/RX rings, the latency line, the rate limiter and the bit
//! flipper.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Size of one driver frame (spec §2: DATA frames of at most 4 KiB); the
/// ring holds `ring_size` of them, and corruption hits one such frame.
pub(crate) const FRAME: usize = 4096;
/// Most bytes moved by one read or write syscall of the relay: large
/// enough to amortise the syscall, small enough to keep both directions
/// and the control socket responsive.
pub(crate) const CHUNK: usize = 1 << 20;
/// Most latency marks kept per direction; past it, new data shares the
/// last mark (it may then leave up to one mark's spread early).
const MAX_MARKS: usize = 4096;

/// A byte ring of fixed capacity (`ring_size * 4096` bytes), filled from
/// and drained to sockets with `readv`/`sendmsg` so that a wrapped region
/// still costs one syscall. The fallback when `splice` is not available.
#[derive(Debug)]
pub(crate) struct BufRing {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize) // r >= 0 checked above
    }
}

impl BufRing {
    /// A ring of `cap` bytes (allocated zeroed: the kernel hands out the
    /// pages lazily, so an idle 16 MiB ring costs nothing).
    pub(crate) fn new(cap: usize) -> BufRing {
        BufRing {
            buf: vec![0u8; cap].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// The up to two regions `[start, start + n)` of the ring (wrapping),
    /// as (offset, length) pairs.
    fn regions(&self, start: usize, n: usize) -> [(usize, usize); 2] {
        let cap = self.buf.len();
        let start = start % cap.max(1);
        let first = n.min(cap - start);
        [(start, first), (0, n - first)]
    }

    /// Reads at most `max` bytes (bounded by the free room) from `fd`.
    /// `Ok(0)` is EOF.
    pub(crate) fn fill_from(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let n = max.min(self.free());
        if n == 0 {
            return Ok(0);
        }
        let regs = self.regions(self.head + self.len, n);
        let base = self.buf.as_mut_ptr();
        let iov = regs.map(|(off, len)| libc::iovec {
            // SAFETY: off + len <= buf.len() by construction of `regions`.
            iov_base: unsafe { base.add(off) }.cast(),
            iov_len: len,
        });
        let cnt = if regs[1].1 == 0 { 1 } else { 2 };
        // SAFETY: the iovecs point into our buffer, which is not otherwise
        // borrowed during the call.
        let got = cvt(unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), cnt) })?;
        self.len += got;
        Ok(got)
    }

    /// Sends at most `max` bytes from the front of the ring to `fd`
    /// (MSG_NOSIGNAL: a closed client gives EPIPE, not a signal) and drops
    /// them from the ring.
    pub(crate) fn drain_to(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let n = max.min(self.len);
        if n == 0 {
            return Ok(0);
        }
        let regs = self.regions(self.head, n);
        let base = self.buf.as_ptr();
        let mut iov = regs.map(|(off, len)| libc::iovec {
            // SAFETY: off + len <= buf.len() by construction of `regions`.
            iov_base: unsafe { base.add(off) }.cast_mut().cast(),
            iov_len: len,
        });
        let sent = send_iov(fd, &mut iov[..if regs[1].1 == 0 { 1 } else { 2 }])?;
        self.consume(sent);
        Ok(sent)
    }

    /// Appends as much of `data` as there is room for; returns the count.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        let mut done = 0;
        for (off, len) in self.regions(self.head + self.len, n) {
            self.buf[off..off + len].copy_from_slice(&data[done..done + len]);
            done += len;
        }
        self.len += n;
        n
    }

    /// The last `n` queued bytes (at most all of them), as up to two
    /// slices in stream order.
    pub(crate) fn last(&self, n: usize) -> [&[u8]; 2] {
        let n = n.min(self.len);
        self.regions(self.head + self.len - n, n)
            .map(|(off, len)| &self.buf[off..off + len])
    }

    /// Moves up to `n` bytes from the front of the ring to `out`.
    pub(crate) fn pop_into(&mut self, out: &mut Vec<u8>, n: usize) -> usize {
        let n = n.min(self.len);
        for (off, len) in self.regions(self.head, n) {
            out.extend_from_slice(&self.buf[off..off + len]);
        }
        self.consume(n);
        n
    }

    fn consume(&mut self, n: usize) {
        self.len -= n;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + n) % self.buf.len()
        };
    }
}

/// A ring kept in a pipe: data moves socket -> pipe -> socket with
/// `splice`, page references instead of copies, which is what makes the
/// relay fast (two copies per byte fewer than [`BufRing`]). The byte bound
/// is kept by our own count; the pipe is sized to at least `cap` bytes.
#[derive(Debug)]
pub(crate) struct PipeRing {
    rd: OwnedFd,
    wr: OwnedFd,
    cap: usize,
    len: usize,
    /// The pipe ran out of slots before bytes (many small writes): no room
    /// until the next drain.
    slots_full: bool,
}

/// `splice` flags for both legs: move pages, never block.
const SPLICE_FLAGS: libc::c_uint = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;

impl PipeRing {
    /// A pipe of at least `cap` bytes. Fails if the pipe cannot be made
    /// that large (`EPERM` above `/proc/sys/fs/pipe-max-size` without
    /// `CAP_SYS_RESOURCE`).
    pub(crate) fn new(cap: usize) -> io::Result<PipeRing> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 into a 2-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors we own.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(cap)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ring too large"))?;
        // SAFETY: fcntl on our pipe.
        if unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, want) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PipeRing {
            rd,
            wr,
            cap,
            len: 0,
            slots_full: false,
        })
    }

    fn fill_from(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let n = max.min(self.cap - self.len);
        if n == 0 || self.slots_full {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // SAFETY: splice between two descriptors we hold, no offsets.
        let r = unsafe {
            libc::splice(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                self.wr.as_raw_fd(),
                std::ptr::null_mut(),
                n,
                SPLICE_FLAGS,
            )
        };
        match cvt(r) {
            Ok(got) => {
                self.len += got;
                Ok(got)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Empty socket, or a pipe without a free slot?
                if !self.pipe_writable() {
                    self.slots_full = true;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn pipe_writable(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.wr.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        r > 0 && p.revents & libc::POLLOUT != 0
    }

    fn drain_to(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let n = max.min(self.len);
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: splice between two descriptors we hold, no offsets. The
        // relay thread blocks SIGPIPE: splice has no MSG_NOSIGNAL.
        let r = unsafe {
            libc::splice(
                self.rd.as_raw_fd(),
                std::ptr::null_mut(),
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                n,
                SPLICE_FLAGS,
            )
        };
        let sent = cvt(r)?;
        self.len -= sent;
        self.slots_full = false;
        Ok(sent)
    }

    fn pop_into(&mut self, out: &mut Vec<u8>, n: usize) -> usize {
        let want = n.min(self.len);
        let start = out.len();
        out.resize(start + want, 0);
        let mut got = 0;
        while got < want {
            let dst = &mut out[start + got..start + want];
            // SAFETY: reading into our buffer of `dst.len()` bytes.
            let r = unsafe { libc::read(self.rd.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
            match cvt(r) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        out.truncate(start + got);
        self.len -= got;
        self.slots_full = false;
        got
    }

    fn clear(&mut self) {
        let mut sink = [0u8; 64 * 1024];
        while self.len > 0 {
            // SAFETY: reading into a stack buffer.
            let r =
                unsafe { libc::read(self.rd.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) };
            match cvt(r) {
                Ok(k) if k > 0 => self.len = self.len.saturating_sub(k),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        self.len = 0;
        self.slots_full = false;
    }
}

/// Whether `splice` works socket -> pipe -> socket here (it does on any
/// Linux since 6.5, which can splice into Unix sockets; older kernels and
/// some sandboxes cannot). Checked once per relay with one byte.
pub(crate) fn splice_works() -> bool {
    fn probe() -> io::Result<bool> {
        let (a, b) = UnixStream::pair()?;
        let (c, d) = UnixStream::pair()?;
        for s in [&a, &b, &c, &d] {
            s.set_nonblocking(true)?;
        }
        let mut ring = PipeRing::new(FRAME)?;
        io::Write::write_all(&mut &a, b"x")?;
        if ring.fill_from(b.as_fd(), 1)? != 1 || ring.drain_to(c.as_fd(), 1)? != 1 {
            return Ok(false);
        }
        let mut got = [0u8; 1];
        Ok(io::Read::read(&mut &d, &mut got)? == 1 && got[0] == b'x')
    }
    probe().unwrap_or(false)
}

/// The ring of one direction: a [`PipeRing`] where `splice` works, else a
/// [`BufRing`].
#[derive(Debug)]
pub(crate) enum Ring {
    Pipe(PipeRing),
    Buf(BufRing),
}

impl Ring {
    /// A ring of `cap` bytes; a pipe if `splice` is wanted and the pipe can
    /// be that large.
    pub(crate) fn new(cap: usize, splice: bool) -> Ring {
        if splice {
            if let Ok(p) = PipeRing::new(cap) {
                return Ring::Pipe(p);
            }
        }
        Ring::Buf(BufRing::new(cap))
    }

    pub(crate) fn is_pipe(&self) -> bool {
        matches!(self, Ring::Pipe(_))
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Ring::Pipe(p) => p.len,
            Ring::Buf(b) => b.len(),
        }
    }

    /// Free bytes (by count; a pipe may still run out of slots first).
    pub(crate) fn free(&self) -> usize {
        match self {
            Ring::Pipe(p) => p.cap - p.len,
            Ring::Buf(b) => b.free(),
        }
    }

    /// Whether the source may be read now.
    pub(crate) fn has_room(&self) -> bool {
        match self {
            Ring::Pipe(p) => p.len < p.cap && !p.slots_full,
            Ring::Buf(b) => b.free() > 0,
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Ring::Pipe(p) => p.clear(),
            Ring::Buf(b) => b.clear(),
        }
    }

    /// Turns a pipe ring into a copying one, keeping what it holds (the
    /// relay must see the bytes, e.g. to keep a stale tail). No-op for a
    /// copying ring.
    pub(crate) fn make_copying(&mut self) {
        if let Ring::Pipe(p) = self {
            let mut held = Vec::with_capacity(p.len);
            let len = p.len;
            p.pop_into(&mut held, len);
            let mut b = BufRing::new(p.cap);
            b.push(&held);
            *self = Ring::Buf(b);
        }
    }

    /// The last `n` queued bytes if the ring can show them (a copying
    /// ring), in stream order.
    pub(crate) fn last(&self, n: usize) -> Option<[&[u8]; 2]> {
        match self {
            Ring::Pipe(_) => None,
            Ring::Buf(b) => Some(b.last(n)),
        }
    }

    /// Reads up to `max` bytes from `fd`. `Ok(0)` is EOF; `WouldBlock`
    /// when the socket is empty or the ring has no room.
    pub(crate) fn fill_from(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        match self {
            Ring::Pipe(p) => p.fill_from(fd, max),
            Ring::Buf(b) => {
                if b.free() == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                b.fill_from(fd, max)
            }
        }
    }

    /// Sends up to `max` bytes from the front to `fd`.
    pub(crate) fn drain_to(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        match self {
            Ring::Pipe(p) => p.drain_to(fd, max),
            Ring::Buf(b) => b.drain_to(fd, max),
        }
    }

    /// Moves up to `n` bytes from the front into `out`.
    pub(crate) fn pop_into(&mut self, out: &mut Vec<u8>, n: usize) -> usize {
        match self {
            Ring::Pipe(p) => p.pop_into(out, n),
            Ring::Buf(b) => b.pop_into(out, n),
        }
    }
}

/// `sendmsg(MSG_NOSIGNAL)` of `iov`.
pub(crate) fn send_iov(fd: BorrowedFd<'_>, iov: &mut [libc::iovec]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid; we set the iovec array, which
    // outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: valid descriptor and message.
    cvt(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
}

/// `send(MSG_NOSIGNAL)` of a slice.
pub(crate) fn send_slice(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    }];
    send_iov(fd, &mut iov)
}

/// The one-way delay line: remembers when each run of bytes entered the
/// ring and lets it leave `latency` later.
#[derive(Debug)]
pub(crate) struct Delay {
    latency: Duration,
    /// Spread within which new data joins the last mark.
    granularity: Duration,
    /// (stream offset just past the run, time it may leave).
    marks: VecDeque<(u64, Instant)>,
    in_total: u64,
    out_total: u64,
}

impl Delay {
    pub(crate) fn new(latency: Duration) -> Delay {
        Delay {
            latency,
            granularity: (latency / 64).max(Duration::from_micros(1)),
            marks: VecDeque::new(),
            in_total: 0,
            out_total: 0,
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        !self.latency.is_zero()
    }

    /// `n` bytes entered the ring at `now`.
    pub(crate) fn entered(&mut self, n: usize, now: Instant) {
        self.in_total += n as u64;
        if !self.is_active() {
            return;
        }
        let ready = now + self.latency;
        let full = self.marks.len() >= MAX_MARKS;
        match self.marks.back_mut() {
            Some(last) if full || ready.saturating_duration_since(last.1) < self.granularity => {
                last.0 = self.in_total;
            }
            _ => self.marks.push_back((self.in_total, ready)),
        }
    }

    /// How many bytes at the front of a ring holding `queued` may leave now.
    pub(crate) fn allowed(&self, queued: usize, now: Instant) -> usize {
        if !self.is_active() {
            return queued;
        }
        let mut end = self.out_total;
        for &(off, ready) in &self.marks {
            if ready > now {
                break;
            }
            end = off;
        }
        usize::try_from(end - self.out_total)
            .unwrap_or(usize::MAX)
            .min(queued)
    }

    /// When the next byte still held back may leave.
    pub(crate) fn next_ready(&self, now: Instant) -> Option<Instant> {
        self.marks
            .iter()
            .find(|(off, ready)| *off > self.out_total && *ready > now)
            .map(|&(_, ready)| ready)
    }

    /// `n` bytes left the ring.
    pub(crate) fn left(&mut self, n: usize) {
        self.out_total += n as u64;
        while self.marks.front().is_some_and(|m| m.0 <= self.out_total) {
            self.marks.pop_front();
        }
    }

    /// Everything in flight was dropped.
    pub(crate) fn clear(&mut self) {
        self.marks.clear();
        self.out_total = self.in_total;
    }
}

/// A token bucket capping the bytes per second that leave the relay in
/// one direction. The burst is 10 ms worth of the rate, at least one frame
/// and at most one chunk.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: Option<u64>,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: Option<u64>, now: Instant) -> Bucket {
        let burst = rate.map_or(0.0, |r| {
            (r as f64 / 100.0).clamp(FRAME as f64, CHUNK as f64)
        });
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let dt = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate as f64).min(self.burst);
        }
        self.last = now;
    }

    /// How many bytes may leave now.
    pub(crate) fn available(&mut self, now: Instant) -> usize {
        if self.rate.is_none() {
            return usize::MAX;
        }
        self.refill(now);
        self.tokens.max(0.0) as usize
    }

    /// `n` bytes left.
    pub(crate) fn take(&mut self, n: usize) {
        if self.rate.is_some() {
            self.tokens -= n as f64;
        }
    }

    /// When at least `want` bytes (capped at the burst) will be available;
    /// `None` when unlimited or available already.
    pub(crate) fn ready_at(&self, want: usize, now: Instant) -> Option<Instant> {
        let rate = self.rate? as f64;
        let want = (want as f64).min(self.burst);
        let missing = want - self.tokens;
        if missing <= 0.0 {
            return None;
        }
        Some(now + Duration::from_secs_f64(missing / rate.max(1.0)))
    }
}

/// Flips 1 to 3 distinct, randomly chosen bits of `frame` (fewer if it is
/// shorter than 3 bits... which a non-empty frame never is). Returns how
/// many bits were flipped.
pub(crate) fn flip_bits(frame: &mut [u8]) -> usize {
    let bits = frame.len() * 8;
    if bits == 0 {
        return 0;
    }
    let mut rnd = [0u8; 32];
    if getrandom::fill(&mut rnd).is_err() {
        // No entropy source: a fixed pattern still corrupts the frame.
        rnd = [0x5a; 32];
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&rnd[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    let count = 1 + (word(0) % 3) as usize;
    let mut picked: Vec<usize> = Vec::with_capacity(3);
    let mut seed = word(1) ^ word(2).rotate_left(17) ^ word(3).rotate_left(41);
    while picked.len() < count.min(bits) {
        // xorshift64*: cheap, and only needs to be distinct, not secure.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let bit = (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % bits as u64) as usize;
        if !picked.contains(&bit) {
            picked.push(bit);
        }
        if seed == 0 {
            seed = 0x9e37_79b9_7f4a_7c15;
        }
    }
    for &bit in &picked {
        frame[bit / 8] ^= 1 << (bit % 8);
    }
    picked.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wraps_and_keeps_order() -> io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        b.set_nonblocking(true)?;
        let mut ring = BufRing::new(10);
        let mut out = Vec::new();
        let mut next = 0u8;
        let mut expect = 0u8;
        for round in 0..50 {
            let n = 1 + round % 7;
            let data: Vec<u8> = (0..n)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            io::Write::write_all(&mut &a, &data)?;
            let mut got = 0;
            while got < n {
                let r = ring.fill_from(b.as_fd(), usize::MAX)?;
                got += r;
                if r == 0 || ring.free() == 0 {
                    out.clear();
                    ring.pop_into(&mut out, 3);
                    for x in &out {
                        expect = expect.wrapping_add(1);
                        assert_eq!(*x, expect);
                    }
                }
            }
        }
        out.clear();
        ring.pop_into(&mut out, usize::MAX);
        for x in &out {
            expect = expect.wrapping_add(1);
            assert_eq!(*x, expect);
        }
        assert_eq!(expect, next);
        Ok(())
    }

    #[test]
    fn push_last_and_conversion_keep_bytes() {
        let mut b = BufRing::new(8);
        assert_eq!(b.push(b"abcdef"), 6);
        let mut out = Vec::new();
        b.pop_into(&mut out, 4);
        assert_eq!(b.push(b"ghijklmno"), 6); // wraps; "o" has no room
        assert_eq!(b.last(3).concat(), b"jkl");
        assert_eq!(b.last(100).concat(), b"efghijkl");
        let mut ring = Ring::new(FRAME, splice_works());
        if let Ring::Pipe(p) = &mut ring {
            let (x, y) = UnixStream::pair().expect("pair");
            y.set_nonblocking(true).expect("nonblocking");
            io::Write::write_all(&mut &x, b"held bytes").expect("write");
            assert_eq!(p.fill_from(y.as_fd(), FRAME).expect("fill"), 10);
            assert!(ring.last(1).is_none());
        } else if let Ring::Buf(b) = &mut ring {
            b.push(b"held bytes");
        }
        ring.make_copying();
        assert!(!ring.is_pipe());
        assert_eq!(ring.len(), 10);
        assert_eq!(ring.last(5).map(|s| s.concat()), Some(b"bytes".to_vec()));
        out.clear();
        ring.pop_into(&mut out, 100);
        assert_eq!(out, b"held bytes");
    }

    #[test]
    fn delay_holds_back() {
        let t0 = Instant::now();
        let mut d = Delay::new(Duration::from_millis(10));
        d.entered(100, t0);
        d.entered(50, t0 + Duration::from_millis(5));
        assert_eq!(d.allowed(150, t0), 0);
        assert_eq!(d.next_ready(t0), Some(t0 + Duration::from_millis(10)));
        assert_eq!(d.allowed(150, t0 + Duration::from_millis(10)), 100);
        d.left(60);
        assert_eq!(d.allowed(90, t0 + Duration::from_millis(10)), 40);
        assert_eq!(d.allowed(90, t0 + Duration::from_millis(16)), 90);
        d.clear();
        assert_eq!(d.allowed(0, t0 + Duration::from_secs(1)), 0);
    }

    #[test]
    fn bucket_limits() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Some(1_000_000), t0);
        let first = b.available(t0);
        assert_eq!(first, 10_000);
        b.take(first);
        assert_eq!(b.available(t0), 0);
        assert!(b.ready_at(5000, t0).is_some());
        assert_eq!(b.available(t0 + Duration::from_millis(5)), 5000);
        let mut u = Bucket::new(None, t0);
        assert_eq!(u.available(t0), usize::MAX);
    }

    #[test]
    fn flips_one_to_three_bits() {
        for _ in 0..200 {
            let mut f = vec![0u8; FRAME];
            let n = flip_bits(&mut f);
            let ones: u32 = f.iter().map(|b| b.count_ones()).sum();
            assert!((1..=3).contains(&n));
            assert_eq!(ones as usize, n);
        }
        let mut one = [0u8; 1];
        assert!((1..=3).contains(&flip_bits(&mut one)));
    }
}

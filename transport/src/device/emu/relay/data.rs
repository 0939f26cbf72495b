//! The relay's data path (fill, drain with faults), its poll set and the
//! control-socket server.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::{
    end_of, Conn, CtlConn, Dir, Relay, Slot, Target, CTL_IDLE, MAX_CTL_CONNS, MAX_CTL_LINE,
};
use crate::device::emu::faults::{send_marked, CableFaults, Corrupter, Splitter};
use crate::device::emu::ring::{flip_bits, send_slice, CHUNK, FRAME};
use crate::device::emu::ControlCommand;
use crate::device::spec::CableEnd;

impl Dir {
    /// Applies a new fault setting to this direction (`i`: 0 for A -> B).
    pub(super) fn set_faults(&mut self, faults: &CableFaults, i: usize) {
        self.splitter = Splitter::new(faults, i);
        // Frames count from the first byte not yet past the corrupter.
        let injected = self.corrupter.injected;
        let base = self.forwarded + (self.detour.len() - self.detour_off) as u64;
        self.corrupter = Corrupter::new(faults, i, base);
        self.corrupter.injected = injected;
        let keep = faults.stale_bytes as usize;
        if keep > 0 && !self.tail.is_active() {
            // The tail must see the bytes: no more splicing.
            self.ring.make_copying();
            self.tail.set_keep(keep);
            if let Some(parts) = self.ring.last(keep) {
                for p in parts {
                    self.tail.push(p);
                }
            }
        }
        self.tail.set_keep(keep);
        if keep == 0 {
            self.stale.clear();
        }
    }

    /// Puts the stale bytes captured at the last unplug at the front of
    /// the stream (the destination just attached on a new link).
    pub(super) fn load_stale(&mut self) {
        if self.stale.is_empty() {
            return;
        }
        let mut front = std::mem::take(&mut self.stale);
        self.corrupter.apply(&mut front, self.forwarded);
        self.stale_sent += front.len() as u64;
        front.extend_from_slice(&self.detour[self.detour_off..]);
        self.detour = front;
        self.detour_off = 0;
    }

    /// Moves up to `n` bytes from the front of the ring into the (empty)
    /// detour, flipping the bits the corrupter picked among them. Returns
    /// the count.
    fn pop_to_detour(&mut self, n: usize) -> usize {
        debug_assert_eq!(self.detour_off, self.detour.len());
        self.detour.clear();
        self.detour_off = 0;
        let got = self.ring.pop_into(&mut self.detour, n);
        self.delay.left(got);
        self.corrupter.apply(&mut self.detour, self.forwarded);
        got
    }

    /// Sends (part of) the detour: `Ok(true)` if bytes left, `Ok(false)` if
    /// nothing may or can leave now.
    fn send_detour(
        &mut self,
        sock: BorrowedFd<'_>,
        marker: BorrowedFd<'_>,
        now: Instant,
    ) -> io::Result<bool> {
        let max = self
            .bucket
            .available(now)
            .min(self.detour.len() - self.detour_off);
        if max == 0 {
            return Ok(false);
        }
        let (n, ends) = self.splitter.plan(max);
        let part = &self.detour[self.detour_off..self.detour_off + n];
        let sent = if ends {
            match send_marked(sock, part, marker) {
                // Too many descriptors in flight for this user (the
                // reader is far behind): the piece boundary is lost, the
                // bytes are not.
                Err(e) if e.raw_os_error() == Some(libc::ETOOMANYREFS) => send_slice(sock, part),
                r => r,
            }
        } else {
            send_slice(sock, part)
        };
        match sent {
            Ok(k) => {
                self.detour_off += k;
                self.bucket.take(k);
                self.forwarded += k as u64;
                self.splitter.sent(k, ends);
                if self.detour_off == self.detour.len() {
                    self.detour.clear();
                    self.detour_off = 0;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads from a source into the ring (`keep`) or into `scratch` to be
    /// dropped (destination not open). `Ok(0)` is EOF; `WouldBlock` also
    /// when the ring is full.
    pub(super) fn fill(
        &mut self,
        scratch: &mut Vec<u8>,
        fd: BorrowedFd<'_>,
        keep: bool,
        now: Instant,
    ) -> io::Result<usize> {
        if keep {
            // A corrupted frame on its way out still counts as in flight.
            let room = self
                .ring
                .free()
                .saturating_sub(self.detour.len() - self.detour_off);
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.ring.fill_from(fd, room.min(CHUNK))?;
            self.delay.entered(n, now);
            if self.tail.is_active() {
                if let Some(parts) = self.ring.last(n) {
                    for p in parts {
                        self.tail.push(p);
                    }
                }
            }
            Ok(n)
        } else {
            if scratch.len() < CHUNK {
                scratch.resize(CHUNK, 0);
            }
            // SAFETY: reading into our scratch buffer of `scratch.len()` bytes.
            let r =
                unsafe { libc::read(fd.as_raw_fd(), scratch.as_mut_ptr().cast(), scratch.len()) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = r as usize; // r >= 0 checked above
            self.dropped += n as u64;
            Ok(n)
        }
    }

    /// Whether the source may be read into the ring now.
    pub(super) fn has_room(&self) -> bool {
        self.ring.has_room() && self.ring.free() > self.detour.len() - self.detour_off
    }

    /// Whether bytes could leave right now (ignoring the socket).
    fn can_send(&mut self, now: Instant) -> bool {
        let queued = if self.detour_off < self.detour.len() {
            1
        } else {
            self.delay.allowed(self.ring.len(), now)
        };
        queued > 0 && self.bucket.available(now) > 0
    }

    /// When held-back bytes (latency or rate) may leave.
    fn wakeup(&mut self, now: Instant) -> Option<Instant> {
        if self.pending_out() == 0 {
            return None;
        }
        let ready = if self.detour_off < self.detour.len() {
            self.detour.len() - self.detour_off
        } else {
            self.delay.allowed(self.ring.len(), now)
        };
        if ready == 0 {
            return self.delay.next_ready(now);
        }
        if self.bucket.available(now) == 0 {
            return self.bucket.ready_at(ready.min(FRAME), now);
        }
        None
    }
}

impl Relay {
    /// Sends what may leave of direction `s` to its destination. True on
    /// progress.
    pub(super) fn drain(&mut self, s: usize, now: Instant) -> bool {
        let d = 1 - s;
        let Relay {
            ends,
            dirs,
            corrupt_armed,
            corrupted,
            marker,
            ..
        } = self;
        let Slot::Open(conn) = &mut ends[d] else {
            return false;
        };
        if !conn.writing {
            return false;
        }
        let dir = &mut dirs[s];
        let mut progress = false;
        let failed = loop {
            // The detour goes out first.
            if dir.detour_off < dir.detour.len() {
                match dir.send_detour(conn.sock.as_fd(), marker.as_fd(), now) {
                    Ok(true) => {
                        progress = true;
                        continue;
                    }
                    Ok(false) => break false,
                    Err(_) => break true,
                }
            }
            let mut allowed = dir
                .delay
                .allowed(dir.ring.len(), now)
                .min(dir.bucket.available(now))
                .min(CHUNK);
            if allowed == 0 {
                break false;
            }
            if *corrupt_armed {
                dir.pop_to_detour(allowed.min(FRAME));
                flip_bits(&mut dir.detour);
                *corrupt_armed = false;
                *corrupted += 1;
                dir.corrupted_once += 1;
                progress = true;
                continue;
            }
            // A byte with bits to flip leaves through the detour; the ring
            // sends up to it.
            if let Some(flip) = dir.corrupter.next_byte() {
                let ahead = flip.saturating_sub(dir.forwarded);
                if ahead == 0 {
                    dir.pop_to_detour(allowed.min(FRAME));
                    progress = true;
                    continue;
                }
                allowed = allowed.min(usize::try_from(ahead).unwrap_or(usize::MAX));
            }
            // The end of a read-split piece leaves marked, from the detour.
            let (allowed, ends_piece) = dir.splitter.plan(allowed);
            if ends_piece {
                dir.pop_to_detour(allowed);
                progress = true;
                continue;
            }
            match dir.ring.drain_to(conn.sock.as_fd(), allowed) {
                Ok(n) => {
                    dir.delay.left(n);
                    dir.bucket.take(n);
                    dir.forwarded += n as u64;
                    dir.splitter.sent(n, false);
                    progress = true;
                    // One write per pass: the other direction gets a turn.
                    break false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        if failed {
            self.end_closed(end_of(d), false);
            return true;
        }
        if conn.closing && dir.lingering.is_none() && dir.pending_out() == 0 {
            // Everything the closed peer sent is delivered: EOF.
            let _ = conn.sock.shutdown(std::net::Shutdown::Write);
            conn.writing = false;
            progress = true;
        }
        progress
    }

    /// How long the loop may sleep: until held-back data may leave, or a
    /// control client should be checked for idleness.
    pub(super) fn next_wakeup(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let mut at: Option<Instant> = None;
        for s in 0..2 {
            let dst_open = matches!(&self.ends[1 - s], Slot::Open(c) if c.writing);
            if dst_open {
                if let Some(t) = self.dirs[s].wakeup(now) {
                    at = Some(at.map_or(t, |a| a.min(t)));
                }
            }
        }
        let mut wait = at.map(|t| t.saturating_duration_since(now));
        if !self.ctl.is_empty() {
            let idle = Duration::from_secs(1);
            wait = Some(wait.map_or(idle, |w| w.min(idle)));
        }
        wait
    }

    /// Fills `fds`/`targets` with what the loop waits for.
    pub(super) fn build_poll_set(
        &mut self,
        fds: &mut Vec<libc::pollfd>,
        targets: &mut Vec<Target>,
    ) {
        fds.clear();
        targets.clear();
        let mut push = |fd: i32, events: i16, t: Target| {
            fds.push(libc::pollfd {
                fd: if events == 0 { -1 } else { fd },
                events,
                revents: 0,
            });
            targets.push(t);
        };
        push(self.wake.as_raw_fd(), libc::POLLIN, Target::Wake);
        if let Some(fd) = self.stop_fd {
            push(fd.as_raw_fd(), libc::POLLIN, Target::Stop);
        }
        if let Some(l) = &self.listeners {
            push(l.a.as_raw_fd(), libc::POLLIN, Target::Listen(CableEnd::A));
            push(l.b.as_raw_fd(), libc::POLLIN, Target::Listen(CableEnd::B));
            push(l.ctl.as_raw_fd(), libc::POLLIN, Target::CtlListen);
        }
        for c in &self.ctl {
            push(c.sock.as_raw_fd(), libc::POLLIN, Target::Ctl);
        }
        let now = Instant::now();
        for i in 0..2 {
            let peer_takes = matches!(&self.ends[1 - i], Slot::Open(c) if c.writing && !c.closing);
            let peer_open = matches!(&self.ends[1 - i], Slot::Open(c) if c.writing);
            match &self.ends[i] {
                Slot::Empty => {}
                Slot::Pending(sock) => {
                    push(sock.as_raw_fd(), libc::POLLIN, Target::Pending(end_of(i)))
                }
                Slot::Open(Conn {
                    sock,
                    reading,
                    writing,
                    ..
                }) => {
                    let mut ev = 0;
                    // As a source: while there is room (or data is dropped).
                    if *reading && (self.dirs[i].has_room() || !peer_takes) {
                        ev |= libc::POLLIN;
                    }
                    // As a destination: while something may leave now.
                    if *writing && self.dirs[1 - i].can_send(now) {
                        ev |= libc::POLLOUT;
                    }
                    push(sock.as_raw_fd(), ev, Target::Data);
                }
            }
            if let Some(l) = &self.dirs[i].lingering {
                let ev = if self.dirs[i].has_room() || !peer_open {
                    libc::POLLIN
                } else {
                    0
                };
                push(l.as_raw_fd(), ev, Target::Data);
            }
        }
    }

    // ---- control socket ---------------------------------------------------

    pub(super) fn accept_ctl(&mut self) {
        loop {
            let Some(l) = &self.listeners else { return };
            match l.ctl.accept() {
                Ok((sock, _)) => {
                    if self.ctl.len() < MAX_CTL_CONNS && sock.set_nonblocking(true).is_ok() {
                        self.ctl.push(CtlConn {
                            sock,
                            buf: Vec::new(),
                            since: Instant::now(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// Reads requests from control clients; answers complete lines.
    pub(super) fn serve_ctl(&mut self) {
        let mut i = 0;
        while i < self.ctl.len() {
            let mut chunk = [0u8; MAX_CTL_LINE];
            let c = &mut self.ctl[i];
            let eof = match (&c.sock).read(&mut chunk) {
                Ok(0) => true,
                Ok(n) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => true,
            };
            let line_end = c.buf.iter().position(|&b| b == b'\n');
            let reply = match line_end {
                Some(p) => Some(self.answer(i, p)),
                None if c.buf.len() > MAX_CTL_LINE => {
                    Some("err request line too long\n".to_owned())
                }
                None if eof && !c.buf.is_empty() => {
                    let p = c.buf.len();
                    Some(self.answer(i, p))
                }
                None if eof || c.since.elapsed() > CTL_IDLE => {
                    self.ctl.swap_remove(i);
                    continue;
                }
                None => None,
            };
            match reply {
                Some(r) => {
                    let c = self.ctl.swap_remove(i);
                    // Tiny reply into an empty socket buffer: one send.
                    let _ = send_slice(c.sock.as_fd(), r.as_bytes());
                }
                None => i += 1,
            }
        }
    }

    /// Executes the request in `ctl[i].buf[..len]` and formats the reply.
    fn answer(&mut self, i: usize, len: usize) -> String {
        let line = String::from_utf8_lossy(&self.ctl[i].buf[..len]).into_owned();
        match line.trim().parse::<ControlCommand>() {
            Ok(cmd) => match self.check(&cmd) {
                Ok(()) => format!("ok {}\n", self.execute(cmd).to_json()),
                Err(e) => format!("err {e}\n"),
            },
            Err(e) => format!("err {e}\n"),
        }
    }
}

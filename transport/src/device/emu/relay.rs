//! The relay: one thread joining the two ends of an emulated cable.
//!
//! It owns the endpoint sockets (relay side), one [`Ring`] per direction,
//! the fault state, and optionally the listening sockets of a cross-process
//! cable. Everything happens in one `ppoll` loop, so commands (unplug,
//! replug, corrupt, status) are atomic with respect to the data path.
//!
//! Per direction (source end -> destination end):
//! * the source is read only while the ring has room: once `ring_size *
//!   4096` bytes are in flight the source's socket fills and its writer gets
//!   short writes, then `EAGAIN`;
//! * data is read and dropped while the destination is not open (the
//!   driver does not guarantee delivery before the peer opened);
//! * when the source's client closes, the ring is still delivered, then the
//!   destination's write direction is shut down (its reader sees EOF) and
//!   its read direction too (its writes fail: EPIPE, which the client maps
//!   to ENXIO like the driver does after the peer's CLOSE);
//! * a client that closes after its own peer had already gone (it was
//!   reading its EOF) never talked to the current peer, so its close does
//!   not reach that peer;
//! * an unplug bumps the link epoch, drops everything in flight and closes
//!   both connections; opens wait until the replug;
//! * with the seeded faults of [`CableFaults`] (module `faults`): bytes of
//!   a corrupted frame, the end of a read-split piece and stale bytes after
//!   a replug leave through the *detour*, a small buffer sent before the
//!   ring; everything else leaves the ring directly.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::endpoint::{configure_socket, encode_link, LinkWord, TOKEN_ATTACHED, TOKEN_BUSY};
use super::faults::{CableFaults, Corrupter, Splitter, Tail};
use super::ring::{send_slice, splice_works, Bucket, Delay, Ring, CHUNK, FRAME};
use super::{CableOptions, CableStats, ControlCommand, DirStats, EndState};
use crate::device::spec::CableEnd;

/// Set this environment variable to make relays copy through a buffer
/// instead of using `splice` (for comparisons).
pub(crate) const NO_SPLICE_ENV: &str = "TBBRIDGE_CABLE_NO_SPLICE";
/// Passes over both directions before the loop polls again even though data
/// is still moving (so that commands and new connections are not starved).
const MAX_PASSES: usize = 8;
/// Most control connections served at once; more are closed at once.
const MAX_CTL_CONNS: usize = 64;
/// Longest control request line.
pub(crate) const MAX_CTL_LINE: usize = 256;
/// A control client that sends no complete line within this is dropped.
const CTL_IDLE: Duration = Duration::from_secs(5);

/// What other threads ask of the relay.
#[derive(Debug)]
pub(crate) enum Request {
    /// A new client socket for `end` (in-process cable).
    Connect(CableEnd, UnixStream),
    /// Run a command and send back the status after it.
    Command(ControlCommand, mpsc::SyncSender<CableStats>),
    /// Stop the relay.
    Stop,
}

/// A cloneable way to talk to a running relay.
#[derive(Debug, Clone)]
pub(crate) struct RelayHandle {
    tx: mpsc::Sender<Request>,
    wake: Arc<OwnedFd>,
}

fn relay_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the emulated cable's relay thread has stopped",
    )
}

impl RelayHandle {
    /// Queues a request and wakes the relay.
    pub(crate) fn send(&self, req: Request) -> io::Result<()> {
        self.tx.send(req).map_err(|_| relay_gone())?;
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes to an eventfd we own. A full counter
        // (EAGAIN) still leaves it readable, which is all we need.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        Ok(())
    }

    /// Runs `cmd` on the relay and returns the status after it.
    pub(crate) fn command(&self, cmd: ControlCommand) -> io::Result<CableStats> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Request::Command(cmd, tx))?;
        rx.recv().map_err(|_| relay_gone())
    }
}

/// The listening sockets of a cross-process cable.
#[derive(Debug)]
pub(crate) struct Listeners {
    pub(crate) a: UnixListener,
    pub(crate) b: UnixListener,
    pub(crate) ctl: UnixListener,
}

/// A client connection that completed its open.
#[derive(Debug)]
struct Conn {
    sock: UnixStream,
    /// The relay still reads the client's data.
    reading: bool,
    /// The relay still writes to the client.
    writing: bool,
    /// The peer closed: deliver the ring, then shut down (EOF).
    closing: bool,
}

impl Conn {
    fn alive(&self) -> bool {
        self.reading || self.writing
    }
}

/// What occupies one end.
#[derive(Debug)]
enum Slot {
    Empty,
    /// Connected, waiting for the cable to be plugged.
    Pending(UnixStream),
    Open(Conn),
}

/// One direction of the cable.
#[derive(Debug)]
struct Dir {
    ring: Ring,
    /// Bytes at the front of the stream that leave before the ring: a
    /// corrupted frame, the marked end of a read-split piece, stale bytes.
    detour: Vec<u8>,
    detour_off: usize,
    delay: Delay,
    bucket: Bucket,
    /// The socket of a source that closed while its data was still unread
    /// (noticed when the end was reopened): read until EOF, then the
    /// destination gets its EOF.
    lingering: Option<UnixStream>,
    forwarded: u64,
    dropped: u64,
    /// Read splits: where pieces end.
    splitter: Splitter,
    /// Corruption probability: which bits flip.
    corrupter: Corrupter,
    /// The last bytes written into this direction (for stale bytes).
    tail: Tail,
    /// Stale bytes captured at the last unplug, for the next attach of the
    /// destination.
    stale: Vec<u8>,
    /// Frames corrupted by the one-shot `corrupt`.
    corrupted_once: u64,
    /// Stale bytes put at the front of a new link.
    stale_sent: u64,
}

impl Dir {
    fn pending_out(&self) -> usize {
        self.ring.len() + (self.detour.len() - self.detour_off)
    }

    fn clear(&mut self) {
        self.dropped += self.pending_out() as u64;
        self.ring.clear();
        self.detour.clear();
        self.detour_off = 0;
        self.delay.clear();
        self.lingering = None;
    }
}

/// A control-socket client.
#[derive(Debug)]
struct CtlConn {
    sock: UnixStream,
    buf: Vec<u8>,
    since: Instant,
}

/// What one `pollfd` entry stands for.
#[derive(Debug, Clone, Copy)]
enum Target {
    Wake,
    Stop,
    Listen(CableEnd),
    CtlListen,
    Ctl,
    Pending(CableEnd),
    Data,
}

/// The relay (see the module docs). Built by [`Relay::new`], consumed by
/// [`Relay::run`].
#[derive(Debug)]
pub(crate) struct Relay {
    opts: CableOptions,
    link: LinkWord,
    epoch: u64,
    plugged: bool,
    ends: [Slot; 2],
    /// `dirs[0]`: A -> B, `dirs[1]`: B -> A (indexed by the source end).
    dirs: [Dir; 2],
    corrupt_armed: bool,
    corrupted: u64,
    unplugs: u64,
    faults: CableFaults,
    /// The descriptor that marks the end of a read-split piece (module
    /// `faults`): an eventfd nobody reads.
    marker: OwnedFd,
    requests: mpsc::Receiver<Request>,
    wake: Arc<OwnedFd>,
    listeners: Option<Listeners>,
    stop_fd: Option<BorrowedFd<'static>>,
    ctl: Vec<CtlConn>,
    scratch: Vec<u8>,
    stopping: bool,
}

fn end_of(i: usize) -> CableEnd {
    if i == 0 {
        CableEnd::A
    } else {
        CableEnd::B
    }
}

/// Whether the client of a relay-side socket has closed (the kernel sets
/// both shutdown bits on our side: POLLHUP).
fn hung_up(sock: &UnixStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

impl Relay {
    /// A relay publishing its state through `link`, serving `listeners` if
    /// given, and stopping when `stop_fd` becomes readable.
    pub(crate) fn new(
        opts: &CableOptions,
        faults: &CableFaults,
        link: LinkWord,
        listeners: Option<Listeners>,
        stop_fd: Option<BorrowedFd<'static>>,
    ) -> io::Result<(Relay, RelayHandle)> {
        opts.validate()?;
        faults
            .validate(opts.ring_size)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let wake = Arc::new(eventfd()?);
        let marker = eventfd()?;
        if let Some(l) = &listeners {
            for s in [&l.a, &l.b, &l.ctl] {
                s.set_nonblocking(true)?;
            }
        }
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let ring_bytes = opts.ring_size as usize * FRAME;
        let latency = Duration::from_micros(opts.latency_us);
        let splice = std::env::var_os(NO_SPLICE_ENV).is_none() && splice_works();
        let dir = || Dir {
            ring: Ring::new(ring_bytes, splice),
            detour: Vec::new(),
            detour_off: 0,
            delay: Delay::new(latency),
            bucket: Bucket::new(opts.rate, now),
            lingering: None,
            forwarded: 0,
            dropped: 0,
            splitter: Splitter::new(&CableFaults::default(), 0),
            corrupter: Corrupter::new(&CableFaults::default(), 0, 0),
            tail: Tail::default(),
            stale: Vec::new(),
            corrupted_once: 0,
            stale_sent: 0,
        };
        link.store(encode_link(0, true));
        let mut relay = Relay {
            opts: opts.clone(),
            link,
            epoch: 0,
            plugged: true,
            ends: [Slot::Empty, Slot::Empty],
            dirs: [dir(), dir()],
            corrupt_armed: false,
            corrupted: 0,
            unplugs: 0,
            faults: *faults,
            marker,
            requests: rx,
            wake: wake.clone(),
            listeners,
            stop_fd,
            ctl: Vec::new(),
            scratch: Vec::new(),
            stopping: false,
        };
        relay.set_faults(*faults);
        Ok((relay, RelayHandle { tx, wake }))
    }

    /// Runs until stopped (a `Stop` request, a `Shutdown` command, the stop
    /// descriptor, or every handle dropped). On the way out the link goes
    /// down (clients see ENXIO) and all connections are closed.
    pub(crate) fn run(mut self) -> io::Result<()> {
        block_sigpipe();
        let result = self.run_loop();
        self.publish(self.epoch + 1, false);
        self.ends = [Slot::Empty, Slot::Empty];
        self.ctl.clear();
        result
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut targets: Vec<Target> = Vec::new();
        loop {
            self.process_requests();
            if self.stopping {
                return Ok(());
            }
            let mut passes = 0;
            while passes < MAX_PASSES && self.pump_pass() {
                passes += 1;
            }
            let timeout = if passes == MAX_PASSES {
                Some(Duration::ZERO)
            } else {
                self.next_wakeup()
            };
            self.build_poll_set(&mut fds, &mut targets);
            ppoll(&mut fds, timeout)?;
            for (pfd, target) in fds.iter().zip(targets.iter()) {
                if pfd.revents == 0 {
                    continue;
                }
                match *target {
                    Target::Wake => {
                        let mut b = [0u8; 8];
                        // SAFETY: reading 8 bytes from our eventfd.
                        unsafe { libc::read(self.wake.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
                    }
                    Target::Stop => self.stopping = true,
                    Target::Listen(end) => self.accept_ends(end),
                    Target::CtlListen => self.accept_ctl(),
                    Target::Pending(end) => self.check_pending(end),
                    Target::Ctl | Target::Data => {}
                }
            }
            self.serve_ctl();
        }
    }

    fn process_requests(&mut self) {
        loop {
            match self.requests.try_recv() {
                Ok(Request::Connect(end, sock)) => self.on_connect(end, sock),
                Ok(Request::Command(cmd, reply)) => {
                    let st = self.execute(cmd);
                    let _ = reply.send(st);
                }
                Ok(Request::Stop) => self.stopping = true,
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    // Nobody can talk to us any more (in-process cable
                    // dropped). A served cable keeps its handle alive.
                    self.stopping = true;
                    return;
                }
            }
        }
    }

    fn publish(&mut self, epoch: u64, plugged: bool) {
        self.epoch = epoch;
        self.plugged = plugged;
        self.link.store(encode_link(epoch, plugged));
    }

    /// Runs a command; returns the status after it.
    pub(crate) fn execute(&mut self, cmd: ControlCommand) -> CableStats {
        match cmd {
            ControlCommand::Status => {}
            ControlCommand::Unplug => self.unplug(),
            ControlCommand::Replug => self.replug(),
            ControlCommand::Corrupt => self.corrupt_armed = true,
            ControlCommand::Faults(f) => self.set_faults(f),
            ControlCommand::Shutdown => self.stopping = true,
        }
        self.stats()
    }

    /// Replaces the seeded faults (validated by the caller). The random
    /// streams restart at the bytes not yet queued for leaving.
    fn set_faults(&mut self, faults: CableFaults) {
        self.faults = faults;
        for (i, d) in self.dirs.iter_mut().enumerate() {
            d.set_faults(&faults, i);
        }
    }

    /// Whether `cmd` can run: a fault setting must fit this cable's ring.
    pub(crate) fn check(&self, cmd: &ControlCommand) -> Result<(), super::faults::FaultError> {
        match cmd {
            ControlCommand::Faults(f) => f.validate(self.opts.ring_size),
            _ => Ok(()),
        }
    }

    fn unplug(&mut self) {
        if !self.plugged {
            return;
        }
        // The epoch moves before any connection is closed: a client that
        // sees EOF and then checks the link word must see the unplug.
        self.publish(self.epoch + 1, false);
        self.unplugs += 1;
        for slot in &mut self.ends {
            if matches!(slot, Slot::Open(_)) {
                *slot = Slot::Empty;
            }
        }
        for d in &mut self.dirs {
            // What the old link leaves over for the new one.
            if d.tail.is_active() {
                d.stale = d.tail.to_vec();
                d.tail.clear();
            }
            d.clear();
        }
    }

    fn replug(&mut self) {
        if self.plugged {
            return;
        }
        self.publish(self.epoch, true);
        for i in 0..2 {
            if let Slot::Pending(_) = self.ends[i] {
                if let Slot::Pending(sock) = std::mem::replace(&mut self.ends[i], Slot::Empty) {
                    self.attach(end_of(i), sock);
                }
            }
        }
    }

    fn stats(&self) -> CableStats {
        let dir = |d: &Dir| DirStats {
            forwarded: d.forwarded,
            dropped: d.dropped,
            in_flight: d.pending_out() as u64,
            corrupted: d.corrupted_once + d.corrupter.injected,
            stale: d.stale_sent,
            pieces: d.splitter.pieces,
        };
        let end = |s: &Slot| match s {
            Slot::Empty => EndState::Closed,
            Slot::Pending(_) => EndState::Waiting,
            Slot::Open(c) if c.closing || !c.alive() => EndState::PeerClosed,
            Slot::Open(_) => EndState::Open,
        };
        CableStats {
            plugged: self.plugged,
            epoch: self.epoch,
            unplugs: self.unplugs,
            a_to_b: dir(&self.dirs[0]),
            b_to_a: dir(&self.dirs[1]),
            corrupted_frames: self.corrupted
                + self.dirs[0].corrupter.injected
                + self.dirs[1].corrupter.injected,
            random_corruptions: self.dirs[0].corrupter.injected + self.dirs[1].corrupter.injected,
            corrupt_armed: self.corrupt_armed,
            ring_size: self.opts.ring_size,
            zero_copy: self.dirs[0].ring.is_pipe() && self.dirs[1].ring.is_pipe(),
            rate: self.opts.rate,
            latency_us: self.opts.latency_us,
            faults: self.faults,
            a: end(&self.ends[0]),
            b: end(&self.ends[1]),
        }
    }

    // ---- connections ------------------------------------------------------

    fn on_connect(&mut self, end: CableEnd, sock: UnixStream) {
        if configure_socket(&sock).is_err() {
            return;
        }
        let i = end.index();
        let busy = match &self.ends[i] {
            Slot::Pending(old) => !hung_up(old),
            Slot::Open(c) if c.alive() => {
                if hung_up(&c.sock) {
                    // The previous client closed but we had not noticed
                    // (its data is still queued): it closes now, its unread
                    // data still reaches the peer.
                    self.end_closed(end, true);
                    false
                } else {
                    true
                }
            }
            Slot::Open(_) | Slot::Empty => false,
        };
        if busy {
            let _ = send_slice(sock.as_fd(), &[TOKEN_BUSY]);
            return;
        }
        if self.plugged {
            self.attach(end, sock);
        } else {
            self.ends[i] = Slot::Pending(sock);
        }
    }

    fn attach(&mut self, end: CableEnd, sock: UnixStream) {
        let mut token = [0u8; 9];
        token[0] = TOKEN_ATTACHED;
        token[1..].copy_from_slice(&self.epoch.to_le_bytes());
        // A fresh socket's buffer always takes 9 bytes; anything else
        // means the client is gone.
        if matches!(send_slice(sock.as_fd(), &token), Ok(9)) {
            self.ends[end.index()] = Slot::Open(Conn {
                sock,
                reading: true,
                writing: true,
                closing: false,
            });
            // Stale bytes of the old link come first on the new one.
            self.dirs[end.peer().index()].load_stale();
        } else {
            self.ends[end.index()] = Slot::Empty;
        }
    }

    /// The client of `end` closed. With `linger`, its socket still holds
    /// data that is read and delivered before the peer's EOF.
    fn end_closed(&mut self, end: CableEnd, linger: bool) {
        let x = end.index();
        let y = end.peer().index();
        let old = std::mem::replace(&mut self.ends[x], Slot::Empty);
        // Data for the closed end is lost.
        self.dirs[y].clear();
        // A client that had already lost its peer never talked to the
        // current one (its writes were refused, data for it dropped): its
        // close means nothing to that peer. Without this, two sides that
        // reopen on EOF would keep sending each other EOFs.
        if !matches!(&old, Slot::Open(c) if c.alive() && !c.closing) {
            self.dirs[x].clear();
            return;
        }
        let peer_alive = match &mut self.ends[y] {
            Slot::Open(c) if c.alive() && !c.closing => {
                c.closing = true;
                c.reading = false;
                // Its later writes fail (EPIPE -> ENXIO). What it already
                // queued is discarded, which also wakes a writer blocked on
                // a full socket so that it sees the error.
                let _ = c.sock.shutdown(std::net::Shutdown::Read);
                self.dirs[y].dropped += discard_queued(&c.sock, &mut self.scratch);
                true
            }
            // Still delivering what an earlier client of this end sent
            // (this client's own data was dropped): leave that alone.
            Slot::Open(c) if c.closing => return,
            _ => false,
        };
        if !peer_alive {
            self.dirs[x].clear();
            return;
        }
        if linger {
            if let Slot::Open(c) = old {
                if c.reading {
                    self.dirs[x].lingering = Some(c.sock);
                }
            }
        }
    }

    fn accept_ends(&mut self, end: CableEnd) {
        loop {
            let Some(l) = &self.listeners else { return };
            let listener = if end == CableEnd::A { &l.a } else { &l.b };
            match listener.accept() {
                Ok((sock, _)) => self.on_connect(end, sock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn check_pending(&mut self, end: CableEnd) {
        let i = end.index();
        let Slot::Pending(sock) = &self.ends[i] else {
            return;
        };
        // A waiting client sends nothing; readable means it gave up.
        let mut b = [0u8; 64];
        // SAFETY: reading into a stack buffer.
        let n = unsafe { libc::read(sock.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        if n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock) {
            self.ends[i] = Slot::Empty;
        }
    }

    // ---- data path --------------------------------------------------------

    /// One pass over both directions; true if any byte moved or any state
    /// changed.
    fn pump_pass(&mut self) -> bool {
        let now = Instant::now();
        let a = self.pump_dir(0, now);
        let b = self.pump_dir(1, now);
        a | b
    }

    /// Moves data of direction `s` (source end index): fill, then drain.
    fn pump_dir(&mut self, s: usize, now: Instant) -> bool {
        let d = 1 - s;
        let mut progress = false;
        let (dst_open, dst_takes_new) = match &self.ends[d] {
            Slot::Open(c) => (c.writing, c.writing && !c.closing),
            _ => (false, false),
        };

        // A lingering (closed) source first: its data is older.
        if let Some(l) = self.dirs[s].lingering.take() {
            match self.dirs[s].fill(&mut self.scratch, l.as_fd(), dst_open, now) {
                Ok(0) => progress = true, // EOF: the old client is done
                Ok(_) => {
                    progress = true;
                    self.dirs[s].lingering = Some(l);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.dirs[s].lingering = Some(l),
                Err(_) => progress = true,
            }
        }
        let mut closed = false;
        if let Slot::Open(c) = &self.ends[s] {
            if c.reading {
                match self.dirs[s].fill(&mut self.scratch, c.sock.as_fd(), dst_takes_new, now) {
                    Ok(0) => closed = true,
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => closed = true,
                }
            }
        }
        if closed {
            self.end_closed(end_of(s), false);
            progress = true;
        }
        progress |= self.drain(s, now);
        progress
    }
}

/// Blocks SIGPIPE in the calling (relay) thread: `splice` into a socket
/// whose client just closed raises it (there is no MSG_NOSIGNAL for
/// splice), and it must not kill a process that did not ignore it. A
/// thread-directed signal that stays blocked is dropped when the thread
/// ends.
fn block_sigpipe() {
    // SAFETY: plain signal mask manipulation of the current thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// A non-blocking eventfd.
fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd creation; checked below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `efd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(efd) })
}

/// Reads and drops whatever `sock` has queued; returns the byte count.
fn discard_queued(sock: &UnixStream, scratch: &mut Vec<u8>) -> u64 {
    if scratch.len() < CHUNK {
        scratch.resize(CHUNK, 0);
    }
    let mut total = 0u64;
    loop {
        // SAFETY: reading into our scratch buffer of `scratch.len()` bytes.
        let r = unsafe { libc::read(sock.as_raw_fd(), scratch.as_mut_ptr().cast(), scratch.len()) };
        if r <= 0 {
            return total;
        }
        total += r as u64; // r > 0 checked above
    }
}

fn ppoll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: valid pollfd array and optional timespec.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            tsp,
            std::ptr::null(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        for f in fds.iter_mut() {
            f.revents = 0;
        }
    }
    Ok(())
}

mod data;

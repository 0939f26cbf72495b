//! The emulated cable (spec §5): two endpoints joined by a relay that
//! behaves like a pair of `/dev/tbstreamX` devices on a USB4 link.
//!
//! * ordered, lossless byte stream each way, arbitrary read boundaries;
//! * at most `ring_size * 4096` bytes in flight per direction inside the
//!   relay (the driver's ring): a writer without a reader gets short writes,
//!   then `EAGAIN`;
//! * open waits until the cable is plugged; EOF at the reader after the
//!   peer closed; `ENXIO` on read and write once unplugged;
//! * faults: unplug/replug at any moment (in-flight data is lost), one
//!   corrupted 4 KiB frame on demand, a rate cap, added one-way latency;
//! * seeded faults ([`CableFaults`], off by default; the same seed and the
//!   same bytes give the same faults):
//!   - **read splits**: reads return random small amounts even when more
//!     has arrived (as reads of 2 MiB on hardware returned 64, 12 288 or
//!     90 240 bytes, spec §6): piece sizes are log-uniform from 1 byte to
//!     [`MAX_READ_SPLIT`] (256 KiB), so two thirds of them are at most 4 KiB
//!     and 1/18 are a single byte. Every byte arrives, in order; only the
//!     split points change. A read never crosses a piece end, unless it
//!     stopped inside the piece's last 2 KiB (then the next read may reach
//!     the following end);
//!   - **corruption probability**: each 4 KiB frame of a direction's stream
//!     (by offset) gets 1 to 3 flipped bits with probability
//!     `corrupt_prob`; counted in [`CableStats::random_corruptions`] and
//!     per direction;
//!   - **stale bytes**: after a replug, the first bytes a reader gets on
//!     the new link are the last `stale_bytes` bytes the writer of that
//!     direction had put into the old link (in-flight ones included), as a
//!     peer still writing the tail of the previous stream would deliver
//!     them. The session's resync (skip to the peer's Hello) sees them.
//!
//!   Set them with [`EmuCable::with_faults`] / [`serve_with_faults`] or at
//!   any time with [`EmuCable::set_faults`] / [`ControlCommand::Faults`]
//!   (`tbbridge cable run|faults NAME --read-splits --corrupt-prob P
//!   --stale-bytes N --seed S`).
//!
//! Two flavours share all of it (the relay thread and the endpoint protocol):
//! [`EmuCable`], an in-process pair for tests and benches, and the
//! cross-process cable of [`serve`] / [`control`] (what `tbbridge cable`
//! runs), whose ends are the Unix sockets `ROOT/NAME/a` and `ROOT/NAME/b`.
//!
//! # Differences from the driver
//! * One open per end at a time: a second concurrent open gets `EBUSY`
//!   (`ErrorKind::ResourceBusy`); the driver allows several.
//! * After the peer closed, this end must be reopened to talk to a new peer
//!   (reads give EOF after the data, writes `ENXIO`); the relay does not
//!   restart rings for an fd that saw its peer go.
//! * An end's fd is a Unix socket: besides the ring, about two socket
//!   buffers can be in flight outside it (~0.55 MiB measured, next to the
//!   default ring of 1 MiB).
//! * The ring counts bytes, not frames: many small writes share a frame's
//!   worth of ring where the driver would use one frame each.
//! * While unplugged, `poll` reports `POLLHUP` (with `POLLIN`), not `POLLERR`.
//! * Random corruption picks frames by stream offset, not by the driver's
//!   frames (a short write makes a short frame on hardware).
//! * Data sent while the other end is not open is dropped (the spec only
//!   says it is not guaranteed to arrive).
//!
//! # Speed
//! Where the kernel can `splice` into Unix sockets (Linux 6.5+) the ring is
//! a pipe and the relay moves page references, not bytes; otherwise (or with
//! the environment variable `TBBRIDGE_CABLE_NO_SPLICE` set) it copies
//! through a buffer. `CableStats::zero_copy` tells which. Stale bytes need
//! to see the bytes, so setting them makes the relay copy from then on.

pub(crate) mod endpoint;
mod faults;
mod relay;
mod ring;
mod server;

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use faults::{CableFaults, FaultError, Probability, MAX_READ_SPLIT, MAX_STALE_BYTES};
pub use server::{control, serve, serve_with_faults, ControlCommand, ControlError};

use self::endpoint::{configure_socket, decode_link, LinkWord, MappedWord};
use self::relay::{Relay, RelayHandle, Request};
use super::fd::{AsyncDevice, DeviceFd};
use super::spec::{validate_cable_name, CableEnd};

/// Where `tbbridge cable run` puts its cables: `ROOT/NAME/{a,b,ctl,state}`.
pub const DEFAULT_CABLE_ROOT: &str = "/run/tbbridge/cable";
/// The driver's default ring length in frames (configfs `ring_size`).
pub const DEFAULT_RING_SIZE: u32 = 256;
/// Smallest ring the driver accepts.
pub const MIN_RING_SIZE: u32 = 32;
/// Largest ring the driver accepts (16 MiB of 4 KiB frames).
pub const MAX_RING_SIZE: u32 = 4096;

/// How an emulated cable behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CableOptions {
    /// Ring length in 4 KiB frames, per direction: 32..=4096, default 256.
    pub ring_size: u32,
    /// Cap in bytes per second, per direction (`None`: as fast as the
    /// relay goes). 2_800_000_000 models TB4.
    pub rate: Option<u64>,
    /// Added one-way delay in microseconds (0: none).
    pub latency_us: u64,
}

impl Default for CableOptions {
    fn default() -> Self {
        CableOptions {
            ring_size: DEFAULT_RING_SIZE,
            rate: None,
            latency_us: 0,
        }
    }
}

impl CableOptions {
    /// Checks the values the way the driver and the relay need them.
    pub fn validate(&self) -> io::Result<()> {
        if !(MIN_RING_SIZE..=MAX_RING_SIZE).contains(&self.ring_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ring_size {} out of range: the driver accepts {MIN_RING_SIZE}..={MAX_RING_SIZE} frames",
                    self.ring_size
                ),
            ));
        }
        if self.rate == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "rate must be at least 1 byte/s (leave it unset for no cap)",
            ));
        }
        if self.latency_us > 60_000_000 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "latency_us above 60 s makes no sense for a cable",
            ));
        }
        Ok(())
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirStats {
    /// Bytes delivered to the destination's socket.
    pub forwarded: u64,
    /// Bytes dropped: destination not open, or lost at unplug / close.
    pub dropped: u64,
    /// Bytes in the relay's ring right now.
    pub in_flight: u64,
    /// Frames corrupted in this direction (one-shot and random).
    pub corrupted: u64,
    /// Stale bytes put at the front of a new link (stale-bytes fault).
    pub stale: u64,
    /// Read-split pieces completed (read-splits fault).
    pub pieces: u64,
}

/// What an end is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndState {
    /// Nobody has it open.
    Closed,
    /// Opened, waiting for the cable to be plugged.
    Waiting,
    /// Open and attached.
    Open,
    /// Open, but its peer closed (it reads EOF after the data).
    PeerClosed,
}

impl EndState {
    /// Lower-case name used in the status JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EndState::Closed => "closed",
            EndState::Waiting => "waiting",
            EndState::Open => "open",
            EndState::PeerClosed => "peer_closed",
        }
    }
}

/// A snapshot of the cable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CableStats {
    /// Whether the cable is plugged.
    pub plugged: bool,
    /// Plug epoch: bumped at every unplug.
    pub epoch: u64,
    /// Number of unplugs so far.
    pub unplugs: u64,
    /// Direction A -> B.
    pub a_to_b: DirStats,
    /// Direction B -> A.
    pub b_to_a: DirStats,
    /// Frames corrupted so far (one-shot and random).
    pub corrupted_frames: u64,
    /// Of those, frames corrupted by the corruption probability.
    pub random_corruptions: u64,
    /// A corruption is armed and waits for data.
    pub corrupt_armed: bool,
    /// Ring length in frames.
    pub ring_size: u32,
    /// The relay moves data with `splice` (page references, no copies);
    /// false when it falls back to copying through a buffer.
    pub zero_copy: bool,
    /// Rate cap in bytes/s, if any.
    pub rate: Option<u64>,
    /// Added one-way latency.
    pub latency_us: u64,
    /// The seeded faults in force.
    pub faults: CableFaults,
    /// End A.
    pub a: EndState,
    /// End B.
    pub b: EndState,
}

/// An in-process emulated cable: a relay thread and two ends opened with
/// [`open`](Self::open) / [`open_async`](Self::open_async). Dropping it
/// stops the relay: open ends then read and write `ENXIO`.
#[derive(Debug)]
pub struct EmuCable {
    handle: RelayHandle,
    link: Arc<AtomicU64>,
    ring_size: u32,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl EmuCable {
    /// Starts a cable (plugged) with its relay thread.
    pub fn new(opts: CableOptions) -> io::Result<EmuCable> {
        Self::with_faults(opts, CableFaults::default())
    }

    /// Starts a cable with seeded faults in force from the first byte.
    /// `InvalidInput` if the options or faults are out of range.
    pub fn with_faults(opts: CableOptions, faults: CableFaults) -> io::Result<EmuCable> {
        let link = Arc::new(AtomicU64::new(0));
        let (relay, handle) =
            Relay::new(&opts, &faults, LinkWord::Local(link.clone()), None, None)?;
        let thread = std::thread::Builder::new()
            .name("tbcable-relay".into())
            .spawn(move || relay.run())?;
        Ok(EmuCable {
            handle,
            link,
            ring_size: opts.ring_size,
            thread: Some(thread),
        })
    }

    fn connect(&self, end: CableEnd) -> io::Result<UnixStream> {
        let (client, relay_side) = UnixStream::pair()?;
        configure_socket(&client)?;
        self.handle.send(Request::Connect(end, relay_side))?;
        Ok(client)
    }

    fn finish(&self, client: UnixStream, epoch: u64) -> io::Result<DeviceFd> {
        DeviceFd::emu(client.into(), LinkWord::Local(self.link.clone()), epoch)
    }

    /// Opens `end`, blocking while the cable is unplugged (like the
    /// driver's blocking open). `EBUSY` if the end is already open.
    pub fn open(&self, end: CableEnd) -> io::Result<DeviceFd> {
        self.open_inner(end, None)
    }

    /// [`open`](Self::open) giving up with `TimedOut` after `timeout`.
    pub fn open_timeout(&self, end: CableEnd, timeout: Duration) -> io::Result<DeviceFd> {
        self.open_inner(end, Some(timeout))
    }

    fn open_inner(&self, end: CableEnd, timeout: Option<Duration>) -> io::Result<DeviceFd> {
        let client = self.connect(end)?;
        let what = format!("emulated cable end {end}");
        let epoch = endpoint::wait_attached_blocking(&client, timeout, &what)?;
        self.finish(client, epoch)
    }

    /// Opens `end` on the current tokio runtime, waiting while unplugged.
    /// Dropping the future abandons the open and frees the end.
    pub async fn open_async(&self, end: CableEnd) -> io::Result<AsyncDevice> {
        self.open_async_timeout(end, None).await
    }

    /// [`open_async`](Self::open_async) with an optional timeout.
    pub async fn open_async_timeout(
        &self,
        end: CableEnd,
        timeout: Option<Duration>,
    ) -> io::Result<AsyncDevice> {
        let client = self.connect(end)?;
        let what = format!("emulated cable end {end}");
        let (client, epoch) = endpoint::wait_attached_async(client, timeout, &what).await?;
        AsyncDevice::new(self.finish(client, epoch)?)
    }

    /// Pulls the cable: in-flight data is lost, open ends get `ENXIO`,
    /// new opens wait. Returns once done.
    pub fn unplug(&self) -> io::Result<()> {
        self.handle.command(ControlCommand::Unplug).map(drop)
    }

    /// Plugs the cable back in: waiting opens complete.
    pub fn replug(&self) -> io::Result<()> {
        self.handle.command(ControlCommand::Replug).map(drop)
    }

    /// Arms a corruption: 1 to 3 bits flip in the next frame (up to 4 KiB)
    /// that leaves the relay, in whichever direction moves first.
    pub fn corrupt(&self) -> io::Result<()> {
        self.handle.command(ControlCommand::Corrupt).map(drop)
    }

    /// Replaces the seeded faults (all of them: what `faults` leaves at
    /// its default is off). The random streams restart at the bytes not
    /// yet leaving. `InvalidInput` if `stale_bytes` exceeds the ring.
    pub fn set_faults(&self, faults: CableFaults) -> io::Result<()> {
        faults
            .validate(self.ring_size)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.handle
            .command(ControlCommand::Faults(faults))
            .map(drop)
    }

    /// Current counters and state.
    pub fn stats(&self) -> io::Result<CableStats> {
        self.handle.command(ControlCommand::Status)
    }

    /// Whether the cable is plugged (one atomic load).
    pub fn is_plugged(&self) -> bool {
        decode_link(self.link.load(std::sync::atomic::Ordering::Acquire)).1
    }
}

impl Drop for EmuCable {
    fn drop(&mut self) {
        let _ = self.handle.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The directory of cable `name` under `root`, checking the name.
pub(crate) fn cable_dir(root: &Path, name: &str) -> io::Result<std::path::PathBuf> {
    validate_cable_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(root.join(name))
}

/// "not running" with a hint, for a missing or refused socket.
pub(crate) fn not_served(root: &Path, name: &str, e: &io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no emulated cable {name:?} under {} ({e}); start it with `tbbridge cable run {name}`",
            root.display()
        ),
    )
}

fn connect_end(root: &Path, name: &str, end: CableEnd) -> io::Result<(UnixStream, LinkWord)> {
    let dir = cable_dir(root, name)?;
    let link = MappedWord::open(&dir.join("state")).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => not_served(root, name, &e),
        _ => e,
    })?;
    let sock = UnixStream::connect(dir.join(end.as_str())).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => not_served(root, name, &e),
        _ => e,
    })?;
    configure_socket(&sock)?;
    Ok((sock, LinkWord::Mapped(Arc::new(link))))
}

/// Opens `end` of the cross-process cable `name` under `root` (blocking,
/// waits while unplugged, up to `timeout` if given).
pub fn open_end(
    root: &Path,
    name: &str,
    end: CableEnd,
    timeout: Option<Duration>,
) -> io::Result<DeviceFd> {
    let (sock, link) = connect_end(root, name, end)?;
    let what = format!("emu:{name}/{end}");
    let epoch = endpoint::wait_attached_blocking(&sock, timeout, &what)?;
    DeviceFd::emu(sock.into(), link, epoch)
}

/// Async [`open_end`]; dropping the future abandons the open.
pub async fn open_end_async(
    root: &Path,
    name: &str,
    end: CableEnd,
    timeout: Option<Duration>,
) -> io::Result<AsyncDevice> {
    let (sock, link) = connect_end(root, name, end)?;
    let what = format!("emu:{name}/{end}");
    let (sock, epoch) = endpoint::wait_attached_async(sock, timeout, &what).await?;
    AsyncDevice::new(DeviceFd::emu(sock.into(), link, epoch)?)
}

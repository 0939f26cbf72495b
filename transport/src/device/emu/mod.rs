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
//!   corrupted 4 KiB frame on demand, a rate cap, added one-way latency.
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
//! * Data sent while the other end is not open is dropped (the spec only
//!   says it is not guaranteed to arrive).
//!
//! # Speed
//! Where the kernel can `splice` into Unix sockets (Linux 6.5+) the ring is
//! a pipe and the relay moves page references, not bytes; otherwise (or with
//! the environment variable `TBBRIDGE_CABLE_NO_SPLICE` set) it copies
//! through a buffer. `CableStats::zero_copy` tells which.

pub(crate) mod endpoint;
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

pub use server::{control, serve, ControlCommand, ControlError};

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
    /// Frames corrupted so far.
    pub corrupted_frames: u64,
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
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl EmuCable {
    /// Starts a cable (plugged) with its relay thread.
    pub fn new(opts: CableOptions) -> io::Result<EmuCable> {
        let link = Arc::new(AtomicU64::new(0));
        let (relay, handle) = Relay::new(&opts, LinkWord::Local(link.clone()), None, None)?;
        let thread = std::thread::Builder::new()
            .name("tbcable-relay".into())
            .spawn(move || relay.run())?;
        Ok(EmuCable {
            handle,
            link,
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

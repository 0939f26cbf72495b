//! [`DeviceFd`] (a non-blocking device descriptor with the driver's error
//! semantics) and [`AsyncDevice`] (the same on tokio's reactor).
//!
//! Both kinds of device look the same to callers:
//! * `read` returns `Ok(0)` (EOF) once the peer closed, after its data;
//! * `read`/`write` fail with `ENXIO` while the cable is unplugged (test it
//!   with [`is_link_down`](super::is_link_down)); for the emulated cable an
//!   fd that saw `ENXIO` keeps returning it (the robust reaction, as on the
//!   real device, is to close and open again);
//! * writes can be short: the ring takes what it has room for.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::emu::endpoint::LinkWord;

/// Most iovecs passed to one `writev` (Linux `IOV_MAX`); extra slices are
/// left for the next call, which is fine since writes may be short anyway.
const MAX_IOVECS: usize = 1024;
/// What [`AsyncDevice::read_buf`] reserves when the buffer has no spare
/// capacity at all.
const READ_BUF_RESERVE: usize = 64 * 1024;

/// The `ENXIO` error: cable unplugged (or peer gone, on write).
pub(crate) fn enxio() -> io::Error {
    io::Error::from_raw_os_error(libc::ENXIO)
}

/// What kind of file the descriptor is.
#[derive(Debug)]
enum Kind {
    /// `/dev/tbstreamX`: the driver reports ENXIO itself.
    TbStream,
    /// One end of an emulated cable: a Unix stream socket to the relay.
    Emu {
        /// The cable's link word (see `emu::endpoint`).
        link: LinkWord,
        /// Epoch this connection attached in.
        epoch: u64,
        /// Set once an unplug was seen: ENXIO from then on.
        down: AtomicBool,
    },
}

/// A non-blocking device descriptor with device semantics (module docs).
#[derive(Debug)]
pub struct DeviceFd {
    fd: OwnedFd,
    kind: Kind,
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize) // r >= 0 checked above
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl DeviceFd {
    /// Wraps an open `/dev/tbstreamX` descriptor (sets `O_NONBLOCK`).
    pub(crate) fn tbstream(fd: OwnedFd) -> io::Result<DeviceFd> {
        set_nonblocking(fd.as_fd())?;
        Ok(DeviceFd {
            fd,
            kind: Kind::TbStream,
        })
    }

    /// Wraps an attached emulated-cable socket (sets `O_NONBLOCK`).
    pub(crate) fn emu(fd: OwnedFd, link: LinkWord, epoch: u64) -> io::Result<DeviceFd> {
        set_nonblocking(fd.as_fd())?;
        Ok(DeviceFd {
            fd,
            kind: Kind::Emu {
                link,
                epoch,
                down: AtomicBool::new(false),
            },
        })
    }

    /// Whether this is an emulated-cable end.
    pub fn is_emulated(&self) -> bool {
        matches!(self.kind, Kind::Emu { .. })
    }

    /// For the emulated cable: ENXIO if the link went down since attach.
    fn check_link(&self) -> io::Result<()> {
        if let Kind::Emu { link, epoch, down } = &self.kind {
            if down.load(Ordering::Relaxed) {
                return Err(enxio());
            }
            if !link.attached_in(*epoch) {
                down.store(true, Ordering::Relaxed);
                return Err(enxio());
            }
        }
        Ok(())
    }

    /// Maps the outcome of a read syscall to device semantics.
    fn map_read(&self, r: io::Result<usize>) -> io::Result<usize> {
        match (&self.kind, r) {
            (Kind::TbStream, r) => r,
            (Kind::Emu { .. }, Ok(0)) => {
                // EOF from the relay: a peer close, unless the cable was
                // unplugged (the relay bumps the epoch before closing).
                self.check_link()?;
                Ok(0)
            }
            (Kind::Emu { .. }, Ok(n)) => Ok(n),
            (Kind::Emu { .. }, Err(e)) => Err(self.map_emu_error(e)),
        }
    }

    /// Maps the outcome of a write syscall to device semantics.
    fn map_write(&self, r: io::Result<usize>) -> io::Result<usize> {
        match (&self.kind, r) {
            (Kind::TbStream, r) => r,
            (Kind::Emu { .. }, Ok(n)) => Ok(n),
            (Kind::Emu { .. }, Err(e)) => Err(self.map_emu_error(e)),
        }
    }

    fn map_emu_error(&self, e: io::Error) -> io::Error {
        match e.raw_os_error() {
            // The relay shut our direction down: the peer closed (the driver
            // says ENXIO for writes after the peer's CLOSE) or the cable
            // was unplugged.
            Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN) => {
                let _ = self.check_link();
                enxio()
            }
            _ => e,
        }
    }

    /// Reads what has arrived (up to `buf.len()`): `Ok(0)` is EOF (peer
    /// closed), `WouldBlock` if nothing is there yet, `ENXIO` if unplugged.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        unsafe { self.read_raw(buf.as_mut_ptr(), buf.len()) }
    }

    /// Like [`read`](Self::read) into uninitialised memory; returns how many
    /// leading bytes of `buf` are now initialised.
    pub fn read_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; read(2)
        // only writes (never reads) the memory.
        unsafe { self.read_raw(buf.as_mut_ptr().cast(), buf.len()) }
    }

    /// # Safety
    /// `ptr` must be valid for writes of `len` bytes.
    unsafe fn read_raw(&self, ptr: *mut u8, len: usize) -> io::Result<usize> {
        self.check_link()?;
        loop {
            // SAFETY: guaranteed by the caller.
            let r = cvt(unsafe { libc::read(self.fd.as_raw_fd(), ptr.cast(), len) });
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return self.map_read(r),
            }
        }
    }

    /// Writes as much of `buf` as the ring takes (short counts allowed;
    /// `WouldBlock` when full; `ENXIO` when unplugged or the peer closed).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.writev(&[IoSlice::new(buf)])
    }

    /// Gathers `bufs` into one write (short counts allowed). At most 1024
    /// slices are taken per call.
    pub fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.check_link()?;
        let bufs = &bufs[..bufs.len().min(MAX_IOVECS)];
        loop {
            let r = match self.kind {
                // SAFETY: IoSlice is ABI-compatible with iovec on Unix; the
                // count is at most IOV_MAX.
                Kind::TbStream => cvt(unsafe {
                    libc::writev(
                        self.fd.as_raw_fd(),
                        bufs.as_ptr().cast(),
                        bufs.len() as libc::c_int, // <= MAX_IOVECS
                    )
                }),
                Kind::Emu { .. } => {
                    // sendmsg for MSG_NOSIGNAL: a closed relay connection
                    // must give EPIPE (mapped to ENXIO), not kill us.
                    // SAFETY: zeroed msghdr is valid; the iovec pointer and
                    // count come from a live slice.
                    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                    msg.msg_iovlen = bufs.len() as _;
                    // SAFETY: valid descriptor and message.
                    cvt(unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
                }
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return self.map_write(r),
            }
        }
    }
}

impl AsFd for DeviceFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for DeviceFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A [`DeviceFd`] on tokio's reactor (`POLLIN`/`POLLOUT`; `POLLHUP|POLLERR`
/// wake both directions, and the next call reports `ENXIO` or EOF).
#[derive(Debug)]
pub struct AsyncDevice {
    inner: AsyncFd<DeviceFd>,
}

impl AsyncDevice {
    /// Registers `fd` with the current tokio runtime (must be called inside
    /// one).
    pub fn new(fd: DeviceFd) -> io::Result<AsyncDevice> {
        // `with_interest` is deprecated in recent tokio in favour of an
        // unsafe `register_with_interest` (tokio >= 1.53); the workspace
        // allows 1.40. Its safety condition holds: DeviceFd owns its
        // descriptor and never replaces it.
        #[allow(deprecated)]
        Ok(AsyncDevice {
            inner: AsyncFd::with_interest(fd, Interest::READABLE | Interest::WRITABLE)?,
        })
    }

    /// The underlying descriptor.
    pub fn get_ref(&self) -> &DeviceFd {
        self.inner.get_ref()
    }

    /// Deregisters and returns the descriptor.
    pub fn into_inner(self) -> DeviceFd {
        self.inner.into_inner()
    }

    /// Reads at least one byte, or `Ok(0)` at EOF, or `ENXIO`.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .async_io(Interest::READABLE, |fd| fd.read(buf))
            .await
    }

    /// Reads into `buf`'s spare capacity (no zero-fill) and advances its
    /// length. Reserves 64 KiB first if there is no spare capacity at all.
    pub async fn read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(READ_BUF_RESERVE);
        }
        self.inner
            .async_io(Interest::READABLE, |fd| read_into_spare(fd, buf))
            .await
    }

    /// Non-blocking read: `WouldBlock` if nothing has arrived (this also
    /// clears tokio's readiness, so a following `readable()` waits).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.try_io(Interest::READABLE, |fd| fd.read(buf))
    }

    /// Non-blocking [`read_buf`](Self::read_buf). Does not reserve: with no
    /// spare capacity it returns `Ok(0)`, which is then not EOF.
    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        self.inner
            .try_io(Interest::READABLE, |fd| read_into_spare(fd, buf))
    }

    /// Writes what the ring takes of `bufs`, waiting until at least one
    /// byte is taken. Short counts are normal.
    pub async fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner
            .async_io(Interest::WRITABLE, |fd| fd.writev(bufs))
            .await
    }

    /// Non-blocking [`writev`](Self::writev): `WouldBlock` when the ring is
    /// full (clearing tokio's readiness), so that a pump can batch.
    pub fn try_writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner.try_io(Interest::WRITABLE, |fd| fd.writev(bufs))
    }

    /// Writes all of `buf`, waiting for ring room as needed.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.writev(&[IoSlice::new(buf)]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "device accepted no bytes",
                ));
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Waits until the device is readable (data, EOF or an error).
    pub async fn readable(&self) -> io::Result<()> {
        self.inner.readable().await.map(|mut g| g.retain_ready())
    }

    /// Waits until the device is writable (ring room or an error).
    pub async fn writable(&self) -> io::Result<()> {
        self.inner.writable().await.map(|mut g| g.retain_ready())
    }
}

/// Reads into the spare capacity of `buf` and advances its length.
fn read_into_spare(fd: &DeviceFd, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let n = fd.read_uninit(spare)?;
    // SAFETY: `read_uninit` initialised the first `n` bytes of the spare
    // capacity (n <= spare.len()).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

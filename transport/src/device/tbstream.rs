//! The real device, `/dev/tbstreamX` (spec §3).
//!
//! * A blocking `open` waits until the peer host is attached; with
//!   `O_NONBLOCK` it fails with `ENXIO` instead. `EINVAL` means the stream's
//!   HopIDs are not configured.
//! * After opening, the descriptor is switched to `O_NONBLOCK` for the
//!   reactor: reads/writes give `EAGAIN`, `poll` works.
//! * Unplug: read and write fail with `ENXIO` and poll reports
//!   `POLLHUP|POLLERR`; the driver's errors pass through unchanged.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::fd::{AsyncDevice, DeviceFd};

/// First pause between two non-blocking open attempts while the peer is
/// not attached; doubles up to [`OPEN_RETRY_MAX`].
const OPEN_RETRY_MIN: Duration = Duration::from_millis(10);
/// Longest pause between two open attempts: bounds how late we notice the
/// peer (a replug takes the driver far longer than this anyway).
const OPEN_RETRY_MAX: Duration = Duration::from_millis(250);

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("device path {} contains a NUL byte", path.display()),
        )
    })
}

/// Turns an `open(2)` error into one that says what to do. `ENXIO` (no
/// peer) stays a raw `ENXIO` so that callers can test it.
fn explain(path: &Path, e: io::Error) -> io::Error {
    let p = path.display();
    match e.raw_os_error() {
        Some(libc::ENXIO) => e,
        Some(libc::EINVAL) => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{p}: the stream's HopIDs are not configured (set in_hopid/out_hopid in its \
                 configfs directory, or -1 for automatic): {e}"
            ),
        ),
        Some(libc::ENOENT) => io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{p}: no such device: create the stream with mkdir under \
                 /sys/kernel/config/thunderbolt/stream/<service>/ (is the thunderbolt_stream \
                 module loaded?): {e}"
            ),
        ),
        // Two streams of 4096 frames each failed this way on real
        // hardware; 1024 worked (spec §6).
        Some(libc::ENOMEM) => io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "{p}: the driver could not allocate the stream's DMA ring: lower ring_size in \
                 [device.configfs] (two streams of 4096 frames each failed this way on real \
                 hardware, 1024 worked): {e}"
            ),
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{p}: permission denied (needs read and write access): {e}"),
        ),
        _ => io::Error::new(e.kind(), format!("{p}: {e}")),
    }
}

fn open_raw(path: &Path, nonblocking: bool) -> io::Result<DeviceFd> {
    let c = cpath(path)?;
    let mut flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOCTTY;
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    loop {
        // SAFETY: NUL-terminated path; the result is checked.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: a fresh descriptor we own.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            return DeviceFd::tbstream(owned);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(explain(path, e));
        }
    }
}

/// Opens the device, blocking until the peer is attached (as the driver
/// does), then switches the descriptor to non-blocking mode.
pub fn open(path: &Path) -> io::Result<DeviceFd> {
    open_raw(path, false)
}

/// Opens the device without waiting: `ENXIO` if the peer is not attached.
pub fn try_open(path: &Path) -> io::Result<DeviceFd> {
    open_raw(path, true)
}

/// Whether an open error means "peer not attached yet, try again".
fn no_peer_yet(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENXIO)
}

/// Opens the device, waiting up to `timeout` for the peer (`TimedOut` after).
/// Blocking; polls with [`try_open`] so that the wait is bounded.
pub fn open_timeout(path: &Path, timeout: Duration) -> io::Result<DeviceFd> {
    let deadline = Instant::now() + timeout;
    let mut pause = OPEN_RETRY_MIN;
    loop {
        match try_open(path) {
            Err(e) if no_peer_yet(&e) => {}
            r => return r,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(path));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(OPEN_RETRY_MAX);
    }
}

fn timed_out(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{}: timed out waiting for the peer host (cable unplugged, or the peer has not \
             created the stream?)",
            path.display()
        ),
    )
}

/// Opens the device on the current tokio runtime, waiting for the peer.
///
/// Each attempt is a non-blocking open run with `spawn_blocking`; while the
/// peer is absent (`ENXIO`) it retries with a growing pause (10 ms up to
/// 250 ms). Unlike one blocking `open(2)` parked in the blocking pool, this
/// can be cancelled (drop the future) and never keeps the runtime from
/// shutting down.
pub async fn open_async(path: &Path, timeout: Option<Duration>) -> io::Result<AsyncDevice> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut pause = OPEN_RETRY_MIN;
    loop {
        let p = path.to_owned();
        let attempt = tokio::task::spawn_blocking(move || try_open(&p))
            .await
            .map_err(|e| io::Error::other(format!("open task failed: {e}")))?;
        match attempt {
            Ok(fd) => return AsyncDevice::new(fd),
            Err(e) if no_peer_yet(&e) => {}
            Err(e) => return Err(e),
        }
        let wake = tokio::time::Instant::now() + pause;
        match deadline {
            Some(d) if d <= tokio::time::Instant::now() => return Err(timed_out(path)),
            Some(d) => tokio::time::sleep_until(wake.min(d)).await,
            None => tokio::time::sleep_until(wake).await,
        }
        pause = (pause * 2).min(OPEN_RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_explained() {
        let e = open(Path::new("/dev/tbstream-does-not-exist-4711")).expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let msg = e.to_string();
        assert!(
            msg.contains("configfs") || msg.contains("/sys/kernel/config"),
            "{msg}"
        );
        assert!(msg.contains("tbstream-does-not-exist-4711"), "{msg}");
    }

    #[test]
    fn einval_names_hopids_and_enxio_stays_raw() {
        let p = Path::new("/dev/tbstream0");
        let e = explain(p, io::Error::from_raw_os_error(libc::EINVAL));
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("HopIDs"), "{e}");
        let e = explain(p, io::Error::from_raw_os_error(libc::ENXIO));
        assert!(no_peer_yet(&e));
        assert!(crate::device::is_link_down(&e));
    }

    #[test]
    fn enomem_names_ring_size() {
        let e = explain(
            Path::new("/dev/tbstream1"),
            io::Error::from_raw_os_error(libc::ENOMEM),
        );
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
        let m = e.to_string();
        assert!(
            m.contains("ring_size") && m.contains("/dev/tbstream1"),
            "{m}"
        );
    }

    #[test]
    fn nul_in_path_is_rejected() {
        let e = try_open(Path::new("/dev/tb\0x")).expect_err("nul");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn opens_an_ordinary_file_nonblocking() -> io::Result<()> {
        // Any character device or file opens the same way; /dev/null stands
        // in for the driver here.
        let fd = try_open(Path::new("/dev/null"))?;
        assert!(!fd.is_emulated());
        assert_eq!(fd.write(b"abc")?, 3);
        assert_eq!(fd.read(&mut [0u8; 4])?, 0);
        Ok(())
    }

    #[tokio::test]
    async fn async_open_missing_fails_fast() {
        let e = open_async(Path::new("/nonexistent/tbstream9"), None)
            .await
            .expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}

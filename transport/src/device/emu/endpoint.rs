//! The client side of an emulated cable end: connecting, waiting for the
//! "attached" token, and the shared link word that tells an unplug apart
//! from a peer close.
//!
//! # Endpoint protocol
//! A client connects a Unix stream socket to its end (a socketpair handed to
//! the relay for the in-process cable, `ROOT/NAME/a|b` for the cross-process
//! one) and then waits for one token from the relay:
//!
//! * [`TOKEN_ATTACHED`] followed by the 8-byte little-endian plug *epoch*:
//!   the open completed; everything after it is the peer's data.
//! * [`TOKEN_BUSY`], then the relay closes: the end is already open (EBUSY).
//!
//! # Link word
//! A plain Unix socket cannot tell "the peer closed" (EOF, the driver's
//! CLOSE frame) from "the relay dropped us because the cable was unplugged"
//! (ENXIO). The relay therefore publishes one 64-bit word,
//! `epoch << 1 | plugged`, and bumps the epoch on every unplug **before** it
//! closes the client connections. A client remembers the epoch it attached
//! in; a different epoch means its connection died with an unplug. The word
//! lives in an `Arc<AtomicU64>` for the in-process cable and in a shared
//! memory mapping of `ROOT/NAME/state` for the cross-process one, so checking
//! it is one atomic load in both flavours and can be done on every read and
//! write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First byte of the "attached" token; 8 bytes of epoch follow.
pub(crate) const TOKEN_ATTACHED: u8 = b'A';
/// The one-byte "busy" token: the end is already open, the relay closes.
pub(crate) const TOKEN_BUSY: u8 = b'B';
/// Length of the attached token (tag + little-endian u64 epoch).
pub(crate) const TOKEN_LEN: usize = 9;
/// `SO_SNDBUF` asked for on both sides of every endpoint socket (the kernel
/// doubles it). Unix stream sockets charge queued data to the sender's send
/// buffer, so this bounds what sits in each socket outside the relay's ring.
/// Small, so that the ring (1 MiB by default) dominates what is in flight,
/// but not so small that the copy costs one wake-up per few KiB: 128 KiB
/// measured best for throughput here.
pub(crate) const SOCKET_BUFFER: usize = 128 * 1024;

/// Packs the link word: `epoch << 1 | plugged`.
pub(crate) fn encode_link(epoch: u64, plugged: bool) -> u64 {
    (epoch << 1) | u64::from(plugged)
}

/// Unpacks the link word into `(epoch, plugged)`.
pub(crate) fn decode_link(word: u64) -> (u64, bool) {
    (word >> 1, word & 1 == 1)
}

/// A read-only or read-write mapping of the 8-byte `state` file of a
/// cross-process cable.
#[derive(Debug)]
pub(crate) struct MappedWord {
    ptr: NonNull<AtomicU64>,
    writable: bool,
}

// SAFETY: the mapping is plain shared memory accessed only through an
// `AtomicU64`; it is unmapped once, in `Drop`.
unsafe impl Send for MappedWord {}
// SAFETY: as above; all access is atomic.
unsafe impl Sync for MappedWord {}

/// Size of the state file and of its mapping.
const STATE_LEN: usize = std::mem::size_of::<u64>();

impl MappedWord {
    /// Creates a new state file (it must not exist: a fresh inode, so that
    /// clients of an earlier server keep their own, final word) and maps it
    /// read-write.
    pub(crate) fn create(path: &Path, initial: u64) -> io::Result<MappedWord> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)?;
        file.set_len(STATE_LEN as u64)?;
        let word = Self::map(&file, true)?;
        word.word().store(initial, Ordering::Release);
        Ok(word)
    }

    /// Maps an existing state file read-only.
    pub(crate) fn open(path: &Path) -> io::Result<MappedWord> {
        let file = File::open(path)?;
        if file.metadata()?.len() < STATE_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not an emulated cable state file", path.display()),
            ));
        }
        Self::map(&file, false)
    }

    fn map(file: &File, writable: bool) -> io::Result<MappedWord> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: mapping a regular file of at least STATE_LEN bytes; the
        // result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STATE_LEN,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned a null pointer"))?;
        Ok(MappedWord { ptr, writable })
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page aligned, STATE_LEN long and lives
        // until `self` is dropped.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for MappedWord {
    fn drop(&mut self) {
        // SAFETY: unmapping the region mapped in `map`, exactly once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), STATE_LEN);
        }
    }
}

/// Where the link word lives (see the module docs).
#[derive(Debug, Clone)]
pub(crate) enum LinkWord {
    /// In-process cable: shared with the relay thread.
    Local(Arc<AtomicU64>),
    /// Cross-process cable: `ROOT/NAME/state`, mapped.
    Mapped(Arc<MappedWord>),
}

impl LinkWord {
    /// Current `epoch << 1 | plugged`.
    pub(crate) fn load(&self) -> u64 {
        match self {
            LinkWord::Local(w) => w.load(Ordering::Acquire),
            LinkWord::Mapped(m) => m.word().load(Ordering::Acquire),
        }
    }

    /// Publishes a new word (relay only).
    pub(crate) fn store(&self, word: u64) {
        match self {
            LinkWord::Local(w) => w.store(word, Ordering::Release),
            LinkWord::Mapped(m) => {
                debug_assert!(m.writable, "store through a read-only link word");
                if m.writable {
                    m.word().store(word, Ordering::Release);
                }
            }
        }
    }

    /// Whether a connection attached in `epoch` is still attached: false
    /// once the cable was unplugged (or the relay stopped) since.
    pub(crate) fn attached_in(&self, epoch: u64) -> bool {
        decode_link(self.load()).0 == epoch
    }
}

/// Sets the socket options every endpoint socket gets: non-blocking, small
/// send and receive buffers (see [`SOCKET_BUFFER`]).
pub(crate) fn configure_socket(sock: &UnixStream) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let s = socket2::SockRef::from(sock);
    s.set_send_buffer_size(SOCKET_BUFFER)?;
    s.set_recv_buffer_size(SOCKET_BUFFER)?;
    Ok(())
}

/// Incremental reader of the attached/busy token on a non-blocking socket.
/// Never reads past the token: the peer's data may follow at once.
#[derive(Debug, Default)]
pub(crate) struct TokenReader {
    buf: [u8; TOKEN_LEN],
    got: usize,
}

impl TokenReader {
    /// Reads what is available. `Ok(Some(epoch))` once attached, `Ok(None)`
    /// if more is needed (the socket would block), errors for busy, a
    /// closed connection or a bad token.
    pub(crate) fn advance(&mut self, sock: &UnixStream) -> io::Result<Option<u64>> {
        loop {
            if self.got > 0 && self.buf[0] == TOKEN_BUSY {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "emulated cable end is already open (the emulated cable allows one open \
                     per end at a time; the real driver allows several)",
                ));
            }
            if self.got > 0 && self.buf[0] != TOKEN_ATTACHED {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad token {:#04x} from the cable relay", self.buf[0]),
                ));
            }
            if self.got == TOKEN_LEN {
                let mut e = [0u8; 8];
                e.copy_from_slice(&self.buf[1..]);
                return Ok(Some(u64::from_le_bytes(e)));
            }
            let want = if self.got == 0 {
                1
            } else {
                TOKEN_LEN - self.got
            };
            let dst = &mut self.buf[self.got..self.got + want];
            // SAFETY: reading into a valid buffer of `want` bytes.
            let n =
                unsafe { libc::read(sock.as_fd().as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the emulated cable closed the connection during open (cable stopped)",
                ));
            }
            self.got += n as usize; // n > 0 checked above
        }
    }
}

/// The error an open gives when its deadline passes.
pub(crate) fn open_timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("timed out opening {what}: the peer never attached (cable unplugged?)"),
    )
}

/// Waits (blocking, with `poll`) for the token. `timeout` bounds the wait.
pub(crate) fn wait_attached_blocking(
    sock: &UnixStream,
    timeout: Option<Duration>,
    what: &str,
) -> io::Result<u64> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut reader = TokenReader::default();
    loop {
        if let Some(epoch) = reader.advance(sock)? {
            return Ok(epoch);
        }
        let wait_ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(open_timed_out(what));
                }
                // Round up so that we do not spin on a sub-millisecond rest.
                libc::c_int::try_from(left.as_millis().saturating_add(1))
                    .unwrap_or(libc::c_int::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Waits (async, through tokio's reactor) for the token. Cancel-safe in the
/// sense that dropping the future closes the half-open connection, which
/// frees the end at the relay.
pub(crate) async fn wait_attached_async(
    sock: UnixStream,
    timeout: Option<Duration>,
    what: &str,
) -> io::Result<(UnixStream, u64)> {
    // `with_interest` is deprecated in recent tokio in favour of an unsafe
    // `register_with_interest` (tokio >= 1.53); the workspace allows 1.40.
    // Its safety condition holds: the AsyncFd owns the socket and never
    // swaps its descriptor.
    #[allow(deprecated)]
    let afd = tokio::io::unix::AsyncFd::with_interest(sock, tokio::io::Interest::READABLE)?;
    let fut = async {
        let mut reader = TokenReader::default();
        loop {
            let mut guard = afd.readable().await?;
            match reader.advance(guard.get_inner())? {
                Some(epoch) => return Ok::<u64, io::Error>(epoch),
                None => guard.clear_ready(),
            }
        }
    };
    let epoch = match timeout {
        None => fut.await?,
        Some(t) => tokio::time::timeout(t, fut)
            .await
            .map_err(|_| open_timed_out(what))??,
    };
    Ok((afd.into_inner(), epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_word_roundtrip() {
        for (e, p) in [(0, false), (0, true), (7, true), (u64::MAX >> 1, false)] {
            assert_eq!(decode_link(encode_link(e, p)), (e, p));
        }
        let w = LinkWord::Local(Arc::new(AtomicU64::new(encode_link(3, true))));
        assert!(w.attached_in(3));
        w.store(encode_link(4, false));
        assert!(!w.attached_in(3));
    }

    #[test]
    fn mapped_word_shared() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state");
        let rw = LinkWord::Mapped(Arc::new(MappedWord::create(&path, encode_link(1, true))?));
        let ro = LinkWord::Mapped(Arc::new(MappedWord::open(&path)?));
        assert!(ro.attached_in(1));
        rw.store(encode_link(2, false));
        assert_eq!(decode_link(ro.load()), (2, false));
        // A second server must not reuse the inode.
        assert!(MappedWord::create(&path, 0).is_err());
        Ok(())
    }

    #[test]
    fn token_reader_handles_split_and_busy() -> io::Result<()> {
        use std::io::Write;
        let (mut relay, client) = UnixStream::pair()?;
        client.set_nonblocking(true)?;
        let mut r = TokenReader::default();
        assert_eq!(r.advance(&client)?, None);
        relay.write_all(&[TOKEN_ATTACHED, 5, 0, 0])?;
        assert_eq!(r.advance(&client)?, None);
        relay.write_all(&[0, 0, 0, 0, 0, b'x'])?;
        assert_eq!(r.advance(&client)?, Some(5));
        // The data byte after the token is left for the caller.
        let mut b = [0u8; 2];
        let n = io::Read::read(&mut &client, &mut b)?;
        assert_eq!(&b[..n], b"x");

        let (mut relay, client) = UnixStream::pair()?;
        client.set_nonblocking(true)?;
        relay.write_all(&[TOKEN_BUSY])?;
        drop(relay);
        let e = TokenReader::default()
            .advance(&client)
            .expect_err("busy must fail");
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        Ok(())
    }
}

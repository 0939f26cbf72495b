//! Unix `SOCK_SEQPACKET` sockets over tokio's `AsyncFd` (tokio has no type
//! for them): whole messages each way, sent from several parts without a
//! copy, received without truncation.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;

/// Bytes of a message received straight into a shared buffer (no copy):
/// a 64 KiB body and its header. A longer message's rest lands in a
/// scratch buffer and is copied out (large bodies pay one copy, small ones
/// none, and an idle connection holds no more than this).
pub const DIRECT_RECV: usize = (64 << 10) + crate::HEADER_LEN;

/// What one receive gave.
#[derive(Debug)]
pub enum Received {
    /// One whole message (mutable: a relay can rewrite its header in
    /// place before passing it on).
    Message(BytesMut),
    /// A message over the limit: discarded, but its first bytes (the
    /// header, when it had one) say whose it was.
    TooLarge {
        /// Its length.
        len: usize,
        /// Its first [`HEADER_LEN`](crate::HEADER_LEN) bytes, if it had as many.
        head: Option<[u8; crate::HEADER_LEN]>,
    },
    /// The other side closed (or shut down its sending direction).
    End,
}

/// A connected Unix `SOCK_SEQPACKET` socket.
#[derive(Debug)]
pub struct SeqPacket {
    fd: AsyncFd<OwnedFd>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all zeroes is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= a.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a usable socket path", path.display()),
        ));
    }
    for (d, s) in a.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((a, len as libc::socklen_t))
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` moves into the `AsyncFd` and stays open, the
    // same descriptor, for as long as the `AsyncFd` lives.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

impl SeqPacket {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> io::Result<SeqPacket> {
        let fd = socket()?;
        let (a, len) = sockaddr(path)?;
        // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
        let r =
            unsafe { libc::connect(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) };
        let s = SeqPacket { fd: register(fd)? };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) && e.raw_os_error() != Some(libc::EAGAIN)
            {
                return Err(e);
            }
            // A full backlog: wait until the connection is made.
            let _ = s.fd.writable().await?;
        }
        Ok(s)
    }

    /// Wraps a connected, non-blocking seqpacket socket.
    pub fn from_fd(fd: OwnedFd) -> io::Result<SeqPacket> {
        Ok(SeqPacket { fd: register(fd)? })
    }

    /// A connected pair (tests, benchmarks).
    pub fn pair() -> io::Result<(SeqPacket, SeqPacket)> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into `fds`.
        cvt(unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
                fds.as_mut_ptr(),
            )
        })?;
        // SAFETY: two new descriptors nobody else owns.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((SeqPacket::from_fd(a)?, SeqPacket::from_fd(b)?))
    }

    /// Sends the concatenation of `parts` as one message. A message larger
    /// than the socket's send buffer (Linux refuses those with `EMSGSIZE`;
    /// about 208 KiB by default) grows the buffer first: `SO_SNDBUF` up to
    /// `net.core.wmem_max`, `SO_SNDBUFFORCE` beyond when privileged.
    pub async fn send(&self, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut grown = false;
        loop {
            match self.send_once(parts).await {
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) && !grown => {
                    grown = true;
                    self.grow_send_buffer(len);
                }
                r => return r,
            }
        }
    }

    fn grow_send_buffer(&self, len: usize) {
        // The kernel doubles the value and keeps some for its bookkeeping.
        let want = libc::c_int::try_from(len.saturating_add(64 << 10)).unwrap_or(libc::c_int::MAX);
        let fd = self.fd.get_ref().as_raw_fd();
        for opt in [libc::SO_SNDBUF, libc::SO_SNDBUFFORCE] {
            // SAFETY: setsockopt with a c_int option value we own.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&want as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
    }

    async fn send_once(&self, parts: &[&[u8]]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            let r = guard.try_io(|fd| {
                let iov: Vec<libc::iovec> = parts
                    .iter()
                    .map(|p| libc::iovec {
                        iov_base: p.as_ptr() as *mut libc::c_void,
                        iov_len: p.len(),
                    })
                    .collect();
                // SAFETY: msghdr is plain old data; zeroes are valid.
                let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
                m.msg_iov = iov.as_ptr() as *mut libc::iovec;
                m.msg_iovlen = iov.len() as _;
                // SAFETY: the iovecs point into `parts`, alive for this
                // call; MSG_NOSIGNAL: a closed peer gives EPIPE.
                let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &m, libc::MSG_NOSIGNAL) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match r {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one message of at most `max` bytes. `buf` is the caller's
    /// receive buffer (the message is split off it, no copy, when it fits
    /// [`DIRECT_RECV`]); `scratch` takes the rest of a longer one.
    pub async fn recv(
        &self,
        buf: &mut BytesMut,
        scratch: &mut Vec<u8>,
        max: usize,
    ) -> io::Result<Received> {
        let direct = max.min(DIRECT_RECV);
        buf.reserve(direct);
        let over = max - direct;
        if scratch.len() < over {
            // Only a service whose messages exceed DIRECT_RECV pays for it.
            scratch.resize(over, 0);
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
                let iov = [
                    libc::iovec {
                        iov_base: spare.as_mut_ptr().cast(),
                        iov_len: direct,
                    },
                    libc::iovec {
                        iov_base: scratch.as_mut_ptr().cast(),
                        iov_len: over,
                    },
                ];
                // SAFETY: msghdr is plain old data; zeroes are valid.
                let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
                m.msg_iov = iov.as_ptr() as *mut libc::iovec;
                m.msg_iovlen = if over > 0 { 2 } else { 1 };
                // SAFETY: the iovecs cover writable memory of their lengths
                // (the spare capacity holds at least `direct` bytes after
                // the reserve; scratch holds `over`). MSG_TRUNC: the real
                // length comes back even when the message is longer.
                let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut m, libc::MSG_TRUNC) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let n = match r {
                Ok(r) => r?,
                Err(_would_block) => continue,
            };
            if n == 0 {
                // A zero-length seqpacket is end of file: the protocol's
                // messages always carry a header, so nothing is lost.
                return Ok(Received::End);
            }
            if n > max {
                let head = (direct >= crate::HEADER_LEN).then(|| {
                    let mut h = [0u8; crate::HEADER_LEN];
                    for (d, s) in h.iter_mut().zip(buf.spare_capacity_mut().iter()) {
                        // SAFETY: the kernel wrote at least `direct` bytes
                        // (the message is longer than that).
                        *d = unsafe { s.assume_init() };
                    }
                    h
                });
                return Ok(Received::TooLarge { len: n, head });
            }
            let first = n.min(direct);
            // SAFETY: the kernel wrote `first` bytes into the spare capacity.
            unsafe { buf.set_len(buf.len() + first) };
            let mut msg = buf.split_to(buf.len());
            if n > direct {
                msg.extend_from_slice(&scratch[..n - direct]);
            }
            return Ok(Received::Message(msg));
        }
    }

    /// Shuts down both directions (the other side reads the end).
    pub fn shutdown(&self) {
        // SAFETY: shutdown(2) on a descriptor we own.
        unsafe { libc::shutdown(self.fd.get_ref().as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// A listening seqpacket socket; its file is removed when it drops.
#[derive(Debug)]
pub struct SeqPacketListener {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
}

impl SeqPacketListener {
    /// Binds `path` (a stale socket file left by a dead daemon is
    /// replaced; a live one is not) with file mode `mode`.
    pub fn bind(path: &Path, mode: u32) -> io::Result<SeqPacketListener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() && connect_blocking(path).is_err() {
                std::fs::remove_file(path)?;
            }
        }
        let fd = socket()?;
        let (a, len) = sockaddr(path)?;
        // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
        cvt(unsafe { libc::bind(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        // SAFETY: listen(2) on a socket we own.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 1024) })?;
        // Registered only once listening: epoll reports a socket that is
        // neither connected nor listening as hung up, and tokio keeps a
        // hang-up as readiness for good, so `accept` would spin on EAGAIN.
        Ok(SeqPacketListener {
            fd: register(fd)?,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<SeqPacket> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: accept4 on a listening socket we own; no address.
                let r = unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    )
                };
                cvt(r)
            });
            match r {
                // SAFETY: a new descriptor nobody else owns.
                Ok(r) => return SeqPacket::from_fd(unsafe { OwnedFd::from_raw_fd(r?) }),
                Err(_would_block) => continue,
            }
        }
    }
}

/// A blocking connect probe (is a daemon behind this socket file?).
fn connect_blocking(path: &Path) -> io::Result<()> {
    // SAFETY: plain socket(2); the result is checked.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (a, len) = sockaddr(path)?;
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
    cvt(unsafe { libc::connect(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) })
        .map(drop)
}

impl Drop for SeqPacketListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_arrive_as_one_message_and_oversize_is_named() {
        let (a, b) = SeqPacket::pair().expect("pair");
        let mut buf = BytesMut::new();
        let mut scratch = Vec::new();
        a.send(&[b"head", b"", b"tail"]).await.expect("send");
        match b.recv(&mut buf, &mut scratch, 100).await.expect("recv") {
            Received::Message(m) => assert_eq!(&m[..], b"headtail"),
            other => panic!("{other:?}"),
        }
        let big = vec![7u8; 200 << 10];
        a.send(&[&big]).await.expect("send big");
        match b
            .recv(&mut buf, &mut scratch, 300 << 10)
            .await
            .expect("recv")
        {
            Received::Message(m) => assert_eq!(&m[..], &big[..]),
            other => panic!("{other:?}"),
        }
        a.send(&[&big]).await.expect("send big");
        match b.recv(&mut buf, &mut scratch, 1000).await.expect("recv") {
            Received::TooLarge { len, head } => {
                assert_eq!(len, 200 << 10);
                assert_eq!(head, Some([7u8; 8]));
            }
            other => panic!("{other:?}"),
        }
        drop(a);
        assert!(matches!(
            b.recv(&mut buf, &mut scratch, 100).await.expect("recv"),
            Received::End
        ));
    }
}

//! Listening and connecting for every endpoint kind, with the socket
//! options a proxy needs (socket2): `TCP_NODELAY` (a proxy must not add
//! Nagle delays to what the client already sent), keepalive (a dead peer
//! of a long-idle connection is noticed), address reuse for listeners.
//! Unix `SOCK_SEQPACKET`, which tokio has no type for, is [`SeqPacket`]
//! over `AsyncFd`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use socket2::{Domain, SockAddr, SockRef, Socket, TcpKeepalive, Type};
use tbbridge_config::{Endpoint, HostPort, UnixAddr};
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

/// Listen backlog: connection bursts of a busy proxy (200+ at once).
const BACKLOG: i32 = 1024;
/// TCP keepalive: first probe after this idle time.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix stream socket.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Removed with it.
        _file: SocketFile,
    },
    /// A Unix seqpacket socket.
    SeqPacket {
        /// The socket.
        fd: AsyncFd<OwnedFd>,
        /// Removed with it.
        _file: SocketFile,
    },
    /// UDP (flows, not connections: see `udp`).
    Udp(UdpSocket),
}

/// The file of a listening Unix socket, removed when the listener goes
/// (`None` for an abstract name: nothing in the file system).
#[derive(Debug)]
pub struct SocketFile(Option<PathBuf>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Registers a descriptor with the reactor.
fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` moves into the `AsyncFd` and stays open, the
    // same descriptor, for as long as the `AsyncFd` lives.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// One accepted or connected connection.
#[derive(Debug)]
pub enum Conn {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix stream socket.
    Unix(UnixStream),
    /// A Unix seqpacket socket.
    SeqPacket(SeqPacket),
}

fn unix_sockaddr(a: &UnixAddr) -> io::Result<SockAddr> {
    match a {
        UnixAddr::Path(p) => SockAddr::unix(p),
        UnixAddr::Abstract(name) => {
            // Linux's abstract namespace: a leading NUL byte.
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(name.as_bytes());
            SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))
        }
    }
}

fn unix_socket(ty: Type, a: &UnixAddr) -> io::Result<(Socket, SocketFile)> {
    let s = Socket::new(Domain::UNIX, ty.nonblocking().cloexec(), None)?;
    let path = match a {
        UnixAddr::Path(p) => {
            remove_stale_socket(p)?;
            Some(p.clone())
        }
        UnixAddr::Abstract(_) => None,
    };
    s.bind(&unix_sockaddr(a)?)?;
    s.listen(BACKLOG)?;
    Ok((s, SocketFile(path)))
}

/// A socket file left by a daemon that died is removed; a live one (its
/// owner still answers) or a non-socket file is left alone (bind then
/// fails with `AddrInUse`, which says what to fix).
fn remove_stale_socket(p: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Ok(());
    }
    match std::os::unix::net::UnixStream::connect(p) {
        Ok(_) => Ok(()),
        Err(_) => std::fs::remove_file(p),
    }
}

/// Binds a listening socket for `ep` (an address, never a name: the
/// config checks).
pub fn bind(ep: &Endpoint) -> io::Result<Listener> {
    match ep {
        Endpoint::Tcp(HostPort::Addr(a)) => {
            let s = Socket::new(
                Domain::for_address(*a),
                Type::STREAM.nonblocking().cloexec(),
                None,
            )?;
            s.set_reuse_address(true)?;
            if a.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.bind(&(*a).into())?;
            s.listen(BACKLOG)?;
            Ok(Listener::Tcp(TcpListener::from_std(s.into())?))
        }
        Endpoint::Udp(HostPort::Addr(a)) => {
            let s = Socket::new(
                Domain::for_address(*a),
                Type::DGRAM.nonblocking().cloexec(),
                None,
            )?;
            if a.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.bind(&(*a).into())?;
            Ok(Listener::Udp(UdpSocket::from_std(s.into())?))
        }
        Endpoint::Unix(a) => {
            let (s, file) = unix_socket(Type::STREAM, a)?;
            let std: std::os::unix::net::UnixListener = OwnedFd::from(s).into();
            Ok(Listener::Unix {
                listener: UnixListener::from_std(std)?,
                _file: file,
            })
        }
        Endpoint::SeqPacket(a) => {
            let (s, file) = unix_socket(Type::SEQPACKET, a)?;
            Ok(Listener::SeqPacket {
                fd: async_fd(OwnedFd::from(s))?,
                _file: file,
            })
        }
        Endpoint::Tcp(HostPort::Name { .. }) | Endpoint::Udp(HostPort::Name { .. }) => {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a listener needs an IP address, not a host name",
            ))
        }
    }
}

/// Socket options of a proxied TCP connection.
fn tune_tcp(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let ka = TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    let _ = SockRef::from(s).set_tcp_keepalive(&ka);
}

impl Listener {
    /// The next connection (stream listeners only).
    pub async fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                tune_tcp(&s);
                Ok(Conn::Tcp(s))
            }
            Listener::Unix { listener, .. } => Ok(Conn::Unix(listener.accept().await?.0)),
            Listener::SeqPacket { fd, .. } => loop {
                let mut guard = fd.readable().await?;
                match guard.try_io(|fd| {
                    // SAFETY: accept4 on a listening socket we own; no
                    // address is asked for.
                    let r = unsafe {
                        libc::accept4(
                            fd.as_raw_fd(),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if r < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        // SAFETY: a new descriptor that nothing else owns.
                        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r) })
                    }
                }) {
                    Ok(r) => return Ok(Conn::SeqPacket(SeqPacket::new(r?)?)),
                    Err(_would_block) => continue,
                }
            },
            Listener::Udp(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "UDP has flows, not connections",
            )),
        }
    }
}

/// Connects to `ep` (stream and seqpacket kinds), within `timeout`.
/// `TimedOut` when the target did not accept in time.
pub async fn connect(ep: &Endpoint, timeout: Duration) -> io::Result<Conn> {
    let fut = async {
        match ep {
            Endpoint::Tcp(HostPort::Addr(a)) => {
                let s = TcpStream::connect(a).await?;
                tune_tcp(&s);
                Ok(Conn::Tcp(s))
            }
            Endpoint::Tcp(HostPort::Name { host, port }) => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                tune_tcp(&s);
                Ok(Conn::Tcp(s))
            }
            Endpoint::Unix(a) => {
                let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
                s.connect(&unix_sockaddr(a)?)?;
                s.set_nonblocking(true)?;
                let std: std::os::unix::net::UnixStream = OwnedFd::from(s).into();
                Ok(Conn::Unix(UnixStream::from_std(std)?))
            }
            Endpoint::SeqPacket(a) => {
                let s = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None)?;
                s.connect(&unix_sockaddr(a)?)?;
                s.set_nonblocking(true)?;
                Ok(Conn::SeqPacket(SeqPacket::new(OwnedFd::from(s))?))
            }
            Endpoint::Udp(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "UDP has flows, not connections",
            )),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{ep} did not accept within {timeout:?}"),
        )),
    }
}

/// A connected Unix `SOCK_SEQPACKET` socket: whole messages each way.
#[derive(Debug)]
pub struct SeqPacket {
    fd: AsyncFd<OwnedFd>,
}

impl SeqPacket {
    /// Wraps a connected, non-blocking seqpacket socket.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self { fd: async_fd(fd)? })
    }

    /// Receives one message into `buf`. `Ok(None)` at the end (the peer
    /// shut down or closed); `InvalidData` for a message larger than `buf`
    /// (it is discarded, never truncated silently).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: `buf` is valid for writes of its length; MSG_TRUNC
                // makes the call return the message's real length.
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_TRUNC,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) if n > buf.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "a message of {n} bytes is larger than the {} allowed",
                            buf.len()
                        ),
                    ))
                }
                Ok(Ok(n)) => return Ok(Some(n)),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one message, whole.
    pub async fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: `msg` is valid for reads of its length;
                // MSG_NOSIGNAL: a closed peer gives EPIPE, not SIGPIPE.
                let n = unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        msg.as_ptr().cast(),
                        msg.len(),
                        libc::MSG_NOSIGNAL,
                    )
                };
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

    /// Shuts down our sending direction (the peer reads the end).
    pub fn shutdown_write(&self) -> io::Result<()> {
        SockRef::from(self.fd.get_ref()).shutdown(std::net::Shutdown::Write)
    }
}

/// Closes a TCP connection with a reset (`SO_LINGER` 0), as a peer that
/// vanished would: the client learns at once that the other end is gone.
pub fn reset_tcp(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

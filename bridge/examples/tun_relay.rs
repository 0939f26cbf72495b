//! The plain baseline `scripts/compare-nic` measures tbbridge against: a
//! TUN relay with tun-rs offloads over a unix SEQPACKET socket, in the
//! simplest form that works. Two blocking threads per side (TUN -> socket,
//! socket -> TUN), one packet per syscall, the virtio-net header passed
//! through untouched (so TSO/USO superpackets cross whole), no queue of its
//! own, no checks, no recovery. It shows what the four copies of a
//! user-space NIC (TUN read, socket write, socket read, TUN write) cost on
//! this machine, and so what tbbridge must at least match.
//!
//! ```text
//! tun_relay listen  SOCKET NAME ADDR/PREFIX MTU   # one side (creates SOCKET)
//! tun_relay connect SOCKET NAME ADDR/PREFIX MTU   # the other
//! ```
//!
//! Run it inside the network namespace the interface belongs in (`ip netns
//! exec`). It runs until killed.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tun_rs::{DeviceBuilder, SyncDevice};

/// One record: the virtio-net header (10 bytes) and an IP packet of at most
/// 65535 + 40 bytes.
const MAX_RECORD: usize = 10 + 40 + 65535;

fn main() {
    if let Err(e) = run() {
        eprintln!("tun_relay: {e}");
        std::process::exit(1);
    }
}

fn usage() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "usage: tun_relay listen|connect SOCKET NAME ADDR/PREFIX MTU",
    )
}

fn run() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, sock, name, addr, mtu] = &args[..] else {
        return Err(usage());
    };
    let (ip, prefix) = addr.split_once('/').ok_or_else(usage)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| usage())?;
    let prefix: u8 = prefix.parse().map_err(|_| usage())?;
    let mtu: u16 = mtu.parse().map_err(|_| usage())?;
    let dev = DeviceBuilder::new()
        .name(name)
        .ipv4(ip, prefix, None)
        .mtu(mtu)
        .offload(true)
        .build_sync()?;
    if !dev.tcp_gso() {
        eprintln!("tun_relay: the kernel refused offloads; running without");
    }
    let fd = match mode.as_str() {
        "listen" => listen(sock)?,
        "connect" => connect(sock)?,
        _ => return Err(usage()),
    };
    let dev = Arc::new(dev);
    let fd = Arc::new(fd);
    let (d, f) = (dev.clone(), fd.clone());
    let up = std::thread::spawn(move || tun_to_socket(&d, f.as_raw_fd()));
    let r = socket_to_tun(&dev, fd.as_raw_fd());
    let _ = up.join();
    r
}

/// TUN -> socket: one read, one send per packet.
fn tun_to_socket(dev: &SyncDevice, fd: RawFd) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_RECORD];
    loop {
        let n = dev.recv(&mut buf)?;
        // SAFETY: sending n initialised bytes of our buffer.
        let r = unsafe { libc::send(fd, buf.as_ptr().cast(), n, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Socket -> TUN: one receive, one write per packet.
fn socket_to_tun(dev: &SyncDevice, fd: RawFd) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_RECORD];
    loop {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        // The kernel may refuse a packet (interface down): a NIC drops it.
        let _ = dev.send(&buf[..n as usize]);
    }
}

fn sockaddr(path: &str) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.as_bytes();
    if b.len() >= a.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok((
        a,
        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
    ))
}

fn seqpacket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own. The socket buffers stay
    // the kernel's defaults, as a plain relay has them.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(fd)
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn listen(path: &str) -> io::Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let l = seqpacket()?;
    let (a, len) = sockaddr(path)?;
    // SAFETY: a valid sockaddr_un of length len.
    check(unsafe { libc::bind(l.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) })?;
    // SAFETY: plain listen(2) on our socket.
    check(unsafe { libc::listen(l.as_raw_fd(), 1) })?;
    // SAFETY: accept(2) without an address.
    let c = unsafe { libc::accept(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
    if c < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(c) })
}

fn connect(path: &str) -> io::Result<OwnedFd> {
    let s = seqpacket()?;
    let (a, len) = sockaddr(path)?;
    // SAFETY: a valid sockaddr_un of length len.
    check(unsafe { libc::connect(s.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) })?;
    Ok(s)
}

//! Routes over rtnetlink (`RTM_NEWROUTE`), in the network namespace of the
//! calling thread. tun-rs sets addresses and the MTU but has no routes, and
//! running `ip route` would depend on a binary being installed.

use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDR_LEN: usize = 16;
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// `addr` with the bits past `prefix` cleared (the kernel refuses a route
/// destination with host bits set).
pub fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

fn push_attr(msg: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(data);
    while msg.len() % 4 != 0 {
        msg.push(0);
    }
}

/// Adds (or replaces) the route `dst/prefix` through interface `if_index`,
/// without a gateway (the interface is point-to-point).
pub fn add_route(if_index: u32, dst: IpAddr, prefix: u8) -> io::Result<()> {
    let dst = network(dst, prefix);
    let (family, scope, addr): (u8, u8, Vec<u8>) = match dst {
        IpAddr::V4(a) => (libc::AF_INET as u8, RT_SCOPE_LINK, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, RT_SCOPE_UNIVERSE, a.octets().to_vec()),
    };
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(&[0u8; NLMSG_HDR_LEN]);
    msg.extend_from_slice(&[
        family,
        prefix,
        0, // src_len
        0, // tos
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        scope,
        RTN_UNICAST,
    ]);
    msg.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
    debug_assert_eq!(msg.len(), NLMSG_HDR_LEN + RTMSG_LEN);
    if prefix > 0 {
        push_attr(&mut msg, RTA_DST, &addr);
    }
    push_attr(&mut msg, RTA_OIF, &if_index.to_ne_bytes());
    let len = msg.len() as u32;
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes()); // seq
    request(&msg)
}

/// Sends one request and waits for its acknowledgement.
fn request(msg: &[u8]) -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zero is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: msg and sa are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const sa).cast(),
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= NLMSG_HDR_LEN {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < NLMSG_HDR_LEN || len > rest.len() {
                return Err(io::Error::other("truncated netlink reply"));
            }
            if kind == libc::NLMSG_ERROR as u16 {
                if len < NLMSG_HDR_LEN + 4 {
                    return Err(io::Error::other("truncated netlink error"));
                }
                let b = &rest[NLMSG_HDR_LEN..NLMSG_HDR_LEN + 4];
                let err = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                return if err == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-err))
                };
            }
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_host_bits() {
        let a: IpAddr = "198.19.0.7".parse().expect("ip");
        assert_eq!(network(a, 30), "198.19.0.4".parse::<IpAddr>().expect("ip"));
        assert_eq!(network(a, 0), "0.0.0.0".parse::<IpAddr>().expect("ip"));
        assert_eq!(network(a, 32), a);
        let b: IpAddr = "fd00::1234".parse().expect("ip");
        assert_eq!(network(b, 64), "fd00::".parse::<IpAddr>().expect("ip"));
    }
}

//! Creating and configuring the TUN interface, and the raw I/O on its
//! queues.

use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use anyhow::{bail, Context};
use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tun_rs::{DeviceBuilder, SyncDevice};

use super::netlink;

/// Default MTU: large packets are what make a Thunderbolt link fast (an MTU
/// of 1500 costs about 3× in throughput), and 65520 leaves room for the
/// headers under the 64 KiB an IPv4 packet can be.
pub const DEFAULT_MTU: u32 = 65520;
/// Most queues a multi-queue interface may have here.
pub const MAX_QUEUES: usize = 64;

/// How to set up the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunOptions {
    /// Interface name (at most 15 bytes), e.g. `tb0`.
    pub name: String,
    /// Addresses with their prefix lengths, IPv4 and IPv6.
    pub addresses: Vec<(IpAddr, u8)>,
    /// MTU (68..=65535); default [`DEFAULT_MTU`].
    pub mtu: u32,
    /// Extra routes through the interface (destination, prefix length).
    pub routes: Vec<(IpAddr, u8)>,
    /// Ask the kernel for virtio-net offloads (checksum, TSO, USO); falls
    /// back to plain packets when it refuses.
    pub offload: bool,
    /// Queues (one reader task each); more than one needs `IFF_MULTI_QUEUE`
    /// and falls back to one when refused.
    pub queues: usize,
}

impl Default for TunOptions {
    fn default() -> Self {
        Self {
            name: "tb0".into(),
            addresses: Vec::new(),
            mtu: DEFAULT_MTU,
            routes: Vec::new(),
            offload: true,
            queues: 1,
        }
    }
}

impl TunOptions {
    /// Options for interface `name`, defaults otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Refuses values the kernel would refuse, with a message that says
    /// which.
    pub fn validate(&self) -> anyhow::Result<()> {
        let n = self.name.as_bytes();
        if n.is_empty() || n.len() > 15 {
            bail!("interface name {:?}: 1 to 15 bytes allowed", self.name);
        }
        if n.iter()
            .any(|&b| b == b'/' || b == b':' || b <= b' ' || b == 0x7f)
            || n == b"."
            || n == b".."
        {
            bail!(
                "interface name {:?}: no '/', ':', spaces or control characters",
                self.name
            );
        }
        if !(68..=65535).contains(&self.mtu) {
            bail!("mtu {}: 68..=65535 allowed", self.mtu);
        }
        if self.queues == 0 || self.queues > MAX_QUEUES {
            bail!("queues {}: 1..={MAX_QUEUES} allowed", self.queues);
        }
        for (what, list) in [("address", &self.addresses), ("route", &self.routes)] {
            for (ip, prefix) in list {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if *prefix > max {
                    bail!("{what} {ip}/{prefix}: prefix length 0..={max} allowed");
                }
            }
        }
        if self.addresses.iter().any(|(ip, _)| ip.is_ipv6()) && self.mtu < 1280 {
            bail!("mtu {}: IPv6 needs at least 1280", self.mtu);
        }
        Ok(())
    }
}

/// A configured TUN interface, not yet running. Created synchronously in
/// the network namespace of the calling thread (a thread that `setns`'d
/// into a namespace creates it there); [`run`](super::run) moves its
/// packets. Dropping it removes the interface.
pub struct TunDevice {
    queues: Vec<SyncDevice>,
    name: String,
    if_index: u32,
    vnet_hdr: bool,
    udp_gso: bool,
    mtu: u32,
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .field("if_index", &self.if_index)
            .field("queues", &self.queues.len())
            .field("offload", &self.vnet_hdr)
            .field("udp_offload", &self.udp_gso)
            .field("mtu", &self.mtu)
            .finish()
    }
}

fn build(name: &str, offload: bool, multi_queue: bool) -> io::Result<SyncDevice> {
    DeviceBuilder::new()
        .name(name)
        .offload(offload)
        .multi_queue(multi_queue)
        .build_sync()
}

impl TunDevice {
    /// Creates the interface: offloads and queues as asked (or fewer when
    /// the kernel refuses), carrier off, MTU, addresses, up, routes.
    pub fn create(opts: &TunOptions) -> anyhow::Result<TunDevice> {
        opts.validate()?;
        // The records carry the virtio header little-endian; a big-endian
        // host would have to convert it, so it goes without offloads.
        let offload = opts.offload && cfg!(target_endian = "little");
        let multi = opts.queues > 1;
        let mut tries = vec![(offload, multi)];
        if offload {
            tries.push((false, multi));
        }
        if multi {
            tries.push((offload, false));
            if offload {
                tries.push((false, false));
            }
        }
        let mut first_err = None;
        let mut dev = None;
        for &(o, m) in &tries {
            match build(&opts.name, o, m) {
                Ok(d) => {
                    dev = Some((d, m));
                    break;
                }
                Err(e) => {
                    tracing::info!(
                        offload = o,
                        multi_queue = m,
                        "creating {} refused: {e}",
                        opts.name
                    );
                    first_err.get_or_insert(e);
                }
            }
        }
        let Some((first, multi)) = dev else {
            let e = first_err.unwrap_or_else(|| io::Error::other("no attempt"));
            return Err(e).with_context(|| format!("creating TUN interface {}", opts.name));
        };
        let vnet_hdr = first.tcp_gso();
        let udp_gso = first.udp_gso();
        if opts.offload && !vnet_hdr {
            tracing::info!(
                "{}: running without offloads (the kernel refused them)",
                opts.name
            );
        } else if vnet_hdr && !udp_gso {
            tracing::info!(
                "{}: TCP offloads on, UDP segmentation offload refused",
                opts.name
            );
        }
        let mut queues = vec![first];
        if multi {
            while queues.len() < opts.queues {
                match queues[0].try_clone() {
                    Ok(q) => queues.push(q),
                    Err(e) => {
                        tracing::info!("{}: only {} queues ({e})", opts.name, queues.len());
                        break;
                    }
                }
            }
        }
        let dev = &queues[0];
        let name = dev.name().context("reading the interface name")?;
        // Down until the bridge's link is up.
        if let Err(e) = set_carrier(dev.as_raw_fd(), false) {
            tracing::warn!("{name}: cannot set the carrier (TUNSETCARRIER, Linux >= 5.0): {e}");
        }
        dev.set_mtu(opts.mtu as u16)
            .with_context(|| format!("setting mtu {} on {name}", opts.mtu))?;
        for &(ip, prefix) in &opts.addresses {
            match ip {
                IpAddr::V4(a) => dev.add_address_v4(a, prefix),
                IpAddr::V6(a) => dev.add_address_v6(a, prefix),
            }
            .with_context(|| format!("adding address {ip}/{prefix} to {name}"))?;
        }
        dev.enabled(true)
            .with_context(|| format!("bringing {name} up"))?;
        let if_index = dev.if_index().with_context(|| format!("index of {name}"))?;
        for &(ip, prefix) in &opts.routes {
            netlink::add_route(if_index, ip, prefix)
                .with_context(|| format!("adding route {ip}/{prefix} dev {name}"))?;
        }
        for q in &queues {
            q.set_nonblocking(true)
                .with_context(|| format!("{name}: non-blocking mode"))?;
        }
        tracing::info!(
            offload = vnet_hdr,
            udp_offload = udp_gso,
            queues = queues.len(),
            mtu = opts.mtu,
            "{name} created"
        );
        Ok(TunDevice {
            queues,
            name,
            if_index,
            vnet_hdr,
            udp_gso,
            mtu: opts.mtu,
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index (in its namespace).
    pub fn if_index(&self) -> u32 {
        self.if_index
    }

    /// Offloads are on: packets carry a virtio-net header and may be TSO
    /// superpackets with partial checksums.
    pub fn offload(&self) -> bool {
        self.vnet_hdr
    }

    /// UDP segmentation offload (USO) is on as well.
    pub fn udp_offload(&self) -> bool {
        self.udp_gso
    }

    /// Number of queues.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// The MTU set.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Sets the carrier (`TUNSETCARRIER`). Works from any thread: it acts on
    /// the device's file descriptor, not on a name in a namespace.
    pub fn set_carrier(&self, on: bool) -> io::Result<()> {
        set_carrier(self.queues[0].as_raw_fd(), on)
    }

    /// The queues, registered with the current tokio runtime.
    pub(crate) fn into_queues(self) -> io::Result<Vec<Queue>> {
        self.queues
            .into_iter()
            .map(|d| {
                // SAFETY: the SyncDevice owns its descriptor until it is
                // dropped with the AsyncFd, and always returns that one.
                let fd = unsafe { AsyncFd::register(d) }.map_err(io::Error::from)?;
                Ok(Queue { fd })
            })
            .collect()
    }
}

/// `TUNSETCARRIER` on a TUN file descriptor.
pub(crate) fn set_carrier(fd: RawFd, on: bool) -> io::Result<()> {
    let v: libc::c_int = on.into();
    // SAFETY: TUNSETCARRIER reads one int from the pointer, which is valid.
    let r = unsafe { libc::ioctl(fd, libc::TUNSETCARRIER, &v as *const libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One queue of the interface, non-blocking, on the tokio reactor.
pub(crate) struct Queue {
    fd: AsyncFd<SyncDevice>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue(fd {})", self.raw_fd())
    }
}

impl Queue {
    pub fn raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Reads one packet into the spare capacity of `buf` (at most `max`
    /// bytes; `buf` must have that much room) and extends `buf` by it;
    /// `Pending` (with the task registered for readiness) when no packet is
    /// there.
    pub fn poll_read_into(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> std::task::Poll<io::Result<usize>> {
        use std::task::Poll;
        debug_assert!(buf.capacity() - buf.len() >= max);
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            match guard.try_io(|fd| read_spare(fd.get_ref().as_raw_fd(), buf, max)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    /// One read attempt whatever the runtime believes of the descriptor's
    /// readiness (`None`: nothing there). Right after a write to the
    /// interface the kernel has often answered within that write (an echo
    /// reply, a TCP ACK): this takes the answer without a round through the
    /// reactor, which has not seen it yet.
    pub fn read_now(&self, buf: &mut BytesMut, max: usize) -> io::Result<Option<usize>> {
        loop {
            match read_spare(self.raw_fd(), buf, max) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes one packet given as slices (one `writev`) without waiting:
    /// a TUN descriptor takes every write at once (its socket buffer is
    /// unlimited), so `WouldBlock` here means the kernel refused it.
    pub fn try_write(&self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match writev(self.raw_fd(), iov) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

/// One `read` into the spare capacity of `buf` (at most `max` bytes),
/// which grows by what was read.
fn read_spare(fd: RawFd, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let want = max.min(spare.len());
    // SAFETY: the kernel writes at most `want` bytes into the spare
    // capacity, which is valid for that many.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the read initialised these n bytes.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

fn writev(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: IoSlice is ABI-compatible with iovec and the slices are valid
    // for reading.
    let n = unsafe { libc::writev(fd, iov.as_ptr().cast(), iov.len() as libc::c_int) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

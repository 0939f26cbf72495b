//! The TUN front-end: a virtual network interface whose IP packets cross
//! the cable as datagram records.
//!
//! * [`TunDevice::create`] makes the interface (tun-rs) in the network
//!   namespace of the calling thread: virtio-net offloads (checksum, TSO,
//!   USO) and several queues when asked and the kernel agrees, carrier off,
//!   MTU (default 65520), addresses, up, routes (rtnetlink).
//! * [`run`] moves packets until the bridge closes. Each side opens its own
//!   datagram channel per queue to the peer's `tun` service for sending, and
//!   accepts the peer's channels for receiving (accepted channel *k* writes
//!   to queue *k* mod *n*). A channel reset by a peer restart is reopened by
//!   itself; the carrier follows the bridge's link (`TUNSETCARRIER`), so a
//!   pulled cable or a rebooting peer shows as `NO-CARRIER` and comes back
//!   without anyone re-running anything.
//!
//! # Data path
//!
//! One record per packet (format in [`packet`]): with offloads a TSO/USO
//! superpacket of up to 64 KiB stays one record, its virtio header travels
//! with it and the far kernel gets the GSO and partial-checksum metadata
//! back, so forwarded traffic keeps working and neither side segments or
//! checksums anything. Reads go straight into the spare capacity of a large
//! [`BytesMut`] block and are split off as [`Bytes`](bytes::Bytes) without
//! copying; the session references them until they are written to the
//! cable. Received records are written to the interface with one `writev`
//! straight from the session's receive buffer. Nothing is copied in user
//! space on either side (except in the software fallback for a side without
//! offloads).
//!
//! Packets are checked with etherparse in both directions and dropped,
//! counted by reason in [`TunStats`], when they fail; packets arriving while
//! the link is down are dropped and counted, not queued.

mod device;
mod netlink;
pub mod packet;
mod stats;

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use tbbridge_transport::pump::{Bridge, Channel};
use tbbridge_transport::{ChannelKind, Class};
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::device::{set_carrier, Queue};
pub use self::device::{TunDevice, TunOptions, DEFAULT_MTU, MAX_QUEUES};
use self::packet::{Plain, Reject, MAX_RECORD, VNET_HDR_LEN};
use self::stats::{add, inc};
pub use self::stats::{TunCounters, TunStats};

/// The service name both sides listen on.
pub const SERVICE: &str = "tun";

/// Reads land in blocks of this size; each packet is split off as its own
/// `Bytes`, so one allocation serves many packets (about 16 superpackets,
/// thousands of small ones), and a block is reused in place once all its
/// packets were sent.
const READ_BLOCK: usize = 1 << 20;
/// Wait before reopening a send channel, doubling up to the maximum.
const REOPEN_MIN: Duration = Duration::from_millis(50);
const REOPEN_MAX: Duration = Duration::from_secs(1);

/// The current send channel of one queue (`None` while down or reopening).
type Slot = Option<Arc<Channel>>;

/// Moves packets between `dev` and the peer's TUN front-end over `bridge`
/// until the bridge closes; the interface is removed when this returns.
/// Errors only on a failure of the interface itself.
pub async fn run(bridge: Bridge, dev: TunDevice, stats: Arc<TunStats>) -> anyhow::Result<()> {
    let name = dev.name().to_owned();
    let vnet = dev.offload();
    stats.offload.store(vnet, Relaxed);
    stats.queues.store(dev.queues() as u64, Relaxed);
    let queues: Vec<Arc<Queue>> = dev
        .into_queues()
        .with_context(|| format!("registering {name} with the runtime"))?
        .into_iter()
        .map(Arc::new)
        .collect();
    let carrier_fd = queues[0].raw_fd();
    let up = Arc::new(AtomicBool::new(false));
    // Listen first, so the peer's opens find us.
    let mut listener = bridge.listen(SERVICE);
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    for (i, q) in queues.iter().enumerate() {
        let (tx, rx) = watch::channel::<Slot>(None);
        tasks.spawn(keep_sender(
            bridge.clone(),
            tx,
            stats.clone(),
            name.clone(),
            i,
        ));
        tasks.spawn(tun_to_peer(
            q.clone(),
            vnet,
            rx,
            up.clone(),
            stats.clone(),
            name.clone(),
        ));
    }

    let mut status = bridge.status();
    let mut carrier = None;
    let mut accepted = 0usize;
    let result = loop {
        let st = *status.borrow_and_update();
        if st.closed {
            break Ok(());
        }
        up.store(st.connected, Relaxed);
        if carrier != Some(st.connected) {
            carrier = Some(st.connected);
            match set_carrier(carrier_fd, st.connected) {
                Ok(()) => {
                    stats.carrier.store(st.connected, Relaxed);
                    inc(&stats.carrier_changes);
                    let state = if st.connected { "on" } else { "off" };
                    tracing::info!("{name}: carrier {state}");
                }
                Err(e) => tracing::warn!("{name}: setting the carrier: {e}"),
            }
        }
        tokio::select! {
            r = status.changed() => if r.is_err() { break Ok(()) },
            ch = listener.accept() => match ch {
                Some(ch) => {
                    let q = queues[accepted % queues.len()].clone();
                    accepted += 1;
                    inc(&stats.channel_accepts);
                    tracing::info!("{name}: receive channel {} from the peer", ch.id());
                    tasks.spawn(peer_to_tun(ch, q, vnet, stats.clone(), name.clone()));
                }
                None => break Ok(()),
            },
            Some(r) = tasks.join_next() => match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(e) if e.is_panic() => break Err(anyhow::anyhow!("{name}: a TUN task panicked: {e}")),
                Err(_) => {}
            },
        }
    };
    let _ = set_carrier(carrier_fd, false);
    stats.carrier.store(false, Relaxed);
    drop(listener);
    tasks.shutdown().await;
    tracing::info!("{name}: stopped");
    result
}

/// Keeps one send channel open: opens it whenever the link is up and it is
/// missing, publishes it in `slot`, and notices a reset (a peer restart, or
/// the peer's front-end stopping) by the channel's receive side failing.
async fn keep_sender(
    bridge: Bridge,
    slot: watch::Sender<Slot>,
    stats: Arc<TunStats>,
    name: String,
    queue: usize,
) -> anyhow::Result<()> {
    let mut status = bridge.status();
    let mut backoff = REOPEN_MIN;
    loop {
        match status.wait_for(|s| s.connected || s.closed).await {
            Ok(s) if s.closed => return Ok(()),
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
        match bridge
            .open(ChannelKind::Datagram, Class::Normal, SERVICE)
            .await
        {
            Ok(ch) => {
                backoff = REOPEN_MIN;
                inc(&stats.channel_opens);
                tracing::info!("{name}: queue {queue}: send channel {} open", ch.id());
                let ch = Arc::new(ch);
                slot.send_replace(Some(ch.clone()));
                // The peer sends nothing on it: receiving only ends when the
                // channel does.
                let why = loop {
                    match ch.recv_datagram().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => break "closed by the peer".to_owned(),
                        Err(e) => break e.to_string(),
                    }
                };
                slot.send_replace(None);
                drop(ch);
                inc(&stats.channel_resets);
                if status.borrow().closed {
                    return Ok(());
                }
                tracing::info!("{name}: queue {queue}: send channel lost ({why}); reopening");
            }
            Err(e) => {
                tracing::debug!(
                    "{name}: queue {queue}: opening a send channel: {e}; retrying in {backoff:?}"
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(REOPEN_MAX);
    }
}

/// Reads packets from one queue of the interface and sends each as one
/// datagram record.
async fn tun_to_peer(
    q: Arc<Queue>,
    vnet: bool,
    mut slot: watch::Receiver<Slot>,
    up: Arc<AtomicBool>,
    stats: Arc<TunStats>,
    name: String,
) -> anyhow::Result<()> {
    // Without offloads the kernel gives bare packets: leave room for an
    // all-zero virtio header in front so the record needs no copy.
    let head = if vnet { 0 } else { VNET_HDR_LEN };
    // One byte more than a record may be, to see truncation.
    let max = MAX_RECORD + 1 - head;
    let mut buf = BytesMut::with_capacity(READ_BLOCK);
    let mut chan: Slot = None;
    loop {
        buf.clear();
        if buf.capacity() < MAX_RECORD + 1 {
            buf.reserve(READ_BLOCK);
        }
        buf.extend_from_slice(&[0u8; VNET_HDR_LEN][..head]);
        let n = q
            .read_into(&mut buf, max)
            .await
            .with_context(|| format!("reading from {name}"))?;
        if n >= max {
            inc(&stats.drop_too_big);
            continue;
        }
        let c = match packet::check(&buf) {
            Ok(c) => c,
            Err(Reject::TooBig) => {
                inc(&stats.drop_too_big);
                continue;
            }
            Err(e) => {
                inc(&stats.drop_malformed_tun);
                tracing::debug!("{name}: dropped a packet from the interface: {e}");
                continue;
            }
        };
        if c.changed {
            buf[..VNET_HDR_LEN].copy_from_slice(&c.hdr.encode());
        }
        if !up.load(Relaxed) {
            inc(&stats.drop_link_down);
            continue;
        }
        match slot.has_changed() {
            Ok(true) => chan = slot.borrow_and_update().clone(),
            Ok(false) => {}
            Err(_) => chan = None,
        }
        let Some(ch) = &chan else {
            inc(&stats.drop_link_down);
            continue;
        };
        let len = (buf.len() - VNET_HDR_LEN) as u64;
        match ch.send_datagram(buf.split().freeze()) {
            Ok(true) => {
                inc(&stats.tx_packets);
                add(&stats.tx_bytes, len);
                if c.hdr.is_gso() {
                    inc(&stats.tx_superpackets);
                }
            }
            Ok(false) => inc(&stats.drop_queue_full),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                inc(&stats.drop_too_big);
            }
            Err(_) => {
                // Reset or closed: keep_sender reopens it.
                inc(&stats.drop_link_down);
                chan = None;
            }
        }
    }
}

/// Writes the records of one channel from the peer to a queue of the
/// interface, until the channel ends.
async fn peer_to_tun(
    ch: Channel,
    q: Arc<Queue>,
    vnet: bool,
    stats: Arc<TunStats>,
    name: String,
) -> anyhow::Result<()> {
    let id = ch.id();
    let mut plain = Plain::default();
    loop {
        let rec = match ch.recv_datagram().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::info!("{name}: receive channel {id} closed by the peer");
                return Ok(());
            }
            Err(e) => {
                tracing::info!("{name}: receive channel {id} ended: {e}");
                return Ok(());
            }
        };
        let c = match packet::check(&rec) {
            Ok(c) => c,
            Err(Reject::TooBig) => {
                inc(&stats.drop_too_big);
                continue;
            }
            Err(e) => {
                inc(&stats.drop_malformed_peer);
                tracing::debug!("{name}: dropped a packet from the peer: {e}");
                continue;
            }
        };
        let pkt = &rec[VNET_HDR_LEN..];
        let r = if vnet {
            let hdr = c.hdr.encode();
            let iov = [IoSlice::new(&hdr), IoSlice::new(pkt)];
            q.write(&iov).await.map(|_| ())
        } else {
            let n = match plain.prepare(&rec, &c) {
                Ok((n, soft)) => {
                    if soft {
                        inc(&stats.rx_software_offload);
                    }
                    n
                }
                Err(e) => {
                    inc(&stats.drop_malformed_peer);
                    tracing::debug!("{name}: dropped a packet from the peer: {e}");
                    continue;
                }
            };
            let mut r = Ok(());
            for i in 0..n {
                r = r.and(
                    q.write(&[IoSlice::new(plain.packet(&rec, i))])
                        .await
                        .map(|_| ()),
                );
            }
            r
        };
        match r {
            Ok(()) => {
                inc(&stats.rx_packets);
                add(&stats.rx_bytes, pkt.len() as u64);
                if c.hdr.is_gso() {
                    inc(&stats.rx_superpackets);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                return Err(e).with_context(|| format!("writing to {name}"));
            }
            Err(e) => {
                inc(&stats.drop_tun_write);
                tracing::debug!("{name}: the kernel refused a packet: {e}");
            }
        }
    }
}

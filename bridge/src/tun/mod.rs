//! The TUN front-end: a virtual network interface whose IP packets cross
//! the cable as datagram records.
//!
//! * [`TunDevice::create`] makes the interface (tun-rs) in the network
//!   namespace of the calling thread: virtio-net offloads (checksum, TSO,
//!   USO) and several queues when asked and the kernel agrees, carrier off,
//!   MTU (default 65520), addresses, up, routes (rtnetlink).
//! * [`run`] moves packets until the bridge closes, one task per queue
//!   (`worker`). Each side opens three datagram channels per queue (the
//!   lanes of [`flow`]: latency, ack, bulk) to the peer's `tun` service for
//!   sending, and accepts the peer's channels for receiving. A channel reset by a peer restart is reopened by
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
//! `BytesMut` block and are split off without copying; they wait in the
//! fair queue ([`queue`], FQ-CoDel per lane) and the session references
//! them until they are written to the cable. Received records are written to the interface with one `writev`
//! straight from the session's receive buffer. Nothing is copied in user
//! space on either side (except in the software fallback for a side without
//! offloads).
//!
//! Packets are checked with etherparse in both directions and dropped,
//! counted by reason in [`TunStats`], when they fail; packets arriving while
//! the link is down are dropped and counted, not queued. The algorithm and
//! every constant with its reason: `docs/nic.md`.

mod device;
pub mod flow;
mod frontend;
mod netlink;
pub mod packet;
pub mod queue;
mod stats;
mod worker;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tbbridge_transport::pump::{Bridge, Channel};
use tbbridge_transport::{ChannelKind, Class};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use self::device::{set_carrier, Queue};
pub use self::device::{TunDevice, TunOptions, DEFAULT_MTU, MAX_QUEUES};
use self::flow::Lane;
pub use self::frontend::{front_ends, tun_options, TunFrontEnd};
use self::stats::inc;
pub use self::stats::{TunCounters, TunStats};
use self::worker::{Ctl, Worker};

/// The service name both sides listen on.
pub const SERVICE: &str = "tun";

/// Wait before reopening a send channel, doubling up to the maximum.
const REOPEN_MIN: Duration = Duration::from_millis(50);
const REOPEN_MAX: Duration = Duration::from_secs(1);

/// The transport class of a lane's channel.
fn class(lane: Lane) -> Class {
    match lane {
        Lane::Latency => Class::Latency,
        Lane::Ack => Class::Normal,
        Lane::Bulk => Class::Bulk,
    }
}

/// Moves packets between `dev` and the peer's TUN front-end over `bridge`
/// until the bridge closes; the interface is removed when this returns.
/// Errors only on a failure of the interface itself.
pub async fn run(bridge: Bridge, dev: TunDevice, stats: Arc<TunStats>) -> anyhow::Result<()> {
    let name = dev.name().to_owned();
    let vnet = dev.offload();
    let mtu = dev.mtu();
    stats.offload.store(vnet, Relaxed);
    stats.queues.store(dev.queues() as u64, Relaxed);
    let queues: Vec<Arc<Queue>> = dev
        .into_queues()
        .with_context(|| format!("registering {name} with the runtime"))?
        .into_iter()
        .map(Arc::new)
        .collect();
    let carrier_fd = queues[0].raw_fd();
    // Listen first, so the peer's opens find us.
    let mut listener = bridge
        .listen(SERVICE)
        .with_context(|| format!("{name}: listening for the peer's packets"))?;
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut workers = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        for lane in Lane::ALL {
            tasks.spawn(keep_sender(
                bridge.clone(),
                lane,
                tx.clone(),
                stats.clone(),
                name.clone(),
                i,
            ));
        }
        let w = Worker::new(q.clone(), vnet, mtu, name.clone(), stats.clone(), rx);
        tasks.spawn(w.run());
        workers.push(tx);
    }

    let mut status = bridge.status();
    let mut carrier = None;
    let mut accepted = 0usize;
    let result = loop {
        let st = *status.borrow_and_update();
        if st.closed {
            break Ok(());
        }
        if carrier != Some(st.connected) {
            carrier = Some(st.connected);
            for w in &workers {
                let _ = w.send(Ctl::Link(st.connected));
            }
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
                    // The peer opens a channel per lane and queue;
                    // spread them over ours.
                    let w = &workers[accepted / Lane::ALL.len() % workers.len()];
                    accepted += 1;
                    inc(&stats.channel_accepts);
                    tracing::info!("{name}: receive channel {} from the peer", ch.id());
                    let _ = w.send(Ctl::Recv(ch));
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
    drop(workers);
    tasks.shutdown().await;
    tracing::info!("{name}: stopped");
    result
}

/// Keeps one lane's send channel of one queue open: opens it whenever the
/// link is up and it is missing, hands it to the queue's worker, and
/// notices a reset (a peer restart, or the peer's front-end stopping) by
/// the channel's receive side failing.
async fn keep_sender(
    bridge: Bridge,
    lane: Lane,
    worker: mpsc::UnboundedSender<Ctl>,
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
            .open(ChannelKind::Datagram, class(lane), SERVICE)
            .await
        {
            Ok(ch) => {
                backoff = REOPEN_MIN;
                inc(&stats.channel_opens);
                tracing::info!(
                    "{name}: queue {queue}: {lane:?} send channel {} open",
                    ch.id()
                );
                let ch = Arc::new(ch);
                if worker.send(Ctl::Send(lane, Some(ch.clone()))).is_err() {
                    return Ok(());
                }
                let why = wait_lost(&ch).await;
                let _ = worker.send(Ctl::Send(lane, None));
                drop(ch);
                inc(&stats.channel_resets);
                if status.borrow().closed {
                    return Ok(());
                }
                tracing::info!(
                    "{name}: queue {queue}: {lane:?} send channel lost ({why}); reopening"
                );
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

/// Waits until a send channel ends. The peer sends nothing on it:
/// receiving only ends when the channel does.
async fn wait_lost(ch: &Channel) -> String {
    loop {
        match ch.recv_datagram().await {
            Ok(Some(_)) => continue,
            Ok(None) => return "closed by the peer".to_owned(),
            Err(e) => return e.to_string(),
        }
    }
}

//! UDP across the cable: a datagram channel per client flow.
//!
//! The forward side keeps a table of flows by client address: the first
//! datagram of a client opens a channel to the peer's service (datagrams
//! arriving while it opens wait in a small queue), the peer's replies on
//! that channel go back to that client, and a flow quiet for the idle time
//! is closed. The service side connects one UDP socket per channel to the
//! target, so the target's replies come back on the right channel.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tbbridge_config::{HostPort, DEFAULT_UDP_IDLE};
use tbbridge_transport::pump::Channel;
use tbbridge_transport::{ChannelKind, Class};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::stats::{ProxyStats, Refusal};
use crate::frontend::{Ctx, Failure};

/// Largest UDP datagram (IPv4 and IPv6 payload limit).
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams of a client held while its channel opens (one round trip);
/// beyond that they are dropped, as a full socket buffer would.
const OPENING_QUEUE: usize = 64;

enum FlowState {
    Opening(VecDeque<Bytes>),
    Open(Arc<Channel>),
}

struct Flow {
    state: FlowState,
    last: Instant,
}

/// The forward side: one UDP socket, many client flows.
pub async fn forward(
    sock: UdpSocket,
    ctx: Ctx,
    service: String,
    class: Class,
    max_flows: usize,
    stats: Arc<ProxyStats>,
) -> Result<(), Failure> {
    let sock = Arc::new(sock);
    let idle = DEFAULT_UDP_IDLE;
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<(SocketAddr, Option<Channel>)>();
    let mut readers = JoinSet::new();
    let mut sweep = tokio::time::interval(idle / 4);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r.map_err(Failure::retry)?;
                let d = Bytes::copy_from_slice(&buf[..n]);
                match flows.get_mut(&from) {
                    Some(f) => {
                        f.last = Instant::now();
                        match &mut f.state {
                            FlowState::Open(ch) => {
                                if ch.send_datagram(d).unwrap_or(false) {
                                    stats.bytes_out.fetch_add(n as u64, Relaxed);
                                }
                            }
                            FlowState::Opening(q) if q.len() < OPENING_QUEUE => q.push_back(d),
                            FlowState::Opening(_) => {}
                        }
                    }
                    None => {
                        if !stats.try_start(max_flows) {
                            continue;
                        }
                        let mut q = VecDeque::new();
                        q.push_back(d);
                        flows.insert(from, Flow { state: FlowState::Opening(q), last: Instant::now() });
                        let (bridge, service, tx, stats) = (ctx.bridge.clone(), service.clone(), opened_tx.clone(), stats.clone());
                        tokio::spawn(async move {
                            let ch = match bridge.open(ChannelKind::Datagram, class, &service).await {
                                Ok(ch) => Some(ch),
                                Err(e) => {
                                    let why = match e {
                                        tbbridge_transport::pump::OpenError::NoService(_) => Refusal::NoService,
                                        tbbridge_transport::pump::OpenError::PeerBusy(_) => Refusal::PeerBusy,
                                        _ => Refusal::OpenFailed,
                                    };
                                    stats.refuse(why, format_args!("flow from {from}: {e}"));
                                    None
                                }
                            };
                            let _ = tx.send((from, ch));
                        });
                    }
                }
            }
            Some((addr, ch)) = opened_rx.recv() => {
                let Some(ch) = ch else {
                    flows.remove(&addr);
                    stats.end();
                    continue;
                };
                let ch = Arc::new(ch);
                if let Some(f) = flows.get_mut(&addr) {
                    if let FlowState::Opening(q) = &mut f.state {
                        for d in q.drain(..) {
                            let n = d.len() as u64;
                            if ch.send_datagram(d).unwrap_or(false) {
                                stats.bytes_out.fetch_add(n, Relaxed);
                            }
                        }
                    }
                    f.state = FlowState::Open(ch.clone());
                    let (sock, stats) = (sock.clone(), stats.clone());
                    readers.spawn(async move {
                        while let Ok(Some(d)) = ch.recv_datagram().await {
                            if sock.send_to(&d, addr).await.is_ok() {
                                stats.bytes_in.fetch_add(d.len() as u64, Relaxed);
                            }
                        }
                    });
                }
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                flows.retain(|_, f| {
                    let quiet = now.duration_since(f.last) >= idle;
                    match &f.state {
                        FlowState::Open(ch) if quiet => {
                            // The peer's side ends, and with it our reader.
                            let _ = ch.finish();
                            stats.end();
                            false
                        }
                        _ => true,
                    }
                });
            }
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
            _ = ctx.cancel.cancelled() => return Ok(()),
        }
    }
}

/// The service side of one flow: a UDP socket connected to the target.
pub async fn serve_flow(ch: Channel, target: &HostPort, idle: Duration, stats: &ProxyStats) {
    let sock = match connect(target).await {
        Ok(s) => s,
        Err(e) => {
            stats.refuse(
                Refusal::ConnectFailed,
                format_args!("connecting to udp:{target}: {e}"),
            );
            let _ = ch.reset();
            return;
        }
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            d = ch.recv_datagram() => match d {
                Ok(Some(d)) => {
                    if sock.send(&d).await.is_ok() {
                        stats.bytes_out.fetch_add(d.len() as u64, Relaxed);
                    }
                }
                _ => return,
            },
            r = sock.recv(&mut buf) => {
                // An error (ICMP unreachable and the like) leaves the flow
                // running.
                if let Ok(n) = r {
                    if ch.send_datagram(Bytes::copy_from_slice(&buf[..n])).unwrap_or(false) {
                        stats.bytes_in.fetch_add(n as u64, Relaxed);
                    }
                }
            }
            _ = tokio::time::sleep(idle) => return,
        }
    }
}

async fn connect(target: &HostPort) -> std::io::Result<UdpSocket> {
    let addr = match target {
        HostPort::Addr(a) => *a,
        HostPort::Name { host, port } => tokio::net::lookup_host((host.as_str(), *port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?,
    };
    let local = if addr.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let s = UdpSocket::bind(local).await?;
    s.connect(addr).await?;
    Ok(s)
}

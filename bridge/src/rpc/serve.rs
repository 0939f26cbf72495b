//! The serving side: the registered server, and the channels of the
//! peer's clients whose calls it answers.
//!
//! Each peer channel's calls get a sequence number in arrival order and a
//! bridge-wide id for the server (the server sees one connection for all
//! the peer's clients, so the clients' own ids could collide). An answer
//! is put back under the client's id (rewritten in place, no copy) and
//! sent once every earlier call of its channel is answered: answers leave
//! in call order per client connection even from a server that answers
//! concurrently. A send that would wait (the client's window is full) goes
//! to the channel's backlog, which its task drains; the server's reader
//! never waits for one slow client.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tbbridge_rpc::socket::{Received, SeqPacket};
use tbbridge_rpc::{ErrorCode, Header, Kind, HEADER_LEN};
use tbbridge_transport::pump::Channel;
use tbbridge_transport::ChannelKind;
use tokio::sync::Notify;

use super::stats::Active;
use super::{error_msg, send_error, RecvBuf, Rpc};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server registered now, if any.
#[derive(Debug, Default)]
pub(super) struct ServerSlot(Mutex<Option<Arc<ServerConn>>>);

/// A registered server: its socket and the calls it has not answered.
#[derive(Debug)]
pub(super) struct ServerConn {
    sock: SeqPacket,
    calls: Mutex<Calls>,
}

#[derive(Debug, Default)]
struct Calls {
    next_id: u32,
    /// Server-side id -> (channel, sequence number there, client's id).
    map: HashMap<u32, (Arc<PeerChan>, u64, u32)>,
}

impl Calls {
    fn insert(&mut self, pc: Arc<PeerChan>, seq: u64, client_id: u32) -> u32 {
        // The map is bounded (channels x calls each), far below 2^32, so a
        // free id is always near.
        while self.map.contains_key(&self.next_id) {
            self.next_id = self.next_id.wrapping_add(1);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.map.insert(id, (pc, seq, client_id));
        id
    }
}

/// One channel of the peer's client, and its answers waiting for their
/// turn.
#[derive(Debug)]
pub(super) struct PeerChan {
    ch: Channel,
    order: Mutex<Order>,
    /// The backlog has something for the channel's task.
    backlog_ready: Notify,
}

#[derive(Debug, Default)]
struct Order {
    /// Sequence number of `slots[0]`.
    head: u64,
    /// Answers by sequence number, `None` until the answer came.
    slots: VecDeque<Option<Bytes>>,
    /// Answers whose turn came but the channel could not take at once.
    backlog: VecDeque<Bytes>,
    /// The channel failed: answers are dropped.
    dead: bool,
}

/// Queues `m` on `ch` if it can be done without waiting: `Ok(false)` if
/// it would wait.
fn try_send(ch: &Channel, m: &Bytes) -> Result<bool, ()> {
    let mut fut = pin!(ch.send_message(m.clone()));
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(_)) => Err(()),
        Poll::Pending => Ok(false),
    }
}

impl PeerChan {
    /// A place in line for the next call.
    fn reserve(&self) -> u64 {
        let mut o = lock(&self.order);
        o.slots.push_back(None);
        o.head + o.slots.len() as u64 - 1
    }

    fn outstanding(&self) -> usize {
        lock(&self.order).slots.len()
    }

    /// The answer to call `seq` is `m`: send what is now in turn.
    fn complete(&self, seq: u64, m: Bytes) {
        let mut o = lock(&self.order);
        let Some(i) = seq.checked_sub(o.head).map(|i| i as usize) else {
            return;
        };
        match o.slots.get_mut(i) {
            Some(s @ None) => *s = Some(m),
            _ => return,
        }
        while let Some(Some(_)) = o.slots.front() {
            let Some(Some(m)) = o.slots.pop_front() else {
                break;
            };
            o.head += 1;
            if o.dead {
                continue;
            }
            if !o.backlog.is_empty() {
                o.backlog.push_back(m);
                continue;
            }
            match try_send(&self.ch, &m) {
                Ok(true) => {}
                Ok(false) => {
                    o.backlog.push_back(m);
                    self.backlog_ready.notify_one();
                }
                Err(()) => o.dead = true,
            }
        }
    }

    /// Sends the backlog, waiting for room; `Err` when the channel failed.
    async fn drain(&self) -> Result<(), ()> {
        loop {
            let Some(m) = lock(&self.order).backlog.front().cloned() else {
                return Ok(());
            };
            // Removed only once sent: while it is in the backlog, newer
            // answers queue behind it instead of overtaking it.
            if self.ch.send_message(m).await.is_err() {
                let mut o = lock(&self.order);
                o.dead = true;
                o.backlog.clear();
                return Err(());
            }
            lock(&self.order).backlog.pop_front();
        }
    }
}

/// An answer's message for the client: `m` with the client's id.
fn for_client(mut m: BytesMut, client_id: u32) -> Bytes {
    Header::set_id(&mut m, client_id);
    m.freeze()
}

/// A connection that sent `SERVE`: it serves until it goes; then its
/// calls fail with `ServerGone` and the next server may register.
pub(super) async fn server(rpc: &Rpc, sock: SeqPacket, mut rx: RecvBuf) {
    let conn = Arc::new(ServerConn {
        sock,
        calls: Mutex::new(Calls::default()),
    });
    let registered = {
        let mut slot = lock(&rpc.server.0);
        let free = slot.is_none();
        if free {
            *slot = Some(conn.clone());
        }
        free
    };
    if !registered {
        rpc.stats.error(ErrorCode::ServerExists);
        rpc.stats.warn("a second server refused: one is registered");
        let _ = send_error(&conn.sock, ErrorCode::ServerExists, 0).await;
        return;
    }
    rpc.stats.servers.fetch_add(1, Relaxed);
    rpc.stats.server_active.store(1, Relaxed);
    tracing::info!("rpc {}: a server registered", rpc.cfg.name);
    if conn
        .sock
        .send(&[&Header::new(Kind::Serving, 0).to_bytes()])
        .await
        .is_ok()
    {
        read_answers(rpc, &conn, &mut rx).await;
    }
    // Unregister first, so that no new call is given to this server.
    {
        let mut slot = lock(&rpc.server.0);
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &conn)) {
            *slot = None;
        }
    }
    rpc.stats.server_active.store(0, Relaxed);
    let orphans: Vec<_> = lock(&conn.calls).map.drain().map(|(_, v)| v).collect();
    tracing::info!(
        "rpc {}: the server went away; {} calls in flight failed",
        rpc.cfg.name,
        orphans.len()
    );
    for (pc, seq, client_id) in orphans {
        rpc.stats.error(ErrorCode::ServerGone);
        pc.complete(seq, error_msg(ErrorCode::ServerGone, client_id));
    }
}

/// The server's answers, until it goes or breaks the protocol.
async fn read_answers(rpc: &Rpc, conn: &ServerConn, rx: &mut RecvBuf) {
    let max = rpc.max_wire();
    loop {
        let (h, m) = match rx.recv(&conn.sock, max).await {
            Ok(Received::Message(m)) => match Header::parse(&m) {
                Ok(h) if matches!(h.kind, Kind::Reply | Kind::Error) => (h, m),
                Ok(h) => {
                    rpc.stats
                        .warn(format_args!("the server sent a {:?}: disconnected", h.kind));
                    return;
                }
                Err(e) => {
                    rpc.stats.warn(format_args!(
                        "the server sent a bad message ({e}): disconnected"
                    ));
                    return;
                }
            },
            Ok(Received::TooLarge { len, head }) => {
                // Its caller gets an error instead of the reply.
                rpc.stats.warn(format_args!(
                    "the server's reply of {len} bytes is over max_message = {}",
                    rpc.cfg.max_message
                ));
                let Some(h) = head.and_then(|h| Header::parse(&h).ok()) else {
                    return;
                };
                let mut e =
                    BytesMut::from(&Header::error(ErrorCode::TooLarge, h.id).to_bytes()[..]);
                e.truncate(HEADER_LEN);
                (Header::error(ErrorCode::TooLarge, h.id), e)
            }
            Ok(Received::End) | Err(_) => return,
        };
        let Some((pc, seq, client_id)) = lock(&conn.calls).map.remove(&h.id) else {
            rpc.stats.unknown_answers.fetch_add(1, Relaxed);
            continue;
        };
        if h.kind == Kind::Error {
            rpc.stats.error(ErrorCode::from_u8(h.code));
        } else {
            rpc.stats.replies_out.fetch_add(1, Relaxed);
            rpc.stats
                .bytes_out
                .fetch_add((m.len() - HEADER_LEN) as u64, Relaxed);
        }
        pc.complete(seq, for_client(m, client_id));
    }
}

/// One channel of a peer's client: its calls go to the server.
pub(super) async fn peer_channel(rpc: &Rpc, ch: Channel) {
    if ch.kind() != ChannelKind::Message {
        rpc.stats.peer_channels_refused.fetch_add(1, Relaxed);
        rpc.stats.warn(format_args!(
            "refused a {:?} channel (message expected)",
            ch.kind()
        ));
        let _ = ch.reset();
        return;
    }
    if rpc.stats.peer_channels_active.load(Relaxed) >= rpc.cfg.max_connections as u64 {
        rpc.stats.peer_channels_refused.fetch_add(1, Relaxed);
        rpc.stats.warn(format_args!(
            "refused a peer channel: over max_connections = {}",
            rpc.cfg.max_connections
        ));
        let _ = ch.reset();
        return;
    }
    let _active = Active::new(&rpc.stats.peer_channels, &rpc.stats.peer_channels_active);
    let pc = Arc::new(PeerChan {
        ch,
        order: Mutex::new(Order::default()),
        backlog_ready: Notify::new(),
    });
    // Answers this channel may have waiting: the peer's client keeps at
    // most its max_calls in flight; one that floods past twice ours is
    // reset rather than buffered for.
    let limit = rpc.cfg.max_calls.saturating_mul(2);
    loop {
        let m = tokio::select! {
            biased;
            _ = pc.backlog_ready.notified() => {
                if pc.drain().await.is_err() {
                    return;
                }
                continue;
            }
            m = pc.ch.recv_message() => m,
        };
        let m = match m {
            Ok(Some(m)) => m,
            // The client's connection closed (or the channel failed):
            // answers still due are dropped with the channel.
            Ok(None) | Err(_) => return,
        };
        if pc.outstanding() >= limit {
            rpc.stats.peer_channels_refused.fetch_add(1, Relaxed);
            rpc.stats.warn(format_args!(
                "reset a peer channel: over {limit} calls unanswered"
            ));
            let _ = pc.ch.reset();
            return;
        }
        call(rpc, &pc, m).await;
    }
}

/// One call from the peer: to the server, or an error in its turn.
async fn call(rpc: &Rpc, pc: &Arc<PeerChan>, m: Bytes) {
    let seq = pc.reserve();
    let h = match Header::parse(&m) {
        Ok(h) if h.kind == Kind::Call => h,
        Ok(h) => return answer_error(rpc, pc, seq, ErrorCode::BadMessage, h.id),
        Err(_) => return answer_error(rpc, pc, seq, ErrorCode::BadMessage, 0),
    };
    if m.len() > rpc.max_wire() {
        // The peer's max_message is larger than ours.
        return answer_error(rpc, pc, seq, ErrorCode::TooLarge, h.id);
    }
    let server = lock(&rpc.server.0).clone();
    let Some(server) = server else {
        return answer_error(rpc, pc, seq, ErrorCode::NoServer, h.id);
    };
    let id = lock(&server.calls).insert(pc.clone(), seq, h.id);
    rpc.stats.calls_in.fetch_add(1, Relaxed);
    rpc.stats
        .bytes_in
        .fetch_add((m.len() - HEADER_LEN) as u64, Relaxed);
    let hdr = Header::new(Kind::Call, id).to_bytes();
    if server.sock.send(&[&hdr, &m[HEADER_LEN..]]).await.is_err() {
        // The server is going: its reader fails this call with the rest
        // (if it has not already, in which case the call is gone).
        if let Some((pc, seq, cid)) = lock(&server.calls).map.remove(&id) {
            rpc.stats.error(ErrorCode::ServerGone);
            pc.complete(seq, error_msg(ErrorCode::ServerGone, cid));
        }
    }
}

fn answer_error(rpc: &Rpc, pc: &PeerChan, seq: u64, code: ErrorCode, id: u32) {
    rpc.stats.error(code);
    pc.complete(seq, error_msg(code, id));
}

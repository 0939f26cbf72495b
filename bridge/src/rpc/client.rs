//! The calling side: a local client's connection, carried on one message
//! channel to the peer's service.
//!
//! Calls cross as they came (header and body, one message); answers come
//! back on the same channel and go to the socket as they are, so nothing
//! is copied or rewritten here. Errors this side answers itself (a request
//! over `max_message`, a malformed one, a peer without the service, a
//! channel that failed) carry the call's id and go out at once, possibly
//! ahead of answers to earlier calls.

use std::collections::VecDeque;
use std::future::pending;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tbbridge_rpc::socket::{Received, SeqPacket};
use tbbridge_rpc::{ErrorCode, Header, Kind, HEADER_LEN};
use tbbridge_transport::pump::{Bridge, Channel, Gone, OpenError, RecvError, SendError};
use tbbridge_transport::session::RejectReason;
use tbbridge_transport::ChannelKind;

use super::{send_error, RecvBuf, Rpc};

/// The error a caller gets when its channel could not be used.
fn gone_code(g: Gone) -> ErrorCode {
    match g {
        Gone::Refused(RejectReason::NoService) => ErrorCode::NoService,
        Gone::Refused(RejectReason::TooMany | RejectReason::NoMemory | RejectReason::Backlog) => {
            ErrorCode::Busy
        }
        _ => ErrorCode::Link,
    }
}

fn open_code(e: &OpenError) -> ErrorCode {
    match e {
        OpenError::NoService(_) => ErrorCode::NoService,
        OpenError::PeerBusy(_) | OpenError::PeerNoMemory(_) | OpenError::PeerBacklog(_) => {
            ErrorCode::Busy
        }
        OpenError::Local(_) => ErrorCode::Busy,
        _ => ErrorCode::Link,
    }
}

fn send_code(e: &SendError) -> ErrorCode {
    match e {
        SendError::Gone(g) => gone_code(*g),
        SendError::TooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::Link,
    }
}

async fn recv_opt(ch: Option<&Channel>) -> Result<Option<Bytes>, RecvError> {
    match ch {
        Some(c) => c.recv_message().await,
        None => pending().await,
    }
}

/// Holds a client slot of `max_connections`.
struct Slot<'a>(&'a Rpc);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.stats.clients_active.fetch_sub(1, Relaxed);
    }
}

struct Conn<'a> {
    rpc: &'a Rpc,
    sock: SeqPacket,
    bridge: Bridge,
    ch: Option<Channel>,
    /// Ids of the calls sent and not answered yet, oldest first.
    in_flight: VecDeque<u32>,
}

/// The socket failed: the client is gone.
struct ClientGone;

impl Conn<'_> {
    async fn error(&self, code: ErrorCode, id: u32) -> Result<(), ClientGone> {
        self.rpc.stats.error(code);
        send_error(&self.sock, code, id)
            .await
            .map_err(|_| ClientGone)
    }

    /// Every call in flight fails with `code`; the next call opens a new
    /// channel.
    async fn fail_all(&mut self, code: ErrorCode) -> Result<(), ClientGone> {
        self.ch = None;
        if code == ErrorCode::NoService {
            self.rpc.stats.warn(format_args!(
                "the peer does not define this service ([[rpc]] name = {:?} there)",
                self.rpc.cfg.name
            ));
        }
        while let Some(id) = self.in_flight.pop_front() {
            self.error(code, id).await?;
        }
        Ok(())
    }

    async fn call(&mut self, h: Header, msg: Bytes) -> Result<(), ClientGone> {
        if h.kind != Kind::Call {
            return self.error(ErrorCode::BadMessage, h.id).await;
        }
        if self.ch.is_none() {
            match self.bridge.open_now(
                ChannelKind::Message,
                self.rpc.cfg.class,
                &self.rpc.service(),
            ) {
                Ok(ch) => self.ch = Some(ch),
                Err(e) => {
                    self.rpc.stats.warn(format_args!("opening a channel: {e}"));
                    return self.error(open_code(&e), h.id).await;
                }
            }
        }
        let Some(ch) = self.ch.as_ref() else {
            return Ok(());
        };
        let body = (msg.len() - HEADER_LEN) as u64;
        self.in_flight.push_back(h.id);
        match ch.send_message(msg).await {
            Ok(()) => {
                self.rpc.stats.calls_out.fetch_add(1, Relaxed);
                self.rpc.stats.bytes_out.fetch_add(body, Relaxed);
                Ok(())
            }
            Err(e) => self.fail_all(send_code(&e)).await,
        }
    }

    async fn answer(&mut self, r: Result<Option<Bytes>, RecvError>) -> Result<(), ClientGone> {
        let m = match r {
            Ok(Some(m)) => m,
            Ok(None) => return self.fail_all(ErrorCode::Link).await,
            Err(RecvError::Gone(g)) => return self.fail_all(gone_code(g)).await,
            Err(RecvError::WrongKind(_)) => return self.fail_all(ErrorCode::Link).await,
        };
        let h = match Header::parse(&m) {
            Ok(h) if matches!(h.kind, Kind::Reply | Kind::Error) => h,
            _ => {
                self.rpc.stats.unknown_answers.fetch_add(1, Relaxed);
                return Ok(());
            }
        };
        // Normally the oldest; a peer that answers out of order is still
        // matched, one that makes answers up is not.
        let Some(pos) = self.in_flight.iter().position(|&id| id == h.id) else {
            self.rpc.stats.unknown_answers.fetch_add(1, Relaxed);
            return Ok(());
        };
        self.in_flight.remove(pos);
        self.rpc.stats.answers_in.fetch_add(1, Relaxed);
        self.rpc
            .stats
            .bytes_in
            .fetch_add((m.len() - HEADER_LEN) as u64, Relaxed);
        self.sock.send(&[&m]).await.map_err(|_| ClientGone)
    }
}

/// Serves one client connection; `first` is its first call (already read).
pub(super) async fn run(
    rpc: &Rpc,
    sock: SeqPacket,
    bridge: Bridge,
    mut rx: RecvBuf,
    first: Option<(Header, Bytes)>,
) {
    let n = rpc.stats.clients_active.fetch_add(1, Relaxed);
    let _slot = Slot(rpc);
    if n >= rpc.cfg.max_connections as u64 {
        rpc.stats.clients_refused.fetch_add(1, Relaxed);
        rpc.stats.warn(format_args!(
            "a client refused: over max_connections = {}",
            rpc.cfg.max_connections
        ));
        if let Some((h, _)) = first {
            rpc.stats.error(ErrorCode::Busy);
            let _ = send_error(&sock, ErrorCode::Busy, h.id).await;
        }
        return;
    }
    rpc.stats.clients.fetch_add(1, Relaxed);
    let mut c = Conn {
        rpc,
        sock,
        bridge,
        ch: None,
        in_flight: VecDeque::new(),
    };
    if let Some((h, m)) = first {
        if c.call(h, m).await.is_err() {
            return;
        }
    }
    let max = rpc.max_wire();
    loop {
        let r = tokio::select! {
            r = recv_opt(c.ch.as_ref()) => c.answer(r).await,
            r = rx.recv(&c.sock, max), if c.in_flight.len() < rpc.cfg.max_calls => match r {
                Ok(Received::Message(m)) => match Header::parse(&m) {
                    Ok(h) => c.call(h, m.freeze()).await,
                    Err(_) => c.error(ErrorCode::BadMessage, 0).await,
                },
                Ok(Received::TooLarge { len, head }) => {
                    rpc.stats.warn(format_args!(
                        "a request of {len} bytes is over max_message = {}",
                        rpc.cfg.max_message
                    ));
                    let id = head.and_then(|h| Header::parse(&h).ok()).map_or(0, |h| h.id);
                    c.error(ErrorCode::TooLarge, id).await
                }
                Ok(Received::End) | Err(_) => return,
            },
        };
        if r.is_err() {
            return;
        }
    }
}

//! The calling side: [`Client`].

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::proto::{ErrorCode, Header, HeaderError, Kind, HEADER_LEN};
use crate::socket::{Received, SeqPacket};
use crate::MAX_BODY;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the timeout (the call is abandoned; a late answer
    /// is discarded).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The bridge or the server answered with an error.
    #[error("the call failed: {0}")]
    Remote(ErrorCode),
    /// The request is larger than this library sends ([`MAX_BODY`]; the
    /// service's own `max_message` is checked by the bridge, which answers
    /// [`ErrorCode::TooLarge`]).
    #[error("a request of {0} bytes is larger than {MAX_BODY}")]
    TooLarge(usize),
    /// The bridge closed the connection (it went down).
    #[error("the bridge closed the connection")]
    Closed,
    /// The bridge sent something this library does not understand.
    #[error("bad message from the bridge: {0}")]
    Protocol(String),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

type Answer = Result<Bytes, CallError>;

/// A connection to a service's socket. Calls may be made from many tasks
/// at once (`&self`); each gets its own answer, matched by id. There is
/// no reader task: whichever caller is waiting reads the socket and hands
/// the others their answers, so an answer reaches its caller with no
/// extra task switch.
#[derive(Debug)]
pub struct Client {
    sock: SeqPacket,
    next_id: AtomicU32,
    pending: Mutex<HashMap<u32, oneshot::Sender<Answer>>>,
    reader: tokio::sync::Mutex<Reader>,
}

#[derive(Debug, Default)]
struct Reader {
    buf: BytesMut,
    scratch: Vec<u8>,
    closed: bool,
}

/// Removes a call's entry however the call ends (a timeout included).
struct PendingGuard<'a>(&'a Client, u32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.lock_pending().remove(&self.1);
    }
}

fn answer(h: Header, msg: Bytes) -> Answer {
    match h.kind {
        Kind::Reply => Ok(msg.slice(HEADER_LEN..)),
        Kind::Error => Err(CallError::Remote(ErrorCode::from_u8(h.code))),
        k => Err(CallError::Protocol(format!(
            "a {k:?} message on a client connection"
        ))),
    }
}

impl Client {
    /// Connects to `service` of the bridge instance `instance` (its
    /// socket at [`socket_path`](crate::socket_path)).
    pub async fn connect(instance: &str, service: &str) -> io::Result<Client> {
        Self::connect_path(&crate::socket_path(instance, service)).await
    }

    /// Connects to the socket at `path`.
    pub async fn connect_path(path: &Path) -> io::Result<Client> {
        Ok(Client {
            sock: SeqPacket::connect(path).await?,
            next_id: AtomicU32::new(1),
            pending: Mutex::new(HashMap::new()),
            reader: tokio::sync::Mutex::new(Reader::default()),
        })
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Answer>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `request` and waits at most `timeout` for the answer.
    pub async fn call(&self, request: &[u8], timeout: Duration) -> Result<Bytes, CallError> {
        if request.len() > MAX_BODY {
            return Err(CallError::TooLarge(request.len()));
        }
        match tokio::time::timeout(timeout, self.call_inner(request)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    async fn call_inner(&self, request: &[u8]) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        self.lock_pending().insert(id, tx);
        let _guard = PendingGuard(self, id);
        self.sock
            .send(&[&Header::new(Kind::Call, id).to_bytes(), request])
            .await?;
        loop {
            let mut rd = tokio::select! {
                biased;
                r = &mut rx => return r.unwrap_or(Err(CallError::Closed)),
                g = self.reader.lock() => g,
            };
            // Another caller may have read our answer meanwhile.
            if let Ok(r) = rx.try_recv() {
                return r;
            }
            if rd.closed {
                return Err(CallError::Closed);
            }
            let Reader { buf, scratch, .. } = &mut *rd;
            let got = self.sock.recv(buf, scratch, MAX_BODY + HEADER_LEN).await?;
            let msg = match got {
                Received::Message(m) => m.freeze(),
                Received::End => {
                    rd.closed = true;
                    // Everyone waiting learns at once.
                    for (_, tx) in self.lock_pending().drain() {
                        let _ = tx.send(Err(CallError::Closed));
                    }
                    return Err(CallError::Closed);
                }
                Received::TooLarge { len, .. } => {
                    return Err(CallError::Protocol(format!("a message of {len} bytes")))
                }
            };
            let h = match Header::parse(&msg) {
                Ok(h) => h,
                Err(e @ (HeaderError::Short(_) | HeaderError::Kind(_) | HeaderError::Reserved)) => {
                    return Err(CallError::Protocol(e.to_string()))
                }
            };
            if h.id == id {
                return answer(h, msg);
            }
            let waiter = self.lock_pending().remove(&h.id);
            if let Some(tx) = waiter {
                let _ = tx.send(answer(h, msg));
            }
            // Else an answer to a call that timed out: dropped.
        }
    }
}

//! The serving side: [`Server`].

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use crate::proto::{ErrorCode, Header, Kind, HEADER_LEN};
use crate::socket::{Received, SeqPacket};
use crate::MAX_BODY;

/// Why registering or serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The bridge refused the registration (another server serves the
    /// service: [`ErrorCode::ServerExists`]).
    #[error("the bridge refused to register this server: {0}")]
    Refused(ErrorCode),
    /// The bridge closed the connection.
    #[error("the bridge closed the connection")]
    Closed,
    /// The bridge sent something this library does not understand.
    #[error("bad message from the bridge: {0}")]
    Protocol(String),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One incoming call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Its id, for [`Server::reply`] and [`Server::fail`].
    pub id: u32,
    /// The request body.
    pub body: Bytes,
}

/// A server registered for a service: it receives the calls of the
/// peer's clients. The next server to register after this one goes
/// away takes over; calls in flight when it went fail with
/// [`ErrorCode::ServerGone`].
#[derive(Debug)]
pub struct Server {
    sock: Arc<SeqPacket>,
    buf: BytesMut,
    scratch: Vec<u8>,
}

impl Server {
    /// Registers with `service` of bridge instance `instance`.
    pub async fn register(instance: &str, service: &str) -> Result<Server, ServeError> {
        Self::register_path(&crate::socket_path(instance, service)).await
    }

    /// Registers on the socket at `path`.
    pub async fn register_path(path: &Path) -> Result<Server, ServeError> {
        let sock = SeqPacket::connect(path).await?;
        sock.send(&[&Header::new(Kind::Serve, 0).to_bytes()])
            .await?;
        let mut s = Server {
            sock: Arc::new(sock),
            buf: BytesMut::new(),
            scratch: Vec::new(),
        };
        let m = s.recv_msg().await?.ok_or(ServeError::Closed)?;
        let h = Header::parse(&m).map_err(|e| ServeError::Protocol(e.to_string()))?;
        match h.kind {
            Kind::Serving => Ok(s),
            Kind::Error => Err(ServeError::Refused(ErrorCode::from_u8(h.code))),
            k => Err(ServeError::Protocol(format!("{k:?} instead of Serving"))),
        }
    }

    async fn recv_msg(&mut self) -> Result<Option<Bytes>, ServeError> {
        match self
            .sock
            .recv(&mut self.buf, &mut self.scratch, MAX_BODY + HEADER_LEN)
            .await?
        {
            Received::Message(m) => Ok(Some(m.freeze())),
            Received::End => Ok(None),
            Received::TooLarge { len, .. } => {
                Err(ServeError::Protocol(format!("a message of {len} bytes")))
            }
        }
    }

    /// The next call; `None` when the bridge closed the connection.
    pub async fn next(&mut self) -> Result<Option<Call>, ServeError> {
        let Some(m) = self.recv_msg().await? else {
            return Ok(None);
        };
        let h = Header::parse(&m).map_err(|e| ServeError::Protocol(e.to_string()))?;
        if h.kind != Kind::Call {
            return Err(ServeError::Protocol(format!(
                "{:?} instead of Call",
                h.kind
            )));
        }
        Ok(Some(Call {
            id: h.id,
            body: m.slice(HEADER_LEN..),
        }))
    }

    /// Answers call `id` with `body`.
    pub async fn reply(&self, id: u32, body: &[u8]) -> io::Result<()> {
        send_reply(&self.sock, id, Ok(body)).await
    }

    /// Fails call `id` with an application code (128..=255 by convention;
    /// the caller sees `CallError::Remote(ErrorCode::Other(code))`).
    pub async fn fail(&self, id: u32, code: u8) -> io::Result<()> {
        send_reply(&self.sock, id, Err(code)).await
    }

    /// Serves calls one after the other, in order: the lowest latency
    /// (no task switch between the socket and `handler`). `Err(code)` from
    /// the handler fails the call with that code. Returns when the bridge
    /// closes the connection.
    pub async fn serve<F, Fut, B>(mut self, handler: F) -> Result<(), ServeError>
    where
        F: Fn(Bytes) -> Fut,
        Fut: Future<Output = Result<B, u8>>,
        B: AsRef<[u8]>,
    {
        while let Some(call) = self.next().await? {
            let r = handler(call.body).await;
            send_reply(
                &self.sock,
                call.id,
                r.as_ref().map(AsRef::as_ref).map_err(|c| *c),
            )
            .await?;
        }
        Ok(())
    }

    /// Serves up to `limit` calls at once, each in its own task (answers
    /// go back as they are ready; the bridge puts them in order per
    /// client connection).
    pub async fn serve_concurrent<F, Fut, B>(
        mut self,
        limit: usize,
        handler: F,
    ) -> Result<(), ServeError>
    where
        F: Fn(Bytes) -> Fut,
        Fut: Future<Output = Result<B, u8>> + Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
    {
        let mut tasks: JoinSet<io::Result<()>> = JoinSet::new();
        loop {
            while tasks.len() >= limit.max(1) {
                if let Some(r) = tasks.join_next().await {
                    r.map_err(|e| ServeError::Protocol(format!("handler task: {e}")))??;
                }
            }
            let Some(call) = self.next().await? else {
                break;
            };
            let sock = self.sock.clone();
            let fut = handler(call.body);
            tasks.spawn(async move {
                let r = fut.await;
                send_reply(
                    &sock,
                    call.id,
                    r.as_ref().map(AsRef::as_ref).map_err(|c| *c),
                )
                .await
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

async fn send_reply(sock: &SeqPacket, id: u32, r: Result<&[u8], u8>) -> io::Result<()> {
    match r {
        Ok(body) => {
            sock.send(&[&Header::new(Kind::Reply, id).to_bytes(), body])
                .await
        }
        Err(code) => {
            sock.send(&[&Header::error(ErrorCode::from_u8(code), id).to_bytes()])
                .await
        }
    }
}

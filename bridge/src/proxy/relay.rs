//! Moving one connection's bytes between a local socket and a channel.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use tbbridge_transport::pump::{Channel, ChannelIo, RecvError, SendError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::sockets::{reset_tcp, Conn, SeqPacket};
use super::stats::ProxyStats;
use super::RELAY_BUF;

/// Largest message a seqpacket proxy carries: what one record and a few
/// of its neighbours hold; larger packets are refused by the socket layer
/// (never truncated).
pub const MAX_SEQPACKET: usize = 1 << 20;

/// How a relayed connection ended.
#[derive(Debug)]
pub enum Ended {
    /// Both directions finished.
    Done,
    /// The channel was reset or its session ended: the local socket was
    /// reset too.
    ChannelGone(io::Error),
    /// The local socket failed: the channel was reset.
    SocketFailed(io::Error),
}

/// Was `e` raised by the channel side of a relay?
fn from_channel(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<RecvError>() || inner.is::<SendError>())
}

/// An `AsyncRead + AsyncWrite` that counts what passes, so `status` moves
/// while a transfer runs (not only when it ends).
struct Counted<'a, S> {
    inner: S,
    read: &'a AtomicU64,
    written: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read
            .fetch_add((buf.filled().len() - before) as u64, Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn relay_io<S>(sock: &mut S, ch: Channel, stats: &ProxyStats) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = match ChannelIo::new(ch) {
        Ok(io) => io,
        Err(e) => return Ended::ChannelGone(e),
    };
    let mut local = Counted {
        inner: sock,
        read: &stats.bytes_out,
        written: &stats.bytes_in,
    };
    match tokio::io::copy_bidirectional_with_sizes(&mut local, &mut io, RELAY_BUF, RELAY_BUF).await
    {
        Ok(_) => Ended::Done,
        Err(e) if from_channel(&e) => Ended::ChannelGone(e),
        Err(e) => {
            let _ = io.channel().reset();
            Ended::SocketFailed(e)
        }
    }
}

/// Relays `conn` over `ch` until both directions ended or one side failed
/// (then the other is reset: a TCP RST, a channel reset).
pub async fn relay(conn: Conn, ch: Channel, stats: &ProxyStats) -> Ended {
    let ended = match conn {
        Conn::Tcp(mut s) => {
            let e = relay_io(&mut s, ch, stats).await;
            if matches!(e, Ended::ChannelGone(_)) {
                reset_tcp(&s);
            }
            e
        }
        Conn::Unix(mut s) => relay_io(&mut s, ch, stats).await,
        Conn::SeqPacket(s) => relay_seqpacket(&s, ch, stats).await,
    };
    if !matches!(ended, Ended::Done) {
        stats.resets.fetch_add(1, Relaxed);
    }
    ended
}

/// A seqpacket connection over a message channel: one message per packet
/// each way, the end of each direction passed on.
async fn relay_seqpacket(s: &SeqPacket, ch: Channel, stats: &ProxyStats) -> Ended {
    let up = async {
        let mut buf = vec![0u8; MAX_SEQPACKET];
        loop {
            match s.recv(&mut buf).await {
                Ok(Some(n)) => {
                    ch.send_message(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .map_err(|e| (true, io::Error::from(e)))?;
                    stats.bytes_out.fetch_add(n as u64, Relaxed);
                }
                Ok(None) => return ch.finish().map_err(|e| (true, e.into())),
                Err(e) => return Err((false, e)),
            }
        }
    };
    let down = async {
        loop {
            match ch.recv_message().await {
                Ok(Some(m)) => {
                    s.send(&m).await.map_err(|e| (false, e))?;
                    stats.bytes_in.fetch_add(m.len() as u64, Relaxed);
                }
                Ok(None) => return s.shutdown_write().map_err(|e| (false, e)),
                Err(e) => return Err((true, e.into())),
            }
        }
    };
    match tokio::try_join!(up, down) {
        Ok(_) => Ended::Done,
        Err((true, e)) => Ended::ChannelGone(e),
        Err((false, e)) => {
            let _ = ch.reset();
            Ended::SocketFailed(e)
        }
    }
}

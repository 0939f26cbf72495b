//! Stream channels as tokio byte streams: [`ChannelIo`] implements
//! `AsyncRead` and `AsyncWrite` (quinn's `SendStream`/`RecvStream` on a
//! sans-IO core), so front-ends use `tokio::io::copy_bidirectional` and
//! friends instead of hand-written copy loops.
//!
//! * `poll_write` takes as much as the channel's send buffer has room for
//!   (one copy into the session's memory, where it stays until the peer
//!   acknowledged it); `Pending` while the buffer is full (the peer's
//!   credit is what empties it: a slow reader slows its writer).
//! * `poll_flush` is immediate: handed to the channel is handed to the
//!   cable (the pump writes it when the device takes it).
//! * `poll_shutdown` finishes our direction (half-close): the peer reads
//!   EOF after our last byte and may keep sending.
//! * Errors become `io::Error` here and only here, with the kind a socket
//!   would give: `ConnectionReset` for a reset channel, `BrokenPipe` after
//!   finish, `NotConnected` when its session ended.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Channel, SendError};
use crate::ChannelKind;

/// A stream channel as a byte stream; see the module documentation.
#[derive(Debug)]
pub struct ChannelIo {
    ch: Channel,
    /// Received bytes not yet read.
    leftover: Bytes,
    /// We finished our direction.
    shut: bool,
}

impl ChannelIo {
    /// Wraps a stream channel. Message and datagram channels keep their
    /// whole-record API: `InvalidInput` for them.
    pub fn new(ch: Channel) -> io::Result<Self> {
        if ch.kind() != ChannelKind::Stream {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a {:?} channel is not a byte stream", ch.kind()),
            ));
        }
        Ok(Self {
            ch,
            leftover: Bytes::new(),
            shut: false,
        })
    }

    /// The channel underneath.
    pub fn channel(&self) -> &Channel {
        &self.ch
    }

    /// Gives the channel back (bytes received and not read are dropped).
    pub fn into_inner(self) -> Channel {
        self.ch
    }
}

impl AsyncRead for ChannelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if self.leftover.is_empty() {
            match self.ch.poll_recv(cx, buf.remaining()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(b))) => self.leftover = b,
                // End of the peer's direction: EOF.
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            }
        }
        let n = self.leftover.len().min(buf.remaining());
        let head = self.leftover.split_to(n);
        buf.put_slice(&head);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChannelIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(SendError::Finished.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Copy no more than the send buffer takes now.
        let room = match self.ch.send_room() {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Err(e.into())),
        };
        let n = buf.len().min(room.max(1));
        let data = Bytes::copy_from_slice(&buf[..n]);
        self.ch.poll_send(cx, &data).map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut {
            self.shut = true;
            if let Err(e) = self.ch.finish() {
                return Poll::Ready(Err(e.into()));
            }
        }
        Poll::Ready(Ok(()))
    }
}

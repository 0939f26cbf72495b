//! Channel handles for front-ends: async send/receive with backpressure.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{Bridge, Shared, State};
use crate::session::{
    ChannelError, ChannelId, ChannelKind, Class, Recv, RejectReason, SendError, Session,
};

/// Incoming channels a listener may hold before new ones are refused.
const LISTEN_BACKLOG: usize = 1024;

/// One channel of a bridge. Dropping it finishes our direction after the
/// queued data and discards whatever still arrives.
#[derive(Debug)]
pub struct Channel {
    shared: Arc<Shared>,
    id: ChannelId,
    kind: ChannelKind,
    detached: bool,
    /// The session this channel belongs to (`State::generation`): after
    /// the peer's goodbye the pump starts a new session whose channel ids
    /// start over, and old handles must not touch its channels.
    generation: u64,
}

/// Incoming channels for one service name.
#[derive(Debug)]
pub struct Listener {
    shared: Arc<Shared>,
    service: String,
    rx: mpsc::Receiver<Channel>,
}

fn stale() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the session of this channel ended (the peer said goodbye)",
    )
}

fn gone(st: &State, id: ChannelId) -> io::Error {
    match st.reset.get(&id) {
        Some(why) => io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("channel {id} reset ({why:?})"),
        ),
        None => io::Error::new(
            io::ErrorKind::NotConnected,
            format!("channel {id} is closed"),
        ),
    }
}

fn send_error(st: &State, id: ChannelId, e: SendError) -> io::Error {
    match e {
        SendError::UnknownChannel => gone(st, id),
        SendError::TooLarge { .. } | SendError::WrongKind(_) => {
            io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
        }
        _ => io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()),
    }
}

fn chan_error(st: &State, id: ChannelId, e: ChannelError) -> io::Error {
    match e {
        ChannelError::UnknownChannel => gone(st, id),
        ChannelError::Invalid(_) => io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
    }
}

impl Channel {
    pub(crate) fn new(shared: Arc<Shared>, id: ChannelId, st: &State) -> Self {
        let kind = st
            .session
            .channels()
            .find(|(c, ..)| *c == id)
            .map_or(ChannelKind::Stream, |(_, k, ..)| k);
        Self {
            shared,
            id,
            kind,
            detached: false,
            generation: st.generation,
        }
    }

    /// Locks the bridge state, or fails if this channel's session ended.
    fn state(&self) -> io::Result<std::sync::MutexGuard<'_, State>> {
        let st = self.shared.lock();
        if st.generation != self.generation {
            return Err(stale());
        }
        Ok(st)
    }

    /// Drops the handle without touching the session (the caller holds the
    /// lock and deals with the channel itself).
    pub(crate) fn detach(mut self) {
        self.detached = true;
    }

    /// The channel's id.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// The channel's kind.
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// Sends all of `data` on a stream channel, waiting for credit as
    /// needed. No copy: the bytes are referenced until acknowledged.
    pub async fn send(&self, mut data: Bytes) -> io::Result<()> {
        poll_fn(|cx| {
            let mut st = match self.state() {
                Ok(st) => st,
                Err(e) => return Poll::Ready(Err(e)),
            };
            loop {
                match st.session.send(self.id, data.clone()) {
                    Ok(n) => {
                        let _ = data.split_to(n);
                        super::flush_inline(&self.shared, &mut st);
                        if data.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Err(SendError::Blocked) => {
                        super::Wakers::add(
                            &mut st.wakers.entry(self.id).or_default().write,
                            cx.waker(),
                        );
                        return Poll::Pending;
                    }
                    Err(e) => return Poll::Ready(Err(send_error(&st, self.id, e))),
                }
            }
        })
        .await
    }

    /// Sends one message on a message channel, waiting for room.
    pub async fn send_message(&self, msg: Bytes) -> io::Result<()> {
        poll_fn(|cx| {
            let mut st = match self.state() {
                Ok(st) => st,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match st.session.send_message(self.id, msg.clone()) {
                Ok(()) => {
                    super::flush_inline(&self.shared, &mut st);
                    Poll::Ready(Ok(()))
                }
                Err(SendError::Blocked) => {
                    super::Wakers::add(
                        &mut st.wakers.entry(self.id).or_default().write,
                        cx.waker(),
                    );
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(send_error(&st, self.id, e))),
            }
        })
        .await
    }

    /// Queues one datagram; `Ok(false)` if it was dropped (queue full).
    pub fn send_datagram(&self, d: Bytes) -> io::Result<bool> {
        let mut st = self.state()?;
        match st.session.send_datagram(self.id, d) {
            Ok(sent) => {
                super::flush_inline(&self.shared, &mut st);
                Ok(sent)
            }
            Err(e) => Err(send_error(&st, self.id, e)),
        }
    }

    async fn recv_with(
        &self,
        f: impl Fn(&mut Session) -> Result<Recv, ChannelError>,
    ) -> io::Result<Option<Bytes>> {
        poll_fn(|cx| {
            let mut st = match self.state() {
                Ok(st) => st,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let r = f(&mut st.session);
            if st.session.has_control() {
                self.shared.notify.notify_one();
            }
            match r {
                Ok(Recv::Data(b)) => Poll::Ready(Ok(Some(b))),
                Ok(Recv::Fin) => Poll::Ready(Ok(None)),
                Ok(Recv::Blocked) => {
                    super::Wakers::add(&mut st.wakers.entry(self.id).or_default().read, cx.waker());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(chan_error(&st, self.id, e))),
            }
        })
        .await
    }

    /// Receives up to `max` bytes of a stream channel; `None` at the end.
    pub async fn recv(&self, max: usize) -> io::Result<Option<Bytes>> {
        let id = self.id;
        self.recv_with(move |s| s.recv(id, max)).await
    }

    /// Receives one message; `None` at the end.
    pub async fn recv_message(&self) -> io::Result<Option<Bytes>> {
        let id = self.id;
        self.recv_with(move |s| s.recv_message(id)).await
    }

    /// Receives one datagram; `None` when the peer closed the channel.
    pub async fn recv_datagram(&self) -> io::Result<Option<Bytes>> {
        let id = self.id;
        self.recv_with(move |s| s.recv_datagram(id)).await
    }

    /// Ends our direction after the queued data (the peer reads EOF).
    pub fn finish(&self) -> io::Result<()> {
        let mut st = self.state()?;
        let r = st.session.finish(self.id);
        self.shared.notify.notify_one();
        r.map_err(|e| chan_error(&st, self.id, e))
    }

    /// Bytes sent and not yet acknowledged by the peer.
    pub fn unacked(&self) -> u64 {
        self.state()
            .map(|st| st.session.unacked(self.id).unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        let Ok(mut st) = self.state() else {
            return;
        };
        let _ = st.session.release(self.id);
        st.wakers.remove(&self.id);
        st.reset.remove(&self.id);
        drop(st);
        self.shared.notify.notify_one();
    }
}

impl Listener {
    /// The next incoming channel; `None` once the bridge stopped.
    pub async fn accept(&mut self) -> Option<Channel> {
        self.rx.recv().await
    }

    /// The service name this listener serves.
    pub fn service(&self) -> &str {
        &self.service
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shared.lock().listeners.remove(&self.service);
    }
}

impl Bridge {
    /// Accepts channels the peer opens to `service`. Channels to services
    /// nobody listens on are refused (the peer sees `NoService`).
    pub fn listen(&self, service: &str) -> Listener {
        let (tx, rx) = mpsc::channel(LISTEN_BACKLOG);
        self.shared()
            .lock()
            .listeners
            .insert(service.to_owned(), tx);
        Listener {
            shared: self.shared().clone(),
            service: service.to_owned(),
            rx,
        }
    }

    /// Opens a channel to `service` on the peer and waits for its answer.
    pub async fn open(
        &self,
        kind: ChannelKind,
        class: Class,
        service: &str,
    ) -> io::Result<Channel> {
        let (tx, rx) = oneshot::channel();
        let ch = {
            let mut st = self.shared().lock();
            let id = st
                .session
                .open(kind, class, service)
                .map_err(|e| io::Error::other(e.to_string()))?;
            st.opening.insert(id, tx);
            Channel {
                shared: self.shared().clone(),
                id,
                kind,
                detached: false,
                generation: st.generation,
            }
        };
        self.shared().notify.notify_one();
        match rx.await {
            Ok(Ok(())) => Ok(ch),
            Ok(Err(why)) => {
                let kind = match why {
                    RejectReason::NoService => io::ErrorKind::ConnectionRefused,
                    _ => io::ErrorKind::ConnectionReset,
                };
                Err(io::Error::new(
                    kind,
                    format!("open of {service:?} refused: {why:?}"),
                ))
            }
            Err(_) => Err(io::Error::new(io::ErrorKind::BrokenPipe, "bridge stopped")),
        }
    }
}

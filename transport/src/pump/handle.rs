//! Channel handles for front-ends: async send/receive with backpressure.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::error::{Gone, ListenError, OpenError, RecvError, SendError};
use super::{Bridge, ListenerSlot, Shared, Slot, State, Wakers};
use crate::session::{self, ChannelError, ChannelId, ChannelKind, Class, Recv, Session};
use crate::wire::MAX_SERVICE_NAME;

/// Incoming channels a listener may hold before new ones are refused.
const LISTEN_BACKLOG: usize = 1024;

/// One channel of a bridge. Dropping it finishes our direction after the
/// queued data and discards whatever still arrives.
#[derive(Debug)]
pub struct Channel {
    shared: Arc<Shared>,
    id: ChannelId,
    kind: ChannelKind,
    class: Class,
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
    id: u64,
    rx: mpsc::Receiver<Channel>,
}

/// Why a channel the session no longer knows is gone.
fn gone(st: &State, id: ChannelId) -> Gone {
    let slot = st.slots.get(&id);
    match (slot.and_then(|s| s.reset), slot.and_then(|s| s.refused)) {
        (Some(why), _) => Gone::Reset(why),
        (None, Some(why)) => Gone::Refused(why),
        (None, None) => Gone::Closed,
    }
}

fn send_error(st: &State, id: ChannelId, e: session::SendError) -> SendError {
    match e {
        session::SendError::UnknownChannel => SendError::Gone(gone(st, id)),
        session::SendError::WrongKind(k) => SendError::WrongKind(k),
        session::SendError::TooLarge { len, max } => SendError::TooLarge { len, max },
        session::SendError::Finished => SendError::Finished,
        session::SendError::Closing => SendError::Closing,
        // Handled by the callers (they wait).
        session::SendError::Blocked => SendError::Closing,
    }
}

fn recv_error(st: &State, id: ChannelId, kind: ChannelKind, e: ChannelError) -> RecvError {
    match e {
        ChannelError::UnknownChannel => RecvError::Gone(gone(st, id)),
        ChannelError::Invalid(_) => RecvError::WrongKind(kind),
    }
}

impl Channel {
    /// A handle for a channel the peer opened (the pump holds the lock).
    pub(crate) fn incoming(shared: Arc<Shared>, id: ChannelId, st: &mut State) -> Self {
        let (kind, class) = st
            .session
            .channels()
            .find(|(c, ..)| *c == id)
            .map_or((ChannelKind::Stream, Class::Normal), |(_, k, c, _)| (k, c));
        st.slots.insert(id, Slot::default());
        Self {
            shared,
            id,
            kind,
            class,
            detached: false,
            generation: st.generation,
        }
    }

    /// Locks the bridge state, or fails if this channel's session ended.
    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, Gone> {
        let st = self.shared.lock();
        if st.generation != self.generation {
            return Err(Gone::SessionEnded);
        }
        Ok(st)
    }

    /// Drops the handle without touching the session (the caller holds the
    /// lock and deals with the channel itself).
    pub(crate) fn detach(mut self, st: &mut State) {
        st.slots.remove(&self.id);
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

    /// The channel's class (for an incoming channel, the one its opener
    /// asked for): a receiver serving several channels can serve the
    /// latency class first, as the sender's session did.
    pub fn class(&self) -> Class {
        self.class
    }

    fn wait_write(&self, st: &mut State, cx: &Context<'_>) {
        if let Some(slot) = st.slots.get_mut(&self.id) {
            Wakers::add(&mut slot.wakers.write, cx.waker());
        }
    }

    fn wait_read(&self, st: &mut State, cx: &Context<'_>) {
        if let Some(slot) = st.slots.get_mut(&self.id) {
            Wakers::add(&mut slot.wakers.read, cx.waker());
        }
    }

    /// Bytes the send buffer of a stream channel takes now.
    pub fn send_room(&self) -> Result<usize, SendError> {
        let mut st = self.state().map_err(SendError::Gone)?;
        st.session
            .send_room(self.id)
            .map_err(|e| send_error(&st, self.id, e))
    }

    /// Queues as much of `data` as the send buffer takes now: `Ready(n)`
    /// with `n > 0` (a prefix, no copy), or `Pending` until there is room.
    pub fn poll_send(&self, cx: &mut Context<'_>, data: &Bytes) -> Poll<Result<usize, SendError>> {
        let mut st = match self.state() {
            Ok(st) => st,
            Err(g) => return Poll::Ready(Err(SendError::Gone(g))),
        };
        match st.session.send(self.id, data.clone()) {
            Ok(n) => {
                super::tx::flush_inline(&self.shared, &mut st);
                Poll::Ready(Ok(n))
            }
            Err(session::SendError::Blocked) => {
                self.wait_write(&mut st, cx);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(send_error(&st, self.id, e))),
        }
    }

    /// Sends all of `data` on a stream channel, waiting for credit as
    /// needed. No copy: the bytes are referenced until acknowledged.
    pub async fn send(&self, mut data: Bytes) -> Result<(), SendError> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.poll_send(cx, &data)).await?;
            let _ = data.split_to(n);
        }
        Ok(())
    }

    /// Sends one message on a message channel, waiting for room.
    pub async fn send_message(&self, msg: Bytes) -> Result<(), SendError> {
        poll_fn(|cx| {
            let mut st = match self.state() {
                Ok(st) => st,
                Err(g) => return Poll::Ready(Err(SendError::Gone(g))),
            };
            match st.session.send_message(self.id, msg.clone()) {
                Ok(()) => {
                    super::tx::flush_inline(&self.shared, &mut st);
                    Poll::Ready(Ok(()))
                }
                Err(session::SendError::Blocked) => {
                    self.wait_write(&mut st, cx);
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(send_error(&st, self.id, e))),
            }
        })
        .await
    }

    /// Queues one datagram; `Ok(false)` if it was dropped (queue full).
    pub fn send_datagram(&self, d: Bytes) -> Result<bool, SendError> {
        let mut st = self.state().map_err(SendError::Gone)?;
        match st.session.send_datagram(self.id, d) {
            Ok(sent) => {
                super::tx::flush_inline(&self.shared, &mut st);
                Ok(sent)
            }
            Err(e) => Err(send_error(&st, self.id, e)),
        }
    }

    /// Queues several datagrams under one lock and writes them with one
    /// flush (one device write when the pump is idle): a front-end that
    /// reads packets in batches pays one lock round trip per batch, not
    /// per packet. Takes every datagram out of `ds`; returns how many were
    /// queued (the others were dropped: queue full, counted as by
    /// [`send_datagram`](Self::send_datagram)).
    pub fn send_datagrams(&self, ds: &mut Vec<Bytes>) -> Result<usize, SendError> {
        if ds.is_empty() {
            return Ok(0);
        }
        let mut st = self.state().map_err(SendError::Gone)?;
        let mut sent = 0;
        for d in ds.drain(..) {
            match st.session.send_datagram(self.id, d) {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(e) => {
                    let e = send_error(&st, self.id, e);
                    super::tx::flush_inline(&self.shared, &mut st);
                    return Err(e);
                }
            }
        }
        super::tx::flush_inline(&self.shared, &mut st);
        Ok(sent)
    }

    /// Bytes of datagrams queued on this channel and not yet taken into a
    /// transmit: `Ready(n)` when `n <= wake_at`, else `Pending` until the
    /// queue has drained to `wake_at`. A front-end with its own queue (the
    /// TUN's fair queue) hands packets over only while this is short, so
    /// packets wait where flows can be told apart.
    pub fn poll_datagram_queued(
        &self,
        cx: &mut Context<'_>,
        wake_at: usize,
    ) -> Poll<Result<usize, SendError>> {
        let mut st = match self.state() {
            Ok(st) => st,
            Err(g) => return Poll::Ready(Err(SendError::Gone(g))),
        };
        match st.session.datagram_queued(self.id, Some(wake_at)) {
            Ok(n) if n <= wake_at => Poll::Ready(Ok(n)),
            Ok(_) => {
                self.wait_write(&mut st, cx);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(send_error(&st, self.id, e))),
        }
    }

    /// Takes up to `max` received datagrams under one lock into `out`:
    /// `Ready(Ok(true))` when it took at least one, `Ready(Ok(false))` when
    /// the peer closed the channel and nothing is left, `Pending` until
    /// one arrives.
    pub fn poll_recv_datagrams(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<Bytes>,
        max: usize,
    ) -> Poll<Result<bool, RecvError>> {
        let mut st = match self.state() {
            Ok(st) => st,
            Err(g) => return Poll::Ready(Err(RecvError::Gone(g))),
        };
        let start = out.len();
        let mut end = Ok(Recv::Blocked);
        while out.len() - start < max.max(1) {
            match st.session.recv_datagram(self.id) {
                Ok(Recv::Data(b)) => out.push(b),
                other => {
                    end = other;
                    break;
                }
            }
        }
        if st.session.has_control() {
            // Credit or an acknowledgement is owed: the pump sends it.
            self.shared.wake_pump();
        }
        if out.len() > start {
            return Poll::Ready(Ok(true));
        }
        match end {
            Ok(Recv::Fin) => Poll::Ready(Ok(false)),
            Ok(_) => {
                self.wait_read(&mut st, cx);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(recv_error(&st, self.id, self.kind, e))),
        }
    }

    fn poll_recv_with(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut Session) -> Result<Recv, ChannelError>,
    ) -> Poll<Result<Option<Bytes>, RecvError>> {
        let mut st = match self.state() {
            Ok(st) => st,
            Err(g) => return Poll::Ready(Err(RecvError::Gone(g))),
        };
        let r = f(&mut st.session);
        if st.session.has_control() {
            // Credit or an acknowledgement is owed: the pump sends it.
            self.shared.wake_pump();
        }
        match r {
            Ok(Recv::Data(b)) => Poll::Ready(Ok(Some(b))),
            Ok(Recv::Fin) => Poll::Ready(Ok(None)),
            Ok(Recv::Blocked) => {
                self.wait_read(&mut st, cx);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(recv_error(&st, self.id, self.kind, e))),
        }
    }

    /// Takes up to `max` received bytes of a stream channel: `Ready(None)`
    /// at the end, `Pending` until something arrives.
    pub fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, RecvError>> {
        let id = self.id;
        self.poll_recv_with(cx, |s| s.recv(id, max))
    }

    /// Receives up to `max` bytes of a stream channel; `None` at the end.
    pub async fn recv(&self, max: usize) -> Result<Option<Bytes>, RecvError> {
        poll_fn(|cx| self.poll_recv(cx, max)).await
    }

    /// Receives one message; `None` at the end.
    pub async fn recv_message(&self) -> Result<Option<Bytes>, RecvError> {
        let id = self.id;
        poll_fn(|cx| self.poll_recv_with(cx, |s| s.recv_message(id))).await
    }

    /// Receives one datagram; `None` when the peer closed the channel.
    pub async fn recv_datagram(&self) -> Result<Option<Bytes>, RecvError> {
        let id = self.id;
        poll_fn(|cx| self.poll_recv_with(cx, |s| s.recv_datagram(id))).await
    }

    /// Ends our direction after the queued data (the peer reads EOF).
    pub fn finish(&self) -> Result<(), SendError> {
        let mut st = self.state().map_err(SendError::Gone)?;
        let r = st.session.finish(self.id);
        self.shared.wake_pump();
        r.map_err(|_| SendError::Gone(gone(&st, self.id)))
    }

    /// Aborts the channel both ways (the peer sees a reset).
    pub fn reset(&self) -> Result<(), SendError> {
        let mut st = self.state().map_err(SendError::Gone)?;
        let r = st.session.reset(self.id);
        if let Some(slot) = st.slots.get_mut(&self.id) {
            slot.reset = Some(session::ResetReason::Local);
        }
        super::events::wake(&mut st, self.id, true, true);
        let r = r.map_err(|_| SendError::Gone(gone(&st, self.id)));
        super::events::unlock(st);
        self.shared.wake_pump();
        r
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
        st.slots.remove(&self.id);
        drop(st);
        self.shared.wake_pump();
    }
}

impl Listener {
    /// The next incoming channel; `None` once the bridge stopped.
    pub async fn accept(&mut self) -> Option<Channel> {
        self.rx.recv().await
    }

    /// The next incoming channel if one is waiting.
    pub fn try_accept(&mut self) -> Option<Channel> {
        self.rx.try_recv().ok()
    }

    /// The service name this listener serves.
    pub fn service(&self) -> &str {
        &self.service
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        // Only this listener: a newer one of the same name stays.
        if st
            .listeners
            .get(&self.service)
            .is_some_and(|l| l.id == self.id)
        {
            st.listeners.remove(&self.service);
        }
    }
}

impl Bridge {
    /// Accepts channels the peer opens to `service`. Channels to services
    /// nobody listens on are refused (the peer sees `NoService`); a second
    /// listener for the same service is an error, not a silent takeover.
    pub fn listen(&self, service: &str) -> Result<Listener, ListenError> {
        if service.is_empty() || service.len() > MAX_SERVICE_NAME {
            return Err(ListenError::BadName(service.len()));
        }
        let mut st = self.shared().lock();
        if st.listeners.contains_key(service) {
            return Err(ListenError::InUse(service.to_owned()));
        }
        let (tx, rx) = mpsc::channel(LISTEN_BACKLOG);
        let id = st.next_listener;
        st.next_listener += 1;
        st.listeners
            .insert(service.to_owned(), ListenerSlot { id, tx });
        Ok(Listener {
            shared: self.shared().clone(),
            service: service.to_owned(),
            id,
            rx,
        })
    }

    /// Opens a channel to `service` on the peer without waiting for its
    /// answer: the fast path of a short exchange. What is sent goes out
    /// with the `Open`, within the credit the peer grants every channel
    /// opened to it (64 KiB by default; the rest after its `OpenOk`), so a
    /// request, its response and the close take about one round trip. If
    /// the peer refuses, the channel's calls fail with
    /// [`Gone::Refused`] and the reason; what was sent is dropped.
    pub fn open_now(
        &self,
        kind: ChannelKind,
        class: Class,
        service: &str,
    ) -> Result<Channel, OpenError> {
        let ch = {
            let mut st = self.shared().lock();
            let id = st.session.open(kind, class, service)?;
            st.slots.insert(id, Slot::default());
            Channel {
                shared: self.shared().clone(),
                id,
                kind,
                class,
                detached: false,
                generation: st.generation,
            }
        };
        self.shared().wake_pump();
        Ok(ch)
    }

    /// Opens a channel to `service` on the peer and waits for its answer.
    /// Cancel-safe: dropping the future abandons the channel (it is reset).
    pub async fn open(
        &self,
        kind: ChannelKind,
        class: Class,
        service: &str,
    ) -> Result<Channel, OpenError> {
        let (tx, rx) = oneshot::channel();
        let ch = {
            let mut st = self.shared().lock();
            let id = st.session.open(kind, class, service)?;
            st.slots.insert(
                id,
                Slot {
                    opening: Some(tx),
                    ..Slot::default()
                },
            );
            Channel {
                shared: self.shared().clone(),
                id,
                kind,
                class,
                detached: false,
                generation: st.generation,
            }
        };
        self.shared().wake_pump();
        match rx.await {
            Ok(Ok(())) => Ok(ch),
            Ok(Err(why)) => Err(OpenError::rejected(service, why)),
            Err(_) => Err(OpenError::Stopped),
        }
    }
}

//! The batched ring pump: drives a [`Session`] over a device.
//!
//! One tokio task per cable owns the device. Each turn of its loop it
//!
//! 1. takes the next [`Transmit`] from the session (everything that queued
//!    while the previous write was in the device: one small record when the
//!    cable is idle, several MiB under load) and hands it to one `writev`;
//! 2. reads whatever the device has into one large buffer and feeds it to
//!    the session, which splits records off it without copying;
//! 3. wakes the channel handles the session's events name.
//!
//! A short write keeps the rest of the transmit for the next turn; no
//! record is written twice, none is split by anything but the kernel.
//!
//! When the device fails (ENXIO on unplug, EOF when the peer closed, a
//! corrupt batch, an idle peer) the pump closes it, reopens it (the open
//! waits for the peer, as the real driver's does) and lets the session
//! handshake again; stream and message channels resume without loss.
//!
//! Front-ends never see any of this: they get [`Channel`] handles from
//! [`Bridge::open`] and [`Listener::accept`].

mod handle;
mod recv_buf;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

pub use self::handle::{Channel, Listener};
use crate::device::{self, AsyncDevice};
use crate::session::{ChannelId, Event, RejectReason, Session, SessionConfig, SessionStats};
use crate::wire::Transmit;

/// Opens (or reopens) the device; the future resolves when the peer is
/// attached.
pub type Opener =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<AsyncDevice>> + Send>> + Send + Sync>;

/// Segments per `writev` (Linux `IOV_MAX`).
const IOV_MAX: usize = 1024;
/// Delay before reopening after a failed open, doubling up to the maximum.
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(50);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A link that lived this long resets the backoff.
const STABLE_LINK: Duration = Duration::from_secs(2);

/// State of the link, as front-ends and `status` see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// Handshake done on an open device.
    pub connected: bool,
    /// Links brought up so far.
    pub links_up: u64,
    /// Links that resumed the previous session.
    pub resumes: u64,
    /// The session closed (goodbye done); the pump stopped.
    pub closed: bool,
    /// The goodbye confirmed delivery of everything.
    pub clean_close: bool,
}

/// Tasks waiting on one channel: any number of readers and writers (a
/// handle may be shared between tasks).
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    pub read: Vec<Waker>,
    pub write: Vec<Waker>,
}

impl Wakers {
    /// Registers `w` unless it is registered already (a future polled
    /// again must not pile up copies of its waker).
    pub fn add(list: &mut Vec<Waker>, w: &Waker) {
        if !list.iter().any(|x| x.will_wake(w)) {
            list.push(w.clone());
        }
    }
}

pub(crate) struct State {
    pub session: Session,
    pub wakers: HashMap<ChannelId, Wakers>,
    /// Channels reset by the peer or a link change (handles report it).
    pub reset: HashMap<ChannelId, crate::session::ResetReason>,
    pub listeners: HashMap<String, mpsc::Sender<Channel>>,
    pub opening: HashMap<ChannelId, oneshot::Sender<Result<(), RejectReason>>>,
    /// Incoming channels accepted but not yet handed out.
    handoff: VecDeque<(String, ChannelId)>,
    /// The configuration, for a fresh session after the peer said goodbye.
    cfg: SessionConfig,
    /// `Bridge::close` was called: stop for good after the goodbye.
    local_close: bool,
    /// Bumped whenever the session is replaced; handles of an older one
    /// are dead (see `Channel`).
    pub generation: u64,
    /// The open device, for writes from an application's task when the
    /// pump is idle (see `flush_inline`).
    dev: Option<Arc<AsyncDevice>>,
    /// The pump has a transmit under way: nobody else may write.
    writing: bool,
    /// A transmit an application's task started and could not finish: the
    /// pump writes the rest before anything else.
    tx_handoff: Option<Transmit>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the pump after an application command.
    pub notify: Notify,
    status: watch::Sender<LinkStatus>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in this crate; the state
        // is still consistent enough to shut down, so don't propagate it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running bridge: one session over one device, with its pump task.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bridge {
    shared: Arc<Shared>,
}

impl Bridge {
    /// Starts the pump on the current tokio runtime. `local_id` must be
    /// unique per process lifetime ([`random_session_id`]).
    pub fn start(opener: Opener, cfg: SessionConfig, local_id: u64) -> Bridge {
        let now = Instant::now().into_std();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                session: Session::new(cfg.clone(), local_id, now),
                cfg,
                local_close: false,
                generation: 0,
                dev: None,
                writing: false,
                tx_handoff: None,
                wakers: HashMap::new(),
                reset: HashMap::new(),
                listeners: HashMap::new(),
                opening: HashMap::new(),
                handoff: VecDeque::new(),
            }),
            notify: Notify::new(),
            status: watch::Sender::new(LinkStatus::default()),
        });
        tokio::spawn(run(shared.clone(), opener));
        Bridge { shared }
    }

    /// Starts a bridge on one end of an in-process emulated cable.
    pub fn on_emu(
        cable: &Arc<device::emu::EmuCable>,
        end: crate::CableEnd,
        cfg: SessionConfig,
    ) -> Bridge {
        let cable = cable.clone();
        let opener: Opener = Arc::new(move || {
            let cable = cable.clone();
            Box::pin(async move { cable.open_async(end).await })
        });
        Bridge::start(opener, cfg, random_session_id())
    }

    /// Starts a bridge on a device named by a [`DeviceSpec`](crate::DeviceSpec).
    pub fn on_device(
        spec: crate::DeviceSpec,
        opts: device::OpenOptions,
        cfg: SessionConfig,
    ) -> Bridge {
        let opener: Opener = Arc::new(move || {
            let spec = spec.clone();
            let opts = opts.clone();
            Box::pin(async move { device::open(&spec, &opts).await })
        });
        Bridge::start(opener, cfg, random_session_id())
    }

    /// Link state updates.
    pub fn status(&self) -> watch::Receiver<LinkStatus> {
        self.shared.status.subscribe()
    }

    /// Waits until the handshake completed.
    pub async fn connected(&self) -> io::Result<()> {
        let mut rx = self.status();
        let st = rx
            .wait_for(|s| s.connected || s.closed)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "bridge stopped"))?;
        if st.closed {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "bridge closed"));
        }
        Ok(())
    }

    /// The peer's session identity, once a handshake completed.
    pub fn peer_id(&self) -> Option<u64> {
        self.shared.lock().session.peer_id()
    }

    /// Session counters.
    pub fn stats(&self) -> SessionStats {
        self.shared.lock().session.stats()
    }

    /// Per-channel counters of every live channel.
    pub fn channel_stats(&self) -> Vec<(ChannelId, String, crate::session::ChannelStats)> {
        let st = self.shared.lock();
        st.session
            .channels()
            .filter_map(|(id, _, _, svc)| {
                st.session
                    .channel_stats(id)
                    .map(|s| (id, svc.to_owned(), s))
            })
            .collect()
    }

    /// Shuts down with a goodbye exchange; returns whether both sides
    /// confirmed that everything was delivered.
    pub async fn close(&self) -> bool {
        {
            let mut st = self.shared.lock();
            st.local_close = true;
            st.session.close(Instant::now().into_std());
        }
        self.shared.notify.notify_one();
        let mut rx = self.status();
        let clean = match rx.wait_for(|s| s.closed).await {
            Ok(s) => s.clean_close,
            Err(_) => false,
        };
        clean
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// A random session identity.
pub fn random_session_id() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: fall back to time and pid, still unique enough
        // to tell a restarted peer from the same one.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ (u64::from(std::process::id()) << 32) | 1;
    }
    u64::from_le_bytes(b) | 1
}

/// Why one link ended.
#[derive(Debug)]
enum LinkEnd {
    /// Session closed by goodbye.
    Closed,
    /// Device or protocol failure: reopen.
    Fault(String),
}

async fn run(shared: Arc<Shared>, opener: Opener) {
    let mut backoff = REOPEN_BACKOFF_MIN;
    loop {
        let dev = match opener().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("device open failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
                if shared.lock().session.is_closed() {
                    break;
                }
                continue;
            }
        };
        let dev = Arc::new(dev);
        {
            let mut st = shared.lock();
            st.session.handle_link_up(Instant::now().into_std());
            st.dev = Some(dev.clone());
        }
        let opened = Instant::now();
        let end = run_link(&shared, &dev).await;
        {
            let mut st = shared.lock();
            st.dev = None;
            st.writing = false;
            st.tx_handoff = None;
            st.session.handle_link_down();
            dispatch_events(&shared, &mut st);
        }
        shared.status.send_modify(|s| s.connected = false);
        match end {
            LinkEnd::Closed if shared.lock().local_close => break,
            LinkEnd::Closed => {
                // The peer shut down cleanly (its `down`, a reboot): start
                // a fresh session and wait for it to come back. Channels of
                // the old session are gone; their handles see that.
                tracing::info!("peer said goodbye; waiting for it to come back");
                let mut st = shared.lock();
                let cfg = st.cfg.clone();
                st.session = Session::new(cfg, random_session_id(), Instant::now().into_std());
                st.generation += 1;
                st.opening.clear();
                st.reset.clear();
                st.handoff.clear();
                wake_all(&mut st);
                drop(st);
                drop(dev);
            }
            LinkEnd::Fault(why) => {
                tracing::info!("link down: {why}; reopening the device");
                drop(dev);
                if opened.elapsed() < STABLE_LINK {
                    // Failing again right after an open (a peer that
                    // closes at once, a fault that repeats): back off
                    // instead of spinning on reopen.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
                } else {
                    backoff = REOPEN_BACKOFF_MIN;
                }
            }
        }
    }
    let clean = {
        let mut st = shared.lock();
        // Wake everyone: handles see the channels gone.
        wake_all(&mut st);
        st.listeners.clear();
        st.opening.clear();
        st.session.stats().links_up > 0
    };
    shared.status.send_modify(|s| {
        s.closed = true;
        s.connected = false;
        if !clean {
            s.clean_close = false;
        }
    });
}

async fn run_link(shared: &Arc<Shared>, dev: &AsyncDevice) -> LinkEnd {
    let mut rbuf = recv_buf::RecvBuf::new();
    let mut pending: Option<Transmit> = None;
    // One timer for the whole link, moved only when the session's deadline
    // moves (re-arming a timer every turn costs a timer-wheel update).
    let far = || Instant::now() + Duration::from_secs(3600);
    let sleep = tokio::time::sleep_until(far());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        let deadline;
        {
            let mut st = shared.lock();
            let now = Instant::now().into_std();
            if pending.is_none() {
                pending = match st.tx_handoff.take() {
                    Some(t) => Some(t),
                    None => st.session.poll_transmit(now),
                };
            }
            st.writing = pending.is_some();
            dispatch_events(shared, &mut st);
            if st.session.is_closed() && pending.is_none() {
                return LinkEnd::Closed;
            }
            deadline = st.session.poll_timeout().map(Instant::from_std);
            let missing = st.session.input_missing(&rbuf.cur);
            rbuf.prepare(missing);
        }
        if deadline != armed {
            armed = deadline;
            sleep.as_mut().reset(deadline.unwrap_or_else(far));
        }
        let has_pending = pending.is_some();
        let iov: Vec<IoSlice<'_>> = pending
            .as_ref()
            .map(|t| {
                t.segments()
                    .iter()
                    .take(IOV_MAX)
                    .map(|s| IoSlice::new(s))
                    .collect()
            })
            .unwrap_or_default();
        tokio::select! {
            r = dev.read_buf(&mut rbuf.cur) => {
                drop(iov);
                match r {
                    Ok(0) => return LinkEnd::Fault("peer closed the device (EOF)".into()),
                    Ok(_) => {
                        let mut st = shared.lock();
                        if let Err(e) = st.session.handle_input(Instant::now().into_std(), &mut rbuf.cur) {
                            return LinkEnd::Fault(e.to_string());
                        }
                    }
                    Err(e) => return LinkEnd::Fault(link_error(&e)),
                }
            }
            w = dev.writev(&iov), if has_pending => {
                drop(iov);
                match w {
                    Ok(n) => {
                        if let Some(t) = pending.as_mut() {
                            t.advance(n);
                            if t.is_empty() {
                                pending = None;
                            }
                        }
                    }
                    Err(e) => return LinkEnd::Fault(link_error(&e)),
                }
            }
            _ = shared.notify.notified(), if !has_pending => {}
            _ = &mut sleep => {
                armed = None;
                let mut st = shared.lock();
                if let Err(e) = st.session.handle_timeout(Instant::now().into_std()) {
                    return LinkEnd::Fault(e.to_string());
                }
            }
        }
    }
}

/// Called by a channel handle right after it queued something: when the
/// pump has no write under way, the new records are written from the
/// caller's task at once, sparing the hop to the pump task on the latency
/// path (a lone RPC message, a ping). Whatever the device does not take
/// goes to the pump, which also always gets a wake-up for its timers.
pub(crate) fn flush_inline(shared: &Shared, st: &mut State) {
    shared.notify.notify_one();
    if st.writing || st.tx_handoff.is_some() {
        return;
    }
    let Some(dev) = st.dev.clone() else {
        return;
    };
    let Some(mut t) = st.session.poll_transmit(Instant::now().into_std()) else {
        return;
    };
    let iov: Vec<IoSlice<'_>> = t
        .segments()
        .iter()
        .take(IOV_MAX)
        .map(|s| IoSlice::new(s))
        .collect();
    // WouldBlock or a device error: the pump meets it on its own write.
    let written = dev.try_writev(&iov).unwrap_or(0);
    drop(iov);
    t.advance(written);
    if !t.is_empty() {
        st.tx_handoff = Some(t);
        st.writing = true;
    }
}

fn link_error(e: &io::Error) -> String {
    if device::is_link_down(e) {
        "cable unplugged (ENXIO)".into()
    } else {
        format!("device error: {e}")
    }
}

/// Applies session events to the handles: wakes readers and writers, hands
/// incoming channels to listeners, resolves pending opens.
fn dispatch_events(shared: &Arc<Shared>, st: &mut State) {
    while let Some(ev) = st.session.poll_event() {
        match ev {
            Event::Connected { resumed } => {
                let stats = st.session.stats();
                shared.status.send_modify(|s| {
                    s.connected = true;
                    s.links_up = stats.links_up;
                    s.resumes = stats.resumes;
                });
                tracing::info!(resumed, "link up");
            }
            Event::Incoming { id, service, .. } => {
                if st.listeners.contains_key(&service) {
                    if st.session.accept(id).is_ok() {
                        st.handoff.push_back((service, id));
                    }
                } else {
                    let _ = st.session.reject(id, RejectReason::NoService);
                }
            }
            Event::Opened(id) => {
                if let Some(tx) = st.opening.remove(&id) {
                    let _ = tx.send(Ok(()));
                }
            }
            Event::Rejected(id, why) => {
                if let Some(tx) = st.opening.remove(&id) {
                    let _ = tx.send(Err(why));
                }
            }
            Event::Readable(id) => wake(st, id, true, false),
            Event::Writable(id) => wake(st, id, false, true),
            Event::Reset(id, why) => {
                st.reset.insert(id, why);
                if let Some(tx) = st.opening.remove(&id) {
                    let _ = tx.send(Err(RejectReason::Closed));
                }
                wake(st, id, true, true);
            }
            Event::Closed { clean } => {
                shared.status.send_modify(|s| s.clean_close = clean);
            }
        }
    }
    while let Some((service, id)) = st.handoff.pop_front() {
        let ch = Channel::new(shared.clone(), id, st);
        let refused = match st.listeners.get(&service) {
            Some(tx) => tx.try_send(ch).err().map(|e| match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            }),
            None => Some(ch),
        };
        if let Some(ch) = refused {
            // Listener gone or its backlog full: abort the channel (we hold
            // the lock, so the handle must not drop itself).
            ch.detach();
            let _ = st.session.reset(id);
            tracing::debug!(%service, "incoming channel not taken");
        }
    }
}

/// Wakes every waiting handle (their channels are gone).
fn wake_all(st: &mut State) {
    for (_, w) in st.wakers.drain() {
        w.read.into_iter().chain(w.write).for_each(Waker::wake);
    }
}

fn wake(st: &mut State, id: ChannelId, read: bool, write: bool) {
    if let Some(w) = st.wakers.get_mut(&id) {
        if read {
            w.read.drain(..).for_each(Waker::wake);
        }
        if write {
            w.write.drain(..).for_each(Waker::wake);
        }
    }
}

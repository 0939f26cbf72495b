//! The batched ring pump: drives a [`Session`] over a device.
//!
//! One tokio task per cable owns the device. Each turn of its loop it
//!
//! 1. under the state lock, hands the session's events to the channel
//!    handles (waking readers and writers, accepting incoming channels)
//!    and takes the next [`Transmit`], repeating until both are drained:
//!    an answer queued while events were handed out (an `OpenReject`, an
//!    `OpenOk`) goes out now, not at the next unrelated wake-up;
//! 2. off the lock, writes the transmit (one `writev`), sized to about what
//!    the device takes now (see `tx.rs`): a latency-class record that
//!    queues while bulk is waiting waits behind at most one such write,
//!    while bulk alone still gets multi-MiB writes;
//! 3. off the lock, reads whatever the device has into one large buffer
//!    and checks the batches' checksums (see `rx.rs`), then feeds the
//!    verified batches to the session under the lock.
//!
//! When the pump has no write under way, a channel handle that queued
//! something writes it from its own task (one task hop less on the latency
//! path); a short write hands the rest to the pump.
//!
//! When the device fails (ENXIO on unplug, EOF when the peer closed, a
//! corrupt batch, an idle peer) the pump closes it, reopens it (the open
//! waits for the peer, as the real driver's does) and lets the session
//! handshake again; stream and message channels resume without loss.
//!
//! Front-ends never see any of this: they get [`Channel`] handles from
//! [`Bridge::open`] and [`Listener::accept`].

mod error;
mod events;
mod handle;
mod link;
mod rx;
mod stream_io;
mod tx;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

pub use self::error::{Gone, LinkFault, ListenError, OpenError, RecvError, SendError};
pub use self::handle::{Channel, Listener};
pub use self::stream_io::ChannelIo;
use crate::device::{self, AsyncDevice};
use crate::session::{ChannelId, RejectReason, ResetReason, Session, SessionConfig, SessionStats};
use crate::wire::Transmit;

/// Opens (or reopens) the device; the future resolves when the peer is
/// attached.
pub type Opener =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<AsyncDevice>> + Send>> + Send + Sync>;

/// Tunables of the pump, beside the session's.
#[derive(Debug, Clone, Default)]
pub struct PumpOptions {
    /// Before parking, keep trying to read the device for this long (0:
    /// off, the default). On a machine where waking a parked thread costs
    /// tens of microseconds this buys round-trip latency with a core
    /// (in the spirit of the 7.3 driver's busy polling).
    pub busy_poll: Duration,
    /// Told every device read and write size and every round-trip time
    /// measured (the metrics exporter's histograms); `None`: nobody.
    pub observer: Option<Arc<dyn PumpObserver>>,
}

/// Sees what only a distribution shows: each device read's and write's
/// size, each round-trip time. Called from the pump (reads, RTTs: with the
/// state lock held) and from whichever task writes (writes), once per
/// system call or ping, never per record: an implementation must be
/// cheap and must not block (an atomic histogram handle obtained once).
pub trait PumpObserver: Send + Sync + std::fmt::Debug {
    /// A read returned `bytes` (> 0).
    fn device_read(&self, bytes: usize);
    /// A write took `bytes` (> 0).
    fn device_write(&self, bytes: usize);
    /// A ping was answered after `rtt`.
    fn rtt(&self, rtt: Duration);
    /// An in-band resync after corruption brought the link back after
    /// `took` (see `session::resync`).
    fn resync(&self, took: Duration) {
        let _ = took;
    }
}

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

/// Counters of the pump (the device side of a bridge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PumpStats {
    /// Reads from the device that returned data, and their bytes.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Writes to the device that took data, and their bytes.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Writes the device took only part of (its ring was full).
    pub short_writes: u64,
    /// Writes done from an application's task while the pump was idle.
    pub inline_writes: u64,
    /// Receive buffers allocated (they are reused while the application
    /// keeps up).
    pub recv_buffers: u64,
    /// Times slow readers' payloads were copied out of receive buffers
    /// so the buffers could be reused.
    pub compactions: u64,
    /// Links that ended in a fault, and the last fault.
    pub link_faults: u64,
    /// Of those, by [`LinkFault::reason`] (in order of first occurrence).
    pub faults_by_reason: Vec<(&'static str, u64)>,
    /// Links that ended in a fault before the handshake completed on them
    /// (an incompatible or garbled peer, a peer gone mid-handshake).
    pub handshake_failures: u64,
    /// Links on which the peer failed authentication (pre-shared key).
    pub auth_failures: u64,
    /// Sessions replaced by a fresh one after the peer's goodbye (its
    /// `down`, a reboot); their counters are carried over (see
    /// [`Bridge::stats`]).
    pub peer_restarts: u64,
    /// The last fault, if any.
    pub last_fault: Option<LinkFault>,
    /// Channels the peer opened to a service nobody listens on here.
    pub refused_no_service: u64,
    /// Channel handles alive now.
    pub handles: usize,
    /// Listeners registered now.
    pub listeners: usize,
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

/// What the pump keeps for a channel that has a live handle. Created with
/// the handle and removed when it drops, so nothing is kept for channels
/// nobody holds (events for those are ignored).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub wakers: Wakers,
    /// The channel was reset: the handle reports why.
    pub reset: Option<ResetReason>,
    /// `Bridge::open` waits for the peer's answer here.
    pub opening: Option<oneshot::Sender<Result<(), RejectReason>>>,
    /// The peer refused a channel opened with `Bridge::open_now`: the
    /// handle reports why.
    pub refused: Option<RejectReason>,
}

/// A registered listener: the id tells a listener from a newer one of the
/// same name (a dropped listener removes only itself).
#[derive(Debug)]
pub(crate) struct ListenerSlot {
    pub id: u64,
    pub tx: mpsc::Sender<Channel>,
}

pub(crate) struct State {
    pub session: Session,
    pub slots: HashMap<ChannelId, Slot>,
    pub listeners: HashMap<String, ListenerSlot>,
    pub next_listener: u64,
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
    /// pump is idle (see `tx::flush_inline`).
    dev: Option<Arc<AsyncDevice>>,
    /// The pump has a transmit under way: nobody else may write.
    writing: bool,
    /// A transmit an application's task started and could not finish: the
    /// pump writes the rest before anything else.
    tx_handoff: Option<Transmit>,
    /// How large the next transmit may be (see `tx::Sizer`).
    sizer: tx::Sizer,
    /// Tasks to wake once the lock is released (see `events::unlock`).
    to_wake: Vec<Waker>,
    /// The deadline the pump's timer is set for when it next sleeps (set
    /// each turn under the lock): a command whose deadline is not earlier
    /// need not wake it.
    pump_deadline: Option<std::time::Instant>,
    pub stats: PumpStats,
    /// Counters of the sessions replaced after a peer's goodbye, so that
    /// what `status` and the metrics show only grows.
    carried: SessionStats,
    /// Their channel traffic.
    carried_traffic: Vec<(crate::session::TrafficKey, crate::session::Traffic)>,
    /// The session's `rtt_samples` last told to the observer.
    pub rtt_seen: u64,
    /// `SessionStats::resyncs` already reported to the observer.
    pub resyncs_seen: u64,
    /// When a refused peer request was last logged (at most one a second).
    pub refusal_logged: Option<std::time::Instant>,
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
    notify: Notify,
    /// Set with every wake-up: a busy-polling pump, which is not waiting
    /// on `notify`, looks at it.
    kick: AtomicBool,
    status: watch::Sender<LinkStatus>,
    opts: PumpOptions,
}

impl Shared {
    /// Tells the pump that a command queued something for it.
    pub(crate) fn wake_pump(&self) {
        self.kick.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Takes the busy-poll flag.
    pub(crate) fn take_kick(&self) -> bool {
        self.kick.swap(false, Ordering::Acquire)
    }

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
        Self::start_with(opener, cfg, local_id, PumpOptions::default())
    }

    /// [`start`](Self::start) with pump options.
    pub fn start_with(
        opener: Opener,
        cfg: SessionConfig,
        local_id: u64,
        opts: PumpOptions,
    ) -> Bridge {
        let now = Instant::now().into_std();
        let session = Session::new(cfg.clone(), local_id, now);
        let max_transmit = session.config().max_transmit;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                session,
                cfg,
                local_close: false,
                generation: 0,
                dev: None,
                writing: false,
                tx_handoff: None,
                sizer: tx::Sizer::new(max_transmit),
                pump_deadline: None,
                to_wake: Vec::new(),
                stats: PumpStats::default(),
                carried: SessionStats::default(),
                carried_traffic: Vec::new(),
                rtt_seen: 0,
                resyncs_seen: 0,
                refusal_logged: None,
                slots: HashMap::new(),
                listeners: HashMap::new(),
                next_listener: 0,
                handoff: VecDeque::new(),
            }),
            notify: Notify::new(),
            kick: AtomicBool::new(false),
            status: watch::Sender::new(LinkStatus::default()),
            opts,
        });
        tokio::spawn(link::run(shared.clone(), opener));
        Bridge { shared }
    }

    /// Starts a bridge on one end of an in-process emulated cable.
    pub fn on_emu(
        cable: &Arc<device::emu::EmuCable>,
        end: crate::CableEnd,
        cfg: SessionConfig,
    ) -> Bridge {
        Self::on_emu_with(cable, end, cfg, PumpOptions::default())
    }

    /// [`on_emu`](Self::on_emu) with pump options.
    pub fn on_emu_with(
        cable: &Arc<device::emu::EmuCable>,
        end: crate::CableEnd,
        cfg: SessionConfig,
        opts: PumpOptions,
    ) -> Bridge {
        let cable = cable.clone();
        let opener: Opener = Arc::new(move || {
            let cable = cable.clone();
            Box::pin(async move { cable.open_async(end).await })
        });
        Bridge::start_with(opener, cfg, random_session_id(), opts)
    }

    /// Starts a bridge on a device named by a [`DeviceSpec`](crate::DeviceSpec).
    pub fn on_device(
        spec: crate::DeviceSpec,
        opts: device::OpenOptions,
        cfg: SessionConfig,
    ) -> Bridge {
        Self::on_device_with(spec, opts, cfg, PumpOptions::default())
    }

    /// [`on_device`](Self::on_device) with pump options.
    pub fn on_device_with(
        spec: crate::DeviceSpec,
        opts: device::OpenOptions,
        cfg: SessionConfig,
        pump: PumpOptions,
    ) -> Bridge {
        let opener: Opener = Arc::new(move || {
            let spec = spec.clone();
            let opts = opts.clone();
            Box::pin(async move { device::open(&spec, &opts).await })
        });
        Bridge::start_with(opener, cfg, random_session_id(), pump)
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

    /// This session's identity.
    pub fn local_id(&self) -> u64 {
        self.shared.lock().session.local_id()
    }

    /// The peer's session identity, once a handshake completed.
    pub fn peer_id(&self) -> Option<u64> {
        self.shared.lock().session.peer_id()
    }

    /// The peer's host identity and name (see [`Session::peer_ident`]).
    pub fn peer_ident(&self) -> Option<crate::wire::HelloIdent> {
        self.shared.lock().session.peer_ident().cloned()
    }

    /// Whether peers must prove a pre-shared key.
    pub fn authenticates(&self) -> bool {
        self.shared.lock().session.config().psk.is_some()
    }

    /// Why the peer was last refused by authentication (`None`: never, in
    /// this session).
    pub fn last_auth_failure(&self) -> Option<crate::session::auth::AuthFailure> {
        self.shared.lock().session.last_auth_failure()
    }

    /// Session counters: since the bridge started, the sessions replaced
    /// after a peer's goodbye included (gauges such as `rtt` and
    /// `recv_held` are the current session's).
    pub fn stats(&self) -> SessionStats {
        let st = self.shared.lock();
        st.carried.plus(&st.session.stats())
    }

    /// Channel traffic by kind, class and service since the bridge
    /// started, closed channels included (see
    /// [`Session::traffic`](crate::session::Session::traffic)).
    pub fn traffic(&self) -> Vec<(crate::session::TrafficKey, crate::session::Traffic)> {
        let st = self.shared.lock();
        let mut out = st.carried_traffic.clone();
        for (k, t) in st.session.traffic() {
            crate::session::traffic_entry(&mut out, k.kind, k.class, &k.service).add(&t);
        }
        out
    }

    /// Pump counters.
    pub fn pump_stats(&self) -> PumpStats {
        let st = self.shared.lock();
        PumpStats {
            handles: st.slots.len(),
            listeners: st.listeners.len(),
            ..st.stats.clone()
        }
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
        self.shared.wake_pump();
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

/// A random nonce for one link's authentication. Without an entropy
/// source it falls back to the clock and a counter: unique, not secret,
/// which still makes an old link's MACs useless on this one.
pub(crate) fn random_link_nonce() -> [u8; crate::session::auth::NONCE_LEN] {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut b = [0u8; crate::session::auth::NONCE_LEN];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        b[..8].copy_from_slice(&t.to_le_bytes());
        b[8..].copy_from_slice(&(n ^ u64::from(std::process::id()) << 32).to_le_bytes());
    }
    b
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

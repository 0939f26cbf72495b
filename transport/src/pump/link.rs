//! The pump task: open the device, run one link until it ends, reopen.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::rx::Rx;
use super::tx::{write_some, Tally};
use super::{events, LinkFault, Opener, Shared};
use crate::device::AsyncDevice;
use crate::session::Session;
use crate::wire::{Transmit, Unsealed};

/// Delay before reopening after a failed open, doubling up to the maximum.
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(50);
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A link that lived this long resets the backoff.
const STABLE_LINK: Duration = Duration::from_secs(2);
/// Turns of the loop that found work without waiting for anything, after
/// which the pump yields to the runtime: tasks it woke on its own worker
/// run, and no amount of traffic can starve them (quinn's `IO_LOOP_BOUND`).
const TURNS_BEFORE_YIELD: u32 = 16;

/// Why one link ended.
#[derive(Debug)]
enum LinkEnd {
    /// Session closed by goodbye.
    Closed,
    /// Device or protocol failure: reopen.
    Fault(LinkFault),
}

pub(crate) async fn run(shared: Arc<Shared>, opener: Opener) {
    let mut backoff = REOPEN_BACKOFF_MIN;
    loop {
        let dev = match open_running_timers(&shared, &opener).await {
            Some(Ok(d)) => d,
            // The session closed while the link was down (its goodbye
            // timer ran out): nothing to open the device for.
            None => break,
            Some(Err(e)) => {
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
            st.session
                .handle_link_up_with_nonce(Instant::now().into_std(), super::random_link_nonce());
            st.dev = Some(dev.clone());
        }
        let opened = Instant::now();
        let end = run_link(&shared, &dev).await;
        let handshaken = {
            let mut st = shared.lock();
            st.dev = None;
            st.writing = false;
            st.tx_handoff = None;
            let handshaken = st.session.is_connected();
            st.session.handle_link_down();
            if let LinkEnd::Fault(f) = &end {
                st.stats.link_faults += 1;
                st.stats.last_fault = Some(f.clone());
                count_reason(&mut st.stats.faults_by_reason, f.reason());
                if !handshaken {
                    st.stats.handshake_failures += 1;
                }
            }
            events::dispatch(&shared, &mut st);
            events::unlock(st);
            handshaken
        };
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
                let old = std::mem::replace(
                    &mut st.session,
                    Session::new(cfg, super::random_session_id(), Instant::now().into_std()),
                );
                // What status and the metrics show only grows.
                st.carried = st.carried.plus(&old.stats());
                for (k, t) in old.traffic() {
                    let t = crate::session::Traffic {
                        active: 0,
                        queued_bytes: 0,
                        ..t
                    };
                    crate::session::traffic_entry(
                        &mut st.carried_traffic,
                        k.kind,
                        k.class,
                        &k.service,
                    )
                    .add(&t);
                }
                st.rtt_seen = 0;
                st.resyncs_seen = 0;
                st.stats.peer_restarts += 1;
                st.generation += 1;
                st.handoff.clear();
                events::wake_all(&mut st);
                // Old handles check the generation and leave these alone;
                // the new session's ids start over.
                st.slots.clear();
                events::unlock(st);
                drop(dev);
            }
            LinkEnd::Fault(why) => {
                tracing::info!("link down: {why}; reopening the device");
                drop(dev);
                // A link that worked (its handshake completed) was cut by
                // the cable or the peer's absence, or by bit errors: reopen
                // at once. The open itself waits for the peer, so this
                // cannot spin, and traffic is back as soon as the cable is.
                if (handshaken && why.is_absence_or_noise()) || opened.elapsed() >= STABLE_LINK {
                    backoff = REOPEN_BACKOFF_MIN;
                } else {
                    // Failing again soon after an open, before a handshake
                    // or by the peer's fault (a peer that closes at once or
                    // violates the protocol, a half-configured peer): back
                    // off instead of cycling open/close, which once wedged
                    // a router's hop tables.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
                }
            }
        }
    }
    let clean = {
        let mut st = shared.lock();
        // Wake everyone: handles see the channels gone.
        events::wake_all(&mut st);
        st.listeners.clear();
        let clean = st.session.stats().links_up > 0;
        events::unlock(st);
        clean
    };
    shared.status.send_modify(|s| {
        s.closed = true;
        s.connected = false;
        if !clean {
            s.clean_close = false;
        }
    });
}

/// Opens the device (the open waits for the peer, possibly for long) and
/// meanwhile runs the session's timers: reliable channels stop waiting for
/// a link that stays away (`resume_timeout`, see `session::pause`), a
/// goodbye runs out. `None`: the session closed meanwhile.
async fn open_running_timers(
    shared: &Arc<Shared>,
    opener: &Opener,
) -> Option<std::io::Result<crate::device::AsyncDevice>> {
    let open = opener();
    tokio::pin!(open);
    loop {
        let deadline = shared.lock().session.poll_timeout().map(Instant::from_std);
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            r = &mut open => return Some(r),
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                let mut st = shared.lock();
                let now = Instant::now().into_std();
                // Nothing is open: a timer cannot fault a link here.
                let _ = st.session.handle_timeout(now);
                let closed = st.session.is_closed();
                events::dispatch(shared, &mut st);
                events::unlock(st);
                if closed {
                    return None;
                }
            }
        }
    }
}

async fn run_link(shared: &Arc<Shared>, dev: &AsyncDevice) -> LinkEnd {
    let mut rx = {
        let mut st = shared.lock();
        let super::State { session, stats, .. } = &mut *st;
        Rx::new(session, stats)
    };
    let mut pending: Option<Transmit> = None;
    // Built under the lock, sealed (checksummed) off it.
    let mut unsealed: Option<Unsealed> = None;
    // One timer for the whole link, moved only when the session's deadline
    // moves (re-arming a timer every turn costs a timer-wheel update).
    let far = || Instant::now() + Duration::from_secs(3600);
    let sleep = tokio::time::sleep_until(far());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    let mut turns = 0u32;
    let mut readers_waiting = false;
    // The pump's copy of the transmit sizer and its write counters, synced
    // with the shared state (which inline writers use) at each turn.
    let mut sizer = shared.lock().sizer;
    let mut tally = Tally::default();
    loop {
        // 1. Under the lock: timers, events and the next transmit, until
        //    handing out events queues nothing more.
        let deadline = {
            let mut st = shared.lock();
            let now = Instant::now().into_std();
            tally.add_to(&mut st.stats);
            if pending.is_none() {
                // Inline writers may have moved it since.
                sizer = st.sizer;
            } else {
                st.sizer = sizer;
            }
            if st.session.poll_timeout().is_some_and(|d| d <= now) {
                if let Err(e) = st.session.handle_timeout(now) {
                    return LinkEnd::Fault(e.into());
                }
            }
            loop {
                events::dispatch(shared, &mut st);
                if pending.is_none() && unsealed.is_none() {
                    match st.tx_handoff.take() {
                        Some(t) => pending = Some(t),
                        None => unsealed = st.session.poll_transmit_unsealed(now, sizer.budget()),
                    }
                }
                if !st.session.has_events() {
                    break;
                }
            }
            st.writing = pending.is_some() || unsealed.is_some();
            if st.session.is_closed() && !st.writing {
                return LinkEnd::Closed;
            }
            let missing = rx.missing();
            let super::State { session, stats, .. } = &mut *st;
            rx.buf.prepare(missing, session, stats);
            st.pump_deadline = st.session.poll_timeout();
            let deadline = st.pump_deadline.map(Instant::from_std);
            events::unlock(st);
            deadline
        };
        // 2. Off the lock: checksum and write what the device takes now.
        if let Some(u) = unsealed.take() {
            pending = Some(u.seal());
        }
        let mut progress = false;
        if let Some(t) = pending.as_mut() {
            match write_some(
                dev,
                t,
                &mut sizer,
                &mut tally,
                shared.opts.observer.as_deref(),
            ) {
                Ok(true) => {
                    pending = None;
                    progress = true;
                }
                Ok(false) => {}
                Err(f) => return LinkEnd::Fault(f),
            }
        }
        // 3. Off the lock: read what has arrived and check it.
        let mut woke = false;
        match read_and_ingest(shared, dev, &mut rx) {
            Ok(Some(w)) => {
                progress = true;
                woke = w;
            }
            Ok(None) => {}
            Err(f) => return LinkEnd::Fault(f),
        }
        if progress {
            // Readers it woke wait in this worker's LIFO slot: they run as
            // soon as the pump sleeps, without waking another thread. If
            // the pump is still busy a turn later, it yields to them.
            turns += 1;
            if turns >= TURNS_BEFORE_YIELD || readers_waiting {
                turns = 0;
                readers_waiting = false;
                tokio::task::yield_now().await;
            }
            readers_waiting |= woke;
            continue;
        }
        turns = 0;
        readers_waiting = false;
        if pending.is_none() && !shared.opts.busy_poll.is_zero() {
            match busy_poll(shared, dev, &mut rx) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(f) => return LinkEnd::Fault(f),
            }
        }
        // 4. Nothing to do now: wait for the device, a command or a timer.
        if deadline != armed {
            armed = deadline;
            sleep.as_mut().reset(deadline.unwrap_or_else(far));
        }
        let has_pending = pending.is_some();
        tokio::select! {
            r = dev.readable() => {
                if let Err(e) = r {
                    return LinkEnd::Fault(LinkFault::from_io(&e));
                }
            }
            w = dev.writable(), if has_pending => {
                if let Err(e) = w {
                    return LinkEnd::Fault(LinkFault::from_io(&e));
                }
            }
            _ = shared.notify.notified(), if !has_pending => {
                shared.take_kick();
            }
            _ = &mut sleep => {
                armed = None;
            }
        }
    }
}

/// One read without waiting, and what it brought to the session.
/// `Ok(None)`: nothing had arrived; `Ok(Some(woke))`: input was taken.
fn read_and_ingest(
    shared: &Arc<Shared>,
    dev: &AsyncDevice,
    rx: &mut Rx,
) -> Result<Option<bool>, LinkFault> {
    match rx.try_read(dev)? {
        None => Ok(None),
        Some(0) if rx.buf.cur.capacity() > rx.buf.cur.len() => Err(LinkFault::PeerClosed),
        Some(n) => {
            {
                let mut st = shared.lock();
                st.stats.reads += 1;
                st.stats.read_bytes += n as u64;
            }
            if let Some(o) = &shared.opts.observer {
                o.device_read(n);
            }
            rx.ingest(shared).map(Some)
        }
    }
}

/// Keeps trying to read for the configured time before the pump parks;
/// stops early when an application command needs the pump. `Ok(true)`:
/// something happened.
fn busy_poll(shared: &Arc<Shared>, dev: &AsyncDevice, rx: &mut Rx) -> Result<bool, LinkFault> {
    let until = std::time::Instant::now() + shared.opts.busy_poll;
    while std::time::Instant::now() < until {
        if shared.take_kick() {
            return Ok(true);
        }
        if read_and_ingest(shared, dev, rx)?.is_some() {
            return Ok(true);
        }
        std::hint::spin_loop();
    }
    Ok(false)
}

/// `counts[reason] += 1`, the entry made on first use (a handful of fixed
/// reasons: a linear search is the cheapest map).
fn count_reason(counts: &mut Vec<(&'static str, u64)>, reason: &'static str) {
    match counts.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, n)) => *n += 1,
        None => counts.push((reason, 1)),
    }
}

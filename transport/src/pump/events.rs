//! Session events applied to the channel handles: wake readers and
//! writers, hand incoming channels to listeners, answer pending opens.

use std::sync::Arc;
use std::task::Waker;

use tokio::sync::mpsc;

use super::{Channel, Shared, State};
use crate::session::{ChannelId, Event, RejectReason};

/// Applies every pending session event. Events for channels nobody holds a
/// handle to are dropped: there is nobody to tell.
pub(crate) fn dispatch(shared: &Arc<Shared>, st: &mut State) {
    while let Some(ev) = st.session.poll_event() {
        match ev {
            Event::Connected { resumed } => {
                let stats = st.carried.plus(&st.session.stats());
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
                    st.stats.refused_no_service += 1;
                    let now = std::time::Instant::now();
                    if st
                        .refusal_logged
                        .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1))
                    {
                        st.refusal_logged = Some(now);
                        tracing::warn!(
                            "the peer asked for service {service:?}, which is not defined here \
                             (refused; {} so far)",
                            st.stats.refused_no_service
                        );
                    }
                    let _ = st.session.reject(id, RejectReason::NoService);
                }
            }
            Event::Opened(id) => answer_open(st, id, Ok(())),
            Event::Rejected(id, why) => {
                // Opened without waiting (`open_now`): the handle learns
                // it from its next call.
                if let Some(slot) = st.slots.get_mut(&id) {
                    if slot.opening.is_none() {
                        slot.refused = Some(why);
                    }
                }
                answer_open(st, id, Err(why));
                wake(st, id, true, true);
            }
            Event::Readable(id) => wake(st, id, true, false),
            Event::Writable(id) => wake(st, id, false, true),
            Event::Reset(id, why) => {
                if let Some(slot) = st.slots.get_mut(&id) {
                    slot.reset = Some(why);
                }
                answer_open(st, id, Err(RejectReason::Closed));
                wake(st, id, true, true);
            }
            Event::Closed { clean } => {
                shared.status.send_modify(|s| s.clean_close = clean);
            }
            Event::AuthFailed(why) => {
                st.stats.auth_failures += 1;
                tracing::warn!("peer refused: {why}; waiting for a peer with the right key");
            }
        }
    }
    while let Some((service, id)) = st.handoff.pop_front() {
        let ch = Channel::incoming(shared.clone(), id, st);
        let refused = match st.listeners.get(&service) {
            Some(l) => l.tx.try_send(ch).err().map(|e| match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            }),
            None => Some(ch),
        };
        if let Some(ch) = refused {
            // Listener gone or its backlog full: abort the channel (we hold
            // the lock, so the handle must not drop itself).
            ch.detach(st);
            let _ = st.session.reset(id);
            tracing::debug!(%service, "incoming channel not taken");
        }
    }
}

fn answer_open(st: &mut State, id: ChannelId, r: Result<(), RejectReason>) {
    if let Some(tx) = st.slots.get_mut(&id).and_then(|s| s.opening.take()) {
        let _ = tx.send(r);
    }
}

/// Wakes every waiting handle (their channels are gone, or the session).
pub(crate) fn wake_all(st: &mut State) {
    let State { slots, to_wake, .. } = st;
    for slot in slots.values_mut() {
        let w = std::mem::take(&mut slot.wakers);
        to_wake.extend(w.read.into_iter().chain(w.write));
        if let Some(tx) = slot.opening.take() {
            let _ = tx.send(Err(RejectReason::Closed));
        }
    }
}

/// Queues the wake-up of the tasks waiting on `id`; they are woken once
/// the state lock is released ([`unlock`]), so a woken task does not run
/// into the lock its waker still holds (a futex round trip each).
pub(crate) fn wake(st: &mut State, id: ChannelId, read: bool, write: bool) {
    let State { slots, to_wake, .. } = st;
    if let Some(slot) = slots.get_mut(&id) {
        if read {
            to_wake.append(&mut slot.wakers.read);
        }
        if write {
            to_wake.append(&mut slot.wakers.write);
        }
    }
}

/// Releases the state lock, then wakes the tasks queued while it was held.
pub(crate) fn unlock(mut st: std::sync::MutexGuard<'_, State>) {
    if st.to_wake.is_empty() {
        return;
    }
    let wakers = std::mem::take(&mut st.to_wake);
    drop(st);
    wakers.into_iter().for_each(Waker::wake);
}

//! Channels opening and closing: the peer's `Open`, `OpenOk` and `Close`,
//! and what a resumed link re-announces about each channel.

use super::channel::{ChanState, Channel};
use super::input::violation;
use super::window::Limit;
use super::{
    ChannelId, ChannelKind, CloseState, Event, RejectReason, ResetReason, Session, SessionError,
};
use crate::wire::Record;

impl Session {
    /// Re-announces a channel's state on a resumed link.
    pub(super) fn resume_channel(&mut self, id: ChannelId) {
        let Some(c) = self.channels.get_mut(&id.0) else {
            return;
        };
        match c.state {
            ChanState::Opening => {
                // The window is filled in when it goes out (`push_control`).
                self.ctrl.push_back(Record::Open {
                    chan: id.peer_view(),
                    kind: c.kind,
                    class: c.class,
                    window: 0,
                    service: c.service.clone(),
                });
                if c.fin_sent {
                    // Released early, its Close went after the Open and
                    // may have been lost with it: nothing acknowledges a
                    // Close, and no resume `Window` comes for a channel
                    // the peer has not accepted. It follows the Open again
                    // (a repeat is harmless).
                    c.fin_sent = false;
                    self.activate(id);
                }
            }
            ChanState::PendingAccept => {}
            ChanState::Open => {
                if id.is_remote() {
                    self.ctrl.push_back(Record::OpenOk {
                        chan: id.peer_view(),
                        window: c.window.min(u64::from(u32::MAX)) as u32,
                    });
                }
                let done =
                    c.peer_fin == Some(c.recv_offset) && c.fin_sent && c.acked == c.write_offset;
                if c.reliable() && done {
                    // Everything arrived both ways; the peer may have let
                    // the channel go already, so don't ask it to resume.
                    // But our acknowledgement of what it sent may have
                    // been lost with the link: without it the peer keeps
                    // its end forever, waiting (a fuzz finding). Give it
                    // again, plainly, as the channel's last word would.
                    c.acked_sent = c.recv_offset;
                    c.ack_owed = false;
                    self.ctrl.push_back(Record::Window {
                        chan: id.peer_view(),
                        received: c.recv_offset,
                        limit: c.advertised.max(c.recv_offset),
                        resume: false,
                    });
                } else if c.reliable() {
                    // Credit granted is never taken back, not even by a
                    // window that shrank since.
                    c.advertised = c.advertised.max(c.consumed + c.window);
                    c.acked_sent = c.recv_offset;
                    c.ack_owed = false;
                    self.ctrl.push_back(Record::Window {
                        chan: id.peer_view(),
                        received: c.recv_offset,
                        limit: c.advertised,
                        resume: true,
                    });
                    // A message the peer cannot finish within that limit
                    // (it used the open credit our Hello announced, and
                    // our OpenOk was lost) waits for the grant that only
                    // arriving data would otherwise bring: none comes, so
                    // the grant follows the resume at once (a fuzz
                    // finding).
                    let stuck = c.stuck_message();
                    self.sync_held(id);
                    if stuck {
                        self.mark_window(id);
                    }
                } else if c.fin_sent {
                    c.fin_sent = false;
                    self.activate(id);
                }
            }
        }
    }

    pub(super) fn on_open(
        &mut self,
        id: ChannelId,
        kind: ChannelKind,
        class: super::Class,
        window: u64,
        service: String,
    ) -> Result<(), SessionError> {
        if !id.is_remote() {
            return Err(violation("Open with a locally allocated id"));
        }
        if let Some(c) = self.channels.get_mut(&id.0) {
            // A repeat after a resume: the opener never saw our OpenOk, so
            // nothing we sent after it either; it acknowledged nothing, and
            // since the link went down we send from there (`link_down`).
            // A channel still waiting for the application is answered by
            // the application.
            if c.state == ChanState::Open {
                // Our Close went with the OpenOk the opener never saw.
                c.fin_sent = false;
                let window = c.window.min(u64::from(u32::MAX)) as u32;
                self.ctrl.push_back(Record::OpenOk {
                    chan: id.peer_view(),
                    window,
                });
                self.activate(id);
            }
            return Ok(());
        }
        if let Some(word) = self.gone.get(id) {
            // A repeat for a channel we let go of: our last word again
            // (a finished one with the OpenOk the opener never saw).
            self.ctrl.extend(super::gone::Gone::records(id, word, true));
            return Ok(());
        }
        // A new channel: the peer's ids only repeat after its own wrap
        // (2^31 opens), and never while we still remember the old one.
        self.max_remote = self.max_remote.max(id.0);
        if self.close != CloseState::Open {
            self.refuse(id, RejectReason::Refused);
            return Ok(());
        }
        let own = match self.admit(kind, true) {
            Ok(w) => w,
            Err(limit) => {
                match limit {
                    Limit::Channels => self.stats.refused_too_many += 1,
                    Limit::Memory => self.stats.refused_no_memory += 1,
                    Limit::Backlog => self.stats.refused_backlog += 1,
                }
                // Data the peer sent with its Open finds the channel gone
                // and is dropped (`lookup`): it learns from this refusal.
                self.refuse(id, limit.reason());
                return Ok(());
            }
        };
        // Our starting window is at least the `open_credit` our Hello
        // announced: what the peer may send before our OpenOk.
        let mut c = Channel::new(kind, class, service.clone(), ChanState::PendingAccept, own);
        c.peer_limit = window;
        c.peer_window = window;
        self.insert_channel(id, c);
        self.push_event(Event::Incoming {
            id,
            kind,
            class,
            service,
        });
        Ok(())
    }

    pub(super) fn on_open_ok(&mut self, id: ChannelId, window: u64) -> Result<(), SessionError> {
        let Some(c) = self.lookup(id)? else {
            return Ok(());
        };
        if c.state != ChanState::Opening {
            return Ok(()); // a repeat after a resume
        }
        c.state = ChanState::Open;
        c.peer_window = window;
        c.peer_limit = c.peer_limit.max(window);
        let kind = c.kind;
        let cap = self.message_capacity(id);
        let too_big = kind == ChannelKind::Message
            && self.channels.get(&id.0).is_some_and(|c| {
                c.pending
                    .iter()
                    .any(|m| m.data.len() as u64 + u64::from(m.end) > cap)
            });
        if too_big {
            self.abort(id);
            self.push_event(Event::Reset(id, ResetReason::Local));
            return Ok(());
        }
        // The peer had our Open from an earlier link and its OpenOk (and
        // whatever it sent after it) was lost with that link: it waits for
        // our repeated Open, or our resume `Window`, to send again. If the
        // repeat is still queued, it no longer goes out (the channel is not
        // `Opening` now: `push_control`), so resume the channel as an open
        // one instead, or the peer's data would never come.
        let chan = id.peer_view();
        let repeat_queued = self
            .ctrl
            .iter()
            .any(|r| matches!(r, Record::Open { chan: c, .. } if *c == chan));
        if repeat_queued {
            self.resume_channel(id);
        }
        self.push_event(Event::Opened(id));
        self.activate(id);
        Ok(())
    }

    pub(super) fn on_close(
        &mut self,
        id: ChannelId,
        final_offset: u64,
    ) -> Result<(), SessionError> {
        let Some(c) = self.lookup(id)? else {
            return Ok(());
        };
        if c.reliable() && final_offset < c.recv_offset {
            return Err(violation(format!("{id}: Close below received data")));
        }
        if c.peer_fin.is_some_and(|f| f != final_offset) {
            return Err(violation(format!("{id}: Close moved the end")));
        }
        c.peer_fin = Some(final_offset);
        if c.released {
            c.fin_delivered = true;
        }
        // The sender is done: acknowledge at once, not after the delay.
        let ack_now = c.reliable() && c.ack_owed;
        if ack_now {
            self.mark_window(id);
        }
        self.signal_readable(id);
        self.maybe_gc(id);
        Ok(())
    }
}

//! The delivery-confirmed close (field note, spec §6: closing while the
//! peer still drains wedged real links).
//!
//! `close` stops new sends; our queued data goes out, then `Goodbye`. A
//! side that gets the peer's Goodbye has everything the peer sent before
//! it, acknowledges it all, drains its own queue and answers with its own
//! Goodbye, flagged `seen_peer`. The exchange ends, cleanly, on a side
//! when
//!
//! * the peer's Goodbye arrived (we have everything it sent),
//! * the peer confirmed ours, by a flagged Goodbye or by a `GoodbyeAck`
//!   (it has everything we sent), and
//! * every byte and message we sent is acknowledged on its channel.
//!
//! When both sides close at once their Goodbyes cross unflagged; each then
//! answers the other's with a `GoodbyeAck`. A Goodbye that crossed ours
//! confirms nothing: the peer may not have read our last data yet (the
//! first class of bugs the `session_ops` fuzzer found was exactly that).
//! After a link reset a Goodbye not yet confirmed is sent again once the
//! channels retransmitted. The close gives up, unclean, at the deadline.

use std::time::Instant;

use super::{ChannelId, CloseState, Event, Session};
use crate::wire::Record;

impl Session {
    /// Shuts the session down cleanly: queued data goes out, then both
    /// sides exchange `Goodbye` (each confirming it received everything the
    /// other sent) before the device may be closed. [`Event::Closed`]
    /// reports the outcome; give up after the configured goodbye timeout.
    pub fn close(&mut self, now: Instant) {
        if self.close == CloseState::Open {
            self.close = CloseState::Draining;
            self.close_deadline = Some(now + self.cfg.goodbye_timeout);
        }
    }

    /// Appends the closing records due on this transmit, after everything
    /// else (acknowledgements first: a side that reads our `GoodbyeAck` or
    /// our flagged Goodbye finds its data acknowledged before it).
    pub(super) fn push_goodbye(&mut self) {
        if self.goodbye_ack_due {
            self.goodbye_ack_due = false;
            self.emit(&Record::GoodbyeAck);
        }
        if self.close == CloseState::Draining && self.nothing_pending() {
            self.emit(&Record::Goodbye {
                seen_peer: self.peer_goodbye,
            });
            self.close = CloseState::GoodbyeSent;
        }
    }

    pub(super) fn on_goodbye(&mut self, now: Instant, seen_peer: bool) {
        self.peer_goodbye = true;
        // Whoever started it, the close ends by the deadline.
        self.close_deadline
            .get_or_insert(now + self.cfg.goodbye_timeout);
        // Acknowledge everything the peer sent: it all arrived before this.
        let ids: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, c)| c.reliable())
            .map(|(k, _)| ChannelId(*k))
            .collect();
        for id in ids {
            self.mark_window(id);
        }
        match self.close {
            // The peer is leaving: drain our side, then answer with a
            // flagged Goodbye.
            CloseState::Open => self.close = CloseState::Draining,
            CloseState::Draining => {}
            CloseState::GoodbyeSent => {
                // An answer to ours confirms it; a crossing one does not,
                // and the peer waits for our acknowledgement of it.
                if seen_peer {
                    self.peer_has_ours = true;
                }
                self.goodbye_ack_due = true;
            }
            CloseState::Closed => {}
        }
        self.maybe_closed();
    }

    pub(super) fn on_goodbye_ack(&mut self) {
        if self.close == CloseState::GoodbyeSent {
            self.peer_has_ours = true;
            self.maybe_closed();
        }
    }

    /// Ends the exchange, cleanly, once both sides hold everything the
    /// other sent and every byte we sent is acknowledged (see the module
    /// doc). Called whenever one of those may have become true.
    pub(super) fn maybe_closed(&mut self) {
        if self.close == CloseState::GoodbyeSent
            && self.peer_goodbye
            && self.peer_has_ours
            && self.channels.values().all(|c| c.acked == c.write_offset)
        {
            self.finish_close(true);
        }
    }

    /// On a resumed link: a Goodbye the peer has not confirmed may have
    /// been lost with the old link; send it again after whatever the
    /// channels retransmit.
    pub(super) fn resume_close(&mut self) {
        if self.close == CloseState::GoodbyeSent && !self.peer_has_ours {
            self.close = CloseState::Draining;
        }
    }

    pub(crate) fn finish_close(&mut self, clean: bool) {
        if self.close != CloseState::Closed {
            self.close = CloseState::Closed;
            self.push_event(Event::Closed { clean });
        }
    }
}

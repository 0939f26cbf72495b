//! Resume limits: how long reliable channels wait for a lost link.
//!
//! When the link goes down (a pulled cable, a peer rebooting), stream and
//! message channels keep what the peer has not acknowledged and resume on
//! the next link. A link that does not come back within `resume_timeout`
//! of its last input ends that wait: every reliable channel is reset
//! ([`ResetReason::LinkLost`], counted in `expired_channels`), its
//! application told (a proxied TCP connection is reset, a pipe fails with
//! that reason), and what it kept is freed. The `Reset` is the channel's
//! last word, given to the peer if the link does come back. Datagram
//! channels lose nothing by waiting and just resume. Channels opened while
//! the link is still down get another `resume_timeout`.
//!
//! The driver runs the timer ([`Session::handle_timeout`] at
//! [`Session::poll_timeout`]) while the device is closed too.

use std::time::Instant;

use super::{ChannelId, Event, LinkState, ResetReason, Session};

impl Session {
    /// When reliable channels stop waiting for the lost link.
    pub(super) fn resume_deadline(&self) -> Option<Instant> {
        if self.cfg.resume_timeout.is_zero() || self.link == LinkState::Up {
            return None;
        }
        self.lost_at.map(|t| t + self.cfg.resume_timeout)
    }

    /// The timer: past the deadline, reliable channels are reset.
    pub(super) fn check_pause(&mut self, now: Instant) {
        if self.resume_deadline().is_none_or(|d| d > now) {
            return;
        }
        let ids: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, c)| c.reliable())
            .map(|(id, _)| ChannelId(*id))
            .collect();
        for id in ids {
            self.abort(id);
            self.stats.expired_channels += 1;
            self.push_event(Event::Reset(id, ResetReason::LinkLost));
        }
        // Channels opened from now on wait a full period of their own.
        self.lost_at = Some(now);
    }
}

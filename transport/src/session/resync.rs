//! In-band resync: corruption recovered on the open device.
//!
//! A batch whose checksum (or magic) is wrong after the handshake used to
//! end the link: the device was closed and reopened, both sides shook
//! hands again and resumed, which took hundreds of milliseconds and, on
//! real hardware, cycled the device (open/close cycling once wedged a
//! router's hop tables). Now the side that finds the bad batch drops it,
//! skips to the next batch header with a valid checksum and starts a new
//! link *on the same byte stream*: it goes back as on a link reset
//! (reliable channels to their last acknowledged offset, queued datagrams
//! kept) and sends Hellos again, every [`INBAND_HELLO_RETRY`]. The peer,
//! up on its side, takes a Hello that has not seen its own from the peer
//! it met as the sign (an up peer sends no such Hello otherwise) and does
//! the same. Until the peer's new Hello arrives, what it sent before it
//! saw ours is skipped (counted in `resync_bytes`). The handshake then
//! resumes every channel as after a cable pull: what the bad batch held is
//! sent again, datagrams in it are lost. The device, the link as the
//! application sees it (no `Connected` event, no carrier change) and every
//! channel stay up; recovery takes about two round trips and the
//! retransmission.
//!
//! The resync is bounded: if the link is not up again within
//! `resync_timeout` of the first bad batch (corruption keeps hitting the
//! Hellos, or the peer does not take part), it is a link fault
//! ([`SessionError::ResyncFailed`]) and the driver reopens the device.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{CloseState, LinkState, Session, SessionError};

/// Hellos are resent this often during an in-band resync (the driver's
/// `handshake_retry` is for a peer that may not have opened the device
/// yet; here it has, and a lost Hello should cost milliseconds).
pub(crate) const INBAND_HELLO_RETRY: Duration = Duration::from_millis(2);

impl Session {
    /// A corrupt batch arrived after the peer's Hello: start (or restart)
    /// an in-band resync. `false`: not possible (disabled, not up, the
    /// session closed, or the current resync is out of time); the
    /// corruption is then a link fault.
    pub(super) fn start_resync(&mut self, now: Instant) -> bool {
        if self.cfg.resync_timeout.is_zero() || self.close == CloseState::Closed {
            return false;
        }
        match self.resync_since {
            Some(t) if now.saturating_duration_since(t) >= self.cfg.resync_timeout => return false,
            Some(_) => {}
            // Only an up link is resynced: a handshake that meets
            // corruption fails as before.
            None if self.link != LinkState::Up => return false,
            None => self.resync_since = Some(now),
        }
        self.relink(now);
        true
    }

    /// Whether a Hello that has not seen ours means the peer restarted the
    /// link in-band: it comes from the peer we are up with and names us
    /// (an up peer sends no unseen Hello otherwise).
    pub(super) fn peer_relinks(&self, session_id: u64, resume_of: u64) -> bool {
        self.link == LinkState::Up
            && self.peer_id == Some(session_id)
            && resume_of == self.local_id
            && session_id != self.local_id
    }

    /// The peer started an in-band resync: start ours.
    pub(super) fn join_resync(&mut self, now: Instant) -> Result<(), SessionError> {
        if self.cfg.resync_timeout.is_zero() {
            return Err(super::input::violation(
                "the peer restarted the link in-band (resync_timeout = 0 here)",
            ));
        }
        if self.resync_since.is_none() {
            self.resync_since = Some(now);
        }
        self.relink(now);
        Ok(())
    }

    /// The link is up (again): whether an in-band resync ended with it.
    pub(super) fn end_resync(&mut self, now: Instant) -> bool {
        let Some(t) = self.resync_since.take() else {
            return false;
        };
        self.stats.resyncs += 1;
        self.stats.resync_last = Some(now.saturating_duration_since(t));
        true
    }

    /// When the resync under way runs out of time.
    pub(super) fn resync_deadline(&self) -> Option<Instant> {
        self.resync_since.map(|t| t + self.cfg.resync_timeout)
    }

    /// The timer: a resync that is out of time is a link fault.
    pub(super) fn check_resync(&mut self, now: Instant) -> Result<(), SessionError> {
        match self.resync_since {
            Some(t) if self.link != LinkState::Up && now >= t + self.cfg.resync_timeout => {
                self.resync_since = None;
                self.stats.resync_failures += 1;
                Err(SessionError::ResyncFailed(now.saturating_duration_since(t)))
            }
            _ => Ok(()),
        }
    }

    /// How long to wait before sending the next Hello.
    pub(super) fn hello_interval(&self) -> Duration {
        if self.resync_since.is_some() {
            self.cfg.handshake_retry.min(INBAND_HELLO_RETRY)
        } else {
            self.cfg.handshake_retry
        }
    }

    /// Everything tied to the byte stream goes back as on a link reset, and
    /// the handshake starts over on the same device.
    fn relink(&mut self, now: Instant) {
        self.link_down(false);
        let nonce = self.next_nonce();
        self.begin_link(now, nonce);
    }

    /// A new link's nonce without the driver: derived from the current
    /// one (random when the driver gave it) and a counter, so it is as
    /// unpredictable as the driver's and never repeats.
    fn next_nonce(&mut self) -> [u8; super::auth::NONCE_LEN] {
        self.nonce_counter += 1;
        let mut h = Sha256::new();
        h.update(b"tbbridge resync nonce v1");
        h.update(self.link_nonce);
        h.update(self.local_id.to_le_bytes());
        h.update(self.nonce_counter.to_le_bytes());
        let d = h.finalize();
        let mut n = [0u8; super::auth::NONCE_LEN];
        n.copy_from_slice(&d[..super::auth::NONCE_LEN]);
        n
    }
}

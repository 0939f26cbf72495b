//! Typed errors of the channel-handle API (quinn's `ConnectionError`,
//! `WriteError`, `ReadError`): front-ends match on the variant, and the
//! conversion to `io::Error` (for `AsyncRead`/`AsyncWrite` users and
//! plain `?`) happens only at that edge, with the matching `ErrorKind`.

use std::fmt;
use std::io;

use crate::session::{self, RejectReason, ResetReason};

/// Why a link ended; what `status` shows as the last fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkFault {
    /// The peer closed its device (a read returned EOF).
    #[error("peer closed the device (EOF)")]
    PeerClosed,
    /// The cable was unplugged, or the peer went away (`ENXIO`).
    #[error("cable unplugged (ENXIO)")]
    Unplugged,
    /// Another error from the device.
    #[error("device error: {0}")]
    Device(String),
    /// The byte stream could not be trusted: corruption, a protocol
    /// violation, an idle peer, an incompatible version.
    #[error(transparent)]
    Session(#[from] session::SessionError),
}

impl LinkFault {
    /// A short, fixed name for counters and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            LinkFault::PeerClosed => "peer_closed",
            LinkFault::Unplugged => "unplugged",
            LinkFault::Device(_) => "device_error",
            LinkFault::Session(e) => e.reason(),
        }
    }

    /// The cable or the peer went away, or bits flipped on the wire: not
    /// the peer misbehaving. A link cut this way after its handshake is
    /// reopened at once (see `pump::link`); the others back off.
    pub fn is_absence_or_noise(&self) -> bool {
        match self {
            LinkFault::PeerClosed | LinkFault::Unplugged => true,
            LinkFault::Device(_) => false,
            LinkFault::Session(e) => match e {
                crate::session::SessionError::Decode(d) => d.is_corruption(),
                crate::session::SessionError::IdleTimeout(_)
                | crate::session::SessionError::ResyncFailed(_) => true,
                _ => false,
            },
        }
    }

    pub(crate) fn from_io(e: &io::Error) -> Self {
        if crate::device::is_link_down(e) {
            LinkFault::Unplugged
        } else {
            LinkFault::Device(e.to_string())
        }
    }
}

/// Why [`Bridge::open`](super::Bridge::open) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The peer's configuration has no such service (or does not allow
    /// it).
    #[error("the peer has no service {0:?}")]
    NoService(String),
    /// The peer is at its channel limit (`max_channels`).
    #[error("the peer refused {0:?}: too many channels (its max_channels)")]
    PeerBusy(String),
    /// The peer has no receive memory left for another channel.
    #[error("the peer refused {0:?}: no receive memory left (its recv_budget)")]
    PeerNoMemory(String),
    /// Too many of our opens wait for the peer's application to accept
    /// them.
    #[error("the peer refused {0:?}: too many opens wait for accept (its max_pending_opens)")]
    PeerBacklog(String),
    /// The peer's application refused the channel.
    #[error("the peer refused {0:?}")]
    Refused(String),
    /// The channel was closed or reset before it was accepted (the peer
    /// restarted, or it was a repeated open of a gone channel).
    #[error("the channel to {0:?} closed before it was accepted")]
    Closed(String),
    /// Refused here: a bad service name, our own limits, or the session
    /// is closing.
    #[error(transparent)]
    Local(#[from] session::OpenError),
    /// The bridge stopped (closed, or its pump ended).
    #[error("the bridge stopped")]
    Stopped,
}

impl OpenError {
    pub(crate) fn rejected(service: &str, why: RejectReason) -> Self {
        let s = service.to_owned();
        match why {
            RejectReason::NoService => OpenError::NoService(s),
            RejectReason::TooMany => OpenError::PeerBusy(s),
            RejectReason::NoMemory => OpenError::PeerNoMemory(s),
            RejectReason::Backlog => OpenError::PeerBacklog(s),
            RejectReason::Refused => OpenError::Refused(s),
            RejectReason::Closed => OpenError::Closed(s),
        }
    }
}

/// Why a channel can no longer be used, common to sends and receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// The channel was reset (by the peer, by a peer restart, or here).
    Reset(ResetReason),
    /// The channel is closed (finished both ways, or released).
    Closed,
    /// The session this channel belonged to ended (the peer said goodbye
    /// and a new session started, or the bridge stopped).
    SessionEnded,
    /// The peer refused the channel (opened with
    /// [`Bridge::open_now`](super::Bridge::open_now), which does not wait
    /// for its answer).
    Refused(RejectReason),
}

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gone::Reset(ResetReason::Peer) => f.write_str("the peer reset the channel"),
            Gone::Reset(ResetReason::PeerRestarted) => {
                f.write_str("the peer restarted: the channel is gone")
            }
            Gone::Reset(ResetReason::Local) => f.write_str("the channel was reset here"),
            Gone::Reset(ResetReason::LinkLost) => f.write_str(
                "the link was down longer than resume_timeout: the channel could not be resumed",
            ),
            Gone::Closed => f.write_str("the channel is closed"),
            Gone::SessionEnded => f.write_str("the session of this channel ended"),
            Gone::Refused(why) => write!(f, "the peer refused the channel: {}", refusal(*why)),
        }
    }
}

/// What a refusal means, for messages.
fn refusal(why: RejectReason) -> &'static str {
    match why {
        RejectReason::NoService => "no such service",
        RejectReason::TooMany => "too many channels (its max_channels)",
        RejectReason::Refused => "refused by its application",
        RejectReason::Closed => "closed before it was accepted",
        RejectReason::NoMemory => "no receive memory left (its recv_budget)",
        RejectReason::Backlog => "too many opens wait for accept (its max_pending_opens)",
    }
}

impl Gone {
    fn io_kind(self) -> io::ErrorKind {
        match self {
            Gone::Reset(_) => io::ErrorKind::ConnectionReset,
            Gone::Closed => io::ErrorKind::NotConnected,
            Gone::SessionEnded => io::ErrorKind::NotConnected,
            Gone::Refused(_) => io::ErrorKind::ConnectionRefused,
        }
    }
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The channel cannot be used any more.
    #[error("{0}")]
    Gone(Gone),
    /// Our direction was finished already.
    #[error("the channel was finished for sending")]
    Finished,
    /// A message or datagram larger than the peer can take.
    #[error("{len} bytes exceed the largest the peer takes ({max})")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The largest accepted.
        max: u64,
    },
    /// The call does not fit the channel's kind.
    #[error("operation does not fit a {0:?} channel")]
    WrongKind(crate::ChannelKind),
    /// The session is shutting down (goodbye under way).
    #[error("the session is closing")]
    Closing,
}

/// Why a receive failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The channel cannot be used any more.
    #[error("{0}")]
    Gone(Gone),
    /// The call does not fit the channel's kind.
    #[error("operation does not fit a {0:?} channel")]
    WrongKind(crate::ChannelKind),
}

/// Why [`Bridge::listen`](super::Bridge::listen) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// Somebody listens on this service already.
    #[error("service {0:?} has a listener already")]
    InUse(String),
    /// Service names are 1 to 255 bytes.
    #[error("service name must be 1 to 255 bytes, got {0}")]
    BadName(usize),
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        let kind = match &e {
            OpenError::NoService(_) | OpenError::Refused(_) => io::ErrorKind::ConnectionRefused,
            OpenError::PeerBusy(_) | OpenError::PeerNoMemory(_) | OpenError::PeerBacklog(_) => {
                io::ErrorKind::ConnectionRefused
            }
            OpenError::Closed(_) => io::ErrorKind::ConnectionReset,
            OpenError::Local(session::OpenError::BadServiceName(_)) => io::ErrorKind::InvalidInput,
            OpenError::Local(_) => io::ErrorKind::OutOfMemory,
            OpenError::Stopped => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

impl From<SendError> for io::Error {
    fn from(e: SendError) -> io::Error {
        let kind = match &e {
            SendError::Gone(g) => g.io_kind(),
            SendError::Finished | SendError::Closing => io::ErrorKind::BrokenPipe,
            SendError::TooLarge { .. } | SendError::WrongKind(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

impl From<RecvError> for io::Error {
    fn from(e: RecvError) -> io::Error {
        let kind = match &e {
            RecvError::Gone(g) => g.io_kind(),
            RecvError::WrongKind(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

impl From<ListenError> for io::Error {
    fn from(e: ListenError) -> io::Error {
        let kind = match &e {
            ListenError::InUse(_) => io::ErrorKind::AddrInUse,
            ListenError::BadName(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_tell_the_causes_apart() {
        let reset: io::Error = SendError::Gone(Gone::Reset(ResetReason::Peer)).into();
        assert_eq!(reset.kind(), io::ErrorKind::ConnectionReset);
        let fin: io::Error = SendError::Finished.into();
        assert_eq!(fin.kind(), io::ErrorKind::BrokenPipe);
        let big: io::Error = SendError::TooLarge { len: 9, max: 8 }.into();
        assert_eq!(big.kind(), io::ErrorKind::InvalidInput);
        let nosvc: io::Error = OpenError::NoService("x".into()).into();
        assert_eq!(nosvc.kind(), io::ErrorKind::ConnectionRefused);
        // The typed error is still inside for those who look.
        let inner = nosvc.get_ref().and_then(|e| e.downcast_ref::<OpenError>());
        assert_eq!(inner, Some(&OpenError::NoService("x".into())));
    }
}

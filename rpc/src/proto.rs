//! The socket protocol: every message on an RPC socket (and on the cable)
//! is an 8-byte header followed by the body.
//!
//! ```text
//! offset  size  field
//! 0       1     kind: 1 CALL, 2 REPLY, 3 ERROR, 4 SERVE, 5 SERVING
//! 1       1     code: why, for ERROR (see `ErrorCode`); 0 otherwise
//! 2       2     reserved, 0
//! 4       4     id, little-endian: chosen by the caller, echoed in the answer
//! 8       ...   body (0 to max_message bytes)
//! ```
//!
//! Parsing never panics and never allocates: [`Header::parse`] looks at the
//! first 8 bytes of a message and says what is wrong with it.

use std::fmt;

/// Bytes of the header in front of every message.
pub const HEADER_LEN: usize = 8;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A request (client to bridge, bridge to server).
    Call = 1,
    /// The answer to a call.
    Reply = 2,
    /// A call failed; the code says why.
    Error = 3,
    /// The first message of a server: it serves this socket's service.
    Serve = 4,
    /// The bridge's answer to `Serve`: calls follow.
    Serving = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Call,
            2 => Kind::Reply,
            3 => Kind::Error,
            4 => Kind::Serve,
            5 => Kind::Serving,
            _ => return None,
        })
    }
}

/// Why a call failed (the `code` of an ERROR). Codes 128 to 255 are the
/// server application's own and passed through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request (or the server's reply) is larger than `max_message`.
    TooLarge,
    /// The peer's side of the service has no server connected.
    NoServer,
    /// The server went away before it answered.
    ServerGone,
    /// The peer does not define this service (no `[[rpc]]` of the name).
    NoService,
    /// The channel across the cable failed (reset, peer restarted, link
    /// closed) before the answer came.
    Link,
    /// The peer is at a limit (channels, connections).
    Busy,
    /// A malformed message (bad header, wrong kind here).
    BadMessage,
    /// `Serve` refused: another server serves this service.
    ServerExists,
    /// A code of the server application (128..=255) or one this version
    /// does not know.
    Other(u8),
}

impl ErrorCode {
    /// The byte on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            ErrorCode::TooLarge => 1,
            ErrorCode::NoServer => 2,
            ErrorCode::ServerGone => 3,
            ErrorCode::NoService => 4,
            ErrorCode::Link => 5,
            ErrorCode::Busy => 6,
            ErrorCode::BadMessage => 7,
            ErrorCode::ServerExists => 8,
            ErrorCode::Other(c) => c,
        }
    }

    /// From the byte on the wire.
    pub fn from_u8(b: u8) -> ErrorCode {
        match b {
            1 => ErrorCode::TooLarge,
            2 => ErrorCode::NoServer,
            3 => ErrorCode::ServerGone,
            4 => ErrorCode::NoService,
            5 => ErrorCode::Link,
            6 => ErrorCode::Busy,
            7 => ErrorCode::BadMessage,
            8 => ErrorCode::ServerExists,
            c => ErrorCode::Other(c),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::TooLarge => f.write_str("message larger than the service's max_message"),
            ErrorCode::NoServer => f.write_str("no server is connected on the peer"),
            ErrorCode::ServerGone => f.write_str("the server went away before it answered"),
            ErrorCode::NoService => f.write_str("the peer does not define this service"),
            ErrorCode::Link => f.write_str("the channel across the cable failed"),
            ErrorCode::Busy => f.write_str("the peer is at a limit"),
            ErrorCode::BadMessage => f.write_str("malformed message"),
            ErrorCode::ServerExists => f.write_str("another server serves this service"),
            ErrorCode::Other(c) => write!(f, "application error {c}"),
        }
    }
}

/// The header of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the message is.
    pub kind: Kind,
    /// For `Error`: why (0 otherwise).
    pub code: u8,
    /// The call's id.
    pub id: u32,
}

/// What is wrong with a message's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than the header.
    #[error("a message of {0} bytes is shorter than the 8-byte header")]
    Short(usize),
    /// An unknown kind byte.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// The reserved bytes are not zero.
    #[error("reserved header bytes are not zero")]
    Reserved,
}

impl Header {
    /// A header of `kind` for call `id`.
    pub fn new(kind: Kind, id: u32) -> Header {
        Header { kind, code: 0, id }
    }

    /// An ERROR header.
    pub fn error(code: ErrorCode, id: u32) -> Header {
        Header {
            kind: Kind::Error,
            code: code.to_u8(),
            id,
        }
    }

    /// Parses the first 8 bytes of `msg`.
    pub fn parse(msg: &[u8]) -> Result<Header, HeaderError> {
        let Some(h) = msg.get(..HEADER_LEN) else {
            return Err(HeaderError::Short(msg.len()));
        };
        let kind = Kind::from_u8(h[0]).ok_or(HeaderError::Kind(h[0]))?;
        if h[2] != 0 || h[3] != 0 {
            return Err(HeaderError::Reserved);
        }
        Ok(Header {
            kind,
            code: h[1],
            id: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        })
    }

    /// The 8 bytes on the wire.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let id = self.id.to_le_bytes();
        [self.kind as u8, self.code, 0, 0, id[0], id[1], id[2], id[3]]
    }

    /// Writes `id` into the header at the start of `msg` (which must hold
    /// one: callers parsed it first).
    pub fn set_id(msg: &mut [u8], id: u32) {
        if let Some(b) = msg.get_mut(4..HEADER_LEN) {
            b.copy_from_slice(&id.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_named() {
        for kind in [
            Kind::Call,
            Kind::Reply,
            Kind::Error,
            Kind::Serve,
            Kind::Serving,
        ] {
            for id in [0, 1, 0x1234_5678, u32::MAX] {
                let h = Header { kind, code: 7, id };
                let b = h.to_bytes();
                assert_eq!(b.len(), HEADER_LEN);
                assert_eq!(Header::parse(&b), Ok(h));
            }
        }
        assert_eq!(Header::parse(&[1, 0, 0]), Err(HeaderError::Short(3)));
        assert_eq!(
            Header::parse(&[9, 0, 0, 0, 0, 0, 0, 0]),
            Err(HeaderError::Kind(9))
        );
        assert_eq!(
            Header::parse(&[1, 0, 1, 0, 0, 0, 0, 0]),
            Err(HeaderError::Reserved)
        );
        let mut m = Header::new(Kind::Call, 5).to_bytes().to_vec();
        m.extend_from_slice(b"body");
        Header::set_id(&mut m, 99);
        assert_eq!(Header::parse(&m).map(|h| h.id), Ok(99));
        for c in 0..=255u8 {
            assert_eq!(ErrorCode::from_u8(c).to_u8(), c);
        }
    }
}

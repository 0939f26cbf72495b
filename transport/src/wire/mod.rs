//! The wire format: batches of records over the device's byte stream.
//!
//! The device keeps no write boundaries (spec §3: "a byte stream, not a
//! packet stream"), so everything on the wire is self-delimiting:
//!
//! ```text
//! batch  = header(16) body(len)
//! header = magic u32 "TBB1" | len u32 | body_crc u32 | header_crc u32   (little endian)
//! body   = record*
//! record = type u8 | flags u8 | reserved u16 | len u32 | fields... | payload
//! ```
//!
//! * Lengths are checked against a maximum **before** anything waits for or
//!   allocates the body ([`MAX_BATCH_BODY`], [`MAX_RECORD_LEN`]).
//! * The header carries its own CRC32C, so a corrupt length is caught at once
//!   instead of making the reader wait for bytes that never come; the body
//!   carries a CRC32C over all of it. The driver only logs hardware CRC errors
//!   (spec §2), so this is the only thing standing between a flipped bit and
//!   an application.
//! * Payloads are handed out as [`bytes::Bytes`] slices of the received batch:
//!   no copy on the receive path.
//!
//! # No-panic guarantee
//! Every decoding function in this module returns an error for any input
//! (truncated, oversized, unknown types, inconsistent lengths) and never
//! panics; the fuzz target `fuzz_targets/decode.rs` checks that.

mod batch;
pub mod crc;
mod hello;
#[cfg(test)]
mod proptests;
mod record;

pub use batch::{BatchDecoder, BatchHeader, Transmit, TransmitBuilder, Unsealed};
pub use hello::{
    HelloAuth, HelloIdent, CAP_AUTH, CAP_IDENT, CAP_WINDOWS, HELLO_AUTH_LEN, MAX_HOSTNAME,
};
pub use record::{
    ChannelKind, Class, Record, RecordIter, RecordType, FLAG_END, FLAG_RESUME, FLAG_SEEN_PEER,
    FLAG_WANT,
};

/// Magic number at the start of every batch: `"TBB1"`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"TBB1");
/// Protocol version spoken by this build (checked in the handshake).
pub const VERSION: u16 = 2;
/// Size of a batch header.
pub const BATCH_HEADER_LEN: usize = 16;
/// Size of the common record header (type, flags, reserved, len).
pub const RECORD_HEADER_LEN: usize = 8;
/// Largest batch body a decoder accepts. A batch is the CRC unit: the
/// receiver can deliver nothing of it before the whole batch arrived, so
/// batches stay well below a device write (several MiB); 1 MiB bounds the
/// memory a corrupt or hostile header can make us wait for.
pub const MAX_BATCH_BODY: usize = 1 << 20;
/// Largest record (header included) a decoder accepts: one 64 KiB+ TUN
/// superpacket or one data chunk fits with room to spare.
pub const MAX_RECORD_LEN: usize = 256 * 1024;
/// Longest service name in an `Open` record.
pub const MAX_SERVICE_NAME: usize = 255;

/// Where the next batch could start in `buf` after a decoding error: the
/// next occurrence of [`MAGIC`] after the first byte, or the end (keeping
/// a possible partial magic). Never more than `buf.len()`.
pub fn resync_point(buf: &[u8]) -> usize {
    let magic = MAGIC.to_le_bytes();
    buf.windows(4)
        .skip(1)
        .position(|w| w == magic)
        .map_or(buf.len().saturating_sub(3).max(1), |p| p + 1)
        .min(buf.len())
}

/// What can be wrong with bytes read from the device.
///
/// Every variant is a *link fault*: the byte stream can no longer be trusted
/// and the session must be re-established (and its reliable channels
/// resumed) on a fresh open of the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The batch did not start with [`MAGIC`]: lost framing or garbage.
    #[error("bad batch magic {found:#010x}: framing lost or not a tbbridge peer")]
    BadMagic {
        /// The four bytes found where the magic should be.
        found: u32,
    },
    /// The header's own CRC did not match: the header was corrupted.
    #[error("batch header checksum mismatch (corrupted on the cable)")]
    HeaderChecksum,
    /// The body's CRC did not match: bits flipped somewhere in the batch.
    #[error("batch body checksum mismatch: {len} bytes corrupted on the cable")]
    BodyChecksum {
        /// Length of the corrupted body.
        len: usize,
    },
    /// The header announced a body longer than the maximum.
    #[error("batch of {len} bytes exceeds the maximum of {max}")]
    BatchTooLong {
        /// Announced length.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// A record's length runs past the end of its batch or over the maximum.
    #[error("record length {len} invalid ({remaining} bytes left in batch, maximum {max})")]
    BadRecordLength {
        /// Announced length.
        len: usize,
        /// Bytes left in the batch.
        remaining: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// A record of a type this build does not know.
    #[error("unknown record type {0:#04x}")]
    UnknownType(u8),
    /// A record whose fields do not fit its length or hold invalid values.
    #[error("malformed {record} record: {what}")]
    Malformed {
        /// Record type name.
        record: &'static str,
        /// What is wrong.
        what: &'static str,
    },
}

impl DecodeError {
    /// Bits flipped on the cable (or lost framing), as opposed to records a
    /// peer built wrong: what `corrupt_batches` counts.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            DecodeError::BadMagic { .. }
                | DecodeError::HeaderChecksum
                | DecodeError::BodyChecksum { .. }
        )
    }
}

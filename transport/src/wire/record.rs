//! Records: the units a session exchanges inside a batch.

use bytes::{Buf, BufMut, Bytes};

use super::hello::{
    decode_ident, HelloAuth, HelloIdent, CAP_AUTH, CAP_IDENT, HELLO_AUTH_LEN, MAX_HOSTNAME,
};
use super::{DecodeError, MAX_RECORD_LEN, MAX_SERVICE_NAME, RECORD_HEADER_LEN};

/// Record type codes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// Handshake: identity, version, limits.
    Hello = 0x01,
    /// Keepalive / RTT probe.
    Ping = 0x02,
    /// Answer to a ping.
    Pong = 0x03,
    /// Orderly shutdown: "I have sent everything".
    Goodbye = 0x04,
    /// Orderly shutdown: "I have received everything you sent".
    GoodbyeAck = 0x05,
    /// How much of the receiver's stream the sender has read.
    Progress = 0x06,
    /// Open a channel.
    Open = 0x10,
    /// Channel accepted.
    OpenOk = 0x11,
    /// Channel refused.
    OpenReject = 0x12,
    /// The sender finished its direction of a channel.
    Close = 0x13,
    /// Abort a channel.
    Reset = 0x14,
    /// Reliable bytes (stream and message channels).
    Data = 0x20,
    /// One datagram.
    Dgram = 0x21,
    /// Acknowledgement and credit (flow control) for a reliable channel.
    Window = 0x22,
}

impl RecordType {
    fn from_u8(v: u8) -> Option<Self> {
        use RecordType::*;
        Some(match v {
            0x01 => Hello,
            0x02 => Ping,
            0x03 => Pong,
            0x04 => Goodbye,
            0x05 => GoodbyeAck,
            0x06 => Progress,
            0x10 => Open,
            0x11 => OpenOk,
            0x12 => OpenReject,
            0x13 => Close,
            0x14 => Reset,
            0x20 => Data,
            0x21 => Dgram,
            0x22 => Window,
            _ => return None,
        })
    }
}

/// The three kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Boundaries kept, may be dropped under pressure (counted).
    Datagram = 0,
    /// Reliable ordered bytes.
    Stream = 1,
    /// Reliable, boundaries kept.
    Message = 2,
}

/// Scheduling class of a channel: lower classes are served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Latency-sensitive traffic (RPC, pings, interactive).
    Latency = 0,
    /// Ordinary traffic (the default).
    Normal = 1,
    /// Bulk transfers (migration, pipes, benchmarks).
    Bulk = 2,
}

impl Class {
    /// All classes, highest priority first.
    pub const ALL: [Class; 3] = [Class::Latency, Class::Normal, Class::Bulk];
}

/// Data flag: this record ends a message (message channels).
pub const FLAG_END: u8 = 0x01;
/// Hello flag: the sender has received the receiver's Hello on this link.
/// Goodbye flag: the sender has received the receiver's Goodbye.
pub const FLAG_SEEN_PEER: u8 = 0x01;
/// Progress flag: the receiver should answer with its own `Progress`.
pub const FLAG_WANT: u8 = 0x01;
/// Window flag: sent at resume; the receiver rewinds its send offset to
/// `received` and retransmits from there.
pub const FLAG_RESUME: u8 = 0x01;

/// One decoded (or to-be-encoded) record.
///
/// Channel ids on the wire are from the *receiver's* point of view: bit 0 is
/// set for channels the receiver did not open (see `session::ChannelId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Handshake, sent first on every (re)open of the device.
    Hello {
        /// Protocol version.
        version: u16,
        /// The sender has seen the receiver's Hello on this link.
        seen_peer: bool,
        /// Capability bits.
        caps: u32,
        /// Largest batch body the sender accepts.
        max_batch: u32,
        /// Largest record the sender accepts.
        max_record: u32,
        /// The sender's session identity (random, fixed for its lifetime).
        session_id: u64,
        /// The receiver's identity as the sender last knew it (0: none):
        /// both sides resume their channels when both still know each other.
        resume_of: u64,
        /// With [`CAP_WINDOWS`](super::CAP_WINDOWS): the largest message (in bytes) the sender
        /// accepts on a message channel. Appended after `resume_of`; a
        /// Hello without it (an older build) decodes as 0.
        max_message: u32,
        /// With [`CAP_WINDOWS`](super::CAP_WINDOWS): the credit the sender grants every channel
        /// the receiver opens, before its `OpenOk` (0: none).
        open_credit: u32,
        /// With [`CAP_AUTH`] (set on the wire exactly when this is
        /// `Some`): the sender's proof of the pre-shared key.
        auth: Option<HelloAuth>,
        /// With [`CAP_IDENT`] (set on the wire exactly when this is
        /// `Some`): the sender's host identity and name.
        ident: Option<Box<HelloIdent>>,
    },
    /// Keepalive probe; the token comes back in a [`Record::Pong`].
    Ping {
        /// Opaque token.
        token: u64,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's token.
        token: u64,
    },
    /// Orderly shutdown: "I have sent everything" (see `Session::close`).
    Goodbye {
        /// The sender had the receiver's `Goodbye` when it sent this one,
        /// so it has everything the receiver sent before it: this answers
        /// the receiver's Goodbye. Without the flag the two crossed, and
        /// each side waits for the other's [`Record::GoodbyeAck`].
        seen_peer: bool,
    },
    /// Orderly shutdown, step 3.
    GoodbyeAck,
    /// The sender has read `read` bytes of the receiver's records (all but
    /// Hellos, headers included) on this link: the receiver knows how much
    /// of what it wrote is still in the cable (see `Session` latency mode).
    Progress {
        /// Record bytes read on this link.
        read: u64,
        /// Answer with a `Progress` of your own now (flag 1): the sender
        /// holds data back until it learns how much the receiver read.
        want: bool,
    },
    /// Open a channel.
    Open {
        /// Channel id (receiver's view).
        chan: u32,
        /// Channel kind.
        kind: ChannelKind,
        /// Scheduling class.
        class: Class,
        /// Bytes the opener can receive (its initial credit grant).
        window: u32,
        /// Service name the opener asks for.
        service: String,
    },
    /// Channel accepted.
    OpenOk {
        /// Channel id (receiver's view).
        chan: u32,
        /// Bytes the acceptor can receive.
        window: u32,
    },
    /// Channel refused.
    OpenReject {
        /// Channel id (receiver's view).
        chan: u32,
        /// Reason code (see `session::RejectReason`).
        reason: u8,
    },
    /// The sender will send nothing past `final_offset` on this channel.
    Close {
        /// Channel id (receiver's view).
        chan: u32,
        /// Total bytes the sender sent on the channel.
        final_offset: u64,
    },
    /// Abort a channel in both directions.
    Reset {
        /// Channel id (receiver's view).
        chan: u32,
        /// Error code.
        code: u8,
    },
    /// Reliable bytes at `offset` of the channel's byte sequence.
    Data {
        /// Channel id (receiver's view).
        chan: u32,
        /// Offset of the first payload byte.
        offset: u64,
        /// Last record of a message.
        end: bool,
        /// The bytes.
        payload: Bytes,
    },
    /// One datagram.
    Dgram {
        /// Channel id (receiver's view).
        chan: u32,
        /// The datagram.
        payload: Bytes,
    },
    /// Acknowledgement and credit.
    Window {
        /// Channel id (receiver's view).
        chan: u32,
        /// Everything below this offset has been received.
        received: u64,
        /// The sender may send up to (not including) this offset.
        limit: u64,
        /// Resume: rewind to `received` and retransmit.
        resume: bool,
    },
}

impl Record {
    /// The record's type code.
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::Hello { .. } => RecordType::Hello,
            Record::Ping { .. } => RecordType::Ping,
            Record::Pong { .. } => RecordType::Pong,
            Record::Goodbye { .. } => RecordType::Goodbye,
            Record::GoodbyeAck => RecordType::GoodbyeAck,
            Record::Progress { .. } => RecordType::Progress,
            Record::Open { .. } => RecordType::Open,
            Record::OpenOk { .. } => RecordType::OpenOk,
            Record::OpenReject { .. } => RecordType::OpenReject,
            Record::Close { .. } => RecordType::Close,
            Record::Reset { .. } => RecordType::Reset,
            Record::Data { .. } => RecordType::Data,
            Record::Dgram { .. } => RecordType::Dgram,
            Record::Window { .. } => RecordType::Window,
        }
    }

    /// The payload that follows the fixed fields, if the record has one.
    /// The encoder may reference it instead of copying it.
    pub fn payload(&self) -> Option<&Bytes> {
        match self {
            Record::Data { payload, .. } | Record::Dgram { payload, .. } => Some(payload),
            _ => None,
        }
    }

    /// Length of the fixed fields (after the common header, before the payload).
    fn fields_len(&self) -> usize {
        match self {
            Record::Hello { auth, ident, .. } => {
                2 + 2
                    + 4
                    + 4
                    + 4
                    + 8
                    + 8
                    + 4
                    + 4
                    + auth.map_or(0, |_| HELLO_AUTH_LEN)
                    + ident.as_ref().map_or(0, |i| i.encoded_len())
            }
            Record::Ping { .. } | Record::Pong { .. } | Record::Progress { .. } => 8,
            Record::Goodbye { .. } | Record::GoodbyeAck => 0,
            Record::Open { service, .. } => 4 + 1 + 1 + 4 + 1 + service.len(),
            Record::OpenOk { .. } => 8,
            Record::OpenReject { .. } | Record::Reset { .. } => 5,
            Record::Close { .. } => 12,
            Record::Data { .. } => 12,
            Record::Dgram { .. } => 4,
            Record::Window { .. } => 20,
        }
    }

    /// Total encoded length, common header and payload included.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.fields_len() + self.payload().map_or(0, Bytes::len)
    }

    /// Writes the common header and the fixed fields, but not the payload
    /// (see [`Record::payload`]). `buf` grows as needed.
    pub fn encode_head(&self, buf: &mut impl BufMut) {
        let flags = match self {
            Record::Hello { seen_peer, .. } | Record::Goodbye { seen_peer } => {
                u8::from(*seen_peer) * FLAG_SEEN_PEER
            }
            Record::Progress { want, .. } => u8::from(*want) * FLAG_WANT,
            Record::Data { end, .. } => u8::from(*end) * FLAG_END,
            Record::Window { resume, .. } => u8::from(*resume) * FLAG_RESUME,
            _ => 0,
        };
        let body_len = self.encoded_len() - RECORD_HEADER_LEN;
        buf.put_u8(self.record_type() as u8);
        buf.put_u8(flags);
        buf.put_u16_le(0);
        // Records are bounded by MAX_RECORD_LEN (the session never builds a
        // larger one), so the length fits a u32.
        buf.put_u32_le(body_len as u32);
        match self {
            Record::Hello {
                version,
                caps,
                max_batch,
                max_record,
                session_id,
                resume_of,
                max_message,
                open_credit,
                auth,
                ident,
                ..
            } => {
                buf.put_u16_le(*version);
                buf.put_u16_le(0);
                // CAP_AUTH and CAP_IDENT say whether their fields follow:
                // each is set exactly when they do, whatever `caps` holds.
                let mut caps = *caps & !(CAP_AUTH | CAP_IDENT);
                if auth.is_some() {
                    caps |= CAP_AUTH;
                }
                if ident.is_some() {
                    caps |= CAP_IDENT;
                }
                buf.put_u32_le(caps);
                buf.put_u32_le(*max_batch);
                buf.put_u32_le(*max_record);
                buf.put_u64_le(*session_id);
                buf.put_u64_le(*resume_of);
                buf.put_u32_le(*max_message);
                buf.put_u32_le(*open_credit);
                if let Some(a) = auth {
                    buf.put_slice(&a.nonce);
                    buf.put_slice(&a.mac);
                }
                if let Some(i) = ident {
                    buf.put_slice(&i.host_id);
                    // At most MAX_HOSTNAME (64) bytes: `HelloIdent::new`
                    // cuts it, the decoder refuses longer.
                    buf.put_u8(i.hostname.len().min(MAX_HOSTNAME) as u8);
                    buf.put_slice(&i.hostname.as_bytes()[..i.hostname.len().min(MAX_HOSTNAME)]);
                }
            }
            Record::Ping { token } | Record::Pong { token } => buf.put_u64_le(*token),
            Record::Progress { read, .. } => buf.put_u64_le(*read),
            Record::Goodbye { .. } | Record::GoodbyeAck => {}
            Record::Open {
                chan,
                kind,
                class,
                window,
                service,
            } => {
                buf.put_u32_le(*chan);
                buf.put_u8(*kind as u8);
                buf.put_u8(*class as u8);
                buf.put_u32_le(*window);
                buf.put_u8(service.len() as u8);
                buf.put_slice(service.as_bytes());
            }
            Record::OpenOk { chan, window } => {
                buf.put_u32_le(*chan);
                buf.put_u32_le(*window);
            }
            Record::OpenReject { chan, reason: code } | Record::Reset { chan, code } => {
                buf.put_u32_le(*chan);
                buf.put_u8(*code);
            }
            Record::Close { chan, final_offset } => {
                buf.put_u32_le(*chan);
                buf.put_u64_le(*final_offset);
            }
            Record::Data { chan, offset, .. } => {
                buf.put_u32_le(*chan);
                buf.put_u64_le(*offset);
            }
            Record::Dgram { chan, .. } => buf.put_u32_le(*chan),
            Record::Window {
                chan,
                received,
                limit,
                ..
            } => {
                buf.put_u32_le(*chan);
                buf.put_u64_le(*received);
                buf.put_u64_le(*limit);
            }
        }
    }

    /// Encodes the whole record (payload copied) into `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        self.encode_head(buf);
        if let Some(p) = self.payload() {
            buf.put_slice(p);
        }
    }

    /// Decodes one record from the front of `body`, advancing it.
    /// Payloads are slices of `body` (no copy).
    pub fn decode(body: &mut Bytes) -> Result<Record, DecodeError> {
        if body.len() < RECORD_HEADER_LEN {
            return Err(DecodeError::BadRecordLength {
                len: RECORD_HEADER_LEN,
                remaining: body.len(),
                max: MAX_RECORD_LEN,
            });
        }
        let ty = body[0];
        let flags = body[1];
        let len = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
        let remaining = body.len() - RECORD_HEADER_LEN;
        if len > remaining || len + RECORD_HEADER_LEN > MAX_RECORD_LEN {
            return Err(DecodeError::BadRecordLength {
                len,
                remaining,
                max: MAX_RECORD_LEN,
            });
        }
        let rt = RecordType::from_u8(ty).ok_or(DecodeError::UnknownType(ty))?;
        body.advance(RECORD_HEADER_LEN);
        let mut f = body.split_to(len);
        let name = record_name(rt);
        let need = |f: &Bytes, n: usize| {
            if f.len() < n {
                Err(DecodeError::Malformed {
                    record: name,
                    what: "shorter than its fixed fields",
                })
            } else {
                Ok(())
            }
        };
        let exact = |f: &Bytes| {
            if f.is_empty() {
                Ok(())
            } else {
                Err(DecodeError::Malformed {
                    record: name,
                    what: "trailing bytes",
                })
            }
        };
        let rec = match rt {
            RecordType::Hello => {
                need(&f, 32)?;
                let version = f.get_u16_le();
                let _ = f.get_u16_le();
                let caps = f.get_u32_le();
                let max_batch = f.get_u32_le();
                let max_record = f.get_u32_le();
                let session_id = f.get_u64_le();
                let resume_of = f.get_u64_le();
                // Appended by builds with growing windows; absent (0) in
                // older ones.
                let (max_message, open_credit) = if f.len() >= 8 {
                    (f.get_u32_le(), f.get_u32_le())
                } else {
                    (0, 0)
                };
                let auth = if caps & CAP_AUTH != 0 {
                    if f.len() < HELLO_AUTH_LEN {
                        return Err(DecodeError::Malformed {
                            record: "Hello",
                            what: "CAP_AUTH without its nonce and MAC",
                        });
                    }
                    let mut a = HelloAuth {
                        nonce: [0; 16],
                        mac: [0; 32],
                    };
                    f.copy_to_slice(&mut a.nonce);
                    f.copy_to_slice(&mut a.mac);
                    Some(a)
                } else {
                    None
                };
                let ident = if caps & CAP_IDENT != 0 {
                    Some(Box::new(decode_ident(&mut f)?))
                } else {
                    None
                };
                // Later versions may append more fields: ignore them.
                Record::Hello {
                    version,
                    seen_peer: flags & FLAG_SEEN_PEER != 0,
                    caps,
                    max_batch,
                    max_record,
                    session_id,
                    resume_of,
                    max_message,
                    open_credit,
                    auth,
                    ident,
                }
            }
            RecordType::Ping | RecordType::Pong => {
                need(&f, 8)?;
                let token = f.get_u64_le();
                exact(&f)?;
                if rt == RecordType::Ping {
                    Record::Ping { token }
                } else {
                    Record::Pong { token }
                }
            }
            RecordType::Progress => {
                need(&f, 8)?;
                let read = f.get_u64_le();
                exact(&f)?;
                Record::Progress {
                    read,
                    want: flags & FLAG_WANT != 0,
                }
            }
            RecordType::Goodbye | RecordType::GoodbyeAck => {
                exact(&f)?;
                if rt == RecordType::Goodbye {
                    Record::Goodbye {
                        seen_peer: flags & FLAG_SEEN_PEER != 0,
                    }
                } else {
                    Record::GoodbyeAck
                }
            }
            RecordType::Open => {
                need(&f, 11)?;
                let chan = f.get_u32_le();
                let kind = match f.get_u8() {
                    0 => ChannelKind::Datagram,
                    1 => ChannelKind::Stream,
                    2 => ChannelKind::Message,
                    _ => {
                        return Err(DecodeError::Malformed {
                            record: name,
                            what: "unknown channel kind",
                        })
                    }
                };
                let class = match f.get_u8() {
                    0 => Class::Latency,
                    1 => Class::Normal,
                    2 => Class::Bulk,
                    _ => {
                        return Err(DecodeError::Malformed {
                            record: name,
                            what: "unknown channel class",
                        })
                    }
                };
                let window = f.get_u32_le();
                let n = usize::from(f.get_u8());
                if f.len() != n || n > MAX_SERVICE_NAME {
                    return Err(DecodeError::Malformed {
                        record: name,
                        what: "service name length",
                    });
                }
                let service = std::str::from_utf8(&f)
                    .map_err(|_| DecodeError::Malformed {
                        record: name,
                        what: "service name is not UTF-8",
                    })?
                    .to_owned();
                Record::Open {
                    chan,
                    kind,
                    class,
                    window,
                    service,
                }
            }
            RecordType::OpenOk => {
                need(&f, 8)?;
                let r = Record::OpenOk {
                    chan: f.get_u32_le(),
                    window: f.get_u32_le(),
                };
                exact(&f)?;
                r
            }
            RecordType::OpenReject | RecordType::Reset => {
                need(&f, 5)?;
                let chan = f.get_u32_le();
                let code = f.get_u8();
                exact(&f)?;
                if rt == RecordType::Reset {
                    Record::Reset { chan, code }
                } else {
                    Record::OpenReject { chan, reason: code }
                }
            }
            RecordType::Close => {
                need(&f, 12)?;
                let r = Record::Close {
                    chan: f.get_u32_le(),
                    final_offset: f.get_u64_le(),
                };
                exact(&f)?;
                r
            }
            RecordType::Data => {
                need(&f, 12)?;
                let chan = f.get_u32_le();
                let offset = f.get_u64_le();
                if offset.checked_add(f.len() as u64).is_none() {
                    return Err(DecodeError::Malformed {
                        record: name,
                        what: "offset overflows",
                    });
                }
                Record::Data {
                    chan,
                    offset,
                    end: flags & FLAG_END != 0,
                    payload: f,
                }
            }
            RecordType::Dgram => {
                need(&f, 4)?;
                let chan = f.get_u32_le();
                Record::Dgram { chan, payload: f }
            }
            RecordType::Window => {
                need(&f, 20)?;
                let r = Record::Window {
                    chan: f.get_u32_le(),
                    received: f.get_u64_le(),
                    limit: f.get_u64_le(),
                    resume: flags & FLAG_RESUME != 0,
                };
                exact(&f)?;
                r
            }
        };
        Ok(rec)
    }
}

fn record_name(rt: RecordType) -> &'static str {
    match rt {
        RecordType::Hello => "Hello",
        RecordType::Ping => "Ping",
        RecordType::Pong => "Pong",
        RecordType::Goodbye => "Goodbye",
        RecordType::GoodbyeAck => "GoodbyeAck",
        RecordType::Progress => "Progress",
        RecordType::Open => "Open",
        RecordType::OpenOk => "OpenOk",
        RecordType::OpenReject => "OpenReject",
        RecordType::Close => "Close",
        RecordType::Reset => "Reset",
        RecordType::Data => "Data",
        RecordType::Dgram => "Dgram",
        RecordType::Window => "Window",
    }
}

/// Iterates over the records of a verified batch body.
///
/// Stops (returns `None`) after the first error.
#[derive(Debug)]
pub struct RecordIter {
    body: Bytes,
    failed: bool,
}

impl RecordIter {
    /// Iterates over `body` (a batch body whose CRC was checked).
    pub fn new(body: Bytes) -> Self {
        Self {
            body,
            failed: false,
        }
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.body.is_empty() {
            return None;
        }
        let r = Record::decode(&mut self.body);
        self.failed = r.is_err();
        Some(r)
    }
}

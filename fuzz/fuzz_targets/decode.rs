//! Bytes from the cable, as a hostile or broken peer could send them.
//!
//! 1. The codec alone: [`BatchDecoder`] over the input split into reads,
//!    and [`RecordIter`] over the raw input taken as a batch body. Nothing
//!    may panic; whatever decodes must re-encode to a record that decodes
//!    to itself.
//! 2. A [`Session`] after a valid handshake, fed either the raw bytes or
//!    (structured mode) a sequence of valid batches with correct CRCs
//!    whose records are arbitrary: the session's record handlers see every
//!    kind of protocol violation. A link fault is handled as the call
//!    contract says (link down, link up, a fresh Hello) and feeding goes on.
//!    Nothing may panic, and every transmit the session produces must be
//!    well-formed (it decodes, within the limits we announced as the peer).
//!
//! Input: byte 0 chooses the mode (bit 0) and the read size (bits 1..);
//! the rest is the stream (raw mode) or is parsed with `arbitrary`
//! (structured mode).

#![no_main]

use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tbbridge_transport::session::{ChannelId, ChannelKind, Class, Event, Session, SessionConfig};
use tbbridge_transport::wire::crc::crc32c;
use tbbridge_transport::wire::{
    BatchDecoder, BatchHeader, HelloIdent, Record, RecordIter, MAX_BATCH_BODY, MAX_RECORD_LEN, VERSION,
};

/// The simulated peer's identity.
const PEER_ID: u64 = 0x7ee7;
/// Ours.
const LOCAL_ID: u64 = 0x10ca1;
/// Batch size the simulated peer announces (and so the most we may send).
const PEER_MAX_BATCH: u32 = 8192;

fn codec(data: &[u8], piece: usize) {
    // Records straight from the bytes.
    check_records(Bytes::copy_from_slice(data));
    // Batches from the bytes, read in pieces.
    let mut d = BatchDecoder::new(MAX_BATCH_BODY);
    let mut buf = BytesMut::new();
    for chunk in data.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(body)) => {
                    assert!(body.len() <= MAX_BATCH_BODY);
                    check_records(body);
                }
                Ok(None) => {
                    assert!(d.missing(&buf) > 0);
                    break;
                }
                Err(_) => return,
            }
        }
    }
}

/// Decodes a body; every record that decodes is canonical.
fn check_records(body: Bytes) {
    let mut it = RecordIter::new(body);
    for r in it.by_ref() {
        let Ok(r) = r else { break };
        let mut v = Vec::new();
        r.encode(&mut v);
        assert_eq!(v.len(), r.encoded_len());
        let mut b = Bytes::from(v);
        assert_eq!(Record::decode(&mut b).as_ref(), Ok(&r));
        assert!(b.is_empty());
    }
    assert!(it.next().is_none());
}

fn batch(records: &[Record]) -> Vec<u8> {
    let mut body = Vec::new();
    for r in records {
        r.encode(&mut body);
    }
    raw_batch(&body)
}

fn raw_batch(body: &[u8]) -> Vec<u8> {
    let mut v = BatchHeader {
        len: body.len() as u32,
        body_crc: crc32c(body),
    }
    .encode()
    .to_vec();
    v.extend_from_slice(body);
    v
}

fn peer_hello(resume: bool) -> Record {
    Record::Hello {
        version: VERSION,
        seen_peer: true,
        caps: 0,
        max_batch: PEER_MAX_BATCH,
        max_record: MAX_RECORD_LEN as u32,
        session_id: PEER_ID,
        resume_of: if resume { LOCAL_ID } else { 0 },
        max_message: 0,
        open_credit: 0,
        auth: None,
        ident: None,
    }
}

/// Records as a peer could send them: every variant, channel ids small
/// enough to hit live channels, lengths and offsets near the limits.
#[derive(Arbitrary, Debug)]
enum FuzzRecord {
    Hello {
        version_ok: bool,
        seen_peer: bool,
        max_batch: u32,
        max_record: u32,
        same_peer: bool,
        resume: bool,
        /// A host identity and a host name `peer-N`.
        host: Option<([u8; 16], u8)>,
    },
    Ping(u64),
    Pong(u64),
    Goodbye(bool),
    GoodbyeAck,
    Progress(u64, bool),
    Open {
        chan: u8,
        kind: u8,
        class: u8,
        window: u32,
        service: String,
    },
    OpenOk {
        chan: u8,
        window: u32,
    },
    OpenReject {
        chan: u8,
        reason: u8,
    },
    Close {
        chan: u8,
        final_offset: u64,
    },
    Reset {
        chan: u8,
        code: u8,
    },
    Data {
        chan: u8,
        offset: u64,
        end: bool,
        len: u16,
    },
    Dgram {
        chan: u8,
        len: u16,
    },
    Window {
        chan: u8,
        received: u64,
        limit: u64,
        resume: bool,
    },
}

fn pick(v: u8) -> ChannelKind {
    match v % 3 {
        0 => ChannelKind::Datagram,
        1 => ChannelKind::Stream,
        _ => ChannelKind::Message,
    }
}

fn pick_class(v: u8) -> Class {
    Class::ALL[usize::from(v % 3)]
}

impl FuzzRecord {
    fn record(&self) -> Record {
        let chan = |c: &u8| u32::from(*c);
        match self {
            FuzzRecord::Hello {
                version_ok,
                seen_peer,
                max_batch,
                max_record,
                same_peer,
                resume,
                host,
            } => Record::Hello {
                version: if *version_ok { VERSION } else { VERSION + 1 },
                seen_peer: *seen_peer,
                caps: 0,
                max_batch: *max_batch,
                max_record: *max_record,
                session_id: if *same_peer { PEER_ID } else { PEER_ID + 1 },
                resume_of: if *resume { LOCAL_ID } else { 0 },
                max_message: 0,
                open_credit: 0,
                auth: None,
                ident: host.map(|(id, n)| Box::new(HelloIdent::new(id, &format!("peer-{n}")))),
            },
            FuzzRecord::Ping(t) => Record::Ping { token: *t },
            FuzzRecord::Pong(t) => Record::Pong { token: *t },
            FuzzRecord::Goodbye(seen_peer) => Record::Goodbye {
                seen_peer: *seen_peer,
            },
            FuzzRecord::GoodbyeAck => Record::GoodbyeAck,
            FuzzRecord::Progress(read, want) => Record::Progress {
                read: *read,
                want: *want,
            },
            FuzzRecord::Open {
                chan: c,
                kind,
                class,
                window,
                service,
            } => {
                let mut service = service.clone();
                while service.len() > 255 {
                    service.pop();
                }
                Record::Open {
                    chan: chan(c),
                    kind: pick(*kind),
                    class: pick_class(*class),
                    window: *window,
                    service,
                }
            }
            FuzzRecord::OpenOk { chan: c, window } => Record::OpenOk {
                chan: chan(c),
                window: *window,
            },
            FuzzRecord::OpenReject { chan: c, reason } => Record::OpenReject {
                chan: chan(c),
                reason: *reason,
            },
            FuzzRecord::Close {
                chan: c,
                final_offset,
            } => Record::Close {
                chan: chan(c),
                final_offset: *final_offset,
            },
            FuzzRecord::Reset { chan: c, code } => Record::Reset {
                chan: chan(c),
                code: *code,
            },
            FuzzRecord::Data {
                chan: c,
                offset,
                end,
                len,
            } => {
                let len = usize::from(*len);
                Record::Data {
                    chan: chan(c),
                    offset: (*offset).min(u64::MAX - len as u64),
                    end: *end,
                    payload: Bytes::from(vec![0x5a; len]),
                }
            }
            FuzzRecord::Dgram { chan: c, len } => Record::Dgram {
                chan: chan(c),
                payload: Bytes::from(vec![0xa5; usize::from(*len)]),
            },
            FuzzRecord::Window {
                chan: c,
                received,
                limit,
                resume,
            } => Record::Window {
                chan: chan(c),
                received: *received,
                limit: *limit,
                resume: *resume,
            },
        }
    }
}

/// One piece of what the peer writes.
#[derive(Arbitrary, Debug)]
enum Chunk {
    /// A valid batch of these records.
    Records(Vec<FuzzRecord>),
    /// A valid batch header and CRC around arbitrary bytes.
    Body(Vec<u8>),
    /// Unframed bytes.
    Raw(Vec<u8>),
    /// Time passes (timers run).
    Wait(u16),
    /// The application reads, accepts or finishes something.
    App(u8),
}

struct Harness {
    s: Session,
    now: Instant,
    rx: BytesMut,
    piece: usize,
    /// Checks the session's own output.
    out: BatchDecoder,
    out_buf: BytesMut,
    faults: usize,
}

impl Harness {
    fn new(piece: usize) -> Self {
        let now = Instant::now();
        let cfg = SessionConfig {
            stream_window: 64 * 1024,
            min_window: 4096,
            message_window: 64 * 1024,
            max_batch_body: 16 * 1024,
            recv_budget: 1 << 20,
            max_channels: 32,
            ..SessionConfig::default()
        };
        let mut s = Session::new(cfg, LOCAL_ID, now);
        s.handle_link_up(now);
        // Channels of our own for the peer to answer (ids 0, 2, 4).
        for kind in [
            ChannelKind::Stream,
            ChannelKind::Message,
            ChannelKind::Datagram,
        ] {
            let _ = s.open(kind, Class::Normal, "svc");
        }
        let mut h = Self {
            s,
            now,
            rx: BytesMut::new(),
            piece,
            out: BatchDecoder::new(PEER_MAX_BATCH as usize),
            out_buf: BytesMut::new(),
            faults: 0,
        };
        h.feed(&batch(&[peer_hello(false)]));
        h
    }

    /// Feeds bytes in reads of `piece` bytes; returns false after a fault
    /// that ended the run.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for chunk in bytes.chunks(self.piece.max(1)) {
            self.rx.extend_from_slice(chunk);
            if self.s.handle_input(self.now, &mut self.rx).is_err() && !self.fault() {
                return false;
            }
            self.drain();
        }
        true
    }

    /// A link fault: reopen and shake hands again (resuming).
    fn fault(&mut self) -> bool {
        self.faults += 1;
        if self.faults > 8 {
            return false;
        }
        self.s.handle_link_down();
        self.rx.clear();
        self.out.reset();
        self.out_buf.clear();
        self.s.handle_link_up(self.now);
        self.drain();
        let hello = batch(&[peer_hello(true)]);
        self.rx.extend_from_slice(&hello);
        if self.s.handle_input(self.now, &mut self.rx).is_err() {
            return false;
        }
        self.drain();
        true
    }

    /// Takes the session's output; the application answers events.
    fn drain(&mut self) {
        if self.s.stats().resyncs > 0 {
            // An in-band resync took a later Hello of ours as the new
            // link's, and its limits may be any the wire allows.
            self.out.set_max_body(MAX_BATCH_BODY);
        }
        while let Some(t) = self.s.poll_transmit(self.now) {
            assert!(!t.is_empty());
            assert_eq!(t.segments().iter().map(Bytes::len).sum::<usize>(), t.len());
            for seg in t.segments() {
                self.out_buf.extend_from_slice(seg);
            }
            while let Some(body) = self
                .out
                .decode(&mut self.out_buf)
                .expect("the session sent a malformed batch")
            {
                for r in RecordIter::new(body) {
                    let r = r.expect("the session sent a malformed record");
                    assert!(r.encoded_len() <= MAX_RECORD_LEN);
                }
            }
        }
        let mut n = 0;
        while let Some(ev) = self.s.poll_event() {
            n += 1;
            match ev {
                Event::Incoming { id, .. } => {
                    if id.0 % 4 == 1 {
                        let _ = self.s.accept(id);
                    } else {
                        let _ = self
                            .s
                            .reject(id, tbbridge_transport::session::RejectReason::Refused);
                    }
                }
                Event::Readable(id) => self.read(id),
                _ => {}
            }
        }
        assert!(n < 100_000);
        let _ = self.s.poll_timeout();
    }

    fn read(&mut self, id: ChannelId) {
        for _ in 0..64 {
            let r = match self.s.recv(id, 4096) {
                Err(_) => match self.s.recv_message(id) {
                    Err(_) => self.s.recv_datagram(id),
                    r => r,
                },
                r => r,
            };
            match r {
                Ok(tbbridge_transport::session::Recv::Data(_)) => {}
                _ => break,
            }
        }
    }

    fn app(&mut self, what: u8) {
        let id = ChannelId(u32::from(what >> 3));
        match what & 7 {
            0 => self.read(id),
            1 => {
                let _ = self.s.finish(id);
            }
            2 => {
                let _ = self.s.reset(id);
            }
            3 => {
                let _ = self.s.send(id, Bytes::from_static(&[1; 3000]));
            }
            4 => {
                let _ = self.s.send_message(id, Bytes::from_static(&[2; 100]));
            }
            5 => {
                let _ = self.s.send_datagram(id, Bytes::from_static(&[3; 1500]));
            }
            6 => {
                let _ = self.s.release(id);
            }
            _ => self.s.close(self.now),
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(ctl >> 1) * 7 + 1;
    codec(rest, piece);

    let mut h = Harness::new(piece);
    if ctl & 1 == 0 {
        h.feed(rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    while let Ok(chunk) = Chunk::arbitrary(&mut u) {
        let ok = match chunk {
            Chunk::Records(recs) => {
                let recs: Vec<Record> = recs.iter().map(FuzzRecord::record).collect();
                h.feed(&batch(&recs))
            }
            Chunk::Body(body) => h.feed(&raw_batch(&body)),
            Chunk::Raw(bytes) => h.feed(&bytes),
            Chunk::Wait(ms) => {
                h.now += Duration::from_millis(u64::from(ms));
                let ok = h.s.handle_timeout(h.now).is_ok() || h.fault();
                h.drain();
                ok
            }
            Chunk::App(what) => {
                h.app(what);
                true
            }
        };
        if !ok || u.is_empty() {
            break;
        }
    }
});

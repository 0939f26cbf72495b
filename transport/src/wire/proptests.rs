//! Property tests of the wire format (written by a helper).
//!
//! * Every [`Record`] variant round-trips, and [`Record::encoded_len`] is
//!   exactly what [`Record::encode`] writes (s2n-quic's frame tests).
//! * A [`TransmitBuilder`] transmit decodes back to the same records through
//!   a [`BatchDecoder`] fed in arbitrary pieces, and, for a small transmit,
//!   split at every byte boundary (tokio-util's awkward-split tests).
//! * Every single bit flip anywhere in a transmit is detected in the batch
//!   that holds it: the batches before it decode intact, nothing after.
//! * Arbitrary bytes never panic the decoder nor [`RecordIter`]; oversized
//!   lengths are refused from the header alone, before any waiting or
//!   allocation.
//! * [`crc32c`] agrees with the `crc32c` crate for any bytes, from any
//!   starting CRC, and appending any split of the bytes piece by piece (as
//!   the transmit builder does over a batch's segments) gives the value of
//!   one call.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::crc::{crc32c, crc32c_append};
use super::{
    BatchDecoder, BatchHeader, ChannelKind, Class, DecodeError, Record, RecordIter,
    TransmitBuilder, BATCH_HEADER_LEN, MAGIC, MAX_BATCH_BODY, MAX_RECORD_LEN, MAX_SERVICE_NAME,
    RECORD_HEADER_LEN,
};

/// Largest payload generated: more than one 64 KiB chunk or TUN superpacket.
const MAX_PAYLOAD: usize = 70_000;

// ---------------------------------------------------------------------------
// Strategies

/// `n` bytes of a deterministic pattern (cheaper to generate and shrink than
/// a vector of arbitrary bytes, and different per seed).
fn filled(n: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (n - v.len()).min(8);
        v.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    Bytes::from(v)
}

fn payload_upto(max: usize) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => (0..=64usize.min(max), any::<u64>()),
        3 => (0..=4096usize.min(max), any::<u64>()),
        1 => (0..=max, any::<u64>()),
    ]
    .prop_map(|(n, seed)| filled(n, seed))
}

/// A service name of 1..=255 bytes of UTF-8.
fn service() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9._/-]{0,40}",
        // Exactly the maximum, in ASCII.
        "[ -~]{255}",
        // Any Unicode scalar values (NUL, multi-byte, ...), cut to 255 bytes
        // at a character boundary.
        proptest::collection::vec(any::<char>(), 1..=255).prop_map(|cs| {
            let mut s = String::new();
            for c in cs {
                if s.len() + c.len_utf8() > MAX_SERVICE_NAME {
                    break;
                }
                s.push(c);
            }
            s
        }),
    ]
}

fn kind() -> impl Strategy<Value = ChannelKind> {
    prop_oneof![
        Just(ChannelKind::Datagram),
        Just(ChannelKind::Stream),
        Just(ChannelKind::Message),
    ]
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![Just(Class::Latency), Just(Class::Normal), Just(Class::Bulk)]
}

/// A u64 with the boundary values well represented.
fn wide_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0..4096u64,
        Just(u64::MAX),
        (0..4096u64).prop_map(|d| u64::MAX - d),
    ]
}

/// Any record with valid field values; payloads up to `max_payload` bytes.
fn record_upto(max_payload: usize) -> impl Strategy<Value = Record> {
    prop_oneof![
        1 => (
            any::<u16>(),
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(any::<[u8; 16]>()),
            proptest::option::of((any::<[u8; 16]>(), "[A-Za-z0-9._-]{1,64}")),
        )
            .prop_map(
                |(
                    version,
                    seen_peer,
                    caps,
                    max_batch,
                    max_record,
                    session_id,
                    resume_of,
                    max_message,
                    open_credit,
                    nonce,
                    host,
                )| {
                    let auth = nonce.map(|nonce| super::HelloAuth {
                        nonce,
                        mac: [nonce[0] ^ 0x5a; 32],
                    });
                    let ident = host.map(|(host_id, hostname)| {
                        Box::new(super::HelloIdent { host_id, hostname })
                    });
                    // On the wire CAP_AUTH and CAP_IDENT say whether
                    // `auth` and `ident` follow.
                    let mut caps = caps & !(super::CAP_AUTH | super::CAP_IDENT);
                    if auth.is_some() {
                        caps |= super::CAP_AUTH;
                    }
                    if ident.is_some() {
                        caps |= super::CAP_IDENT;
                    }
                    Record::Hello {
                        version,
                        seen_peer,
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
            ),
        1 => wide_u64().prop_map(|token| Record::Ping { token }),
        1 => wide_u64().prop_map(|token| Record::Pong { token }),
        1 => any::<bool>().prop_map(|seen_peer| Record::Goodbye { seen_peer }),
        1 => Just(Record::GoodbyeAck),
        1 => (any::<u64>(), any::<bool>()).prop_map(|(read, want)| Record::Progress { read, want }),
        1 => (any::<u32>(), kind(), class(), any::<u32>(), service()).prop_map(
            |(chan, kind, class, window, service)| Record::Open {
                chan,
                kind,
                class,
                window,
                service,
            }
        ),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(chan, window)| Record::OpenOk { chan, window }),
        1 => (any::<u32>(), any::<u8>())
            .prop_map(|(chan, reason)| Record::OpenReject { chan, reason }),
        1 => (any::<u32>(), wide_u64())
            .prop_map(|(chan, final_offset)| Record::Close { chan, final_offset }),
        1 => (any::<u32>(), any::<u8>()).prop_map(|(chan, code)| Record::Reset { chan, code }),
        3 => (any::<u32>(), wide_u64(), any::<bool>(), payload_upto(max_payload)).prop_map(
            |(chan, offset, end, payload)| Record::Data {
                chan,
                // The offset of the last byte must not overflow.
                offset: offset.min(u64::MAX - payload.len() as u64),
                end,
                payload,
            }
        ),
        2 => (any::<u32>(), payload_upto(max_payload))
            .prop_map(|(chan, payload)| Record::Dgram { chan, payload }),
        1 => (any::<u32>(), wide_u64(), wide_u64(), any::<bool>()).prop_map(
            |(chan, received, limit, resume)| Record::Window {
                chan,
                received,
                limit,
                resume,
            }
        ),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    record_upto(MAX_PAYLOAD)
}

/// Read sizes: mostly awkward small ones, sometimes large.
fn pieces() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![3 => 1..=24usize, 2 => 1..=4096usize, 1 => 1..=200_000usize],
        0..12,
    )
}

// ---------------------------------------------------------------------------
// Helpers

fn encode_vec(r: &Record) -> Vec<u8> {
    let mut v = Vec::new();
    r.encode(&mut v);
    v
}

fn build(recs: &[Record], max_batch: usize, inline_limit: usize) -> (Vec<u8>, usize) {
    let mut b = TransmitBuilder::new(max_batch, inline_limit);
    for r in recs {
        b.push(r);
    }
    let t = b.finish();
    assert_eq!(t.records, recs.len());
    let v = t.to_vec();
    assert_eq!(v.len(), t.len());
    (v, t.batches)
}

/// What feeding a byte stream through a decoder produced.
#[derive(Debug, Default)]
struct Fed {
    records: Vec<Record>,
    batches: usize,
    error: Option<DecodeError>,
    /// Bytes left in the receive buffer at the end.
    leftover: usize,
}

/// Feeds `stream` to a [`BatchDecoder`] in reads of the sizes in `pieces`
/// (cycled; all at once if empty), decoding every batch body as it comes,
/// and stops at the first error.
fn feed(stream: &[u8], pieces: &[usize], max_body: usize) -> Fed {
    let mut d = BatchDecoder::new(max_body);
    let mut buf = BytesMut::new();
    let mut out = Fed::default();
    let mut pos = 0;
    let mut i = 0;
    'outer: while pos < stream.len() {
        let n = match pieces.get(i % pieces.len().max(1)) {
            Some(&n) => n.max(1),
            None => stream.len(),
        };
        i += 1;
        let end = (pos + n).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(body)) => {
                    assert!(body.len() <= max_body);
                    out.batches += 1;
                    for r in RecordIter::new(body) {
                        match r {
                            Ok(r) => out.records.push(r),
                            Err(e) => {
                                out.error = Some(e);
                                break 'outer;
                            }
                        }
                    }
                }
                Ok(None) => {
                    assert!(d.missing(&buf) > 0, "Ok(None) but nothing missing");
                    break;
                }
                Err(e) => {
                    out.error = Some(e);
                    break 'outer;
                }
            }
        }
    }
    out.leftover = buf.len();
    out
}

/// Byte range and record count of every batch of a valid stream.
fn batch_layout(stream: &[u8]) -> Vec<(std::ops::Range<usize>, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let mut h = [0u8; BATCH_HEADER_LEN];
        h.copy_from_slice(&stream[pos..pos + BATCH_HEADER_LEN]);
        let head = BatchHeader::decode(&h, MAX_BATCH_BODY).expect("valid header");
        let body_start = pos + BATCH_HEADER_LEN;
        let end = body_start + head.len as usize;
        let body = Bytes::copy_from_slice(&stream[body_start..end]);
        let mut n = 0;
        for r in RecordIter::new(body) {
            r.expect("valid record");
            n += 1;
        }
        out.push((pos..end, n));
        pos = end;
    }
    out
}

/// Asserts that flipping `bit` of `stream[byte]` is detected in the batch
/// holding that byte, with everything before it delivered intact.
fn check_flip(stream: &[u8], recs: &[Record], byte: usize, bit: u8, pieces: &[usize]) {
    let layout = batch_layout(stream);
    let k = layout
        .iter()
        .position(|(r, _)| r.contains(&byte))
        .expect("byte inside a batch");
    let before: usize = layout[..k].iter().map(|(_, n)| n).sum();
    let (range, _) = &layout[k];
    let mut bad = stream.to_vec();
    bad[byte] ^= 1 << bit;
    let fed = feed(&bad, pieces, MAX_BATCH_BODY);
    assert_eq!(
        fed.records,
        recs[..before],
        "flip at byte {byte} bit {bit}: records before the corrupt batch"
    );
    let off = byte - range.start;
    let body_len = range.len() - BATCH_HEADER_LEN;
    match fed.error {
        Some(DecodeError::BadMagic { .. }) if off < 4 => {}
        Some(DecodeError::HeaderChecksum) if (4..BATCH_HEADER_LEN).contains(&off) => {}
        Some(DecodeError::BodyChecksum { len }) if off >= BATCH_HEADER_LEN => {
            assert_eq!(len, body_len);
        }
        other => panic!("flip at byte {byte} (offset {off} in batch {k}) bit {bit}: {other:?}"),
    }
}

fn small_transmit_records() -> Vec<Record> {
    vec![
        Record::Hello {
            version: 1,
            seen_peer: true,
            caps: 0,
            max_batch: 1 << 18,
            max_record: 1 << 18,
            session_id: 0x1234_5678_9abc_def1,
            resume_of: 0,
            max_message: 0,
            open_credit: 0,
            auth: None,
            ident: None,
        },
        Record::Open {
            chan: 3,
            kind: ChannelKind::Message,
            class: Class::Latency,
            window: 1 << 20,
            service: "rpc/é".into(),
        },
        Record::Data {
            chan: 3,
            offset: 0,
            end: true,
            payload: filled(40, 7),
        },
        Record::Ping { token: 9 },
        Record::Dgram {
            chan: 5,
            payload: filled(30, 8),
        },
        Record::Window {
            chan: 2,
            received: 100,
            limit: 1 << 20,
            resume: true,
        },
        Record::Data {
            chan: 3,
            offset: 40,
            end: false,
            payload: Bytes::new(),
        },
        Record::Close {
            chan: 3,
            final_offset: 40,
        },
        Record::Goodbye { seen_peer: true },
    ]
}

/// A few records in three batches, with referenced (not inlined) payloads.
fn small_transmit() -> (Vec<Record>, Vec<u8>) {
    let recs = small_transmit_records();
    let (v, batches) = build(&recs, 100, 16);
    assert!(batches >= 3, "{batches} batches");
    (recs, v)
}

/// A valid batch (header and body) around `body`.
fn batch_of(body: &[u8]) -> Vec<u8> {
    let mut v = BatchHeader {
        len: body.len() as u32,
        body_crc: crc32c(body),
    }
    .encode()
    .to_vec();
    v.extend_from_slice(body);
    v
}

// ---------------------------------------------------------------------------
// (a), (b): records

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn record_roundtrip_and_encoded_len(r in record(), trailing in proptest::collection::vec(any::<u8>(), 0..16)) {
        let v = encode_vec(&r);
        prop_assert_eq!(v.len(), r.encoded_len());
        let mut head = Vec::new();
        r.encode_head(&mut head);
        prop_assert_eq!(head.len() + r.payload().map_or(0, Bytes::len), r.encoded_len());
        prop_assert_eq!(&head[..], &v[..head.len()]);

        // The record delimits itself: decoding consumes exactly its bytes.
        let mut body = BytesMut::from(&v[..]);
        body.extend_from_slice(&trailing);
        let mut body = body.freeze();
        let back = Record::decode(&mut body).expect("decodes");
        prop_assert_eq!(&back, &r);
        prop_assert_eq!(&body[..], &trailing[..]);
    }

    #[test]
    fn truncated_record_is_an_error(r in record(), cut in any::<prop::sample::Index>()) {
        let v = encode_vec(&r);
        let cut = cut.index(v.len());
        let mut body = Bytes::copy_from_slice(&v[..cut]);
        prop_assert!(Record::decode(&mut body).is_err(), "prefix of {} bytes decoded", cut);
    }
}

// ---------------------------------------------------------------------------
// (c): transmits through the batch decoder

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn transmit_roundtrip_any_split(
        recs in proptest::collection::vec(record(), 0..16),
        extra_batch in prop_oneof![Just(0usize), 0..64usize, 0..MAX_BATCH_BODY],
        inline_limit in prop_oneof![Just(0usize), 0..2048usize, 0..100_000usize],
        pieces in pieces(),
    ) {
        // The caller keeps every record within max_batch (the builder's
        // contract): the smallest allowed is the largest record.
        let largest = recs.iter().map(Record::encoded_len).max().unwrap_or(0);
        let max_batch = (largest + extra_batch).clamp(1, MAX_BATCH_BODY);
        let (stream, batches) = build(&recs, max_batch, inline_limit);
        prop_assert_eq!(batches == 0, recs.is_empty());
        // A decoder limited to the same size accepts every batch.
        let fed = feed(&stream, &pieces, max_batch);
        prop_assert_eq!(fed.error, None);
        prop_assert_eq!(fed.leftover, 0);
        prop_assert_eq!(fed.batches, batches);
        prop_assert_eq!(fed.records, recs);
    }

    /// One builder, reused: consecutive transmits form one valid stream
    /// (the scratch memory is split off, never overwritten).
    #[test]
    fn builder_reuse_keeps_earlier_transmits_intact(
        lists in proptest::collection::vec(proptest::collection::vec(record_upto(3000), 0..6), 1..5),
        inline_limit in 0..4096usize,
        pieces in pieces(),
    ) {
        let mut b = TransmitBuilder::new(8192, inline_limit);
        let mut transmits = Vec::new();
        for l in &lists {
            for r in l {
                b.push(r);
            }
            transmits.push(b.finish());
        }
        let stream: Vec<u8> = transmits.iter().flat_map(|t| t.to_vec()).collect();
        let all: Vec<Record> = lists.concat();
        let fed = feed(&stream, &pieces, 8192);
        prop_assert_eq!(fed.error, None);
        prop_assert_eq!(fed.records, all);
    }

    /// Short writes: writing a transmit with `advance` after each partial
    /// `writev` puts exactly `to_vec()` on the wire.
    #[test]
    fn transmit_advance_after_short_writes(
        recs in proptest::collection::vec(record_upto(5000), 1..10),
        inline_limit in 0..2048usize,
        writes in proptest::collection::vec(0..3000usize, 1..20),
    ) {
        let mut b = TransmitBuilder::new(16 * 1024, inline_limit);
        for r in &recs {
            b.push(r);
        }
        let mut t = b.finish();
        let all = t.to_vec();
        let mut wire = Vec::new();
        let mut i = 0;
        while !t.is_empty() {
            prop_assert_eq!(t.segments().iter().map(Bytes::len).sum::<usize>(), t.len());
            // A short writev of n bytes across the segments (0 = EAGAIN).
            let n = writes[i % writes.len()].min(t.len());
            i += 1;
            let mut left = n;
            for s in t.segments() {
                let k = left.min(s.len());
                wire.extend_from_slice(&s[..k]);
                left -= k;
            }
            t.advance(n);
            prop_assert_eq!(t.to_vec(), &all[wire.len()..]);
            if i > all.len() + writes.len() {
                // Only zero-length writes: write the rest at once.
                wire.extend_from_slice(&t.to_vec());
                t.advance(t.len());
            }
        }
        prop_assert!(t.segments().is_empty());
        prop_assert_eq!(wire, all);
    }
}

/// Every split point of a small transmit, and one byte at a time.
#[test]
fn small_transmit_split_at_every_boundary() {
    let (recs, stream) = small_transmit();
    for cut in 0..=stream.len() {
        let fed = feed(&stream, &[cut.max(1), stream.len()], MAX_BATCH_BODY);
        assert_eq!(fed.error, None, "cut at {cut}");
        assert_eq!(fed.records, recs, "cut at {cut}");
        assert_eq!(fed.leftover, 0);
    }
    // Two cuts: every (i, j) pair.
    for i in 1..stream.len() {
        for j in i + 1..stream.len() {
            let fed = feed(&stream, &[i, j - i, stream.len()], MAX_BATCH_BODY);
            assert_eq!(fed.records, recs, "cuts at {i}, {j}");
        }
    }
    let fed = feed(&stream, &[1], MAX_BATCH_BODY);
    assert_eq!(fed.records, recs, "one byte at a time");
}

/// `missing` never asks for more than the batch under way needs, and once a
/// header arrived it asks for exactly the rest of its body.
#[test]
fn missing_is_exact_for_a_small_transmit() {
    let (_, stream) = small_transmit();
    let layout = batch_layout(&stream);
    let mut d = BatchDecoder::new(MAX_BATCH_BODY);
    let mut buf = BytesMut::new();
    let mut pos = 0;
    for (range, _) in &layout {
        assert_eq!(d.missing(&buf), BATCH_HEADER_LEN);
        while pos < range.end {
            let m = d.missing(&buf);
            assert!(m >= 1 && pos + m <= range.end, "asked {m} at {pos}");
            buf.extend_from_slice(&stream[pos..pos + m]);
            pos += m;
            match d.decode(&mut buf).expect("valid") {
                Some(body) => {
                    assert_eq!(pos, range.end);
                    assert_eq!(body.len(), range.len() - BATCH_HEADER_LEN);
                }
                None => assert!(pos < range.end),
            }
        }
    }
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------
// (d): corruption

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bit_flip_is_detected(
        recs in proptest::collection::vec(record_upto(2048), 1..12),
        max_batch_extra in 0..4096usize,
        inline_limit in 0..1024usize,
        at in any::<prop::sample::Index>(),
        bit in 0..8u8,
        pieces in pieces(),
    ) {
        let largest = recs.iter().map(Record::encoded_len).max().unwrap_or(0);
        let (stream, _) = build(&recs, largest + max_batch_extra, inline_limit);
        check_flip(&stream, &recs, at.index(stream.len()), bit, &pieces);
    }
}

#[test]
fn every_bit_flip_of_a_small_transmit_is_detected() {
    let (recs, stream) = small_transmit();
    for byte in 0..stream.len() {
        for bit in 0..8 {
            check_flip(&stream, &recs, byte, bit, &[]);
            check_flip(&stream, &recs, byte, bit, &[7]);
        }
    }
}

// ---------------------------------------------------------------------------
// (e): garbage and hostile lengths

/// Record-shaped garbage: plausible types and lengths, arbitrary contents,
/// so the field parsers (not just the length checks) see hostile input.
fn record_like() -> impl Strategy<Value = Vec<u8>> {
    let ty = prop_oneof![
        4 => prop::sample::select(vec![
            0x01u8, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11, 0x12, 0x13, 0x14, 0x20, 0x21, 0x22,
        ]),
        1 => any::<u8>(),
    ];
    (
        ty,
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        prop_oneof![4 => Just(None), 1 => any::<u32>().prop_map(Some)],
    )
        .prop_map(|(ty, flags, fields, len)| {
            let mut v = vec![ty, flags, 0, 0];
            v.put_u32_le(len.unwrap_or(fields.len() as u32));
            v.extend_from_slice(&fields);
            v
        })
}

/// Decodes every record of `body` and checks the iterator's contract.
fn check_record_iter(body: &[u8]) {
    let mut errors = 0;
    let mut it = RecordIter::new(Bytes::copy_from_slice(body));
    for r in it.by_ref() {
        assert_eq!(errors, 0, "a record after an error");
        match r {
            Ok(r) => {
                // Whatever decodes is canonical: it re-encodes to bytes
                // that decode to the same record.
                let v = encode_vec(&r);
                assert_eq!(v.len(), r.encoded_len());
                let mut b = Bytes::from(v);
                assert_eq!(Record::decode(&mut b).as_ref(), Ok(&r));
                assert!(b.is_empty());
            }
            Err(_) => errors += 1,
        }
    }
    assert!(it.next().is_none(), "iterator resumed after its end");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn garbage_never_panics_the_decoder(
        garbage in proptest::collection::vec(any::<u8>(), 0..4096),
        max_body in prop_oneof![Just(MAX_BATCH_BODY), 0..4096usize],
        pieces in pieces(),
    ) {
        let fed = feed(&garbage, &pieces, max_body);
        prop_assert!(fed.leftover <= garbage.len());
        check_record_iter(&garbage);
    }

    #[test]
    fn record_like_garbage_never_panics_record_iter(
        recs in proptest::collection::vec(record_like(), 0..8),
        pieces in pieces(),
    ) {
        let body = recs.concat();
        check_record_iter(&body);
        // Behind a valid header and CRC, too: the decoder hands the body
        // to the record parser, which must fail cleanly.
        let stream = batch_of(&body);
        let fed = feed(&stream, &pieces, MAX_BATCH_BODY);
        prop_assert_eq!(fed.batches, 1);
    }

    #[test]
    fn oversized_header_is_refused_from_16_bytes(
        max_body in 0..=MAX_BATCH_BODY,
        over in prop_oneof![Just(u32::MAX), any::<u32>()],
    ) {
        prop_assume!(over as usize > max_body);
        let h = BatchHeader { len: over, body_crc: 0 }.encode();
        let mut buf = BytesMut::from(&h[..]);
        let cap = buf.capacity();
        let r = BatchDecoder::new(max_body).decode(&mut buf);
        prop_assert_eq!(r, Err(DecodeError::BatchTooLong { len: over as usize, max: max_body }));
        // Nothing was reserved for the body.
        prop_assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn header_roundtrip(len in 0..=MAX_BATCH_BODY as u32, body_crc in any::<u32>()) {
        let h = BatchHeader { len, body_crc };
        prop_assert_eq!(BatchHeader::decode(&h.encode(), MAX_BATCH_BODY), Ok(h));
    }
}

/// A header announcing (almost) 4 GiB fails at once with a 16-byte buffer
/// instead of waiting for (or allocating) the body.
#[test]
fn four_gib_header_is_batch_too_long() {
    let h = BatchHeader {
        len: u32::MAX,
        body_crc: 0,
    }
    .encode();
    let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN);
    buf.extend_from_slice(&h);
    let mut d = BatchDecoder::new(MAX_BATCH_BODY);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::BatchTooLong {
            len: u32::MAX as usize,
            max: MAX_BATCH_BODY
        })
    );
    assert_eq!(buf.capacity(), BATCH_HEADER_LEN);
    // And the header alone is enough: 15 bytes wait, 16 decide.
    let mut short = BytesMut::from(&h[..15]);
    assert_eq!(d.decode(&mut short), Ok(None));
}

#[test]
fn record_longer_than_max_record_is_rejected() {
    // A record announcing MAX_RECORD_LEN + 1 bytes inside a batch that
    // really holds them.
    let len = MAX_RECORD_LEN - RECORD_HEADER_LEN + 1;
    let mut body = vec![0x21, 0, 0, 0];
    body.put_u32_le(len as u32);
    body.resize(RECORD_HEADER_LEN + len, 0);
    let fed = feed(&batch_of(&body), &[], MAX_BATCH_BODY);
    assert!(
        matches!(fed.error, Some(DecodeError::BadRecordLength { len: l, .. }) if l == len),
        "{:?}",
        fed.error
    );
    // The largest allowed record still decodes.
    body.truncate(MAX_RECORD_LEN);
    body[4..8].copy_from_slice(&((MAX_RECORD_LEN - RECORD_HEADER_LEN) as u32).to_le_bytes());
    let fed = feed(&batch_of(&body), &[], MAX_BATCH_BODY);
    assert_eq!(fed.error, None);
    assert_eq!(fed.records.len(), 1);
}

#[test]
fn record_length_of_4_gib_is_rejected() {
    let mut body = vec![0x20, 0, 0, 0];
    body.put_u32_le(u32::MAX);
    body.extend_from_slice(&[0; 12]);
    let mut b = Bytes::from(body);
    assert!(matches!(
        Record::decode(&mut b),
        Err(DecodeError::BadRecordLength { .. })
    ));
}

#[test]
fn data_offset_overflow_is_rejected() {
    let r = Record::Data {
        chan: 1,
        offset: u64::MAX,
        end: false,
        payload: Bytes::from_static(b"x"),
    };
    let mut b = Bytes::from(encode_vec(&r));
    assert_eq!(
        Record::decode(&mut b),
        Err(DecodeError::Malformed {
            record: "Data",
            what: "offset overflows"
        })
    );
    // The last representable byte is fine.
    let r = Record::Data {
        chan: 1,
        offset: u64::MAX - 1,
        end: true,
        payload: Bytes::from_static(b"x"),
    };
    let mut b = Bytes::from(encode_vec(&r));
    assert_eq!(Record::decode(&mut b), Ok(r));
}

#[test]
fn open_with_bad_service_is_malformed() {
    let open = Record::Open {
        chan: 1,
        kind: ChannelKind::Stream,
        class: Class::Normal,
        window: 4096,
        service: "ab".into(),
    };
    let v = encode_vec(&open);
    let name_at = RECORD_HEADER_LEN + 10;
    // Invalid UTF-8.
    let mut bad = v.clone();
    bad[name_at + 1] = 0xff;
    assert!(matches!(
        Record::decode(&mut Bytes::from(bad)),
        Err(DecodeError::Malformed { record: "Open", .. })
    ));
    // Name length byte disagreeing with the record length.
    for n in [0u8, 1, 3, 255] {
        let mut bad = v.clone();
        bad[name_at] = n;
        assert!(
            matches!(
                Record::decode(&mut Bytes::from(bad)),
                Err(DecodeError::Malformed { record: "Open", .. })
            ),
            "name length {n}"
        );
    }
    // Unknown kind and class.
    for at in [RECORD_HEADER_LEN + 4, RECORD_HEADER_LEN + 5] {
        let mut bad = v.clone();
        bad[at] = 3;
        assert!(Record::decode(&mut Bytes::from(bad)).is_err());
    }
}

#[test]
fn magic_is_tbb1() {
    assert_eq!(&MAGIC.to_le_bytes(), b"TBB1");
}

// ---------------------------------------------------------------------------
// (f): the checksum against the `crc32c` crate

/// Bytes for the checksum: empty and 1-byte inputs, arbitrary short ones
/// (every path of the implementation is taken below 600 bytes), and long
/// ones up to beyond a batch.
fn crc_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..=1),
        4 => proptest::collection::vec(any::<u8>(), 0..600),
        2 => proptest::collection::vec(any::<u8>(), 0..8192),
        1 => (0..=300_000usize, any::<u64>()).prop_map(|(n, seed)| filled(n, seed).to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn crc32c_matches_the_crc32c_crate(data in crc_input(), start in any::<u32>()) {
        prop_assert_eq!(crc32c(&data), crc32c::crc32c(&data));
        prop_assert_eq!(crc32c_append(start, &data), crc32c::crc32c_append(start, &data));
    }

    #[test]
    fn crc32c_append_in_pieces_is_one_call(
        data in crc_input(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        start in any::<u32>(),
    ) {
        // Cut points anywhere, repeated ones giving empty pieces.
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut crc = start;
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&data.len())) {
            crc = crc32c_append(crc, &data[from..to]);
            prop_assert_eq!(crc, crc32c::crc32c_append(start, &data[..to]), "prefix {}", to);
            from = to;
        }
        prop_assert_eq!(crc, crc32c_append(start, &data));
    }
}

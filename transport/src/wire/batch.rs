//! Batches: the CRC-protected framing unit, and the transmit builder that
//! packs records into batches without copying large payloads.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::crc::{crc32c, crc32c_append};
use super::{DecodeError, Record, BATCH_HEADER_LEN, MAGIC};

/// A decoded batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Body length in bytes.
    pub len: u32,
    /// CRC32C of the body.
    pub body_crc: u32,
}

impl BatchHeader {
    /// Encodes the header, including its own CRC.
    pub fn encode(&self) -> [u8; BATCH_HEADER_LEN] {
        let mut h = [0u8; BATCH_HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&self.len.to_le_bytes());
        h[8..12].copy_from_slice(&self.body_crc.to_le_bytes());
        let hcrc = crc32c(&h[0..12]);
        h[12..16].copy_from_slice(&hcrc.to_le_bytes());
        h
    }

    /// Decodes and verifies a header (magic, header CRC, length limit).
    pub fn decode(h: &[u8; BATCH_HEADER_LEN], max_body: usize) -> Result<Self, DecodeError> {
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if word(0) != MAGIC {
            return Err(DecodeError::BadMagic { found: word(0) });
        }
        if crc32c(&h[0..12]) != word(12) {
            return Err(DecodeError::HeaderChecksum);
        }
        let len = word(4);
        if len as usize > max_body {
            return Err(DecodeError::BatchTooLong {
                len: len as usize,
                max: max_body,
            });
        }
        Ok(Self {
            len,
            body_crc: word(8),
        })
    }
}

/// Splits verified batch bodies off the front of a receive buffer.
///
/// The contract of `tokio_util::codec::Decoder`: `Ok(None)` means "need more
/// bytes"; the header (and so the length) is verified before the caller is
/// asked to wait for, or allocate, the body.
#[derive(Debug)]
pub struct BatchDecoder {
    max_body: usize,
    head: Option<BatchHeader>,
}

impl BatchDecoder {
    /// A decoder that refuses bodies over `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Self {
            max_body,
            head: None,
        }
    }

    /// Forgets a half-received batch (after a link reset).
    pub fn reset(&mut self) {
        self.head = None;
    }

    /// Changes the largest body accepted from the next header on.
    pub fn set_max_body(&mut self, max_body: usize) {
        self.max_body = max_body;
    }

    /// Takes one complete, CRC-checked batch body off the front of `buf`.
    /// The returned body shares `buf`'s memory.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        let head = match self.head {
            Some(h) => h,
            None => {
                let Some(h) = buf.get(..BATCH_HEADER_LEN) else {
                    return Ok(None);
                };
                let mut arr = [0u8; BATCH_HEADER_LEN];
                arr.copy_from_slice(h);
                let h = BatchHeader::decode(&arr, self.max_body)?;
                buf.advance(BATCH_HEADER_LEN);
                self.head = Some(h);
                h
            }
        };
        let len = head.len as usize;
        if buf.len() < len {
            return Ok(None);
        }
        self.head = None;
        let body = buf.split_to(len).freeze();
        if crc32c(&body) != head.body_crc {
            return Err(DecodeError::BodyChecksum { len });
        }
        Ok(Some(body))
    }

    /// How many more bytes `buf` needs before [`decode`](Self::decode) can
    /// return the batch under way (at least a header's worth when unknown).
    pub fn missing(&self, buf: &BytesMut) -> usize {
        match self.head {
            Some(h) => (h.len as usize).saturating_sub(buf.len()),
            None => BATCH_HEADER_LEN.saturating_sub(buf.len()),
        }
    }
}

/// Bytes ready for one `writev`: a list of segments, batch headers and
/// small records in shared scratch memory, large payloads referenced as
/// they came from the application (never copied).
#[derive(Debug, Default)]
pub struct Transmit {
    segments: Vec<Bytes>,
    len: usize,
    /// Records in this transmit (statistics).
    pub records: usize,
    /// Batches in this transmit (statistics).
    pub batches: usize,
    /// Batches whose header is not written yet (see [`Unsealed`]).
    unsealed: Vec<PendingBatch>,
}

/// A batch of an unsealed transmit: where its header goes, which segments
/// are its body.
#[derive(Debug, Clone, Copy)]
struct PendingBatch {
    head: usize,
    body: (usize, usize),
    len: u32,
}

/// A transmit whose batch checksums are not computed yet: [`seal`] does
/// it, so a driver can run the CRC (the largest cost of building a
/// transmit) after releasing whatever lock it built the transmit under.
///
/// [`seal`]: Unsealed::seal
#[derive(Debug, Default)]
#[must_use = "an unsealed transmit must be sealed before it is written"]
pub struct Unsealed(Transmit);

impl Unsealed {
    /// Bytes it will have once sealed.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Records in it.
    pub fn records(&self) -> usize {
        self.0.records
    }

    /// Batches in it.
    pub fn batches(&self) -> usize {
        self.0.batches
    }

    /// Nothing in it.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// Computes every batch's body CRC and writes the headers.
    pub fn seal(mut self) -> Transmit {
        let t = &mut self.0;
        let mut heads = BytesMut::with_capacity(t.unsealed.len() * BATCH_HEADER_LEN);
        for b in std::mem::take(&mut t.unsealed) {
            let body_crc = t.segments[b.body.0..b.body.1]
                .iter()
                .fold(0, |crc, s| crc32c_append(crc, s));
            let head = BatchHeader {
                len: b.len,
                body_crc,
            };
            heads.put_slice(&head.encode());
            t.segments[b.head] = heads.split().freeze();
        }
        self.0
    }
}

impl Transmit {
    /// The segments, in order.
    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// Total bytes left to write.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the first `n` bytes (after a possibly short write).
    pub fn advance(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        let mut drop = 0;
        for seg in &mut self.segments {
            if n == 0 {
                break;
            }
            if seg.len() <= n {
                n -= seg.len();
                drop += 1;
            } else {
                seg.advance(n);
                n = 0;
            }
        }
        self.segments.drain(..drop);
    }

    /// All bytes in one contiguous buffer (tests, and devices without writev).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for s in &self.segments {
            v.extend_from_slice(s);
        }
        v
    }
}

/// Packs records into batches of at most `max_batch` body bytes.
///
/// Payloads up to `inline_limit` bytes are copied next to their header (a
/// `writev` segment per tiny packet costs more than the copy); larger ones
/// are referenced. The checksums are computed when the transmit is sealed
/// ([`finish`](Self::finish), or [`Unsealed::seal`] after
/// [`finish_unsealed`](Self::finish_unsealed)).
#[derive(Debug)]
pub struct TransmitBuilder {
    scratch: BytesMut,
    out: Transmit,
    max_batch: usize,
    inline_limit: usize,
    /// Index of the current batch's header placeholder in `out.segments`.
    batch_head: Option<usize>,
    batch_len: usize,
}

/// Scratch memory allocated at a time for headers and inline payloads.
const SCRATCH_CHUNK: usize = 64 * 1024;

impl TransmitBuilder {
    /// A builder producing batches of at most `max_batch` body bytes.
    pub fn new(max_batch: usize, inline_limit: usize) -> Self {
        Self {
            scratch: BytesMut::with_capacity(SCRATCH_CHUNK),
            out: Transmit::default(),
            max_batch,
            inline_limit,
            batch_head: None,
            batch_len: 0,
        }
    }

    /// Changes the batch size limit (after the handshake learnt the peer's).
    pub fn set_max_batch(&mut self, max_batch: usize) {
        self.max_batch = max_batch;
    }

    /// Bytes in the transmit under construction.
    pub fn len(&self) -> usize {
        self.out.len + self.scratch.len()
    }

    /// Nothing added yet.
    pub fn is_empty(&self) -> bool {
        self.out.records == 0
    }

    /// Appends a record, opening a new batch when the current one is full.
    /// The caller keeps every record within `max_batch`.
    pub fn push(&mut self, rec: &Record) {
        let rec_len = rec.encoded_len();
        if self.batch_head.is_some() && self.batch_len + rec_len > self.max_batch {
            self.finish_batch();
        }
        if self.batch_head.is_none() {
            self.flush_scratch();
            self.batch_head = Some(self.out.segments.len());
            self.out.segments.push(Bytes::new());
            self.out.len += BATCH_HEADER_LEN;
            self.batch_len = 0;
        }
        self.scratch.reserve(SCRATCH_CHUNK.min(rec_len.max(64)));
        rec.encode_head(&mut self.scratch);
        match rec.payload() {
            Some(p) if p.len() > self.inline_limit => {
                self.flush_scratch();
                self.out.len += p.len();
                self.out.segments.push(p.clone());
            }
            Some(p) => self.scratch.put_slice(p),
            None => {}
        }
        self.batch_len += rec_len;
        self.out.records += 1;
    }

    /// Moves pending scratch bytes into a segment (they belong to the
    /// current batch body).
    fn flush_scratch(&mut self) {
        if self.scratch.is_empty() {
            return;
        }
        let seg = self.scratch.split().freeze();
        self.out.len += seg.len();
        self.out.segments.push(seg);
    }

    fn finish_batch(&mut self) {
        let Some(idx) = self.batch_head.take() else {
            return;
        };
        self.flush_scratch();
        self.out.unsealed.push(PendingBatch {
            head: idx,
            body: (idx + 1, self.out.segments.len()),
            len: self.batch_len as u32,
        });
        self.out.batches += 1;
    }

    /// Closes the last batch and hands out the transmit, sealed; the
    /// builder is ready for the next one.
    pub fn finish(&mut self) -> Transmit {
        self.finish_unsealed().seal()
    }

    /// Closes the last batch and hands out the transmit with its checksums
    /// still to compute (see [`Unsealed`]).
    pub fn finish_unsealed(&mut self) -> Unsealed {
        self.finish_batch();
        if self.scratch.capacity() < 1024 {
            self.scratch = BytesMut::with_capacity(SCRATCH_CHUNK);
        }
        Unsealed(std::mem::take(&mut self.out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{RecordIter, MAX_BATCH_BODY};

    fn data(chan: u32, offset: u64, n: usize) -> Record {
        Record::Data {
            chan,
            offset,
            end: false,
            payload: Bytes::from((0..n).map(|i| i as u8).collect::<Vec<_>>()),
        }
    }

    fn roundtrip(recs: &[Record], max_batch: usize) -> Vec<Record> {
        let mut b = TransmitBuilder::new(max_batch, 512);
        for r in recs {
            b.push(r);
        }
        let t = b.finish();
        let mut buf = BytesMut::from(&t.to_vec()[..]);
        assert_eq!(buf.len(), t.len());
        let mut d = BatchDecoder::new(MAX_BATCH_BODY);
        let mut out = Vec::new();
        while let Some(body) = d.decode(&mut buf).expect("valid") {
            for r in RecordIter::new(body) {
                out.push(r.expect("valid record"));
            }
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn inline_and_referenced_payloads_roundtrip() {
        let recs = vec![
            data(1, 0, 10),
            data(1, 10, 5000),
            Record::Ping { token: 7 },
            data(3, 0, 0),
            data(1, 5010, 100_000),
        ];
        assert_eq!(roundtrip(&recs, 64 * 1024), recs);
    }

    #[test]
    fn batches_split_at_limit() {
        let recs: Vec<_> = (0..20).map(|i| data(1, i * 3000, 3000)).collect();
        let mut b = TransmitBuilder::new(10_000, 512);
        for r in &recs {
            b.push(r);
        }
        let t = b.finish();
        assert_eq!(t.records, 20);
        // 3 records (3020 bytes each) per 10 000-byte batch.
        assert_eq!(t.batches, 7);
        assert_eq!(roundtrip(&recs, 10_000), recs);
    }

    #[test]
    fn advance_after_short_write() {
        let mut b = TransmitBuilder::new(64 * 1024, 16);
        b.push(&data(1, 0, 1000));
        b.push(&data(1, 1000, 1000));
        let mut t = b.finish();
        let all = t.to_vec();
        t.advance(700);
        assert_eq!(t.to_vec(), all[700..]);
        t.advance(all.len());
        assert!(t.is_empty());
        assert!(t.segments().is_empty());
    }

    #[test]
    fn header_rejects_corruption_and_oversize() {
        let h = BatchHeader {
            len: 100,
            body_crc: 1,
        }
        .encode();
        assert!(BatchHeader::decode(&h, 1000).is_ok());
        assert_eq!(
            BatchHeader::decode(&h, 50),
            Err(DecodeError::BatchTooLong { len: 100, max: 50 })
        );
        for bit in 0..(BATCH_HEADER_LEN * 8) {
            let mut c = h;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(BatchHeader::decode(&c, 1000).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn body_corruption_detected() {
        let mut b = TransmitBuilder::new(64 * 1024, 512);
        b.push(&data(1, 0, 3000));
        let mut v = b.finish().to_vec();
        v[BATCH_HEADER_LEN + 100] ^= 0x10;
        let mut buf = BytesMut::from(&v[..]);
        let err = BatchDecoder::new(MAX_BATCH_BODY).decode(&mut buf);
        assert!(matches!(err, Err(DecodeError::BodyChecksum { .. })));
    }
}

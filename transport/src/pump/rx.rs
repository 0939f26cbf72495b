//! The receive side of the pump: large reads into reused buffers, batch
//! checksums verified off the state lock, verified batches fed to the
//! session under it.
//!
//! Records handed to the application are slices of the buffer they were
//! read into, so a buffer stays alive until its last record was consumed.
//! Allocating a fresh multi-MiB buffer per read costs a page fault and a
//! page clear per 4 KiB in the kernel's `read` (measured: ~7 % of the CPU
//! at 1 GB/s), so filled buffers wait in a small pool until the
//! application dropped their records and are then reused as they are.
//! When every pooled buffer is still held by payloads a slow reader has
//! not taken, those payloads are copied out (`Session::compact_received`)
//! instead of allocating more: a stalled reader holds what its window
//! allows, never the buffers behind a few of its bytes.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::time::Instant;

use super::{events, LinkFault, PumpStats, Shared};
use crate::device::AsyncDevice;
use crate::session::Session;
use crate::wire::{resync_point, BatchDecoder, DecodeError};

/// Size of one receive buffer. Reads of 2 MiB often return a few KiB on
/// the real device (spec §6), so this is an upper bound per `read`; 4 MiB
/// lets one call take a full train of 256 KiB batches.
pub(crate) const READ_CHUNK: usize = 4 << 20;
/// Below this much room the buffer is switched for a fresh one.
const MIN_SPARE: usize = 256 * 1024;
/// Buffers waiting for their records to be consumed. With compaction this
/// bounds the pump's receive memory at `(POOL + 1) * READ_CHUNK` (36 MiB)
/// plus what the application itself holds on to.
pub(crate) const POOL: usize = 8;

#[derive(Debug)]
pub(crate) struct RecvBuf {
    /// Bytes read and not yet consumed, plus room to read.
    pub cur: BytesMut,
    /// Earlier buffers whose records may still be in use.
    pool: VecDeque<BytesMut>,
}

impl RecvBuf {
    pub fn new(stats: &mut PumpStats) -> Self {
        stats.recv_buffers += 1;
        Self {
            cur: BytesMut::with_capacity(READ_CHUNK),
            pool: VecDeque::new(),
        }
    }

    /// Makes room for at least `missing` more bytes (the rest of the batch
    /// under way) and, when room is short, moves to another buffer: a
    /// pooled one whose records are all consumed, else (pool full) the
    /// session's slow readers are compacted first, else a new one.
    pub fn prepare(&mut self, missing: usize, session: &mut Session, stats: &mut PumpStats) {
        let want = MIN_SPARE.max(missing);
        if self.cur.capacity() - self.cur.len() >= want {
            return;
        }
        let need = want.max(READ_CHUNK).max(self.cur.len() + want);
        let mut next = match self.take_reusable(need) {
            Some(b) => b,
            None => {
                if self.pool.len() == POOL {
                    // Every pooled buffer is held by payloads a reader has
                    // not taken: copy those out (at most what the windows
                    // allow) and the buffers come free.
                    session.compact_received();
                    stats.compactions += 1;
                }
                match self.take_reusable(need) {
                    Some(b) => b,
                    None => {
                        // Still held (by the application itself): a fresh
                        // one; the oldest pooled buffer is left to the
                        // allocator, freed when its last record is.
                        stats.recv_buffers += 1;
                        BytesMut::with_capacity(need)
                    }
                }
            }
        };
        // The partial batch at the end moves along (at most one batch).
        next.extend_from_slice(&self.cur);
        let mut old = std::mem::replace(&mut self.cur, next);
        old.clear();
        if self.pool.len() == POOL {
            self.pool.pop_front();
        }
        self.pool.push_back(old);
    }

    fn take_reusable(&mut self, need: usize) -> Option<BytesMut> {
        let i = (0..self.pool.len()).find(|&i| self.pool[i].try_reclaim(need))?;
        self.pool.remove(i)
    }
}

/// The receive state of one link.
#[derive(Debug)]
pub(crate) struct Rx {
    pub buf: RecvBuf,
    decoder: BatchDecoder,
    /// Largest body the session accepts now (refreshed under the lock).
    max_body: usize,
    /// Before the peer's Hello: batches go to the session one at a time,
    /// since the Hello changes what is accepted after it.
    one_at_a_time: bool,
}

impl Rx {
    pub fn new(session: &Session, stats: &mut PumpStats) -> Self {
        Self {
            buf: RecvBuf::new(stats),
            decoder: BatchDecoder::new(session.accepted_batch_len()),
            max_body: session.accepted_batch_len(),
            one_at_a_time: session.awaiting_peer_hello(),
        }
    }

    /// Bytes that complete the batch under way (sizes the next read).
    pub fn missing(&self) -> usize {
        self.decoder.missing(&self.buf.cur)
    }

    /// Reads what the device has, without waiting: `Ok(None)` if nothing
    /// is there, `Ok(Some(0))` at EOF.
    pub fn try_read(&mut self, dev: &AsyncDevice) -> Result<Option<usize>, LinkFault> {
        match dev.try_read_buf(&mut self.buf.cur) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(LinkFault::from_io(&e)),
        }
    }

    /// Verifies the complete batches in the buffer (off the lock), feeds
    /// them to the session and hands out its events (under it). Returns
    /// whether any event was handed out (a reader may be waiting to run).
    pub fn ingest(&mut self, shared: &Arc<Shared>) -> Result<bool, LinkFault> {
        let mut woke = false;
        loop {
            let mut bodies: Vec<Bytes> = Vec::new();
            let mut bad: Option<DecodeError> = None;
            self.decoder.set_max_body(self.max_body);
            loop {
                match self.decoder.decode(&mut self.buf.cur) {
                    Ok(Some(b)) => {
                        bodies.push(b);
                        if self.one_at_a_time {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            if bodies.is_empty() && bad.is_none() {
                return Ok(woke);
            }
            let mut st = shared.lock();
            let now = Instant::now().into_std();
            for body in bodies {
                st.session.handle_batch(now, body)?;
            }
            if let Some(e) = &bad {
                st.session.handle_bad_input(now, e)?;
                self.decoder.reset();
                let skip = resync_point(&self.buf.cur);
                st.session.skipped(skip);
                self.buf.cur.advance(skip);
            }
            if let Some(o) = &shared.opts.observer {
                // At most one ping is out at a time: one new sample at most.
                let stats = st.session.stats();
                if stats.rtt_samples != st.rtt_seen {
                    st.rtt_seen = stats.rtt_samples;
                    if let Some(rtt) = stats.rtt {
                        o.rtt(rtt);
                    }
                }
                // A resync ends on input (the peer's Hello): one at most.
                if stats.resyncs != st.resyncs_seen {
                    st.resyncs_seen = stats.resyncs;
                    if let Some(took) = stats.resync_last {
                        o.resync(took);
                    }
                }
            }
            self.max_body = st.session.accepted_batch_len();
            self.one_at_a_time = st.session.awaiting_peer_hello();
            woke |= st.session.has_events();
            events::dispatch(shared, &mut st);
            events::unlock(st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{ChannelKind, Class, Recv, SessionConfig};
    use crate::sim::Pair;

    #[test]
    fn buffers_are_reused_once_records_are_dropped() {
        let mut stats = PumpStats::default();
        let mut session = Session::new(SessionConfig::default(), 1, std::time::Instant::now());
        let mut rb = RecvBuf::new(&mut stats);
        rb.cur.extend_from_slice(&vec![1u8; READ_CHUNK - 1000]);
        let held = rb.cur.split_to(READ_CHUNK - 1100).freeze();
        let first = held.as_ptr();
        rb.prepare(0, &mut session, &mut stats);
        // The 100-byte tail moved to a new buffer.
        assert_eq!(rb.cur.len(), 100);
        assert_ne!(rb.cur.as_ptr(), first);
        drop(held);
        // Fill and switch again: the first buffer comes back.
        let n = rb.cur.capacity() - rb.cur.len();
        rb.cur.extend_from_slice(&vec![2u8; n]);
        let _ = rb.cur.split_to(rb.cur.len() - 10);
        rb.prepare(0, &mut session, &mut stats);
        assert_eq!(rb.cur.as_ptr(), first, "pooled buffer not reused");
        assert_eq!(&rb.cur[..], &[2u8; 10]);
        assert_eq!(stats.recv_buffers, 2);
    }

    /// Issue 6, defect 2: payloads of 4 KiB and more stay slices of the
    /// receive buffer, so a reader that stalls with one of them in each
    /// buffer pinned a 4 MiB buffer per payload: 64 payloads of 8 KiB
    /// (half a MiB, well within its window) held 64 buffers, 256 MiB, and
    /// a hostile peer could pin ~1000 times a window. Now the pump
    /// compacts the slow reader's payloads when no buffer comes free, and
    /// allocates at most a few buffers whatever the reader does.
    #[test]
    fn a_stalled_reader_does_not_pin_receive_buffers() {
        // Whole windows: the stalled reader holds half a MiB.
        let cfg = SessionConfig {
            grow_windows: false,
            ..SessionConfig::default()
        };
        let mut p = Pair::new(cfg, 21);
        p.drive().expect("handshake");
        let mut ids = Vec::new();
        for svc in ["stalled", "fast"] {
            let a =
                p.a.open(ChannelKind::Stream, Class::Bulk, svc)
                    .expect("open");
            p.drive().expect("open");
            let b = crate::session::tests::incoming(&p.events_b)[ids.len()];
            p.b.accept(b).expect("accept");
            p.drive().expect("accept");
            ids.push((a, b));
        }
        let [(stalled_a, stalled_b), (fast_a, fast_b)] = ids[..] else {
            unreachable!("two channels were opened");
        };
        // B is fed through a pump receive buffer, one 4 MiB read at a time.
        let mut stats = PumpStats::default();
        let mut rb = RecvBuf::new(&mut stats);
        let fast = Bytes::from(vec![7u8; 4 << 20]);
        let stalled = Bytes::from(vec![9u8; 8 << 10]);
        for _ in 0..64 {
            assert_eq!(p.a.send(stalled_a, stalled.clone()), Ok(stalled.len()));
            let mut left = fast.clone();
            while !left.is_empty() {
                if let Ok(n) = p.a.send(fast_a, left.clone()) {
                    let _ = left.split_to(n);
                }
                let mut wire = Vec::new();
                while let Some(t) = p.a.poll_transmit(p.now) {
                    wire.extend_from_slice(&t.to_vec());
                }
                for piece in wire.chunks(READ_CHUNK / 2) {
                    rb.prepare(piece.len(), &mut p.b, &mut stats);
                    rb.cur.extend_from_slice(piece);
                    p.b.handle_input(p.now, &mut rb.cur).expect("input");
                    // The fast reader takes everything at once.
                    while let Ok(Recv::Data(_)) = p.b.recv(fast_b, usize::MAX) {}
                }
                // B's acknowledgements and credit go back to A.
                while let Some(t) = p.b.poll_transmit(p.now) {
                    let mut buf = bytes::BytesMut::from(&t.to_vec()[..]);
                    p.a.handle_input(p.now, &mut buf).expect("acks");
                }
            }
        }
        assert!(
            stats.recv_buffers <= POOL as u64 + 2,
            "{} receive buffers of 4 MiB allocated for a reader holding 512 KiB",
            stats.recv_buffers
        );
        assert!(stats.compactions > 0);
        // Nothing was lost by the copying.
        let mut got = 0;
        while let Ok(Recv::Data(b)) = p.b.recv(stalled_b, usize::MAX) {
            assert!(b.iter().all(|x| *x == 9));
            got += b.len();
        }
        assert_eq!(got, 64 * stalled.len());
    }
}

//! The pump's receive buffer: large reads into memory that is reused.
//!
//! Records handed to the application are slices of the buffer they were
//! read into, so a buffer stays alive until its last record was consumed.
//! Allocating a fresh multi-MiB buffer per read costs a page fault and a
//! page clear per 4 KiB in the kernel's `read` (measured: ~7 % of the CPU
//! at 1 GB/s), so filled buffers wait in a small pool until the
//! application dropped their records and are then reused as they are.

use std::collections::VecDeque;

use bytes::BytesMut;

/// Size of one receive buffer. Reads of 2 MiB often return a few KiB on
/// the real device (spec §6), so this is an upper bound per `read`; 4 MiB
/// lets one call take a full train of 256 KiB batches.
pub(crate) const READ_CHUNK: usize = 4 << 20;
/// Below this much room the buffer is switched for a fresh one.
const MIN_SPARE: usize = 256 * 1024;
/// Buffers waiting for their records to be consumed. More than this and
/// the oldest is left to the allocator (the application is far behind).
const POOL: usize = 8;

#[derive(Debug)]
pub(crate) struct RecvBuf {
    /// Bytes read and not yet consumed by the session, plus room to read.
    pub cur: BytesMut,
    /// Earlier buffers whose records may still be in use.
    pool: VecDeque<BytesMut>,
}

impl RecvBuf {
    pub fn new() -> Self {
        Self {
            cur: BytesMut::with_capacity(READ_CHUNK),
            pool: VecDeque::new(),
        }
    }

    /// Makes room for at least `missing` more bytes (the rest of the batch
    /// under way) and, when room is short, moves to another buffer.
    pub fn prepare(&mut self, missing: usize) {
        let want = MIN_SPARE.max(missing);
        if self.cur.capacity() - self.cur.len() >= want {
            return;
        }
        let need = want.max(READ_CHUNK).max(self.cur.len() + want);
        let mut next = self.take_reusable(need);
        // The partial batch at the end moves along (at most one batch).
        next.extend_from_slice(&self.cur);
        let mut old = std::mem::replace(&mut self.cur, next);
        old.clear();
        if self.pool.len() == POOL {
            self.pool.pop_front();
        }
        self.pool.push_back(old);
    }

    fn take_reusable(&mut self, need: usize) -> BytesMut {
        for i in 0..self.pool.len() {
            if self.pool[i].try_reclaim(need) {
                if let Some(b) = self.pool.remove(i) {
                    return b;
                }
            }
        }
        BytesMut::with_capacity(need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_once_records_are_dropped() {
        let mut rb = RecvBuf::new();
        rb.cur.extend_from_slice(&vec![1u8; READ_CHUNK - 1000]);
        let held = rb.cur.split_to(READ_CHUNK - 1100).freeze();
        let first = held.as_ptr();
        rb.prepare(0);
        // The 100-byte tail moved to a new buffer.
        assert_eq!(rb.cur.len(), 100);
        assert_ne!(rb.cur.as_ptr(), first);
        drop(held);
        // Fill and switch again: the first buffer comes back.
        let n = rb.cur.capacity() - rb.cur.len();
        rb.cur.extend_from_slice(&vec![2u8; n]);
        let _ = rb.cur.split_to(rb.cur.len() - 10);
        rb.prepare(0);
        assert_eq!(rb.cur.as_ptr(), first, "pooled buffer not reused");
        assert_eq!(&rb.cur[..], &[2u8; 10]);
    }
}

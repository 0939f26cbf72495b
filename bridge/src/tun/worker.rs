//! One task per queue of the interface, both directions: packets read from
//! the interface go through the fair queues ([`queue`](super::queue), one
//! per lane) to the peer on three datagram channels (latency-, normal- and
//! bulk-class, see [`flow`](super::flow)); records from the peer's channels
//! are written to the interface.
//!
//! # One task, no hops
//!
//! Every turn takes what is ready, without waiting, in this order:
//!
//! 1. records the pump delivered on the receive channels (latency class
//!    first, in slices of [`RX_SLICE`], up to [`RX_BATCH`] per channel),
//!    written to the interface;
//! 2. packets from the interface (up to [`READ_BATCH`] packets or
//!    [`READ_BATCH_BYTES`]), classified and queued;
//! 3. from the fair queue, as many packets as the lane's channel has room
//!    for under [`HANDOFF`], handed over under one lock and flushed once
//!    (one device write when the pump is idle, from this task).
//!
//! and waits only when none of them had anything, registered on all of
//! them at once. So an idle ping crosses with no task hop of ours: the
//! pump reads the device and wakes this task on its own worker thread
//! (tokio's LIFO slot); the task writes the echo request to the interface,
//! and the kernel answers within that `writev`, so step 2 of the same turn
//! reads the reply and step 3 writes it to the device. No timer is armed
//! anywhere on that path.
//!
//! # The hand-off (BQL)
//!
//! The transport's datagram queue is FIFO for all flows of a channel: a
//! packet there waits behind everything queued before it. So packets stay
//! in the fair queue, and a lane's channel gets more only while it holds
//! less than [`HANDOFF`] bytes; when it has more, the task asks the session
//! to wake it once the queue has drained to half of that
//! (`poll_datagram_queued`). What the transport holds is then about one
//! millisecond of the cable's drain time, as byte queue limits keep a
//! NIC's ring short.

use std::hash::RandomState;
use std::io::IoSlice;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use tbbridge_transport::pump::{Channel, SendError};
use tokio::sync::mpsc;

use super::device::Queue;
use super::flow::{self, Lane, LANES};
use super::packet::{self, Plain, Reject, MAX_RECORD, VNET_HDR_LEN};
use super::queue::{FqCodel, Params, QueueStats};
use super::stats::{add, inc, TunStats};

/// Records taken from one receive channel per lock: enough to amortise the
/// lock over a burst (64 superpackets are 4 MiB), few enough that the other
/// channels and the interface's side get their turn soon.
pub const RX_BATCH: usize = 64;
/// Records taken from one receive channel before the others get their
/// turn: 8 superpackets are about 0.3 ms of writes to the interface, what
/// a latency-class record may wait behind.
pub const RX_SLICE: usize = 8;
/// Packets read from the interface per turn before they are handed over:
/// one lock and one flush per batch instead of per packet.
pub const READ_BATCH: usize = 64;
/// Bytes read per turn: four superpackets. Reading more before handing the
/// first over would add its read time (~15 µs per superpacket here) to the
/// first one's latency for no gain: the transport already has a queue.
pub const READ_BATCH_BYTES: usize = 256 * 1024;
/// Bytes a lane's datagram channel may hold before the fair queue keeps
/// the rest, per lane. Bulk: 512 KiB, about 0.7 ms of the emulated cable
/// at its 6 Gbit/s and 0.2 ms of a real one at 2.8 GB/s: enough that the
/// pump always finds a transmit's worth (it takes the whole queue into one
/// write), short enough that the fair queue, not a FIFO, decides the order.
/// Latency and ACKs: 64 KiB, hundreds of small packets; the session sends
/// these lanes before bulk anyway.
pub const HANDOFF: [usize; LANES] = [64 * 1024, 64 * 1024, 512 * 1024];
/// Reads land in blocks of this size; each packet is split off without
/// copying, so one allocation serves many packets (about 16 superpackets,
/// thousands of small ones), and a block is reused in place once all its
/// packets were sent.
const READ_BLOCK: usize = 1 << 20;
/// Retired read blocks kept for reuse: the fair queue's byte limit (4 MiB)
/// spans about five blocks, and a few more cover what the transport holds.
const POOL_BLOCKS: usize = 8;
/// Total bytes of the latency and ACK lanes' fair queues: their packets are
/// small, and one that waits behind a megabyte of them is no longer served
/// quickly.
const SMALL_LIMIT_BYTES: usize = 1 << 20;

/// What the rest of the front-end tells a worker.
#[derive(Debug)]
pub enum Ctl {
    /// The lane's send channel is (`Some`) or is not (`None`) usable.
    Send(Lane, Option<Arc<Channel>>),
    /// A channel the peer opened, for receiving.
    Recv(Channel),
    /// The link is up (`true`) or down.
    Link(bool),
}

/// The state of one queue's task.
pub struct Worker {
    q: Arc<Queue>,
    vnet: bool,
    name: String,
    stats: Arc<TunStats>,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    up: bool,
    send: [Option<Arc<Channel>>; LANES],
    recv: Vec<Channel>,
    fq: [FqCodel; LANES],
    /// What of the queues' counters (and backlog) was already added to
    /// `stats`.
    published: [QueueStats; LANES],
    published_backlog: usize,
    hasher: RandomState,
    buf: BytesMut,
    /// Retired read blocks, reused once their packets are gone.
    blocks: Vec<BytesMut>,
    records: Vec<Bytes>,
    batch: Vec<Bytes>,
    plain: Plain,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("up", &self.up)
            .field("recv", &self.recv.len())
            .finish_non_exhaustive()
    }
}

impl Worker {
    pub fn new(
        q: Arc<Queue>,
        vnet: bool,
        mtu: u32,
        name: String,
        stats: Arc<TunStats>,
        ctl: mpsc::UnboundedReceiver<Ctl>,
    ) -> Worker {
        let bulk = Params::for_mtu(mtu);
        let small = Params {
            limit_bytes: SMALL_LIMIT_BYTES,
            ..bulk
        };
        Worker {
            q,
            vnet,
            name,
            stats,
            ctl,
            up: false,
            send: [None, None, None],
            recv: Vec::new(),
            fq: [FqCodel::new(small), FqCodel::new(small), FqCodel::new(bulk)],
            published: [QueueStats::default(); LANES],
            published_backlog: 0,
            hasher: RandomState::new(),
            buf: BytesMut::new(),
            blocks: Vec::new(),
            records: Vec::with_capacity(RX_BATCH),
            batch: Vec::with_capacity(READ_BATCH),
            plain: Plain::default(),
        }
    }

    /// Runs until the front-end stops (its control sender is dropped);
    /// errors only on a failure of the interface itself.
    pub async fn run(mut self) -> anyhow::Result<()> {
        loop {
            match std::future::poll_fn(|cx| self.turn(cx)).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(e),
            }
            // Work found: go on at once, but let the runtime's other tasks
            // (the pump, other queues) in between when the budget says so.
            tokio::task::consume_budget().await;
        }
    }

    /// One turn (see the module docs): `Ready(Ok(true))` after work,
    /// `Ready(Ok(false))` when stopped, `Pending` with every source
    /// registered when nothing was ready.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<anyhow::Result<bool>> {
        let mut work = false;
        loop {
            match self.ctl.poll_recv(cx) {
                Poll::Ready(Some(c)) => {
                    work = true;
                    self.control(c);
                }
                Poll::Ready(None) => return Poll::Ready(Ok(false)),
                Poll::Pending => break,
            }
        }
        let wrote = self.receive(cx)?;
        work |= wrote;
        let now = Instant::now();
        work |= self.read(cx, now, wrote)?;
        work |= self.hand_off(cx, now);
        self.publish();
        if work {
            Poll::Ready(Ok(true))
        } else {
            Poll::Pending
        }
    }

    fn control(&mut self, c: Ctl) {
        match c {
            Ctl::Send(lane, ch) => self.send[lane as usize] = ch,
            Ctl::Recv(ch) => {
                // Latency class first, as the sender's session serves it.
                let at = self.recv.partition_point(|c| c.class() <= ch.class());
                self.recv.insert(at, ch);
            }
            Ctl::Link(up) => {
                self.up = up;
                if !up {
                    // Not worth delivering late.
                    let n: usize = self.fq.iter_mut().map(FqCodel::clear).sum();
                    add(&self.stats.drop_link_down, n as u64);
                }
            }
        }
    }

    /// Step 1: records from the peer to the interface, in rounds over the
    /// channels (latency class first) of at most [`RX_SLICE`] records each,
    /// up to [`RX_BATCH`] per channel: a ping's echo request waits behind
    /// at most a slice of superpackets being written, not a whole batch.
    fn receive(&mut self, cx: &mut Context<'_>) -> anyhow::Result<bool> {
        let mut work = false;
        for _ in 0..RX_BATCH / RX_SLICE {
            let more = self.receive_round(cx)?;
            work |= more;
            if !more {
                break;
            }
        }
        Ok(work)
    }

    /// One round of [`receive`](Self::receive): whether any channel had
    /// records.
    fn receive_round(&mut self, cx: &mut Context<'_>) -> anyhow::Result<bool> {
        let mut work = false;
        let mut i = 0;
        while i < self.recv.len() {
            self.records.clear();
            match self.recv[i].poll_recv_datagrams(cx, &mut self.records, RX_SLICE) {
                Poll::Ready(Ok(true)) => {
                    work = true;
                    let records = std::mem::take(&mut self.records);
                    for rec in &records {
                        self.write_record(rec)?;
                    }
                    self.records = records;
                    i += 1;
                }
                Poll::Ready(Ok(false)) => {
                    let ch = self.recv.swap_remove(i);
                    tracing::info!(
                        "{}: receive channel {} closed by the peer",
                        self.name,
                        ch.id()
                    );
                }
                Poll::Ready(Err(e)) => {
                    let ch = self.recv.swap_remove(i);
                    tracing::info!("{}: receive channel {} ended: {e}", self.name, ch.id());
                }
                Poll::Pending => i += 1,
            }
        }
        Ok(work)
    }

    /// Writes one record from the peer to the interface.
    fn write_record(&mut self, rec: &Bytes) -> anyhow::Result<()> {
        let stats = &self.stats;
        let c = match packet::check(rec) {
            Ok(c) => c,
            Err(Reject::TooBig) => {
                inc(&stats.drop_too_big);
                return Ok(());
            }
            Err(e) => {
                inc(&stats.drop_malformed_peer);
                tracing::debug!("{}: dropped a packet from the peer: {e}", self.name);
                return Ok(());
            }
        };
        let pkt = &rec[VNET_HDR_LEN..];
        let r = if self.vnet {
            let hdr = c.hdr.encode();
            self.q
                .try_write(&[IoSlice::new(&hdr), IoSlice::new(pkt)])
                .map(|_| ())
        } else {
            let n = match self.plain.prepare(rec, &c) {
                Ok((n, soft)) => {
                    if soft {
                        inc(&stats.rx_software_offload);
                    }
                    n
                }
                Err(e) => {
                    inc(&stats.drop_malformed_peer);
                    tracing::debug!("{}: dropped a packet from the peer: {e}", self.name);
                    return Ok(());
                }
            };
            let mut r = Ok(());
            for i in 0..n {
                r = r.and(
                    self.q
                        .try_write(&[IoSlice::new(self.plain.packet(rec, i))])
                        .map(|_| ()),
                );
            }
            r
        };
        match r {
            Ok(()) => {
                inc(&stats.rx_packets);
                add(&stats.rx_bytes, pkt.len() as u64);
                if c.hdr.is_gso() {
                    inc(&stats.rx_superpackets);
                }
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                Err(e).with_context(|| format!("writing to {}", self.name))
            }
            Err(e) => {
                inc(&stats.drop_tun_write);
                tracing::debug!("{}: the kernel refused a packet: {e}", self.name);
                Ok(())
            }
        }
    }

    /// Step 2: packets from the interface into the fair queue. After
    /// writes to the interface (`wrote`) the first read is tried at once
    /// (see [`Queue::read_now`]).
    fn read(&mut self, cx: &mut Context<'_>, now: Instant, wrote: bool) -> anyhow::Result<bool> {
        // Without offloads the kernel gives bare packets: leave room for an
        // all-zero virtio header in front so the record needs no copy.
        let head = if self.vnet { 0 } else { VNET_HDR_LEN };
        // One byte more than a record may be, to see truncation.
        let max = MAX_RECORD + 1 - head;
        let (mut packets, mut bytes) = (0, 0);
        while packets < READ_BATCH && bytes < READ_BATCH_BYTES {
            self.buf.clear();
            if self.buf.capacity() < MAX_RECORD + 1 {
                self.next_block();
            }
            self.buf.extend_from_slice(&[0u8; VNET_HDR_LEN][..head]);
            let now_read = if wrote && packets == 0 {
                self.q.read_now(&mut self.buf, max)
            } else {
                Ok(None)
            };
            let r = match now_read {
                Ok(Some(n)) => Poll::Ready(Ok(n)),
                Ok(None) => self.q.poll_read_into(cx, &mut self.buf, max),
                Err(e) => Poll::Ready(Err(e)),
            };
            let n = match r {
                Poll::Ready(r) => r.with_context(|| format!("reading from {}", self.name))?,
                Poll::Pending => break,
            };
            packets += 1;
            bytes += n;
            self.take_packet(n >= max, now);
        }
        Ok(packets > 0)
    }

    /// Moves `buf` to a block with room for a record: a retired block
    /// whose packets have all been sent, else a new one. Packets wait in
    /// the fair queue, so the block they were read into is still held when
    /// the next is needed; allocating each anew cost a page fault and a
    /// page clear per 4 KiB (8 % of the sending side's CPU, measured).
    fn next_block(&mut self) {
        let old = std::mem::take(&mut self.buf);
        if let Some(i) = self
            .blocks
            .iter_mut()
            .position(|b| b.try_reclaim(READ_BLOCK))
        {
            self.buf = self.blocks.swap_remove(i);
        } else {
            self.buf = BytesMut::with_capacity(READ_BLOCK);
        }
        // (An exhausted block still refers to its allocation: kept, it
        // comes back whole once its packets are gone.)
        if self.blocks.len() >= POOL_BLOCKS {
            self.blocks.remove(0);
        }
        self.blocks.push(old);
    }

    /// Checks, classifies and queues the packet in `buf`.
    fn take_packet(&mut self, truncated: bool, now: Instant) {
        let stats = &self.stats;
        if truncated {
            inc(&stats.drop_too_big);
            return;
        }
        let c = match packet::check(&self.buf) {
            Ok(c) => c,
            Err(Reject::TooBig) => {
                inc(&stats.drop_too_big);
                return;
            }
            Err(e) => {
                inc(&stats.drop_malformed_tun);
                tracing::debug!("{}: dropped a packet from the interface: {e}", self.name);
                return;
            }
        };
        if c.changed {
            self.buf[..VNET_HDR_LEN].copy_from_slice(&c.hdr.encode());
        }
        let f = flow::classify(&self.buf, &self.hasher);
        if !self.up || self.send[f.lane as usize].is_none() {
            inc(&stats.drop_link_down);
            return;
        }
        if c.hdr.is_gso() {
            inc(&stats.tx_superpackets);
        }
        self.fq[f.lane as usize].enqueue(now, f.hash, self.buf.split());
    }

    /// Step 3: from the fair queue to the channels, while they are short.
    fn hand_off(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut work = false;
        for lane in Lane::ALL {
            let l = lane as usize;
            if self.fq[l].is_empty() {
                continue;
            }
            let Some(ch) = self.send[l].clone() else {
                let n = self.fq[l].clear();
                add(&self.stats.drop_link_down, n as u64);
                continue;
            };
            let queued = match ch.poll_datagram_queued(cx, HANDOFF[l] / 2) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => {
                    self.lost(lane, &e);
                    continue;
                }
                // Woken when it drained to half.
                Poll::Pending => continue,
            };
            let mut room = HANDOFF[l].saturating_sub(queued);
            let mut bytes = 0u64;
            while room > 0 {
                let Some(d) = self.fq[l].dequeue(now) else {
                    break;
                };
                room = room.saturating_sub(d.len());
                bytes += (d.len() - VNET_HDR_LEN) as u64;
                self.batch.push(d.freeze());
            }
            let n = self.batch.len() as u64;
            if n == 0 {
                continue;
            }
            work = true;
            match ch.send_datagrams(&mut self.batch) {
                Ok(sent) => {
                    let sent = sent as u64;
                    add(&self.stats.tx_packets, sent);
                    add(&self.stats.tx_bytes, bytes);
                    add(&self.stats.tx_lane[l], sent);
                    add(&self.stats.drop_queue_full, n - sent);
                }
                Err(SendError::TooLarge { .. }) => add(&self.stats.drop_too_big, n),
                Err(e) => {
                    add(&self.stats.drop_link_down, n);
                    self.lost(lane, &e);
                }
            }
            self.batch.clear();
        }
        work
    }

    /// The lane's channel failed (reset, closed): its keeper reopens it.
    fn lost(&mut self, lane: Lane, e: &SendError) {
        tracing::debug!("{}: {lane:?} send channel: {e}", self.name);
        self.send[lane as usize] = None;
        let n = self.fq[lane as usize].clear();
        add(&self.stats.drop_link_down, n as u64);
    }

    /// Adds what the fair queues counted since the last call to `stats`.
    fn publish(&mut self) {
        let s = &self.stats;
        for l in 0..LANES {
            let now = self.fq[l].stats();
            let was = std::mem::replace(&mut self.published[l], now);
            add(&s.fq_aqm_drops, now.aqm_drops - was.aqm_drops);
            add(&s.fq_ecn_marks, now.ecn_marks - was.ecn_marks);
            add(
                &s.fq_overflow_drops,
                now.overflow_drops - was.overflow_drops,
            );
            add(&s.fq_new_flows, now.new_flows - was.new_flows);
        }
        let backlog: usize = self.fq.iter().map(FqCodel::bytes).sum();
        if backlog != self.published_backlog {
            // A gauge summed over the queues: add the change (wrapping
            // arithmetic makes a decrease a subtraction).
            let delta = backlog.wrapping_sub(self.published_backlog) as u64;
            self.published_backlog = backlog;
            add(&s.fq_backlog_bytes, delta);
            s.fq_backlog_max
                .fetch_max(backlog as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

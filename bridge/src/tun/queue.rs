//! Flow queueing with active queue management for the packets of one TUN
//! queue: FQ-CoDel as in RFC 8290 and Linux's `net/sched/sch_fq_codel.c`,
//! sans-IO (time is passed in).
//!
//! Packets that tbbridge reads from the interface have left the kernel's
//! qdisc: from then on they wait here, and this is where flows can still be
//! told apart. What goes on:
//!
//! * **Flows.** A packet's flow hash (see [`flow`](super::flow)) picks one
//!   of [`Params::flows`] queues (FIFO each).
//! * **Deficit round robin.** Active queues take turns; each turn a queue
//!   may send [`Params::quantum`] bytes (its deficit; a superpacket larger
//!   than the quantum takes several turns' worth). So every backlogged flow
//!   gets the same share in bytes, whatever its packet sizes and however
//!   fast it sends.
//! * **New flows first.** A queue that becomes active goes on the *new*
//!   list, served before the *old* list of queues that stayed backlogged:
//!   a flow that sends less than its share (a ping, an SSH keystroke, a
//!   DNS query, TCP's handshake) never waits behind the bulk flows. A new
//!   queue that used up its quantum, or ran empty while old ones wait,
//!   moves to the old list (so a stream of "new" packets cannot starve the
//!   old flows).
//! * **CoDel per queue.** Each packet is stamped when it arrives; when a
//!   queue's packets have waited longer than [`Params::target`] for a
//!   whole [`Params::interval`], CoDel drops (or marks CE, for ECN-capable
//!   packets) its head packet, then again after `interval / sqrt(n)` for
//!   the n-th drop, until the waiting time falls under the target. A TCP
//!   flow halves its window per drop and the queue stays short; nothing is
//!   dropped from a queue below one MTU, or from a queue that drains.
//! * **Overflow.** Above [`Params::limit_bytes`] or
//!   [`Params::limit_packets`] the queue with the most bytes (the
//!   fattest flow, not the one that just arrived) loses packets from its
//!   head, up to half its bytes at once (at most [`DROP_BATCH`] packets),
//!   as `fq_codel_drop` does: an unresponsive flood pays for itself.
//!
//! Drops are counted by reason in [`QueueStats`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::flow::mark_ce;

/// Most packets dropped from the fattest flow at one overflow, as
/// `fq_codel`'s `drop_batch_size`: one overflow frees a lot of room at
/// once, so a flood does not make every enqueue scan the queues.
pub const DROP_BATCH: usize = 64;

/// The queue's settings; [`Params::for_mtu`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Flow queues. 1024 as `fq_codel`: with the keyed hash, one of a
    /// hundred active flows shares its queue with another with
    /// probability about 9 %.
    pub flows: usize,
    /// Bytes a queue may send per round: one full-size packet, as
    /// `fq_codel` (the MTU).
    pub quantum: u32,
    /// Waiting time CoDel tolerates (see the module docs and `docs/nic.md`
    /// for the reason of the value).
    pub target: Duration,
    /// How long the waiting time must stay above the target before CoDel
    /// drops, and the base of its drop spacing: about the round-trip time of
    /// the flows through the link.
    pub interval: Duration,
    /// A queue holding at most this many bytes is never dropped from by
    /// CoDel (one packet's waiting is not a standing queue).
    pub mtu: usize,
    /// Total bytes held before overflow drops.
    pub limit_bytes: usize,
    /// Total packets held before overflow drops.
    pub limit_packets: usize,
    /// Mark ECN-capable packets Congestion Experienced instead of
    /// dropping them.
    pub ecn: bool,
}

impl Params {
    /// The defaults for an interface of this MTU (see `docs/nic.md`).
    pub fn for_mtu(mtu: u32) -> Params {
        Params {
            flows: 1024,
            quantum: mtu.max(1500),
            target: TARGET,
            interval: INTERVAL,
            mtu: mtu.max(1500) as usize,
            limit_bytes: LIMIT_BYTES,
            limit_packets: LIMIT_PACKETS,
            ecn: true,
        }
    }
}

/// CoDel's target: 500 µs. On the Internet `fq_codel` uses 5 ms, 5 % of a
/// 100 ms interval; a packet here crosses a cable with a round trip of
/// about 100 µs idle and about a millisecond under load (the transport's
/// own bounded queue, see `HANDOFF` in `tun/mod.rs`), so both are scaled
/// by 1/10 and 1/20: a standing queue above half a millisecond is bloat on
/// this link, while this VM's scheduling jitter (a thread wake-up costs 50
/// to 100 µs) must not read as one.
pub const TARGET: Duration = Duration::from_micros(500);
/// CoDel's interval: 5 ms, a few round trips of a loaded flow through
/// the link (its RTT is 0.5-2 ms), so TCP has reacted to one drop before
/// the next comes, and a flood is brought under control within
/// milliseconds. Target / interval = 10 %, inside the 5-10 % RFC 8289
/// recommends.
pub const INTERVAL: Duration = Duration::from_millis(5);
/// Total bytes held: 4 MiB, 5 ms at 6.7 Gbit/s: ten times the target at
/// the link's rate, so CoDel, not the limit, controls responsive flows,
/// while a flood cannot hold more than the old fixed 4 MiB datagram queue.
pub const LIMIT_BYTES: usize = 4 << 20;
/// Total packets held: 10240, `fq_codel`'s default; bounds the bookkeeping
/// for floods of tiny packets.
pub const LIMIT_PACKETS: usize = 10240;

/// Counters of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets taken in.
    pub enqueued: u64,
    /// Packets handed out.
    pub dequeued: u64,
    /// Dropped by CoDel (waited above the target for an interval).
    pub aqm_drops: u64,
    /// Marked Congestion Experienced by CoDel instead of dropped.
    pub ecn_marks: u64,
    /// Dropped from the fattest flow because the queue was full.
    pub overflow_drops: u64,
    /// Queues that became active on the new-flows list.
    pub new_flows: u64,
}

#[derive(Debug)]
struct Entry {
    data: BytesMut,
    at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum List {
    #[default]
    None,
    New,
    Old,
}

/// CoDel's state of one queue (RFC 8289 names).
#[derive(Debug, Default)]
struct Codel {
    count: u32,
    lastcount: u32,
    dropping: bool,
    first_above_time: Option<Instant>,
    drop_next: Option<Instant>,
}

#[derive(Debug, Default)]
struct Flow {
    q: VecDeque<Entry>,
    bytes: usize,
    deficit: i64,
    list: List,
    codel: Codel,
}

/// An FQ-CoDel queue (see the module docs).
#[derive(Debug)]
pub struct FqCodel {
    p: Params,
    flows: Vec<Flow>,
    new: VecDeque<u32>,
    old: VecDeque<u32>,
    bytes: usize,
    packets: usize,
    stats: QueueStats,
}

fn control_law(t: Instant, interval: Duration, count: u32) -> Instant {
    t + interval.div_f64(f64::from(count.max(1)).sqrt())
}

impl FqCodel {
    pub fn new(p: Params) -> FqCodel {
        let mut flows = Vec::new();
        flows.resize_with(p.flows.max(1), Flow::default);
        FqCodel {
            p,
            flows,
            new: VecDeque::new(),
            old: VecDeque::new(),
            bytes: 0,
            packets: 0,
            stats: QueueStats::default(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets held.
    pub fn packets(&self) -> usize {
        self.packets
    }

    pub fn is_empty(&self) -> bool {
        self.packets == 0
    }

    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Takes a packet of the flow with hash `hash` in, stamped `now`.
    /// Overflow drops (of the fattest flow's oldest packets) are counted.
    pub fn enqueue(&mut self, now: Instant, hash: u64, data: BytesMut) {
        // Multiply-shift (the kernel's reciprocal_scale): uniform over the
        // queues for any count, no division.
        let idx = ((hash & 0xffff_ffff) * self.flows.len() as u64) >> 32;
        let idx = idx as usize;
        let f = &mut self.flows[idx];
        let len = data.len();
        f.q.push_back(Entry { data, at: now });
        f.bytes += len;
        self.bytes += len;
        self.packets += 1;
        self.stats.enqueued += 1;
        if f.list == List::None {
            f.list = List::New;
            f.deficit = i64::from(self.p.quantum);
            self.new.push_back(idx as u32);
            self.stats.new_flows += 1;
        }
        while self.bytes > self.p.limit_bytes || self.packets > self.p.limit_packets {
            self.drop_fattest();
        }
    }

    /// Drops up to half the bytes of the queue holding the most (at most
    /// [`DROP_BATCH`] packets, at least one), oldest first.
    fn drop_fattest(&mut self) {
        let Some((idx, _)) = self
            .flows
            .iter()
            .enumerate()
            .max_by_key(|(_, f)| f.bytes)
            .filter(|(_, f)| f.bytes > 0)
        else {
            return;
        };
        let f = &mut self.flows[idx];
        let threshold = f.bytes / 2;
        let mut dropped = 0;
        let mut n = 0;
        while let Some(e) = f.q.pop_front() {
            dropped += e.data.len();
            n += 1;
            if dropped >= threshold || n >= DROP_BATCH {
                break;
            }
        }
        f.bytes -= dropped;
        self.bytes -= dropped;
        self.packets -= n;
        self.stats.overflow_drops += n as u64;
    }

    /// Takes the next packet out, by DRR over the new then the old flows,
    /// with CoDel's drops on the way. `None` when empty.
    pub fn dequeue(&mut self, now: Instant) -> Option<BytesMut> {
        loop {
            let (idx, from_new) = match (self.new.front(), self.old.front()) {
                (Some(&i), _) => (i as usize, true),
                (None, Some(&i)) => (i as usize, false),
                (None, None) => return None,
            };
            if self.flows[idx].deficit <= 0 {
                self.flows[idx].deficit += i64::from(self.p.quantum);
                self.unlist(from_new);
                self.flows[idx].list = List::Old;
                self.old.push_back(idx as u32);
                continue;
            }
            match self.codel_dequeue(idx, now) {
                Some(d) => {
                    self.flows[idx].deficit -= d.len() as i64;
                    self.stats.dequeued += 1;
                    return Some(d);
                }
                None => {
                    // Empty: a new flow goes to the old list's end while
                    // old flows wait (else emptying new flows could keep
                    // them waiting), otherwise it leaves the lists.
                    self.unlist(from_new);
                    if from_new && !self.old.is_empty() {
                        self.flows[idx].list = List::Old;
                        self.old.push_back(idx as u32);
                    } else {
                        self.flows[idx].list = List::None;
                    }
                }
            }
        }
    }

    fn unlist(&mut self, from_new: bool) {
        if from_new {
            self.new.pop_front();
        } else {
            self.old.pop_front();
        }
    }

    /// Drops everything held (the link went down); returns how many
    /// packets that was.
    pub fn clear(&mut self) -> usize {
        let n = self.packets;
        for f in &mut self.flows {
            *f = Flow::default();
        }
        self.new.clear();
        self.old.clear();
        self.bytes = 0;
        self.packets = 0;
        n
    }

    fn pop(&mut self, idx: usize) -> Option<Entry> {
        let f = &mut self.flows[idx];
        let e = f.q.pop_front()?;
        f.bytes -= e.data.len();
        self.bytes -= e.data.len();
        self.packets -= 1;
        Some(e)
    }

    /// CoDel's "ok to drop" for the head packet `e` just taken (RFC 8289
    /// `should_drop`; `None`: the queue ran empty).
    fn should_drop(&mut self, idx: usize, e: Option<&Entry>, now: Instant) -> bool {
        let backlog = self.bytes;
        let (target, interval, mtu) = (self.p.target, self.p.interval, self.p.mtu);
        let c = &mut self.flows[idx].codel;
        let Some(e) = e else {
            c.first_above_time = None;
            return false;
        };
        let sojourn = now.saturating_duration_since(e.at);
        if sojourn < target || backlog <= mtu {
            c.first_above_time = None;
            return false;
        }
        match c.first_above_time {
            None => {
                c.first_above_time = Some(now + interval);
                false
            }
            Some(t) => now >= t,
        }
    }

    /// Drops (or marks) `e` for CoDel; returns the entry if it was marked
    /// and so is still to be sent.
    fn drop_or_mark(&mut self, mut e: Entry) -> Option<Entry> {
        if self.p.ecn && mark_ce(&mut e.data) {
            self.stats.ecn_marks += 1;
            Some(e)
        } else {
            self.stats.aqm_drops += 1;
            None
        }
    }

    /// RFC 8289's dequeue for queue `idx`, as `codel_dequeue` in Linux's
    /// `include/net/codel_impl.h`.
    fn codel_dequeue(&mut self, idx: usize, now: Instant) -> Option<BytesMut> {
        let interval = self.p.interval;
        let Some(mut e) = self.pop(idx) else {
            self.flows[idx].codel.dropping = false;
            return None;
        };
        let drop = self.should_drop(idx, Some(&e), now);
        let c = &self.flows[idx].codel;
        if c.dropping {
            if !drop {
                self.flows[idx].codel.dropping = false;
            } else {
                while self.flows[idx].codel.dropping
                    && self.flows[idx].codel.drop_next.is_some_and(|t| now >= t)
                {
                    let c = &mut self.flows[idx].codel;
                    c.count = c.count.wrapping_add(1);
                    let count = c.count;
                    let next = c.drop_next.map(|t| control_law(t, interval, count));
                    match self.drop_or_mark(e) {
                        Some(marked) => {
                            self.flows[idx].codel.drop_next = next;
                            return Some(marked.data);
                        }
                        None => {
                            let nxt = self.pop(idx);
                            if self.should_drop(idx, nxt.as_ref(), now) {
                                self.flows[idx].codel.drop_next = next;
                            } else {
                                self.flows[idx].codel.dropping = false;
                            }
                            match nxt {
                                Some(n) => e = n,
                                None => return None,
                            }
                        }
                    }
                }
            }
        } else if drop {
            match self.drop_or_mark(e) {
                Some(marked) => e = marked,
                None => {
                    let nxt = self.pop(idx);
                    // RFC 8289 re-evaluates here only for its statistics.
                    let _ = self.should_drop(idx, nxt.as_ref(), now);
                    match nxt {
                        Some(n) => e = n,
                        None => {
                            self.start_dropping(idx, now);
                            return None;
                        }
                    }
                }
            }
            self.start_dropping(idx, now);
        }
        Some(e.data)
    }

    /// Enters the dropping state; a queue that left it only a little while
    /// ago resumes near the drop rate that controlled it then.
    fn start_dropping(&mut self, idx: usize, now: Instant) {
        let interval = self.p.interval;
        let c = &mut self.flows[idx].codel;
        c.dropping = true;
        let delta = c.count.wrapping_sub(c.lastcount);
        let recent = c
            .drop_next
            .is_some_and(|t| now.saturating_duration_since(t) < interval * 16);
        c.count = if delta > 1 && recent { delta } else { 1 };
        c.lastcount = c.count;
        c.drop_next = Some(control_law(now, interval, c.count));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(flow: u8, len: usize) -> BytesMut {
        // Not an IP packet: never ECN-capable, so CoDel drops.
        let mut b = BytesMut::zeroed(len);
        b[0] = flow;
        b
    }

    fn params() -> Params {
        Params::for_mtu(1500)
    }

    /// Flow hashes that land in different queues.
    fn h(flow: u8) -> u64 {
        u64::from(flow) << 24
    }

    #[test]
    fn drr_shares_bytes_equally_whatever_the_packet_size() {
        let now = Instant::now();
        let mut q = FqCodel::new(params());
        for _ in 0..1000 {
            q.enqueue(now, h(1), pkt(1, 1500));
        }
        for _ in 0..(1000 * 1500 / 100) {
            q.enqueue(now, h(2), pkt(2, 100));
        }
        let mut bytes = [0usize; 3];
        let mut total = 0;
        while total < 600_000 {
            let d = q.dequeue(now).expect("packet");
            bytes[usize::from(d[0])] += d.len();
            total += d.len();
        }
        let ratio = bytes[1] as f64 / bytes[2] as f64;
        assert!((0.95..1.05).contains(&ratio), "{bytes:?}");
    }

    #[test]
    fn a_sparse_flow_goes_before_backlogged_ones() {
        let now = Instant::now();
        let mut q = FqCodel::new(params());
        for _ in 0..100 {
            q.enqueue(now, h(1), pkt(1, 1500));
        }
        // The bulk flow is active (moved to the old list after its first
        // quantum).
        for _ in 0..3 {
            q.dequeue(now).expect("bulk");
        }
        q.enqueue(now, h(2), pkt(2, 84));
        assert_eq!(q.dequeue(now).expect("ping")[0], 2, "the ping waits");
        assert_eq!(q.stats().new_flows, 2);
    }

    #[test]
    fn codel_drops_a_standing_queue_and_stops_when_it_drains() {
        let p = params();
        let mut q = FqCodel::new(p);
        let t0 = Instant::now();
        // 11 packets in per 10 out each millisecond (10 % too many): the
        // queue would grow by a millisecond of waiting every 10 ms.
        let stamped = |t: Instant| {
            let mut b = pkt(1, 1500);
            b[1..9].copy_from_slice(&((t - t0).as_micros() as u64).to_le_bytes());
            b
        };
        let wait = |t: Instant, d: &BytesMut| {
            let at = u64::from_le_bytes(d[1..9].try_into().expect("8 bytes"));
            (t - t0) - Duration::from_micros(at)
        };
        let mut t = t0;
        let mut max_wait = Duration::ZERO;
        for ms in 0..2000 {
            for _ in 0..11 {
                q.enqueue(t, h(1), stamped(t));
            }
            for _ in 0..10 {
                t += Duration::from_micros(100);
                if let Some(d) = q.dequeue(t) {
                    if ms > 500 {
                        max_wait = max_wait.max(wait(t, &d));
                    }
                }
            }
        }
        let s = q.stats();
        assert!(s.aqm_drops > 0);
        assert_eq!(s.overflow_drops, 0, "CoDel, not the limit, held it");
        // Unmanaged, the last packets would have waited 200 ms; CoDel keeps
        // it within a few intervals.
        assert!(max_wait < 4 * p.interval, "waited {max_wait:?}");
        // Drain at full speed: hardly a drop once under the target.
        let drops = s.aqm_drops;
        while q.dequeue(t).is_some() {
            t += Duration::from_micros(1);
        }
        let late = q.stats().aqm_drops - drops;
        assert!(late < 5, "{late} drops while draining");
    }

    #[test]
    fn no_drops_below_the_target() {
        let mut q = FqCodel::new(params());
        let mut t = Instant::now();
        for _ in 0..10_000 {
            q.enqueue(t, h(1), pkt(1, 1500));
            q.enqueue(t, h(1), pkt(1, 1500));
            t += Duration::from_micros(100);
            q.dequeue(t);
            q.dequeue(t);
        }
        assert_eq!(q.stats().aqm_drops, 0);
    }

    #[test]
    fn overflow_drops_from_the_fattest_flow() {
        let p = Params {
            limit_bytes: 100 * 1500,
            ..params()
        };
        let mut q = FqCodel::new(p);
        let now = Instant::now();
        for _ in 0..10 {
            q.enqueue(now, h(2), pkt(2, 1500));
        }
        for _ in 0..1000 {
            q.enqueue(now, h(1), pkt(1, 1500));
        }
        assert!(q.bytes() <= p.limit_bytes);
        assert!(q.stats().overflow_drops >= 900);
        // The small flow lost nothing.
        let mut small = 0;
        while let Some(d) = q.dequeue(now) {
            small += usize::from(d[0] == 2);
        }
        assert_eq!(small, 10);
    }

    #[test]
    fn ecn_capable_packets_are_marked_not_dropped() {
        let mut q = FqCodel::new(params());
        let mut t = Instant::now();
        let mut ect = BytesMut::zeroed(super::super::packet::VNET_HDR_LEN + 1500);
        ect[10] = 0x45;
        ect[11] = 0x02; // ECT(0)
        let mut marked = 0;
        for _ in 0..4000 {
            q.enqueue(t, h(1), ect.clone());
            q.enqueue(t, h(1), ect.clone());
            if let Some(d) = q.dequeue(t) {
                marked += usize::from(d[11] & 3 == 3);
            }
            t += Duration::from_micros(100);
        }
        let s = q.stats();
        assert_eq!(s.aqm_drops, 0);
        assert!(s.ecn_marks > 0);
        assert_eq!(s.ecn_marks as usize, marked);
    }
}

//! The transmit side of the pump: how much to commit to the next write,
//! the write itself, and writes from an application's task while the pump
//! is idle.
//!
//! A transmit, once built, is committed: its batches are checksummed and
//! numbered into the byte stream, and whatever the device has not taken of
//! it must go before anything else. A ping, a Pong or an RPC that queues
//! while the rest of a multi-MiB bulk transmit waits for ring room waits
//! behind all of it (at 2.8 GB/s, 8 MiB is 3 ms). So the pump sizes each
//! transmit to about what the device takes per write ([`Sizer`]): the
//! scheduler then picks again, latency class first, before every write,
//! and a small record waits behind at most about one write's worth of
//! bulk (and the ring itself). When the device keeps taking everything it
//! is offered, the size doubles up to `max_transmit`, so bulk alone still
//! gets the multi-MiB writes the hardware needs (spec §4).

use std::io::{self, IoSlice};

use tokio::time::Instant;

use super::{LinkFault, PumpObserver, PumpStats, Shared, State};
use crate::device::AsyncDevice;
use crate::wire::Transmit;

/// Segments per `writev` (Linux `IOV_MAX`).
const IOV_MAX: usize = 1024;
/// Smallest transmit budget: one full-size data record and change. Below
/// this the per-write cost shows and nothing is gained for latency.
const MIN_BUDGET: usize = 128 * 1024;
/// First budget, before the device told anything: the driver's default
/// ring of 256 frames.
const INITIAL_BUDGET: usize = 1 << 20;

/// How many bytes the next transmit may carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizer {
    budget: usize,
    max: usize,
}

impl Sizer {
    pub fn new(max_transmit: usize) -> Self {
        Self {
            budget: INITIAL_BUDGET.clamp(MIN_BUDGET, max_transmit.max(MIN_BUDGET)),
            max: max_transmit.max(MIN_BUDGET),
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// One `writev` took `n` of the `offered` bytes.
    fn wrote(&mut self, n: usize, offered: usize) {
        self.budget = if n >= offered {
            // The device had room for all of it: it may take more.
            if offered >= self.budget / 2 {
                (self.budget * 2).min(self.max)
            } else {
                self.budget
            }
        } else {
            // Its ring is full: about what it takes per wake-up, with room
            // for the next wake-up's worth.
            (n * 2).clamp(MIN_BUDGET, self.max)
        };
    }
}

/// Writes counted while the state lock was not held.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    writes: u64,
    bytes: u64,
    short: u64,
}

impl Tally {
    pub fn add_to(&mut self, stats: &mut PumpStats) {
        stats.writes += self.writes;
        stats.write_bytes += self.bytes;
        stats.short_writes += self.short;
        *self = Tally::default();
    }
}

/// Writes as much of `t` as the device takes now. `Ok(true)`: all of it.
/// `obs` is told each write's size.
pub(crate) fn write_some(
    dev: &AsyncDevice,
    t: &mut Transmit,
    sizer: &mut Sizer,
    tally: &mut Tally,
    obs: Option<&dyn PumpObserver>,
) -> Result<bool, LinkFault> {
    while !t.is_empty() {
        let segs = &t.segments()[..t.segments().len().min(IOV_MAX)];
        let offered: usize = segs.iter().map(|s| s.len()).sum();
        let iov: Vec<IoSlice<'_>> = segs.iter().map(|s| IoSlice::new(s)).collect();
        let r = dev.try_writev(&iov);
        drop(iov);
        match r {
            Ok(n) => {
                if let Some(o) = obs.filter(|_| n > 0) {
                    o.device_write(n);
                }
                tally.writes += 1;
                tally.bytes += n as u64;
                if n < offered {
                    tally.short += 1;
                }
                sizer.wrote(n, offered);
                t.advance(n);
                if n < offered {
                    return Ok(t.is_empty());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(LinkFault::from_io(&e)),
        }
    }
    Ok(true)
}

/// Called by a channel handle right after it queued something: when the
/// pump has no write under way, the new records are written from the
/// caller's task at once, sparing the hop to the pump task on the latency
/// path (a lone RPC message, a ping). Whatever the device does not take
/// goes to the pump, which also always gets a wake-up for its timers.
pub(crate) fn flush_inline(shared: &Shared, st: &mut State) {
    if !write_inline(st, shared.opts.observer.as_deref()) {
        shared.wake_pump();
    }
}

/// Writes what the session has from the caller's task; returns whether
/// the pump can sleep on (everything written, nothing else for it, and its
/// timer already due no later than the session's next deadline). Waking
/// the pump for nothing costs a thread wake-up on the latency path.
fn write_inline(st: &mut State, obs: Option<&dyn PumpObserver>) -> bool {
    if st.writing || st.tx_handoff.is_some() {
        return false;
    }
    let Some(dev) = st.dev.clone() else {
        return false;
    };
    let budget = st.sizer.budget();
    let now = Instant::now().into_std();
    if let Some(mut t) = st.session.poll_transmit_max(now, budget) {
        st.stats.inline_writes += 1;
        let mut tally = Tally::default();
        // A device error: the pump meets it on its own next write or read.
        let _ = write_some(&dev, &mut t, &mut st.sizer, &mut tally, obs);
        tally.add_to(&mut st.stats);
        if !t.is_empty() {
            st.tx_handoff = Some(t);
            st.writing = true;
            return false;
        }
    }
    let timer_ok = match (st.session.poll_timeout(), st.pump_deadline) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(due), Some(armed)) => due >= armed,
    };
    timer_ok && !st.session.has_transmit_work() && !st.session.has_events()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_follows_what_the_device_takes() {
        let mut s = Sizer::new(8 << 20);
        assert_eq!(s.budget(), 1 << 20);
        // All taken: grow, up to the maximum.
        for _ in 0..10 {
            let b = s.budget();
            s.wrote(b, b);
        }
        assert_eq!(s.budget(), 8 << 20);
        // A full ring that took 300 KiB: about twice that next.
        s.wrote(300 << 10, 8 << 20);
        assert_eq!(s.budget(), 600 << 10);
        // Never below one record's worth.
        s.wrote(4096, 600 << 10);
        assert_eq!(s.budget(), MIN_BUDGET);
        // A lone small record taken whole says little: no growth.
        s.wrote(100, 100);
        assert_eq!(s.budget(), MIN_BUDGET);
    }
}

//! Sequences of application and cable operations on a [`Pair`](super::Pair) of
//! sessions (quinn's `fuzz_targets/streams.rs`, one level up: whole
//! sessions over a simulated cable instead of one stream table).
//!
//! Every byte sent is a pattern derived from (channel, direction, offset),
//! so the receiver checks content and order without keeping copies.
//! Checked all along:
//! * stream bytes arrive in order, unaltered, never more than were sent,
//!   and the end of a stream comes exactly after its last byte;
//! * messages arrive whole, in order, none lost or repeated;
//! * datagrams arrive unaltered, in order, never repeated (they may be
//!   dropped);
//! * a bit flip (at most 3 per link, which CRC32C always detects) is
//!   recovered in-band (`session::resync`) or, failing that, ends the link;
//!   the only link faults are those after a flip and idle timeouts after
//!   the clock jumped: any other fault (a protocol error, say) is a bug of
//!   the sending session.
//!
//! After the operations, the application accepts and reads everything and
//! the pair is driven (without corruption) until nothing moves. Then:
//! * both links are up and both sessions know the same live channels;
//! * every stream byte and message sent on a live channel was received
//!   and acknowledged, and every finish was seen by the peer.
//!
//! The interpreter lives here, not in the fuzz crate, so that `cargo test`
//! replays the kept corpus and every input that once failed through the
//! very code the fuzz target runs (`tests/tests/fuzz_corpus.rs`), without
//! nightly or cargo-fuzz.

use arbitrary::Arbitrary;

use crate::sim::Side;

mod check;
mod harness;
mod params;
mod pattern;
mod v1;

use harness::Harness;
pub use params::Params;
pub use v1::InputV1;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum S {
    A,
    B,
}

impl S {
    pub(crate) fn side(self) -> Side {
        match self {
            S::A => Side::A,
            S::B => Side::B,
        }
    }
    pub(crate) fn idx(self) -> usize {
        self as usize
    }
    pub(crate) fn other(self) -> S {
        match self {
            S::A => S::B,
            S::B => S::A,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Kind {
    Datagram,
    Stream,
    Message,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    Empty,
    Tiny(u8),
    Small(u16),
    /// Several 64 KiB chunks (up to ~512 KiB).
    Chunks(u8),
}

impl Size {
    pub(crate) fn bytes(self) -> usize {
        match self {
            Size::Empty => 0,
            Size::Tiny(n) => usize::from(n),
            Size::Small(n) => usize::from(n),
            Size::Chunks(n) => usize::from(n % 9) * 65_536 + usize::from(n),
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    Open(S, Kind, Class2, u8),
    Accept(S, u8),
    Reject(S, u8, u8),
    Send(S, u8, Size),
    SendMessage(S, u8, Size),
    SendDatagram(S, u8, Size),
    Recv(S, u8, u16),
    RecvMessage(S, u8),
    RecvDatagram(S, u8),
    Finish(S, u8),
    Reset(S, u8),
    Release(S, u8),
    Advance(u16),
    LinkReset,
    Restart(S),
    Corrupt(S, u16, u8),
    Drive,
    Transmit,
    Deliver,
    Close(S),
    Ping(S),
    MaxRead(u16),
    // ---- added with issue 15 (not in the frozen first format, `v1`) ----
    /// Delivers at most this many bytes of what side S has in flight (the
    /// rest stays on the wire): with `LinkReset`, a cable pull at any byte,
    /// in a Goodbye exchange too.
    DeliverSome(S, u16),
    /// Finishes every channel of a side at once (many channels closing,
    /// across a resume when a `LinkReset` follows).
    FinishAll(S),
    /// Releases (drops the handles of) every channel of a side at once.
    ReleaseAll(S),
    /// Restarts a side with its old session id: a peer that comes back with
    /// the identity of the one that went (a buggy or hostile peer).
    RestartSameId(S),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Class2 {
    Latency,
    Normal,
    Bulk,
}

const SERVICES: [&str; 4] = ["echo", "rpc", "é/ü", "x"];

/// One fuzz input: session tunables, the operations, and whether to finish
/// every channel at the end.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// Session tunables.
    pub params: Params,
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// At the end, finish every channel and check that all are freed.
    pub finish_all: bool,
}

/// Runs one input; panics (with the broken invariant) on a bug.
pub fn run(input: Input) {
    let mut h = Harness::new(&input.params);
    for op in input.ops {
        h.op(op);
    }
    h.finish(input.finish_all);
}

/// What a logged run did: every event of both sessions, in order, and the
/// broken invariant if one broke. The same input must always give the same
/// outcome (the session is deterministic for a given sequence of calls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `"A Connected { resumed: false }"`, ...
    pub events: Vec<String>,
    /// The panic message, if an invariant broke.
    pub failure: Option<String>,
}

/// Runs one input, logging every event, and catches a broken invariant.
pub fn run_logged(input: Input) -> Outcome {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let mut h = Harness::new(&input.params);
    h.log = Some(Vec::new());
    let r = catch_unwind(AssertUnwindSafe(|| {
        for op in input.ops {
            h.op(op);
        }
        h.finish(input.finish_all);
    }));
    let failure = r.err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic".to_owned())
    });
    Outcome {
        events: h.log.take().unwrap_or_default(),
        failure,
    }
}

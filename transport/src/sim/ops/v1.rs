//! The first input format of `session_ops`, frozen: the findings kept in
//! `fuzz/regressions/session_ops/` (issue 15) were found with it, and an
//! `arbitrary`-derived format changes meaning whenever an operation or a
//! parameter is added. They decode here exactly as they did then and run
//! through the same interpreter as today's inputs.

use arbitrary::Arbitrary;

use super::{Class2, Input, Kind, Op, Params, Size, S};

/// The session tunables of the first format.
#[derive(Arbitrary, Debug)]
pub struct ParamsV1 {
    seed: u64,
    max_read: u16,
    stream_window: u32,
    message_window: u32,
    max_batch_body: u32,
    max_chunk: u32,
    inline_limit: u16,
    max_transmit: u32,
    dgram_queue: u32,
    recv_budget: Option<u32>,
    max_channels: u8,
    starvation_limit: u8,
}

/// The operations of the first format.
#[derive(Arbitrary, Debug)]
pub enum OpV1 {
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
}

/// An input of the first format.
#[derive(Arbitrary, Debug)]
pub struct InputV1 {
    params: ParamsV1,
    ops: Vec<OpV1>,
    finish_all: bool,
}

impl From<OpV1> for Op {
    fn from(o: OpV1) -> Op {
        match o {
            OpV1::Open(s, k, c, v) => Op::Open(s, k, c, v),
            OpV1::Accept(s, i) => Op::Accept(s, i),
            OpV1::Reject(s, i, r) => Op::Reject(s, i, r),
            OpV1::Send(s, i, z) => Op::Send(s, i, z),
            OpV1::SendMessage(s, i, z) => Op::SendMessage(s, i, z),
            OpV1::SendDatagram(s, i, z) => Op::SendDatagram(s, i, z),
            OpV1::Recv(s, i, m) => Op::Recv(s, i, m),
            OpV1::RecvMessage(s, i) => Op::RecvMessage(s, i),
            OpV1::RecvDatagram(s, i) => Op::RecvDatagram(s, i),
            OpV1::Finish(s, i) => Op::Finish(s, i),
            OpV1::Reset(s, i) => Op::Reset(s, i),
            OpV1::Release(s, i) => Op::Release(s, i),
            OpV1::Advance(ms) => Op::Advance(ms),
            OpV1::LinkReset => Op::LinkReset,
            OpV1::Restart(s) => Op::Restart(s),
            OpV1::Corrupt(s, o, b) => Op::Corrupt(s, o, b),
            OpV1::Drive => Op::Drive,
            OpV1::Transmit => Op::Transmit,
            OpV1::Deliver => Op::Deliver,
            OpV1::Close(s) => Op::Close(s),
            OpV1::Ping(s) => Op::Ping(s),
            OpV1::MaxRead(n) => Op::MaxRead(n),
        }
    }
}

impl From<InputV1> for Input {
    fn from(i: InputV1) -> Input {
        let p = i.params;
        Input {
            params: Params {
                seed: p.seed,
                max_read: p.max_read,
                stream_window: p.stream_window,
                message_window: p.message_window,
                max_batch_body: p.max_batch_body,
                max_chunk: p.max_chunk,
                inline_limit: p.inline_limit,
                max_transmit: p.max_transmit,
                dgram_queue: p.dgram_queue,
                recv_budget: p.recv_budget,
                max_channels: p.max_channels,
                starvation_limit: p.starvation_limit,
                // What the first format's sessions had.
                latency_in_flight: 0,
                high_ids: false,
            },
            ops: i.ops.into_iter().map(Op::from).collect(),
            finish_all: i.finish_all,
        }
    }
}

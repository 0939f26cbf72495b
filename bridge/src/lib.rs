//! tbbridge: the daemon, its front-ends and its commands, as a library so
//! that integration tests can drive the pieces directly. The binary
//! (`src/main.rs`) is a thin command-line layer over it.

pub mod bench;
pub mod cable;
pub mod daemon;
pub mod demo;
pub mod fakehost;
pub mod frontend;
pub mod metrics;
pub mod migrate;
pub mod netns;
pub mod pipe;
pub mod proxy;
pub mod rpc;
pub mod tun;
pub mod units;

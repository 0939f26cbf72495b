//! # tbbridge-transport
//!
//! The transport layer of tbbridge: everything between a front-end's
//! channel and the USB4STREAM character device.
//!
//! * [`wire`]: the self-delimiting batch/record codec over the device's byte
//!   stream (CRC32C per batch, lengths checked before allocating).
//! * [`session`]: the sans-IO [`Session`] state machine (handshake, channels,
//!   credits, scheduler, keepalive, goodbye). No tokio, no syscalls, no clock
//!   reads: CI builds this crate with `--no-default-features` to prove it.
//! * [`device`] (feature `io`): the real `/dev/tbstreamX` and the emulated
//!   cable (in-process pair and the cross-process cable behind
//!   `tbbridge cable`).
//! * [`pump`] (feature `io`): the batched ring pump that drives a
//!   [`Session`] over a device and hands out channel handles.

pub mod device;
#[cfg(feature = "io")]
pub mod pump;
pub mod session;
pub mod sim;
pub mod wire;

pub use device::spec::{CableEnd, DeviceSpec};
pub use session::{
    ChannelId, ChannelKind, Class, Event, Session, SessionConfig, SessionError, SessionStats,
};

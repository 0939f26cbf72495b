//! Sequences of application and cable operations on a pair of sessions.
//! The interpreter and its invariants live in `tbbridge_transport::sim::ops`
//! so that `cargo test` replays the kept corpus through the same code.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tbbridge_transport::sim::ops::{run, Input};

fuzz_target!(|input: Input| run(input));

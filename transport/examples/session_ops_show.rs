//! Prints what a `session_ops` fuzz input does: the session parameters,
//! the operations in order, every event of both sessions, and the broken
//! invariant if there is one.
//!
//! ```sh
//! cargo run --release -p tbbridge-transport --features fuzz-ops \
//!     --example session_ops_show -- fuzz/regressions/session_ops/crash-...
//! ```

use arbitrary::{Arbitrary, Unstructured};
use tbbridge_transport::sim::ops::{self, Input};

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: session_ops_show FILE");
        std::process::exit(2);
    };
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: {e}", path.to_string_lossy());
            std::process::exit(1);
        }
    };
    let input = match Input::arbitrary_take_rest(Unstructured::new(&data)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("not a session_ops input ({e}); the fuzzer rejects it too");
            std::process::exit(1);
        }
    };
    println!("{:#?}", input.params.config());
    for (i, op) in input.ops.iter().enumerate() {
        println!("op {i}: {op:?}");
    }
    println!("finish_all: {}", input.finish_all);
    std::panic::set_hook(Box::new(|_| {}));
    let out = ops::run_logged(input);
    for e in &out.events {
        println!("  {e}");
    }
    match out.failure {
        Some(f) => {
            println!("FAILS: {f}");
            std::process::exit(1);
        }
        None => println!("passes"),
    }
}

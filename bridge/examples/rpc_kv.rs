//! A key-value store served across an emulated cable by RPC endpoints,
//! with two bridges in this process (no root, no daemons):
//!
//! ```sh
//! cargo run --release -p tbbridge --example rpc_kv
//! ```
//!
//! Host B runs the server with `tbbridge_rpc::Server`; host A's client
//! calls it with `tbbridge_rpc::Client` through A's socket. Against real
//! daemons the same code connects with `Client::connect("tb0", "kv")` and
//! `Server::register("tb0", "kv")` (sockets in `/run/tbbridge/tb0/rpc/`).
//!
//! Requests: `put KEY VALUE` or `get KEY`; a missing key fails the call
//! with application code 200.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tbbridge::rpc::local::{rpc_config, LocalPair};
use tbbridge_rpc::{CallError, Client, ErrorCode, Server};
use tbbridge_transport::device::emu::CableOptions;
use tbbridge_transport::SessionConfig;

const NOT_FOUND: u8 = 200;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("tbbridge-rpc-kv-{}", std::process::id()));
    let kv = [rpc_config("kv")];
    let pair = LocalPair::start(
        &dir,
        &kv,
        &kv,
        CableOptions::default(),
        SessionConfig::default(),
    )
    .await?;

    // Host B: the store.
    let store: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let server = Server::register_path(&pair.socket(1, 0)).await?;
    tokio::spawn(server.serve(move |req: Bytes| {
        let store = store.clone();
        async move {
            let mut db = store.lock().unwrap_or_else(|p| p.into_inner());
            let mut words = req.splitn(3, |b| *b == b' ');
            match (words.next(), words.next(), words.next()) {
                (Some(b"put"), Some(k), Some(v)) => {
                    db.insert(k.to_vec(), v.to_vec());
                    Ok(b"ok".to_vec())
                }
                (Some(b"get"), Some(k), None) => db.get(k).cloned().ok_or(NOT_FOUND),
                _ => Err(NOT_FOUND + 1),
            }
        }
    }));

    // Host A: a client.
    let client = Client::connect_path(&pair.socket(0, 0)).await?;
    let t = Duration::from_millis(500);
    client.call(b"put answer 42", t).await?;
    let v = client.call(b"get answer", t).await?;
    println!("get answer -> {}", String::from_utf8_lossy(&v));
    match client.call(b"get question", t).await {
        Err(CallError::Remote(ErrorCode::Other(NOT_FOUND))) => {
            println!("get question -> not found")
        }
        other => println!("get question -> {other:?}"),
    }
    let n = 10_000;
    let start = Instant::now();
    for _ in 0..n {
        client.call(b"get answer", t).await?;
    }
    let per = start.elapsed() / n;
    println!("{n} calls, one at a time: {per:?} per round trip");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

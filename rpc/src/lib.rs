//! # tbbridge-rpc
//!
//! Client and server of tbbridge's RPC endpoints: request/response across
//! a Thunderbolt cable with no TCP/IP in between. The bridge daemon gives
//! every `[[rpc]]` service a Unix `SOCK_SEQPACKET` socket on each host
//! (`/run/tbbridge/INSTANCE/rpc/SERVICE.sock`); a [`Client`] connects to it
//! and calls the server that registered on the *other* host; a [`Server`]
//! connects to it and serves the other host's clients. This crate is the
//! socket protocol ([`proto`], written down in `docs/rpc.md`) and tokio
//! code; it does not pull in the daemon.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tbbridge_rpc::{Client, Server};
//!
//! // On host B: answer every request with its bytes reversed.
//! let server = Server::register("tb0", "kv").await?;
//! tokio::spawn(server.serve(|req| async move {
//!     Ok::<Vec<u8>, u8>(req.iter().rev().copied().collect())
//! }));
//!
//! // On host A:
//! let client = Client::connect("tb0", "kv").await?;
//! let reply = client.call(b"hello", Duration::from_millis(100)).await?;
//! assert_eq!(&reply[..], b"olleh");
//! # Ok(()) }
//! ```

mod client;
pub mod proto;
mod server;
pub mod socket;

use std::path::PathBuf;

pub use client::{CallError, Client};
pub use proto::{ErrorCode, Header, HeaderError, Kind, HEADER_LEN};
pub use server::{Call, ServeError, Server};

/// Largest body the library accepts from a socket: the largest
/// `max_message` a `[[rpc]]` may configure (4 MiB).
pub const MAX_BODY: usize = 4 << 20;

/// The daemon's runtime directory: `$TBBRIDGE_RUN_DIR`, else
/// `/run/tbbridge`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("TBBRIDGE_RUN_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/tbbridge"))
}

/// Where the bridge `instance` keeps the socket of `service` unless its
/// config says otherwise: `<run dir>/<instance>/rpc/<service>.sock`.
pub fn socket_path(instance: &str, service: &str) -> PathBuf {
    run_dir()
        .join(instance)
        .join("rpc")
        .join(format!("{service}.sock"))
}

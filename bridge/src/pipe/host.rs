//! The daemon's side of a `tbbridge pipe` client: finds the peer's end of
//! the pipe and moves the bytes.
//!
//! Rendezvous, whichever host's `tbbridge pipe` runs first: the client's
//! daemon opens `pipe:NAME` on the peer. The peer accepts it if it has a
//! `[[pipe]]` NAME or a waiting client of its own. If not, the two daemons
//! must not both wait: the one with the lower session id listens for the
//! peer's open, the other keeps trying to open it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::json;
use tbbridge_transport::pump::{Bridge, Channel, OpenError};
use tbbridge_transport::{ChannelKind, Class};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::proto::{write_frame, DATA, EOF, NOTE, STATUS};
use super::PIPE_PREFIX;

/// How often the opening side tries again while the peer has no end yet.
const RETRY: Duration = Duration::from_millis(200);
/// Reads from the client at most this much at once.
const CHUNK: usize = 1 << 20;

/// Counters of the pipes served to local clients.
#[derive(Debug, Default)]
pub struct PipeClientStats {
    /// Client transfers started.
    pub started: AtomicU64,
    /// Of those, confirmed end to end.
    pub completed: AtomicU64,
    /// Of those, failed (reset, link lost beyond resume, client gone).
    pub failed: AtomicU64,
    /// Bytes sent to the peer.
    pub bytes_sent: AtomicU64,
    /// Bytes received from the peer.
    pub bytes_received: AtomicU64,
}

async fn note(w: &mut (impl AsyncWriteExt + Unpin), text: &str) -> std::io::Result<()> {
    write_frame(w, NOTE, json!({ "note": text }).to_string().as_bytes()).await
}

/// Finds the peer's end of pipe `service` (see the module doc).
async fn rendezvous(
    bridge: &Bridge,
    service: &str,
    sock: &mut OwnedWriteHalf,
) -> anyhow::Result<Channel> {
    let name = format!("{PIPE_PREFIX}{service}");
    if bridge.connected().await.is_err() {
        anyhow::bail!("the bridge stopped");
    }
    let lower = bridge
        .peer_id()
        .is_some_and(|peer| bridge.local_id() < peer);
    let mut told = false;
    let listener = loop {
        match bridge.open(ChannelKind::Stream, Class::Bulk, &name).await {
            Ok(ch) => return Ok(ch),
            Err(OpenError::NoService(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if lower {
            break bridge.listen(&name).map_err(|e| {
                anyhow::anyhow!("{e} (another `tbbridge pipe` for {service:?} runs here)")
            })?;
        }
        if !told {
            note(
                sock,
                &format!("waiting for the peer's end of pipe {service:?}"),
            )
            .await?;
            told = true;
        }
        tokio::time::sleep(RETRY).await;
    };
    note(
        sock,
        &format!("waiting for the peer's end of pipe {service:?}"),
    )
    .await?;
    let mut listener = listener;
    listener
        .accept()
        .await
        .ok_or_else(|| anyhow::anyhow!("the bridge stopped"))
}

/// Serves one client on `sock` (its request line was read) until the
/// transfer ends; the last frame tells the client whether it completed.
pub async fn serve_client(
    bridge: Bridge,
    sock: UnixStream,
    service: String,
    stats: Arc<PipeClientStats>,
) {
    stats.started.fetch_add(1, Relaxed);
    let (mut rd, mut sock) = sock.into_split();
    let r = tokio::select! {
        r = rendezvous(&bridge, &service, &mut sock) => r,
        // The client gave up (Ctrl-C) while we waited.
        _ = client_gone(&rd) => Err(anyhow::anyhow!("the client went away")),
    };
    let mut moved = Moved::default();
    let outcome = match r {
        Ok(ch) => match note(&mut sock, "connected").await {
            Ok(()) => transfer(&ch, &mut rd, &mut sock, &stats, &mut moved).await,
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    let (ok, error) = match &outcome {
        Ok(()) => (true, None),
        Err(e) => (false, Some(format!("{e:#}"))),
    };
    let counter = if ok { &stats.completed } else { &stats.failed };
    counter.fetch_add(1, Relaxed);
    let status = json!({
        "ok": ok,
        "error": error,
        "sent": moved.sent,
        "received": moved.received,
    });
    let _ = write_frame(&mut sock, STATUS, status.to_string().as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Bytes one transfer moved.
#[derive(Debug, Default)]
struct Moved {
    sent: u64,
    received: u64,
}

/// Resolves when the client closes the socket while we still look for
/// the peer. The client sends nothing before it hears "connected", so
/// anything readable now is its end (or a broken client: also the end).
async fn client_gone(sock: &OwnedReadHalf) {
    // Readiness may be left over from reading the request line: only a
    // read that does not block tells.
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        match sock.try_read(&mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// Moves the bytes both ways; `Ok` once everything we sent is
/// acknowledged and the peer finished its direction without a reset.
async fn transfer(
    ch: &Channel,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    stats: &PipeClientStats,
    moved: &mut Moved,
) -> anyhow::Result<()> {
    let up = async {
        let mut sent = 0u64;
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            let n = rd.read_buf(&mut buf).await?;
            if n == 0 {
                ch.finish()?;
                return Ok::<u64, anyhow::Error>(sent);
            }
            ch.send(buf.freeze()).await?;
            sent += n as u64;
            stats.bytes_sent.fetch_add(n as u64, Relaxed);
        }
    };
    let down = async {
        let mut received = 0u64;
        while let Some(b) = ch.recv(CHUNK).await? {
            write_frame(wr, DATA, &b).await?;
            received += b.len() as u64;
            stats.bytes_received.fetch_add(b.len() as u64, Relaxed);
        }
        write_frame(wr, EOF, &[]).await?;
        Ok::<u64, anyhow::Error>(received)
    };
    let (sent, received) = tokio::try_join!(up, down)?;
    moved.sent = sent;
    moved.received = received;
    // Everything we sent is confirmed by the peer's session, and the peer
    // ended its direction (a sink does after writing it all).
    while ch.unacked() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

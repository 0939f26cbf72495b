//! Between `tbbridge pipe` and its daemon, over the control socket.
//!
//! The client sends one JSON line, `{"cmd":"pipe","service":"backup"}`,
//! then its standard input as raw bytes, and shuts its writing side down
//! at the end. The daemon answers with frames, `kind u8 | len u32 LE |
//! payload`:
//!
//! | kind | payload |
//! |---|---|
//! | 1 `DATA` | bytes the peer sent |
//! | 2 `EOF` | (none) the peer finished its direction |
//! | 3 `STATUS` | JSON `{"ok":bool, "error":?, "sent":n, "received":n}`; last |
//! | 4 `NOTE` | JSON `{"note":"..."}`: waiting for the peer, connected |

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Peer data.
pub const DATA: u8 = 1;
/// The peer's direction ended.
pub const EOF: u8 = 2;
/// The outcome; the last frame.
pub const STATUS: u8 = 3;
/// Something to tell the user.
pub const NOTE: u8 = 4;

/// Largest frame payload: what the daemon writes at once (it splits
/// bigger), and what a client accepts (a corrupt length is refused, not
/// allocated).
pub const MAX_FRAME: usize = 1 << 20;

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    payload: &[u8],
) -> io::Result<()> {
    for piece in payload
        .chunks(MAX_FRAME)
        .chain(payload.is_empty().then_some(&[][..]))
    {
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&(piece.len() as u32).to_le_bytes());
        w.write_all(&head).await?;
        w.write_all(piece).await?;
    }
    Ok(())
}

/// Reads one frame: `None` at a clean end of the stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes from the daemon (at most {MAX_FRAME})"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((head[0], payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_big_payloads_split() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let big = vec![7u8; MAX_FRAME + 10];
        let writer = tokio::spawn(async move {
            write_frame(&mut a, DATA, &big).await.expect("write");
            write_frame(&mut a, EOF, &[]).await.expect("write");
        });
        let (k, p) = read_frame(&mut b).await.expect("read").expect("frame");
        assert_eq!((k, p.len()), (DATA, MAX_FRAME));
        let (k, p) = read_frame(&mut b).await.expect("read").expect("frame");
        assert_eq!((k, p.len()), (DATA, 10));
        let (k, p) = read_frame(&mut b).await.expect("read").expect("frame");
        assert_eq!((k, p.len()), (EOF, 0));
        writer.await.expect("writer");
        assert!(read_frame(&mut b).await.expect("read").is_none());
    }
}

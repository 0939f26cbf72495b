//! The demo's traffic: one TCP stream through the NIC, an HTTP download
//! through a `[[forward]]`, a file through a `[[pipe]]`. Every byte is
//! checked at the far end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::netns::NetNs;

/// One TCP stream from namespace `a` to `b` at 198.18.0.2 (the address
/// the labs of the tests give B) for `dur`; the receiver checks every
/// byte. Returns (bytes, seconds).
pub fn tcp_throughput(a: &NetNs, b: &NetNs, dur: Duration) -> anyhow::Result<(u64, f64)> {
    tcp_throughput_to(a, b, "198.18.0.2", dur)
}

/// One TCP stream from namespace `a` to `addr` in namespace `b` for `dur`;
/// the receiver checks every byte against the sender's pattern.
pub fn tcp_throughput_to(
    a: &NetNs,
    b: &NetNs,
    addr: &str,
    dur: Duration,
) -> anyhow::Result<(u64, f64)> {
    let addr: std::net::IpAddr = addr.parse().context("address")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = b.spawn(move || {
        let l = TcpListener::bind((addr, 5201)).with_context(|| format!("listening on {addr}"))?;
        let _ = ready_tx.send(());
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total: u64 = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            for (i, b) in buf[..n].iter().enumerate() {
                if *b != pattern_byte(total + i as u64) {
                    bail!("byte {} differs", total + i as u64);
                }
            }
            total += n as u64;
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("server did not start")?;
    let client = a.spawn(move || {
        let mut s =
            TcpStream::connect((addr, 5201)).with_context(|| format!("connecting to {addr}"))?;
        let chunk: Vec<u8> = (0..(1u64 << 20)).map(pattern_byte).collect();
        let start = Instant::now();
        let mut sent: u64 = 0;
        while start.elapsed() < dur {
            // The pattern repeats every 1 MiB, so aligned chunks line up.
            s.write_all(&chunk)?;
            sent += chunk.len() as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok((sent, start))
    });
    let (sent, start) = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))??;
    let got = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(got == sent, "sent {sent} bytes, received {got}");
    Ok((got, secs))
}

pub(super) fn pattern_byte(i: u64) -> u8 {
    let i = i % (1 << 20);
    (i.wrapping_mul(2_654_435_761) >> 7) as u8
}

/// Port of the demo's web server in namespace B and of the forward to it
/// in namespace A (each on its own loopback).
pub(super) const WEB_PORT: u16 = 8080;

/// `len` bytes that do not compress, the same for the same `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// An HTTP download through the `[[forward]]`: a small web server on B's
/// loopback serves `len` bytes with their SHA-256 in a header; a client on
/// A's loopback fetches them from the forward's port, which carries the
/// connection over the cable to B's `[[service]]`. Returns seconds taken.
pub(super) fn http_through_forward(a: &NetNs, b: &NetNs, len: usize) -> anyhow::Result<f64> {
    let body = noise(len, 0x7bb1_d9e5);
    let sum = hex(&Sha256::digest(&body));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let header_sum = sum.clone();
    let server = b.spawn(move || {
        let l = TcpListener::bind(("127.0.0.1", WEB_PORT)).context("web server: listening")?;
        let _ = ready_tx.send(());
        let (s, _) = l.accept().context("web server: accepting")?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut line = String::new();
        r.read_line(&mut line)?;
        if !line.starts_with("GET ") {
            bail!("web server: expected a GET, got {line:?}");
        }
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        let mut s = s;
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {len}\r\nX-Sha256: {header_sum}\r\nConnection: close\r\n\r\n"
        )?;
        s.write_all(&body)?;
        Ok(())
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the web server did not start")?;
    let client = a.spawn(move || {
        let start = Instant::now();
        // The forward listens once its daemon is up; give it a moment.
        let mut s = loop {
            match TcpStream::connect(("127.0.0.1", WEB_PORT)) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).context("connecting to the forward"),
            }
        };
        s.write_all(b"GET /blob HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n")?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 200") {
            bail!("the server answered {line:?}");
        }
        let (mut length, mut sent_sum) = (None, None);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            let l = line.trim_end().to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length: ") {
                length = v.parse::<usize>().ok();
            } else if let Some(v) = l.strip_prefix("x-sha256: ") {
                sent_sum = Some(v.to_owned());
            }
        }
        let mut got = Vec::with_capacity(length.unwrap_or(0));
        r.read_to_end(&mut got)?;
        Ok((start.elapsed().as_secs_f64(), length, sent_sum, got))
    });
    let (secs, length, sent_sum, got) = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))??;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    if length != Some(len) || got.len() != len {
        bail!(
            "expected {len} bytes, the header said {length:?}, {} arrived",
            got.len()
        );
    }
    let got_sum = hex(&Sha256::digest(&got));
    if sent_sum.as_deref() != Some(sum.as_str()) || got_sum != sum {
        bail!("SHA-256 differs: sent {sum}, received {got_sum}");
    }
    Ok(secs)
}

/// A file through `pipe` (a `tbbridge pipe INSTANCE backup` command) to
/// the peer's `[[pipe]] backup`, which writes `received`. Returns seconds
/// taken.
pub(super) fn file_through_pipe(
    mut pipe: Command,
    sent: &Path,
    received: &Path,
    len: usize,
) -> anyhow::Result<f64> {
    let data = noise(len, 0x51de_ca11);
    std::fs::write(sent, &data).context("writing the file to send")?;
    let sum = hex(&Sha256::digest(&data));
    drop(data);
    let start = Instant::now();
    let out = pipe
        .stdin(std::fs::File::open(sent)?)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running tbbridge pipe")?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "tbbridge pipe failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let got = std::fs::read(received)
        .with_context(|| format!("reading what arrived, {}", received.display()))?;
    let got_sum = hex(&Sha256::digest(&got));
    if got.len() != len || got_sum != sum {
        bail!(
            "{} of {len} bytes arrived, SHA-256 {got_sum} (sent {sum})",
            got.len()
        );
    }
    Ok(secs)
}

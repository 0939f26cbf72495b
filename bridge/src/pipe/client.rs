//! `tbbridge pipe NAME SERVICE`: connects standard input and output to a
//! pipe of the bridge `NAME` (see the module doc of `crate::pipe`).
//!
//! * Standard input goes to the peer; what the peer sends comes out on
//!   standard output. A terminal on standard input counts as nothing to
//!   send (`tbbridge pipe tb0 backup > data.tar`): then our end finishes
//!   only once everything the peer sent is written out, so the sender's
//!   success means it is on our disk.
//! * Progress (bytes, rate, ETA when the size is known: `--size`, or the
//!   length of a regular file on standard input) on standard error when it
//!   is a terminal; quiet otherwise.
//! * Exit status 0 only when the transfer completed end to end.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::proto::{read_frame, DATA, EOF, NOTE, STATUS};
use crate::daemon::paths::{check_name, InstancePaths};
use crate::units::{bitrate, bytes};

/// Reads from standard input at most this much at once.
const CHUNK: usize = 1 << 20;
/// Progress line refresh.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Runs the command; `size` is the expected byte count, if known.
pub fn run(name: &str, service: &str, size: Option<u64>) -> anyhow::Result<()> {
    check_name(name)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let r = rt.block_on(pipe(name, service, size));
    // A failed transfer may leave a read of standard input blocked on the
    // runtime's blocking pool (a source that has not closed it): do not
    // wait for it, the outcome is known.
    rt.shutdown_background();
    r
}

/// Size of standard input if it is a regular file.
fn stdin_size() -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat fills `st` for a descriptor we have (0).
    let r = unsafe { libc::fstat(std::io::stdin().as_raw_fd(), st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call.
    let st = unsafe { st.assume_init() };
    (st.st_mode & libc::S_IFMT == libc::S_IFREG).then_some(st.st_size as u64)
}

struct Progress {
    on: bool,
    start: Instant,
    last: Instant,
    size: Option<u64>,
}

impl Progress {
    fn show(&mut self, sent: u64, received: u64, force: bool) {
        if !self.on || (!force && self.last.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let moved = sent.max(received);
        let eta = match self.size {
            Some(total) if moved > 0 && total > moved => {
                let rate = moved as f64 / secs;
                format!(", ETA {:.0} s", (total - moved) as f64 / rate)
            }
            _ => String::new(),
        };
        let of = self
            .size
            .map(|t| format!(" of {}", bytes(t)))
            .unwrap_or_default();
        eprint!(
            "\r\x1b[Ksent {}{of}, received {}, {}{eta}",
            bytes(sent),
            bytes(received),
            bitrate(moved, secs)
        );
    }
}

async fn pipe(name: &str, service: &str, size: Option<u64>) -> anyhow::Result<()> {
    let p = InstancePaths::new(name);
    let mut sock = UnixStream::connect(&p.socket).await.with_context(|| {
        format!(
            "{name} is not up (no control socket at {})",
            p.socket.display()
        )
    })?;
    let req = serde_json::json!({ "cmd": "pipe", "service": service });
    sock.write_all(format!("{req}\n").as_bytes()).await?;
    let interactive_in = std::io::stdin().is_terminal();
    let mut progress = Progress {
        on: std::io::stderr().is_terminal(),
        start: Instant::now(),
        last: Instant::now(),
        size: size.or_else(stdin_size),
    };
    let (mut rd, mut wr) = sock.into_split();
    // Wait for "connected" before sending anything.
    loop {
        match read_frame(&mut rd).await? {
            Some((NOTE, n)) => {
                let note: Value = serde_json::from_slice(&n).unwrap_or(Value::Null);
                let text = note.get("note").and_then(Value::as_str).unwrap_or("");
                if text == "connected" {
                    break;
                }
                if progress.on {
                    eprintln!("tbbridge pipe: {text}");
                }
            }
            Some((STATUS, s)) => return finish(&s),
            Some((k, _)) => bail!("unexpected frame {k} from the daemon before the transfer"),
            None => bail!("the daemon closed the connection"),
        }
    }
    progress.start = Instant::now();
    // One task runs both directions (`join!`), so they share these freely.
    let progress = std::cell::RefCell::new(progress);
    let sent = std::cell::Cell::new(0u64);
    let received = std::cell::Cell::new(0u64);
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    let up = {
        let (sent, received, progress) = (&sent, &received, &progress);
        async move {
            if interactive_in {
                // Nothing to send; finish once the peer's data is out.
                let _ = eof_rx.await;
            } else {
                let mut stdin = tokio::io::stdin();
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = stdin
                        .read(&mut buf)
                        .await
                        .context("reading standard input")?;
                    if n == 0 {
                        break;
                    }
                    wr.write_all(&buf[..n])
                        .await
                        .context("the daemon went away")?;
                    sent.set(sent.get() + n as u64);
                    progress
                        .borrow_mut()
                        .show(sent.get(), received.get(), false);
                }
            }
            wr.shutdown().await?;
            Ok::<(), anyhow::Error>(())
        }
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        let mut eof_tx = Some(eof_tx);
        loop {
            match read_frame(&mut rd).await? {
                Some((DATA, d)) => {
                    stdout
                        .write_all(&d)
                        .await
                        .context("writing standard output")?;
                    received.set(received.get() + d.len() as u64);
                    progress
                        .borrow_mut()
                        .show(sent.get(), received.get(), false);
                }
                Some((EOF, _)) => {
                    stdout.flush().await.context("writing standard output")?;
                    if let Some(tx) = eof_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Some((NOTE, _)) => {}
                Some((STATUS, s)) => {
                    progress.borrow_mut().show(sent.get(), received.get(), true);
                    return Ok::<Vec<u8>, anyhow::Error>(s);
                }
                Some((k, _)) => bail!("unexpected frame {k} from the daemon"),
                None => bail!("the daemon closed the connection before the end of the transfer"),
            }
        }
    };
    // Both directions at once, until the daemon's verdict. A transfer that
    // failed (the channel reset, the far end gone) ends here even while
    // standard input still waits for data: no need to wait for it.
    tokio::pin!(up, down);
    let mut up_r = None;
    let status = loop {
        tokio::select! {
            r = &mut up, if up_r.is_none() => up_r = Some(r),
            s = &mut down => break s,
        }
    };
    if progress.borrow().on {
        eprintln!();
    }
    // The daemon's verdict first: when the far end failed, our write
    // failed too, but for that reason.
    finish(&status?)?;
    match up_r {
        Some(r) => r,
        // A completed transfer had all our input: `up` is at its end.
        None => up.await,
    }
}

/// The daemon's last word: `Ok` when the transfer completed end to end.
fn finish(status: &[u8]) -> anyhow::Result<()> {
    let v: Value = serde_json::from_slice(status).context("the daemon's status is not JSON")?;
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    let why = v
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    bail!("the transfer did not complete: {why}")
}

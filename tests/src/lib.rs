//! Helpers shared by the integration tests in `tests/`:
//!
//! * [`skip`]: the one way a test that needs root (or a tool) skips, with
//!   `SKIP: reason` on stderr. CI sets `TBBRIDGE_NO_SKIP=1` (see
//!   `.ci/run`), and then a skip fails the test instead: CI runs as root
//!   and must never pass by skipping.
//! * [`RawPeer`]: a peer that speaks the wire protocol by hand into one end
//!   of an emulated cable, for tests of what a bridge does with exact or
//!   hostile record sequences.
//! * [`pattern`]: test data that tells every offset apart.
//! * [`lab`]: two hosts (namespaces, a cable, two daemons) for end-to-end
//!   tests.
//! * [`files`]: large test files and their checksums.

pub mod files;
pub mod lab;
pub mod load;
pub mod prom;

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tbbridge_transport::device::emu::EmuCable;
use tbbridge_transport::device::AsyncDevice;
use tbbridge_transport::wire::{
    BatchDecoder, Record, RecordIter, TransmitBuilder, MAX_BATCH_BODY, MAX_RECORD_LEN, VERSION,
};
use tbbridge_transport::CableEnd;

/// Reports a skip: prints `SKIP: {why}` and returns `true` so the test can
/// return. Under `TBBRIDGE_NO_SKIP=1` (CI) it fails the test instead.
pub fn skip(why: &str) -> bool {
    if std::env::var_os("TBBRIDGE_NO_SKIP").is_some_and(|v| v == "1") {
        panic!("SKIP not allowed here (TBBRIDGE_NO_SKIP=1): {why}");
    }
    eprintln!("SKIP: {why}");
    true
}

/// Why a test that needs root and `/dev/net/tun` cannot run here, if so.
pub fn needs_root_and_tun() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and TUN devices)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("needs /dev/net/tun".into());
    }
    None
}

/// Why a test that needs these programs cannot run here, if so
/// (`(program, argument that makes it print its version)`).
pub fn needs_programs(progs: &[(&str, &str)]) -> Option<String> {
    for (prog, arg) in progs {
        let ok = std::process::Command::new(prog)
            .arg(arg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !ok {
            return Some(format!("needs `{prog}` (see .ci/run for the package)"));
        }
    }
    None
}

/// `n` bytes in which (nearly) every offset holds a different value.
pub fn pattern(seed: u8, n: usize) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect::<Vec<u8>>(),
    )
}

/// A hand-driven peer on one end of an emulated cable.
#[derive(Debug)]
pub struct RawPeer {
    dev: AsyncDevice,
    rx: BytesMut,
    decoder: BatchDecoder,
    queue: std::collections::VecDeque<Record>,
    /// This peer's session identity (what its Hellos carry).
    pub session_id: u64,
    /// What its Hellos announce: capability bits, largest message, credit
    /// before its `OpenOk` (all 0 by default: an older build).
    pub hello_ext: (u32, u32, u32),
}

impl RawPeer {
    /// Opens `end` of `cable` (waits for the other end like the driver).
    pub async fn open(cable: &EmuCable, end: CableEnd, session_id: u64) -> io::Result<Self> {
        Ok(Self {
            dev: cable.open_async(end).await?,
            rx: BytesMut::with_capacity(1 << 20),
            decoder: BatchDecoder::new(MAX_BATCH_BODY),
            queue: Default::default(),
            session_id,
            hello_ext: (0, 0, 0),
        })
    }

    /// Our Hello.
    pub fn hello(&self, seen_peer: bool, resume_of: u64) -> Record {
        Record::Hello {
            version: VERSION,
            seen_peer,
            caps: self.hello_ext.0,
            max_batch: MAX_BATCH_BODY as u32,
            max_record: MAX_RECORD_LEN as u32,
            session_id: self.session_id,
            resume_of,
            max_message: self.hello_ext.1,
            open_credit: self.hello_ext.2,
            auth: None,
            ident: None,
        }
    }

    /// Writes `recs` as one batch.
    pub async fn send(&self, recs: &[Record]) -> io::Result<()> {
        let mut b = TransmitBuilder::new(MAX_BATCH_BODY, 1 << 20);
        for r in recs {
            b.push(r);
        }
        self.send_bytes(&b.finish().to_vec()).await
    }

    /// Writes raw bytes.
    pub async fn send_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        self.dev.write_all(bytes).await
    }

    /// The next record from the bridge, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> io::Result<Option<Record>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Ok(Some(r));
            }
            if let Some(body) = self
                .decoder
                .decode(&mut self.rx)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                for r in RecordIter::new(body) {
                    self.queue
                        .push_back(r.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?);
                }
                continue;
            }
            self.rx.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.dev.read_buf(&mut self.rx)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Records until one matches `pred` (returned), or `None` after
    /// `timeout`; the others are dropped.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Record) -> bool,
    ) -> io::Result<Option<Record>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(r) if pred(&r) => return Ok(Some(r)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Handshakes as a first meeting: returns the bridge's session id.
    pub async fn handshake(&mut self) -> io::Result<u64> {
        let hello = self.hello(false, 0);
        self.send(&[hello]).await?;
        let theirs = self
            .wait_for(Duration::from_secs(10), |r| {
                matches!(r, Record::Hello { .. })
            })
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no Hello from the bridge"))?;
        let Record::Hello { session_id, .. } = theirs else {
            return Err(io::ErrorKind::InvalidData.into());
        };
        let seen = self.hello(true, session_id);
        self.send(&[seen]).await?;
        Ok(session_id)
    }
}

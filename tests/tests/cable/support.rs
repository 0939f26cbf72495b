//! Test support for `cable.rs`: a [`Rig`] (one cable of either flavour)
//! and blocking helpers over the non-blocking [`DeviceFd`].

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tbbridge_transport::device::emu::{
    control, open_end, serve_with_faults, CableFaults, CableOptions, ControlCommand, EmuCable,
};
use tbbridge_transport::device::{is_link_down, DeviceFd};
use tbbridge_transport::CableEnd;

/// No single blocking step of a test may take longer than this.
pub const STEP: Duration = Duration::from_secs(60);

// ---- rigs: one cable, either flavour ---------------------------------------

pub enum Rig {
    InProc(EmuCable),
    Served {
        root: tempfile::TempDir,
        name: String,
        thread: Option<JoinHandle<io::Result<()>>>,
    },
}

impl Rig {
    pub fn in_proc_with(opts: CableOptions, faults: CableFaults) -> Rig {
        Rig::InProc(EmuCable::with_faults(opts, faults).expect("start in-process cable"))
    }

    pub fn served(opts: CableOptions) -> Rig {
        Rig::served_with(opts, CableFaults::default())
    }

    pub fn served_with(opts: CableOptions, faults: CableFaults) -> Rig {
        let root = tempfile::tempdir().expect("tempdir");
        let name = "cab".to_owned();
        let (r, n) = (root.path().to_owned(), name.clone());
        let thread = std::thread::spawn(move || serve_with_faults(&r, &n, opts, faults));
        let deadline = Instant::now() + STEP;
        while control(root.path(), &name, ControlCommand::Status).is_err() {
            assert!(Instant::now() < deadline, "cable server did not come up");
            assert!(!thread.is_finished(), "cable server exited early");
            std::thread::sleep(Duration::from_millis(5));
        }
        Rig::Served {
            root,
            name,
            thread: Some(thread),
        }
    }

    pub fn both(opts: CableOptions) -> [Rig; 2] {
        Rig::both_with(opts, CableFaults::default())
    }

    /// Both flavours with `faults` in force from the start.
    pub fn both_with(opts: CableOptions, faults: CableFaults) -> [Rig; 2] {
        [
            Rig::in_proc_with(opts.clone(), faults),
            Rig::served_with(opts, faults),
        ]
    }

    pub fn label(&self) -> &'static str {
        match self {
            Rig::InProc(_) => "in-process",
            Rig::Served { .. } => "served",
        }
    }

    pub fn try_open(&self, end: CableEnd, timeout: Option<Duration>) -> io::Result<DeviceFd> {
        match self {
            Rig::InProc(c) => match timeout {
                Some(t) => c.open_timeout(end, t),
                None => c.open(end),
            },
            Rig::Served { root, name, .. } => open_end(root.path(), name, end, timeout),
        }
    }

    pub fn open(&self, end: CableEnd) -> DeviceFd {
        self.try_open(end, Some(STEP))
            .unwrap_or_else(|e| panic!("{}: open {end}: {e}", self.label()))
    }

    pub fn cmd(&self, cmd: ControlCommand) -> serde_json::Value {
        let json = match self {
            Rig::InProc(c) => {
                match cmd {
                    ControlCommand::Unplug => c.unplug(),
                    ControlCommand::Replug => c.replug(),
                    ControlCommand::Corrupt => c.corrupt(),
                    ControlCommand::Faults(f) => c.set_faults(f),
                    ControlCommand::Status | ControlCommand::Shutdown => Ok(()),
                }
                .expect("in-process command");
                c.stats().expect("stats").to_json()
            }
            Rig::Served { root, name, .. } => {
                control(root.path(), name, cmd).expect("control command")
            }
        };
        serde_json::from_str(&json).expect("status is JSON")
    }

    pub fn status(&self) -> serde_json::Value {
        self.cmd(ControlCommand::Status)
    }

    pub fn root(&self) -> Option<&Path> {
        match self {
            Rig::Served { root, .. } => Some(root.path()),
            Rig::InProc(_) => None,
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Rig::Served {
            root, name, thread, ..
        } = self
        {
            let _ = control(root.path(), name, ControlCommand::Shutdown);
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

pub fn num(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("status field {path:?} missing in {v}"))
}

// ---- blocking helpers over the non-blocking DeviceFd ----------------------

pub fn wait_fd(fd: &DeviceFd, events: i16, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(!left.is_zero(), "device wait timed out");
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = left.as_millis().min(100) as i32;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

pub fn write_all(fd: &DeviceFd, mut data: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + STEP;
    while !data.is_empty() {
        match fd.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_fd(fd, libc::POLLOUT, deadline),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn read_some(fd: &DeviceFd, buf: &mut [u8]) -> io::Result<usize> {
    let deadline = Instant::now() + STEP;
    loop {
        match fd.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_fd(fd, libc::POLLIN, deadline),
            r => return r,
        }
    }
}

pub fn read_exact(fd: &DeviceFd, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match read_some(fd, &mut buf[got..])? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(())
}

/// Polls once with a short timeout; returns revents.
pub fn poll_now(fd: &DeviceFd, events: i16, ms: i32) -> i16 {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
    p.revents
}

pub fn assert_enxio<T: std::fmt::Debug>(r: io::Result<T>, what: &str) {
    match r {
        Err(e) if is_link_down(&e) => {}
        other => panic!("{what}: expected ENXIO, got {other:?}"),
    }
}

/// Deterministic, non-periodic test data: byte `i` of stream `seed`.
pub fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut i = 0usize;
    while i < buf.len() {
        let pos = offset + i as u64;
        let word = mix(seed.wrapping_mul(0x1000_0000_01b3) ^ (pos >> 3)).to_le_bytes();
        let start = (pos & 7) as usize;
        let n = (8 - start).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[start..start + n]);
        i += n;
    }
}

/// Writes `total` pattern bytes in varying chunk sizes.
pub fn send_pattern(fd: &DeviceFd, seed: u64, total: u64) -> io::Result<()> {
    let sizes = [1 << 20, 4093, 300_000, 1, 65_536, 2 << 20];
    let mut buf = vec![0u8; 2 << 20];
    let (mut off, mut k) = (0u64, 0usize);
    while off < total {
        let n = (sizes[k % sizes.len()] as u64).min(total - off) as usize;
        k += 1;
        pattern(seed, off, &mut buf[..n]);
        write_all(fd, &buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Reads `total` bytes with odd-sized reads, checking each against the
/// pattern; returns the number of bytes checked.
pub fn check_pattern(fd: &DeviceFd, seed: u64, total: u64) -> io::Result<u64> {
    let sizes = [1usize, 3, 4095, 4097, 65_537, (1 << 20) + 1, 17];
    let mut buf = vec![0u8; (1 << 20) + 1];
    let mut want = vec![0u8; (1 << 20) + 1];
    let (mut off, mut k) = (0u64, 0usize);
    while off < total {
        let n = (sizes[k % sizes.len()] as u64).min(total - off) as usize;
        k += 1;
        let got = read_some(fd, &mut buf[..n])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF at {off}"),
            ));
        }
        pattern(seed, off, &mut want[..got]);
        if buf[..got] != want[..got] {
            let bad = (0..got).find(|&i| buf[i] != want[i]).unwrap_or(0);
            panic!("data mismatch at stream offset {}", off + bad as u64);
        }
        off += got as u64;
    }
    Ok(off)
}

/// User + system CPU time of this process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

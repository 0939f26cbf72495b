//! The cross-process cable: [`serve`] (what `tbbridge cable run` does) and
//! [`control`] (its `unplug`/`replug`/`corrupt`/`status` commands).
//!
//! Files under `ROOT/NAME/`:
//! * `a`, `b`: listening Unix sockets, one per end (endpoint protocol in
//!   `endpoint`);
//! * `ctl`: control socket. A request is one line (`status`, `unplug`,
//!   `replug`, `corrupt`, `shutdown`, or `faults [seed=N] [read-splits=on]
//!   [corrupt-prob=P] [stale-bytes=N]`, which replaces the seeded faults);
//!   the reply is one line, `ok <status JSON>` or `err <message>`, and the
//!   relay closes;
//! * `state`: the 8-byte link word, mapped by clients to tell an unplug from
//!   a peer close.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::endpoint::{encode_link, LinkWord, MappedWord};
use super::faults::{CableFaults, FaultError};
use super::relay::{Listeners, Relay};
use super::{cable_dir, not_served, CableOptions, CableStats, DirStats};

/// How long [`control`] waits for the relay's answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest reply [`control`] reads (a status line is ~400 bytes).
const MAX_REPLY: u64 = 64 * 1024;

/// A command for a running cable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    /// Report the state (one-line JSON).
    Status,
    /// Pull the cable.
    Unplug,
    /// Plug it back in.
    Replug,
    /// Flip 1-3 bits in the next 4 KiB frame.
    Corrupt,
    /// Replace the seeded faults (read splits, corruption probability,
    /// stale bytes).
    Faults(CableFaults),
    /// Stop the cable server (clients see `ENXIO`); used by tests.
    Shutdown,
}

/// A control request the cable cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Not a command.
    #[error(
        "unknown cable command {0:?}: expected status, unplug, replug, corrupt, faults or \
         shutdown"
    )]
    Unknown(String),
    /// A `faults` command with a bad setting.
    #[error(transparent)]
    Faults(#[from] FaultError),
}

impl ControlCommand {
    /// The command's word on the control socket (without arguments).
    pub fn as_str(self) -> &'static str {
        match self {
            ControlCommand::Status => "status",
            ControlCommand::Unplug => "unplug",
            ControlCommand::Replug => "replug",
            ControlCommand::Corrupt => "corrupt",
            ControlCommand::Faults(_) => "faults",
            ControlCommand::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for ControlCommand {
    /// The request line (without the newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlCommand::Faults(faults) => write!(f, "faults {}", faults.to_words()),
            _ => f.write_str(self.as_str()),
        }
    }
}

impl FromStr for ControlCommand {
    type Err = ControlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let line = s.trim().to_ascii_lowercase();
        let (word, args) = line.split_once(' ').unwrap_or((&line, ""));
        let bare = |cmd| {
            if args.trim().is_empty() {
                Ok(cmd)
            } else {
                Err(ControlError::Unknown(s.chars().take(64).collect()))
            }
        };
        match word {
            "status" => bare(ControlCommand::Status),
            "unplug" => bare(ControlCommand::Unplug),
            "replug" => bare(ControlCommand::Replug),
            "corrupt" => bare(ControlCommand::Corrupt),
            "faults" => Ok(ControlCommand::Faults(CableFaults::from_words(args)?)),
            "shutdown" => bare(ControlCommand::Shutdown),
            _ => Err(ControlError::Unknown(s.chars().take(64).collect())),
        }
    }
}

impl CableStats {
    /// One-line JSON, e.g. `{"plugged":true,"epoch":0,...}`.
    pub fn to_json(&self) -> String {
        let dir = |d: &DirStats| {
            format!(
                "{{\"forwarded\":{},\"dropped\":{},\"in_flight\":{},\"corrupted\":{},\
                 \"stale\":{},\"pieces\":{}}}",
                d.forwarded, d.dropped, d.in_flight, d.corrupted, d.stale, d.pieces
            )
        };
        format!(
            "{{\"plugged\":{},\"epoch\":{},\"unplugs\":{},\"a\":\"{}\",\"b\":\"{}\",\
             \"a_to_b\":{},\"b_to_a\":{},\"corrupted_frames\":{},\"random_corruptions\":{},\
             \"corrupt_armed\":{},\"ring_size\":{},\"zero_copy\":{},\"rate\":{},\
             \"latency_us\":{},\"faults\":{}}}",
            self.plugged,
            self.epoch,
            self.unplugs,
            self.a.as_str(),
            self.b.as_str(),
            dir(&self.a_to_b),
            dir(&self.b_to_a),
            self.corrupted_frames,
            self.random_corruptions,
            self.corrupt_armed,
            self.ring_size,
            self.zero_copy,
            self.rate
                .map_or_else(|| "null".to_owned(), |r| r.to_string()),
            self.latency_us,
            self.faults.to_json(),
        )
    }
}

/// Sends `cmd` to cable `name` under `root` and returns the relay's answer:
/// the status JSON after the command. Errors: `NotFound` if the cable is
/// not served, `InvalidInput` if the relay refused the command.
pub fn control(root: &Path, name: &str, cmd: ControlCommand) -> io::Result<String> {
    let dir = cable_dir(root, name)?;
    let mut sock = UnixStream::connect(dir.join("ctl")).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => not_served(root, name, &e),
        _ => e,
    })?;
    sock.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    sock.set_write_timeout(Some(CONTROL_TIMEOUT))?;
    let no_answer = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("cable {name:?} did not answer within {CONTROL_TIMEOUT:?}"),
        ),
        _ => e,
    };
    sock.write_all(format!("{cmd}\n").as_bytes())
        .map_err(no_answer)?;
    let mut reply = String::new();
    (&mut sock)
        .take(MAX_REPLY)
        .read_to_string(&mut reply)
        .map_err(no_answer)?;
    let line = reply.trim_end();
    if let Some(json) = line.strip_prefix("ok ") {
        Ok(json.to_owned())
    } else if let Some(msg) = line.strip_prefix("err ") {
        Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned()))
    } else if line.is_empty() {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("cable {name:?} closed the control connection without an answer"),
        ))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer from cable {name:?}: {line:?}"),
        ))
    }
}

/// Removes the cable's files when the server stops.
#[derive(Debug)]
struct Cleanup {
    dir: PathBuf,
}

const FILES: [&str; 4] = ["a", "b", "ctl", "state"];

impl Cleanup {
    fn remove_files(dir: &Path) {
        for f in FILES {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        Self::remove_files(&self.dir);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Write end of the signal pipe, for the handler (-1: none).
static SIGNAL_WR: AtomicI32 = AtomicI32::new(-1);
/// The signal pipe: (read end, write end). Its read end turns readable for
/// good at the first SIGINT/SIGTERM, which every serving relay polls.
static SIGNAL_PIPE: OnceLock<Result<(OwnedFd, OwnedFd), i32>> = OnceLock::new();

extern "C" fn on_signal(_sig: libc::c_int) {
    let fd = SIGNAL_WR.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = [1u8];
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking.
        unsafe { libc::write(fd, b.as_ptr().cast(), 1) };
    }
}

/// Installs the SIGINT/SIGTERM handlers (one-shot: `SA_RESETHAND`, so a
/// second signal kills as usual) and returns the descriptor that turns
/// readable when one arrives.
fn signal_stop_fd() -> io::Result<BorrowedFd<'static>> {
    let pipe = SIGNAL_PIPE.get_or_init(|| {
        let mut fds = [0; 2];
        // SAFETY: pipe2 into a 2-element array.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if r < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        // SAFETY: fresh descriptors we own.
        let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        SIGNAL_WR.store(pair.1.as_raw_fd(), Ordering::Relaxed);
        Ok(pair)
    });
    let (rd, _wr) = pipe
        .as_ref()
        .map_err(|&e| io::Error::from_raw_os_error(e))?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only calls write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(rd.as_fd())
}

fn bind(path: &Path) -> io::Result<UnixListener> {
    UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))
}

/// Serves cable `name` under `root` until SIGINT/SIGTERM or a `shutdown`
/// command: creates `ROOT/NAME/{a,b,ctl,state}`, removes them on exit.
/// Blocks the calling thread.
///
/// Fails with `AddrInUse` if the cable is already served; stale files of a
/// server that died are replaced. Signal handling is process-wide and
/// one-shot: after the first SIGINT/SIGTERM every `serve` in the process
/// returns (and later calls return at once); a second signal kills.
pub fn serve(root: &Path, name: &str, opts: CableOptions) -> io::Result<()> {
    serve_with_faults(root, name, opts, CableFaults::default())
}

/// [`serve`] with seeded faults in force from the first byte (they can be
/// replaced later with [`ControlCommand::Faults`]). `InvalidInput` if the
/// options or faults are out of range.
pub fn serve_with_faults(
    root: &Path,
    name: &str,
    opts: CableOptions,
    faults: CableFaults,
) -> io::Result<()> {
    opts.validate()?;
    faults
        .validate(opts.ring_size)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let dir = cable_dir(root, name)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;
    let ctl_path = dir.join("ctl");
    if UnixStream::connect(&ctl_path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "emulated cable {name:?} is already served at {}",
                dir.display()
            ),
        ));
    }
    Cleanup::remove_files(&dir);
    let cleanup = Cleanup { dir: dir.clone() };
    let listeners = Listeners {
        a: bind(&dir.join("a"))?,
        b: bind(&dir.join("b"))?,
        ctl: bind(&ctl_path)?,
    };
    let word = MappedWord::create(&dir.join("state"), encode_link(0, false))?;
    let stop = signal_stop_fd()?;
    let (relay, handle) = Relay::new(
        &opts,
        &faults,
        LinkWord::Mapped(Arc::new(word)),
        Some(listeners),
        Some(stop),
    )?;
    // The relay runs in its own thread so that the signal mask it sets
    // (SIGPIPE blocked) does not leak into the caller's thread.
    let result = std::thread::Builder::new()
        .name(format!("tbcable-{name}"))
        .spawn(move || relay.run())?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the cable relay thread panicked")));
    drop(handle);
    drop(cleanup);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::emu::EndState;

    #[test]
    fn commands_parse() {
        for c in [
            ControlCommand::Status,
            ControlCommand::Unplug,
            ControlCommand::Replug,
            ControlCommand::Corrupt,
            ControlCommand::Shutdown,
        ] {
            assert_eq!(c.to_string().parse::<ControlCommand>(), Ok(c));
        }
        assert_eq!(
            " UNPLUG ".parse::<ControlCommand>(),
            Ok(ControlCommand::Unplug)
        );
        let e = "fly".parse::<ControlCommand>().expect_err("unknown");
        assert!(e.to_string().contains("expected status"), "{e}");
        assert!("unplug now".parse::<ControlCommand>().is_err());
        let f = CableFaults {
            seed: 7,
            read_splits: true,
            corrupt_prob: super::super::Probability::new(1e-4).expect("valid"),
            stale_bytes: 4096,
        };
        let line = ControlCommand::Faults(f).to_string();
        assert_eq!(
            line,
            "faults seed=7 read-splits=on corrupt-prob=1e-4 stale-bytes=4096"
        );
        assert_eq!(line.parse(), Ok(ControlCommand::Faults(f)));
        assert_eq!(
            "faults".parse(),
            Ok(ControlCommand::Faults(CableFaults::default()))
        );
        let e = "faults corrupt-prob=3"
            .parse::<ControlCommand>()
            .expect_err("p > 1");
        assert!(matches!(e, ControlError::Faults(_)), "{e}");
    }

    #[test]
    fn status_json_shape() {
        let st = CableStats {
            plugged: true,
            epoch: 2,
            unplugs: 2,
            a_to_b: DirStats {
                forwarded: 10,
                dropped: 1,
                in_flight: 0,
                ..DirStats::default()
            },
            b_to_a: DirStats::default(),
            corrupted_frames: 0,
            random_corruptions: 0,
            corrupt_armed: true,
            ring_size: 256,
            zero_copy: true,
            rate: None,
            latency_us: 5,
            faults: CableFaults::default(),
            a: EndState::Open,
            b: EndState::Waiting,
        };
        let j = st.to_json();
        assert!(j.starts_with("{\"plugged\":true,\"epoch\":2,"), "{j}");
        assert!(j.contains("\"a_to_b\":{\"forwarded\":10,\"dropped\":1,\"in_flight\":0,"));
        assert!(
            j.contains("\"faults\":{\"seed\":0,\"read_splits\":false,"),
            "{j}"
        );
        assert!(j.contains("\"rate\":null") && j.contains("\"b\":\"waiting\""));
        assert!(!j.contains('\n'));
    }

    #[test]
    fn control_without_server_is_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = control(dir.path(), "nope", ControlCommand::Status).expect_err("no server");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("tbbridge cable run nope"), "{e}");
        let e = control(dir.path(), "../x", ControlCommand::Status).expect_err("bad name");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

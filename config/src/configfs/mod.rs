//! Creating and removing a `thunderbolt_stream` configfs stream (spec §1).
//!
//! [`setup`] does what an operator would do by hand:
//!
//! ```text
//! mkdir -p /sys/kernel/config/thunderbolt/stream/0-1.0/tbb0
//! cd /sys/kernel/config/thunderbolt/stream/0-1.0/tbb0
//! echo 2048 > ring_size; echo 4096 > throttling
//! echo 16 > in_hopid;   echo 16 > out_hopid
//! cat index             # → /dev/tbstream<index>
//! ```
//!
//! then reads the HopIDs back (resolving `-1`), waits for the device node
//! and reads the link's trained speed from sysfs. [`teardown`] removes the
//! stream directory (and the service directory if setup created it).
//!
//! **HopIDs 8 and 9 belong to `thunderbolt_net`.** An automatic (`-1`)
//! allocation takes the lowest free HopID from 8 up and then
//! `thunderbolt_net` fails on that link ("failed to allocate Rx HopID",
//! spec §6). Setup therefore refuses an automatic allocation that lands on
//! 8 or 9 unless `allow_net_hopids` is set; pinning 8 or 9 explicitly is
//! allowed (and warned about by [`Config::warnings`](crate::Config::warnings)).
//!
//! All filesystem access goes through [`ConfigfsFs`]: [`RealFs`] on a
//! real system, [`fake::FakeConfigfs`] (which behaves like the driver) in
//! tests.

pub mod fake;
mod link;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use link::{parse_speed, read_link_info, LinkInfo, EXPECTED_LINK_GBPS};

use crate::{ConfigfsStream, HopId, NET_HOPIDS};

/// Linux errno values used by setup and the fake (same on every Linux
/// architecture tbbridge targets).
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory.
    pub const ENOENT: i32 = 2;
    /// Permission denied.
    pub const EACCES: i32 = 13;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// Not a directory.
    pub const ENOTDIR: i32 = 20;
    /// Is a directory.
    pub const EISDIR: i32 = 21;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Out of memory (the driver could not allocate a ring).
    pub const ENOMEM: i32 = 12;
    /// No space left (no free HopID).
    pub const ENOSPC: i32 = 28;
    /// File name too long.
    pub const ENAMETOOLONG: i32 = 36;
    /// Directory not empty.
    pub const ENOTEMPTY: i32 = 39;
}

/// How often setup looks for the device node while waiting: 10 ms (udev
/// creates it within milliseconds; polling costs nothing at this rate).
pub const DEVICE_POLL: Duration = Duration::from_millis(10);

/// The filesystem operations setup needs.
pub trait ConfigfsFs {
    /// True when `path` exists (file or directory).
    fn exists(&self, path: &Path) -> bool;
    /// Creates one directory.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes one directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Reads a (small) attribute file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `value` to an attribute file as `echo value > path` does.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Names in a directory (unsorted), at most `limit` of them.
    fn list_dir(&self, path: &Path, limit: usize) -> io::Result<Vec<String>>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl ConfigfsFs for RealFs {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // One write(2) of "value\n", like the shell's `echo`: configfs
        // hands each write to the attribute's store function as a whole.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        f.write_all(format!("{value}\n").as_bytes())
    }
    fn list_dir(&self, path: &Path, limit: usize) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(path)?.take(limit) {
            if let Some(n) = e?.file_name().to_str() {
                names.push(n.to_owned());
            }
        }
        Ok(names)
    }
}

/// A stream that [`setup`] made ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedStream {
    /// The X of `/dev/tbstreamX`.
    pub index: u32,
    /// `<dev_dir>/tbstream<index>`.
    pub dev_path: PathBuf,
    /// Receive HopID as the kernel reports it (`-1` resolved).
    pub in_hopid: u16,
    /// Transmit HopID as the kernel reports it.
    pub out_hopid: u16,
    /// Ring size in frames, read back.
    pub ring_size: u32,
    /// Interrupt throttling in ns, read back.
    pub throttling: u32,
    /// `<root>/<service>/<stream>`.
    pub stream_dir: PathBuf,
    /// Setup created the service directory (teardown removes it if empty).
    pub created_service: bool,
    /// Setup created the stream directory (false: it existed and was reused).
    pub created_stream: bool,
    /// Trained link speed and lanes, where sysfs tells them.
    pub link: LinkInfo,
}

/// Why setup or teardown failed. Messages name the path and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigfsError {
    /// The configfs root does not exist.
    #[error(
        "{}: no such directory: is configfs mounted on /sys/kernel/config and the \
         thunderbolt_stream driver loaded (modprobe thunderbolt_stream)?",
        .root.display()
    )]
    RootMissing {
        /// The root.
        root: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("{action} {}: {source}{}", .path.display(), hint_suffix(.hint))]
    Io {
        /// What was done ("creating", "writing 16 to", ...).
        action: String,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
        /// What it probably means.
        hint: String,
    },
    /// An attribute held something that is not a number.
    #[error("{}: unexpected content {content:?} (expected a number)", .path.display())]
    BadAttribute {
        /// The attribute.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// A HopID reads back as 0 (unset) after it was written.
    #[error("{}: HopID is not set after writing it (the kernel released it)", .path.display())]
    HopIdUnset {
        /// The attribute.
        path: PathBuf,
    },
    /// Automatic allocation picked a HopID `thunderbolt_net` needs.
    #[error(
        "automatic {attr} allocation picked HopID {hopid}, which thunderbolt_net needs (it \
         would fail with \"failed to allocate Rx HopID\"); pin {attr} (e.g. 16) or set \
         allow_net_hopids = true in [device.configfs]"
    )]
    NetHopId {
        /// `in_hopid` or `out_hopid`.
        attr: &'static str,
        /// The HopID picked.
        hopid: u16,
    },
    /// The device node did not appear in time.
    #[error(
        "{} did not appear within {} ms of creating the stream (is udev running? \
         device_wait_ms raises the limit)",
        .path.display(), .waited.as_millis()
    )]
    DeviceTimeout {
        /// The node.
        path: PathBuf,
        /// How long setup waited.
        waited: Duration,
    },
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}

impl ConfigfsError {
    fn io(action: impl Into<String>, path: &Path, source: io::Error, hint: String) -> Self {
        ConfigfsError::Io {
            action: action.into(),
            path: path.to_path_buf(),
            source,
            hint,
        }
    }

    /// The errno of an I/O failure.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ConfigfsError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True when the kernel answered EBUSY (device open, or HopID taken).
    pub fn is_busy(&self) -> bool {
        self.errno() == Some(errno::EBUSY)
    }
}

fn permission_hint(e: &io::Error) -> Option<String> {
    matches!(e.raw_os_error(), Some(errno::EACCES | errno::EPERM))
        .then(|| "permission denied: configfs needs root (or CAP_SYS_ADMIN)".to_owned())
}

/// Creates and configures the stream of `c` on the real filesystem.
/// Blocks up to `c.device_wait` while the device node appears.
pub fn setup(c: &ConfigfsStream) -> Result<CreatedStream, ConfigfsError> {
    setup_with(&RealFs, c)
}

/// Removes what [`setup`] created, on the real filesystem.
pub fn teardown(c: &ConfigfsStream, created: &CreatedStream) -> Result<(), ConfigfsError> {
    teardown_with(&RealFs, c, created)
}

/// [`setup`] on any [`ConfigfsFs`]. On failure, directories it created are
/// removed again.
pub fn setup_with(fs: &dyn ConfigfsFs, c: &ConfigfsStream) -> Result<CreatedStream, ConfigfsError> {
    if !fs.exists(&c.root) {
        return Err(ConfigfsError::RootMissing {
            root: c.root.clone(),
        });
    }
    let service_dir = c.service_dir();
    let stream_dir = c.stream_dir();
    let created_service = make_dir(fs, &service_dir, || {
        format!(
            "the kernel refused the service name {:?}: it must parse as %u-%llx.%u",
            c.service.as_str()
        )
    })?;
    let created_stream = match make_dir(fs, &stream_dir, || {
        "stream names are at most 8 characters (an XDomain property key)".to_owned()
    }) {
        Ok(created) => created,
        Err(e) => {
            if created_service {
                let _ = fs.rmdir(&service_dir);
            }
            return Err(e);
        }
    };
    match configure(fs, c, &stream_dir) {
        Ok(mut s) => {
            s.created_service = created_service;
            s.created_stream = created_stream;
            Ok(s)
        }
        Err(e) => {
            if created_stream {
                let _ = fs.rmdir(&stream_dir);
            }
            if created_service {
                let _ = fs.rmdir(&service_dir);
            }
            Err(e)
        }
    }
}

/// Creates `dir` unless it exists; true when it was created.
fn make_dir(
    fs: &dyn ConfigfsFs,
    dir: &Path,
    einval_hint: impl Fn() -> String,
) -> Result<bool, ConfigfsError> {
    if fs.exists(dir) {
        return Ok(false);
    }
    match fs.mkdir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(errno::EEXIST) => Ok(false),
        Err(e) => {
            let hint = match e.raw_os_error() {
                Some(errno::EINVAL | errno::ENAMETOOLONG) => einval_hint(),
                _ => permission_hint(&e).unwrap_or_default(),
            };
            Err(ConfigfsError::io("creating", dir, e, hint))
        }
    }
}

fn read_num(fs: &dyn ConfigfsFs, path: &Path) -> Result<i64, ConfigfsError> {
    let s = fs.read(path).map_err(|e| {
        let hint = permission_hint(&e).unwrap_or_default();
        ConfigfsError::io("reading", path, e, hint)
    })?;
    s.trim().parse().map_err(|_| ConfigfsError::BadAttribute {
        path: path.to_path_buf(),
        content: s.chars().take(64).collect(),
    })
}

fn read_u32(fs: &dyn ConfigfsFs, path: &Path) -> Result<u32, ConfigfsError> {
    let v = read_num(fs, path)?;
    u32::try_from(v).map_err(|_| ConfigfsError::BadAttribute {
        path: path.to_path_buf(),
        content: v.to_string(),
    })
}

/// Writes `value` to `attr` unless it already holds `value`.
fn set_attr(
    fs: &dyn ConfigfsFs,
    dir: &Path,
    attr: &str,
    value: &str,
    dev: &Path,
) -> Result<(), ConfigfsError> {
    let path = dir.join(attr);
    if let Ok(cur) = fs.read(&path) {
        if cur.trim() == value {
            return Ok(());
        }
    }
    fs.write(&path, value).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(errno::EBUSY) if attr.ends_with("hopid") => format!(
                "HopID {value} is taken by another path on this link (thunderbolt_net uses 8 \
                 and 9; another stream may hold it), or {} is open",
                dev.display()
            ),
            Some(errno::EBUSY) => format!(
                "{} is open (another tbbridge or reader?): the driver refuses attribute \
                 changes while the device is open",
                dev.display()
            ),
            Some(errno::EINVAL) => "the driver refused the value (ring_size 32..=4096, \
                 throttling 0..=16776960 ns, HopIDs from 8 to the lane adapter's maximum)"
                .to_owned(),
            Some(errno::ENOSPC) => "no free HopID left on this link".to_owned(),
            _ => permission_hint(&e).unwrap_or_default(),
        };
        ConfigfsError::io(format!("writing {value} to"), &path, e, hint)
    })
}

fn configure(
    fs: &dyn ConfigfsFs,
    c: &ConfigfsStream,
    dir: &Path,
) -> Result<CreatedStream, ConfigfsError> {
    let index = read_u32(fs, &dir.join("index"))?;
    let dev_path = c.dev_dir.join(format!("tbstream{index}"));
    set_attr(fs, dir, "ring_size", &c.ring_size.to_string(), &dev_path)?;
    set_attr(fs, dir, "throttling", &c.throttling.to_string(), &dev_path)?;
    let mut hopids = [0u16; 2];
    for (slot, (attr, want)) in [("in_hopid", c.in_hopid), ("out_hopid", c.out_hopid)]
        .into_iter()
        .enumerate()
    {
        let path = dir.join(attr);
        // Automatic: keep a HopID the stream already holds (a restart);
        // pinned: write unless it is already that value.
        let current = read_num(fs, &path).unwrap_or(0);
        if want != HopId::Auto || current <= 0 {
            set_attr(fs, dir, attr, &want.attr_value(), &dev_path)?;
        }
        let got = read_num(fs, &path)?;
        let got = match u16::try_from(got) {
            Ok(0) | Err(_) => return Err(ConfigfsError::HopIdUnset { path }),
            Ok(v) => v,
        };
        if want == HopId::Auto && NET_HOPIDS.contains(&got) && !c.allow_net_hopids {
            // Give the HopID back before the stream directory goes.
            let _ = fs.write(&path, "0");
            return Err(ConfigfsError::NetHopId { attr, hopid: got });
        }
        hopids[slot] = got;
    }
    let ring_size = read_u32(fs, &dir.join("ring_size"))?;
    let throttling = read_u32(fs, &dir.join("throttling"))?;
    wait_for(fs, &dev_path, c.device_wait)?;
    Ok(CreatedStream {
        index,
        dev_path,
        in_hopid: hopids[0],
        out_hopid: hopids[1],
        ring_size,
        throttling,
        stream_dir: dir.to_path_buf(),
        created_service: false,
        created_stream: false,
        link: read_link_info(fs, &c.sysfs_root, &c.service),
    })
}

/// Waits up to `limit` for `path` to exist, looking every [`DEVICE_POLL`].
fn wait_for(fs: &dyn ConfigfsFs, path: &Path, limit: Duration) -> Result<(), ConfigfsError> {
    let start = Instant::now();
    loop {
        if fs.exists(path) {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= limit {
            return Err(ConfigfsError::DeviceTimeout {
                path: path.to_path_buf(),
                waited,
            });
        }
        std::thread::sleep(DEVICE_POLL.min(limit - waited));
    }
}

/// [`teardown`] on any [`ConfigfsFs`]: removes the stream directory (the
/// driver then unregisters the device: readers get EOF, writers ENXIO) and
/// the service directory when setup created it and no other stream uses
/// it. A stream directory that is already gone is not an error.
pub fn teardown_with(
    fs: &dyn ConfigfsFs,
    c: &ConfigfsStream,
    created: &CreatedStream,
) -> Result<(), ConfigfsError> {
    remove_stream_with(fs, c)?;
    if created.created_service {
        // Another stream may still live there: then it stays.
        let _ = fs.rmdir(&c.service_dir());
    }
    Ok(())
}

/// Removes the stream directory of `c` without a [`CreatedStream`] (e.g.
/// cleaning up after a crashed `up`). Already gone is fine.
pub fn remove_stream_with(fs: &dyn ConfigfsFs, c: &ConfigfsStream) -> Result<(), ConfigfsError> {
    let dir = c.stream_dir();
    match fs.rmdir(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(errno::ENOENT) => Ok(()),
        Err(e) => {
            let hint = permission_hint(&e).unwrap_or_default();
            Err(ConfigfsError::io("removing", &dir, e, hint))
        }
    }
}

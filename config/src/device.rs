//! `[device]`: which USB4STREAM device to run on, either an existing one
//! (`path`) or a configfs stream that `tbbridge up` creates
//! (`[device.configfs]`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tbbridge_transport::DeviceSpec;

use crate::reader::{Field, Result};

/// Default HopID of both paths: 16.
///
/// The kernel hands out HopIDs from 8 up, and `thunderbolt_net` needs 8
/// (and 9) on the same link: a stream left on automatic (`-1`) took 8 and
/// 9 in the field and `thunderbolt_net` then failed with "failed to
/// allocate Rx HopID" (spec §6). 16 is clear of both and, being the same
/// on both hosts, needs no negotiation. Lane adapters support HopIDs up to
/// at least 19 (spec §1), so 16 is valid everywhere.
pub const DEFAULT_HOPID: u16 = 16;
/// Lowest usable HopID (0..=7 are reserved by the USB4 routers).
pub const MIN_HOPID: u16 = 8;
/// Highest HopID the config accepts: the 11-bit HopID field of USB4. The
/// real maximum depends on the lane adapter (e.g. 19); the kernel refuses
/// values above it when they are written.
pub const MAX_HOPID: u16 = 2047;
/// HopIDs that `thunderbolt_net` uses: refused for automatic allocation.
pub const NET_HOPIDS: [u16; 2] = [8, 9];
/// Allowed `ring_size` (frames), as the driver checks it (spec §1).
pub const RING_SIZE_RANGE: std::ops::RangeInclusive<u16> = 32..=4096;
/// Default `ring_size`: 2048 frames of 4 KiB = 8 MiB in flight per ring.
///
/// The driver's default (256 frames, 1 MiB) is drained in 0.2 ms at
/// 5 GB/s, so any scheduling hiccup of the pump idles the link; the
/// measured 5.0 GB/s needed multi-MiB writes (spec §4). 8 MiB is exactly
/// what the transport's pump writes at most per call (`max_transmit`), so
/// one write can fill the ring, and 1.6 ms of buffering absorbs a late
/// wake-up. 4096 would double the pinned DMA memory per stream for no
/// further gain once writes are this large.
pub const DEFAULT_RING_SIZE: u16 = 2048;
/// Highest `throttling` in ns, as the driver checks it (spec §1).
pub const MAX_THROTTLING_NS: u32 = 16_776_960;
/// Default interrupt `throttling`: 4096 ns, half the driver's 8192.
///
/// Throttling bounds how long a completed frame waits for its interrupt.
/// For a network bridge that delay sits in every ping and every TCP ACK:
/// at 8192 ns it can add 16 µs to a round trip measured at 22 µs (spec
/// §4). 4096 ns halves that, while still capping the rate at 244 000
/// interrupts/s per ring: at 5 GB/s (1.2 M frames/s) every interrupt still
/// completes five or more frames, so reads stay large and the pump's
/// multi-MiB batches keep their throughput. Lower values trade CPU for
/// latency; raise it (8192 or more) for pure bulk links.
pub const DEFAULT_THROTTLING_NS: u32 = 4096;
/// Default configfs root of the `thunderbolt_stream` driver (spec §1).
pub const DEFAULT_CONFIGFS_ROOT: &str = "/sys/kernel/config/thunderbolt/stream";
/// Default directory of the `tbstream<index>` device nodes.
pub const DEFAULT_DEV_DIR: &str = "/dev";
/// Default sysfs directory of Thunderbolt/USB4 devices (link speed and lanes).
pub const DEFAULT_SYSFS_ROOT: &str = "/sys/bus/thunderbolt/devices";
/// Default wait for `/dev/tbstream<index>` after the stream is created:
/// 5 s. The driver registers the device at `mkdir` and udev normally
/// creates the node within milliseconds; 5 s covers a busy udev at boot
/// without hiding a real failure for long.
pub const DEFAULT_DEVICE_WAIT: Duration = Duration::from_secs(5);
/// Longest stream name: it becomes an XDomain property key (spec §1).
pub const MAX_STREAM_NAME: usize = 8;

/// The device a bridge runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceConfig {
    /// An existing device: `/dev/tbstreamN` or an emulated cable end.
    Path(DeviceSpec),
    /// A configfs stream to create on `up` and remove on `down`.
    Configfs(ConfigfsStream),
}

/// A configfs stream (`[device.configfs]`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigfsStream {
    /// XDomain service directory, `<domain>-<route hex>.<index>`.
    pub service: ServiceName,
    /// Stream directory name; must be the same on both hosts.
    pub stream: StreamName,
    /// HopID of the receive path.
    pub in_hopid: HopId,
    /// HopID of the transmit path.
    pub out_hopid: HopId,
    /// DMA ring length in 4 KiB frames ([`DEFAULT_RING_SIZE`]).
    pub ring_size: u16,
    /// Interrupt throttling in ns ([`DEFAULT_THROTTLING_NS`]).
    pub throttling: u32,
    /// Let automatic allocation (`-1`) end on HopID 8 or 9, which
    /// `thunderbolt_net` needs. Default false: setup fails instead.
    pub allow_net_hopids: bool,
    /// The configfs root ([`DEFAULT_CONFIGFS_ROOT`]).
    pub root: PathBuf,
    /// Where device nodes appear ([`DEFAULT_DEV_DIR`]).
    pub dev_dir: PathBuf,
    /// sysfs devices directory for link info ([`DEFAULT_SYSFS_ROOT`]).
    pub sysfs_root: PathBuf,
    /// How long setup waits for the device node ([`DEFAULT_DEVICE_WAIT`]).
    pub device_wait: Duration,
}

impl ConfigfsStream {
    /// A stream with every default: HopIDs 16/16, ring 2048, throttling
    /// 4096 ns, the standard roots.
    pub fn new(service: ServiceName, stream: StreamName) -> Self {
        Self {
            service,
            stream,
            in_hopid: HopId::Fixed(DEFAULT_HOPID),
            out_hopid: HopId::Fixed(DEFAULT_HOPID),
            ring_size: DEFAULT_RING_SIZE,
            throttling: DEFAULT_THROTTLING_NS,
            allow_net_hopids: false,
            root: PathBuf::from(DEFAULT_CONFIGFS_ROOT),
            dev_dir: PathBuf::from(DEFAULT_DEV_DIR),
            sysfs_root: PathBuf::from(DEFAULT_SYSFS_ROOT),
            device_wait: DEFAULT_DEVICE_WAIT,
        }
    }

    /// `<root>/<service>`.
    pub fn service_dir(&self) -> PathBuf {
        self.root.join(self.service.as_str())
    }

    /// `<root>/<service>/<stream>`.
    pub fn stream_dir(&self) -> PathBuf {
        self.service_dir().join(self.stream.as_str())
    }
}

impl fmt::Display for ConfigfsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (in_hopid {}, out_hopid {}, ring_size {}, throttling {} ns)",
            self.service,
            self.stream,
            self.in_hopid,
            self.out_hopid,
            self.ring_size,
            self.throttling
        )
    }
}

/// A HopID setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HopId {
    /// `-1`: the kernel picks the lowest free HopID from 8 up. Only when
    /// asked: it takes `thunderbolt_net`'s 8 and 9 when they are free.
    Auto,
    /// A pinned HopID in `8..=2047`.
    Fixed(u16),
}

impl HopId {
    /// The value written to `in_hopid`/`out_hopid`: `-1` or the number.
    pub fn attr_value(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for HopId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HopId::Auto => f.write_str("-1"),
            HopId::Fixed(v) => write!(f, "{v}"),
        }
    }
}

/// An XDomain service name, `<domain>-<route hex>.<index>` (`%u-%llx.%u`,
/// e.g. `0-1.0`): the configfs directory of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceName {
    text: String,
    /// Domain number.
    pub domain: u32,
    /// Route string of the XDomain (hex in the name).
    pub route: u64,
    /// Service index.
    pub index: u32,
}

/// Why a service name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an XDomain service name (expected DOMAIN-ROUTE.INDEX as in %u-%llx.%u, \
     e.g. \"0-1.0\"; `tblist -A` shows it)"
)]
pub struct ServiceNameError(pub String);

impl ServiceName {
    /// The name as written (the directory name).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// sysfs name of the XDomain device, `<domain>-<route hex>`.
    pub fn xdomain_device(&self) -> String {
        format!("{}-{:x}", self.domain, self.route)
    }
}

fn dec_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for ServiceName {
    type Err = ServiceNameError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || ServiceNameError(s.to_owned());
        let (domain, rest) = s.split_once('-').ok_or_else(bad)?;
        let (route, index) = rest.split_once('.').ok_or_else(bad)?;
        let domain = dec_u32(domain).ok_or_else(bad)?;
        let index = dec_u32(index).ok_or_else(bad)?;
        if route.is_empty() || route.len() > 16 || !route.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let route = u64::from_str_radix(route, 16).map_err(|_| bad())?;
        Ok(ServiceName {
            text: s.to_owned(),
            domain,
            route,
            index,
        })
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A stream name: 1 to 8 characters from `A-Z a-z 0-9 _ - .`, not
/// starting with `.` (it is both a directory name and an XDomain property
/// key of at most 8 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamName(String);

/// Why a stream name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamNameError {
    /// Longer than 8 characters (the kernel says ENAMETOOLONG).
    #[error("stream name {0:?} is {1} characters long (allowed at most 8: it becomes an XDomain property key)")]
    TooLong(String, usize),
    /// Empty or with other characters.
    #[error("stream name {0:?} is invalid (allowed: 1 to 8 characters from A-Z a-z 0-9 _ - ., not starting with `.`)")]
    Invalid(String),
}

impl StreamName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamName {
    type Err = StreamNameError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let n = s.chars().count();
        if n > MAX_STREAM_NAME {
            return Err(StreamNameError::TooLong(s.to_owned(), n));
        }
        let ok = !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(StreamName(s.to_owned()))
        } else {
            Err(StreamNameError::Invalid(s.to_owned()))
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keys of `[device]`.
const DEVICE_KEYS: &[&str] = &["path", "configfs"];
/// Keys of `[device.configfs]`.
const CONFIGFS_KEYS: &[&str] = &[
    "service",
    "stream",
    "in_hopid",
    "out_hopid",
    "ring_size",
    "throttling",
    "allow_net_hopids",
    "root",
    "dev_dir",
    "sysfs_root",
    "device_wait_ms",
];

/// Parses `[device]`.
pub(crate) fn parse_device(f: &Field<'_>) -> Result<DeviceConfig> {
    let t = f.table(DEVICE_KEYS)?;
    match (t.get("path"), t.get("configfs")) {
        (Some(_), Some(c)) => {
            Err(c.err("`path` and `[device.configfs]` are both set (allowed: exactly one of them)"))
        }
        (Some(p), None) => Ok(DeviceConfig::Path(p.parse::<DeviceSpec>()?)),
        (None, Some(c)) => Ok(DeviceConfig::Configfs(parse_configfs(&c)?)),
        (None, None) => Err(t.error(
            "path",
            "missing: set `path` (\"/dev/tbstream0\" or \"emu:NAME/a\") or a \
             `[device.configfs]` table",
        )),
    }
}

fn parse_hopid(f: &Field<'_>) -> Result<HopId> {
    let allowed = format!("allowed -1 or \"auto\" for automatic, or {MIN_HOPID}..={MAX_HOPID}");
    if let Ok(s) = f.str() {
        return if s == "auto" {
            Ok(HopId::Auto)
        } else {
            Err(f.err(format!("{s:?} is not a HopID ({allowed})")))
        };
    }
    match f.int()? {
        -1 => Ok(HopId::Auto),
        0 => Err(f.err(format!("0 would release the HopID ({allowed})"))),
        v => match u16::try_from(v) {
            Ok(h) if (MIN_HOPID..=MAX_HOPID).contains(&h) => Ok(HopId::Fixed(h)),
            _ => Err(f.err(format!("{v} is out of range ({allowed})"))),
        },
    }
}

fn parse_abs_path(f: &Field<'_>) -> Result<PathBuf> {
    let s = f.str()?;
    if s.starts_with('/') {
        Ok(PathBuf::from(s))
    } else {
        Err(f.err(format!("{s:?} is not an absolute path")))
    }
}

fn parse_configfs(f: &Field<'_>) -> Result<ConfigfsStream> {
    let t = f.table(CONFIGFS_KEYS)?;
    let service: ServiceName = t
        .required("service", "the XDomain service, e.g. \"0-1.0\"")?
        .parse()?;
    let stream: StreamName = t
        .required(
            "stream",
            "a name of at most 8 characters, the same on both hosts",
        )?
        .parse()?;
    let mut c = ConfigfsStream::new(service, stream);
    if let Some(v) = t.opt("in_hopid", parse_hopid)? {
        c.in_hopid = v;
    }
    if let Some(v) = t.opt("out_hopid", parse_hopid)? {
        c.out_hopid = v;
    }
    let (lo, hi) = (*RING_SIZE_RANGE.start(), *RING_SIZE_RANGE.end());
    if let Some(v) = t.opt("ring_size", |f| f.int_in(i64::from(lo)..=i64::from(hi)))? {
        c.ring_size = v;
    }
    if let Some(v) = t.opt("throttling", |f| f.int_in(0..=i64::from(MAX_THROTTLING_NS)))? {
        c.throttling = v;
    }
    if let Some(v) = t.opt("allow_net_hopids", Field::bool)? {
        c.allow_net_hopids = v;
    }
    if let Some(v) = t.opt("root", parse_abs_path)? {
        c.root = v;
    }
    if let Some(v) = t.opt("dev_dir", parse_abs_path)? {
        c.dev_dir = v;
    }
    if let Some(v) = t.opt("sysfs_root", parse_abs_path)? {
        c.sysfs_root = v;
    }
    if let Some(v) = t.opt("device_wait_ms", |f| f.int_in::<u64>(0..=600_000))? {
        c.device_wait = Duration::from_millis(v);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        let s: ServiceName = "0-1.0".parse().expect("valid");
        assert_eq!((s.domain, s.route, s.index), (0, 1, 0));
        assert_eq!(s.xdomain_device(), "0-1");
        let s: ServiceName = "1-a0301.2".parse().expect("valid");
        assert_eq!((s.domain, s.route, s.index), (1, 0xa0301, 2));
        assert_eq!(s.xdomain_device(), "1-a0301");
        assert_eq!(s.to_string(), "1-a0301.2");
        let s: ServiceName = "4294967295-ffffffffffffffff.4294967295"
            .parse()
            .expect("max");
        assert_eq!(s.route, u64::MAX);
        for bad in [
            "",
            "0",
            "0-1",
            "0-1.",
            "-1.0",
            "0-.0",
            "x-1.0",
            "0-g.0",
            "0-1.0.0",
            "0-1.x",
            "4294967296-1.0",
            "0-10000000000000000.0",
            "0 -1.0",
            "+0-1.0",
        ] {
            assert!(bad.parse::<ServiceName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stream_names() {
        for ok in ["tbb0", "a", "12345678", "a.b-c_d"] {
            assert_eq!(ok.parse::<StreamName>().expect("valid").as_str(), ok);
        }
        assert!(matches!(
            "123456789".parse::<StreamName>(),
            Err(StreamNameError::TooLong(_, 9))
        ));
        for bad in ["", ".", "..", ".x", "a/b", "a b", "ä"] {
            assert!(
                matches!(bad.parse::<StreamName>(), Err(StreamNameError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn defaults_are_consistent() {
        assert!(RING_SIZE_RANGE.contains(&DEFAULT_RING_SIZE));
        const { assert!(DEFAULT_THROTTLING_NS <= MAX_THROTTLING_NS) };
        assert!(!NET_HOPIDS.contains(&DEFAULT_HOPID));
        assert!((MIN_HOPID..=MAX_HOPID).contains(&DEFAULT_HOPID));
        // The ring holds what the pump writes at most in one call.
        let ring_bytes = usize::from(DEFAULT_RING_SIZE) * 4096;
        assert_eq!(
            ring_bytes,
            tbbridge_transport::SessionConfig::default().max_transmit
        );
        let c = ConfigfsStream::new(
            "0-1.0".parse().expect("valid"),
            "tbb0".parse().expect("valid"),
        );
        assert_eq!(
            c.stream_dir(),
            PathBuf::from("/sys/kernel/config/thunderbolt/stream/0-1.0/tbb0")
        );
        assert_eq!(HopId::Auto.attr_value(), "-1");
        assert_eq!(HopId::Fixed(16).attr_value(), "16");
        assert!(c.to_string().starts_with("0-1.0/tbb0 (in_hopid 16"));
    }
}

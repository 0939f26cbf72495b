//! Naming a device: `/dev/tbstreamN` or `emu:NAME/a|b`.
//!
//! Pure parsing and formatting, compiled without the `io` feature (no
//! filesystem access, no syscalls): whether the device exists is only found
//! out when it is opened.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Prefix of an emulated-cable device spec: `emu:NAME/a`.
pub const EMU_PREFIX: &str = "emu:";
/// Documented prefix of a real device node: `/dev/tbstream<index>`.
pub const TBSTREAM_PREFIX: &str = "/dev/tbstream";
/// Longest emulated cable name. Long enough for any sensible name, short
/// enough that `ROOT/NAME/ctl` stays within a Unix socket path (108 bytes)
/// under the default root.
pub const MAX_CABLE_NAME: usize = 64;

/// One of the two ends of an emulated cable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CableEnd {
    /// End `a`.
    A,
    /// End `b`.
    B,
}

impl CableEnd {
    /// The other end of the cable.
    pub fn peer(self) -> CableEnd {
        match self {
            CableEnd::A => CableEnd::B,
            CableEnd::B => CableEnd::A,
        }
    }

    /// `"a"` or `"b"`: the form used in specs and socket names.
    pub fn as_str(self) -> &'static str {
        match self {
            CableEnd::A => "a",
            CableEnd::B => "b",
        }
    }

    /// 0 for A, 1 for B (for indexing per-end tables).
    pub fn index(self) -> usize {
        match self {
            CableEnd::A => 0,
            CableEnd::B => 1,
        }
    }
}

impl fmt::Display for CableEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CableEnd {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" | "A" => Ok(CableEnd::A),
            "b" | "B" => Ok(CableEnd::B),
            other => Err(SpecError::BadEnd(other.to_owned())),
        }
    }
}

/// Which device to open.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// A real USB4STREAM character device, normally `/dev/tbstream<index>`.
    TbStream(PathBuf),
    /// One end of an emulated cable served by `tbbridge cable run NAME`.
    Emu {
        /// Cable name (`[A-Za-z0-9_.-]{1,64}`).
        cable: String,
        /// Which end of it.
        end: CableEnd,
    },
}

/// Why a device spec did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Empty string.
    #[error("empty device spec: expected /dev/tbstreamN or emu:NAME/a|b")]
    Empty,
    /// `emu:` without `/a` or `/b`.
    #[error("emulated cable spec {0:?} has no end: expected emu:NAME/a or emu:NAME/b")]
    MissingEnd(String),
    /// The end was neither `a` nor `b`.
    #[error("bad cable end {0:?}: expected `a` or `b` (as in emu:NAME/a)")]
    BadEnd(String),
    /// The cable name is empty, too long or has characters outside the set.
    #[error(
        "bad cable name {0:?}: expected 1 to 64 characters from A-Z a-z 0-9 _ . - \
         (and not `.` or `..`)"
    )]
    BadName(String),
    /// Neither an absolute path nor `emu:`.
    #[error(
        "bad device spec {0:?}: expected a device path such as /dev/tbstream0, or emu:NAME/a|b"
    )]
    Unrecognized(String),
}

/// Checks an emulated cable name: `[A-Za-z0-9_.-]{1,64}`, not `.` or `..`
/// (it becomes a directory name under the cable root).
pub fn validate_cable_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CABLE_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadName(name.to_owned()))
    }
}

impl DeviceSpec {
    /// True for `/dev/tbstream<digits>`, the documented form of a real
    /// device (other paths are accepted too, e.g. a udev symlink).
    pub fn is_canonical_tbstream(&self) -> bool {
        match self {
            DeviceSpec::TbStream(p) => p
                .to_str()
                .and_then(|s| s.strip_prefix(TBSTREAM_PREFIX))
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
            DeviceSpec::Emu { .. } => false,
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpecError::Empty);
        }
        if let Some(rest) = s.strip_prefix(EMU_PREFIX) {
            let (name, end) = rest
                .rsplit_once('/')
                .ok_or_else(|| SpecError::MissingEnd(s.to_owned()))?;
            validate_cable_name(name)?;
            let end = match end {
                "a" => CableEnd::A,
                "b" => CableEnd::B,
                other => return Err(SpecError::BadEnd(other.to_owned())),
            };
            return Ok(DeviceSpec::Emu {
                cable: name.to_owned(),
                end,
            });
        }
        // Any path is allowed (a udev symlink, a test node); relative paths
        // are accepted when they are explicit (`./x`), so that a typo such as
        // `emu-x/a` is not silently taken for a file name.
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            return Ok(DeviceSpec::TbStream(PathBuf::from(s)));
        }
        Err(SpecError::Unrecognized(s.to_owned()))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::TbStream(p) => write!(f, "{}", p.display()),
            DeviceSpec::Emu { cable, end } => write!(f, "{EMU_PREFIX}{cable}/{end}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DeviceSpec, SpecError> {
        s.parse()
    }

    #[test]
    fn parses_tbstream() {
        let d = parse("/dev/tbstream0").expect("valid");
        assert_eq!(d, DeviceSpec::TbStream(PathBuf::from("/dev/tbstream0")));
        assert!(d.is_canonical_tbstream());
        assert_eq!(d.to_string(), "/dev/tbstream0");
        let d = parse("/dev/tbstream12").expect("valid");
        assert!(d.is_canonical_tbstream());
    }

    #[test]
    fn other_paths_allowed_but_not_canonical() {
        let d = parse("/dev/serial/by-id/x").expect("valid");
        assert!(!d.is_canonical_tbstream());
        assert!(!parse("/dev/tbstream")
            .expect("valid")
            .is_canonical_tbstream());
        assert!(!parse("/dev/tbstream1x")
            .expect("valid")
            .is_canonical_tbstream());
        assert!(parse("./node").is_ok());
    }

    #[test]
    fn parses_emu() {
        let d = parse("emu:lab-1.x_y/a").expect("valid");
        assert_eq!(
            d,
            DeviceSpec::Emu {
                cable: "lab-1.x_y".into(),
                end: CableEnd::A
            }
        );
        assert_eq!(d.to_string(), "emu:lab-1.x_y/a");
        let d = parse("emu:c/b").expect("valid");
        assert_eq!(d.to_string(), "emu:c/b");
    }

    #[test]
    fn roundtrip() {
        for s in ["emu:x/a", "emu:X.9/b", "/dev/tbstream3", "/tmp/dev"] {
            assert_eq!(parse(s).expect("valid").to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_emu() {
        assert_eq!(parse("emu:x"), Err(SpecError::MissingEnd("emu:x".into())));
        assert_eq!(parse("emu:x/c"), Err(SpecError::BadEnd("c".into())));
        assert_eq!(parse("emu:x/"), Err(SpecError::BadEnd("".into())));
        assert_eq!(parse("emu:/a"), Err(SpecError::BadName("".into())));
        assert_eq!(parse("emu:a b/a"), Err(SpecError::BadName("a b".into())));
        assert_eq!(parse("emu:x/y/a"), Err(SpecError::BadName("x/y".into())));
        assert_eq!(parse("emu:../a"), Err(SpecError::BadName("..".into())));
        let long = "n".repeat(65);
        assert!(matches!(
            parse(&format!("emu:{long}/a")),
            Err(SpecError::BadName(_))
        ));
        assert!(parse(&format!("emu:{}/a", "n".repeat(64))).is_ok());
    }

    #[test]
    fn rejects_other() {
        assert_eq!(parse(""), Err(SpecError::Empty));
        assert!(matches!(
            parse("tbstream0"),
            Err(SpecError::Unrecognized(_))
        ));
        let msg = parse("foo").expect_err("invalid").to_string();
        assert!(
            msg.contains("/dev/tbstream0") && msg.contains("emu:NAME/a|b"),
            "{msg}"
        );
    }

    #[test]
    fn ends() {
        assert_eq!(CableEnd::A.peer(), CableEnd::B);
        assert_eq!(CableEnd::B.peer(), CableEnd::A);
        assert_eq!("b".parse::<CableEnd>(), Ok(CableEnd::B));
        assert!("c".parse::<CableEnd>().is_err());
        assert_eq!(CableEnd::B.index(), 1);
    }
}

//! Small network types of the config: interface names, address prefixes,
//! routes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Longest Linux interface name (`IFNAMSIZ` 16 minus the NUL).
pub const MAX_IFNAME: usize = 15;

/// A valid Linux interface name: 1 to 15 bytes, not `.` or `..`, without
/// `/`, `:` or whitespace (what the kernel's `dev_valid_name` accepts;
/// `:` is refused too because it names alias interfaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct IfName(String);

/// Why an interface name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a valid interface name (allowed: 1 to 15 bytes, not `.` or `..`, \
     without `/`, `:` or whitespace)"
)]
pub struct IfNameError(pub String);

impl IfName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = IfNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= MAX_IFNAME
            && s != "."
            && s != ".."
            && !s
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if ok {
            Ok(IfName(s.to_owned()))
        } else {
            Err(IfNameError(s.to_owned()))
        }
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for IfName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An address with a prefix length, `198.18.0.1/30` or `fd00:7b::1/64`.
/// Host bits are allowed (an interface address); see
/// [`network`](IpPrefix::network) and [`has_host_bits`](IpPrefix::has_host_bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub len: u8,
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No `/LEN`.
    #[error(
        "{0:?} has no prefix length (expected ADDRESS/LEN, e.g. 198.18.0.1/30 or fd00:7b::1/64)"
    )]
    MissingLen(String),
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    BadAddr(String),
    /// The length is not a number or too large for the family.
    #[error("bad prefix length {len:?} in {text:?} (allowed 0..={max})")]
    BadLen {
        /// The whole text.
        text: String,
        /// The length as written.
        len: String,
        /// 32 or 128.
        max: u8,
    },
}

impl IpPrefix {
    /// Checked constructor.
    pub fn new(addr: IpAddr, len: u8) -> Option<IpPrefix> {
        (len <= max_len(addr)).then_some(IpPrefix { addr, len })
    }

    /// The prefix with host bits cleared (`198.18.0.1/30` → `198.18.0.0/30`).
    pub fn network(&self) -> IpPrefix {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32u32.saturating_sub(u32::from(self.len)))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        IpPrefix {
            addr,
            len: self.len,
        }
    }

    /// True when the address has bits set beyond the prefix length.
    pub fn has_host_bits(&self) -> bool {
        self.network().addr != self.addr
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::MissingLen(s.to_owned()))?;
        let addr: IpAddr = a.parse().map_err(|_| PrefixError::BadAddr(s.to_owned()))?;
        let max = max_len(addr);
        let bad = || PrefixError::BadLen {
            text: s.to_owned(),
            len: l.to_owned(),
            max,
        };
        // Digits only: `u8::from_str` would also take `+24`.
        if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u8 = l.parse().map_err(|_| bad())?;
        IpPrefix::new(addr, len).ok_or_else(bad)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A route through the interface: `to` (a network, no host bits), and an
/// optional gateway `via` of the same family (without one the route is
/// on-link: the peer is the only host behind a point-to-point TUN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination network.
    pub to: IpPrefix,
    /// Gateway, of the same family as `to`.
    pub via: Option<IpAddr>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to)?;
        if let Some(v) = self.via {
            write!(f, " via {v}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Route {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames() {
        for ok in ["tb0", "a", "x".repeat(15).as_str(), "tb-lab_1.x", "é"] {
            assert!(ok.parse::<IfName>().is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "a:0", "a\tb", &"x".repeat(16)] {
            assert!(bad.parse::<IfName>().is_err(), "{bad:?}");
        }
        let n: IfName = "tb0".parse().expect("valid");
        assert_eq!(n.to_string(), "tb0");
        assert_eq!(&*n, "tb0");
    }

    #[test]
    fn prefixes() {
        let p: IpPrefix = "198.18.0.1/30".parse().expect("valid");
        assert_eq!(p.len, 30);
        assert!(p.has_host_bits());
        assert_eq!(p.network().to_string(), "198.18.0.0/30");
        assert_eq!(p.to_string(), "198.18.0.1/30");
        let p: IpPrefix = "fd00:7b::1/64".parse().expect("valid");
        assert_eq!(p.network().to_string(), "fd00:7b::/64");
        let p: IpPrefix = "0.0.0.0/0".parse().expect("valid");
        assert!(!p.has_host_bits());
        let p: IpPrefix = "::/0".parse().expect("valid");
        assert_eq!(p.network(), p);
        assert!(!"10.0.0.1/32"
            .parse::<IpPrefix>()
            .expect("valid")
            .has_host_bits());
        assert!(!"::1/128"
            .parse::<IpPrefix>()
            .expect("valid")
            .has_host_bits());
    }

    #[test]
    fn bad_prefixes() {
        assert!(matches!(
            "10.0.0.1".parse::<IpPrefix>(),
            Err(PrefixError::MissingLen(_))
        ));
        assert!(matches!(
            "fd00:tb::1/64".parse::<IpPrefix>(),
            Err(PrefixError::BadAddr(_))
        ));
        for bad in [
            "10.0.0.1/33",
            "::1/129",
            "10.0.0.1/",
            "10.0.0.1/+8",
            "1.2.3.4/1000",
        ] {
            assert!(
                matches!(bad.parse::<IpPrefix>(), Err(PrefixError::BadLen { .. })),
                "{bad}"
            );
        }
        let e = "10.0.0.1/33".parse::<IpPrefix>().expect_err("bad");
        assert!(e.to_string().contains("allowed 0..=32"), "{e}");
    }
}

//! `[host]`: who this host is to its peer. Both keys are optional: the
//! zero-configuration setup (`tbbridge up --auto --print-config`) writes
//! them so that a kept config reproduces what it chose.
//!
//! ```toml
//! [host]
//! id = "d4c5b6a7-0011-2233-4455-66778899aabb"   # default: the host router's unique_id
//! peer_id = "0b1c2d3e-..."                      # the identity the addresses were derived for
//! hosts_file = "/etc/hosts"                     # opt-in: the peer's name resolves while connected
//! ```
//!
//! The identity travels in the handshake (with the host name), so `status`
//! names the peer, and a peer other than `peer_id` is reported: the
//! addresses were derived for another host.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::reader::{Field, Result};

/// A host identity: 128 bits, written as a UUID (the form of sysfs's
/// `unique_id`, the XDomain UUID of a Thunderbolt host router).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub [u8; 16]);

/// Why a host identity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a UUID (32 hex digits, dashes allowed, as in sysfs's unique_id)")]
pub struct HostIdError(pub String);

impl FromStr for HostId {
    type Err = HostIdError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || HostIdError(s.chars().take(64).collect());
        let hex: Vec<u8> = s.trim().bytes().filter(|b| *b != b'-').collect();
        if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let digits = std::str::from_utf8(pair).map_err(|_| bad())?;
            id[i] = u8::from_str_radix(digits, 16).map_err(|_| bad())?;
        }
        Ok(HostId(id))
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The `[host]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `id`: this host's identity (default: derived at `up`).
    pub id: Option<HostId>,
    /// `peer_id`: the peer the addresses were derived for.
    pub peer_id: Option<HostId>,
    /// `hosts_file`: a hosts(5) file the daemon keeps a line for the peer
    /// in (its host name and address) from when it connects until `down`.
    pub hosts_file: Option<PathBuf>,
}

const KEYS: &[&str] = &["id", "peer_id", "hosts_file"];

pub(crate) fn parse_host(f: &Field<'_>) -> Result<HostConfig> {
    let t = f.table(KEYS)?;
    let id = |f: &Field<'_>| {
        let s = f.str()?;
        s.parse::<HostId>().map_err(|e| f.err(e.to_string()))
    };
    let h = HostConfig {
        id: t.opt("id", id)?,
        peer_id: t.opt("peer_id", id)?,
        hosts_file: t.opt("hosts_file", |f| {
            let s = f.str()?;
            let p = PathBuf::from(s);
            if !p.is_absolute() {
                return Err(f.err(format!("{s:?} is not an absolute path")));
            }
            Ok(p)
        })?,
    };
    if h.id.is_some() && h.id == h.peer_id {
        let msg = "the peer's identity is this host's own `id`";
        return Err(match t.get("peer_id") {
            Some(f) => f.err(msg),
            None => t.error("peer_id", msg),
        });
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip() {
        let s = "d4c5b6a7-0011-2233-4455-66778899aabb";
        let id: HostId = s.parse().expect("uuid");
        assert_eq!(id.0[0], 0xd4);
        assert_eq!(id.0[15], 0xbb);
        assert_eq!(id.to_string(), s);
        assert_eq!(
            "D4C5B6A700112233445566778899AABB\n"
                .parse::<HostId>()
                .expect("no dashes"),
            id
        );
        for bad in [
            "",
            "xyz",
            "d4c5b6a7-0011-2233-4455-66778899aab",
            "g4c5b6a7001122334455667788990aabb",
        ] {
            assert!(bad.parse::<HostId>().is_err(), "{bad:?}");
        }
    }
}

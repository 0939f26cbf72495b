//! The trained speed and lanes of the link to the peer, from sysfs
//! (`/sys/bus/thunderbolt/devices/<domain>-<route>/{rx,tx}_{speed,lanes}`).

use std::fmt;
use std::path::Path;

use super::ConfigfsFs;
use crate::ServiceName;

/// Rate a link should train to, per direction: 40 Gb/s, i.e. 2 lanes ×
/// 20 Gb/s for USB4 v1 and Thunderbolt 4 (USB4 v2 links train to 80 and
/// pass this check too). Less means a Gen2 cable, a single lane or a
/// degraded port.
pub const EXPECTED_LINK_GBPS: u32 = 40;

/// What sysfs says about the link; fields the kernel does not expose are
/// `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkInfo {
    /// The XDomain device the values come from (`0-1`).
    pub device: String,
    /// Receive speed per lane in Gb/s.
    pub rx_speed_gbps: Option<u32>,
    /// Receive lanes.
    pub rx_lanes: Option<u32>,
    /// Transmit speed per lane in Gb/s.
    pub tx_speed_gbps: Option<u32>,
    /// Transmit lanes.
    pub tx_lanes: Option<u32>,
}

impl LinkInfo {
    /// Total receive rate (speed × lanes) in Gb/s.
    pub fn rx_gbps(&self) -> Option<u32> {
        Some(self.rx_speed_gbps?.saturating_mul(self.rx_lanes?))
    }

    /// Total transmit rate (speed × lanes) in Gb/s.
    pub fn tx_gbps(&self) -> Option<u32> {
        Some(self.tx_speed_gbps?.saturating_mul(self.tx_lanes?))
    }

    /// True when both directions are known.
    pub fn is_known(&self) -> bool {
        self.rx_gbps().is_some() && self.tx_gbps().is_some()
    }

    /// A warning when a direction trained below [`EXPECTED_LINK_GBPS`];
    /// `None` when the link is fine or its rate is unknown.
    pub fn below_rate(&self) -> Option<String> {
        self.below(EXPECTED_LINK_GBPS)
    }

    /// A warning when a direction trained below `expected_gbps`.
    pub fn below(&self, expected_gbps: u32) -> Option<String> {
        let low = |v: Option<u32>| v.is_some_and(|g| g < expected_gbps);
        if low(self.rx_gbps()) || low(self.tx_gbps()) {
            Some(format!(
                "link {} trained below its rate: {self} (expected {expected_gbps} Gb/s per \
                 direction, 2 lanes × 20 Gb/s for USB4 v1/Thunderbolt 4): check the cable \
                 (a Thunderbolt 4/USB4 40 Gb/s cable) and the ports",
                self.device
            ))
        } else {
            None
        }
    }
}

fn side(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    speed: Option<u32>,
    lanes: Option<u32>,
) -> fmt::Result {
    match (speed, lanes) {
        (Some(s), Some(l)) => write!(f, "{name} {l} × {s} Gb/s = {} Gb/s", s.saturating_mul(l)),
        (Some(s), None) => write!(f, "{name} ? × {s} Gb/s"),
        (None, Some(l)) => write!(f, "{name} {l} × ? Gb/s"),
        (None, None) => write!(f, "{name} unknown"),
    }
}

impl fmt::Display for LinkInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        side(f, "rx", self.rx_speed_gbps, self.rx_lanes)?;
        f.write_str(", ")?;
        side(f, "tx", self.tx_speed_gbps, self.tx_lanes)
    }
}

/// Parses a sysfs speed, `"20.0 Gb/s\n"` (also `"20"`), into Gb/s.
pub fn parse_speed(s: &str) -> Option<u32> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let rest = s[end..].trim();
    if !(rest.is_empty() || rest == "Gb/s") {
        return None;
    }
    let v: f64 = s[..end].parse().ok()?;
    (v.is_finite() && (0.0..=100_000.0).contains(&v)).then(|| v.round() as u32)
}

fn parse_lanes(s: &str) -> Option<u32> {
    s.trim().parse().ok().filter(|&l| l <= 64)
}

/// Reads the link of `service` from `<sysfs_root>/<domain>-<route>/`.
/// Never fails: what cannot be read is `None`.
pub fn read_link_info(fs: &dyn ConfigfsFs, sysfs_root: &Path, service: &ServiceName) -> LinkInfo {
    let device = service.xdomain_device();
    let dir = sysfs_root.join(&device);
    let read = |name: &str| fs.read(&dir.join(name)).ok();
    LinkInfo {
        rx_speed_gbps: read("rx_speed").as_deref().and_then(parse_speed),
        rx_lanes: read("rx_lanes").as_deref().and_then(parse_lanes),
        tx_speed_gbps: read("tx_speed").as_deref().and_then(parse_speed),
        tx_lanes: read("tx_lanes").as_deref().and_then(parse_lanes),
        device,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(rs: u32, rl: u32, ts: u32, tl: u32) -> LinkInfo {
        LinkInfo {
            device: "0-1".into(),
            rx_speed_gbps: Some(rs),
            rx_lanes: Some(rl),
            tx_speed_gbps: Some(ts),
            tx_lanes: Some(tl),
        }
    }

    #[test]
    fn speeds() {
        assert_eq!(parse_speed("20.0 Gb/s\n"), Some(20));
        assert_eq!(parse_speed("40 Gb/s"), Some(40));
        assert_eq!(parse_speed("10"), Some(10));
        assert_eq!(parse_speed("fast"), None);
        assert_eq!(parse_speed("20.0 Mb/s"), None);
        assert_eq!(parse_speed(""), None);
        assert_eq!(parse_speed("1e400"), None);
        assert_eq!(parse_lanes("2\n"), Some(2));
        assert_eq!(parse_lanes("x"), None);
    }

    #[test]
    fn rates_and_warnings() {
        let ok = info(20, 2, 20, 2);
        assert_eq!(ok.rx_gbps(), Some(40));
        assert!(ok.is_known());
        assert_eq!(ok.below_rate(), None);
        assert_eq!(
            ok.to_string(),
            "rx 2 × 20 Gb/s = 40 Gb/s, tx 2 × 20 Gb/s = 40 Gb/s"
        );
        assert_eq!(info(40, 2, 40, 2).below_rate(), None);
        let one_lane = info(20, 1, 20, 2);
        let w = one_lane.below_rate().expect("warning");
        assert!(w.contains("rx 1 × 20 Gb/s = 20 Gb/s"), "{w}");
        assert!(w.contains("expected 40 Gb/s"), "{w}");
        assert!(info(10, 2, 10, 2).below_rate().is_some());
        assert!(info(20, 2, 20, 2).below(80).is_some());
        let unknown = LinkInfo::default();
        assert!(!unknown.is_known());
        assert_eq!(unknown.below_rate(), None);
        assert_eq!(unknown.to_string(), "rx unknown, tx unknown");
    }
}

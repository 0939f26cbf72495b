//! `[metrics]`: the Prometheus exporter. Present: `/metrics` is served;
//! absent: nothing listens.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::reader::{Field, Result};

/// The port of [`DEFAULT_METRICS_LISTEN`]. Not the exporter library's own
/// default (9000, on every address).
pub const DEFAULT_METRICS_PORT: u16 = 9477;

/// Where `/metrics` is served when `[metrics]` has no `listen`: loopback
/// only. A scrape from another host needs `listen` set on purpose.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_METRICS_PORT);

/// The `[metrics]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `listen`: the address of the HTTP listener (`IP:PORT`).
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN,
        }
    }
}

const KEYS: &[&str] = &["listen"];

pub(crate) fn parse_metrics(f: &Field<'_>) -> Result<MetricsConfig> {
    let t = f.table(KEYS)?;
    let listen = t
        .opt("listen", |f| {
            let s = f.str()?;
            s.parse::<SocketAddr>().map_err(|_| {
                f.err(format!(
                    "{s:?} is not an IP address and port, e.g. \"127.0.0.1:{DEFAULT_METRICS_PORT}\" \
                     or \"[::1]:{DEFAULT_METRICS_PORT}\""
                ))
            })
        })?
        .unwrap_or(DEFAULT_METRICS_LISTEN);
    if listen.port() == 0 {
        return Err(t.error(
            "listen",
            "port 0 is not a fixed port (Prometheus must know it)",
        ));
    }
    Ok(MetricsConfig { listen })
}

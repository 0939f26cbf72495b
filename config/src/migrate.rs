//! `[migrate]`: the VM live-migration transport.
//!
//! ```toml
//! [migrate]                           # on the source host
//! listen = "/run/tbbridge/migrate.sock"   # QEMU: migrate unix:/run/tbbridge/migrate.sock
//!
//! [migrate]                           # on the destination host
//! connect = "/run/qemu/incoming.sock"     # QEMU: -incoming unix:/run/qemu/incoming.sock
//! ```
//!
//! A host may have both (migrations either way). Every connection QEMU
//! makes (the main channel, multifd channels, the postcopy return path
//! rides on the same connections) is its own bulk-class stream channel;
//! the destination connects them to its QEMU in the order the source
//! accepted them, which QEMU before 8.0 needs (it takes the first accepted
//! connection as the main channel).

use std::path::PathBuf;
use std::time::Duration;

use crate::forward::MAX_UNIX_PATH;
use crate::reader::{Field, Result, Table};

/// How long the destination waits for its QEMU's socket to accept, and for
/// the channels before a connection's turn, unless configured.
pub const DEFAULT_MIGRATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections of one migration at once unless configured (QEMU's
/// `multifd-channels` is at most 255, plus the main channel).
pub const DEFAULT_MIGRATE_CHANNELS: usize = 64;

/// `[migrate]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateConfig {
    /// `listen`: the Unix socket the source QEMU migrates to.
    pub listen: Option<PathBuf>,
    /// `connect`: the destination QEMU's `-incoming unix:` socket.
    pub connect: Option<PathBuf>,
    /// `max_channels`: connections of one migration at once.
    pub max_channels: usize,
    /// `timeout_ms`: how long a connection waits for its turn and for the
    /// destination QEMU to accept.
    pub timeout: Duration,
}

fn socket_path(f: &Field<'_>) -> Result<PathBuf> {
    let s = f.str()?;
    let p = s.strip_prefix("unix:").unwrap_or(s);
    if !p.starts_with('/') || p.len() > MAX_UNIX_PATH {
        return Err(f.err(format!(
            "{s:?} is not a Unix socket path (an absolute path of at most {MAX_UNIX_PATH} bytes, \
             optionally written unix:/path as QEMU does)"
        )));
    }
    Ok(PathBuf::from(p))
}

pub(crate) fn parse_migrate(f: &Field<'_>) -> Result<MigrateConfig> {
    let t: Table<'_> = f.table(&["listen", "connect", "max_channels", "timeout_ms"])?;
    let listen = t.opt("listen", socket_path)?;
    let connect = t.opt("connect", socket_path)?;
    if listen.is_none() && connect.is_none() {
        return Err(t.error(
            "listen",
            "missing: [migrate] needs `listen` (the source QEMU migrates to it) and/or \
             `connect` (the destination QEMU's -incoming socket)",
        ));
    }
    if let (Some(l), Some(c)) = (&listen, &connect) {
        if l == c {
            return Err(t.error("connect", "`connect` must not be the `listen` socket"));
        }
    }
    Ok(MigrateConfig {
        listen,
        connect,
        max_channels: t
            .opt("max_channels", |f| f.int_in(1..=1024))?
            .unwrap_or(DEFAULT_MIGRATE_CHANNELS),
        timeout: t
            .opt("timeout_ms", |f| f.int_in::<u64>(1..=3_600_000))?
            .map_or(DEFAULT_MIGRATE_TIMEOUT, Duration::from_millis),
    })
}

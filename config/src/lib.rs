//! # tbbridge-config
//!
//! The configuration of one tbbridge instance (one cable), and the
//! configfs stream setup for real hardware.
//!
//! * [`load`]/[`parse`] read `/etc/tbbridge/NAME.toml` ([`path_for`]) into
//!   validated types ([`Config`]): every problem is reported as
//!   `FILE:LINE:COLUMN: KEY.PATH: what is wrong (what is allowed)`, and
//!   nothing panics on any input. The format, with every key and default,
//!   is in `config/README.md`.
//! * [`configfs`] creates `/sys/kernel/config/thunderbolt/stream/<service>/<stream>`,
//!   sets its HopIDs, ring and throttling, waits for `/dev/tbstream<index>`
//!   and removes it again; a fake configfs for tests is in
//!   [`configfs::fake`].
//! * [`auto`] is the zero-configuration setup: it finds the peer's XDomain
//!   service, derives the addresses both hosts agree on without talking,
//!   and writes the config a user would have written (which [`parse`]
//!   then validates like any other).

pub mod auto;
pub mod configfs;
mod device;
mod error;
mod forward;
mod host;
mod interface;
mod keyfile;
mod metrics;
mod migrate;
mod net;
mod reader;
mod reserved;
mod rpc;
mod session;
mod tree;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use device::{
    ConfigfsStream, DeviceConfig, HopId, ServiceName, ServiceNameError, StreamName,
    StreamNameError, DEFAULT_CONFIGFS_ROOT, DEFAULT_DEVICE_WAIT, DEFAULT_DEV_DIR, DEFAULT_HOPID,
    DEFAULT_RING_SIZE, DEFAULT_SYSFS_ROOT, DEFAULT_THROTTLING_NS, MAX_HOPID, MAX_STREAM_NAME,
    MAX_THROTTLING_NS, MIN_HOPID, NET_HOPIDS, RING_SIZE_RANGE,
};
pub use error::{line_col, ConfigError, Diagnostic};
pub use forward::{
    Endpoint, ForwardConfig, HostPort, PipeConfig, PipeSink, ServiceConfig, UnixAddr,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_UDP_IDLE,
};
pub use host::{HostConfig, HostId, HostIdError};
pub use interface::{
    InterfaceConfig, DEFAULT_MTU, DEFAULT_OFFLOAD, DEFAULT_QUEUES, MAX_QUEUES, MIN_MTU,
};
pub use keyfile::{KeyFile, MAX_KEY_FILE};
pub use metrics::{MetricsConfig, DEFAULT_METRICS_LISTEN, DEFAULT_METRICS_PORT};
pub use migrate::{MigrateConfig, DEFAULT_MIGRATE_CHANNELS, DEFAULT_MIGRATE_TIMEOUT};
pub use net::{IfName, IfNameError, IpPrefix, PrefixError, Route, MAX_IFNAME};
pub use rpc::{
    Group, RpcConfig, DEFAULT_RPC_CALLS, DEFAULT_RPC_CONNECTIONS, DEFAULT_RPC_MESSAGE,
    MAX_RPC_MESSAGE,
};
pub use session::{parse_size, SessionTunables};
pub use tbbridge_transport::DeviceSpec;

use error::Source;
use reader::Field;
use tree::Node;

/// Directory of config files unless `TBBRIDGE_CONFIG_DIR` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/tbbridge";
/// Environment variable that replaces [`DEFAULT_CONFIG_DIR`] (tests,
/// unprivileged runs).
pub const CONFIG_DIR_ENV: &str = "TBBRIDGE_CONFIG_DIR";
/// Largest config file read: 1 MiB. A config is a few hundred bytes; the
/// cap keeps `load("/dev/zero")` from eating memory.
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// A validated config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[device]` (required).
    pub device: DeviceConfig,
    /// `[interface]`: the TUN interface, if any.
    pub interface: Option<InterfaceConfig>,
    /// `[session]`: overrides of the transport tunables.
    pub session: SessionTunables,
    /// `[[forward]]`: listen here, carry connections to peer services.
    pub forwards: Vec<ForwardConfig>,
    /// `[[service]]`: what the peer's forwards may ask for.
    pub services: Vec<ServiceConfig>,
    /// `[[pipe]]`: where the peer's `tbbridge pipe` data goes.
    pub pipes: Vec<PipeConfig>,
    /// `[migrate]`: the VM live-migration transport, if any.
    pub migrate: Option<MigrateConfig>,
    /// `[[rpc]]`: request/response endpoints across the cable.
    pub rpcs: Vec<RpcConfig>,
    /// `[metrics]`: the Prometheus exporter, if wanted.
    pub metrics: Option<MetricsConfig>,
    /// `[host]`: this host's identity and the peer's expected one.
    pub host: HostConfig,
}

impl Config {
    /// Things that are valid but probably not what the operator wants
    /// (for `tbbridge check` and the log of `up`).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let DeviceConfig::Configfs(c) = &self.device {
            for (key, h) in [("in_hopid", c.in_hopid), ("out_hopid", c.out_hopid)] {
                if let HopId::Fixed(v) = h {
                    if NET_HOPIDS.contains(&v) {
                        w.push(format!(
                            "device.configfs.{key} = {v}: thunderbolt_net needs HopIDs 8 and 9 \
                             and will fail to come up on this link (use e.g. {DEFAULT_HOPID})"
                        ));
                    }
                }
            }
        }
        if let Some(i) = &self.interface {
            if i.mtu < 9000 {
                w.push(format!(
                    "interface.mtu = {}: small MTUs cost about 3x throughput on Thunderbolt \
                     links (default {DEFAULT_MTU})",
                    i.mtu
                ));
            }
        }
        if let Some(m) = &self.metrics {
            if !m.listen.ip().is_loopback() {
                w.push(format!(
                    "metrics.listen = \"{}\": /metrics is reachable from other hosts \
                     (it has no authentication; the default is {DEFAULT_METRICS_LISTEN})",
                    m.listen
                ));
            }
        }
        w
    }
}

/// `$TBBRIDGE_CONFIG_DIR/NAME.toml`, or `/etc/tbbridge/NAME.toml` when the
/// variable is unset or empty. `name` is not checked here (the caller
/// validates instance names).
pub fn path_for(name: &str) -> PathBuf {
    path_in(std::env::var_os(CONFIG_DIR_ENV).map(PathBuf::from), name)
}

fn path_in(dir: Option<PathBuf>, name: &str) -> PathBuf {
    let dir = dir
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
    dir.join(format!("{name}.toml"))
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let read_err = |cause| ConfigError::Read {
        path: path.to_path_buf(),
        cause,
    };
    // Only a regular file: opening a FIFO blocks until a writer comes (and
    // reading a device may never end), so look before opening. Opened
    // non-blocking and checked again on the descriptor, so a path swapped
    // in between cannot make the open hang either.
    let not_regular = |what: &str| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({what})"),
        ))
    };
    let kind = |ft: std::fs::FileType| {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else {
            "not a file"
        }
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(not_regular(kind(meta.file_type())));
    }
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(read_err)?
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(not_regular(kind(meta.file_type())));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_SIZE {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_SIZE} bytes"),
        )));
    }
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, path),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes());
            let src = Source {
                text: &text,
                origin: path,
            };
            Err(src.error(
                Some(&(valid..valid)),
                "",
                "invalid UTF-8 (TOML files are UTF-8)",
            ))
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "device",
    "interface",
    "session",
    "forward",
    "service",
    "pipe",
    "migrate",
    "rpc",
    "metrics",
    "host",
];

/// Validates config text; `origin` names the file in errors.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let src = Source { text, origin };
    let root = Node::parse(text).map_err(|e| src.toml_error(&e))?;
    let root = Field::root(src, &root);
    let t = root.table(TOP_KEYS)?;
    reserved::refuse_unbuilt(&t)?;
    let device = t.required(
        "device",
        "a [device] table with `path` or [device.configfs]",
    )?;
    Ok(Config {
        device: device::parse_device(&device)?,
        interface: t.opt("interface", interface::parse_interface)?,
        session: t
            .opt("session", session::parse_session)?
            .unwrap_or_default(),
        forwards: t
            .opt("forward", forward::parse_forwards)?
            .unwrap_or_default(),
        services: t
            .opt("service", forward::parse_services)?
            .unwrap_or_default(),
        pipes: t.opt("pipe", forward::parse_pipes)?.unwrap_or_default(),
        migrate: t.opt("migrate", migrate::parse_migrate)?,
        rpcs: t.opt("rpc", rpc::parse_rpcs)?.unwrap_or_default(),
        metrics: t.opt("metrics", metrics::parse_metrics)?,
        host: t.opt("host", host::parse_host)?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths() {
        assert_eq!(
            path_in(None, "tb0"),
            PathBuf::from("/etc/tbbridge/tb0.toml")
        );
        assert_eq!(
            path_in(Some(PathBuf::new()), "tb0"),
            PathBuf::from("/etc/tbbridge/tb0.toml")
        );
        assert_eq!(
            path_in(Some(PathBuf::from("/tmp/x")), "lab"),
            PathBuf::from("/tmp/x/lab.toml")
        );
    }
}

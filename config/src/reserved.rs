//! Sections reserved for front-ends that later issues add: `[metrics]`,
//! `[[forward]]`, `[[rpc]]`, `[migrate]`. They are parsed and validated
//! now, so that a config written for a later version fails loudly here
//! instead of being half-understood.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use tbbridge_transport::Class;

use crate::reader::{Field, Result};

/// Longest `sun_path` of a Unix socket, minus the NUL.
const MAX_UNIX_PATH: usize = 107;

/// `[metrics]`: a Prometheus-style endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address to listen on, e.g. `127.0.0.1:9477`.
    pub listen: SocketAddr,
}

/// `[migrate]`: the migration endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
}

/// Transport of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardProto {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// Unix stream sockets.
    Unix,
}

impl fmt::Display for ForwardProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardProto::Tcp => "tcp",
            ForwardProto::Udp => "udp",
            ForwardProto::Unix => "unix",
        })
    }
}

/// One end of a forward.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An IP address and port.
    Socket(SocketAddr),
    /// A host name and port (resolved where it is used).
    Host {
        /// DNS name.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Socket(a) => write!(f, "{a}"),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// `[[forward]]`: a port forward, listening on this host and connecting
/// from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Unique name.
    pub name: String,
    /// Protocol ([`ForwardProto::Tcp`] by default).
    pub proto: ForwardProto,
    /// Where to listen: an address (tcp, udp) or a path (unix).
    pub listen: Endpoint,
    /// Where the peer connects: `host:port` (tcp, udp) or a path (unix).
    pub connect: Endpoint,
}

/// `[[rpc]]`: a named RPC service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// Unique name.
    pub name: String,
    /// Scheduling class: `latency` (default: RPC is what it is for),
    /// `normal` or `bulk`.
    pub class: Class,
}

/// A name of a forward or RPC service: 1 to 32 characters from
/// `A-Z a-z 0-9 _ - .`.
fn parse_name(f: &Field<'_>) -> Result<String> {
    let s = f.str()?;
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(f.err(format!(
            "{s:?} is not a valid name (allowed: 1 to 32 characters from A-Z a-z 0-9 _ - .)"
        )))
    }
}

fn socket_addr(f: &Field<'_>) -> Result<SocketAddr> {
    let s = f.str()?;
    s.parse().map_err(|_| {
        f.err(format!(
            "{s:?} is not a socket address (expected IP:PORT, e.g. \"127.0.0.1:9477\" or \"[::1]:9477\")"
        ))
    })
}

fn unix_path(f: &Field<'_>) -> Result<Endpoint> {
    let s = f.str()?;
    if !s.starts_with('/') || s.len() > MAX_UNIX_PATH {
        return Err(f.err(format!(
            "{s:?} is not a Unix socket path (expected an absolute path of at most {MAX_UNIX_PATH} bytes)"
        )));
    }
    Ok(Endpoint::Unix(PathBuf::from(s)))
}

fn host_port(f: &Field<'_>) -> Result<Endpoint> {
    let s = f.str()?;
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Endpoint::Socket(a));
    }
    let bad = || {
        f.err(format!(
            "{s:?} is not HOST:PORT (e.g. \"db.internal:5432\", \"10.0.0.2:80\" or \"[fd00::2]:80\")"
        ))
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !host_ok {
        return Err(bad());
    }
    Ok(Endpoint::Host {
        host: host.to_owned(),
        port,
    })
}

/// Parses `[metrics]`.
pub(crate) fn parse_metrics(f: &Field<'_>) -> Result<MetricsConfig> {
    let t = f.table(&["listen"])?;
    let listen = socket_addr(&t.required("listen", "IP:PORT, e.g. \"127.0.0.1:9477\"")?)?;
    Ok(MetricsConfig { listen })
}

/// Parses `[migrate]`.
pub(crate) fn parse_migrate(f: &Field<'_>) -> Result<MigrateConfig> {
    let t = f.table(&["listen"])?;
    let listen = socket_addr(&t.required("listen", "IP:PORT")?)?;
    Ok(MigrateConfig { listen })
}

/// Checks that no two entries share a name; `names` are (field, name).
fn unique(names: &[(Field<'_>, String)], what: &str) -> Result<()> {
    for (i, (f, n)) in names.iter().enumerate() {
        if let Some((first, _)) = names[..i].iter().find(|(_, m)| m == n) {
            let line = first
                .span
                .as_ref()
                .map_or(1, |s| crate::error::line_col(first.src.text, s.start).0);
            return Err(f.err(format!(
                "duplicate {what} name {n:?} (first used on line {line})"
            )));
        }
    }
    Ok(())
}

/// Parses the `[[forward]]` array.
pub(crate) fn parse_forwards(f: &Field<'_>) -> Result<Vec<ForwardConfig>> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for item in f.array("tables ([[forward]])")? {
        let t = item.table(&["name", "listen", "connect", "proto"])?;
        let name_f = t.required("name", "a unique name")?;
        let name = parse_name(&name_f)?;
        let proto = match t.get("proto") {
            None => ForwardProto::Tcp,
            Some(p) => match p.str()? {
                "tcp" => ForwardProto::Tcp,
                "udp" => ForwardProto::Udp,
                "unix" => ForwardProto::Unix,
                other => {
                    return Err(p.err(format!(
                        "unknown protocol {other:?} (allowed: \"tcp\", \"udp\", \"unix\")"
                    )))
                }
            },
        };
        let listen_f = t.required("listen", "where to listen")?;
        let connect_f = t.required("connect", "where the peer connects")?;
        let (listen, connect) = match proto {
            ForwardProto::Unix => (unix_path(&listen_f)?, unix_path(&connect_f)?),
            _ => (
                Endpoint::Socket(socket_addr(&listen_f)?),
                host_port(&connect_f)?,
            ),
        };
        names.push((name_f, name.clone()));
        out.push(ForwardConfig {
            name,
            proto,
            listen,
            connect,
        });
    }
    unique(&names, "forward")?;
    Ok(out)
}

/// Parses the `[[rpc]]` array.
pub(crate) fn parse_rpcs(f: &Field<'_>) -> Result<Vec<RpcConfig>> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for item in f.array("tables ([[rpc]])")? {
        let t = item.table(&["name", "class"])?;
        let name_f = t.required("name", "a unique name")?;
        let name = parse_name(&name_f)?;
        let class = match t.get("class") {
            None => Class::Latency,
            Some(c) => match c.str()? {
                "latency" => Class::Latency,
                "normal" => Class::Normal,
                "bulk" => Class::Bulk,
                other => {
                    return Err(c.err(format!(
                        "unknown class {other:?} (allowed: \"latency\", \"normal\", \"bulk\")"
                    )))
                }
            },
        };
        names.push((name_f, name.clone()));
        out.push(RpcConfig { name, class });
    }
    unique(&names, "rpc")?;
    Ok(out)
}

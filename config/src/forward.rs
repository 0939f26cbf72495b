//! `[[forward]]`, `[[service]]` and `[[pipe]]`: socket proxies and byte
//! pipes across the cable.
//!
//! The side that connects decides where: a `[[forward]]` listens on this
//! host and carries each connection to a *service name* of the peer; the
//! peer's `[[service]]` of that name says where it connects. A peer can
//! only ever name a service the local config defines, never an address.
//! Both hosts use the same format, so `ssh -L` and `ssh -R` are the same
//! thing configured on one side or the other.
//!
//! ```toml
//! [[forward]]                       # here: listen, ask the peer for "web"
//! name = "web"
//! listen = "tcp:127.0.0.1:8080"
//!
//! [[service]]                       # on the peer: what "web" means there
//! name = "web"
//! connect = "tcp:localhost:80"
//! ```
//!
//! Endpoints: `tcp:IP:PORT`, `udp:IP:PORT`, `unix:/path`, `unix:@abstract`,
//! `seqpacket:/path`, `seqpacket:@abstract` (IPv6 as `tcp:[::1]:80`); a
//! service may connect to `tcp:HOST:PORT` by name.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tbbridge_transport::Class;

use crate::reader::{Field, Result, Table};

/// Longest `sun_path` of a Unix socket, minus the NUL.
pub const MAX_UNIX_PATH: usize = 107;
/// Connections a forward or service carries at once unless configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long a service waits for its target to accept unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A UDP flow with no datagram either way for this long is closed: what
/// conntrack gives unreplied UDP (30 s), doubled for replied flows.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(60);

/// A Unix socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A path in the file system.
    Path(PathBuf),
    /// A name in the abstract namespace (`@name`; Linux only).
    Abstract(String),
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) => write!(f, "{}", p.display()),
            UnixAddr::Abstract(n) => write!(f, "@{n}"),
        }
    }
}

/// Where a service connects by IP: an address, or a host name resolved
/// when connecting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPort {
    /// An IP address and port.
    Addr(SocketAddr),
    /// A DNS name and port.
    Name {
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPort::Addr(a) => write!(f, "{a}"),
            HostPort::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// One end of a proxied connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// TCP.
    Tcp(HostPort),
    /// UDP (a datagram channel per client flow).
    Udp(HostPort),
    /// A Unix stream socket.
    Unix(UnixAddr),
    /// A Unix `SOCK_SEQPACKET` socket (message boundaries kept).
    SeqPacket(UnixAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
            Endpoint::Udp(a) => write!(f, "udp:{a}"),
            Endpoint::Unix(a) => write!(f, "unix:{a}"),
            Endpoint::SeqPacket(a) => write!(f, "seqpacket:{a}"),
        }
    }
}

impl Endpoint {
    /// `stream`, `datagram` or `message`: how it crosses the cable.
    pub fn is_datagram(&self) -> bool {
        matches!(self, Endpoint::Udp(_))
    }

    /// Whether it keeps message boundaries (crosses as a message channel).
    pub fn is_seqpacket(&self) -> bool {
        matches!(self, Endpoint::SeqPacket(_))
    }
}

/// `[[forward]]`: listen here, carry each connection to a peer service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Unique among the forwards.
    pub name: String,
    /// Where to listen (an IP address or a Unix socket).
    pub listen: Endpoint,
    /// The peer's service (default: `name`).
    pub service: String,
    /// Scheduling class (default `normal`; `latency` for interactive
    /// traffic, `bulk` for transfers).
    pub class: Class,
    /// Connections at once; more are refused (counted).
    pub max_connections: usize,
}

/// `[[service]]`: what the peer may ask for, and where it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Unique among the services: what the peer's forward names.
    pub name: String,
    /// Where to connect.
    pub connect: Endpoint,
    /// Connections at once; more are refused (counted).
    pub max_connections: usize,
    /// How long to wait for the target to accept.
    pub connect_timeout: Duration,
    /// UDP: a flow quiet this long is closed.
    pub idle_timeout: Duration,
}

/// Where the data of a `[[pipe]]` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeSink {
    /// Into this file (written to a temporary name, renamed when complete).
    File(PathBuf),
    /// Into the standard input of this command (`sh -c`); its standard
    /// output goes back to the sender.
    Command(String),
}

/// `[[pipe]]`: a byte pipe the peer's `tbbridge pipe NAME SERVICE` sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeConfig {
    /// Unique among the pipes.
    pub name: String,
    /// What receives the data.
    pub sink: PipeSink,
}

/// 1 to 32 characters from `A-Z a-z 0-9 _ - .`.
pub(crate) fn parse_name(f: &Field<'_>) -> Result<String> {
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

const ENDPOINT_FORMS: &str = "tcp:IP:PORT, udp:IP:PORT, unix:/path, unix:@name, \
                              seqpacket:/path or seqpacket:@name";

fn unix_addr(f: &Field<'_>, rest: &str) -> Result<UnixAddr> {
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() || name.len() > MAX_UNIX_PATH - 1 {
            return Err(f.err(format!(
                "abstract socket name must be 1 to {} bytes",
                MAX_UNIX_PATH - 1
            )));
        }
        return Ok(UnixAddr::Abstract(name.to_owned()));
    }
    if !rest.starts_with('/') || rest.len() > MAX_UNIX_PATH {
        return Err(f.err(format!(
            "{rest:?} is not a Unix socket path (an absolute path of at most {MAX_UNIX_PATH} bytes, or @name)"
        )));
    }
    Ok(UnixAddr::Path(PathBuf::from(rest)))
}

fn host_port(f: &Field<'_>, rest: &str, names: bool) -> Result<HostPort> {
    if let Ok(a) = rest.parse::<SocketAddr>() {
        return Ok(HostPort::Addr(a));
    }
    let bad = || {
        let example = if names {
            "e.g. \"localhost:80\", \"10.0.0.2:80\" or \"[fd00::2]:80\""
        } else {
            "an IP address and port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
        };
        f.err(format!("{rest:?} is not {example}"))
    };
    if !names {
        return Err(bad());
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
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
    Ok(HostPort::Name {
        host: host.to_owned(),
        port,
    })
}

/// Parses an endpoint; `names`: host names allowed (connect side).
fn endpoint(f: &Field<'_>, names: bool) -> Result<Endpoint> {
    let s = f.str()?;
    let looks_like_address = s.parse::<SocketAddr>().is_ok()
        || s.starts_with('[')
        || s.starts_with(|c: char| c.is_ascii_digit());
    if looks_like_address {
        return Err(f.err(format!(
            "{s:?} is not an endpoint: say which kind, e.g. \"tcp:{s}\" or \"udp:{s}\""
        )));
    }
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(f.err(format!("{s:?} is not an endpoint ({ENDPOINT_FORMS})")));
    };
    match scheme {
        "tcp" => Ok(Endpoint::Tcp(host_port(f, rest, names)?)),
        "udp" => Ok(Endpoint::Udp(host_port(f, rest, names)?)),
        "unix" => Ok(Endpoint::Unix(unix_addr(f, rest)?)),
        "seqpacket" => Ok(Endpoint::SeqPacket(unix_addr(f, rest)?)),
        _ => Err(f.err(format!(
            "unknown endpoint kind {scheme:?} ({ENDPOINT_FORMS})"
        ))),
    }
}

pub(crate) fn class(t: &Table<'_>, default: Class) -> Result<Class> {
    match t.get("class") {
        None => Ok(default),
        Some(c) => match c.str()? {
            "latency" => Ok(Class::Latency),
            "normal" => Ok(Class::Normal),
            "bulk" => Ok(Class::Bulk),
            other => Err(c.err(format!(
                "unknown class {other:?} (allowed: \"latency\", \"normal\", \"bulk\")"
            ))),
        },
    }
}

fn max_connections(t: &Table<'_>) -> Result<usize> {
    Ok(t.opt("max_connections", |f| f.int_in(1..=100_000))?
        .unwrap_or(DEFAULT_MAX_CONNECTIONS))
}

/// Checks that no two entries share a name; `names` are (field, name).
pub(crate) fn unique(names: &[(Field<'_>, String)], what: &str) -> Result<()> {
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
        // `connect` and `proto` are accepted here only to say where they
        // went (an earlier format had the listening side name the target).
        let t = item.table(&[
            "name",
            "listen",
            "service",
            "class",
            "max_connections",
            "connect",
            "proto",
        ])?;
        if let Some(c) = t.get("connect") {
            return Err(c.err(
                "a forward does not say where the peer connects: the peer decides, in its \
                 [[service]] of this name (connect = \"tcp:HOST:PORT\")",
            ));
        }
        if let Some(p) = t.get("proto") {
            return Err(p.err(
                "the protocol is part of the endpoint: listen = \"tcp:IP:PORT\",                  \"udp:IP:PORT\", \"unix:/path\" or \"seqpacket:/path\"",
            ));
        }
        let name_f = t.required("name", "a unique name")?;
        let name = parse_name(&name_f)?;
        let listen = endpoint(&t.required("listen", "where to listen")?, false)?;
        let service = match t.get("service") {
            Some(s) => parse_name(&s)?,
            None => name.clone(),
        };
        names.push((name_f, name.clone()));
        out.push(ForwardConfig {
            name,
            listen,
            service,
            class: class(&t, Class::Normal)?,
            max_connections: max_connections(&t)?,
        });
    }
    unique(&names, "forward")?;
    Ok(out)
}

/// Parses the `[[service]]` array.
pub(crate) fn parse_services(f: &Field<'_>) -> Result<Vec<ServiceConfig>> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for item in f.array("tables ([[service]])")? {
        let t = item.table(&[
            "name",
            "connect",
            "max_connections",
            "connect_timeout_ms",
            "idle_timeout_ms",
        ])?;
        let name_f = t.required("name", "the name the peer's forward asks for")?;
        let name = parse_name(&name_f)?;
        let connect = endpoint(&t.required("connect", "where to connect")?, true)?;
        let ms = |key: &str, default: Duration| -> Result<Duration> {
            Ok(t.opt(key, |f| f.int_in::<u64>(1..=3_600_000))?
                .map_or(default, Duration::from_millis))
        };
        names.push((name_f, name.clone()));
        out.push(ServiceConfig {
            name,
            connect,
            max_connections: max_connections(&t)?,
            connect_timeout: ms("connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT)?,
            idle_timeout: ms("idle_timeout_ms", DEFAULT_UDP_IDLE)?,
        });
    }
    unique(&names, "service")?;
    Ok(out)
}

/// Parses the `[[pipe]]` array.
pub(crate) fn parse_pipes(f: &Field<'_>) -> Result<Vec<PipeConfig>> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for item in f.array("tables ([[pipe]])")? {
        let t = item.table(&["name", "file", "command"])?;
        let name_f = t.required("name", "the name `tbbridge pipe` sends to")?;
        let name = parse_name(&name_f)?;
        let sink = match (t.get("file"), t.get("command")) {
            (Some(file), None) => {
                let p = file.str()?;
                if !p.starts_with('/') {
                    return Err(file.err(format!("{p:?} is not an absolute path")));
                }
                PipeSink::File(PathBuf::from(p))
            }
            (None, Some(cmd)) => {
                let c = cmd.str()?;
                if c.trim().is_empty() {
                    return Err(cmd.err("the command is empty"));
                }
                PipeSink::Command(c.to_owned())
            }
            (Some(_), Some(cmd)) => {
                return Err(cmd.err("a pipe has either `file` or `command`, not both"))
            }
            (None, None) => return Err(t.error(
                "file",
                "missing: a pipe needs `file` (where the data goes) or `command` (what reads it)",
            )),
        };
        names.push((name_f, name.clone()));
        out.push(PipeConfig { name, sink });
    }
    unique(&names, "pipe")?;
    Ok(out)
}

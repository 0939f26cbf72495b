//! `[[rpc]]`: request/response endpoints across the cable.
//!
//! ```toml
//! [[rpc]]
//! name = "kv"                 # the service; the same name on both hosts
//! class = "latency"           # default: served before normal and bulk
//! max_message = "64KiB"       # largest request or reply body
//! max_calls = 64              # calls in flight per client connection
//! max_connections = 1024      # client connections (and peer channels) at once
//! socket = "/run/tbbridge/tb0/rpc/kv.sock"   # default: <run dir>/<instance>/rpc/<name>.sock
//! group = "tbrpc"             # group of the socket (mode 0660); default: the daemon's
//! ```
//!
//! Every host with the section has the socket: clients connect to it to
//! call the peer's server, and a server connects to it (and registers) to
//! serve the peer's clients. The socket protocol is in `docs/rpc.md`.

use std::path::PathBuf;

use tbbridge_transport::Class;

use crate::forward::{class, parse_name, unique, MAX_UNIX_PATH};
use crate::reader::{Field, Result};
use crate::session::size;

/// Largest `max_message` allowed: 4 MiB. A message crosses whole
/// (store-and-forward) and each connection may have `max_calls` of them
/// buffered, so larger bodies belong on a stream (`[[pipe]]`).
pub const MAX_RPC_MESSAGE: u64 = 4 << 20;
/// Default `max_message`: 64 KiB, what the transport moves as one chunk.
pub const DEFAULT_RPC_MESSAGE: u64 = 64 << 10;
/// Default `max_calls` per connection.
pub const DEFAULT_RPC_CALLS: usize = 64;
/// Default `max_connections`.
pub const DEFAULT_RPC_CONNECTIONS: usize = 1024;

/// The group of an RPC socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// By name, looked up when the socket is created.
    Name(String),
    /// By number.
    Id(u32),
}

/// `[[rpc]]`: one RPC service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// Unique among the RPC services; the same on both hosts.
    pub name: String,
    /// Scheduling class of its channels (default `latency`).
    pub class: Class,
    /// Largest request or reply body in bytes (the 8-byte header not
    /// counted).
    pub max_message: u32,
    /// Calls in flight per client connection; the socket is not read
    /// beyond (backpressure, no error).
    pub max_calls: usize,
    /// Client connections at once, and channels accepted from the peer.
    pub max_connections: usize,
    /// The socket; `None`: `<run dir>/<instance>/rpc/<name>.sock`.
    pub socket: Option<PathBuf>,
    /// The socket's group (mode 0660); `None`: the daemon's.
    pub group: Option<Group>,
}

fn group(f: &Field<'_>) -> Result<Group> {
    if let Ok(i) = f.int() {
        return u32::try_from(i)
            .map(Group::Id)
            .map_err(|_| f.err(format!("{i} is not a group id (0..=4294967295)")));
    }
    let s = f.str().map_err(|_| {
        f.err(format!(
            "expected a group name or id, found {}",
            f.node.kind.type_name()
        ))
    })?;
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Err(f.err(format!(
            "{s:?} is not a group name (1 to 32 characters from A-Z a-z 0-9 _ - .)"
        )));
    }
    Ok(Group::Name(s.to_owned()))
}

/// Parses the `[[rpc]]` array.
pub(crate) fn parse_rpcs(f: &Field<'_>) -> Result<Vec<RpcConfig>> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    let mut sockets: Vec<(Field<'_>, String)> = Vec::new();
    for item in f.array("tables ([[rpc]])")? {
        let t = item.table(&[
            "name",
            "class",
            "max_message",
            "max_calls",
            "max_connections",
            "socket",
            "group",
        ])?;
        let name_f = t.required("name", "the service name, the same on both hosts")?;
        let name = parse_name(&name_f)?;
        let max_message = t
            .opt("max_message", |f| size(f, 0, MAX_RPC_MESSAGE))?
            .unwrap_or(DEFAULT_RPC_MESSAGE);
        let socket = match t.get("socket") {
            None => None,
            Some(s) => {
                let p = s.str()?;
                if !p.starts_with('/') || p.len() > MAX_UNIX_PATH {
                    return Err(s.err(format!(
                        "{p:?} is not a socket path (an absolute path of at most {MAX_UNIX_PATH} bytes)"
                    )));
                }
                sockets.push((s.clone(), p.to_owned()));
                Some(PathBuf::from(p))
            }
        };
        names.push((name_f, name.clone()));
        out.push(RpcConfig {
            name,
            class: class(&t, Class::Latency)?,
            // Fits: at most MAX_RPC_MESSAGE.
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            max_calls: t
                .opt("max_calls", |f| f.int_in(1..=4096))?
                .unwrap_or(DEFAULT_RPC_CALLS),
            max_connections: t
                .opt("max_connections", |f| f.int_in(1..=100_000))?
                .unwrap_or(DEFAULT_RPC_CONNECTIONS),
            socket,
            group: t.opt("group", group)?,
        });
    }
    unique(&names, "rpc")?;
    unique(&sockets, "rpc socket")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{parse, ConfigError};

    const DEV: &str = "[device]\npath = \"emu:x/a\"\n";

    fn rpc(text: &str) -> Result<Vec<super::RpcConfig>, ConfigError> {
        parse(&format!("{DEV}{text}"), Path::new("t.toml")).map(|c| c.rpcs)
    }

    fn err(text: &str) -> String {
        match rpc(text) {
            Ok(v) => panic!("accepted: {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_every_key() {
        let v = rpc("[[rpc]]\nname = \"kv\"\n").expect("valid");
        assert_eq!(v[0].class, tbbridge_transport::Class::Latency);
        assert_eq!(v[0].max_message, 64 << 10);
        assert_eq!(v[0].max_calls, 64);
        assert_eq!(v[0].socket, None);
        let v = rpc(
            "[[rpc]]\nname = \"a\"\nclass = \"bulk\"\nmax_message = \"1MiB\"\n\
                     max_calls = 4\nmax_connections = 9\nsocket = \"/tmp/a.sock\"\ngroup = 1000\n\
                     [[rpc]]\nname = \"b\"\nmax_message = 0\ngroup = \"tbrpc\"\n",
        )
        .expect("valid");
        assert_eq!(v[0].max_message, 1 << 20);
        assert_eq!(v[0].group, Some(super::Group::Id(1000)));
        assert_eq!(v[1].max_message, 0);
        assert_eq!(v[1].group, Some(super::Group::Name("tbrpc".into())));
    }

    #[test]
    fn errors_name_key_and_line() {
        assert_eq!(
            err("[[rpc]]\nname = \"kv\"\nmax_message = \"5MiB\"\n"),
            "t.toml:5:15: rpc[0].max_message: 5242880 is out of range (allowed 0..=4194304)"
        );
        assert_eq!(
            err("[[rpc]]\nname = \"kv\"\nmax_calls = 0\n"),
            "t.toml:5:13: rpc[0].max_calls: 0 is out of range (allowed 1..=4096)"
        );
        assert!(err("[[rpc]]\nname = \"kv\"\nsocket = \"rel.sock\"\n")
            .starts_with("t.toml:5:10: rpc[0].socket: \"rel.sock\" is not a socket path"));
        assert!(err("[[rpc]]\nname = \"kv\"\nclass = \"fast\"\n")
            .starts_with("t.toml:5:9: rpc[0].class: unknown class"));
        assert!(err("[[rpc]]\nname = \"kv\"\n[[rpc]]\nname = \"kv\"\n")
            .contains("rpc[1].name: duplicate rpc name \"kv\" (first used on line 4)"));
        assert!(err("[[rpc]]\nname = \"kv\"\nport = 1\n")
            .starts_with("t.toml:5:1: rpc[0].port: unknown key `port`"));
        assert!(err("[[rpc]]\nclass = \"bulk\"\n").contains("rpc[0].name: missing required key"));
        assert!(err("[[rpc]]\nname = \"kv\"\ngroup = \"a b\"\n")
            .contains("rpc[0].group: \"a b\" is not a group name"));
    }
}

//! `[interface]`: the TUN network interface of the bridge.

use std::net::IpAddr;

use crate::net::{IfName, IpPrefix, Route};
use crate::reader::{Field, Result};

/// Default MTU: 65520.
///
/// Per-packet costs dominate on Thunderbolt links (one frame, one record,
/// one wake-up per packet): MTU 1500 costs about 3× the throughput of a
/// large MTU. 65520 is the largest MTU in common use for such links (IPoIB
/// connected mode uses it too): a packet plus the transport's record and
/// the virtio-net header still fits in 64 KiB, the largest superpacket TSO
/// produces. Both hosts should use the same value.
pub const DEFAULT_MTU: u16 = 65520;
/// Smallest allowed MTU: 1280, the IPv6 minimum (RFC 8200), so that an
/// IPv6 address can always be added.
pub const MIN_MTU: u16 = 1280;
/// Default for vnet_hdr offloads (TSO/USO superpackets of up to 64 KiB):
/// on. One superpacket crosses the bridge as one record instead of ~45
/// MTU-sized packets; the bridge falls back without them where the kernel
/// refuses.
pub const DEFAULT_OFFLOAD: bool = true;
/// Default TUN queue count: 1. Everything crosses one ordered device, so
/// extra queues only help when several CPUs produce packets at once (many
/// routed flows); they cost a thread each.
pub const DEFAULT_QUEUES: u16 = 1;
/// Most TUN queues.
pub const MAX_QUEUES: u16 = 16;

/// The interface, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InterfaceConfig {
    /// Interface name.
    pub name: IfName,
    /// Addresses with prefix lengths (host bits allowed), IPv4 and IPv6.
    pub addresses: Vec<IpPrefix>,
    /// MTU, `1280..=65535` ([`DEFAULT_MTU`]).
    pub mtu: u16,
    /// Routes through the interface.
    pub routes: Vec<Route>,
    /// Shell commands run (`sh -c`) after the interface is up.
    pub post_up: Vec<String>,
    /// Shell commands run before the interface goes down.
    pub pre_down: Vec<String>,
    /// Use vnet_hdr offloads ([`DEFAULT_OFFLOAD`]).
    pub offload: bool,
    /// TUN queues, `1..=16` ([`DEFAULT_QUEUES`]).
    pub queues: u16,
}

impl InterfaceConfig {
    /// An interface with defaults and no addresses.
    pub fn new(name: IfName) -> Self {
        Self {
            name,
            addresses: Vec::new(),
            mtu: DEFAULT_MTU,
            routes: Vec::new(),
            post_up: Vec::new(),
            pre_down: Vec::new(),
            offload: DEFAULT_OFFLOAD,
            queues: DEFAULT_QUEUES,
        }
    }
}

const KEYS: &[&str] = &[
    "name",
    "addresses",
    "mtu",
    "routes",
    "post_up",
    "pre_down",
    "offload",
    "queues",
];
const ROUTE_KEYS: &[&str] = &["to", "via"];

/// Parses `[interface]`.
pub(crate) fn parse_interface(f: &Field<'_>) -> Result<InterfaceConfig> {
    let t = f.table(KEYS)?;
    let name: IfName = t
        .required("name", "an interface name of 1 to 15 bytes, e.g. \"tb0\"")?
        .parse()?;
    let mut i = InterfaceConfig::new(name);
    if let Some(a) = t.get("addresses") {
        for item in a.array("address strings such as \"198.18.0.1/30\"")? {
            let p: IpPrefix = item.parse()?;
            if i.addresses.contains(&p) {
                return Err(item.err(format!("duplicate address {p}")));
            }
            i.addresses.push(p);
        }
    }
    if let Some(v) = t.opt("mtu", |f| f.int_in(i64::from(MIN_MTU)..=65535))? {
        i.mtu = v;
    }
    if let Some(r) = t.get("routes") {
        for item in r.array("routes")? {
            i.routes.push(parse_route(&item)?);
        }
    }
    if let Some(v) = t.opt("post_up", commands)? {
        i.post_up = v;
    }
    if let Some(v) = t.opt("pre_down", commands)? {
        i.pre_down = v;
    }
    if let Some(v) = t.opt("offload", Field::bool)? {
        i.offload = v;
    }
    if let Some(v) = t.opt("queues", |f| f.int_in(1..=i64::from(MAX_QUEUES)))? {
        i.queues = v;
    }
    Ok(i)
}

/// One command or an array of them; empty commands are refused.
fn commands(f: &Field<'_>) -> Result<Vec<String>> {
    let items = match f.str() {
        Ok(s) => vec![(f.clone(), s.to_owned())],
        Err(_) => f
            .array("shell commands")?
            .into_iter()
            .map(|i| i.str().map(|s| (i.clone(), s.to_owned())))
            .collect::<Result<_>>()?,
    };
    items
        .into_iter()
        .map(|(field, s)| {
            if s.trim().is_empty() {
                Err(field.err("empty command (allowed: a shell command run with sh -c)"))
            } else {
                Ok(s)
            }
        })
        .collect()
}

/// `"NET/LEN"`, `"NET/LEN via GW"` or `{ to = "NET/LEN", via = "GW" }`.
fn parse_route(f: &Field<'_>) -> Result<Route> {
    let (to_field, to_text, via) = match f.str() {
        Ok(s) => {
            let (to, via) = match s.split_once(" via ") {
                Some((to, via)) => (to.trim(), Some((f.clone(), via.trim()))),
                None => (s.trim(), None),
            };
            (f.clone(), to, via)
        }
        Err(_) => {
            if !matches!(f.node.kind, crate::tree::Kind::Table(_)) {
                return Err(f.err(format!(
                    "expected a route (\"NET/LEN\", \"NET/LEN via GATEWAY\" or \
                     {{ to = \"NET/LEN\", via = \"GATEWAY\" }}), found {}",
                    f.node.kind.type_name()
                )));
            }
            let t = f.table(ROUTE_KEYS)?;
            let to = t.required("to", "the destination network, e.g. \"198.19.0.0/16\"")?;
            let to_text = to.str()?;
            let via = match t.get("via") {
                Some(v) => Some((v.clone(), v.str()?)),
                None => None,
            };
            (to, to_text, via)
        }
    };
    let to: IpPrefix = to_text.parse().map_err(|e| to_field.err(format!("{e}")))?;
    if to.has_host_bits() {
        return Err(to_field.err(format!(
            "route destination {to} has host bits set (did you mean {}?)",
            to.network()
        )));
    }
    let via = match via {
        None => None,
        Some((vf, text)) => {
            let gw: IpAddr = text
                .parse()
                .map_err(|_| vf.err(format!("gateway {text:?} is not an IP address")))?;
            if gw.is_ipv4() != to.is_ipv4() {
                return Err(vf.err(format!(
                    "gateway {gw} is not of the same address family as {to}"
                )));
            }
            Some(gw)
        }
    };
    Ok(Route { to, via })
}

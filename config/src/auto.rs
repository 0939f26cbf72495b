//! Zero-configuration setup: what `tbbridge up` does with no config file.
//!
//! 1. [`discover`] lists the XDomain service directories under the configfs
//!    root (one per peer the kernel found on a cable) with what sysfs tells
//!    about each peer (`<sysfs>/<domain>-<route>/{unique_id,device_name,
//!    vendor_name}`).
//! 2. [`local_identity`] is this host's identity: the host router's UUID
//!    (`<sysfs>/<domain>-0/unique_id`, the UUID the XDomain protocol shows
//!    the peer, so the peer reads it as our `unique_id`), else a hash of
//!    `/etc/machine-id`.
//! 3. [`derive_addresses`] gives both hosts the same answer without
//!    talking: an IPv6 link-local address from each host's own identity,
//!    and one IPv4 /30 of 169.254.1.0–169.254.254.255 from the pair, the
//!    lower identity taking `.1` and the higher `.2`.
//! 4. [`config_text`] writes it all down as the config file a user would
//!    have written (stream `tbbridge`, HopIDs 16/16 clear of
//!    `thunderbolt_net`), which [`parse`](crate::parse) then validates like
//!    any other: one code path after this.
//!
//! On the emulated cable, `tbbridge cable run --host-a DIR --host-b DIR`
//! writes the same tree under each host's DIR (a `--sys-root`), plus
//! `DIR/tbbridge-emu/<service>` naming the cable end that stands for the
//! stream (no configfs there to create one in).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::configfs::ConfigfsFs;
use crate::{
    DeviceSpec, HostId, ServiceName, DEFAULT_CONFIGFS_ROOT, DEFAULT_DEV_DIR, DEFAULT_HOPID,
    DEFAULT_SYSFS_ROOT,
};

/// The stream name both hosts use (at most 8 characters, an XDomain
/// property key).
pub const AUTO_STREAM: &str = "tbbridge";
/// The instance (and interface) name of `tbbridge up` with no name.
pub const AUTO_INSTANCE: &str = "tb0";
/// Where, under a `--sys-root`, the emulated cable says which end stands
/// for a service's stream.
pub const EMU_DIR: &str = "tbbridge-emu";
/// Most directory entries looked at (a host has a handful of peers).
pub const MAX_ENTRIES: usize = 256;
/// Longest peer attribute shown (sysfs strings are short).
const MAX_ATTR: usize = 64;

/// The IPv4 range the /30s come from: 169.254.1.0–169.254.254.255 (RFC
/// 3927 keeps the first and last /24 of 169.254.0.0/16 reserved).
const V4_FIRST: u32 = u32::from_be_bytes([169, 254, 1, 0]);
const V4_BLOCKS: u32 = 254 * 64;

/// Where a host's kernel interfaces are: `/` on a real system, a
/// directory of the emulated cable in tests and the demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    /// The configfs stream root.
    pub configfs: PathBuf,
    /// `/sys/bus/thunderbolt/devices`.
    pub sysfs: PathBuf,
    /// Where device nodes appear.
    pub dev: PathBuf,
    /// `/etc/machine-id`.
    pub machine_id: PathBuf,
    /// The emulated cable's ends, under a `--sys-root` only.
    pub emu: Option<PathBuf>,
}

impl HostRoot {
    /// The running system's.
    pub fn system() -> Self {
        Self {
            configfs: DEFAULT_CONFIGFS_ROOT.into(),
            sysfs: DEFAULT_SYSFS_ROOT.into(),
            dev: DEFAULT_DEV_DIR.into(),
            machine_id: "/etc/machine-id".into(),
            emu: None,
        }
    }

    /// The same paths under `dir` (a fake host: `tbbridge up --sys-root`).
    pub fn under(dir: &Path) -> Self {
        let rel = |p: &str| dir.join(p.trim_start_matches('/'));
        Self {
            configfs: rel(DEFAULT_CONFIGFS_ROOT),
            sysfs: rel(DEFAULT_SYSFS_ROOT),
            dev: rel(DEFAULT_DEV_DIR),
            machine_id: rel("/etc/machine-id"),
            emu: Some(dir.join(EMU_DIR)),
        }
    }

    fn is_system(&self) -> bool {
        self.emu.is_none()
    }
}

/// One peer the kernel found: its service directory and what sysfs says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The service directory name (`0-1.0`).
    pub service: ServiceName,
    /// The XDomain device (`0-1`).
    pub device: String,
    /// Its `unique_id`: the peer host's identity.
    pub unique_id: Option<HostId>,
    /// `device_name` (the peer's host name, as its kernel announces it).
    pub device_name: Option<String>,
    /// `vendor_name`.
    pub vendor_name: Option<String>,
    /// The emulated cable end standing for the stream, if emulated.
    pub emu: Option<DeviceSpec>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.service.as_str(),
            self.device_name.as_deref().unwrap_or("(no device_name)")
        )?;
        if let Some(v) = &self.vendor_name {
            write!(f, " ({v})")?;
        }
        match &self.unique_id {
            Some(id) => write!(f, ", unique_id {id}")?,
            None => write!(f, ", no unique_id")?,
        }
        if let Some(e) = &self.emu {
            write!(f, ", emulated cable {e}")?;
        }
        Ok(())
    }
}

/// Why the zero-configuration setup could not decide.
#[derive(Debug, thiserror::Error)]
pub enum AutoError {
    /// No configfs root: the driver is not loaded.
    #[error(
        "{}: no such directory: is configfs mounted and the thunderbolt_stream driver loaded \
         (modprobe thunderbolt_stream)?",
        .0.display()
    )]
    RootMissing(PathBuf),
    /// Reading a directory or attribute failed.
    #[error("reading {}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Both hosts claim the same identity.
    #[error(
        "the peer's unique_id is this host's own identity {0}: a cable looped back to this \
         host, or two hosts with the same machine-id; set [host] id in a config file"
    )]
    SameIdentity(HostId),
}

fn read_attr(fs: &dyn ConfigfsFs, path: &Path) -> Option<String> {
    let s = fs.read(path).ok()?;
    let s: String = s
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ATTR)
        .collect();
    (!s.is_empty()).then_some(s)
}

/// The peers under `root`, sorted by service name. A missing configfs
/// root is [`AutoError::RootMissing`] on a real system (the driver is not
/// loaded) and no peers on a fake host (its cable has not started).
pub fn discover(fs: &dyn ConfigfsFs, root: &HostRoot) -> Result<Vec<Peer>, AutoError> {
    if !fs.exists(&root.configfs) {
        if root.is_system() {
            return Err(AutoError::RootMissing(root.configfs.clone()));
        }
        return Ok(Vec::new());
    }
    let names = fs
        .list_dir(&root.configfs, MAX_ENTRIES)
        .map_err(|source| AutoError::Io {
            path: root.configfs.clone(),
            source,
        })?;
    let mut peers: Vec<Peer> = names
        .iter()
        .filter_map(|n| n.parse::<ServiceName>().ok())
        .map(|service| {
            let device = service.xdomain_device();
            let dir = root.sysfs.join(&device);
            let emu = root.emu.as_ref().and_then(|e| {
                read_attr(fs, &e.join(service.as_str()))
                    .and_then(|s| s.parse::<DeviceSpec>().ok())
                    .filter(|s| matches!(s, DeviceSpec::Emu { .. }))
            });
            Peer {
                unique_id: read_attr(fs, &dir.join("unique_id")).and_then(|s| s.parse().ok()),
                device_name: read_attr(fs, &dir.join("device_name")),
                vendor_name: read_attr(fs, &dir.join("vendor_name")),
                device,
                emu,
                service,
            }
        })
        .collect();
    peers.sort_by(|a, b| a.service.as_str().cmp(b.service.as_str()));
    Ok(peers)
}

/// Where this host's identity came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// The host router's `unique_id`.
    HostRouter(PathBuf),
    /// A hash of the machine id.
    MachineId(PathBuf),
}

impl fmt::Display for IdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSource::HostRouter(p) => write!(f, "the host router's {}", p.display()),
            IdSource::MachineId(p) => write!(f, "a hash of {}", p.display()),
        }
    }
}

/// This host's identity in `domain`: the host router's UUID, else a hash
/// of the machine id, else `None`.
pub fn local_identity(
    fs: &dyn ConfigfsFs,
    root: &HostRoot,
    domain: u32,
) -> Option<(HostId, IdSource)> {
    let router = root.sysfs.join(format!("{domain}-0")).join("unique_id");
    if let Some(id) = read_attr(fs, &router).and_then(|s| s.parse().ok()) {
        return Some((id, IdSource::HostRouter(router)));
    }
    let mid = std::fs::read_to_string(&root.machine_id).ok()?;
    let mid = mid.trim();
    if mid.is_empty() {
        return None;
    }
    let h = Sha256::new()
        .chain_update(b"tbbridge host id\0")
        .chain_update(mid.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    Some((HostId(id), IdSource::MachineId(root.machine_id.clone())))
}

/// The addresses of one end of a cable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoAddresses {
    /// This host's IPv4 address in the pair's /30, and the peer's.
    pub v4: Option<(Ipv4Addr, Ipv4Addr)>,
    /// This host's IPv6 link-local address (/64).
    pub v6: Ipv6Addr,
    /// The peer's link-local address, when its identity is known.
    pub v6_peer: Option<Ipv6Addr>,
}

/// `fe80::/64` with an interface identifier hashed from `id` (the
/// universal/local bit clear: a locally assigned identifier, RFC 4291).
pub fn link_local(id: HostId) -> Ipv6Addr {
    let h = Sha256::new()
        .chain_update(b"tbbridge link-local\0")
        .chain_update(id.0)
        .finalize();
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..].copy_from_slice(&h[..8]);
    a[8] &= !0x02;
    Ipv6Addr::from(a)
}

/// The /30 of a pair: the same for both orders; the lower identity gets
/// `.1`, the higher `.2`. Returns (`local`'s, `peer`'s); `None` when the
/// identities are equal.
pub fn v4_pair(local: HostId, peer: HostId) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if local == peer {
        return None;
    }
    let (lo, hi) = if local < peer {
        (local, peer)
    } else {
        (peer, local)
    };
    let h = Sha256::new()
        .chain_update(b"tbbridge v4 pair\0")
        .chain_update(lo.0)
        .chain_update(hi.0)
        .finalize();
    let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % V4_BLOCKS;
    let base = V4_FIRST + n * 4;
    let (low_addr, high_addr) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
    Some(if local < peer {
        (low_addr, high_addr)
    } else {
        (high_addr, low_addr)
    })
}

/// Both families for `local` facing `peer` (`None`: unknown, IPv6 only).
pub fn derive_addresses(local: HostId, peer: Option<HostId>) -> Result<AutoAddresses, AutoError> {
    if peer == Some(local) {
        return Err(AutoError::SameIdentity(local));
    }
    Ok(AutoAddresses {
        v4: peer.and_then(|p| v4_pair(local, p)),
        v6: link_local(local),
        v6_peer: peer.map(link_local),
    })
}

/// What [`config_text`] writes down.
#[derive(Debug, Clone)]
pub struct AutoChoice {
    /// The instance (and interface) name.
    pub instance: String,
    /// The peer chosen.
    pub peer: Peer,
    /// This host's identity and where it came from.
    pub local: (HostId, IdSource),
    /// The host's kernel paths.
    pub root: HostRoot,
}

impl AutoChoice {
    /// The addresses of this choice.
    pub fn addresses(&self) -> Result<AutoAddresses, AutoError> {
        derive_addresses(self.local.0, self.peer.unique_id)
    }
}

/// The config file of `choice`, with comments saying where each value came
/// from (`tbbridge up --auto --print-config`).
pub fn config_text(choice: &AutoChoice) -> Result<String, AutoError> {
    let a = choice.addresses()?;
    let p = &choice.peer;
    let mut t = String::new();
    t.push_str(&format!(
        "# tbbridge {}: zero-configuration setup (tbbridge up --auto --print-config).\n\
         # Peer {p}.\n\
         # Keep it as /etc/tbbridge/{}.toml and edit freely: `tbbridge up {}` then reads it.\n\n",
        choice.instance, choice.instance, choice.instance
    ));
    t.push_str(&format!(
        "[host]\n# From {}.\nid = \"{}\"\n",
        choice.local.1, choice.local.0
    ));
    if let Some(peer) = p.unique_id {
        t.push_str(&format!(
            "# The peer's unique_id: the addresses below are derived for it.\npeer_id = \"{peer}\"\n"
        ));
    }
    t.push('\n');
    match &p.emu {
        Some(spec) => t.push_str(&format!(
            "[device]\n# The emulated cable's end standing for service {}.\npath = \"{spec}\"\n\n",
            p.service.as_str()
        )),
        None => {
            t.push_str(&format!(
                "[device.configfs]\nservice = \"{}\"\nstream = \"{AUTO_STREAM}\"\n\
                 in_hopid = {DEFAULT_HOPID}\nout_hopid = {DEFAULT_HOPID}\n",
                p.service.as_str()
            ));
            let r = &choice.root;
            let sys = HostRoot::system();
            for (key, v, d) in [
                ("root", &r.configfs, &sys.configfs),
                ("dev_dir", &r.dev, &sys.dev),
                ("sysfs_root", &r.sysfs, &sys.sysfs),
            ] {
                if v != d {
                    t.push_str(&format!("{key} = {}\n", toml_string(&v.to_string_lossy())));
                }
            }
            t.push('\n');
        }
    }
    t.push_str(&format!(
        "[interface]\nname = \"{}\"\n# IPv4: the pair's /30 of 169.254.1.0-169.254.254.255, the lower \
         identity .1; IPv6: link-local from this host's identity.\n",
        choice.instance
    ));
    let mut addrs = Vec::new();
    match a.v4 {
        Some((mine, peer)) => {
            addrs.push(format!("\"{mine}/30\""));
            t.push_str(&format!("# The peer: {peer}"));
            if let Some(v6) = a.v6_peer {
                t.push_str(&format!(" and {v6}%{}", choice.instance));
            }
            t.push('\n');
        }
        None => t.push_str(
            "# No IPv4: sysfs does not tell the peer's unique_id, so no /30 can be derived.\n",
        ),
    }
    addrs.push(format!("\"{}/64\"", a.v6));
    t.push_str(&format!("addresses = [{}]\n", addrs.join(", ")));
    Ok(t)
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[path = "auto_tests.rs"]
mod tests;

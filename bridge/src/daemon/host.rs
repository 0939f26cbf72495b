//! Who this host is to its peer (the identity and host name sent in the
//! handshake), who the peer is (for `status`), and the opt-in hosts(5)
//! line that makes the peer's name resolve from when it connects until `down`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde_json::{json, Value};
use tbbridge_config::auto::{self, HostRoot};
use tbbridge_config::configfs::RealFs;
use tbbridge_config::{Config, DeviceConfig, HostId, InterfaceConfig};
use tbbridge_transport::wire::HelloIdent;

/// This host's identity: `[host] id`, else the host router's `unique_id`
/// (under the configfs device's sysfs root), else a hash of the machine
/// id, else random (said in the log: the peer then sees a new host on
/// every `up`).
pub fn identity(cfg: &Config) -> (HostId, String) {
    if let Some(id) = cfg.host.id {
        return (id, "[host] id".to_owned());
    }
    let (root, domain) = match &cfg.device {
        DeviceConfig::Configfs(c) => (
            HostRoot {
                sysfs: c.sysfs_root.clone(),
                ..HostRoot::system()
            },
            c.service.domain,
        ),
        DeviceConfig::Path(_) => (HostRoot::system(), 0),
    };
    if let Some((id, src)) = auto::local_identity(&RealFs, &root, domain) {
        return (id, src.to_string());
    }
    let mut id = [0u8; 16];
    if getrandom::fill(&mut id).is_err() {
        // No kernel randomness (a seccomp filter, say): not all zeros,
        // which every such host would share; this start's time and pid.
        use sha2::Digest;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let h = sha2::Sha256::new()
            .chain_update(now.as_nanos().to_le_bytes())
            .chain_update(std::process::id().to_le_bytes())
            .finalize();
        id.copy_from_slice(&h[..16]);
    }
    (
        HostId(id),
        "random (no host router unique_id, no machine id)".to_owned(),
    )
}

/// The kernel's host name (`uname -n`; the UTS namespace's).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What the handshake carries about this host.
pub fn hello_ident(cfg: &Config) -> (HelloIdent, String) {
    let (id, src) = identity(cfg);
    (HelloIdent::new(id.0, &hostname()), src)
}

/// The peer as `status` shows it: its host name and identity, and whether
/// it is the host the config's addresses were derived for.
pub fn peer_doc(cfg: &Config, peer: Option<&HelloIdent>) -> Value {
    let Some(p) = peer else {
        return Value::Null;
    };
    let id = HostId(p.host_id);
    json!({
        "hostname": p.hostname,
        "host_id": id.to_string(),
        "expected": cfg.host.peer_id.map(|e| e.to_string()),
        "address": cfg.interface.as_ref().map(|i| peer_address(i, id).to_string()),
        "unexpected": cfg.host.peer_id.is_some_and(|e| e != id),
    })
}

/// The peer's address on the link: the other host of this host's /30 (or
/// /31), else the peer's derived IPv6 link-local address.
pub fn peer_address(i: &InterfaceConfig, peer: HostId) -> IpAddr {
    for a in &i.addresses {
        if let (IpAddr::V4(v4), 30) = (a.addr, a.len) {
            let n = u32::from(v4);
            let other = match n & 3 {
                1 => n + 1,
                2 => n - 1,
                _ => continue,
            };
            return IpAddr::V4(Ipv4Addr::from(other));
        }
    }
    IpAddr::V6(auto::link_local(peer))
}

fn marker(instance: &str) -> String {
    format!("# tbbridge:{instance}")
}

/// Rewrites `file` with this instance's line replaced by `line` (`None`:
/// removed). In place, not by rename: under `ip netns exec` the file is a
/// bind mount that a rename cannot replace. A file over 1 MiB is left
/// alone (not a hosts file).
pub fn update_hosts_file(file: &Path, instance: &str, line: Option<&str>) -> io::Result<()> {
    let old = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound && line.is_some() => String::new(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if old.len() > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "larger than 1 MiB: not touching it",
        ));
    }
    let tag = marker(instance);
    let mut out: String = old
        .lines()
        .filter(|l| !l.ends_with(&tag))
        .flat_map(|l| [l, "\n"])
        .collect();
    if let Some(l) = line {
        out.push_str(&format!("{l}\t{tag}\n"));
    }
    if out == old {
        return Ok(());
    }
    std::fs::write(file, out)
}

/// The hosts(5) line for the peer: its address, its host name and
/// `NAME.tbbridge`.
pub fn hosts_line(addr: IpAddr, hostname: &str) -> String {
    format!("{addr}\t{hostname} {hostname}.tbbridge")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_line_is_replaced_and_removed_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("hosts");
        std::fs::write(&f, "127.0.0.1\tlocalhost\n").expect("write");
        let l = hosts_line("169.254.7.2".parse().expect("ip"), "laptop-b");
        update_hosts_file(&f, "tb0", Some(&l)).expect("add");
        update_hosts_file(&f, "tb1", Some("169.254.9.1\tother")).expect("add");
        let l2 = hosts_line("169.254.7.1".parse().expect("ip"), "laptop-c");
        update_hosts_file(&f, "tb0", Some(&l2)).expect("replace");
        let text = std::fs::read_to_string(&f).expect("read");
        assert_eq!(
            text,
            "127.0.0.1\tlocalhost\n169.254.9.1\tother\t# tbbridge:tb1\n\
             169.254.7.1\tlaptop-c laptop-c.tbbridge\t# tbbridge:tb0\n"
        );
        update_hosts_file(&f, "tb0", None).expect("remove");
        update_hosts_file(&f, "tb1", None).expect("remove");
        assert_eq!(
            std::fs::read_to_string(&f).expect("read"),
            "127.0.0.1\tlocalhost\n"
        );
    }

    #[test]
    fn the_peer_is_the_other_end_of_the_30() {
        let cfg = tbbridge_config::parse(
            "[device]\npath = \"emu:x/a\"\n[interface]\nname = \"tb0\"\naddresses = [\"169.254.7.2/30\"]\n",
            Path::new("t.toml"),
        )
        .expect("config");
        let i = cfg.interface.expect("interface");
        let peer = HostId([1; 16]);
        assert_eq!(
            peer_address(&i, peer),
            "169.254.7.1".parse::<IpAddr>().expect("ip")
        );
    }
}

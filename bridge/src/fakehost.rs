//! The hosts an emulated cable is plugged into (`tbbridge cable run NAME
//! --host-a DIR --host-b DIR`): each DIR is a fake host's `/` for
//! `tbbridge up --sys-root DIR`, with what the kernel would show once the
//! XDomain discovery found the peer (spec §1 and §6):
//!
//! ```text
//! DIR/sys/bus/thunderbolt/devices/0-0/unique_id        this host's router UUID (kept across runs)
//! DIR/sys/bus/thunderbolt/devices/0-R/unique_id        the peer's UUID
//! DIR/sys/bus/thunderbolt/devices/0-R/device_name      the peer's name (its DIR's base name)
//! DIR/sys/bus/thunderbolt/devices/0-R/vendor_name
//! DIR/sys/kernel/config/thunderbolt/stream/0-R.0/      the peer's service directory
//! DIR/tbbridge-emu/0-R.0                               emu:NAME/a: the end standing for the stream
//! ```
//!
//! R is the lowest route free on that host, so a host on two cables (three
//! namespaces in a line) sees two peers. When the cable stops, the peer's
//! entries go, as the kernel removes them when the peer goes away.

use std::io;
use std::path::{Path, PathBuf};

use tbbridge_config::auto::{HostRoot, MAX_ENTRIES};
use tbbridge_config::HostId;
use tbbridge_transport::CableEnd;

/// One host's view of the peer; removed when dropped.
#[derive(Debug)]
pub struct Attached {
    removals: Vec<(PathBuf, bool)>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        for (p, dir) in self.removals.iter().rev() {
            let _ = if *dir {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
        }
    }
}

/// The host's router UUID, created (random) on first use.
pub fn host_id(dir: &Path) -> io::Result<HostId> {
    let root = HostRoot::under(dir);
    let f = root.sysfs.join("0-0").join("unique_id");
    if let Ok(s) = std::fs::read_to_string(&f) {
        if let Ok(id) = s.parse() {
            return Ok(id);
        }
    }
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| io::Error::other(format!("no entropy: {e}")))?;
    let id = HostId(id);
    std::fs::create_dir_all(f.parent().unwrap_or(&root.sysfs))?;
    std::fs::write(&f, format!("{id}\n"))?;
    Ok(id)
}

fn name_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "host".to_owned())
}

/// Shows `peer_dir`'s host to `dir`'s as a peer on `cable`'s `end`.
pub fn attach(dir: &Path, peer_dir: &Path, cable: &str, end: CableEnd) -> io::Result<Attached> {
    let root = HostRoot::under(dir);
    let peer = host_id(peer_dir)?;
    host_id(dir)?;
    // The lowest free route (or the one a previous run left for this peer).
    let route = (1..MAX_ENTRIES as u64)
        .find(|r| {
            let d = root.sysfs.join(format!("0-{r:x}"));
            match std::fs::read_to_string(d.join("unique_id")) {
                Ok(s) => s.parse::<HostId>().ok() == Some(peer),
                Err(_) => !d.exists(),
            }
        })
        .ok_or_else(|| io::Error::other("no free route on this fake host"))?;
    let dev = root.sysfs.join(format!("0-{route:x}"));
    let service = format!("0-{route:x}.0");
    std::fs::create_dir_all(&dev)?;
    std::fs::write(dev.join("unique_id"), format!("{peer}\n"))?;
    std::fs::write(dev.join("device_name"), format!("{}\n", name_of(peer_dir)))?;
    std::fs::write(dev.join("vendor_name"), "tbbridge emulated cable\n")?;
    let emu = root.emu.clone().unwrap_or_else(|| dir.join("tbbridge-emu"));
    std::fs::create_dir_all(&emu)?;
    let marker = emu.join(&service);
    std::fs::write(&marker, format!("emu:{cable}/{end}\n"))?;
    std::fs::create_dir_all(&root.configfs)?;
    let svc = root.configfs.join(&service);
    match std::fs::create_dir(&svc) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(Attached {
        removals: vec![(dev, true), (marker, false), (svc, true)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tbbridge_config::auto;
    use tbbridge_config::configfs::RealFs;

    #[test]
    fn a_host_on_two_cables_sees_two_peers_until_they_go() {
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        let ab_b = attach(&b, &a, "one", CableEnd::B).expect("attach");
        let bc_b = attach(&b, &c, "two", CableEnd::A).expect("attach");
        let peers = auto::discover(&RealFs, &HostRoot::under(&b)).expect("discover");
        assert_eq!(peers.len(), 2, "{peers:?}");
        assert_eq!(peers[0].service.as_str(), "0-1.0");
        assert_eq!(peers[0].unique_id, Some(host_id(&a).expect("id")));
        assert_eq!(peers[0].device_name.as_deref(), Some("a"));
        assert_eq!(peers[0].emu, Some("emu:one/b".parse().expect("spec")));
        assert_eq!(peers[1].unique_id, Some(host_id(&c).expect("id")));
        assert_eq!(peers[1].emu, Some("emu:two/a".parse().expect("spec")));
        drop(ab_b);
        let peers = auto::discover(&RealFs, &HostRoot::under(&b)).expect("discover");
        assert_eq!(peers.len(), 1, "the first peer went with its cable");
        assert_eq!(peers[0].service.as_str(), "0-2.0");
        drop(bc_b);
        assert!(auto::discover(&RealFs, &HostRoot::under(&b))
            .expect("discover")
            .is_empty());
        // The host keeps its identity.
        let (id, _) = auto::local_identity(&RealFs, &HostRoot::under(&b), 0).expect("id");
        assert_eq!(id, host_id(&b).expect("id"));
    }
}

//! A fake `thunderbolt_stream` configfs tree that behaves like spec §1, for
//! tests of the setup code (no machine here has the driver).
//!
//! * `mkdir <root>/<service>`: the name must parse as `%u-%llx.%u`, else
//!   EINVAL.
//! * `mkdir <root>/<service>/<stream>`: names over 8 characters give
//!   ENAMETOOLONG; the stream gets the lowest free `index` and its device
//!   node `<dev_dir>/tbstream<index>` appears (optionally only after a
//!   number of polls, see [`FakeConfigfs::set_device_delay`]). Attributes
//!   start at ring_size 256, throttling 8192, HopIDs unset (0).
//! * `in_hopid`/`out_hopid`: `-1` takes the lowest free HopID from 8 up to
//!   the adapter maximum (19 by default; ENOSPC when none is left), `0`
//!   releases, a specific HopID must be in `8..=max` (else EINVAL) and free
//!   on this service, counting other streams and HopIDs held by
//!   `thunderbolt_net` ([`FakeConfigfs::reserve_hopids`]) (else EBUSY).
//!   Receive and transmit HopIDs are separate spaces, as in the kernel.
//! * `ring_size` outside `32..=4096` and `throttling` outside
//!   `0..=16776960` give EINVAL; `index` is read-only (EACCES).
//! * All four writable attributes give EBUSY while the device is open
//!   ([`FakeConfigfs::set_open`]).
//! * `rmdir` of a stream frees its HopIDs and removes the device node;
//!   `rmdir` of a service with streams gives ENOTEMPTY.
//!
//! * The peer going away (it reboots: its XDomain service is
//!   unregistered): [`FakeConfigfs::remove_service`] removes the service
//!   directory with every stream in it, as the kernel does, device nodes
//!   and HopIDs included; [`FakeConfigfs::restore_service`] brings the
//!   (empty) directory back when the peer returns.
//! * The driver's `open` ([`FakeConfigfs::open_device`]): ENOENT without a
//!   node, EINVAL while a HopID is unset, ENOMEM when the rings of the
//!   open streams would exceed the DMA memory set with
//!   [`FakeConfigfs::set_ring_memory`] (two streams of 4096 frames failed
//!   that way on real hardware, 1024 worked). It also counts opens, so a
//!   test can tell a bridge that backs off from one that hammers.
//!
//! Other files (e.g. sysfs link attributes and the peer's `unique_id`)
//! can be added with [`FakeConfigfs::add_file`]; `list_dir` lists the
//! directories they imply.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::errno::*;
use super::ConfigfsFs;
use crate::device::{MAX_STREAM_NAME, MAX_THROTTLING_NS, RING_SIZE_RANGE};
use crate::ServiceName;

/// The HopID maximum of the fake lane adapter (spec §1's example).
pub const FAKE_MAX_HOPID: u16 = 19;

/// A snapshot of one fake stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeStream {
    /// Device index.
    pub index: u32,
    /// Receive HopID, 0 when unset.
    pub in_hopid: u16,
    /// Transmit HopID, 0 when unset.
    pub out_hopid: u16,
    /// Ring size.
    pub ring_size: u32,
    /// Throttling in ns.
    pub throttling: u32,
    /// Whether the device is "open".
    pub open: bool,
    /// Polls of the device node left before it appears.
    polls_left: u32,
}

#[derive(Debug, Default)]
struct State {
    services: BTreeMap<String, BTreeMap<String, FakeStream>>,
    /// HopIDs held by others (thunderbolt_net) per service: (in, out).
    reserved: BTreeMap<String, (BTreeSet<u16>, BTreeSet<u16>)>,
    files: BTreeMap<PathBuf, String>,
    max_hopid: u16,
    device_delay: u32,
    /// Ring frames the open streams may hold in all (`None`: no limit).
    ring_memory: Option<u32>,
    /// Calls of `open_device`, successful or not.
    opens: u64,
}

/// The fake tree. All methods take `&self`; state sits behind a mutex.
#[derive(Debug)]
pub struct FakeConfigfs {
    root: PathBuf,
    dev_dir: PathBuf,
    state: Mutex<State>,
}

/// Where a path points in the fake.
enum Loc {
    Root,
    Service(String),
    Stream(String, String),
    Attr(String, String, String),
    Dev(u32),
    Other,
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn components(p: &Path) -> Option<Vec<String>> {
    p.components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().map(str::to_owned),
            _ => None,
        })
        .collect()
}

const ATTRS: [&str; 5] = ["index", "in_hopid", "out_hopid", "ring_size", "throttling"];

impl FakeConfigfs {
    /// An empty tree at `root` (which exists, as when the module is
    /// loaded), with device nodes under `dev_dir`.
    pub fn new(root: impl Into<PathBuf>, dev_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            dev_dir: dev_dir.into(),
            state: Mutex::new(State {
                max_hopid: FAKE_MAX_HOPID,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the adapter's highest HopID.
    pub fn set_max_hopid(&self, max: u16) {
        self.lock().max_hopid = max;
    }

    /// Marks HopIDs on `service` as used by someone else (as
    /// `thunderbolt_net` holds 8/8 on its link).
    pub fn reserve_hopids(&self, service: &str, in_hopids: &[u16], out_hopids: &[u16]) {
        let mut st = self.lock();
        let r = st.reserved.entry(service.to_owned()).or_default();
        r.0.extend(in_hopids);
        r.1.extend(out_hopids);
    }

    /// Opens or closes the device of a stream (ENOENT if there is none).
    pub fn set_open(&self, service: &str, stream: &str, open: bool) -> io::Result<()> {
        let mut st = self.lock();
        let s = st
            .services
            .get_mut(service)
            .and_then(|m| m.get_mut(stream))
            .ok_or_else(|| err(ENOENT))?;
        s.open = open;
        Ok(())
    }

    /// Device nodes of streams created from now on appear only after
    /// `polls` calls of `exists` on them; `u32::MAX`: never.
    pub fn set_device_delay(&self, polls: u32) {
        self.lock().device_delay = polls;
    }

    /// The peer went away: its service directory disappears with all its
    /// streams (device nodes and HopIDs go with them). False if there was
    /// none.
    pub fn remove_service(&self, service: &str) -> bool {
        let mut st = self.lock();
        st.reserved.remove(service);
        st.services.remove(service).is_some()
    }

    /// The peer is back: its (empty) service directory reappears. False
    /// if it was there already.
    pub fn restore_service(&self, service: &str) -> bool {
        let mut st = self.lock();
        if st.services.contains_key(service) {
            return false;
        }
        st.services.insert(service.to_owned(), BTreeMap::new());
        true
    }

    /// DMA memory for rings, in 4 KiB frames over all open streams: an
    /// open that would exceed it fails with ENOMEM.
    pub fn set_ring_memory(&self, frames: Option<u32>) {
        self.lock().ring_memory = frames;
    }

    /// The driver's `open` of a device node: ENOENT when it does not
    /// exist, EINVAL while its HopIDs are unset, ENOMEM when its ring does
    /// not fit (see [`set_ring_memory`](Self::set_ring_memory)). Marks the
    /// stream open on success (attribute writes then give EBUSY).
    pub fn open_device(&self, path: &Path) -> io::Result<()> {
        let Loc::Dev(n) = self.locate(path) else {
            self.lock().opens += 1;
            return Err(err(ENOENT));
        };
        let mut st = self.lock();
        st.opens += 1;
        let limit = st.ring_memory;
        let in_use: u32 = st
            .services
            .values()
            .flat_map(|m| m.values())
            .filter(|s| s.open && s.index != n)
            .map(|s| s.ring_size)
            .sum();
        let s = st
            .services
            .values_mut()
            .flat_map(|m| m.values_mut())
            .find(|s| s.index == n && s.polls_left == 0)
            .ok_or_else(|| err(ENOENT))?;
        if s.in_hopid == 0 || s.out_hopid == 0 {
            return Err(err(EINVAL));
        }
        if limit.is_some_and(|l| in_use + s.ring_size > l) {
            return Err(err(ENOMEM));
        }
        s.open = true;
        Ok(())
    }

    /// How many times [`open_device`](Self::open_device) was called.
    pub fn opens(&self) -> u64 {
        self.lock().opens
    }

    /// Adds a plain file (e.g. a sysfs attribute) outside the tree.
    pub fn add_file(&self, path: impl Into<PathBuf>, content: &str) {
        self.lock().files.insert(path.into(), content.to_owned());
    }

    /// A snapshot of a stream.
    pub fn stream(&self, service: &str, stream: &str) -> Option<FakeStream> {
        self.lock().services.get(service)?.get(stream).cloned()
    }

    /// Names of the service directories.
    pub fn services(&self) -> Vec<String> {
        self.lock().services.keys().cloned().collect()
    }

    /// Device nodes that currently exist.
    pub fn device_nodes(&self) -> Vec<PathBuf> {
        let st = self.lock();
        st.services
            .values()
            .flat_map(|m| m.values())
            .filter(|s| s.polls_left == 0)
            .map(|s| self.dev_dir.join(format!("tbstream{}", s.index)))
            .collect()
    }

    fn locate(&self, path: &Path) -> Loc {
        if let Ok(rest) = path.strip_prefix(&self.root) {
            let Some(c) = components(rest) else {
                return Loc::Other;
            };
            return match c.as_slice() {
                [] => Loc::Root,
                [svc] => Loc::Service(svc.clone()),
                [svc, s] => Loc::Stream(svc.clone(), s.clone()),
                [svc, s, a] => Loc::Attr(svc.clone(), s.clone(), a.clone()),
                _ => Loc::Other,
            };
        }
        if let Ok(rest) = path.strip_prefix(&self.dev_dir) {
            if let Some([name]) = components(rest).as_deref() {
                if let Some(n) = name.strip_prefix("tbstream").and_then(|d| d.parse().ok()) {
                    return Loc::Dev(n);
                }
            }
        }
        Loc::Other
    }
}

/// Whether a directory location exists.
fn dir_exists(st: &State, loc: &Loc) -> bool {
    match loc {
        Loc::Root => true,
        Loc::Service(svc) => st.services.contains_key(svc),
        Loc::Stream(svc, s) => st.services.get(svc).is_some_and(|m| m.contains_key(s)),
        _ => false,
    }
}

/// EISDIR for an existing directory, ENOENT otherwise.
fn dir_error(st: &State, loc: &Loc) -> io::Error {
    err(if dir_exists(st, loc) { EISDIR } else { ENOENT })
}

/// Lowest index no stream uses.
fn free_index(st: &State) -> u32 {
    let used: BTreeSet<u32> = st
        .services
        .values()
        .flat_map(|m| m.values().map(|s| s.index))
        .collect();
    (0..).find(|i| !used.contains(i)).unwrap_or(u32::MAX)
}

/// HopIDs of one direction taken on `service` by others than `except`.
fn taken(st: &State, service: &str, except: &str, inbound: bool) -> BTreeSet<u16> {
    let mut t: BTreeSet<u16> = st
        .reserved
        .get(service)
        .map(|r| if inbound { r.0.clone() } else { r.1.clone() })
        .unwrap_or_default();
    if let Some(m) = st.services.get(service) {
        for (name, s) in m {
            if name != except {
                t.insert(if inbound { s.in_hopid } else { s.out_hopid });
            }
        }
    }
    t.remove(&0);
    t
}

fn write_attr(st: &mut State, svc: &str, name: &str, attr: &str, value: &str) -> io::Result<()> {
    let max = st.max_hopid;
    let inbound = attr == "in_hopid";
    let taken = taken(st, svc, name, inbound);
    let s = st
        .services
        .get_mut(svc)
        .and_then(|m| m.get_mut(name))
        .ok_or_else(|| err(ENOENT))?;
    match attr {
        "index" => return Err(err(EACCES)),
        a if !ATTRS.contains(&a) => return Err(err(ENOENT)),
        _ => {}
    }
    if s.open {
        return Err(err(EBUSY));
    }
    // kstrtoint: an optional trailing newline, nothing else.
    let text = value.strip_suffix('\n').unwrap_or(value);
    let v: i64 = text.parse().map_err(|_| err(EINVAL))?;
    match attr {
        "ring_size" => {
            let ok = u16::try_from(v).is_ok_and(|r| RING_SIZE_RANGE.contains(&r));
            s.ring_size = if ok {
                v as u32
            } else {
                return Err(err(EINVAL));
            };
        }
        "throttling" => {
            let ok = (0..=i64::from(MAX_THROTTLING_NS)).contains(&v);
            s.throttling = if ok {
                v as u32
            } else {
                return Err(err(EINVAL));
            };
        }
        _ => {
            let new = match v {
                -1 => (8..=max)
                    .find(|h| !taken.contains(h))
                    .ok_or_else(|| err(ENOSPC))?,
                0 => 0,
                v if (8..=i64::from(max)).contains(&v) => {
                    let h = v as u16;
                    if taken.contains(&h) {
                        return Err(err(EBUSY));
                    }
                    h
                }
                _ => return Err(err(EINVAL)),
            };
            if inbound {
                s.in_hopid = new;
            } else {
                s.out_hopid = new;
            }
        }
    }
    Ok(())
}

impl ConfigfsFs for FakeConfigfs {
    fn exists(&self, path: &Path) -> bool {
        let mut st = self.lock();
        match self.locate(path) {
            loc @ (Loc::Root | Loc::Service(_) | Loc::Stream(..)) => dir_exists(&st, &loc),
            Loc::Attr(svc, s, a) => {
                ATTRS.contains(&a.as_str())
                    && st.services.get(&svc).is_some_and(|m| m.contains_key(&s))
            }
            Loc::Dev(n) => {
                let Some(s) = st
                    .services
                    .values_mut()
                    .flat_map(|m| m.values_mut())
                    .find(|s| s.index == n)
                else {
                    return false;
                };
                if s.polls_left == 0 {
                    return true;
                }
                if s.polls_left != u32::MAX {
                    s.polls_left -= 1;
                }
                false
            }
            Loc::Other => st.files.contains_key(path),
        }
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        match self.locate(path) {
            Loc::Root => Err(err(EEXIST)),
            Loc::Service(svc) => {
                if svc.parse::<ServiceName>().is_err() {
                    return Err(err(EINVAL));
                }
                if st.services.contains_key(&svc) {
                    return Err(err(EEXIST));
                }
                st.services.insert(svc, BTreeMap::new());
                Ok(())
            }
            Loc::Stream(svc, name) => {
                if !st.services.contains_key(&svc) {
                    return Err(err(ENOENT));
                }
                if name.len() > MAX_STREAM_NAME {
                    return Err(err(ENAMETOOLONG));
                }
                let index = free_index(&st);
                let polls_left = st.device_delay;
                let m = st.services.get_mut(&svc).ok_or_else(|| err(ENOENT))?;
                if m.contains_key(&name) {
                    return Err(err(EEXIST));
                }
                m.insert(
                    name,
                    FakeStream {
                        index,
                        in_hopid: 0,
                        out_hopid: 0,
                        ring_size: 256,
                        throttling: 8192,
                        open: false,
                        polls_left,
                    },
                );
                Ok(())
            }
            // No subdirectories below a stream.
            Loc::Attr(..) => Err(err(EPERM)),
            Loc::Dev(_) | Loc::Other => Err(err(ENOENT)),
        }
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        match self.locate(path) {
            Loc::Root => Err(err(EBUSY)),
            Loc::Service(svc) => match st.services.get(&svc) {
                None => Err(err(ENOENT)),
                Some(m) if !m.is_empty() => Err(err(ENOTEMPTY)),
                Some(_) => {
                    st.services.remove(&svc);
                    Ok(())
                }
            },
            Loc::Stream(svc, name) => st
                .services
                .get_mut(&svc)
                .and_then(|m| m.remove(&name))
                .map(|_| ())
                .ok_or_else(|| err(ENOENT)),
            Loc::Attr(..) => Err(err(ENOTDIR)),
            Loc::Dev(_) | Loc::Other => Err(err(ENOENT)),
        }
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        let st = self.lock();
        match self.locate(path) {
            Loc::Attr(svc, name, attr) => {
                let s = st
                    .services
                    .get(&svc)
                    .and_then(|m| m.get(&name))
                    .ok_or_else(|| err(ENOENT))?;
                let v = match attr.as_str() {
                    "index" => s.index,
                    "in_hopid" => u32::from(s.in_hopid),
                    "out_hopid" => u32::from(s.out_hopid),
                    "ring_size" => s.ring_size,
                    "throttling" => s.throttling,
                    _ => return Err(err(ENOENT)),
                };
                Ok(format!("{v}\n"))
            }
            loc @ (Loc::Root | Loc::Service(_) | Loc::Stream(..)) => Err(dir_error(&st, &loc)),
            Loc::Dev(_) | Loc::Other => st.files.get(path).cloned().ok_or_else(|| err(ENOENT)),
        }
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut st = self.lock();
        match self.locate(path) {
            Loc::Attr(svc, name, attr) => write_attr(&mut st, &svc, &name, &attr, value),
            loc @ (Loc::Root | Loc::Service(_) | Loc::Stream(..)) => Err(dir_error(&st, &loc)),
            Loc::Dev(_) | Loc::Other => match st.files.get_mut(path) {
                Some(f) => {
                    value.clone_into(f);
                    Ok(())
                }
                None => Err(err(ENOENT)),
            },
        }
    }

    fn list_dir(&self, path: &Path, limit: usize) -> io::Result<Vec<String>> {
        let st = self.lock();
        let names: Vec<String> = match self.locate(path) {
            Loc::Root => st.services.keys().cloned().collect(),
            Loc::Service(svc) => match st.services.get(&svc) {
                Some(m) => m.keys().cloned().collect(),
                None => return Err(err(ENOENT)),
            },
            Loc::Stream(svc, s) => {
                if !st.services.get(&svc).is_some_and(|m| m.contains_key(&s)) {
                    return Err(err(ENOENT));
                }
                ATTRS.iter().map(|a| (*a).to_owned()).collect()
            }
            Loc::Attr(..) | Loc::Dev(_) => return Err(err(ENOTDIR)),
            // Directories of added files: every name one level below.
            Loc::Other => {
                let set: BTreeSet<String> = st
                    .files
                    .keys()
                    .filter_map(|f| f.strip_prefix(path).ok())
                    .filter_map(|rest| rest.components().next())
                    .filter_map(|c| c.as_os_str().to_str().map(str::to_owned))
                    .filter(|n| !n.is_empty())
                    .collect();
                if set.is_empty() {
                    return Err(err(ENOENT));
                }
                set.into_iter().collect()
            }
        };
        Ok(names.into_iter().take(limit).collect())
    }
}

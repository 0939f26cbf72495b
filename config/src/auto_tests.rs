use std::path::Path;

use super::*;
use crate::configfs::fake::FakeConfigfs;
use crate::{DeviceConfig, HopId};

const A: &str = "0a0a0a0a-0000-0000-0000-00000000000a";
const B: &str = "0b0b0b0b-0000-0000-0000-00000000000b";
const C: &str = "0c0c0c0c-0000-0000-0000-00000000000c";

fn id(s: &str) -> HostId {
    s.parse().expect("uuid")
}

/// A host whose kernel found the given peers: (route, unique_id, name).
fn host(me: &str, peers: &[(u64, &str, &str)]) -> (FakeConfigfs, HostRoot) {
    let root = HostRoot::under(Path::new("/h"));
    let fs = FakeConfigfs::new(&root.configfs, &root.dev);
    fs.add_file(root.sysfs.join("0-0/unique_id"), &format!("{me}\n"));
    for (route, uid, name) in peers {
        let dev = root.sysfs.join(format!("0-{route:x}"));
        fs.add_file(dev.join("unique_id"), &format!("{uid}\n"));
        fs.add_file(dev.join("device_name"), &format!("{name}\n"));
        fs.add_file(dev.join("vendor_name"), "Example Inc.\n");
        assert!(fs.restore_service(&format!("0-{route:x}.0")));
    }
    (fs, root)
}

#[test]
fn discovery_lists_each_peer_with_its_sysfs_facts() {
    let (fs, root) = host(A, &[(3, C, "laptop-c"), (1, B, "laptop-b")]);
    let peers = discover(&fs, &root).expect("discover");
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].service.as_str(), "0-1.0");
    assert_eq!(peers[0].unique_id, Some(id(B)));
    assert_eq!(peers[0].device_name.as_deref(), Some("laptop-b"));
    assert_eq!(peers[1].service.as_str(), "0-3.0");
    assert_eq!(peers[1].device, "0-3");
    let shown = peers[1].to_string();
    assert!(
        shown.contains("laptop-c") && shown.contains("Example Inc.") && shown.contains(C),
        "{shown}"
    );
    let (me, src) = local_identity(&fs, &root, 0).expect("identity");
    assert_eq!(me, id(A));
    assert!(matches!(src, IdSource::HostRouter(_)), "{src:?}");
}

#[test]
fn no_peer_is_an_empty_list_and_a_missing_driver_an_error() {
    let (fs, root) = host(A, &[]);
    assert!(discover(&fs, &root).expect("discover").is_empty());
    let sys = HostRoot::system();
    let fs = FakeConfigfs::new("/elsewhere", "/dev");
    assert!(matches!(
        discover(&fs, &sys),
        Err(AutoError::RootMissing(p)) if p == sys.configfs
    ));
}

#[test]
fn both_ends_derive_the_same_pair_and_never_the_same_address() {
    let (a, b) = (id(A), id(B));
    let (a_mine, a_peer) = v4_pair(a, b).expect("pair");
    let (b_mine, b_peer) = v4_pair(b, a).expect("pair");
    assert_eq!((a_mine, a_peer), (b_peer, b_mine), "both agree");
    assert_ne!(a_mine, b_mine);
    // A has the lower identity: .1.
    assert_eq!(a_mine.octets()[3] % 4, 1);
    assert_eq!(b_mine.octets()[3] % 4, 2);
    let o = a_mine.octets();
    assert_eq!((o[0], o[1]), (169, 254));
    assert!((1..=254).contains(&o[2]), "{a_mine}");
    // Another pair on another cable: another /30.
    let (c_mine, _) = v4_pair(b, id(C)).expect("pair");
    let block = |x: Ipv4Addr| u32::from(x) & !3;
    assert_ne!(block(c_mine), block(b_mine));
    assert!(v4_pair(a, a).is_none());
    // Link-local: fe80::/64, one per host.
    let (la, lb) = (link_local(a), link_local(b));
    assert_eq!(la.segments()[..4], [0xfe80, 0, 0, 0]);
    assert_ne!(la, lb);
    assert!(matches!(
        derive_addresses(a, Some(a)),
        Err(AutoError::SameIdentity(_))
    ));
}

#[test]
fn every_pair_lands_in_the_range() {
    // 2,000 pairs: all inside 169.254.1.0-169.254.254.255, .1/.2 of a /30.
    for i in 0u32..2000 {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&i.to_be_bytes());
        let mut y = x;
        y[15] = 0xff;
        let (m, p) = v4_pair(HostId(x), HostId(y)).expect("pair");
        let (m, p) = (u32::from(m), u32::from(p));
        assert_eq!(m & !3, p & !3);
        assert!(m >= V4_FIRST && p < V4_FIRST + V4_BLOCKS * 4);
    }
}

#[test]
fn the_printed_config_is_a_valid_config_of_the_same_setup() {
    let (fs, root) = host(A, &[(1, B, "laptop-b")]);
    let peer = discover(&fs, &root).expect("discover").remove(0);
    let choice = AutoChoice {
        instance: AUTO_INSTANCE.to_owned(),
        peer,
        local: local_identity(&fs, &root, 0).expect("identity"),
        root: root.clone(),
    };
    let text = config_text(&choice).expect("text");
    let cfg = crate::parse(&text, Path::new("auto.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let DeviceConfig::Configfs(c) = &cfg.device else {
        panic!("not configfs: {:?}", cfg.device);
    };
    assert_eq!(c.service.as_str(), "0-1.0");
    assert_eq!(c.stream.as_str(), AUTO_STREAM);
    assert_eq!(
        (c.in_hopid, c.out_hopid),
        (HopId::Fixed(16), HopId::Fixed(16))
    );
    assert_eq!(c.root, root.configfs);
    assert_eq!(c.sysfs_root, root.sysfs);
    let i = cfg.interface.expect("interface");
    assert_eq!(i.name.as_str(), "tb0");
    let a = choice.addresses().expect("addresses");
    let (v4, _) = a.v4.expect("v4");
    let got: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(got, [format!("{v4}/30"), format!("{}/64", a.v6)]);
    assert_eq!(cfg.host.id, Some(id(A)));
    assert_eq!(cfg.host.peer_id, Some(id(B)));
}

#[test]
fn an_emulated_peer_uses_its_cable_end() {
    let (fs, root) = host(A, &[(1, B, "laptop-b")]);
    let emu = root.emu.clone().expect("fake host");
    fs.add_file(emu.join("0-1.0"), "emu:lab/a\n");
    let peer = discover(&fs, &root).expect("discover").remove(0);
    assert_eq!(peer.emu, Some("emu:lab/a".parse().expect("spec")));
    let choice = AutoChoice {
        instance: "lab0".to_owned(),
        peer,
        local: local_identity(&fs, &root, 0).expect("identity"),
        root,
    };
    let text = config_text(&choice).expect("text");
    let cfg = crate::parse(&text, Path::new("auto.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        cfg.device,
        DeviceConfig::Path("emu:lab/a".parse().expect("spec"))
    );
}

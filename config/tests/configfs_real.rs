//! The real-filesystem implementation against a tempdir standing in for
//! configfs, /dev and sysfs: paths and file formats.

use std::fs;
use std::path::Path;
use std::time::Duration;

use tbbridge_config::configfs::errno::{ENOENT, ENOTEMPTY};
use tbbridge_config::configfs::{
    read_link_info, remove_stream_with, setup, setup_with, teardown, ConfigfsError, ConfigfsFs,
    RealFs,
};
use tbbridge_config::{ConfigfsStream, HopId};

struct Tree {
    _dir: tempfile::TempDir,
    c: ConfigfsStream,
}

/// A tempdir with `cfs/` (the root), `dev/` and `sys/`.
fn tree() -> Tree {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("cfs");
    for d in ["cfs", "dev", "sys"] {
        fs::create_dir(dir.path().join(d)).expect("mkdir");
    }
    let mut c = ConfigfsStream::new(
        "0-1.0".parse().expect("svc"),
        "tbb0".parse().expect("stream"),
    );
    c.root = root;
    c.dev_dir = dir.path().join("dev");
    c.sysfs_root = dir.path().join("sys");
    c.device_wait = Duration::from_millis(100);
    Tree { _dir: dir, c }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).expect("read")
}

#[test]
fn writes_attributes_like_echo() {
    let t = tree();
    let c = &t.c;
    // What the driver would have created on mkdir: the directory, `index`
    // and the device node.
    fs::create_dir_all(c.stream_dir()).expect("stream dir");
    fs::write(c.stream_dir().join("index"), "3\n").expect("index");
    fs::write(c.dev_dir.join("tbstream3"), "").expect("node");
    for (f, v) in [
        ("rx_speed", "20.0 Gb/s\n"),
        ("rx_lanes", "2\n"),
        ("tx_speed", "10.0 Gb/s\n"),
        ("tx_lanes", "2\n"),
    ] {
        fs::create_dir_all(c.sysfs_root.join("0-1")).expect("sys dir");
        fs::write(c.sysfs_root.join("0-1").join(f), v).expect("sys file");
    }

    let s = setup(c).expect("setup");
    assert_eq!(s.index, 3);
    assert_eq!(s.dev_path, c.dev_dir.join("tbstream3"));
    assert!(!s.created_service && !s.created_stream);
    let dir = c.stream_dir();
    assert_eq!(read(&dir.join("ring_size")), "2048\n");
    assert_eq!(read(&dir.join("throttling")), "4096\n");
    assert_eq!(read(&dir.join("in_hopid")), "16\n");
    assert_eq!(read(&dir.join("out_hopid")), "16\n");
    assert_eq!(
        (s.in_hopid, s.out_hopid, s.ring_size, s.throttling),
        (16, 16, 2048, 4096)
    );
    assert_eq!(s.link.rx_gbps(), Some(40));
    assert_eq!(s.link.tx_gbps(), Some(20));
    assert!(s
        .link
        .below_rate()
        .expect("tx below")
        .contains("tx 2 × 10 Gb/s = 20 Gb/s"));

    // Unchanged values are not rewritten (mtime would tell, content is the same).
    let s2 = setup(c).expect("again");
    assert_eq!(s2, s);
}

#[test]
fn creates_directories_and_rolls_back() {
    let t = tree();
    let c = &t.c;
    // A plain directory has no `index`: the read fails after both mkdirs,
    // and both directories are removed again.
    let e = setup_with(&RealFs, c).expect_err("no index");
    assert_eq!(e.errno(), Some(ENOENT));
    let msg = e.to_string();
    assert!(
        msg.starts_with("reading ") && msg.contains("cfs/0-1.0/tbb0/index"),
        "{msg}"
    );
    assert!(!c.service_dir().exists(), "rolled back");
}

#[test]
fn missing_root_and_bad_attributes() {
    let t = tree();
    let mut c = t.c.clone();
    c.root = c.root.join("missing");
    assert!(matches!(setup(&c), Err(ConfigfsError::RootMissing { .. })));

    let c = &t.c;
    fs::create_dir_all(c.stream_dir()).expect("dir");
    fs::write(c.stream_dir().join("index"), "three\n").expect("index");
    let e = setup(c).expect_err("bad index");
    assert!(matches!(e, ConfigfsError::BadAttribute { .. }), "{e:?}");
    assert!(e.to_string().contains("\"three\\n\""), "{e}");

    // A HopID that reads back as 0 (released).
    fs::write(c.stream_dir().join("index"), "0\n").expect("index");
    let mut auto = c.clone();
    auto.in_hopid = HopId::Auto; // writes -1, which a plain file keeps as -1
    let e = setup(&auto).expect_err("-1 is not a HopID");
    assert!(matches!(e, ConfigfsError::HopIdUnset { .. }), "{e:?}");
}

#[test]
fn device_node_timeout() {
    let t = tree();
    let c = &t.c;
    fs::create_dir_all(c.stream_dir()).expect("dir");
    fs::write(c.stream_dir().join("index"), "7\n").expect("index");
    let e = setup(c).expect_err("no node");
    assert!(matches!(e, ConfigfsError::DeviceTimeout { .. }));
    assert!(
        e.to_string().contains("tbstream7 did not appear within"),
        "{e}"
    );
    assert!(c.stream_dir().exists(), "not ours: kept");
}

#[test]
fn teardown_removes_the_stream_dir() {
    let t = tree();
    let c = &t.c;
    fs::create_dir_all(c.stream_dir()).expect("dir");
    fs::write(c.stream_dir().join("index"), "0\n").expect("index");
    fs::write(c.dev_dir.join("tbstream0"), "").expect("node");
    let mut s = setup(c).expect("setup");
    // A tempdir is not configfs: the attribute files block rmdir.
    let e = teardown(c, &s).expect_err("not empty");
    assert_eq!(e.errno(), Some(ENOTEMPTY));
    assert!(e.to_string().starts_with("removing "), "{e}");
    for f in ["index", "in_hopid", "out_hopid", "ring_size", "throttling"] {
        fs::remove_file(c.stream_dir().join(f)).expect("rm");
    }
    s.created_service = true;
    teardown(c, &s).expect("teardown");
    assert!(!c.stream_dir().exists());
    assert!(!c.service_dir().exists(), "created by us and empty");
    remove_stream_with(&RealFs, c).expect("gone is fine");
}

#[test]
fn real_fs_primitives() {
    let t = tree();
    let p = t.c.root.join("attr");
    RealFs.write(&p, "42").expect("write");
    assert_eq!(RealFs.read(&p).expect("read"), "42\n");
    RealFs.write(&p, "7").expect("rewrite truncates");
    assert_eq!(read(&p), "7\n");
    assert!(RealFs.exists(&p));
    let d = t.c.root.join("d");
    RealFs.mkdir(&d).expect("mkdir");
    assert!(RealFs.mkdir(&d).is_err());
    RealFs.rmdir(&d).expect("rmdir");
    assert!(!RealFs.exists(&d));
    // Link info with nothing in sysfs: all unknown.
    let info = read_link_info(&RealFs, &t.c.sysfs_root, &t.c.service);
    assert!(!info.is_known());
    assert_eq!(info.device, "0-1");
}

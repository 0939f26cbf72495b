//! configfs setup and teardown against the fake driver of spec §1.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tbbridge_config::configfs::errno::*;
use tbbridge_config::configfs::fake::{FakeConfigfs, FAKE_MAX_HOPID};
use tbbridge_config::configfs::{
    remove_stream_with, setup_with, teardown_with, ConfigfsError, ConfigfsFs,
};
use tbbridge_config::{ConfigfsStream, HopId};

const ROOT: &str = "/cfg/thunderbolt/stream";
const DEV: &str = "/fakedev";
const SYS: &str = "/fakesys";

fn fake() -> FakeConfigfs {
    FakeConfigfs::new(ROOT, DEV)
}

fn stream(service: &str, name: &str) -> ConfigfsStream {
    let mut c = ConfigfsStream::new(
        service.parse().expect("service"),
        name.parse().expect("stream"),
    );
    c.root = PathBuf::from(ROOT);
    c.dev_dir = PathBuf::from(DEV);
    c.sysfs_root = PathBuf::from(SYS);
    c.device_wait = Duration::from_millis(200);
    c
}

fn errno_of(r: io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn setup_with_defaults() {
    let fs = fake();
    let c = stream("0-1.0", "tbb0");
    let s = setup_with(&fs, &c).expect("setup");
    assert_eq!(s.index, 0);
    assert_eq!(s.dev_path, PathBuf::from("/fakedev/tbstream0"));
    assert_eq!((s.in_hopid, s.out_hopid), (16, 16));
    assert_eq!((s.ring_size, s.throttling), (2048, 4096));
    assert_eq!(
        s.stream_dir,
        PathBuf::from("/cfg/thunderbolt/stream/0-1.0/tbb0")
    );
    assert!(s.created_service && s.created_stream);
    let f = fs.stream("0-1.0", "tbb0").expect("stream exists");
    assert_eq!(
        (f.index, f.in_hopid, f.out_hopid, f.ring_size, f.throttling),
        (0, 16, 16, 2048, 4096)
    );
    assert_eq!(fs.device_nodes(), [PathBuf::from("/fakedev/tbstream0")]);
    // No sysfs files: link unknown, no warning.
    assert!(!s.link.is_known());
    assert_eq!(s.link.device, "0-1");
    assert_eq!(s.link.below_rate(), None);

    teardown_with(&fs, &c, &s).expect("teardown");
    assert!(fs.stream("0-1.0", "tbb0").is_none());
    assert!(
        fs.services().is_empty(),
        "service dir removed: setup created it"
    );
    assert!(fs.device_nodes().is_empty());
    // Idempotent.
    teardown_with(&fs, &c, &s).expect("second teardown");
}

#[test]
fn indexes_and_taken_hopids() {
    let fs = fake();
    let a = setup_with(&fs, &stream("0-1.0", "a")).expect("a");
    // Same service, same pinned HopIDs: EBUSY, rolled back.
    let e = setup_with(&fs, &stream("0-1.0", "b")).expect_err("taken");
    assert!(e.is_busy(), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("HopID 16 is taken"), "{msg}");
    assert!(msg.contains("in_hopid"), "{msg}");
    assert!(fs.stream("0-1.0", "b").is_none(), "rolled back");
    assert_eq!(
        fs.services(),
        ["0-1.0"],
        "the service dir stays: it was not ours"
    );
    // Other HopIDs work and get the next index.
    let mut c = stream("0-1.0", "b");
    c.in_hopid = HopId::Fixed(17);
    c.out_hopid = HopId::Fixed(17);
    let b = setup_with(&fs, &c).expect("b");
    assert_eq!((a.index, b.index), (0, 1));
    assert!(!b.created_service && b.created_stream);
    // Another service (another link) has its own HopID space.
    let other = setup_with(&fs, &stream("1-3.0", "a")).expect("other link");
    assert_eq!(other.index, 2);
    assert_eq!(other.in_hopid, 16);
    // Teardown of `a` (which created the service) leaves the service for b.
    teardown_with(&fs, &stream("0-1.0", "a"), &a).expect("teardown a");
    assert!(fs.services().contains(&"0-1.0".to_owned()));
    // The lowest free index is reused.
    let again = setup_with(&fs, &stream("0-1.0", "c")).expect("c");
    assert_eq!(again.index, 0);
}

#[test]
fn automatic_hopids_refuse_thunderbolt_net_ones() {
    // Nothing else on the link: -1 would take 8, which thunderbolt_net needs.
    let fs = fake();
    let mut c = stream("0-1.0", "auto");
    c.in_hopid = HopId::Auto;
    c.out_hopid = HopId::Auto;
    let e = setup_with(&fs, &c).expect_err("8 refused");
    assert!(
        matches!(
            e,
            ConfigfsError::NetHopId {
                attr: "in_hopid",
                hopid: 8
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("thunderbolt_net"), "{e}");
    assert!(e.to_string().contains("allow_net_hopids"), "{e}");
    assert!(fs.services().is_empty(), "everything rolled back");

    // thunderbolt_net holds 8 (in and out): -1 then lands on 9, still refused.
    fs.reserve_hopids("0-1.0", &[8], &[8]);
    let e = setup_with(&fs, &c).expect_err("9 refused");
    assert!(
        matches!(e, ConfigfsError::NetHopId { hopid: 9, .. }),
        "{e:?}"
    );

    // When 8 and 9 are held, -1 gets 10.
    fs.reserve_hopids("0-1.0", &[9], &[9]);
    let s = setup_with(&fs, &c).expect("10");
    assert_eq!((s.in_hopid, s.out_hopid), (10, 10));
    teardown_with(&fs, &c, &s).expect("teardown");

    // Asked for explicitly: 8/9 are fine.
    let fs = fake();
    c.allow_net_hopids = true;
    let s = setup_with(&fs, &c).expect("allowed");
    assert_eq!((s.in_hopid, s.out_hopid), (8, 8));
    // Pinned 8 is explicit configuration, allowed without the flag.
    let fs = fake();
    let mut p = stream("0-1.0", "pin");
    p.in_hopid = HopId::Fixed(8);
    p.out_hopid = HopId::Fixed(9);
    let s = setup_with(&fs, &p).expect("pinned");
    assert_eq!((s.in_hopid, s.out_hopid), (8, 9));
}

#[test]
fn automatic_hopid_kept_on_restart() {
    let fs = fake();
    fs.reserve_hopids("0-1.0", &[8, 9], &[8, 9]);
    let mut c = stream("0-1.0", "auto");
    c.in_hopid = HopId::Auto;
    let s1 = setup_with(&fs, &c).expect("first");
    assert_eq!(s1.in_hopid, 10);
    // `up` again without `down` (e.g. after a crash): the stream is reused.
    let s2 = setup_with(&fs, &c).expect("second");
    assert_eq!((s2.index, s2.in_hopid, s2.out_hopid), (s1.index, 10, 16));
    assert!(!s2.created_stream && !s2.created_service);
}

#[test]
fn ebusy_while_open_is_reported_clearly() {
    let fs = fake();
    let mut c = stream("0-1.0", "tbb0");
    setup_with(&fs, &c).expect("setup");
    fs.set_open("0-1.0", "tbb0", true).expect("open");
    // Same values: nothing to write, so an open device is fine.
    setup_with(&fs, &c).expect("idempotent while open");
    // A change while open: EBUSY, naming the device.
    c.ring_size = 512;
    let e = setup_with(&fs, &c).expect_err("busy");
    assert!(e.is_busy());
    let msg = e.to_string();
    assert!(msg.contains("/fakedev/tbstream0 is open"), "{msg}");
    assert!(msg.contains("ring_size"), "{msg}");
    // The stream existed before: not removed on failure.
    assert!(fs.stream("0-1.0", "tbb0").is_some());
    fs.set_open("0-1.0", "tbb0", false).expect("close");
    let s = setup_with(&fs, &c).expect("closed now");
    assert_eq!(s.ring_size, 512);
}

#[test]
fn waits_for_the_device_node() {
    let fs = fake();
    fs.set_device_delay(3);
    let s = setup_with(&fs, &stream("0-1.0", "slow")).expect("appears after 3 polls");
    assert_eq!(s.index, 0);

    let fs = fake();
    fs.set_device_delay(u32::MAX);
    let mut c = stream("0-1.0", "never");
    c.device_wait = Duration::from_millis(50);
    let e = setup_with(&fs, &c).expect_err("timeout");
    assert!(matches!(e, ConfigfsError::DeviceTimeout { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("/fakedev/tbstream0 did not appear within"),
        "{e}"
    );
    assert!(fs.services().is_empty(), "rolled back");
}

#[test]
fn missing_root() {
    let fs = fake();
    let mut c = stream("0-1.0", "tbb0");
    c.root = PathBuf::from("/nowhere");
    let e = setup_with(&fs, &c).expect_err("no root");
    assert!(matches!(e, ConfigfsError::RootMissing { .. }));
    assert!(e.to_string().contains("thunderbolt_stream"), "{e}");
}

#[test]
fn link_info_from_sysfs() {
    let fs = fake();
    for (f, v) in [
        ("rx_speed", "20.0 Gb/s\n"),
        ("rx_lanes", "2\n"),
        ("tx_speed", "20.0 Gb/s\n"),
        ("tx_lanes", "2\n"),
    ] {
        fs.add_file(Path::new(SYS).join("0-1").join(f), v);
    }
    let s = setup_with(&fs, &stream("0-1.0", "tbb0")).expect("setup");
    assert_eq!(s.link.rx_gbps(), Some(40));
    assert_eq!(s.link.tx_gbps(), Some(40));
    assert_eq!(s.link.below_rate(), None);

    fs.add_file(Path::new(SYS).join("0-1/rx_lanes"), "1\n");
    let s = setup_with(&fs, &stream("0-1.0", "tbb0")).expect("again");
    let w = s.link.below_rate().expect("one lane is below rate");
    assert!(w.contains("link 0-1 trained below its rate"), "{w}");
}

#[test]
fn remove_stream_without_setup_state() {
    let fs = fake();
    let c = stream("0-1.0", "tbb0");
    setup_with(&fs, &c).expect("setup");
    remove_stream_with(&fs, &c).expect("remove");
    assert!(fs.stream("0-1.0", "tbb0").is_none());
    assert_eq!(fs.services(), ["0-1.0"]);
    remove_stream_with(&fs, &c).expect("already gone is fine");
}

/// The fake itself behaves like the table of spec §1.
#[test]
fn fake_follows_the_spec() {
    let fs = fake();
    let root = Path::new(ROOT);
    let svc = root.join("0-1.0");
    let st = svc.join("s");
    // Service names must parse as %u-%llx.%u.
    assert_eq!(errno_of(fs.mkdir(&root.join("0-1"))), Some(EINVAL));
    assert_eq!(errno_of(fs.mkdir(&root.join("x-1.0"))), Some(EINVAL));
    assert_eq!(errno_of(fs.mkdir(&svc.join("s"))), Some(ENOENT));
    fs.mkdir(&svc).expect("service");
    assert_eq!(errno_of(fs.mkdir(&svc)), Some(EEXIST));
    // Stream names: at most 8 characters.
    assert_eq!(
        errno_of(fs.mkdir(&svc.join("123456789"))),
        Some(ENAMETOOLONG)
    );
    fs.mkdir(&st).expect("stream");
    assert_eq!(errno_of(fs.mkdir(&st.join("sub"))), Some(EPERM));
    // Attributes and their defaults.
    assert_eq!(fs.read(&st.join("index")).expect("index"), "0\n");
    assert_eq!(fs.read(&st.join("ring_size")).expect("ring"), "256\n");
    assert_eq!(fs.read(&st.join("throttling")).expect("thr"), "8192\n");
    assert_eq!(fs.read(&st.join("in_hopid")).expect("hop"), "0\n");
    assert!(
        fs.exists(Path::new("/fakedev/tbstream0")),
        "device registered at mkdir"
    );
    assert_eq!(errno_of(fs.write(&st.join("index"), "3")), Some(EACCES));
    assert_eq!(errno_of(fs.write(&st.join("nope"), "3")), Some(ENOENT));
    // ring_size 32..=4096, throttling 0..=16776960, numbers only.
    assert_eq!(
        errno_of(fs.write(&st.join("ring_size"), "31")),
        Some(EINVAL)
    );
    assert_eq!(
        errno_of(fs.write(&st.join("ring_size"), "4097")),
        Some(EINVAL)
    );
    assert_eq!(
        errno_of(fs.write(&st.join("ring_size"), "abc")),
        Some(EINVAL)
    );
    fs.write(&st.join("ring_size"), "4096\n").expect("max ring");
    assert_eq!(
        errno_of(fs.write(&st.join("throttling"), "16776961")),
        Some(EINVAL)
    );
    assert_eq!(
        errno_of(fs.write(&st.join("throttling"), "-1")),
        Some(EINVAL)
    );
    fs.write(&st.join("throttling"), "0")
        .expect("no throttling");
    // HopIDs: 8..=max, -1 automatic from 8 up, 0 releases.
    assert_eq!(errno_of(fs.write(&st.join("in_hopid"), "7")), Some(EINVAL));
    assert_eq!(
        errno_of(fs.write(&st.join("in_hopid"), &(FAKE_MAX_HOPID + 1).to_string())),
        Some(EINVAL)
    );
    fs.write(&st.join("in_hopid"), "-1").expect("auto");
    assert_eq!(fs.read(&st.join("in_hopid")).expect("read"), "8\n");
    fs.write(&st.join("out_hopid"), "8")
        .expect("out space is separate");
    // A second stream: 8 is taken for it.
    let st2 = svc.join("t");
    fs.mkdir(&st2).expect("second");
    assert_eq!(fs.read(&st2.join("index")).expect("index"), "1\n");
    assert_eq!(errno_of(fs.write(&st2.join("in_hopid"), "8")), Some(EBUSY));
    fs.write(&st2.join("in_hopid"), "-1").expect("auto");
    assert_eq!(fs.read(&st2.join("in_hopid")).expect("read"), "9\n");
    // Release and reuse.
    fs.write(&st.join("in_hopid"), "0").expect("release");
    fs.write(&st2.join("in_hopid"), "8").expect("now free");
    // Exhaustion: ENOSPC.
    fs.set_max_hopid(8);
    assert_eq!(errno_of(fs.write(&st.join("in_hopid"), "-1")), Some(ENOSPC));
    // Open: every writable attribute is EBUSY.
    fs.set_open("0-1.0", "s", true).expect("open");
    for a in ["in_hopid", "out_hopid", "ring_size", "throttling"] {
        assert_eq!(errno_of(fs.write(&st.join(a), "64")), Some(EBUSY), "{a}");
    }
    // rmdir: the service is not empty; a stream goes with its device.
    assert_eq!(errno_of(fs.rmdir(&svc)), Some(ENOTEMPTY));
    fs.rmdir(&st).expect("rmdir while open is allowed");
    assert!(!fs.exists(Path::new("/fakedev/tbstream0")));
    assert_eq!(errno_of(fs.rmdir(&st)), Some(ENOENT));
    fs.rmdir(&st2).expect("rmdir");
    fs.rmdir(&svc).expect("empty service");
    assert!(fs.set_open("0-1.0", "s", true).is_err());
    let read_errno = |p: &Path| fs.read(p).err().and_then(|e| e.raw_os_error());
    assert_eq!(read_errno(&svc), Some(ENOENT));
    assert_eq!(read_errno(root), Some(EISDIR));
}

//! A peer reboot on real hardware, against the fake configfs driver and the
//! in-process emulated cable: the peer's XDomain service goes away, the
//! kernel removes our service directory with the stream and its device
//! node; when the peer is back, the bridge creates the stream again with
//! the same settings and reconnects by itself. Also: ENOMEM on open names
//! `ring_size`, and failed opens back off instead of hammering.
//!
//! No root needed: nothing here touches the system.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tbbridge::daemon::provision::{DeviceOpen, Provisioner};
use tbbridge_config::configfs::fake::FakeConfigfs;
use tbbridge_config::{ConfigfsStream, HopId};
use tbbridge_tests::pattern;
use tbbridge_transport::device::emu::{CableOptions, EmuCable};
use tbbridge_transport::pump::{random_session_id, Bridge};
use tbbridge_transport::{CableEnd, ChannelKind, Class, SessionConfig};

const ROOT: &str = "/cfg/thunderbolt/stream";
const DEV: &str = "/fakedev";
const SERVICE: &str = "0-1.0";

fn stream_config(ring_size: u16) -> ConfigfsStream {
    let mut c = ConfigfsStream::new(
        SERVICE.parse().expect("service"),
        "tbb0".parse().expect("stream"),
    );
    c.root = PathBuf::from(ROOT);
    c.dev_dir = PathBuf::from(DEV);
    c.sysfs_root = PathBuf::from("/fakesys");
    c.device_wait = Duration::from_millis(500);
    c.in_hopid = HopId::Fixed(16);
    c.out_hopid = HopId::Fixed(17);
    c.ring_size = ring_size;
    c.throttling = 2048;
    c
}

/// Host A: its fake configfs (the peer's service directory present, as
/// when the peer is plugged in) and a provisioner whose device nodes open
/// end A of the cable once the fake driver's `open` succeeds.
fn host_a(cable: &Arc<EmuCable>, ring_size: u16) -> (Arc<FakeConfigfs>, Arc<Provisioner>) {
    let fake = Arc::new(FakeConfigfs::new(ROOT, DEV));
    assert!(fake.restore_service(SERVICE), "service directory appears");
    let (f, cable) = (fake.clone(), cable.clone());
    let open: DeviceOpen = Arc::new(move |path| {
        let (f, cable) = (f.clone(), cable.clone());
        Box::pin(async move {
            f.open_device(&path)?;
            cable.open_async(CableEnd::A).await
        })
    });
    let p = Provisioner::setup(&stream_config(ring_size), fake.clone(), open).expect("setup");
    (fake, p)
}

/// The peer host: a bridge on end B in a runtime of its own, so that its
/// "reboot" (the runtime shut down, no goodbye) kills it as a power cycle
/// would. Echoes every stream channel on service "echo".
struct Peer {
    rt: Option<tokio::runtime::Runtime>,
    bridge: Bridge,
}

impl Peer {
    fn boot(cable: &Arc<EmuCable>) -> Peer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let bridge = {
            let _g = rt.enter();
            Bridge::on_emu(cable, CableEnd::B, SessionConfig::default())
        };
        let b = bridge.clone();
        rt.spawn(async move {
            let mut l = b.listen("echo").expect("listen");
            while let Some(ch) = l.accept().await {
                tokio::spawn(async move {
                    while let Ok(Some(data)) = ch.recv(1 << 20).await {
                        if ch.send(data).await.is_err() {
                            return;
                        }
                    }
                    let _ = ch.finish();
                    while ch.unacked() > 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                });
            }
        });
        Peer {
            rt: Some(rt),
            bridge,
        }
    }

    /// Power off: every task of the peer stops where it is.
    fn power_off(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Sends 1 MiB through the peer's echo service and checks it comes back.
async fn echo_round(a: &Bridge, seed: u8) {
    let data = pattern(seed, 1 << 20);
    let ch = a
        .open(ChannelKind::Stream, Class::Bulk, "echo")
        .await
        .expect("open echo channel");
    let ch = Arc::new(ch);
    // Sent from a task of its own while this one reads: the echo comes
    // back while the rest is still going out, and windows are finite.
    let tx = ch.clone();
    let rest: Bytes = data.clone();
    let sender = tokio::spawn(async move {
        tx.send(rest).await.expect("send");
        tx.finish().expect("finish");
    });
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        let mut got = Vec::new();
        while let Some(b) = ch.recv(1 << 20).await.expect("recv") {
            got.extend_from_slice(&b);
        }
        got
    })
    .await
    .expect("echo within 30 s");
    sender.await.expect("sender");
    assert!(
        got == data[..],
        "echo differs ({} of {} bytes)",
        got.len(),
        data.len()
    );
}

async fn connected_within(a: &Bridge, secs: u64) {
    tokio::time::timeout(Duration::from_secs(secs), a.connected())
        .await
        .expect("connected in time")
        .expect("connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reboot_recreates_the_stream_and_reconnects() {
    let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
    let (fake, p) = host_a(&cable, 1024);
    let first = p.current().expect("stream created");
    let a = Bridge::start(p.opener(), SessionConfig::default(), random_session_id());
    let peer = Peer::boot(&cable);
    connected_within(&a, 10).await;
    let first_peer = a.peer_id();
    assert_eq!(first_peer, Some(peer.bridge.local_id()));
    echo_round(&a, 1).await;

    // The peer reboots: its service goes away, and with it our stream and
    // its node; the link drops.
    peer.power_off();
    assert!(fake.remove_service(SERVICE));
    cable.unplug().expect("unplug");
    let mut st = a.status();
    tokio::time::timeout(Duration::from_secs(10), st.wait_for(|s| !s.connected))
        .await
        .expect("link down in time")
        .expect("status");

    // While the service is gone the bridge waits, backing off: about
    // log2(3 s / 50 ms) ~ 6 attempts in 3 s, not hundreds.
    let before = p.stats().open_failures;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = p.stats().open_failures - before;
    assert!(
        (1..=10).contains(&tries),
        "{tries} opens in 3 s while the service was gone"
    );
    assert!(p.current().is_none(), "the stream is known to be gone");
    assert!(fake.stream(SERVICE, "tbb0").is_none());

    // The peer is back: the service directory reappears; the bridge makes
    // the stream again, same settings, and reconnects with no `up` re-run.
    assert!(fake.restore_service(SERVICE));
    cable.replug().expect("replug");
    let peer = Peer::boot(&cable);
    connected_within(&a, 15).await;
    let again = fake.stream(SERVICE, "tbb0").expect("stream created again");
    assert_eq!(
        (
            again.in_hopid,
            again.out_hopid,
            again.ring_size,
            again.throttling
        ),
        (16, 17, 1024, 2048),
        "same settings as configured"
    );
    assert!(again.open, "the new node is open");
    let now = p.current().expect("current stream");
    assert_eq!(now.stream_dir, first.stream_dir);
    let s = p.stats();
    assert_eq!((s.vanished, s.recreated), (1, 1), "{s:?}");
    assert_eq!(a.peer_id(), Some(peer.bridge.local_id()));
    assert_ne!(a.peer_id(), first_peer, "a new peer session");
    echo_round(&a, 2).await;
    peer.power_off();
}

/// The driver's ENOMEM for a ring it cannot allocate: the error names
/// `device.configfs.ring_size` and its value, and the bridge retries with
/// backoff instead of hammering open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enomem_on_open_names_ring_size_and_backs_off() {
    let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
    let (fake, p) = host_a(&cable, 4096);
    fake.set_ring_memory(Some(2048));
    let e = p.open_once().await.expect_err("ring too large");
    assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory);
    let m = e.to_string();
    assert!(
        m.contains("device.configfs.ring_size") && m.contains("ring_size = 4096"),
        "{m}"
    );
    let a = Bridge::start(p.opener(), SessionConfig::default(), random_session_id());
    let before = fake.opens();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = fake.opens() - before;
    assert!((1..=10).contains(&tries), "{tries} opens in 3 s");
    assert!(p.stats().enomem >= 2, "{:?}", p.stats());
    assert!(!a.status().borrow().connected);
    // Memory freed (or a smaller ring elsewhere): the next open works.
    fake.set_ring_memory(None);
    let peer = Peer::boot(&cable);
    connected_within(&a, 10).await;
    echo_round(&a, 3).await;
    peer.power_off();
}

//! Thousands of channels between two bridges over the in-process emulated
//! cable (issue 13): 10,000 open at once each moving a little, 1,000 moving
//! bulk with fair shares, one reaching its whole window beside 10,000 idle
//! ones, and a hostile peer opening channels as fast as it can.
//!
//! Everything is triggered by byte counts and answers, never by timers;
//! the timeouts only bound a hang.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tbbridge_tests::{pattern, RawPeer};
use tbbridge_transport::device::emu::{CableOptions, EmuCable};
use tbbridge_transport::pump::{Bridge, Channel, Listener, OpenError};
use tbbridge_transport::wire::{Record, CAP_WINDOWS};
use tbbridge_transport::{CableEnd, ChannelKind, Class, SessionConfig};

/// Bounds a whole test: far above what it takes on a loaded 2-core machine.
const HANG: Duration = Duration::from_secs(240);

async fn pair(cfg_b: SessionConfig) -> (Arc<EmuCable>, Bridge, Bridge) {
    let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
    let a = Bridge::on_emu(&cable, CableEnd::A, SessionConfig::default());
    let b = Bridge::on_emu(&cable, CableEnd::B, cfg_b);
    tokio::time::timeout(Duration::from_secs(10), async {
        a.connected().await.expect("a");
        b.connected().await.expect("b");
    })
    .await
    .expect("handshake within 10 s");
    (cable, a, b)
}

/// Opens `n` stream channels to `service`, `tasks` at a time (each waits
/// for its answer: a burst of more than `max_pending_opens` unanswered
/// opens would be refused as a backlog), in the order of their index.
async fn open_many(a: &Bridge, service: &str, n: usize, tasks: usize) -> Vec<Channel> {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (a, service) = (a.clone(), service.to_owned());
        set.spawn(async move {
            let mut mine = Vec::new();
            for i in (t..n).step_by(tasks) {
                let ch = a
                    .open(ChannelKind::Stream, Class::Normal, &service)
                    .await
                    .expect("open");
                mine.push((i, ch));
            }
            mine
        });
    }
    let mut all: Vec<(usize, Channel)> = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("opener"));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, c)| c).collect()
}

/// Echoes every channel of `l`: reads to the end, sends it all back.
fn echo_server(mut l: Listener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(ch) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Ok(Some(b)) = ch.recv(1 << 20).await {
                    got.extend_from_slice(&b);
                }
                if ch.send(Bytes::from(got)).await.is_ok() {
                    let _ = ch.finish();
                    // Keep the handle until the peer has it all (a recv
                    // at the end returns at once: polling it would spin).
                    while ch.unacked() > 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_channels_at_once_each_moving_a_little() {
    tokio::time::timeout(HANG, async {
        let (_cable, a, b) = pair(SessionConfig::default()).await;
        let server = echo_server(b.listen("echo").expect("listen"));
        let n = 10_000;
        let chans = open_many(&a, "echo", n, 16).await;
        // All open at once, on both sides.
        assert_eq!(b.channel_stats().len(), n);
        assert_eq!(a.channel_stats().len(), n);
        let held = b.stats().recv_held;
        assert!(held <= SessionConfig::default().recv_budget, "{held}");
        // Each sends 100..4,100 bytes of its own pattern and reads the echo.
        let mut set = tokio::task::JoinSet::new();
        for (i, ch) in chans.into_iter().enumerate() {
            set.spawn(async move {
                let data = pattern(i as u8, 100 + (i * 37) % 4000);
                ch.send(data.clone()).await.expect("send");
                ch.finish().expect("finish");
                let mut got = Vec::new();
                while let Some(b) = ch.recv(1 << 16).await.expect("recv") {
                    got.extend_from_slice(&b);
                }
                assert!(got == data[..], "channel {i}: echo differs");
                // Every handle stays until all echoes arrived.
                ch
            });
        }
        let mut done = Vec::new();
        while let Some(r) = set.join_next().await {
            done.push(r.expect("channel task"));
        }
        assert_eq!(done.len(), n);
        drop(done);
        server.abort();
        assert!(a.close().await, "goodbye confirmed delivery");
    })
    .await
    .expect("within the hang bound");
}

/// 1,000 channels each send the same amount at once. When the first has
/// delivered it all, every other one has delivered most of its own: the
/// scheduler and the windows share the cable (and the budget) fairly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_bulk_channels_share_fairly() {
    tokio::time::timeout(HANG, async {
        let (_cable, a, b) = pair(SessionConfig::default()).await;
        let n = 1000;
        let each: u64 = 2 << 20;
        let counts: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let snapshot: Arc<std::sync::Mutex<Option<Vec<u64>>>> = Arc::default();
        let mut l = b.listen("bulk").expect("listen");
        let (c2, s2) = (counts.clone(), snapshot.clone());
        let server = tokio::spawn(async move {
            let mut k = 0usize;
            while let Some(ch) = l.accept().await {
                let (counts, snap) = (c2.clone(), s2.clone());
                // Channels arrive in the order they were opened.
                let i = k;
                k += 1;
                tokio::spawn(async move {
                    while let Ok(Some(d)) = ch.recv(1 << 20).await {
                        let total =
                            counts[i].fetch_add(d.len() as u64, Ordering::Relaxed) + d.len() as u64;
                        if total >= each {
                            let mut s = snap.lock().unwrap_or_else(|p| p.into_inner());
                            if s.is_none() {
                                *s = Some(
                                    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
                                );
                            }
                        }
                    }
                });
            }
        });
        let chans = open_many(&a, "bulk", n, 1).await;
        let payload = Bytes::from(vec![0x5Au8; 256 << 10]);
        let mut set = tokio::task::JoinSet::new();
        for ch in chans {
            let payload = payload.clone();
            set.spawn(async move {
                let mut sent = 0;
                while sent < each {
                    ch.send(payload.clone()).await.expect("send");
                    sent += payload.len() as u64;
                }
                ch.finish().expect("finish");
                ch
            });
        }
        let mut done = Vec::new();
        while let Some(r) = set.join_next().await {
            done.push(r.expect("sender"));
        }
        let snap = loop {
            if let Some(s) = snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                break s;
            }
            tokio::task::yield_now().await;
        };
        let min = snap.iter().copied().min().unwrap_or(0);
        let max = snap.iter().copied().max().unwrap_or(0);
        eprintln!("when the first channel had {each} bytes: min {min} max {max}");
        assert!(min > 0, "a channel starved");
        assert!(min * 2 >= max, "unfair shares: min {min}, max {max}");
        // The receive budget held what was granted, within its bound.
        let st = b.stats();
        assert!(
            st.recv_held <= SessionConfig::default().recv_budget,
            "{st:?}"
        );
        drop(done);
        server.abort();
    })
    .await
    .expect("within the hang bound");
}

/// One bulk channel beside 10,000 idle ones: its window still grows to the
/// whole `stream_window` (it is not held to a small one), and every byte
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_channel_grows_its_whole_window_beside_ten_thousand_idle() {
    tokio::time::timeout(HANG, async {
        let (_cable, a, b) = pair(SessionConfig::default()).await;
        let mut idle_l = b.listen("idle").expect("listen");
        let idle_server = tokio::spawn(async move {
            let mut keep = Vec::new();
            while let Some(ch) = idle_l.accept().await {
                keep.push(ch);
            }
        });
        let idle = open_many(&a, "idle", 10_000, 16).await;
        let mut l = b.listen("bulk").expect("listen");
        let ch = a
            .open(ChannelKind::Stream, Class::Bulk, "bulk")
            .await
            .expect("open");
        // Enough for the window to double from 64 KiB to 8 MiB also when
        // a loaded machine makes some grants come late (not "keeping up").
        let data = pattern(7, 1 << 30);
        let d2 = data.clone();
        let send = tokio::spawn(async move {
            ch.send(d2).await.expect("send");
            ch.finish().expect("finish");
            while ch.unacked() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let rx = l.accept().await.expect("accept");
        let mut got = 0;
        let mut widest = 0;
        let mut next_look = 0;
        while let Some(d) = rx.recv(16 << 20).await.expect("recv") {
            assert!(
                data.get(got..got + d.len()) == Some(&d[..]),
                "bytes differ at {got}"
            );
            got += d.len();
            // Listing 10,001 channels is slow: look now and then, or the
            // reader itself would not keep up (and its window rightly
            // would not grow).
            if got < next_look {
                continue;
            }
            next_look = got + (8 << 20);
            let w = b
                .channel_stats()
                .into_iter()
                .find(|(id, ..)| *id == rx.id())
                .map_or(0, |(_, _, s)| s.recv_window);
            widest = widest.max(w);
        }
        send.await.expect("sender");
        assert_eq!(got, data.len(), "bytes missing");
        let full = SessionConfig::default().stream_window;
        assert_eq!(widest, full, "the window stayed at {widest}");
        assert_eq!(b.channel_stats().len(), 10_001);
        drop(idle);
        idle_server.abort();
    })
    .await
    .expect("within the hang bound");
}

/// Opens the bridge refuses say which of its limits they hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_peers_limit() {
    let d = SessionConfig::default();
    let cfg = SessionConfig {
        max_channels: 8,
        // The reserve and four starting windows.
        recv_budget: d.message_window - d.min_window + 4 * d.min_window,
        ..SessionConfig::default()
    };
    let (_cable, a, b) = pair(cfg).await;
    let mut l = b.listen("s").expect("listen");
    let keep = tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Some(ch) = l.accept().await {
            keep.push(ch);
        }
    });
    let mut chans = Vec::new();
    for _ in 0..4 {
        chans.push(
            a.open(ChannelKind::Stream, Class::Normal, "s")
                .await
                .expect("open"),
        );
    }
    let r = a.open(ChannelKind::Stream, Class::Normal, "s").await;
    assert_eq!(r.err(), Some(OpenError::PeerNoMemory("s".into())));
    // Datagram channels hold only what they buffer: up to max_channels.
    for _ in 0..4 {
        chans.push(
            a.open(ChannelKind::Datagram, Class::Normal, "s")
                .await
                .expect("open"),
        );
    }
    let r = a.open(ChannelKind::Datagram, Class::Normal, "s").await;
    assert_eq!(r.err(), Some(OpenError::PeerBusy("s".into())));
    let st = b.stats();
    assert_eq!((st.refused_no_memory, st.refused_too_many), (1, 1));
    keep.abort();
}

/// A peer (scripted, over the cable) opening channels as fast as it can,
/// each with as much data as its open credit allows, to a service that
/// accepts and never reads: the bridge holds it to `max_channels` and the
/// budget, refuses the rest by name, and what it holds stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_open_flood_is_held_to_the_limits() {
    tokio::time::timeout(HANG, async {
        let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
        let cfg = SessionConfig {
            max_channels: 3000,
            recv_budget: 48 << 20,
            ..SessionConfig::default()
        };
        let (budget, credit) = (cfg.recv_budget, cfg.min_window as usize);
        let bridge = Bridge::on_emu(&cable, CableEnd::B, cfg);
        let mut l = bridge.listen("flood").expect("listen");
        let keep = tokio::spawn(async move {
            let mut keep = Vec::new();
            while let Some(ch) = l.accept().await {
                keep.push(ch);
            }
        });
        let mut peer = RawPeer::open(&cable, CableEnd::A, 0xF100D)
            .await
            .expect("open");
        peer.hello_ext = (CAP_WINDOWS, 1 << 20, 1 << 16);
        peer.handshake().await.expect("handshake");
        bridge.connected().await.expect("up");
        let early = Bytes::from(vec![0xEEu8; credit]);
        let (bursts, per) = (20u32, 500u32);
        let mut answers = 0u32;
        for burst in 0..bursts {
            let mut recs = Vec::new();
            for k in 0..per {
                // The wire carries the receiver's view of an id: ours
                // are even, so the bridge's view is odd.
                let chan = (burst * per + k) * 2 + 1;
                recs.push(Record::Open {
                    chan,
                    kind: ChannelKind::Stream,
                    class: Class::Bulk,
                    window: 1 << 16,
                    service: "flood".into(),
                });
                recs.push(Record::Data {
                    chan,
                    offset: 0,
                    end: false,
                    payload: early.clone(),
                });
                if recs.len() >= 6 {
                    if let Err(e) = peer.send(&recs).await {
                        panic!(
                            "send: {e}; the bridge: {:?}",
                            bridge.pump_stats().last_fault
                        );
                    }
                    recs.clear();
                }
            }
            if let Err(e) = peer.send(&recs).await {
                panic!(
                    "send: {e}; the bridge: {:?}",
                    bridge.pump_stats().last_fault
                );
            }
            // Every Open is answered (an OpenOk, or a refusal).
            while answers < (burst + 1) * per {
                let r = peer.next(Duration::from_secs(30)).await.expect("read");
                match r {
                    Some(Record::OpenOk { .. } | Record::OpenReject { .. }) => answers += 1,
                    Some(_) => {}
                    None => panic!("no answer to {} opens", (burst + 1) * per - answers),
                }
            }
            let st = bridge.stats();
            assert!(st.recv_held <= budget, "{st:?}");
            assert!(bridge.channel_stats().len() <= 3000);
        }
        let st = bridge.stats();
        let live = bridge.channel_stats().len() as u64;
        eprintln!("{live} channels live, {st:?}");
        assert_eq!(
            live + st.refused_no_memory + st.refused_too_many,
            u64::from(bursts * per)
        );
        assert!(st.refused_no_memory > 0, "the budget was never hit");
        // What the live channels hold: their starting windows, no more.
        assert_eq!(st.recv_held, live * credit as u64);
        keep.abort();
    })
    .await
    .expect("within the hang bound");
}

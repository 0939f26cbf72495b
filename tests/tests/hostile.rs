//! A hostile or broken peer speaking raw bytes into one end of the cable
//! (issue 12): garbage, oversized lengths, floods after a valid handshake
//! (opens, windows, resets, unknown record types, data on channels never
//! opened), replayed and reordered valid batches, a wrong pre-shared key.
//! After each, the bridge is still there: a well-behaved peer handshakes
//! and an echo round trip works, what it holds stays bounded, and each
//! fault was counted. Triggered by bytes and answers, never timers (the
//! timeouts bound a hang).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tbbridge_tests::RawPeer;
use tbbridge_transport::device::emu::{CableOptions, EmuCable};
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::session::auth::Psk;
use tbbridge_transport::wire::{BatchHeader, HelloAuth, Record};
use tbbridge_transport::{CableEnd, ChannelKind, Class, SessionConfig};

const HANG: Duration = Duration::from_secs(120);

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Reads until the bridge closes its end (it dropped the link), failing
/// if it does not within 20 s.
async fn dropped(peer: &mut RawPeer, what: &str) {
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match peer.next(Duration::from_secs(20)).await {
                Ok(Some(_)) => continue,
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    })
    .await;
    assert_eq!(r, Ok(true), "{what}: the bridge did not drop the link");
}

/// A fresh well-behaved peer: handshake, open `echo`, one round trip.
async fn still_serving(b: &Bridge, cable: &EmuCable, id: u64, what: &str) {
    let mut p = RawPeer::open(cable, CableEnd::A, id).await.expect("open");
    p.handshake()
        .await
        .unwrap_or_else(|e| panic!("after {what}: no handshake: {e}"));
    p.send(&[Record::Open {
        chan: 1,
        kind: ChannelKind::Message,
        class: Class::Latency,
        window: 1 << 20,
        service: "echo".into(),
    }])
    .await
    .expect("open");
    let ok = p
        .wait_for(Duration::from_secs(10), |r| {
            matches!(r, Record::OpenOk { .. })
        })
        .await
        .unwrap_or_else(|e| panic!("after {what}: {e}: {:?}", b.pump_stats().last_fault));
    assert!(ok.is_some(), "after {what}: echo not opened");
    p.send(&[Record::Data {
        chan: 1,
        offset: 0,
        end: true,
        payload: Bytes::from_static(b"ping"),
    }])
    .await
    .expect("data");
    let back = p
        .wait_for(
            Duration::from_secs(10),
            |r| matches!(r, Record::Data { payload, .. } if &payload[..] == b"ping"),
        )
        .await
        .expect("read");
    assert!(back.is_some(), "after {what}: no echo");
}

fn echo_server(b: &Bridge) {
    let mut l = b.listen("echo").expect("listen");
    tokio::spawn(async move {
        while let Some(ch) = l.accept().await {
            tokio::spawn(async move {
                while let Ok(Some(m)) = ch.recv_message().await {
                    if ch.send_message(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A batch header announcing `len` bytes, with a valid header CRC.
fn header(len: u32) -> Vec<u8> {
    BatchHeader { len, body_crc: 0 }.encode().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_cannot_crash_spin_or_bloat_the_bridge() {
    tokio::time::timeout(HANG, async {
        let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
        let b = Bridge::on_emu(&cable, CableEnd::B, SessionConfig::default());
        echo_server(&b);
        let rss0 = rss_kib();
        let mut id = 0xbad0_0000u64;
        let mut next_id = || {
            id += 2;
            id
        };
        still_serving(&b, &cable, next_id(), "nothing").await;

        // 1. 64 MiB of garbage before any Hello: skipped, then a Hello works.
        {
            let mut p = RawPeer::open(&cable, CableEnd::A, next_id())
                .await
                .expect("open");
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let chunk: Vec<u8> = (0..1 << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for _ in 0..64 {
                p.send_bytes(&chunk).await.expect("garbage");
            }
            p.handshake()
                .await
                .expect("a Hello after the garbage is taken");
        }
        still_serving(&b, &cable, next_id(), "garbage").await;

        // 2. Oversized lengths with valid header checksums, before and
        //    after the handshake: never waited for, never allocated.
        for len in [u32::MAX, 1 << 30, (1 << 20) + 1] {
            let mut p = RawPeer::open(&cable, CableEnd::A, next_id())
                .await
                .expect("open");
            p.send_bytes(&header(len)).await.expect("header");
            p.handshake()
                .await
                .expect("a long header before the Hello is skipped");
            p.send_bytes(&header(len)).await.expect("header");
            dropped(&mut p, "oversized batch").await;
        }
        still_serving(&b, &cable, next_id(), "oversized lengths").await;

        // 3. Floods after a valid handshake.
        let floods: Vec<(&str, Vec<Record>)> = vec![
            (
                "windows for channels never opened",
                (0..50_000u32)
                    .map(|i| Record::Window {
                        chan: (i << 1) | 1,
                        received: 0,
                        limit: u64::MAX,
                        resume: false,
                    })
                    .collect(),
            ),
            (
                "data on channels never opened",
                (0..50_000u32)
                    .map(|i| Record::Data {
                        chan: (i << 1) | 1,
                        offset: 0,
                        end: false,
                        payload: Bytes::from_static(&[0u8; 64]),
                    })
                    .collect(),
            ),
            (
                "opens of unknown services",
                (0..400_000u32)
                    .map(|i| Record::Open {
                        chan: ((i + 1) << 1) | 1,
                        kind: ChannelKind::Stream,
                        class: Class::Bulk,
                        window: u32::MAX,
                        service: format!("nope{i}"),
                    })
                    .collect(),
            ),
            (
                "resets for channels never opened",
                (0..400_000u32)
                    .map(|i| Record::Reset {
                        chan: ((i + 1) << 1) | 1,
                        code: 0,
                    })
                    .collect(),
            ),
        ];
        for (what, recs) in floods {
            let before = b.pump_stats().link_faults;
            let mut p = RawPeer::open(&cable, CableEnd::A, next_id())
                .await
                .expect("open");
            p.handshake().await.expect("handshake");
            for c in recs.chunks(2000) {
                if p.send(c).await.is_err() {
                    break;
                }
            }
            // Either disconnected for it (counted) or every record answered
            // and the link healthy: never a crash, a spin or unbounded RSS.
            p.send(&[Record::Ping { token: 77 }]).await.ok();
            let pong = p
                .wait_for(Duration::from_secs(20), |r| {
                    matches!(r, Record::Pong { token: 77 })
                })
                .await;
            if !matches!(pong, Ok(Some(_))) {
                assert!(b.pump_stats().link_faults > before, "{what}: silent stall");
            }
            drop(p);
            let (ps, st) = (b.pump_stats(), b.stats());
            println!(
                "{what}: link faults {} -> {}, refused no_service {} too_many {} no_memory {}",
                before,
                ps.link_faults,
                ps.refused_no_service,
                st.refused_too_many,
                st.refused_no_memory
            );
            assert!(
                ps.link_faults > before || matches!(pong, Ok(Some(_))),
                "{what}"
            );
            still_serving(&b, &cable, next_id(), what).await;
        }

        // 3b. Opens of unknown services from a peer that reads the
        //     answers: each refused as NoService (the service is looked up
        //     before any window budget is taken), none as TooMany.
        {
            let mut p = RawPeer::open(&cable, CableEnd::A, next_id())
                .await
                .expect("open");
            p.handshake().await.expect("handshake");
            let n = 2000u32;
            let opens: Vec<Record> = (0..n)
                .map(|i| Record::Open {
                    chan: ((i + 1) << 1) | 1,
                    kind: ChannelKind::Stream,
                    class: Class::Bulk,
                    window: u32::MAX,
                    service: format!("nope{i}"),
                })
                .collect();
            p.send(&opens).await.expect("opens");
            let mut no_service = 0;
            while no_service < n {
                match p.next(Duration::from_secs(10)).await.expect("read") {
                    Some(Record::OpenReject { reason, .. }) => {
                        assert_eq!(reason, 1, "refused for another reason than NoService");
                        no_service += 1;
                    }
                    Some(_) => {}
                    None => panic!("only {no_service} of {n} opens answered"),
                }
            }
        }
        still_serving(&b, &cable, next_id(), "unknown services").await;

        // 4. A record type this build does not know: a link fault, counted.
        {
            let before = b.pump_stats().link_faults;
            let mut p = RawPeer::open(&cable, CableEnd::A, next_id())
                .await
                .expect("open");
            p.handshake().await.expect("handshake");
            let mut body = vec![0x7Fu8, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4];
            let h = BatchHeader {
                len: body.len() as u32,
                body_crc: tbbridge_transport::wire::crc::crc32c(&body),
            };
            let mut raw = h.encode().to_vec();
            raw.append(&mut body);
            p.send_bytes(&raw).await.expect("unknown record");
            dropped(&mut p, "unknown record type").await;
            assert!(b.pump_stats().link_faults > before);
        }
        still_serving(&b, &cable, next_id(), "unknown record type").await;

        // 5. Reordered valid batches: a stream's second half before its
        //    first is a gap, never delivered out of order.
        {
            let mut p = RawPeer::open(&cable, CableEnd::A, next_id())
                .await
                .expect("open");
            p.handshake().await.expect("handshake");
            p.send(&[Record::Open {
                chan: 1,
                kind: ChannelKind::Message,
                class: Class::Latency,
                window: 1 << 20,
                service: "echo".into(),
            }])
            .await
            .expect("open");
            let first = Record::Data {
                chan: 1,
                offset: 0,
                end: true,
                payload: Bytes::from_static(b"one"),
            };
            let second = Record::Data {
                chan: 1,
                offset: 4,
                end: true,
                payload: Bytes::from_static(b"two"),
            };
            p.send(&[second]).await.expect("second");
            p.send(&[first]).await.expect("first");
            let mut echoed = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match p.next(Duration::from_secs(20)).await {
                        Ok(Some(Record::Data { payload, .. })) => echoed.push(payload),
                        Ok(Some(_)) => {}
                        Ok(None) => return false,
                        Err(_) => return true,
                    }
                }
            })
            .await;
            assert_eq!(r, Ok(true), "reordered batches: link not dropped");
            assert!(
                echoed.iter().all(|m| &m[..] != b"two"),
                "a message beyond a gap was delivered: {echoed:?}"
            );
        }
        still_serving(&b, &cable, next_id(), "reordered batches").await;

        // 6. Replayed: the exact bytes of an earlier link, on a new one.
        //    Without a key this is a new peer session, taken as such
        //    (docs/auth.md: a key with fresh nonces refuses it).
        {
            let mut p = RawPeer::open(&cable, CableEnd::A, 0x5eed)
                .await
                .expect("open");
            p.handshake().await.expect("handshake");
            drop(p);
            let mut p = RawPeer::open(&cable, CableEnd::A, 0x5eed)
                .await
                .expect("open");
            p.handshake()
                .await
                .expect("the replayed handshake is a new session");
        }
        still_serving(&b, &cable, next_id(), "replay").await;

        let rss = rss_kib();
        println!("RSS {rss0} KiB before, {rss} KiB after every attack");
        assert!(rss < rss0 + 64 * 1024, "RSS grew from {rss0} to {rss} KiB");
        b.close().await;
    })
    .await
    .expect("within the hang bound");
}

/// A wrong pre-shared key is refused and counted; the bridge waits on for
/// the right peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_counted() {
    tokio::time::timeout(HANG, async {
        let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
        let cfg = SessionConfig {
            psk: Some(Psk::new(&[7u8; 32]).expect("key")),
            ..SessionConfig::default()
        };
        let b = Bridge::on_emu(&cable, CableEnd::B, cfg);
        let mut p = RawPeer::open(&cable, CableEnd::A, 0xbeef)
            .await
            .expect("open");
        let theirs = p
            .wait_for(Duration::from_secs(10), |r| {
                matches!(r, Record::Hello { .. })
            })
            .await
            .expect("read")
            .expect("the bridge's Hello");
        let Record::Hello { session_id, .. } = theirs else {
            unreachable!()
        };
        let wrong = Psk::new(&[8u8; 32]).expect("key");
        for _ in 0..3 {
            let nonce = [3u8; 16];
            let mac = wrong.sign(0xbeef, session_id, &nonce, &[0u8; 16]);
            let mut h = p.hello(true, session_id);
            if let Record::Hello { auth, caps, .. } = &mut h {
                *caps |= tbbridge_transport::wire::CAP_AUTH;
                *auth = Some(HelloAuth { nonce, mac });
            }
            p.send(&[h]).await.expect("hello");
        }
        p.send(&[Record::Ping { token: 1 }]).await.expect("ping");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b.status().borrow().connected, "connected with a wrong key");
        assert!(b.pump_stats().auth_failures >= 1, "not counted");
        b.close().await;
    })
    .await
    .expect("within the hang bound");
}

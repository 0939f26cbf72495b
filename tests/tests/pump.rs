//! Two bridges over the in-process emulated cable: the pump, the session
//! and the device together.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tbbridge_transport::device::emu::{CableOptions, EmuCable};
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::{CableEnd, ChannelKind, Class, SessionConfig};

fn pattern(seed: u8, n: usize) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect::<Vec<u8>>(),
    )
}

async fn pair(opts: CableOptions) -> (Arc<EmuCable>, Bridge, Bridge) {
    let cable = Arc::new(EmuCable::new(opts).expect("cable"));
    let a = Bridge::on_emu(&cable, CableEnd::A, SessionConfig::default());
    let b = Bridge::on_emu(&cable, CableEnd::B, SessionConfig::default());
    tokio::time::timeout(Duration::from_secs(10), async {
        a.connected().await.expect("a");
        b.connected().await.expect("b");
    })
    .await
    .expect("handshake within 10 s");
    (cable, a, b)
}

/// Sends `data` A→B on a fresh stream channel while `during` runs; returns
/// what B received.
async fn transfer(a: &Bridge, b: &Bridge, data: Bytes, chunk: usize) -> Vec<u8> {
    let mut l = b.listen("xfer");
    let ch = a
        .open(ChannelKind::Stream, Class::Bulk, "xfer")
        .await
        .expect("open");
    let send = tokio::spawn(async move {
        let mut rest = data;
        while !rest.is_empty() {
            let piece = rest.split_to(chunk.min(rest.len()));
            ch.send(piece).await.expect("send");
        }
        ch.finish().expect("finish");
        // Keep the handle until the peer has it all.
        while ch.unacked() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let rx = l.accept().await.expect("accept");
    let mut got = Vec::new();
    while let Some(b) = rx.recv(1 << 20).await.expect("recv") {
        got.extend_from_slice(&b);
    }
    send.await.expect("sender");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_bytes_arrive_in_order() {
    let (_cable, a, b) = pair(CableOptions::default()).await;
    let data = pattern(1, 64 << 20);
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        transfer(&a, &b, data.clone(), 300_001),
    )
    .await
    .expect("transfer within 60 s");
    assert_eq!(got.len(), data.len());
    assert!(got == data[..], "bytes differ");
    assert!(a.close().await, "goodbye confirmed delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_mid_transfer_resumes_without_loss() {
    let (cable, a, b) = pair(CableOptions::default()).await;
    let data = pattern(2, 256 << 20);
    let c2 = cable.clone();
    let puller = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            c2.unplug().expect("unplug");
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.replug().expect("replug");
        }
    });
    let got = tokio::time::timeout(
        Duration::from_secs(120),
        transfer(&a, &b, data.clone(), 1 << 20),
    )
    .await
    .expect("transfer within 120 s");
    puller.await.expect("puller");
    assert_eq!(got.len(), data.len());
    assert!(got == data[..], "bytes differ after resume");
    let st = a.stats();
    assert!(st.links_up >= 2, "the link never went down: {st:?}");
    assert!(st.resumes >= 1, "no resume: {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_frame_is_caught_and_resumed() {
    let (cable, a, b) = pair(CableOptions::default()).await;
    let data = pattern(3, 64 << 20);
    // Armed now, the cable flips bits in the next frame it carries: one of
    // the first frames of the transfer (the handshake is done).
    cable.corrupt().expect("corrupt");
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        transfer(&a, &b, data.clone(), 1 << 20),
    )
    .await
    .expect("transfer within 60 s");
    assert!(got == data[..], "corrupt bytes were delivered");
    let corrupt = a.stats().corrupt_batches + b.stats().corrupt_batches;
    assert_eq!(corrupt, 1, "the flipped frame was not detected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_datagrams_round_trip() {
    let (_cable, a, b) = pair(CableOptions::default()).await;
    let mut l = b.listen("echo");
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
    let ch = a
        .open(ChannelKind::Message, Class::Latency, "echo")
        .await
        .expect("open");
    for n in [0usize, 1, 100, 10_240, 70_000, 1 << 20] {
        let m = pattern(n as u8, n);
        ch.send_message(m.clone()).await.expect("send");
        let back = ch.recv_message().await.expect("recv").expect("not closed");
        assert!(back == m, "message of {n} bytes came back different");
    }
    let mut dl = b.listen("dg");
    let d = a
        .open(ChannelKind::Datagram, Class::Normal, "dg")
        .await
        .expect("open");
    let rx = dl.accept().await.expect("accept");
    for i in 0..100u8 {
        assert!(d.send_datagram(Bytes::from(vec![i; 1400])).expect("send"));
    }
    for i in 0..100u8 {
        let got = rx.recv_datagram().await.expect("recv").expect("open");
        assert_eq!(got, Bytes::from(vec![i; 1400]));
    }
    let refused = a.open(ChannelKind::Stream, Class::Normal, "nobody").await;
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_goodbye_then_return_reconnects_by_itself() {
    let (cable, a, b) = pair(CableOptions::default()).await;
    let mut l = b.listen("svc");
    // A goes down cleanly (its `tbbridge down`), then a new A comes up.
    assert!(a.close().await, "goodbye confirmed");
    drop(a);
    let a2 = Bridge::on_emu(&cable, CableEnd::A, SessionConfig::default());
    tokio::time::timeout(Duration::from_secs(10), a2.connected())
        .await
        .expect("B took the new peer without a restart")
        .expect("connected");
    let ch = a2
        .open(ChannelKind::Stream, Class::Normal, "svc")
        .await
        .expect("open");
    ch.send(Bytes::from_static(b"hello again"))
        .await
        .expect("send");
    ch.finish().expect("finish");
    let rx = l.accept().await.expect("accept");
    let got = rx.recv(100).await.expect("recv").expect("data");
    assert_eq!(&got[..], b"hello again");
    assert!(b.status().borrow().connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_waiting_on_one_channel_are_both_served() {
    let (_cable, a, b) = pair(CableOptions::default()).await;
    let mut l = b.listen("dg");
    let tx = a
        .open(ChannelKind::Datagram, Class::Normal, "dg")
        .await
        .expect("open");
    let rx = Arc::new(l.accept().await.expect("accept"));
    // Two readers block on the same handle before anything arrives.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            tokio::spawn(async move { rx.recv_datagram().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..2u8 {
        assert!(tx.send_datagram(Bytes::from(vec![i; 100])).expect("send"));
    }
    for r in readers {
        let got = tokio::time::timeout(Duration::from_secs(5), r)
            .await
            .expect("a waiting reader was never woken")
            .expect("task")
            .expect("recv");
        assert!(got.is_some());
    }
}

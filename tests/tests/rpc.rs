//! RPC endpoints across two bridges on an in-process emulated cable (no
//! root needed): calls and answers, 64 concurrent clients, sizes at the
//! limits, errors for what cannot be served, servers that come and go,
//! the order of answers, and the Python client of `docs/rpc.md`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tbbridge::rpc::local::{rpc_config, LocalPair};
use tbbridge_config::RpcConfig;
use tbbridge_rpc::socket::{Received, SeqPacket};
use tbbridge_rpc::{CallError, Client, ErrorCode, Header, Kind, ServeError, Server};
use tbbridge_transport::device::emu::CableOptions;
use tbbridge_transport::SessionConfig;

/// Bounds hangs only; every wait below ends on an event.
const T: Duration = Duration::from_secs(10);

async fn pair(dir: &Path, a: &[RpcConfig], b: &[RpcConfig]) -> LocalPair {
    tokio::time::timeout(
        T,
        LocalPair::start(dir, a, b, CableOptions::default(), SessionConfig::default()),
    )
    .await
    .expect("link up in time")
    .expect("pair")
}

fn reversed(b: &[u8]) -> Vec<u8> {
    b.iter().rev().copied().collect()
}

/// A server on `path` answering each request reversed.
async fn reverse_server(path: &Path) -> tokio::task::JoinHandle<Result<(), ServeError>> {
    let server = Server::register_path(path).await.expect("register");
    tokio::spawn(server.serve(|req: Bytes| async move { Ok::<_, u8>(reversed(&req)) }))
}

fn stats(p: &LocalPair, side: usize) -> serde_json::Value {
    p.rpcs[side][0].stats().to_json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_across_the_cable() {
    let dir = tempfile::tempdir().expect("tmp");
    let kv = [rpc_config("kv")];
    let p = pair(dir.path(), &kv, &kv).await;
    let _srv = reverse_server(&p.socket(1, 0)).await;
    let c = Client::connect_path(&p.socket(0, 0))
        .await
        .expect("connect");
    for i in 0..100u32 {
        let req = format!("request {i}");
        let r = c.call(req.as_bytes(), T).await.expect("call");
        assert_eq!(&r[..], &reversed(req.as_bytes())[..]);
    }
    // The other direction on the same service: a server on A, a client on B.
    let _srv_a = reverse_server(&p.socket(0, 0)).await;
    let cb = Client::connect_path(&p.socket(1, 0))
        .await
        .expect("connect");
    assert_eq!(&cb.call(b"ab", T).await.expect("call")[..], b"ba");
    let a = stats(&p, 0);
    assert_eq!(a["calls_out"], 100);
    assert_eq!(a["answers_in"], 100);
    assert_eq!(stats(&p, 1)["calls_in"], 100);
    assert_eq!(stats(&p, 1)["replies_out"], 100);
    assert_eq!(stats(&p, 1)["server_active"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients_get_their_own_answers() {
    let dir = tempfile::tempdir().expect("tmp");
    let kv = [rpc_config("kv")];
    let p = pair(dir.path(), &kv, &kv).await;
    // Answers come back out of order from the server (it runs calls
    // concurrently, later ones faster); each must still reach its caller.
    let server = Server::register_path(&p.socket(1, 0))
        .await
        .expect("register");
    tokio::spawn(server.serve_concurrent(256, |req: Bytes| async move {
        let n = req.first().copied().unwrap_or(0);
        tokio::time::sleep(Duration::from_micros(u64::from(n % 7) * 100)).await;
        Ok::<_, u8>(reversed(&req))
    }));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..64u32 {
        let path = p.socket(0, 0);
        tasks.spawn(async move {
            let c = Arc::new(Client::connect_path(&path).await.expect("connect"));
            // Each client also has 8 calls in flight at once on its one
            // connection.
            let mut calls = tokio::task::JoinSet::new();
            for k in 0..8u32 {
                let c = c.clone();
                calls.spawn(async move {
                    for i in 0..20u32 {
                        let req = format!("{}:{client}:{k}:{i}", (client + k + i) % 251);
                        let r = c.call(req.as_bytes(), T).await.expect("call");
                        assert_eq!(&r[..], &reversed(req.as_bytes())[..], "{req}");
                    }
                });
            }
            while let Some(r) = calls.join_next().await {
                r.expect("call task");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("client task");
    }
    let a = stats(&p, 0);
    assert_eq!(a["calls_out"], 64 * 8 * 20);
    assert_eq!(a["answers_in"], 64 * 8 * 20);
    assert_eq!(a["clients"], 64);
    assert_eq!(stats(&p, 1)["unknown_answers"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_come_in_call_order_per_connection() {
    let dir = tempfile::tempdir().expect("tmp");
    let kv = [rpc_config("kv")];
    let p = pair(dir.path(), &kv, &kv).await;
    // The server answers the 32 calls in reverse order of arrival.
    let mut server = Server::register_path(&p.socket(1, 0))
        .await
        .expect("register");
    tokio::spawn(async move {
        let mut calls = Vec::new();
        while calls.len() < 32 {
            calls.push(server.next().await.expect("next").expect("call"));
        }
        for c in calls.iter().rev() {
            server.reply(c.id, &c.body).await.expect("reply");
        }
        let _ = server.next().await;
    });
    let s = SeqPacket::connect(&p.socket(0, 0)).await.expect("connect");
    for id in 0..32u32 {
        let h = Header::new(Kind::Call, 1000 + id).to_bytes();
        s.send(&[&h, &id.to_le_bytes()]).await.expect("send");
    }
    let (mut buf, mut scratch) = (Default::default(), Vec::new());
    for id in 0..32u32 {
        let m = match tokio::time::timeout(T, s.recv(&mut buf, &mut scratch, 1 << 16))
            .await
            .expect("in time")
            .expect("recv")
        {
            Received::Message(m) => m,
            other => panic!("{other:?}"),
        };
        let h = Header::parse(&m).expect("header");
        assert_eq!((h.kind, h.id), (Kind::Reply, 1000 + id), "in call order");
        assert_eq!(&m[8..], &id.to_le_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_maximum_size_and_oversized_messages() {
    let dir = tempfile::tempdir().expect("tmp");
    // The default 64 KiB and a 1 MiB service (bodies past the direct
    // receive buffer).
    let mut big = rpc_config("big");
    big.max_message = 1 << 20;
    let cfgs = [rpc_config("kv"), big];
    let p = pair(dir.path(), &cfgs, &cfgs).await;
    for (i, max) in [(0usize, 64usize << 10), (1, 1 << 20)] {
        let _srv = reverse_server(&p.socket(1, i)).await;
        let c = Client::connect_path(&p.socket(0, i))
            .await
            .expect("connect");
        assert!(c.call(b"", T).await.expect("empty").is_empty());
        let full: Vec<u8> = (0..max).map(|j| (j % 251) as u8).collect();
        let r = c.call(&full, T).await.expect("maximum size");
        assert_eq!(r.len(), max);
        assert_eq!(&r[..], &reversed(&full)[..]);
        let over = vec![1u8; max + 1];
        match c.call(&over, T).await {
            Err(CallError::Remote(ErrorCode::TooLarge)) => {}
            other => panic!("oversized: {other:?}"),
        }
        // The connection still works.
        assert_eq!(&c.call(b"xy", T).await.expect("after")[..], b"yx");
        assert_eq!(p.rpcs[0][i].stats().errors(ErrorCode::TooLarge), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_errors_at_once_and_a_vanished_server_is_replaced() {
    let dir = tempfile::tempdir().expect("tmp");
    let kv = [rpc_config("kv")];
    let p = pair(dir.path(), &kv, &kv).await;
    let c = Client::connect_path(&p.socket(0, 0))
        .await
        .expect("connect");
    let t0 = Instant::now();
    match c.call(b"anyone?", T).await {
        Err(CallError::Remote(ErrorCode::NoServer)) => {}
        other => panic!("no server: {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "promptly");

    // A server that takes calls and never answers, then goes away.
    let mut mute = Server::register_path(&p.socket(1, 0))
        .await
        .expect("register");
    match Server::register_path(&p.socket(1, 0)).await {
        Err(ServeError::Refused(ErrorCode::ServerExists)) => {}
        other => panic!("second server: {other:?}"),
    }
    let c = Arc::new(c);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..5u8 {
        let c = c.clone();
        calls.spawn(async move { c.call(&[i], T).await });
    }
    for _ in 0..5 {
        mute.next().await.expect("next").expect("a call");
    }
    drop(mute);
    while let Some(r) = calls.join_next().await {
        match r.expect("task") {
            Err(CallError::Remote(ErrorCode::ServerGone)) => {}
            other => panic!("server gone: {other:?}"),
        }
    }
    assert_eq!(p.rpcs[1][0].stats().errors(ErrorCode::ServerGone), 5);
    // The next server takes over (the old one is unregistered first, so
    // this may only fail while the bridge is still seeing it go).
    let _srv = reverse_server(&p.socket(1, 0)).await;
    assert_eq!(
        &c.call(b"again", T).await.expect("new server")[..],
        b"niaga"
    );
    assert_eq!(stats(&p, 1)["servers"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undefined_service_is_refused_and_counted() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = pair(dir.path(), &[rpc_config("ghost")], &[rpc_config("kv")]).await;
    let c = Client::connect_path(&p.socket(0, 0))
        .await
        .expect("connect");
    for _ in 0..3 {
        match c.call(b"boo", T).await {
            Err(CallError::Remote(ErrorCode::NoService)) => {}
            other => panic!("undefined service: {other:?}"),
        }
    }
    assert_eq!(p.rpcs[0][0].stats().errors(ErrorCode::NoService), 3);
    assert_eq!(p.bridges[1].pump_stats().refused_no_service, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_answered_not_fatal() {
    let dir = tempfile::tempdir().expect("tmp");
    let kv = [rpc_config("kv")];
    let p = pair(dir.path(), &kv, &kv).await;
    let _srv = reverse_server(&p.socket(1, 0)).await;
    let s = SeqPacket::connect(&p.socket(0, 0)).await.expect("connect");
    let (mut buf, mut scratch) = (Default::default(), Vec::new());
    let h = Header::new(Kind::Call, 1).to_bytes();
    s.send(&[&h, b"ok"]).await.expect("send");
    // A REPLY from a client, a short message: errors, the connection stays.
    s.send(&[&Header::new(Kind::Reply, 2).to_bytes()])
        .await
        .expect("send");
    s.send(&[b"abc"]).await.expect("send");
    s.send(&[&Header::new(Kind::Call, 3).to_bytes(), b"yz"])
        .await
        .expect("send");
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = match tokio::time::timeout(T, s.recv(&mut buf, &mut scratch, 1 << 16))
            .await
            .expect("in time")
            .expect("recv")
        {
            Received::Message(m) => m,
            other => panic!("{other:?}"),
        };
        let h = Header::parse(&m).expect("header");
        got.push((h.kind, h.code, h.id));
    }
    got.sort_by_key(|g| g.2);
    let bad = ErrorCode::BadMessage.to_u8();
    assert_eq!(
        got,
        [
            (Kind::Error, bad, 0),
            (Kind::Reply, 0, 1),
            (Kind::Error, bad, 2),
            (Kind::Reply, 0, 3)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_a_cable_pull() {
    let dir = tempfile::tempdir().expect("tmp");
    let kv = [rpc_config("kv")];
    let p = pair(dir.path(), &kv, &kv).await;
    let _srv = reverse_server(&p.socket(1, 0)).await;
    let c = Client::connect_path(&p.socket(0, 0))
        .await
        .expect("connect");
    assert_eq!(&c.call(b"12", T).await.expect("before")[..], b"21");
    p.cable.unplug().expect("unplug");
    let mut st = p.bridges[0].status();
    tokio::time::timeout(T, st.wait_for(|s| !s.connected))
        .await
        .expect("in time")
        .expect("status");
    let call = tokio::spawn(async move {
        let r = c.call(b"34", T).await;
        (c, r)
    });
    // The call is queued while unplugged; the link comes back and it is
    // answered.
    let t0 = Instant::now();
    while stats(&p, 0)["calls_out"] != 2 {
        assert!(t0.elapsed() < T, "the call was sent");
        tokio::task::yield_now().await;
    }
    p.cable.replug().expect("replug");
    let (c, r) = call.await.expect("task");
    assert_eq!(&r.expect("after replug")[..], b"43");
    assert_eq!(&c.call(b"56", T).await.expect("after")[..], b"65");
}

#[test]
fn python_client() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        tbbridge_tests::skip("python_client needs python3");
        return;
    }
    let doc = include_str!("../../docs/rpc.md");
    let start = doc.find("```python\n").expect("python block") + "```python\n".len();
    let len = doc[start..].find("```").expect("end of block");
    let script = &doc[start..start + len];
    assert!(script.lines().count() <= 30, "a short client");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("client.py");
    std::fs::write(&file, script).expect("write");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let kv = [rpc_config("kv")];
    let p = rt.block_on(pair(dir.path(), &kv, &kv));
    let run = |arg: &str| {
        std::process::Command::new("python3")
            .arg(&file)
            .arg(p.socket(0, 0))
            .arg(arg)
            .output()
            .expect("python3")
    };
    // No server yet: the client raises with the code.
    let out = run("hello");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rpc error 2"), "{err}");
    let _srv = rt.block_on(reverse_server(&p.socket(1, 0)));
    let out = run("hello");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "olleh");
    drop(p);
}

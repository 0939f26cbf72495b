//! RPC endpoints through two `tbbridge up` daemons configured with
//! `[[rpc]]` (the config, the socket's place, mode and group, `status`).
//! Needs root; skips with a reason otherwise (and fails under CI's
//! `TBBRIDGE_NO_SKIP=1`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use tbbridge_rpc::{CallError, Client, ErrorCode, Server};
use tbbridge_tests::lab::{skip_unless_possible, wait, Lab};

const T: Duration = Duration::from_secs(10);

fn socket(lab: &Lab, i: usize, service: &str) -> PathBuf {
    lab.run_dir
        .path()
        .join(lab.name(i))
        .join("rpc")
        .join(format!("{service}.sock"))
}

#[test]
fn daemons_carry_calls_between_their_sockets() {
    if skip_unless_possible() {
        return;
    }
    let lab = Lab::new("rpcd");
    // A defines one service B does not: its calls are refused and counted.
    lab.up_with(
        0,
        "[[rpc]]\nname = \"kv\"\ngroup = \"root\"\n\n[[rpc]]\nname = \"ghost\"\n",
    );
    lab.up_with(1, "[[rpc]]\nname = \"kv\"\nmax_message = \"1KiB\"\n");
    lab.wait_connected();
    let (a, b) = (socket(&lab, 0, "kv"), socket(&lab, 1, "kv"));
    wait(T, "the sockets", || a.exists() && b.exists());
    let meta = std::fs::metadata(&a).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 0);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = Server::register_path(&b).await.expect("register");
        let srv = tokio::spawn(server.serve(|req: bytes::Bytes| async move {
            Ok::<_, u8>(req.iter().rev().copied().collect::<Vec<u8>>())
        }));
        let c = Client::connect_path(&a).await.expect("connect");
        for i in 0..50 {
            let req = format!("call {i}");
            let r = c.call(req.as_bytes(), T).await.expect("call");
            assert_eq!(r.iter().rev().copied().collect::<Vec<u8>>(), req.as_bytes());
        }
        // B's max_message is 1 KiB: B answers too_large for A's larger call.
        match c.call(&[0u8; 2048], T).await {
            Err(CallError::Remote(ErrorCode::TooLarge)) => {}
            other => panic!("over B's max_message: {other:?}"),
        }
        let g = Client::connect_path(&socket(&lab, 0, "ghost"))
            .await
            .expect("connect");
        match g.call(b"x", T).await {
            Err(CallError::Remote(ErrorCode::NoService)) => {}
            other => panic!("undefined on B: {other:?}"),
        }
        srv.abort();
    });
    let fa = lab.front_end(0, "rpc kv");
    assert_eq!(fa["counters"]["stats"]["calls_out"], 51, "{fa}");
    let fb = lab.front_end(1, "rpc kv");
    assert_eq!(fb["counters"]["stats"]["calls_in"], 50, "{fb}");
    assert_eq!(fb["counters"]["stats"]["errors"]["too_large"], 1, "{fb}");
    let ghost = lab.front_end(0, "rpc ghost");
    assert_eq!(
        ghost["counters"]["stats"]["errors"]["no_service"], 1,
        "{ghost}"
    );
}

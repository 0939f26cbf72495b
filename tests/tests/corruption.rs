//! Corruption on the cable, recovered in-band (issue 12): two `tbbridge
//! up` daemons over an emulated cable that flips 1-3 bits in a seeded
//! fraction of its 4 KiB frames, carrying at once
//!
//! * `tbbridge pipe` transfers of a 32 MiB file into a `[[pipe]]` sink
//!   that records each transfer's SHA-256,
//! * `curl` downloads of the file through a TCP `[[forward]]`,
//! * `curl` downloads of it through the NIC (`tb0`, an HTTP server on the
//!   far host's tunnel address), each SHA-256 checked,
//! * an `iperf3` TCP stream through the NIC,
//!
//! until the bridges have counted [`CORRUPTIONS`] corrupt batches. Every
//! one must be recovered on the open device: no link fault, no reopen
//! (`links_up` stays 1 on both sides), the TUN carrier stays up, every
//! transfer completes with the right SHA-256. The resync times (the
//! `tbbridge_resync_seconds` histogram) are printed for the closing notes.
//!
//! `TBBRIDGE_CORRUPTIONS` overrides the count. Needs root, curl, python3,
//! iperf3.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tbbridge_tests::files::make_file;
use tbbridge_tests::lab::{skip_unless_possible, wait, Lab};
use tbbridge_tests::load::{download_loop, num, pipe_loop, Tally};
use tbbridge_tests::prom::{self, http_get};

const CORRUPTIONS: u64 = 10_000;
const FILE: u64 = 32 << 20;
/// Probability per 4 KiB frame of a flip: at 400 MB/s about 200 a second.
const PROB: &str = "2e-3";
/// The run gives up (and fails) after this long.
const GIVE_UP: Duration = Duration::from_secs(900);

fn metrics(lab: &Lab, i: usize, port: u16) -> Vec<prom::Sample> {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let (code, body) = http_get(lab, i, addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    prom::parse(&body)
}

#[test]
fn ten_thousand_corruptions_are_recovered_in_band() {
    if skip_unless_possible()
        || tbbridge_tests::needs_programs(&[
            ("curl", "--version"),
            ("python3", "--version"),
            ("iperf3", "-v"),
        ])
        .is_some_and(|w| tbbridge_tests::skip(&w))
    {
        return;
    }
    let target: u64 = std::env::var("TBBRIDGE_CORRUPTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CORRUPTIONS);
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src.bin");
    let sum = make_file(&src, FILE);
    let sums = dir.path().join("sums");
    let lab = Lab::with_cable(
        "cx",
        &["--rate", "400M", "--corrupt-prob", PROB, "--seed", "12"],
    );
    lab.up_with(
        0,
        "[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.1/30\"]\n\n\
         [[forward]]\nname = \"web\"\nlisten = \"tcp:127.0.0.1:8100\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:9468\"\n",
    );
    lab.up_with(
        1,
        &format!(
            "[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.2/30\"]\n\n\
             [[service]]\nname = \"web\"\nconnect = \"tcp:127.0.0.1:8101\"\n\n\
             [[pipe]]\nname = \"sink\"\ncommand = \"sha256sum | cut -d' ' -f1 >> {}\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:9468\"\n",
            sums.display()
        ),
    );
    lab.wait_connected();
    let _http = lab.http_server(1, 8101, dir.path());
    let _http_nic = lab.http_server_on(1, "198.18.0.2", 8102, dir.path());
    let (_iperf_s, mut iperf) = lab.iperf_through_tb0();
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let started = Instant::now();
    let corrupt = |lab: &Lab| {
        num(&lab.status(0), "/session/corrupt_batches")
            + num(&lab.status(1), "/session/corrupt_batches")
    };
    let mut carrier_lost = false;
    std::thread::scope(|s| {
        s.spawn(|| pipe_loop(&lab, &src, &stop, &tally));
        s.spawn(|| {
            let url = "http://127.0.0.1:8100/src.bin";
            download_loop(&lab, 0, url, &sum, &stop, &tally);
        });
        s.spawn(|| {
            let url = "http://198.18.0.2:8102/src.bin";
            download_loop(&lab, 0, url, &sum, &stop, &tally);
        });
        loop {
            std::thread::sleep(Duration::from_millis(500));
            carrier_lost |= lab.carrier(0) != "1" || lab.carrier(1) != "1";
            let n = corrupt(&lab);
            if n >= target {
                break;
            }
            assert!(
                started.elapsed() < GIVE_UP,
                "only {n} corruptions after {GIVE_UP:?}: {}",
                lab.status(0)
            );
        }
        // The transfers under way finish; none starts after this.
        stop.store(true, Relaxed);
    });
    let took = started.elapsed();
    let iperf_alive = iperf.0.try_wait().expect("iperf3").is_none();
    let (a, b) = (lab.status(0), lab.status(1));
    let mut hist = Vec::new();
    let mut total = 0.0;
    for i in 0..2 {
        for smp in metrics(&lab, i, 9468) {
            if smp.name == "tbbridge_resync_seconds_bucket" {
                let le = smp
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                match hist.iter_mut().find(|(l, _): &&mut (String, f64)| *l == le) {
                    Some((_, n)) => *n += smp.value,
                    None => hist.push((le, smp.value)),
                }
            }
            if smp.name == "tbbridge_resync_seconds_count" {
                total += smp.value;
            }
        }
    }
    let shares: Vec<String> = hist
        .iter()
        .map(|(le, n)| format!("<= {le} s: {:.4}", n / total.max(1.0)))
        .collect();
    println!(
        "{} corrupt batches in {took:?} (A {} / B {}), resyncs A {} B {}, failed A {} B {}; \
         links up A {} B {}; {} pipes and {} downloads of {} MiB checked; \
         resync time shares: {}",
        num(&a, "/session/corrupt_batches") + num(&b, "/session/corrupt_batches"),
        num(&a, "/session/corrupt_batches"),
        num(&b, "/session/corrupt_batches"),
        num(&a, "/link/resyncs"),
        num(&b, "/link/resyncs"),
        num(&a, "/link/resync_failures"),
        num(&b, "/link/resync_failures"),
        num(&a, "/link/links_up"),
        num(&b, "/link/links_up"),
        tally.pipes_ok.load(Relaxed),
        tally.downloads_ok.load(Relaxed),
        FILE >> 20,
        shares.join(", "),
    );
    let pf = tally.pipe_failures.lock().expect("lock");
    assert!(pf.is_empty(), "pipes failed: {pf:?}");
    let df = tally.download_failures.lock().expect("lock");
    assert!(df.is_empty(), "downloads failed: {df:?}");
    let lines = std::fs::read_to_string(&sums).expect("sums");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(
        lines.len() as u64,
        tally.pipes_ok.load(Relaxed),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| *l == sum), "a pipe's bytes differ");
    assert!(tally.pipes_ok.load(Relaxed) >= 1 && tally.downloads_ok.load(Relaxed) >= 2);
    assert!(iperf_alive, "iperf3 through tb0 died");
    assert!(!carrier_lost, "the TUN carrier went down");
    for (side, st) in [("A", &a), ("B", &b)] {
        assert_eq!(
            num(st, "/link/links_up"),
            1,
            "{side} reopened the device: {st}"
        );
        assert_eq!(num(st, "/link/faults"), 0, "{side} had link faults: {st}");
    }
    // Every corrupt batch was dropped and recovered: each started a
    // resync (several in one resync count once).
    let resyncs = num(&a, "/link/resyncs") + num(&b, "/link/resyncs");
    assert!(
        resyncs > 0 && resyncs <= corrupt(&lab) * 2,
        "{resyncs} resyncs"
    );
    wait(Duration::from_secs(5), "link still up", || lab.connected(0));
}

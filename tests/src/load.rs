//! Loads that run while a test breaks the cable: repeated `tbbridge pipe`
//! transfers and `curl` downloads, each SHA-256 checked, tallied.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::lab::Lab;

/// What the loads did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Pipe transfers that exited 0.
    pub pipes_ok: AtomicU64,
    /// Why the others failed.
    pub pipe_failures: Mutex<Vec<String>>,
    /// Downloads whose SHA-256 matched.
    pub downloads_ok: AtomicU64,
    /// Why the others failed.
    pub download_failures: Mutex<Vec<String>>,
}

/// `tbbridge pipe NAME sink < src` from host 0, again and again until
/// `stop`. The sink on the other host records each transfer's SHA-256.
pub fn pipe_loop(lab: &Lab, src: &Path, stop: &AtomicBool, t: &Tally) {
    while !stop.load(Relaxed) {
        let out = lab
            .tb(None, &["pipe", &lab.name(0), "sink"])
            .stdin(std::fs::File::open(src).expect("src"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("tbbridge pipe");
        if out.status.success() {
            t.pipes_ok.fetch_add(1, Relaxed);
        } else {
            let e = String::from_utf8_lossy(&out.stderr).to_string();
            t.pipe_failures.lock().expect("lock").push(e);
        }
    }
}

/// `curl URL | sha256sum` in host `i`, again and again until `stop`; each
/// must give `sum`.
pub fn download_loop(lab: &Lab, i: usize, url: &str, sum: &str, stop: &AtomicBool, t: &Tally) {
    let cmd = format!("curl -sSf --max-time 300 {url} | sha256sum");
    while !stop.load(Relaxed) {
        let out = lab.ns[i].cmd("sh", &["-c", &cmd]).output().expect("curl");
        let got = String::from_utf8_lossy(&out.stdout);
        let got = got.split_whitespace().next().unwrap_or("");
        if out.status.success() && got == sum {
            t.downloads_ok.fetch_add(1, Relaxed);
        } else {
            let e = format!(
                "{url}: sha {got} (want {sum}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            t.download_failures.lock().expect("lock").push(e);
        }
    }
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// A number in a `status --json` document (0 if absent).
pub fn num(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

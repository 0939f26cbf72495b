//! Baseline (c) of `bench --rpc --tun`: a TCP ping-pong through the TUN
//! interfaces of two `tbbridge up` daemons in two network namespaces over
//! a cross-process emulated cable (what an application that used the
//! tunnel instead of an RPC endpoint would get). Needs root.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::oneshot;

use crate::daemon::control;
use crate::netns::NetNs;

const ADDR_A: &str = "198.18.0.1";
const ADDR_B: &str = "198.18.0.2";
const PORT: u16 = 7979;

/// One series of round trips for the client thread in namespace A.
struct Job {
    len: usize,
    min: usize,
    max: usize,
    budget: Duration,
    done: oneshot::Sender<anyhow::Result<Vec<Duration>>>,
}

/// The two daemons, the cable and the TCP client (removed on drop).
#[derive(Debug)]
pub struct TunTcp {
    children: Vec<Child>,
    sockets: Vec<PathBuf>,
    dir: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    ns: Vec<NetNs>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("len", &self.len).finish()
    }
}

impl TunTcp {
    /// Brings up the cable, the namespaces, the daemons and a TCP echo in
    /// B; connects from A.
    pub fn start() -> anyhow::Result<TunTcp> {
        if let Some(why) = crate::netns::unavailable() {
            bail!("--tun {why}");
        }
        let tag = std::process::id();
        let exe = std::env::current_exe().context("finding the tbbridge executable")?;
        let dir = std::env::temp_dir().join(format!("tbbridge-bench-tun-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let mut t = TunTcp {
            children: Vec::new(),
            sockets: Vec::new(),
            dir: dir.clone(),
            jobs: None,
            ns: Vec::new(),
        };
        let cable = format!("benchtun-{tag}");
        t.children.push(
            Command::new(&exe)
                .args(["cable", "run", &cable])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting the cable")?,
        );
        for (end, addr) in [("a", ADDR_A), ("b", ADDR_B)] {
            let ns = NetNs::new(&format!("tbbench-{tag}-{end}"))?;
            let name = format!("bench-{tag}-{end}");
            let cfg = dir.join(format!("{name}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "[device]\npath = \"emu:{cable}/{end}\"\n\n[interface]\nname = \"tb0\"\naddresses = [\"{addr}/30\"]\n"
                ),
            )?;
            let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
            let child = ns
                .cmd(
                    &exe.to_string_lossy(),
                    &[
                        "up",
                        &name,
                        "--config",
                        &cfg.to_string_lossy(),
                        "--foreground",
                    ],
                )
                .env("TBBRIDGE_RUN_DIR", &dir)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting tbbridge up")?;
            t.children.push(child);
            t.sockets.push(dir.join(format!("{name}.sock")));
            t.ns.push(ns);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.sockets.iter().all(|s| {
            control::request(s, "status", Duration::from_secs(1))
                .ok()
                .and_then(|v| v.pointer("/link/connected").and_then(|c| c.as_bool()))
                == Some(true)
        }) {
            if Instant::now() > deadline {
                bail!(
                    "the TUN bridges did not connect within 20 s (logs in {})",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The echo in B, then the client in A.
        let (ready_tx, ready_rx) = mpsc::channel();
        let _echo = t.ns[1].spawn(move || {
            let l = TcpListener::bind((ADDR_B, PORT))?;
            let _ = ready_tx.send(());
            let (mut s, _) = l.accept()?;
            s.set_nodelay(true)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                s.write_all(&buf[..n])?;
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the TCP echo did not start")?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let _client = t.ns[0].spawn(move || {
            let mut s = TcpStream::connect((ADDR_B, PORT))?;
            s.set_nodelay(true)?;
            let mut rbuf = vec![0u8; 1 << 20];
            for job in rx {
                let msg = vec![0x3Cu8; job.len];
                let r = (|| {
                    let mut v = Vec::new();
                    let start = Instant::now();
                    while v.len() < job.max && (v.len() < job.min || start.elapsed() < job.budget) {
                        let t0 = Instant::now();
                        s.write_all(&msg)?;
                        s.read_exact(&mut rbuf[..job.len])?;
                        v.push(t0.elapsed());
                    }
                    Ok(v)
                })();
                let _ = job.done.send(r);
            }
            Ok(())
        });
        t.jobs = Some(jobs);
        Ok(t)
    }

    /// Round trips of `len` bytes: at least `min`, at most `max`, for
    /// about `budget`.
    pub async fn series(
        &self,
        len: usize,
        min: usize,
        max: usize,
        budget: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let (done, rx) = oneshot::channel();
        self.jobs
            .as_ref()
            .context("no client")?
            .send(Job {
                len,
                min,
                max,
                budget,
                done,
            })
            .map_err(|_| anyhow::anyhow!("the TCP client thread ended"))?;
        rx.await.context("the TCP client thread ended")?
    }
}

impl Drop for TunTcp {
    fn drop(&mut self) {
        self.jobs = None;
        for s in &self.sockets {
            let _ = control::request(s, "down", Duration::from_secs(2));
        }
        let deadline = Instant::now() + Duration::from_secs(8);
        for c in self.children.iter_mut().skip(1) {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.ns.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

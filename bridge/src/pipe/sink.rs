//! `[[pipe]]`: where the peer's `tbbridge pipe` data goes here.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use serde_json::{json, Value};
use tbbridge_config::{PipeConfig, PipeSink};
use tbbridge_transport::pump::{Channel, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::PIPE_PREFIX;
use crate::frontend::{Ctx, Failure, FrontEnd, RunFuture};

/// Most bytes taken from the channel at once.
const CHUNK: usize = 1 << 20;

/// The front-end of every `[[pipe]]` of the config.
#[derive(Debug)]
pub struct Sinks {
    pipes: Vec<PipeConfig>,
    completed: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

impl Sinks {
    /// The sinks of `pipes`.
    pub fn new(pipes: Vec<PipeConfig>) -> Self {
        Self {
            pipes,
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    async fn serve(self: Arc<Self>, ctx: Ctx) -> Result<(), Failure> {
        let mut listeners: Vec<(usize, Listener)> = Vec::new();
        for (i, p) in self.pipes.iter().enumerate() {
            let l = ctx
                .bridge
                .listen(&format!("{PIPE_PREFIX}{}", p.name))
                .map_err(Failure::retry)?;
            listeners.push((i, l));
        }
        let mut work = JoinSet::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Channel)>(16);
        for (i, mut l) in listeners {
            let tx = tx.clone();
            work.spawn(async move {
                while let Some(ch) = l.accept().await {
                    if tx.send((i, ch)).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        loop {
            tokio::select! {
                Some((i, ch)) = rx.recv() => {
                    let me = self.clone();
                    work.spawn(async move { me.take(i, ch).await });
                }
                Some(_) = work.join_next(), if !work.is_empty() => {}
                _ = ctx.cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// One transfer into pipe `i`: finished on success, reset on failure.
    async fn take(&self, i: usize, ch: Channel) {
        let Some(p) = self.pipes.get(i) else {
            return;
        };
        let r = match &p.sink {
            PipeSink::File(path) => self.to_file(&ch, path).await,
            PipeSink::Command(cmd) => self.to_command(&ch, cmd).await,
        };
        match r {
            Ok(()) => {
                self.completed.fetch_add(1, Relaxed);
                tracing::info!("pipe {}: transfer complete", p.name);
            }
            Err(e) => {
                self.failed.fetch_add(1, Relaxed);
                tracing::warn!("pipe {}: {e:#}", p.name);
                let _ = ch.reset();
            }
        }
    }

    /// Writes to `path.partial`, syncs, renames: the file appears only
    /// complete, and a failed transfer leaves the old one alone.
    async fn to_file(&self, ch: &Channel, path: &Path) -> anyhow::Result<()> {
        let mut tmp = PathBuf::from(path);
        let mut name = tmp
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".partial");
        tmp.set_file_name(name);
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .with_context(|| format!("creating {}", tmp.display()))?;
        while let Some(b) = ch.recv(CHUNK).await? {
            f.write_all(&b)
                .await
                .with_context(|| format!("writing {}", tmp.display()))?;
            self.bytes.fetch_add(b.len() as u64, Relaxed);
        }
        f.sync_all().await.context("syncing the file")?;
        drop(f);
        tokio::fs::rename(&tmp, path)
            .await
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        ch.finish()?;
        Ok(())
    }

    /// The data is the command's stdin; its stdout goes back; it must exit 0.
    async fn to_command(&self, ch: &Channel, cmd: &str) -> anyhow::Result<()> {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{cmd}`"))?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        let mut stdout = child.stdout.take().context("no stdout")?;
        let feed = async {
            while let Some(b) = ch.recv(CHUNK).await? {
                stdin
                    .write_all(&b)
                    .await
                    .context("the command stopped reading")?;
                self.bytes.fetch_add(b.len() as u64, Relaxed);
            }
            drop(stdin);
            Ok::<(), anyhow::Error>(())
        };
        let answer = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = stdout.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), anyhow::Error>(());
                }
                ch.send(Bytes::copy_from_slice(&buf[..n])).await?;
            }
        };
        let moved = tokio::try_join!(feed, answer);
        // The command's own failure is the better reason (a command that
        // exits early also stops reading).
        let status = child.wait().await?;
        anyhow::ensure!(status.success(), "`{cmd}` failed: {status}");
        moved?;
        ch.finish()?;
        Ok(())
    }
}

impl FrontEnd for Sinks {
    fn name(&self) -> String {
        "pipes".to_owned()
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> RunFuture {
        Box::pin(self.serve(ctx))
    }

    fn metrics(&self, o: &mut crate::metrics::Out<'_>) {
        use crate::metrics::defs::*;
        o.counter(
            &PIPE_TRANSFERS,
            &[("result", "completed")],
            self.completed.load(Relaxed),
        );
        o.counter(
            &PIPE_TRANSFERS,
            &[("result", "failed")],
            self.failed.load(Relaxed),
        );
        o.counter(
            &PIPE_BYTES,
            &[("direction", "rx")],
            self.bytes.load(Relaxed),
        );
    }

    fn status(&self) -> Value {
        json!({
            "pipes": self.pipes.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            "completed": self.completed.load(Relaxed),
            "failed": self.failed.load(Relaxed),
            "bytes": self.bytes.load(Relaxed),
        })
    }
}

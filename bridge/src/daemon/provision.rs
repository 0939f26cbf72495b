//! The configfs stream of a `[device.configfs]` bridge, kept provisioned
//! for the daemon's whole life.
//!
//! When the peer reboots, its XDomain service goes away and the kernel
//! removes the configfs service directory with our stream and
//! `/dev/tbstreamX` in it (spec §6; one public deployment re-ran its setup
//! from a udev rule). The pump then finds the device gone when it reopens
//! it. [`Provisioner::opener`] is the pump's opener for such a bridge: each
//! open first checks that the stream is still there; when it is not, it
//! waits for the service directory to come back (or re-creates it, when
//! `up` created it in the first place), creates the stream again with the
//! same settings, and opens the new device node (whose index may differ).
//! No `up` re-run, no human.
//!
//! Every failure returns to the pump, which backs off between opens
//! (50 ms doubling to 2 s): a missing peer, a service that has not come
//! back, the driver's ENOMEM for a ring too large. Never a loop of
//! open/close (that once wedged a router's hop tables). Each distinct
//! failure is logged once, at `warn`, with what to do.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tbbridge_config::configfs::{self, ConfigfsFs, CreatedStream, RealFs};
use tbbridge_config::ConfigfsStream;
use tbbridge_transport::device::{AsyncDevice, OpenOptions};
use tbbridge_transport::pump::Opener;
use tbbridge_transport::DeviceSpec;

/// The filesystem the provisioner works on: [`RealFs`] in the daemon, the
/// fake driver in tests.
pub type SharedFs = Arc<dyn ConfigfsFs + Send + Sync>;

/// Opens a device node once the stream is there (the real device in the
/// daemon; the emulated cable behind a fake node in tests).
pub type DeviceOpen = Arc<
    dyn Fn(PathBuf) -> Pin<Box<dyn Future<Output = io::Result<AsyncDevice>> + Send>> + Send + Sync,
>;

/// What the provisioner did, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionStats {
    /// Times the stream was created again after it vanished.
    pub recreated: u64,
    /// Times the stream was found gone (the peer rebooted or went away).
    pub vanished: u64,
    /// Opens that failed, of any cause.
    pub open_failures: u64,
    /// Opens the driver refused with ENOMEM (ring too large).
    pub enomem: u64,
}

#[derive(Debug)]
struct State {
    /// The stream as last created; `None` while it is gone.
    current: Option<CreatedStream>,
    /// `up` created the service directory: it may be created again.
    created_service: bool,
    /// The last failure logged (each distinct one is logged once).
    last_logged: Option<String>,
    stats: ProvisionStats,
}

/// Keeps one configfs stream provisioned (see the module docs).
pub struct Provisioner {
    c: ConfigfsStream,
    fs: SharedFs,
    open: DeviceOpen,
    st: Mutex<State>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("stream", &self.c.to_string())
            .finish_non_exhaustive()
    }
}

impl Provisioner {
    /// Creates the stream on the real configfs (as `up` does, blocking up
    /// to `device_wait` for the node) and opens `/dev/tbstreamX` with
    /// `opts` from then on.
    pub fn setup_real(
        c: &ConfigfsStream,
        opts: OpenOptions,
    ) -> Result<Arc<Provisioner>, configfs::ConfigfsError> {
        let open: DeviceOpen = Arc::new(move |path| {
            let opts = opts.clone();
            Box::pin(async move {
                tbbridge_transport::device::open(&DeviceSpec::TbStream(path), &opts).await
            })
        });
        Self::setup(c, Arc::new(RealFs), open)
    }

    /// Creates the stream on `fs` and keeps it provisioned, opening nodes
    /// with `open`. Blocking (the first setup waits for the device node).
    pub fn setup(
        c: &ConfigfsStream,
        fs: SharedFs,
        open: DeviceOpen,
    ) -> Result<Arc<Provisioner>, configfs::ConfigfsError> {
        let created = configfs::setup_with(fs.as_ref(), c)?;
        Ok(Arc::new(Provisioner {
            c: c.clone(),
            fs,
            open,
            st: Mutex::new(State {
                created_service: created.created_service,
                current: Some(created),
                last_logged: None,
                stats: ProvisionStats::default(),
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream as last created (`None` while it is gone).
    pub fn current(&self) -> Option<CreatedStream> {
        self.lock().current.clone()
    }

    /// Counters.
    pub fn stats(&self) -> ProvisionStats {
        self.lock().stats.clone()
    }

    /// The pump's opener: provision if needed, then open.
    pub fn opener(self: &Arc<Self>) -> Opener {
        let me = self.clone();
        Arc::new(move || {
            let me = me.clone();
            Box::pin(async move { me.open_once().await })
        })
    }

    /// One attempt: make sure the stream exists, then open its node.
    pub async fn open_once(self: &Arc<Self>) -> io::Result<AsyncDevice> {
        let me = self.clone();
        let path = tokio::task::spawn_blocking(move || me.ensure_stream())
            .await
            .map_err(|e| io::Error::other(format!("provisioning task failed: {e}")))?;
        let result = match path {
            Ok(path) => (self.open)(path.clone()).await.map_err(|e| self.explain(e)),
            Err(e) => Err(e),
        };
        let mut st = self.lock();
        match &result {
            Ok(_) => st.last_logged = None,
            Err(e) => {
                st.stats.open_failures += 1;
                let msg = e.to_string();
                if st.last_logged.as_deref() != Some(msg.as_str()) {
                    tracing::warn!("{msg}");
                    st.last_logged = Some(msg);
                }
            }
        }
        result
    }

    /// The node to open, after creating the stream again if it vanished.
    fn ensure_stream(&self) -> io::Result<PathBuf> {
        let mut st = self.lock();
        if let Some(c) = &st.current {
            if self.fs.exists(&c.stream_dir) && self.fs.exists(&c.dev_path) {
                return Ok(c.dev_path.clone());
            }
            st.current = None;
            st.stats.vanished += 1;
            tracing::warn!(
                "configfs stream {} is gone (the peer rebooted or went away): waiting for \
                 its service directory to come back, then creating the stream again",
                self.c
            );
        }
        let service_dir = self.c.service_dir();
        if !self.fs.exists(&service_dir) && !st.created_service {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{}: waiting for the peer's service directory to come back",
                    service_dir.display()
                ),
            ));
        }
        let created_service = st.created_service;
        drop(st);
        // Blocking: waits up to device_wait for the node (a thread of the
        // blocking pool, not the runtime's).
        let created = configfs::setup_with(self.fs.as_ref(), &self.c).map_err(|e| {
            io::Error::other(format!("creating configfs stream {} again: {e}", self.c))
        })?;
        let mut st = self.lock();
        st.created_service = created_service || created.created_service;
        st.stats.recreated += 1;
        tracing::info!(
            index = created.index,
            "configfs stream {} created again: {}",
            self.c,
            created.dev_path.display()
        );
        let path = created.dev_path.clone();
        st.current = Some(created);
        Ok(path)
    }

    /// An open error in terms of the config: ENOMEM names `ring_size`
    /// and its value.
    fn explain(&self, e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::OutOfMemory || e.raw_os_error() == Some(libc::ENOMEM) {
            self.lock().stats.enomem += 1;
            return io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "opening configfs stream {}: the driver has no memory for a ring of \
                     ring_size = {} frames ({} MiB): lower device.configfs.ring_size (two \
                     streams of 4096 frames each failed this way on real hardware, 1024 \
                     worked); retrying with backoff",
                    self.c,
                    self.c.ring_size,
                    (u64::from(self.c.ring_size) * 4096) >> 20
                ),
            );
        }
        e
    }

    /// Removes the stream (the daemon's way out). A stream already gone
    /// is fine.
    pub fn teardown(&self) {
        let st = self.lock();
        let Some(created) = &st.current else {
            return;
        };
        if let Err(e) = configfs::teardown_with(self.fs.as_ref(), &self.c, created) {
            tracing::warn!("removing configfs stream {}: {e}", self.c);
        }
    }

    /// For `status`: the stream, its node and the counters.
    pub fn status(&self) -> Value {
        let st = self.lock();
        let s = &st.stats;
        json!({
            "stream": self.c.to_string(),
            "device": st.current.as_ref().map(|c| c.dev_path.display().to_string()),
            "present": st.current.is_some(),
            "recreated": s.recreated,
            "vanished": s.vanished,
            "open_failures": s.open_failures,
            "enomem": s.enomem,
        })
    }

    /// The node currently provisioned (`None` while the stream is gone).
    pub fn dev_path(&self) -> Option<PathBuf> {
        self.lock().current.as_ref().map(|c| c.dev_path.clone())
    }
}

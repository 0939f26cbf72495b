//! `tbbridge up|down|status`: one daemon per cable, like `wg-quick`.
//!
//! `up` loads `/etc/tbbridge/NAME.toml`, creates the configfs stream if the
//! config asks for one, starts the bridge on the device (which waits for the
//! peer in the background: the interface comes up at once, carrier off
//! until the peer answers), creates the TUN interface, runs the PostUp
//! hooks and serves the control socket. It runs until `down`, SIGTERM or
//! SIGINT, then runs PreDown, closes the session with a goodbye, removes the
//! interface and the configfs stream.

pub mod auto;
pub mod control;
pub mod host;
pub mod paths;
pub mod provision;
pub mod status;

pub use status::status;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tbbridge_config::{Config, DeviceConfig};
use tbbridge_transport::device::OpenOptions;
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::{DeviceSpec, SessionConfig};
use tokio::sync::mpsc;

use crate::frontend::Supervisor;
use paths::InstancePaths;
use tokio_util::sync::CancellationToken;

/// Where the config of an instance comes from.
#[derive(Debug, Clone)]
pub struct Target {
    /// Instance name (files, logs, default interface name).
    pub name: String,
    /// The config file.
    pub config: PathBuf,
}

impl Target {
    /// `NAME` with an optional `--config PATH`.
    pub fn new(name: &str, config: Option<PathBuf>) -> anyhow::Result<Self> {
        paths::check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            config: config.unwrap_or_else(|| tbbridge_config::path_for(name)),
        })
    }

    fn load(&self) -> anyhow::Result<Config> {
        Ok(tbbridge_config::load(&self.config)?)
    }
}

/// `tbbridge genkey`: a new pre-shared key on standard output.
pub fn genkey() -> anyhow::Result<()> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    println!("{hex}");
    Ok(())
}

/// The pre-shared key of `[session] psk_file`, if configured.
fn load_psk(cfg: &Config) -> anyhow::Result<Option<tbbridge_transport::session::auth::Psk>> {
    match &cfg.session.psk_file {
        Some(k) => Ok(Some(k.load()?)),
        None => Ok(None),
    }
}

/// `tbbridge check`: validates the config without touching the system.
pub fn check(t: &Target) -> anyhow::Result<()> {
    let cfg = t.load()?;
    let psk = load_psk(&cfg)?;
    println!("{}: ok", t.config.display());
    for w in cfg.warnings() {
        println!("  warning: {w}");
    }
    println!("  device: {}", describe_device(&cfg.device));
    if let Some(i) = &cfg.interface {
        let addrs: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
        println!(
            "  interface: {} mtu {} [{}]",
            i.name.as_str(),
            i.mtu,
            addrs.join(", ")
        );
    } else {
        println!("  interface: none");
    }
    for f in &cfg.forwards {
        println!(
            "  forward {}: {} -> peer service {}",
            f.name, f.listen, f.service
        );
    }
    for s in &cfg.services {
        println!("  service {}: -> {}", s.name, s.connect);
    }
    for p in &cfg.pipes {
        let to = match &p.sink {
            tbbridge_config::PipeSink::File(f) => format!("file {}", f.display()),
            tbbridge_config::PipeSink::Command(c) => format!("command `{c}`"),
        };
        println!("  pipe {}: -> {to}", p.name);
    }
    match &cfg.metrics {
        Some(m) => println!("  metrics: http://{}/metrics", m.listen),
        None => println!("  metrics: off"),
    }
    match (&cfg.session.psk_file, psk) {
        (Some(k), Some(_)) => println!(
            "  peer authentication: pre-shared key from {}",
            k.path.display()
        ),
        _ => println!("  peer authentication: off (any host on the cable is a peer)"),
    }
    Ok(())
}

fn describe_device(d: &DeviceConfig) -> String {
    match d {
        DeviceConfig::Path(spec) => spec.to_string(),
        DeviceConfig::Configfs(c) => format!("configfs stream {c}"),
    }
}

/// `tbbridge up` without `--foreground`: starts the daemon detached and
/// returns once its control socket answers (or it failed).
pub fn up_detached(t: &Target) -> anyhow::Result<()> {
    // Validate first so config errors show here, not in a log file.
    let cfg = t.load()?;
    let p = InstancePaths::new(&t.name);
    refuse_if_running(&p, &t.name)?;
    std::fs::create_dir_all(paths::run_dir()).context("creating the runtime directory")?;
    let log =
        std::fs::File::create(&p.log).with_context(|| format!("creating {}", p.log.display()))?;
    let exe = std::env::current_exe().context("finding the tbbridge executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up")
        .arg(&t.name)
        .arg("--config")
        .arg(&t.config)
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the child from our
    // session so it outlives the terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the daemon")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait()? {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            bail!("the daemon exited ({st}):\n{}", log.trim_end());
        }
        if control::request(&p.socket, "status", Duration::from_secs(1)).is_ok() {
            println!(
                "{} is up (pid {}, log {})",
                t.name,
                child.id(),
                p.log.display()
            );
            if let Some(i) = &cfg.interface {
                let addrs: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
                let peer = cfg.host.peer_id.map_or_else(String::new, |id| {
                    format!("; the peer: {}", host::peer_address(i, id))
                });
                println!("  {}: {}{peer}", i.name, addrs.join(", "));
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the daemon did not answer within 20 s; see {}",
        p.log.display()
    )
}

/// Is `pid` a `tbbridge up NAME` process? (A stale pid file may name an
/// unrelated process after a crash and pid reuse: never signal that.)
fn is_our_daemon(pid: i32, name: &str) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    let exe_ok = args.first().is_some_and(|a| a.ends_with(b"tbbridge"));
    exe_ok && args.contains(&b"up".as_slice()) && args.contains(&name.as_bytes())
}

pub(super) fn refuse_if_running(p: &InstancePaths, name: &str) -> anyhow::Result<()> {
    if control::request(&p.socket, "status", Duration::from_secs(2)).is_ok() {
        bail!("{name} is already up (tbbridge status {name}); run tbbridge down {name} first");
    }
    Ok(())
}

/// `tbbridge down`: asks the daemon to shut down and waits until it did.
pub fn down(name: &str) -> anyhow::Result<()> {
    paths::check_name(name)?;
    let p = InstancePaths::new(name);
    let pid = std::fs::read_to_string(&p.pid)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    match control::request(&p.socket, "down", Duration::from_secs(5)) {
        Ok(_) => {}
        Err(e) => {
            let Some(pid) = pid.filter(|p| is_our_daemon(*p, name)) else {
                bail!("{name} is not up ({e:#})");
            };
            // No answer: fall back to SIGTERM (which runs the same path).
            // SAFETY: plain kill(2) on a pid read from our own pid file.
            if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
                bail!("{name} is not up (stale pid file {})", p.pid.display());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let alive = pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !alive && !p.socket.exists() {
            println!("{name} is down");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{name} did not stop within 15 s")
}

/// `tbbridge up --foreground`: the daemon itself.
pub fn up_foreground(t: &Target) -> anyhow::Result<()> {
    let cfg = t.load()?;
    let p = InstancePaths::new(&t.name);
    refuse_if_running(&p, &t.name)?;
    std::fs::create_dir_all(paths::run_dir()).context("creating the runtime directory")?;
    // One daemon per name: the pid file is held under an exclusive lock
    // for the daemon's whole life (two `up` started at the same instant
    // both pass the socket check above; only one gets the lock).
    let pid_file = lock_pid_file(&p.pid, &t.name)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let r = rt.block_on(run_daemon(t, cfg, p));
    drop(pid_file);
    r
}

fn lock_pid_file(path: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "{name} is already being brought up or is up (lock on {} held)",
            path.display()
        );
    }
    f.set_len(0)?;
    std::fs::write(path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(f)
}

async fn run_daemon(t: &Target, cfg: Config, p: InstancePaths) -> anyhow::Result<()> {
    let started = Instant::now();
    for w in cfg.warnings() {
        tracing::warn!("{}: {w}", t.config.display());
    }
    let mut session_cfg = SessionConfig::default();
    cfg.session.apply(&mut session_cfg);
    session_cfg.psk = load_psk(&cfg)?;
    match &cfg.session.psk_file {
        Some(k) => tracing::info!(
            "peer authentication: pre-shared key from {}",
            k.path.display()
        ),
        None => tracing::info!("peer authentication: off"),
    }
    let (ident, id_source) = host::hello_ident(&cfg);
    tracing::info!(
        "this host: {} (identity {} from {id_source})",
        ident.hostname,
        tbbridge_config::HostId(ident.host_id)
    );
    session_cfg.ident = Some(ident);

    // The device: a path, or a configfs stream we create (and remove),
    // and create again whenever the peer's reboot takes it away.
    // Removed on every way out of here (errors included): a stream left
    // behind keeps its HopIDs.
    let mut provisioned = StreamGuard(None);
    let spec = match &cfg.device {
        DeviceConfig::Path(spec) => spec.clone(),
        DeviceConfig::Configfs(c) => {
            let c2 = c.clone();
            let p = tokio::task::spawn_blocking(move || {
                provision::Provisioner::setup_real(&c2, OpenOptions::default())
            })
            .await?
            .with_context(|| format!("setting up configfs stream {c}"))?;
            let created = p.current().context("configfs stream vanished at setup")?;
            if created.link.is_known() {
                tracing::info!("peer link: {}", created.link);
            }
            if let Some(w) = created.link.below_rate() {
                tracing::warn!("{w}");
            }
            tracing::info!(
                index = created.index,
                "configfs stream ready: {}",
                created.dev_path.display()
            );
            provisioned.0 = Some(p);
            DeviceSpec::TbStream(created.dev_path.clone())
        }
    };
    // The exporter first: its histogram handles go to the pump, and a
    // listen address that cannot be bound fails `up` with the reason.
    let exporter = match &cfg.metrics {
        Some(m) => Some(crate::metrics::Exporter::start(m.listen, &t.name)?),
        None => None,
    };
    let observer = exporter.as_ref().map(|_| {
        crate::metrics::PumpHistograms::new() as Arc<dyn tbbridge_transport::pump::PumpObserver>
    });
    let pump_opts = tbbridge_transport::pump::PumpOptions {
        busy_poll: cfg.session.busy_poll.unwrap_or_default(),
        observer,
    };
    let bridge = match &provisioned.0 {
        Some(p) => Bridge::start_with(
            p.opener(),
            session_cfg,
            tbbridge_transport::pump::random_session_id(),
            pump_opts,
        ),
        None => {
            Bridge::on_device_with(spec.clone(), OpenOptions::default(), session_cfg, pump_opts)
        }
    };

    // The front-ends: the interface is created and listening sockets are
    // bound here, so what cannot work fails `up` with the reason.
    let front_ends = crate::frontend::from_config(&cfg, &t.name)?;
    if let Some(i) = &cfg.interface {
        add_gateway_routes(i).await?;
        run_hooks("PostUp", &i.post_up, i.name.as_str()).await;
    }
    let cancel = CancellationToken::new();
    let mut supervisor = Supervisor::start(bridge.clone(), front_ends, cancel.clone());
    let pipe_stats = Arc::new(crate::pipe::PipeClientStats::default());

    // Control socket and pid file, last: `up` returns when they answer.
    let _ = std::fs::remove_file(&p.socket);
    // Created 0600 (umask), not chmod'ed after the fact: nobody but root
    // may ever connect.
    // SAFETY: umask only changes this process's file creation mask.
    let old_mask = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(&p.socket);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old_mask) };
    let listener = bound.with_context(|| format!("binding {}", p.socket.display()))?;
    let (tx, mut rx) = mpsc::channel(16);
    let ctl = tokio::spawn(control::serve(listener, tx));
    tracing::info!(name = %t.name, device = %spec, "up");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut failure = None;
    let mut refresh = tokio::time::interval(crate::metrics::REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let link_info = provisioned
        .0
        .as_ref()
        .and_then(|p| p.current())
        .map(|c| c.link);
    let mut link_rx = bridge.status();
    // The handshake may have finished while the interface was being set
    // up: look at the current state once too.
    link_rx.mark_changed();
    let mut peer_seen: Option<tbbridge_transport::wire::HelloIdent> = None;
    loop {
        tokio::select! {
            r = link_rx.changed() => {
                if r.is_ok() && link_rx.borrow_and_update().connected {
                    on_connected(t, &cfg, &bridge, &mut peer_seen);
                }
            }
            _ = refresh.tick(), if exporter.is_some() => {
                if let Some(x) = &exporter {
                    x.refresh(&crate::metrics::Sources {
                        bridge: &bridge,
                        supervisor: &supervisor,
                        pipe_clients: &pipe_stats,
                        link: link_info.as_ref(),
                    });
                }
            }
            req = rx.recv() => match req {
                Some(control::Request::Status(reply)) => {
                    let mut doc = status::status_doc(t, &spec, &bridge, &supervisor, &pipe_stats, started);
                    doc["link"]["peer_host"] = host::peer_doc(&cfg, bridge.peer_ident().as_ref());
                    if let Some(p) = &provisioned.0 {
                        doc["device"] = json!(p.dev_path().map_or_else(
                            || format!("{spec} (gone: waiting for the peer)"),
                            |d| d.display().to_string(),
                        ));
                        doc["configfs"] = p.status();
                    }
                    let _ = reply.send(doc);
                }
                Some(control::Request::Pipe { service, stream }) => {
                    tokio::spawn(crate::pipe::serve_client(
                        bridge.clone(),
                        stream,
                        service,
                        pipe_stats.clone(),
                    ));
                }
                Some(control::Request::Down) | None => break,
            },
            r = supervisor.next() => {
                if let Err(e) = r {
                    failure = Some(e);
                    break;
                }
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!(name = %t.name, "going down");
    ctl.abort();
    let _ = std::fs::remove_file(&p.socket);
    if let Some(i) = &cfg.interface {
        run_hooks("PreDown", &i.pre_down, i.name.as_str()).await;
    }
    // Front-ends stop first (no new connections; what they queued still
    // goes out), then the goodbye confirms delivery.
    supervisor.shutdown().await;
    let clean = tokio::time::timeout(Duration::from_secs(5), bridge.close())
        .await
        .unwrap_or(false);
    tracing::info!(clean, "session closed");
    drop(provisioned);
    if let Some(f) = &cfg.host.hosts_file {
        if let Err(e) = host::update_hosts_file(f, &t.name, None) {
            tracing::warn!("removing the peer's line from {}: {e}", f.display());
        }
    }
    if t.config == p.auto_config {
        // Derived afresh by the next zero-configuration `up`.
        let _ = std::fs::remove_file(&p.auto_config);
    }
    let _ = std::fs::remove_file(&p.pid);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A link came up: log a new peer (warning when it is not the host the
/// addresses were derived for) and keep its hosts(5) line.
fn on_connected(
    t: &Target,
    cfg: &Config,
    bridge: &Bridge,
    seen: &mut Option<tbbridge_transport::wire::HelloIdent>,
) {
    let Some(peer) = bridge.peer_ident() else {
        return;
    };
    if seen.as_ref() == Some(&peer) {
        return;
    }
    let id = tbbridge_config::HostId(peer.host_id);
    tracing::info!("peer: {} (identity {id})", peer.hostname);
    if let Some(want) = cfg.host.peer_id.filter(|w| *w != id) {
        tracing::warn!(
            "peer {} has identity {id}, but the addresses of {} were derived for {want}: \
             they may collide with that host's; run `tbbridge up --auto --print-config` again",
            peer.hostname,
            t.config.display()
        );
    }
    if let (Some(f), Some(i)) = (&cfg.host.hosts_file, &cfg.interface) {
        let line = host::hosts_line(host::peer_address(i, id), &peer.hostname);
        match host::update_hosts_file(f, &t.name, Some(&line)) {
            Ok(()) => tracing::info!("{}: {line}", f.display()),
            Err(e) => tracing::warn!("writing the peer's line to {}: {e}", f.display()),
        }
    }
    *seen = Some(peer);
}

/// Routes with a gateway (`via`) go in with `ip route`, after the
/// interface has its addresses.
async fn add_gateway_routes(i: &tbbridge_config::InterfaceConfig) -> anyhow::Result<()> {
    for r in i.routes.iter().filter(|r| r.via.is_some()) {
        let (to, via) = (
            r.to.to_string(),
            r.via.map(|v| v.to_string()).unwrap_or_default(),
        );
        let out = tokio::process::Command::new("ip")
            .args(["route", "replace", &to, "via", &via, "dev", i.name.as_str()])
            .output()
            .await
            .context("running ip route")?;
        anyhow::ensure!(
            out.status.success(),
            "ip route replace {to} via {via} dev {}: {}",
            i.name.as_str(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The configfs stream this daemon keeps, removed when dropped.
struct StreamGuard(Option<Arc<provision::Provisioner>>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.teardown();
        }
    }
}

/// Runs hook commands with `sh -c`, `TBBRIDGE_IFNAME` set; failures are
/// logged, not fatal (as wg-quick's are not for PreDown).
async fn run_hooks(kind: &str, cmds: &[String], ifname: &str) {
    for c in cmds {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .env("TBBRIDGE_IFNAME", ifname)
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => tracing::info!("{kind} `{c}`: ok"),
            Ok(o) => tracing::warn!(
                "{kind} `{c}` failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::warn!("{kind} `{c}`: {e}"),
        }
    }
}

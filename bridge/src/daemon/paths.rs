//! Where a running bridge keeps its pid file, control socket and log.

use std::path::PathBuf;

/// Runtime directory (`/run/tbbridge`, or `$TBBRIDGE_RUN_DIR` for tests).
pub fn run_dir() -> PathBuf {
    std::env::var_os("TBBRIDGE_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/tbbridge"))
}

/// Paths of one bridge instance.
#[derive(Debug, Clone)]
pub struct InstancePaths {
    /// The control socket (`status`, `down`).
    pub socket: PathBuf,
    /// The daemon's pid.
    pub pid: PathBuf,
    /// Output of a detached daemon.
    pub log: PathBuf,
    /// The config a zero-configuration `up` wrote (removed at `down`).
    pub auto_config: PathBuf,
}

impl InstancePaths {
    /// Paths for the instance named `name`.
    pub fn new(name: &str) -> Self {
        let d = run_dir();
        Self {
            socket: d.join(format!("{name}.sock")),
            pid: d.join(format!("{name}.pid")),
            log: d.join(format!("{name}.log")),
            auto_config: d.join(format!("{name}.auto.toml")),
        }
    }
}

/// Instance names with a control socket in the runtime directory.
pub fn running_instances() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(run_dir()) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".sock").map(str::to_owned)
        })
        .collect();
    v.sort();
    v
}

/// Checks an instance name: it becomes file names and an interface default.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    anyhow::ensure!(
        ok,
        "bad instance name {name:?}: use 1-64 characters from A-Z a-z 0-9 - _ . (not starting with .)"
    );
    Ok(())
}

//! Network namespaces for the demo and the end-to-end tests: created with
//! `ip netns add`, removed on drop, and entered by a thread with `setns`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

use anyhow::{bail, Context};

/// A network namespace that is deleted when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Why this process cannot create namespaces, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and TUN devices)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs iproute2's `ip` (apt-get install iproute2)".into());
    }
    None
}

impl NetNs {
    /// Creates namespace `name` with its loopback up.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        // A leftover from a crashed run would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = NetNs {
            name: name.to_owned(),
        };
        run(&mut ns.cmd("ip", &["link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]).args(args);
        c
    }

    /// Runs `f` on a new thread that entered the namespace; sockets and TUN
    /// devices it creates belong to the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> std::thread::JoinHandle<anyhow::Result<T>> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path)?;
            f()
        })
    }
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter(path: &str) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a namespace fd we own; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

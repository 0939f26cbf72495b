//! `tbbridge up` with no config file: find the peer, derive everything,
//! write it down as a config (`--print-config` shows it), then run the
//! same `up` as a file would (see [`tbbridge_config::auto`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tbbridge_config::auto::{self, AutoChoice, HostRoot, Peer};
use tbbridge_config::configfs::RealFs;

use super::{paths, Target};

/// How often the configfs root is looked at while no peer is there.
pub const POLL: Duration = Duration::from_millis(250);

/// The flags of the zero-configuration `up`.
#[derive(Debug, Clone, Default)]
pub struct AutoArgs {
    /// `--service`: the peer to use when there are several.
    pub service: Option<String>,
    /// `--sys-root`: a fake host's `/` (the emulated cable's `--host-a`).
    pub sys_root: Option<PathBuf>,
}

impl AutoArgs {
    fn root(&self) -> HostRoot {
        self.sys_root
            .as_deref()
            .map_or_else(HostRoot::system, HostRoot::under)
    }
}

fn list(peers: &[Peer]) -> String {
    peers.iter().map(|p| format!("\n  {p}")).collect::<String>()
}

/// Waits until the peer is there (saying so once), then returns the
/// config text of the zero-configuration setup. Several peers and no
/// `--service`: an error listing them.
pub fn config_text(instance: &str, args: &AutoArgs) -> anyhow::Result<String> {
    let root = args.root();
    let mut said = false;
    loop {
        let all = auto::discover(&RealFs, &root)?;
        let peers: Vec<Peer> = match &args.service {
            Some(s) => all
                .iter()
                .filter(|p| p.service.as_str() == s)
                .cloned()
                .collect(),
            None => all.clone(),
        };
        match peers.as_slice() {
            [] => {
                if !said {
                    let why = match &args.service {
                        Some(s) if !all.is_empty() => {
                            format!("service {s} is not there (there is:{})", list(&all))
                        }
                        _ => "no XDomain service".to_owned(),
                    };
                    eprintln!(
                        "tbbridge: no Thunderbolt peer yet ({why} under {}): waiting for one. \
                         Plug the cable and run `tbbridge up` on the other host too; Ctrl-C \
                         stops.",
                        root.configfs.display()
                    );
                    said = true;
                }
                std::thread::sleep(POLL);
            }
            [peer] => {
                let local = auto::local_identity(&RealFs, &root, peer.service.domain).context(
                    "this host has no identity: no host router unique_id in sysfs and no \
                         /etc/machine-id (set [host] id in a config file)",
                )?;
                if said {
                    eprintln!("tbbridge: peer found: {peer}");
                }
                let choice = AutoChoice {
                    instance: instance.to_owned(),
                    peer: peer.clone(),
                    local,
                    root,
                };
                return Ok(auto::config_text(&choice)?);
            }
            several => bail!(
                "{} Thunderbolt peers on this host, and tbbridge will not guess which one:{}\n\
                 Bring each up under its own name: tbbridge up NAME --auto --service SERVICE \
                 (e.g. tbbridge up tb0 --auto --service {})",
                several.len(),
                list(several),
                several[0].service.as_str()
            ),
        }
    }
}

/// `--print-config`: the config text, validated, on standard output.
pub fn print_config(instance: &str, args: &AutoArgs) -> anyhow::Result<()> {
    paths::check_name(instance)?;
    let text = config_text(instance, args)?;
    tbbridge_config::parse(&text, std::path::Path::new("(the printed config)"))?;
    print!("{text}");
    Ok(())
}

/// The zero-configuration target: the config is written to the runtime
/// directory (`NAME.auto.toml`, removed when the daemon goes down) and `up`
/// goes on from that file, as from any other. An instance already up is
/// refused before anything is written: its config stays as it was.
pub fn target(instance: &str, args: &AutoArgs) -> anyhow::Result<Target> {
    paths::check_name(instance)?;
    let p = paths::InstancePaths::new(instance);
    super::refuse_if_running(&p, instance)?;
    let text = config_text(instance, args)?;
    // Validated here too, so an error names the generated file's key.
    std::fs::create_dir_all(paths::run_dir()).context("creating the runtime directory")?;
    let path = p.auto_config;
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    tbbridge_config::parse(&text, &path)?;
    Ok(Target {
        name: instance.to_owned(),
        config: path,
    })
}

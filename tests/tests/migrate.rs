//! VM live migration with real QEMU (TCG, no guest OS: the RAM is filled
//! by QEMU's generic loader) between two bridges over the emulated cable:
//! `[migrate] listen` on the source host, `[migrate] connect` on the
//! destination, `tbbridge migrate` driving both QEMUs over QMP. The
//! destination's RAM is compared with the source's (`pmemsave`). Needs
//! root and `qemu-system-x86_64` (CI installs `qemu-system-x86`); skips
//! with a reason otherwise, and fails under `TBBRIDGE_NO_SKIP=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tbbridge::migrate::qmp::Qmp;
use tbbridge_tests::files::make_file;
use tbbridge_tests::lab::{skip_unless_possible, stop_ping, wait, Lab, Proc};
use tbbridge_tests::{needs_programs, skip};

/// Where the pattern goes in guest RAM (clear of the firmware's areas).
const PATTERN_ADDR: u64 = 0x200_0000;
const RAM_MIB: u64 = 128;

fn skip_test() -> bool {
    if skip_unless_possible() {
        return true;
    }
    if let Some(why) = needs_programs(&[("qemu-system-x86_64", "--version")]) {
        return skip(&why);
    }
    false
}

/// A QEMU with no guest OS and its QMP socket; killed when dropped.
struct Vm {
    _proc: Proc,
    qmp: PathBuf,
}

fn qemu(dir: &Path, name: &str, extra: &[String]) -> Vm {
    let qmp = dir.join(format!("{name}-qmp.sock"));
    let mut args: Vec<String> = [
        "-M",
        "pc",
        "-display",
        "none",
        "-nodefaults",
        "-S",
        "-mem-prealloc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "-m".into(),
        RAM_MIB.to_string(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ]);
    args.extend(extra.iter().cloned());
    let p = Proc(
        Command::new("qemu-system-x86_64")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64"),
    );
    wait(Duration::from_secs(20), "QEMU's QMP socket", || {
        qmp.exists()
    });
    Vm { _proc: p, qmp }
}

/// The pattern region of a VM's RAM, dumped to `file`.
fn ram(vm: &Vm, file: &Path, len: u64) -> Vec<u8> {
    let mut q = Qmp::connect(&vm.qmp).expect("qmp");
    q.execute(
        "pmemsave",
        json!({ "val": PATTERN_ADDR, "size": len, "filename": file.display().to_string() }),
    )
    .expect("pmemsave");
    std::fs::read(file).expect("the dump")
}

/// Two bridges with a NIC and `[migrate]` on each side, two QEMUs, the
/// source's RAM holding `pattern_mib` MiB of random bytes.
struct Setup {
    lab: Lab,
    dir: tempfile::TempDir,
    src: Vm,
    dst: Vm,
    pattern: Vec<u8>,
}

fn setup(tag: &str, pattern_mib: u64) -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let lab = Lab::new(tag);
    let nic = |i: u8| format!("[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.{i}/24\"]\n");
    lab.up_with(
        0,
        &format!(
            "{}[migrate]\nlisten = \"{}\"\n",
            nic(1),
            d.join("to.sock").display()
        ),
    );
    lab.up_with(
        1,
        &format!(
            "{}[migrate]\nconnect = \"{}\"\n",
            nic(2),
            d.join("in.sock").display()
        ),
    );
    lab.wait_connected();
    let file = d.join("pattern.bin");
    make_file(&file, pattern_mib << 20);
    let pattern = std::fs::read(&file).expect("pattern");
    let src = qemu(
        d,
        "src",
        &[
            "-device".into(),
            format!(
                "loader,file={},addr={PATTERN_ADDR:#x},force-raw=on",
                file.display()
            ),
        ],
    );
    let dst = qemu(d, "dst", &["-incoming".into(), "defer".into()]);
    Setup {
        lab,
        dir,
        src,
        dst,
        pattern,
    }
}

impl Setup {
    fn migrate_cmd(&self, extra: &[&str]) -> Command {
        let d = self.dir.path();
        let (sq, dq) = (
            self.src.qmp.display().to_string(),
            self.dst.qmp.display().to_string(),
        );
        let (to, inc) = (
            format!("unix:{}", d.join("to.sock").display()),
            format!("unix:{}", d.join("in.sock").display()),
        );
        let mut args = vec![
            "migrate",
            "--source-qmp",
            &sq,
            "--dest-qmp",
            &dq,
            "--to",
            &to,
            "--incoming",
            &inc,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.lab.tb(None, &refs)
    }

    /// The destination's RAM is the source's, and both hold the pattern.
    fn check_ram(&self) {
        let len = self.pattern.len() as u64;
        let d = self.dir.path();
        let got = ram(&self.dst, &d.join("dst.mem"), len);
        assert!(
            got == self.pattern,
            "the destination's RAM differs from the pattern"
        );
        let had = ram(&self.src, &d.join("src.mem"), len);
        assert!(
            had == self.pattern,
            "the source's RAM differs from the pattern"
        );
    }

    fn front_end(&self, i: usize, name: &str, key: &str) -> u64 {
        self.lab
            .front_end(i, name)
            .pointer(&format!("/counters/{key}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// One migration with `tbbridge migrate` (single channel, then multifd 4
/// on a fresh pair) while a ping runs through the NIC: completes, the
/// destination runs, its RAM is the source's.
fn migrate_with_ping(tag: &str, extra: &[&str], channels: u64) {
    let s = setup(tag, 48);
    let pinger = Proc(
        s.lab.ns[0]
            .cmd("ping", &["-i", "0.05", "-W", "2", "198.18.0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping"),
    );
    let mut args = vec!["--cont", "--json"];
    args.extend_from_slice(extra);
    let out = s.migrate_cmd(&args).output().expect("tbbridge migrate");
    assert!(
        out.status.success(),
        "tbbridge migrate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    eprintln!("{r}");
    assert_eq!(r["destination"], "running", "{r}");
    let (sent, got) = stop_ping(pinger);
    assert!(
        sent >= 1 && got + 1 >= sent,
        "pings lost during the migration: {got}/{sent}"
    );
    // Resumed, the guest (firmware only) may write low memory; the pattern
    // lies above it.
    // (QMP takes one client at a time: each connection is closed again.)
    let mut q = Qmp::connect(&s.dst.qmp).expect("qmp");
    q.execute("stop", json!({})).expect("stop");
    drop(q);
    s.check_ram();
    assert_eq!(s.front_end(0, "migrate source", "channels"), channels);
    assert_eq!(s.front_end(1, "migrate destination", "channels"), channels);
    assert_eq!(s.front_end(1, "migrate destination", "migrations"), 1);
}

#[test]
fn a_vm_migrates_through_the_bridges_with_its_ram_intact() {
    if skip_test() {
        return;
    }
    migrate_with_ping("tmg", &[], 1);
}

#[test]
fn multifd_four_channels_connect_in_order_and_complete() {
    if skip_test() {
        return;
    }
    // The main channel and four multifd ones: QEMU 7.2 takes the first
    // connection as the main channel, so a wrong order fails the run.
    migrate_with_ping("tmm", &["--multifd", "4"], 5);
}

/// Three unplug/replug cycles during one migration, at byte counts of
/// the migration's own progress: it completes, QEMU never notices.
#[test]
fn a_migration_survives_three_cable_pulls() {
    if skip_test() {
        return;
    }
    let s = setup("tmp", 64);
    let d = s.dir.path();
    let mut dst = Qmp::connect(&s.dst.qmp).expect("dst qmp");
    dst.execute(
        "migrate-incoming",
        json!({ "uri": format!("unix:{}", d.join("in.sock").display()) }),
    )
    .expect("migrate-incoming");
    // QMP takes one client at a time.
    drop(dst);
    let mut src = Qmp::connect(&s.src.qmp).expect("src qmp");
    // Slow enough that the pulls land inside it (64 MiB at 32 MiB/s).
    src.execute(
        "migrate-set-parameters",
        json!({ "max-bandwidth": 32u64 << 20 }),
    )
    .expect("parameters");
    src.execute(
        "migrate",
        json!({ "uri": format!("unix:{}", d.join("to.sock").display()) }),
    )
    .expect("migrate");
    let transferred = |src: &mut Qmp| -> (String, u64) {
        let q = src
            .execute("query-migrate", json!({}))
            .expect("query-migrate");
        (
            q["status"].as_str().unwrap_or("").to_owned(),
            q.pointer("/ram/transferred")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        )
    };
    for (k, at) in [8u64 << 20, 24 << 20, 40 << 20].into_iter().enumerate() {
        wait(Duration::from_secs(60), "the migration's progress", || {
            let (st, n) = transferred(&mut src);
            assert_ne!(st, "completed", "completed before pull {k}");
            assert_ne!(st, "failed", "failed before pull {k}");
            n >= at
        });
        s.lab.cable("unplug");
        wait(Duration::from_secs(10), "both links down", || {
            !s.lab.connected(0) && !s.lab.connected(1)
        });
        let (st, _) = transferred(&mut src);
        assert_eq!(st, "active", "QEMU noticed pull {k}");
        s.lab.cable("replug");
        s.lab.wait_connected();
    }
    wait(
        Duration::from_secs(120),
        "the migration to complete",
        || {
            let (st, _) = transferred(&mut src);
            assert_ne!(st, "failed", "the migration failed");
            st == "completed"
        },
    );
    drop(src);
    // The source completes when it sent everything; the destination is
    // done when it loaded everything the bridges carried.
    let mut dst = Qmp::connect(&s.dst.qmp).expect("dst qmp");
    wait(Duration::from_secs(60), "the destination to finish", || {
        let q = dst
            .execute("query-migrate", json!({}))
            .expect("query-migrate");
        assert_ne!(q["status"], "failed", "the destination failed: {q}");
        q["status"] == "completed"
    });
    drop(dst);
    s.check_ram();
    let st = s.lab.status(0);
    assert!(
        st.pointer("/link/resumes").and_then(Value::as_u64) >= Some(3),
        "three resumes: {st}"
    );
}

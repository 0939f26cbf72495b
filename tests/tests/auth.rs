//! Peer authentication end to end: two `tbbridge up` daemons over an
//! emulated cable with `[session] psk_file`. A wrong key is refused and
//! counted and the bridge keeps waiting; the right key then connects with
//! no restart of the waiting side. A key file others can read is refused
//! by `check` and `up`, naming the key and line. The end-to-end test needs
//! root (namespaces) and skips with a reason otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tbbridge_tests::lab::{bin, skip_unless_possible, wait, Lab};

/// `tbbridge genkey` into `path`, mode 0600.
fn genkey(path: &Path) {
    let out = Command::new(bin()).arg("genkey").output().expect("genkey");
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(key.trim().len(), 64, "{key:?}");
    assert!(key.trim().chars().all(|c| c.is_ascii_hexdigit()));
    std::fs::write(path, key).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn link(st: &Value, key: &str) -> Value {
    st.pointer(&format!("/link/{key}"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn psk_config(key: &Path) -> String {
    format!("[session]\npsk_file = \"{}\"\n", key.display())
}

#[test]
fn a_wrong_key_is_refused_and_the_right_one_connects() {
    if skip_unless_possible() {
        return;
    }
    let lab = Lab::new("au");
    let dir = lab.cfg_dir.path();
    let (k1, k2) = (dir.join("one.psk"), dir.join("two.psk"));
    genkey(&k1);
    genkey(&k2);
    lab.up_with(0, &psk_config(&k1));
    lab.up_with(1, &psk_config(&k2));
    // Both sides refuse the other, count it, and stay waiting.
    wait(Duration::from_secs(20), "both refusals counted", || {
        (0..2).all(|i| link(&lab.status(i), "auth_failures").as_u64() >= Some(1))
    });
    for i in 0..2 {
        let st = lab.status(i);
        assert_eq!(link(&st, "connected"), Value::Bool(false), "{st}");
        assert_eq!(link(&st, "auth"), "psk");
        assert_eq!(
            link(&st, "last_auth_failure"),
            "the peer's pre-shared key is not ours"
        );
        assert_eq!(link(&st, "peer"), Value::Null, "nothing of the peer taken");
        let text = st.to_string();
        for k in [&k1, &k2] {
            let secret = std::fs::read_to_string(k).expect("key");
            assert!(!text.contains(secret.trim()), "a key in status");
        }
    }
    // B comes back with the right key; A was never restarted.
    let down = lab
        .tb(None, &["down", &lab.name(1)])
        .output()
        .expect("down");
    assert!(down.status.success());
    lab.up_with(1, &psk_config(&k1));
    lab.wait_connected();
    let a = lab.status(0);
    assert!(link(&a, "peer").is_string(), "{a}");
    assert_eq!(link(&a, "auth"), "psk");
}

/// A side without a key never connects to one that requires it.
#[test]
fn a_peer_without_a_key_is_refused() {
    if skip_unless_possible() {
        return;
    }
    let lab = Lab::new("an");
    let k = lab.cfg_dir.path().join("k.psk");
    genkey(&k);
    lab.up_with(0, &psk_config(&k));
    lab.up_with(1, "");
    wait(Duration::from_secs(20), "refusals counted", || {
        link(&lab.status(0), "auth_failures").as_u64() >= Some(1)
            && link(&lab.status(1), "auth_failures").as_u64() >= Some(1)
    });
    assert_eq!(
        link(&lab.status(0), "last_auth_failure"),
        "the peer has no pre-shared key configured"
    );
    assert_eq!(link(&lab.status(1), "auth"), "off");
    assert!(!lab.connected(0) && !lab.connected(1));
}

/// `check` refuses a key file that group or others can read, and a key
/// too short, naming `session.psk_file` and its line; a good one is
/// reported without being shown. No root needed.
#[test]
fn check_refuses_readable_or_short_key_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("k.psk");
    genkey(&key);
    let cfg: PathBuf = dir.path().join("x.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\npath = \"emu:x/a\"\n\n[session]\npsk_file = \"{}\"\n",
            key.display()
        ),
    )
    .expect("cfg");
    let check = || {
        Command::new(bin())
            .args(["check", "x", "--config", &cfg.to_string_lossy()])
            .output()
            .expect("check")
    };
    let ok = check();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        text.contains("peer authentication: pre-shared key from"),
        "{text}"
    );
    let secret = std::fs::read_to_string(&key).expect("key");
    assert!(!text.contains(secret.trim()));

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let bad = check();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(
        err.contains(":5:") && err.contains("session.psk_file") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(err.contains("mode 0644"), "{err}");

    std::fs::write(&key, "tooshort\n").expect("short key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let short = check();
    assert!(!short.status.success());
    let err = String::from_utf8_lossy(&short.stderr).to_string();
    assert!(
        err.contains("session.psk_file") && err.contains("at least 32"),
        "{err}"
    );
    assert!(!err.contains("tooshort"), "the key echoed: {err}");
}

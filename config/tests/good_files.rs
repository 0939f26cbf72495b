//! Valid config files: the documented example, minimal files, defaults,
//! loading from disk.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tbbridge_config::*;
use tbbridge_transport::{CableEnd, Class, SessionConfig};

fn ok(text: &str) -> Config {
    match parse(text, Path::new("test.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n--- file ---\n{text}"),
    }
}

/// The ```toml block of config/README.md.
fn readme_example() -> String {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n").expect("toml block") + "```toml\n".len();
    let len = readme[start..].find("```").expect("end of block");
    readme[start..start + len].to_owned()
}

#[test]
fn readme_example_parses_with_every_value() {
    let cfg = ok(&readme_example());
    assert_eq!(cfg.metrics.map(|m| m.listen), Some(DEFAULT_METRICS_LISTEN));
    let DeviceConfig::Configfs(c) = &cfg.device else {
        panic!("configfs expected: {:?}", cfg.device);
    };
    assert_eq!(c.service.as_str(), "0-1.0");
    assert_eq!(
        (c.service.domain, c.service.route, c.service.index),
        (0, 1, 0)
    );
    assert_eq!(c.stream.as_str(), "tbb0");
    assert_eq!(c.in_hopid, HopId::Fixed(16));
    assert_eq!(c.out_hopid, HopId::Fixed(16));
    assert!(!c.allow_net_hopids);
    assert_eq!(c.ring_size, 2048);
    assert_eq!(c.throttling, 4096);
    assert_eq!(
        c.root,
        PathBuf::from("/sys/kernel/config/thunderbolt/stream")
    );
    assert_eq!(c.dev_dir, PathBuf::from("/dev"));
    assert_eq!(c.sysfs_root, PathBuf::from("/sys/bus/thunderbolt/devices"));
    assert_eq!(c.device_wait, Duration::from_secs(5));
    // The example spells out the defaults.
    let defaults = ConfigfsStream::new(c.service.clone(), c.stream.clone());
    assert_eq!(*c, defaults);

    let i = cfg.interface.as_ref().expect("interface");
    assert_eq!(i.name.as_str(), "tb0");
    let addrs: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(addrs, ["198.18.0.1/30", "fd00:7b::1/64"]);
    assert_eq!(i.mtu, 65520);
    let routes: Vec<String> = i.routes.iter().map(ToString::to_string).collect();
    assert_eq!(
        routes,
        [
            "198.19.0.0/16",
            "198.20.0.0/16 via 198.18.0.2",
            "fd01::/48 via fd00:7b::2"
        ]
    );
    assert_eq!(i.post_up, ["logger tbbridge up: $TBBRIDGE_IFNAME"]);
    assert!(i.pre_down.is_empty());
    assert!(i.offload);
    assert_eq!(i.queues, 1);

    // The [session] block spells out the transport defaults.
    let mut s = SessionConfig::default();
    cfg.session.apply(&mut s);
    assert_eq!(s, SessionConfig::default());
    assert_eq!(cfg.session.max_batch_body, Some(256 * 1024));
    assert_eq!(cfg.session.recv_budget, Some(1 << 30));

    assert_eq!(cfg.forwards.len(), 2);
    let f = &cfg.forwards[0];
    assert_eq!((f.name.as_str(), f.service.as_str()), ("ssh", "ssh"));
    assert_eq!(
        f.listen,
        Endpoint::Tcp(HostPort::Addr(
            "127.0.0.1:2222".parse::<SocketAddr>().expect("addr")
        ))
    );
    assert_eq!((f.class, f.max_connections), (Class::Normal, 1024));
    assert_eq!(
        cfg.forwards[1].listen,
        Endpoint::Unix(UnixAddr::Path(PathBuf::from("/run/tbbridge/docker.sock")))
    );
    assert_eq!(
        cfg.forwards[1].service, "docker",
        "service defaults to the name"
    );
    assert_eq!(cfg.services.len(), 2);
    let s0 = &cfg.services[0];
    assert_eq!(
        s0.connect,
        Endpoint::Tcp(HostPort::Name {
            host: "localhost".into(),
            port: 22
        })
    );
    assert_eq!(s0.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(s0.idle_timeout, DEFAULT_UDP_IDLE);
    assert_eq!(
        cfg.services[1].connect,
        Endpoint::Unix(UnixAddr::Path(PathBuf::from("/run/docker.sock")))
    );
    assert_eq!(cfg.pipes.len(), 1);
    assert_eq!(
        cfg.pipes[0].sink,
        PipeSink::File(PathBuf::from("/srv/backup.tar"))
    );
    assert_eq!(cfg.rpcs.len(), 1);
    let r = &cfg.rpcs[0];
    assert_eq!((r.name.as_str(), r.class), ("kv", Class::Latency));
    assert_eq!(
        (r.max_message, r.max_calls, r.max_connections),
        (
            tbbridge_config::DEFAULT_RPC_MESSAGE as u32,
            tbbridge_config::DEFAULT_RPC_CALLS,
            tbbridge_config::DEFAULT_RPC_CONNECTIONS
        )
    );
    assert_eq!(r.group, None);
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
}

#[test]
fn minimal_device_path() {
    let cfg = ok("[device]\npath = \"/dev/tbstream3\"\n");
    assert_eq!(
        cfg.device,
        DeviceConfig::Path(DeviceSpec::TbStream(PathBuf::from("/dev/tbstream3")))
    );
    assert!(cfg.interface.is_none());
    assert!(cfg.session.is_empty());
    assert!(cfg.forwards.is_empty() && cfg.services.is_empty() && cfg.pipes.is_empty());
}

#[test]
fn emulated_cable_and_interface_defaults() {
    // What `tbbridge demo` writes.
    let cfg = ok("[device]\npath = \"emu:demo/b\"\n\n[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.2/30\"]\n");
    assert_eq!(
        cfg.device,
        DeviceConfig::Path(DeviceSpec::Emu {
            cable: "demo".into(),
            end: CableEnd::B
        })
    );
    let i = cfg.interface.expect("interface");
    assert_eq!(i.mtu, DEFAULT_MTU);
    assert_eq!(i.mtu, 65520);
    assert!(i.offload);
    assert_eq!(i.queues, 1);
    assert!(i.routes.is_empty() && i.post_up.is_empty() && i.pre_down.is_empty());
    assert_eq!(
        i.addresses[0].addr,
        "198.18.0.2".parse::<IpAddr>().expect("ip")
    );
    assert_eq!(i.addresses[0].len, 30);
}

#[test]
fn configfs_defaults_and_overrides() {
    let cfg = ok("[device.configfs]\nservice = \"1-a0301.2\"\nstream = \"s\"\n");
    let DeviceConfig::Configfs(c) = cfg.device else {
        panic!("configfs");
    };
    assert_eq!(c.in_hopid, HopId::Fixed(DEFAULT_HOPID));
    assert_eq!(c.ring_size, DEFAULT_RING_SIZE);
    assert_eq!(c.throttling, DEFAULT_THROTTLING_NS);
    assert_eq!(c.service.xdomain_device(), "1-a0301");

    let cfg = ok("[device.configfs]\nservice = \"0-1.0\"\nstream = \"s\"\nin_hopid = -1\nout_hopid = \"auto\"\n\
                  ring_size = 32\nthrottling = 0\nallow_net_hopids = true\nroot = \"/tmp/cfs\"\n\
                  dev_dir = \"/tmp/dev\"\nsysfs_root = \"/tmp/sys\"\ndevice_wait_ms = 0\n");
    let DeviceConfig::Configfs(c) = cfg.device else {
        panic!("configfs");
    };
    assert_eq!((c.in_hopid, c.out_hopid), (HopId::Auto, HopId::Auto));
    assert_eq!((c.ring_size, c.throttling), (32, 0));
    assert!(c.allow_net_hopids);
    assert_eq!(c.stream_dir(), PathBuf::from("/tmp/cfs/0-1.0/s"));
    assert_eq!(c.dev_dir, PathBuf::from("/tmp/dev"));
    assert_eq!(c.device_wait, Duration::ZERO);

    // Range ends are accepted.
    ok("[device.configfs]\nservice = \"0-1.0\"\nstream = \"12345678\"\nin_hopid = 8\nout_hopid = 2047\nring_size = 4096\nthrottling = 16776960\n");
}

#[test]
fn pinned_net_hopids_are_allowed_but_warned() {
    let cfg =
        ok("[device.configfs]\nservice = \"0-1.0\"\nstream = \"s\"\nin_hopid = 8\nout_hopid = 9\n");
    let w = cfg.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("in_hopid = 8") && w[0].contains("thunderbolt_net"),
        "{w:?}"
    );
    let cfg = ok("[device]\npath = \"emu:x/a\"\n[interface]\nname = \"t\"\nmtu = 1500\n");
    assert!(cfg.warnings()[0].contains("3x"), "{:?}", cfg.warnings());
}

#[test]
fn routes_hooks_and_sizes() {
    let cfg = ok(r#"
[device]
path = "emu:x/a"
[interface]
name = "tb-lab.1"
addresses = []
routes = ["0.0.0.0/0", "::/0 via fe80::1", { to = "10.0.0.0/8" }]
post_up = "ip route add 10.9.0.0/16 dev $TBBRIDGE_IFNAME"
pre_down = ["true", "echo bye"]
offload = false
queues = 16
[session]
keepalive_ms = 250
idle_timeout_ms = 1000
stream_window = "16M"
dgram_send_queue = 65536
max_channels = 8
starvation_limit = 4
"#);
    let i = cfg.interface.as_ref().expect("interface");
    assert!(i.addresses.is_empty());
    assert_eq!(i.routes.len(), 3);
    assert_eq!(i.routes[1].via, Some("fe80::1".parse().expect("ip")));
    assert_eq!(i.routes[2].via, None);
    assert_eq!(i.post_up.len(), 1);
    assert_eq!(i.pre_down, ["true", "echo bye"]);
    assert!(!i.offload);
    assert_eq!(i.queues, 16);
    let mut s = SessionConfig::default();
    cfg.session.apply(&mut s);
    assert_eq!(s.keepalive_interval, Duration::from_millis(250));
    assert_eq!(s.idle_timeout, Duration::from_secs(1));
    assert_eq!(s.stream_window, 16 << 20);
    assert_eq!(s.dgram_send_queue, 65536);
    assert_eq!(s.max_channels, 8);
    assert_eq!(s.starvation_limit, 4);
    assert_eq!(s.max_batch_body, SessionConfig::default().max_batch_body);
}

#[test]
fn interface_serializes_for_status() {
    // The daemon puts these into `status --json`.
    let cfg = ok("[device]\npath = \"emu:x/a\"\n[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.1/30\"]\nroutes = [\"10.0.0.0/8 via 198.18.0.2\"]\n");
    let i = cfg.interface.expect("interface");
    // Serialize through toml (the only serializer this crate depends on).
    let out = toml::to_string(&i).expect("serialize");
    assert!(out.contains("name = \"tb0\""), "{out}");
    assert!(out.contains("\"198.18.0.1/30\""), "{out}");
    assert!(out.contains("\"10.0.0.0/8 via 198.18.0.2\""), "{out}");
}

#[test]
fn load_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tb0.toml");
    std::fs::write(&path, "[device]\npath = \"/dev/tbstream0\"\n").expect("write");
    let cfg = load(&path).expect("valid");
    assert!(matches!(cfg.device, DeviceConfig::Path(_)));

    // Errors name the file as given.
    std::fs::write(&path, "[device]\npath = 5\n").expect("write");
    let e = load(&path).expect_err("invalid");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:2:8: device.path:", path.display())),
        "{e}"
    );

    // Missing file.
    let missing = dir.path().join("nope.toml");
    let e = load(&missing).expect_err("missing");
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string().contains("nope.toml: cannot read config file"),
        "{e}"
    );
    assert_eq!(e.line(), None);

    // A directory: said once, not "Is a directory: Is a directory".
    let e = load(dir.path()).expect_err("directory");
    let shown = format!("{:#}", anyhow_like(&e));
    assert!(
        shown.contains("not a regular file (a directory)"),
        "{shown}"
    );
    assert_eq!(shown.matches("directory").count(), 1, "{shown}");

    // A FIFO: refused at once (opening one blocks until a writer comes).
    let fifo = dir.path().join("fifo.toml");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("path");
    // SAFETY: a NUL-terminated path; the result is checked.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let (tx, rx) = std::sync::mpsc::channel();
    let f2 = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(load(&f2).map(|_| ()).map_err(|e| e.to_string()));
    });
    // Generous: a hang is forever, an answer is microseconds.
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("load of a FIFO hangs");
    let e = r.expect_err("fifo");
    assert!(e.contains("not a regular file (a FIFO)"), "{e}");

    // Not UTF-8: the position of the bad byte.
    std::fs::write(&path, b"[device]\npath = \"/dev/\xff\"\n").expect("write");
    let e = load(&path).expect_err("utf8");
    let d = e.diagnostic().expect("diagnostic");
    assert_eq!((d.line, d.column), (2, 14));
    assert!(d.message.contains("UTF-8"));

    // Too large.
    std::fs::write(&path, vec![b'#'; (MAX_CONFIG_SIZE + 1) as usize]).expect("write");
    let e = load(&path).expect_err("too large");
    assert!(e.to_string().contains("larger than"), "{e}");

    // A directory.
    assert!(load(dir.path()).is_err());
}

#[test]
fn path_for_honours_the_env_variable() {
    // The only test in this binary touching the environment.
    std::env::remove_var(CONFIG_DIR_ENV);
    assert_eq!(path_for("tb0"), PathBuf::from("/etc/tbbridge/tb0.toml"));
    std::env::set_var(CONFIG_DIR_ENV, "/tmp/tbb-test");
    assert_eq!(path_for("lab"), PathBuf::from("/tmp/tbb-test/lab.toml"));
    std::env::remove_var(CONFIG_DIR_ENV);
}

#[test]
fn metrics_listen_on_loopback_unless_told() {
    let none = ok("[device]\npath = \"emu:x/a\"\n");
    assert_eq!(none.metrics, None, "no [metrics]: nothing listens");
    let dflt = ok("[device]\npath = \"emu:x/a\"\n[metrics]\n");
    let m = dflt.metrics.expect("[metrics] present");
    assert_eq!(
        m.listen,
        "127.0.0.1:9477".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(m.listen, DEFAULT_METRICS_LISTEN);
    assert!(dflt.warnings().is_empty(), "{:?}", dflt.warnings());
    let v6 = ok("[device]\npath = \"emu:x/a\"\n[metrics]\nlisten = \"[::1]:9100\"\n");
    assert_eq!(v6.metrics.map(|m| m.listen.port()), Some(9100));
    assert!(v6.warnings().is_empty());
    let all = ok("[device]\npath = \"emu:x/a\"\n[metrics]\nlisten = \"0.0.0.0:9477\"\n");
    assert_eq!(
        all.metrics.map(|m| m.listen.ip()),
        Some(IpAddr::from([0, 0, 0, 0]))
    );
    let w = all.warnings();
    assert!(
        w.iter()
            .any(|w| w.contains("metrics.listen") && w.contains("other hosts")),
        "{w:?}"
    );
}

/// The error and its sources, joined as anyhow's `{:#}` prints them.
fn anyhow_like(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

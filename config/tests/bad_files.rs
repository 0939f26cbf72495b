//! A table of bad config files: each must fail with the expected key path,
//! line and message, and nothing may panic.

use std::path::Path;

use tbbridge_config::{parse, ConfigError};

const ORIGIN: &str = "/etc/tbbridge/tb0.toml";

/// A valid head that most cases append to (lines 1-6).
const HEAD: &str = "\
[device]
path = \"/dev/tbstream0\"

[interface]
name = \"tb0\"
addresses = [\"198.18.0.1/30\"]
";

/// A valid configfs head (lines 1-3); cases add keys from line 4.
const CFS: &str = "\
[device.configfs]
service = \"0-1.0\"
stream = \"tbb0\"
";

struct Case {
    name: &'static str,
    text: String,
    line: usize,
    key: &'static str,
    message: &'static str,
}

fn case(
    name: &'static str,
    text: impl Into<String>,
    line: usize,
    key: &'static str,
    message: &'static str,
) -> Case {
    Case {
        name,
        text: text.into(),
        line,
        key,
        message,
    }
}

fn cases() -> Vec<Case> {
    let h = |extra: &str| format!("{HEAD}{extra}");
    let c = |extra: &str| format!("{CFS}{extra}");
    vec![
        case("unknown top-level key", format!("bogus = 1\n{HEAD}"), 1, "bogus", "unknown key `bogus` (allowed: device, interface, session, forward, service, pipe, migrate, rpc, metrics, host)"),
        case("unknown top-level table", h("[interfaces]\nname = \"x\"\n"), 7, "interfaces", "unknown key `interfaces`"),
        case("unknown nested key", h("mtuu = 9000\n"), 7, "interface.mtuu", "unknown key `mtuu` (allowed: name, addresses, mtu,"),
        case("unknown key in device.configfs", c("hopid = 16\n"), 4, "device.configfs.hopid", "unknown key `hopid` (allowed: service, stream, in_hopid"),
        case("unknown key in an inline route", h("routes = [{ to = \"10.1.0.0/16\", gw = \"198.18.0.2\" }]\n"), 7, "interface.routes[0].gw", "unknown key `gw` (allowed: to, via)"),
        case("unknown key in [[forward]]", h("[[forward]]\nname = \"a\"\nlisten = \"tcp:127.0.0.1:1\"\nport = 5\n"), 10, "forward[0].port", "unknown key `port`"),
        case("wrong type: mtu as string", h("mtu = \"9000\"\n"), 7, "interface.mtu", "expected an integer, found a string"),
        case("wrong type: name as integer", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = 0\n", 4, "interface.name", "expected a string, found an integer"),
        case("wrong type: offload", h("offload = \"yes\"\n"), 7, "interface.offload", "expected a boolean (true or false), found a string"),
        case("wrong type: interface not a table", "interface = 5\n[device]\npath = \"/dev/tbstream0\"\n", 1, "interface", "expected a table, found an integer"),
        case("wrong type: [[device]]", "[[device]]\npath = \"/dev/tbstream0\"\n", 1, "device", "expected a table, found an array"),
        case("wrong type: addresses not an array", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = \"tb0\"\naddresses = \"198.18.0.1/30\"\n", 5, "interface.addresses", "expected an array of address strings"),
        case("wrong type: date-time", h("mtu = 1979-05-27\n"), 7, "interface.mtu", "expected an integer, found a date-time"),
        case("wrong type: float", h("mtu = 9000.0\n"), 7, "interface.mtu", "expected an integer, found a float"),
        case("mtu too large", h("mtu = 70000\n"), 7, "interface.mtu", "70000 is out of range (allowed 1280..=65535)"),
        case("mtu too small", h("mtu = 576\n"), 7, "interface.mtu", "576 is out of range (allowed 1280..=65535)"),
        case("queues out of range", h("queues = 17\n"), 7, "interface.queues", "17 is out of range (allowed 1..=16)"),
        case("bad ifname: slash", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = \"tb/0\"\n", 4, "interface.name", "\"tb/0\" is not a valid interface name"),
        case("bad ifname: too long", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = \"thunderbolt-bridge0\"\n", 4, "interface.name", "1 to 15 bytes"),
        case("bad ifname: whitespace", "[device]\npath = \"/dev/tbstream0\"\n\n[interface]\nname = \"tb 0\"\n", 5, "interface.name", "without `/`, `:` or whitespace"),
        case("missing ifname", "[device]\npath = \"/dev/tbstream0\"\n\n[interface]\nmtu = 9000\n", 4, "interface.name", "missing required key"),
        case("bad address", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.1/30\",\n  \"198.18.0.300/30\"]\n", 6, "interface.addresses[1]", "\"198.18.0.300/30\" is not an IPv4 or IPv6 address"),
        case("bad IPv6 address (tb is not hex)", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = \"tb0\"\naddresses = [\"fd00:tb::1/64\"]\n", 5, "interface.addresses[0]", "is not an IPv4 or IPv6 address"),
        case("bad prefix length v4", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.1/33\"]\n", 5, "interface.addresses[0]", "bad prefix length \"33\" in \"198.18.0.1/33\" (allowed 0..=32)"),
        case("bad prefix length v6", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = \"tb0\"\naddresses = [\"fd00::1/129\"]\n", 5, "interface.addresses[0]", "(allowed 0..=128)"),
        case("address without prefix length", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.1\"]\n", 5, "interface.addresses[0]", "has no prefix length"),
        case("duplicate address", "[device]\npath = \"/dev/tbstream0\"\n[interface]\nname = \"tb0\"\naddresses = [\"198.18.0.1/30\", \"198.18.0.1/30\"]\n", 5, "interface.addresses[1]", "duplicate address 198.18.0.1/30"),
        case("route with host bits", h("routes = [\"198.19.0.1/16\"]\n"), 7, "interface.routes[0]", "has host bits set (did you mean 198.19.0.0/16?)"),
        case("route gateway of other family", h("routes = [{ to = \"10.1.0.0/16\", via = \"fd00::2\" }]\n"), 7, "interface.routes[0].via", "not of the same address family"),
        case("route not a route", h("routes = [5]\n"), 7, "interface.routes[0]", "expected a route"),
        case("empty hook command", h("post_up = [\"ip link\", \"  \"]\n"), 7, "interface.post_up[1]", "empty command"),
        case("bad device string", "[device]\npath = \"tbstream0\"\n", 2, "device.path", "bad device spec \"tbstream0\": expected a device path such as /dev/tbstream0, or emu:NAME/a|b"),
        case("bad emu device", "[device]\npath = \"emu:lab/c\"\n", 2, "device.path", "bad cable end \"c\""),
        case("path and configfs both", "[device]\npath = \"/dev/tbstream0\"\n[device.configfs]\nservice = \"0-1.0\"\nstream = \"tbb0\"\n", 3, "device.configfs", "`path` and `[device.configfs]` are both set"),
        case("neither path nor configfs", "\n[device]\n", 2, "device.path", "missing: set `path`"),
        case("no [device] at all", "[interface]\nname = \"tb0\"\n", 1, "device", "missing required key"),
        case("stream name > 8 chars", "[device.configfs]\nservice = \"0-1.0\"\nstream = \"tbbridge0\"\n", 3, "device.configfs.stream", "is 9 characters long (allowed at most 8"),
        case("stream name bad chars", "[device.configfs]\nservice = \"0-1.0\"\nstream = \"tb/0\"\n", 3, "device.configfs.stream", "is invalid"),
        case("missing stream", "[device.configfs]\nservice = \"0-1.0\"\n", 1, "device.configfs.stream", "missing required key"),
        case("bad service name", "[device.configfs]\nservice = \"0-1\"\nstream = \"tbb0\"\n", 2, "device.configfs.service", "is not an XDomain service name (expected DOMAIN-ROUTE.INDEX as in %u-%llx.%u"),
        case("bad service route", "[device.configfs]\nservice = \"0-xyz.0\"\nstream = \"tbb0\"\n", 2, "device.configfs.service", "%u-%llx.%u"),
        case("hopid below 8", c("in_hopid = 5\n"), 4, "device.configfs.in_hopid", "5 is out of range (allowed -1 or \"auto\" for automatic, or 8..=2047)"),
        case("hopid above max", c("out_hopid = 4096\n"), 4, "device.configfs.out_hopid", "4096 is out of range"),
        case("hopid 0", c("in_hopid = 0\n"), 4, "device.configfs.in_hopid", "0 would release the HopID"),
        case("hopid bad string", c("in_hopid = \"any\"\n"), 4, "device.configfs.in_hopid", "\"any\" is not a HopID"),
        case("ring_size too small", c("ring_size = 16\n"), 4, "device.configfs.ring_size", "16 is out of range (allowed 32..=4096)"),
        case("ring_size too large", c("ring_size = 8192\n"), 4, "device.configfs.ring_size", "8192 is out of range (allowed 32..=4096)"),
        case("throttling too large", c("throttling = 16776961\n"), 4, "device.configfs.throttling", "16776961 is out of range (allowed 0..=16776960)"),
        case("throttling negative", c("throttling = -1\n"), 4, "device.configfs.throttling", "-1 is out of range"),
        case("relative configfs root", c("root = \"sys/kernel\"\n"), 4, "device.configfs.root", "is not an absolute path"),
        case("device wait too long", c("device_wait_ms = 3600000\n"), 4, "device.configfs.device_wait_ms", "out of range (allowed 0..=600000)"),
        case("duplicate key", h("mtu = 9000\nmtu = 9001\n"), 8, "", "duplicate key"),
        case("duplicate table", "[device]\npath = \"/dev/tbstream0\"\n[device]\npath = \"/dev/tbstream1\"\n", 3, "", "invalid table header"),
        case("invalid TOML syntax", h("mtu = \n"), 7, "interface.mtu", "invalid string: expected `\"`"),
        case("unterminated string", "[device]\npath = \"/dev/tbstream0\n", 2, "device.path", "invalid basic string"),
        case("session: idle <= keepalive", "[device]\npath = \"emu:x/a\"\n[session]\nkeepalive_ms = 1000\nidle_timeout_ms = 1000\n", 5, "session.idle_timeout_ms", "must be larger than keepalive_ms"),
        case("session: keepalive above default idle", "[device]\npath = \"emu:x/a\"\n[session]\nkeepalive_ms = 5000\n", 4, "session.keepalive_ms", "idle_timeout_ms (4000 ms) must be larger than keepalive_ms (5000 ms)"),
        case("session: bad size", "[device]\npath = \"emu:x/a\"\n[session]\nstream_window = \"8 MB\"\n", 4, "session.stream_window", "\"8 MB\" is not a size"),
        case("session: size out of range", "[device]\npath = \"emu:x/a\"\n[session]\nmax_batch_body = \"4MiB\"\n", 4, "session.max_batch_body", "4194304 is out of range (allowed 4096..=1048576)"),
        case("session: unknown key", "[device]\npath = \"emu:x/a\"\n[session]\nkeepalive = 5\n", 4, "session.keepalive", "unknown key `keepalive`"),
        case("migrate: neither side", "[device]\npath = \"emu:x/a\"\n[migrate]\nmax_channels = 4\n", 3, "migrate.listen", "[migrate] needs `listen`"),
        case("migrate: relative path", "[device]\npath = \"emu:x/a\"\n[migrate]\nlisten = \"m.sock\"\n", 4, "migrate.listen", "not a Unix socket path"),
        case("migrate: tcp", "[device]\npath = \"emu:x/a\"\n[migrate]\nconnect = \"tcp:1.2.3.4:4444\"\n", 4, "migrate.connect", "not a Unix socket path"),
        case("rpc: message too large", "[device]\npath = \"emu:x/a\"\n[[rpc]]\nname = \"jobs\"\nmax_message = \"8MiB\"\n", 5, "rpc[0].max_message", "8388608 is out of range (allowed 0..=4194304)"),
        case("metrics: listen without a port", "[device]\npath = \"emu:x/a\"\n[metrics]\nlisten = \"127.0.0.1\"\n", 4, "metrics.listen", "\"127.0.0.1\" is not an IP address and port, e.g. \"127.0.0.1:9477\""),
        case("metrics: host name", "[device]\npath = \"emu:x/a\"\n[metrics]\nlisten = \"localhost:9477\"\n", 4, "metrics.listen", "is not an IP address and port"),
        case("host: id not a uuid", "[device]\npath = \"emu:x/a\"\n[host]\nid = \"laptop\"\n", 4, "host.id", "\"laptop\" is not a UUID"),
        case("host: peer is itself", "[device]\npath = \"emu:x/a\"\n[host]\nid = \"0a0a0a0a-0000-0000-0000-00000000000a\"\npeer_id = \"0a0a0a0a00000000000000000000000a\"\n", 5, "host.peer_id", "the peer's identity is this host's own `id`"),
        case("metrics: port 0", "[device]\npath = \"emu:x/a\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n", 3, "metrics.listen", "port 0 is not a fixed port"),
        case("metrics: not a string", "[device]\npath = \"emu:x/a\"\n[metrics]\nlisten = 9477\n", 4, "metrics.listen", "expected a string, found an integer"),
        case("metrics: unknown key", "[device]\npath = \"emu:x/a\"\n[metrics]\nport = 9477\n", 4, "metrics.port", "unknown key `port` (allowed: listen)"),
        case("metrics: not a table", "metrics = true\n[device]\npath = \"emu:x/a\"\n", 1, "metrics", "expected a table, found a boolean"),
        case("forward: the old connect key", "[device]\npath = \"emu:x/a\"\n[[forward]]\nname = \"a\"\nlisten = \"tcp:127.0.0.1:1\"\nconnect = \"h:1\"\n", 6, "forward[0].connect", "the peer decides, in its [[service]]"),
        case("forward: the old proto key", "[device]\npath = \"emu:x/a\"\n[[forward]]\nname = \"a\"\nproto = \"tcp\"\nlisten = \"tcp:127.0.0.1:1\"\n", 5, "forward[0].proto", "the protocol is part of the endpoint"),
        case("forward: no scheme", "[device]\npath = \"emu:x/a\"\n[[forward]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n", 5, "forward[0].listen", "is not an endpoint"),
        case("forward: unknown scheme", "[device]\npath = \"emu:x/a\"\n[[forward]]\nname = \"a\"\nlisten = \"sctp:127.0.0.1:1\"\n", 5, "forward[0].listen", "unknown endpoint kind \"sctp\""),
        case("forward: host name to listen on", "[device]\npath = \"emu:x/a\"\n[[forward]]\nname = \"a\"\nlisten = \"tcp:localhost:80\"\n", 5, "forward[0].listen", "is not an IP address and port"),
        case("forward: unix path relative", "[device]\npath = \"emu:x/a\"\n[[forward]]\nname = \"a\"\nlisten = \"unix:x.sock\"\n", 5, "forward[0].listen", "is not a Unix socket path"),
        case("forward: duplicate name", "[device]\npath = \"emu:x/a\"\n[[forward]]\nname = \"a\"\nlisten = \"tcp:127.0.0.1:1\"\n[[forward]]\nname = \"a\"\nlisten = \"tcp:127.0.0.1:2\"\n", 7, "forward[1].name", "duplicate forward name \"a\" (first used on line 4)"),
        case("forward: bad class", "[device]\npath = \"emu:x/a\"\n[[forward]]\nname = \"a\"\nlisten = \"tcp:127.0.0.1:1\"\nclass = \"fast\"\n", 6, "forward[0].class", "unknown class \"fast\""),
        case("service: bad connect", "[device]\npath = \"emu:x/a\"\n[[service]]\nname = \"a\"\nconnect = \"tcp:no port\"\n", 5, "service[0].connect", "is not e.g."),
        case("service: timeout 0", "[device]\npath = \"emu:x/a\"\n[[service]]\nname = \"a\"\nconnect = \"tcp:h:1\"\nconnect_timeout_ms = 0\n", 6, "service[0].connect_timeout_ms", "out of range"),
        case("pipe: neither file nor command", "[device]\npath = \"emu:x/a\"\n[[pipe]]\nname = \"b\"\n", 3, "pipe[0].file", "a pipe needs `file`"),
        case("integer beyond 64 bits names its key", h("mtu = 1180591620717411303424\n"), 7, "interface.mtu", "number too large to fit in target type (TOML integers are 64-bit signed"),
        case("integer beyond 64 bits in an array table", "[device]\npath = \"emu:x/a\"\n[[forward]]\nname = \"a\"\nmax_connections = 99999999999999999999999\n", 5, "forward.max_connections", "number too large"),
        case("pipe: both", "[device]\npath = \"emu:x/a\"\n[[pipe]]\nname = \"b\"\nfile = \"/x\"\ncommand = \"cat\"\n", 6, "pipe[0].command", "either `file` or `command`"),
    ]
}

#[test]
fn bad_files_table() {
    let cases = cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for c in &cases {
        let err = match parse(&c.text, Path::new(ORIGIN)) {
            Ok(cfg) => {
                failures.push(format!("{}: parsed but should fail: {cfg:?}", c.name));
                continue;
            }
            Err(e) => e,
        };
        let msg = err.to_string();
        let Some(d) = err.diagnostic() else {
            failures.push(format!("{}: not a diagnostic: {msg}", c.name));
            continue;
        };
        let prefix = format!("{ORIGIN}:{}:{}: ", d.line, d.column);
        let ok = d.line == c.line
            && d.key == c.key
            && d.message.contains(c.message)
            && msg.starts_with(&prefix)
            && !d.message.contains('\n');
        if !ok {
            failures.push(format!(
                "{}: want line {} key {:?} message containing {:?}\n     got {msg}",
                c.name, c.line, c.key, c.message
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A 600 KB key is not echoed back in full: the report stays short enough
/// to read, and still names where the key is.
#[test]
fn long_keys_and_values_are_cut_in_reports() {
    let key = "k".repeat(600_000);
    let text = format!("{HEAD}{key} = 1\n");
    let e = parse(&text, Path::new(ORIGIN)).expect_err("unknown key");
    let msg = e.to_string();
    assert!(msg.len() < 2_000, "{} bytes", msg.len());
    assert!(
        msg.starts_with(&format!("{ORIGIN}:7:1: interface.kkk")),
        "{msg}"
    );
    assert!(msg.contains("more characters"), "{msg}");
    let value = "v".repeat(600_000);
    let text = format!("{HEAD}mtu = \"{value}\"\n");
    let msg = parse(&text, Path::new(ORIGIN))
        .expect_err("string mtu")
        .to_string();
    assert!(msg.len() < 2_000, "{} bytes", msg.len());
    assert!(msg.contains("interface.mtu"), "{msg}");
}

#[test]
fn exact_message_of_the_documented_example() {
    let text = format!("{HEAD}mtu = 70000\n");
    let e = parse(&text, Path::new(ORIGIN)).expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "/etc/tbbridge/tb0.toml:7:7: interface.mtu: 70000 is out of range (allowed 1280..=65535)"
    );
    assert_eq!(e.line(), Some(7));
}

#[test]
fn columns_point_at_the_key_or_value() {
    let e = parse(&format!("{HEAD}  mtuu = 1\n"), Path::new(ORIGIN)).expect_err("unknown");
    let d = e.diagnostic().expect("diagnostic");
    assert_eq!((d.line, d.column), (7, 3));
    let e = parse(
        "[device.configfs]\nservice = \"0-1.0\"\nstream    =   \"tbbridge0\"\n",
        Path::new(ORIGIN),
    )
    .expect_err("long");
    let d = e.diagnostic().expect("diagnostic");
    assert_eq!((d.line, d.column), (3, 15));
    // Columns count characters, not bytes.
    let e = parse("# é é é\n[device]\npath = \"x\" # ü\n", Path::new(ORIGIN)).expect_err("bad");
    let d = e.diagnostic().expect("diagnostic");
    assert_eq!((d.line, d.column), (3, 8));
    let e = parse("[device]\npath = \"é/x\"\n", Path::new(ORIGIN)).expect_err("bad");
    assert!(matches!(e, ConfigError::Invalid(_)));
}

/// Every prefix of a valid file, and the file with each byte replaced by a
/// troublesome one, must give a result (usually an error), never a panic.
#[test]
fn nothing_panics_on_mangled_input() {
    let good = format!(
        "{HEAD}mtu = 9000\nroutes = [\"10.0.0.0/8\", {{ to = \"::/0\", via = \"fd00::1\" }}]\n\
         [session]\nstream_window = \"8MiB\"\n[[forward]]\nname = \"a\"\nlisten = \"tcp:127.0.0.1:1\"\n[[service]]\nname = \"a\"\nconnect = \"tcp:h:1\"\n"
    );
    parse(&good, Path::new(ORIGIN)).expect("the base file is valid");
    let origin = Path::new(ORIGIN);
    for end in 0..=good.len() {
        if good.is_char_boundary(end) {
            let _ = parse(&good[..end], origin);
        }
    }
    for i in 0..good.len() {
        for b in [
            b'"', b'[', b']', b'=', b'\n', b'{', b'-', b'9', b'#', b'.', b',',
        ] {
            let mut bytes = good.clone().into_bytes();
            bytes[i] = b;
            if let Ok(s) = String::from_utf8(bytes) {
                if let Err(e) = parse(&s, origin) {
                    assert!(e.line().is_some(), "{e}");
                }
            }
        }
    }
    // Extreme values.
    for text in [
        "[device]\npath = \"/dev/x\"\n[interface]\nname = \"t\"\nmtu = 9223372036854775807\n",
        "[device]\npath = \"/dev/x\"\n[interface]\nname = \"t\"\nmtu = -9223372036854775808\n",
        "[device.configfs]\nservice = \"0-1.0\"\nstream = \"s\"\nin_hopid = -9223372036854775808\n",
        "[device]\npath = \"/dev/x\"\n[session]\nrecv_budget = \"18446744073709551615G\"\n",
        "[device]\npath = \"/dev/x\"\n[session]\nmax_transmit = -5\n",
        "[device]\npath = \"/dev/x\"\nx = nan\ny = inf\n",
        "\u{feff}[device]\npath = \"/dev/x\"\n",
        "[a.b.c.d.e.f]\n",
        "",
    ] {
        let _ = parse(text, origin);
    }
}

#[test]
#[ignore = "prints every message for review"]
fn print_messages() {
    for c in cases() {
        let e = parse(&c.text, Path::new(ORIGIN)).expect_err(c.name);
        println!("{:40} {e}", c.name);
    }
}

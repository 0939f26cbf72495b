//! `tbbridge status`: the document the daemon serves on its control
//! socket, and how the command prints it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::DeviceSpec;

use super::paths::{self, InstancePaths};
use super::{control, Target};
use crate::frontend::Supervisor;

/// `tbbridge status`: prints the status of one or all running instances.
pub fn status(name: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let names = match name {
        Some(n) => {
            paths::check_name(n)?;
            vec![n.to_owned()]
        }
        None => paths::running_instances(),
    };
    let mut docs = Vec::new();
    for n in &names {
        let p = InstancePaths::new(n);
        match control::request(&p.socket, "status", Duration::from_secs(5)) {
            Ok(v) => docs.push(v),
            Err(e) if name.is_some() => return Err(e.context(format!("{n} is not up"))),
            Err(_) => {}
        }
    }
    if as_json {
        let out = if name.is_some() {
            docs.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(docs)
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if docs.is_empty() {
        println!("no tbbridge instance is up");
    } else {
        for d in &docs {
            print_status(d);
        }
    }
    Ok(())
}

fn print_status(d: &Value) {
    let s = |k: &str| match d.pointer(k) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(v) => v.to_string().trim_matches('"').to_owned(),
    };
    println!("{}: pid {}, up {} s", s("/name"), s("/pid"), s("/uptime_s"));
    println!("  device:    {}", s("/device"));
    if d.get("configfs").is_some() {
        println!(
            "  configfs:  stream {}: gone {} times, created again {} times, {} failed opens \
             ({} ENOMEM)",
            s("/configfs/stream"),
            s("/configfs/vanished"),
            s("/configfs/recreated"),
            s("/configfs/open_failures"),
            s("/configfs/enomem"),
        );
    }
    println!(
        "  link:      {} (links up {}, resumed {}), rtt {} µs, peer {}",
        if d.pointer("/link/connected").and_then(Value::as_bool) == Some(true) {
            "connected"
        } else {
            "waiting for peer"
        },
        s("/link/links_up"),
        s("/link/resumes"),
        s("/link/rtt_us"),
        s("/link/peer"),
    );
    if let Some(h) = d.pointer("/link/peer_host").filter(|h| !h.is_null()) {
        let g = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("-");
        let odd = if h.get("unexpected").and_then(Value::as_bool) == Some(true) {
            format!(
                " (NOT the peer {} the addresses were derived for)",
                g("expected")
            )
        } else {
            String::new()
        };
        let at = match h.get("address").and_then(Value::as_str) {
            Some(a) => format!(", at {a}"),
            None => String::new(),
        };
        println!(
            "  peer:      {} (host id {}){at}{odd}",
            g("hostname"),
            g("host_id")
        );
    }
    if d.pointer("/link/auth").and_then(Value::as_str) == Some("psk") {
        let last = d
            .pointer("/link/last_auth_failure")
            .and_then(Value::as_str)
            .map(|f| format!(", last: {f}"))
            .unwrap_or_default();
        println!(
            "  auth:      pre-shared key ({} peers refused{last})",
            s("/link/auth_failures")
        );
    }
    if d.pointer("/session/corrupt_batches")
        .and_then(Value::as_u64)
        > Some(0)
    {
        println!(
            "  corruption: {} corrupt batches dropped, {} recovered in-band (last in {} µs), \
             {} resyncs failed",
            s("/session/corrupt_batches"),
            s("/link/resyncs"),
            s("/link/resync_last_us"),
            s("/link/resync_failures"),
        );
    }
    if let Some(f) = d.pointer("/link/last_fault").and_then(Value::as_str) {
        println!("  last fault: {f} ({} in all)", s("/link/faults"));
    }
    if let Some(fes) = d.get("front_ends").and_then(Value::as_array) {
        println!("  front-ends:");
        for fe in fes {
            let g = |k: &str| {
                fe.get(k)
                    .map(|v| v.to_string().trim_matches('"').to_owned())
            };
            let mut line = format!(
                "    {:<24} {}",
                g("name").unwrap_or_default(),
                g("state").unwrap_or_default()
            );
            if let Some(r) = fe
                .get("restarts")
                .and_then(Value::as_u64)
                .filter(|r| *r > 0)
            {
                line.push_str(&format!(", restarted {r}x"));
            }
            if let Some(e) = fe.get("last_error").and_then(Value::as_str) {
                line.push_str(&format!(", last error: {e}"));
            }
            println!("{line}");
            if let Some(c) = fe.get("counters") {
                println!("      {}", counters_line(c));
                if let Some(q) = c.pointer("/stats/queue") {
                    print_queue(q);
                }
            }
        }
    }
    if let Some(p) = d
        .get("pipe_clients")
        .filter(|p| p.get("started").and_then(Value::as_u64) > Some(0))
    {
        println!("  pipe clients: {p}");
    }
    if let Some(chs) = d.get("channels").and_then(Value::as_array) {
        println!("  channels: {}", chs.len());
    }
}

/// One line of a front-end's counters: packets of an interface,
/// connections of a forward or service, transfers of the pipes; other
/// kinds as their JSON (`status --json` has all of every kind).
pub fn counters_line(c: &Value) -> String {
    let n = |k: &str| c.pointer(k).and_then(Value::as_u64);
    let show = |k: &str| n(k).map_or("-".to_owned(), |x| x.to_string());
    if let Some(tx) = n("/stats/tx/packets") {
        let carrier = match c.pointer("/stats/carrier").and_then(Value::as_bool) {
            Some(true) => "carrier on",
            Some(false) => "carrier off",
            None => "carrier ?",
        };
        format!(
            "{carrier}, packets tx={tx} rx={}, bytes tx={} rx={}, queue drops aqm={} overflow={}",
            show("/stats/rx/packets"),
            show("/stats/tx/bytes"),
            show("/stats/rx/bytes"),
            show("/stats/queue/drops/aqm"),
            show("/stats/queue/drops/overflow"),
        )
    } else if let Some(acc) = n("/stats/accepted") {
        format!(
            "connections={acc} active={} bytes out={} in={}",
            show("/stats/active"),
            show("/stats/bytes_out"),
            show("/stats/bytes_in"),
        )
    } else if let Some(done) = n("/completed") {
        format!(
            "completed={done} failed={} bytes={}",
            show("/failed"),
            show("/bytes"),
        )
    } else {
        c.to_string()
    }
}

/// The fair queue's line of a TUN front-end (`docs/nic.md`).
fn print_queue(q: &Value) {
    let n = |k: &str| q.pointer(k).and_then(Value::as_u64).unwrap_or(0);
    println!(
        "      queue: {} B held (most {} B), drops: aqm {}, overflow {}; \
         ecn marks {}, new flows {}",
        n("/backlog_bytes"),
        n("/backlog_max_bytes"),
        n("/drops/aqm"),
        n("/drops/overflow"),
        n("/ecn_marks"),
        n("/new_flows"),
    );
}

pub(super) fn status_doc(
    t: &Target,
    spec: &DeviceSpec,
    bridge: &Bridge,
    supervisor: &Supervisor,
    pipes: &crate::pipe::PipeClientStats,
    started: Instant,
) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let link = *bridge.status().borrow();
    let st = bridge.stats();
    let pump = bridge.pump_stats();
    let channels: Vec<Value> = bridge
        .channel_stats()
        .into_iter()
        .map(|(id, svc, s)| {
            json!({
                "id": id.to_string(), "service": svc,
                "bytes_tx": s.bytes_tx, "bytes_rx": s.bytes_rx,
                "frames_tx": s.records_tx, "frames_rx": s.records_rx,
                "drops": s.drops, "bytes_retransmitted": s.bytes_retransmitted,
            })
        })
        .collect();
    let traffic: Vec<Value> = bridge
        .traffic()
        .into_iter()
        .map(|(k, t)| {
            json!({
                "kind": crate::metrics::kind_name(k.kind),
                "class": crate::metrics::class_name(k.class),
                "service": k.service,
                "bytes_tx": t.bytes_tx, "bytes_rx": t.bytes_rx,
                "records_tx": t.records_tx, "records_rx": t.records_rx,
                "drops": t.drops, "bytes_retransmitted": t.bytes_retransmitted,
                "opened": t.opened, "active": t.active, "queued_bytes": t.queued_bytes,
            })
        })
        .collect();
    json!({
        "name": t.name,
        "pid": std::process::id(),
        "config": t.config,
        "uptime_s": started.elapsed().as_secs(),
        "device": spec.to_string(),
        "link": {
            "connected": link.connected,
            "links_up": link.links_up,
            "resumes": link.resumes,
            "resyncs": st.resyncs,
            "resync_failures": st.resync_failures,
            "resync_last_us": st.resync_last.map(|d| d.as_micros() as u64),
            "rtt_us": st.rtt.map(|d| d.as_micros() as u64),
            "peer": bridge.peer_id().map(|p| format!("{p:016x}")),
            "faults": pump.link_faults,
            "resets": crate::metrics::pump_faults(&pump),
            "handshake_failures": pump.handshake_failures,
            "auth": if bridge.authenticates() { "psk" } else { "off" },
            "auth_failures": pump.auth_failures,
            "last_auth_failure": bridge.last_auth_failure().map(|f| f.to_string()),
            "peer_restarts": pump.peer_restarts,
            "last_fault": pump.last_fault.as_ref().map(ToString::to_string),
            "rtt_samples": st.rtt_samples,
        },
        "session": {
            "bytes_tx": st.bytes_tx, "bytes_rx": st.bytes_rx,
            "batches_tx": st.batches_tx, "batches_rx": st.batches_rx,
            "writes": st.transmits, "corrupt_batches": st.corrupt_batches,
            "dgram_drops": st.dgram_drops,
            "expired_channels": st.expired_channels,
            "refused_no_service": pump.refused_no_service,
            "credit_stalls": st.credit_stalls,
            "recv_held": st.recv_held,
        },
        "device_io": {
            "reads": pump.reads, "read_bytes": pump.read_bytes,
            "writes": pump.writes, "write_bytes": pump.write_bytes,
            "short_writes": pump.short_writes,
        },
        "traffic": traffic,
        "front_ends": supervisor.status(),
        "pipe_clients": {
            "started": pipes.started.load(Relaxed),
            "completed": pipes.completed.load(Relaxed),
            "failed": pipes.failed.load(Relaxed),
            "bytes_sent": pipes.bytes_sent.load(Relaxed),
            "bytes_received": pipes.bytes_received.load(Relaxed),
        },
        "channels": channels,
    })
}

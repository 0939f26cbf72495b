//! The bridge's own counters into the recorder (see the parent module's
//! "One source").

use std::sync::atomic::Ordering::Relaxed;

use metrics::Label;
use tbbridge_config::configfs::LinkInfo;
use tbbridge_transport::pump::Bridge;
use tbbridge_transport::{ChannelKind, Class};

use super::defs::*;
use super::Out;
use crate::frontend::Supervisor;
use crate::pipe::PipeClientStats;

/// What one refresh reads.
#[derive(Debug)]
pub struct Sources<'a> {
    /// The bridge.
    pub bridge: &'a Bridge,
    /// The front-ends.
    pub supervisor: &'a Supervisor,
    /// `tbbridge pipe` clients served by this daemon.
    pub pipe_clients: &'a PipeClientStats,
    /// The link as sysfs describes it (configfs devices only).
    pub link: Option<&'a LinkInfo>,
}

/// The label value of a channel kind.
pub fn kind_name(k: ChannelKind) -> &'static str {
    match k {
        ChannelKind::Datagram => "datagram",
        ChannelKind::Stream => "stream",
        ChannelKind::Message => "message",
    }
}

/// The label value of a class.
pub fn class_name(c: Class) -> &'static str {
    match c {
        Class::Latency => "latency",
        Class::Normal => "normal",
        Class::Bulk => "bulk",
    }
}

pub(super) fn refresh(src: &Sources<'_>) {
    let mut out = Out::root();
    let o = &mut out;
    o.gauge(
        &BUILD_INFO,
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("protocol", &tbbridge_transport::wire::VERSION.to_string()),
        ],
        1.0,
    );
    let b = src.bridge;
    let link = *b.status().borrow();
    let st = b.stats();
    let pump = b.pump_stats();
    o.gauge(&LINK_UP, &[], f64::from(u8::from(link.connected)));
    o.counter(&LINKS_UP, &[], st.links_up);
    o.counter(&RESUMES, &[], st.resumes);
    for (reason, n) in &pump.faults_by_reason {
        o.counter(&LINK_RESETS, &[("reason", reason)], *n);
    }
    o.counter(&HANDSHAKE_FAILURES, &[], pump.handshake_failures);
    o.counter(&AUTH_FAILURES, &[], pump.auth_failures);
    o.counter(&PEER_RESTARTS, &[], pump.peer_restarts);
    o.counter(&CORRUPT_BATCHES, &[], st.corrupt_batches);
    o.counter(&RESYNCS, &[("result", "ok")], st.resyncs);
    o.counter(&RESYNCS, &[("result", "failed")], st.resync_failures);
    o.counter(&CHANNELS_EXPIRED, &[], st.expired_channels);
    for (dir, bytes, batches, records) in [
        ("tx", st.bytes_tx, st.batches_tx, st.records_tx),
        ("rx", st.bytes_rx, st.batches_rx, st.records_rx),
    ] {
        o.counter(&SESSION_BYTES, &[("direction", dir)], bytes);
        o.counter(&SESSION_BATCHES, &[("direction", dir)], batches);
        o.counter(&SESSION_RECORDS, &[("direction", dir)], records);
    }
    o.counter(&CREDIT_STALLS, &[], st.credit_stalls);
    o.gauge(&RECV_HELD, &[], st.recv_held as f64);
    o.counter(&SHORT_WRITES, &[], pump.short_writes);
    for (side, reason, n) in [
        ("peer", "no_service", pump.refused_no_service),
        ("peer", "too_many", st.refused_too_many),
        ("peer", "no_memory", st.refused_no_memory),
        ("peer", "backlog", st.refused_backlog),
        ("local", "too_many", st.open_too_many),
        ("local", "no_memory", st.open_no_memory),
    ] {
        o.counter(&OPEN_REFUSALS, &[("side", side), ("reason", reason)], n);
    }

    let mut queued = [0u64; 3];
    for (k, t) in b.traffic() {
        let labels = [
            ("kind", kind_name(k.kind)),
            ("class", class_name(k.class)),
            ("service", k.service.as_str()),
        ];
        let with_dir = |d: &'static str| [("direction", d), labels[0], labels[1], labels[2]];
        o.counter(&CHANNEL_BYTES, &with_dir("tx"), t.bytes_tx);
        o.counter(&CHANNEL_BYTES, &with_dir("rx"), t.bytes_rx);
        o.counter(&CHANNEL_RECORDS, &with_dir("tx"), t.records_tx);
        o.counter(&CHANNEL_RECORDS, &with_dir("rx"), t.records_rx);
        o.counter(&CHANNEL_RETRANSMITTED, &labels, t.bytes_retransmitted);
        o.counter(&CHANNELS_OPENED, &labels, t.opened);
        o.gauge(&CHANNELS_ACTIVE, &labels, t.active as f64);
        o.counter(&DATAGRAM_DROPS, &labels, t.drops);
        queued[k.class as usize] += t.queued_bytes;
    }
    for c in Class::ALL {
        o.gauge(
            &TX_QUEUE,
            &[("class", class_name(c))],
            queued[c as usize] as f64,
        );
    }
    if let Some(l) = src.link {
        // Gb/s in sysfs: 10^9 bits, 1.25e8 bytes per second.
        for (dir, gbps, lanes) in [
            ("tx", l.tx_gbps(), l.tx_lanes),
            ("rx", l.rx_gbps(), l.rx_lanes),
        ] {
            if let Some(g) = gbps {
                o.gauge(&LINK_SPEED, &[("direction", dir)], f64::from(g) * 1.25e8);
            }
            if let Some(n) = lanes {
                o.gauge(&LINK_LANES, &[("direction", dir)], f64::from(n));
            }
        }
    }

    src.supervisor.export_metrics();

    let p = src.pipe_clients;
    let base = [Label::new("front_end", "pipe clients")];
    let mut o = Out::with(&base);
    o.counter(
        &PIPE_TRANSFERS,
        &[("result", "completed")],
        p.completed.load(Relaxed),
    );
    o.counter(
        &PIPE_TRANSFERS,
        &[("result", "failed")],
        p.failed.load(Relaxed),
    );
    o.counter(
        &PIPE_BYTES,
        &[("direction", "tx")],
        p.bytes_sent.load(Relaxed),
    );
    o.counter(
        &PIPE_BYTES,
        &[("direction", "rx")],
        p.bytes_received.load(Relaxed),
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tbbridge_transport::device::emu::{CableOptions, EmuCable};
    use tbbridge_transport::{CableEnd, SessionConfig};
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Two bridges on an in-process cable, 1 MiB over a stream channel:
    /// a refresh into a local recorder shows the bytes under their kind,
    /// class and service, the same figure as `Bridge::traffic` (one
    /// source), and every label written is one its definition lists (the
    /// debug assertions of `Out`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_exports_the_status_counters() {
        let cable = Arc::new(EmuCable::new(CableOptions::default()).expect("cable"));
        let a = Bridge::on_emu(&cable, CableEnd::A, SessionConfig::default());
        let b = Bridge::on_emu(&cable, CableEnd::B, SessionConfig::default());
        let mut l = b.listen("svc:x").expect("listen");
        a.connected().await.expect("link");
        let ch = a
            .open(ChannelKind::Stream, Class::Bulk, "svc:x")
            .await
            .expect("open");
        let rx = l.accept().await.expect("accept");
        let data = Bytes::from(vec![7u8; 1 << 20]);
        // Read while sending: the send waits for credit that only reading
        // gives back.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while got < 1 << 20 {
                match rx.recv(1 << 20).await {
                    Ok(Some(d)) => got += d.len(),
                    _ => break,
                }
            }
            got
        });
        ch.send(data).await.expect("send");
        let got = reader.await.expect("reader");
        assert_eq!(got, 1 << 20);
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let sup = Supervisor::start(a.clone(), Vec::new(), CancellationToken::new());
        let pipes = PipeClientStats::default();
        metrics::with_local_recorder(&recorder, || {
            super::super::describe_all();
            refresh(&Sources {
                bridge: &a,
                supervisor: &sup,
                pipe_clients: &pipes,
                link: None,
            })
        });
        let text = handle.render();
        let tx = value(
            &text,
            "tbbridge_channel_bytes_total{direction=\"tx\",kind=\"stream\",class=\"bulk\",service=\"svc:x\"}",
        );
        let traffic = a
            .traffic()
            .into_iter()
            .find(|(k, _)| k.service == "svc:x")
            .map(|(_, t)| t.bytes_tx as f64);
        assert_eq!(tx, Some((1 << 20) as f64), "{text}");
        assert_eq!(tx, traffic);
        assert_eq!(value(&text, "tbbridge_link_up "), Some(1.0), "{text}");
        assert!(
            text.contains("# HELP tbbridge_session_bytes_total "),
            "{text}"
        );
        assert!(text.contains("tbbridge_build_info{version=\""), "{text}");
    }
}

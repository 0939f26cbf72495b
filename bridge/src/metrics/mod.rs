//! The Prometheus exporter: `[metrics] listen` (127.0.0.1:9477 by default)
//! serves `/metrics` through the `metrics` facade and
//! `metrics-exporter-prometheus`'s HTTP listener.
//!
//! # One source
//!
//! `status` and `/metrics` read the same counters: the transport's
//! [`SessionStats`](tbbridge_transport::SessionStats), [`PumpStats`] and
//! [`Bridge::traffic`](tbbridge_transport::pump::Bridge::traffic), and each front-end's own atomics (`TunStats`,
//! `ProxyStats`, ...). Nothing on the data path knows about metrics: the
//! daemon copies those counters into the recorder ([`Exporter::refresh`],
//! every [`REFRESH`] and before it answers nothing else), with
//! `Counter::absolute`. The only things recorded as they happen are the
//! distributions (device read and write sizes, RTT), through a
//! [`PumpObserver`] whose histogram handles are obtained once: one atomic
//! push per system call or ping, never per record.
//!
//! Every metric is described from [`defs::ALL`] (help text and unit), its
//! histogram buckets are set from there (real Prometheus histograms, not
//! summaries), and no idle timeout is set: a metric that stops changing
//! keeps being exported (metrics-rs issue 372: with an idle timeout, a
//! counter that went idle vanished and never came back).
//!
//! # Exporting a front-end's counters
//!
//! A front-end (such as the RPC endpoints) exports its counters with:
//!
//! 1. a [`Def`] per metric in [`defs`] (name, type, unit, labels
//!    including `front_end`, help) and a line in [`defs::ALL`] and in
//!    `docs/metrics.md` (a test checks both);
//! 2. [`FrontEnd::metrics`](crate::frontend::FrontEnd::metrics), which
//!    copies its atomics into the [`Out`] it is handed (the `front_end`
//!    label is added for it):
//!    ```ignore
//!    fn metrics(&self, out: &mut Out<'_>) {
//!        out.counter(&defs::RPC_CALLS, &[], self.stats.calls.load(Relaxed));
//!        out.counter(&defs::RPC_ERRORS, &[("reason", "timeout")], self.stats.timeouts.load(Relaxed));
//!    }
//!    ```
//! 3. for a distribution, a handle obtained once when the front-end is
//!    built (after the exporter started: `up` starts it first), recorded
//!    on each call: `let h = crate::metrics::histogram(&defs::RPC_DURATION,
//!    &name)`, then `h.record(elapsed.as_secs_f64())`. Its buckets come
//!    from its [`Def`].

pub mod defs;
mod export;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics::{Histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tbbridge_transport::pump::{PumpObserver, PumpStats};

pub use defs::Def;
pub use export::{class_name, kind_name, Sources};

/// How often the counters are copied into the recorder: `/metrics` is at
/// most this much behind `status`. Copying costs one pass over the live
/// channels under the pump's lock (as `status` does); once a second keeps
/// that far below a millisecond per second even with 10,000 channels.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The global label every metric carries: the instance (`tbbridge up
/// NAME`), usually the interface's name.
pub const INSTANCE_LABEL: &str = "interface";

/// A running exporter.
#[derive(Debug)]
pub struct Exporter {
    handle: PrometheusHandle,
    listen: SocketAddr,
}

impl Exporter {
    /// Installs the global recorder and starts the HTTP listener on
    /// `listen` (on the current tokio runtime); fails if the address
    /// cannot be bound. `instance` becomes the `interface` label.
    pub fn start(listen: SocketAddr, instance: &str) -> anyhow::Result<Exporter> {
        let mut b = PrometheusBuilder::new()
            .with_http_listener(listen)
            .add_global_label(INSTANCE_LABEL, instance);
        for d in defs::ALL {
            if let defs::Kind::Histogram(buckets) = d.kind {
                b = b
                    .set_buckets_for_metric(Matcher::Full(d.name.to_owned()), buckets)
                    .with_context(|| format!("buckets of {}", d.name))?;
            }
        }
        let (recorder, server) = b
            .build()
            .with_context(|| format!("starting the metrics listener on {listen}"))?;
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)
            .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
        describe_all();
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("metrics listener on {listen} stopped: {e:?}");
            }
        });
        tracing::info!("metrics on http://{listen}/metrics");
        Ok(Exporter { handle, listen })
    }

    /// The address served.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The exposition text now (what `/metrics` answers).
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Copies every counter of `src` into the recorder.
    pub fn refresh(&self, src: &Sources<'_>) {
        export::refresh(src);
    }
}

/// Installs the recorder as [`Exporter::start`] does, without a listener
/// (for `tbbridge bench --metrics`); upkeep runs on the current runtime.
pub fn install_recorder_only() -> anyhow::Result<PrometheusHandle> {
    let mut b = PrometheusBuilder::new();
    for d in defs::ALL {
        if let defs::Kind::Histogram(buckets) = d.kind {
            b = b.set_buckets_for_metric(Matcher::Full(d.name.to_owned()), buckets)?;
        }
    }
    let recorder = b.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    let h = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            h.run_upkeep();
        }
    });
    Ok(handle)
}

/// Describes every metric of [`defs::ALL`] to the installed recorder.
pub fn describe_all() {
    for d in defs::ALL {
        let name = d.name;
        let help = d.help;
        match d.kind {
            defs::Kind::Counter => metrics::describe_counter!(name, d.unit, help),
            defs::Kind::Gauge => metrics::describe_gauge!(name, d.unit, help),
            defs::Kind::Histogram(_) => metrics::describe_histogram!(name, d.unit, help),
        }
    }
}

/// A histogram handle of `def` for `front_end` (obtain once, record often).
pub fn histogram(def: &'static Def, front_end: &str) -> Histogram {
    metrics::histogram!(
        def.name,
        vec![Label::new("front_end", front_end.to_owned())]
    )
}

/// Where a front-end (or the bridge) writes its counters at a refresh.
#[derive(Debug)]
pub struct Out<'a> {
    /// Labels every value gets (`front_end`), before its own.
    base: &'a [Label],
}

impl<'a> Out<'a> {
    /// Values with no base labels (the bridge's own).
    pub fn root() -> Out<'static> {
        Out { base: &[] }
    }

    /// Values labelled with `base` first.
    pub fn with(base: &'a [Label]) -> Out<'a> {
        Out { base }
    }

    fn labels(&self, def: &Def, labels: &[(&'static str, &str)]) -> Vec<Label> {
        let mut v: Vec<Label> = self.base.to_vec();
        v.extend(
            labels
                .iter()
                .map(|(k, val)| Label::new(*k, (*val).to_owned())),
        );
        debug_assert!(
            v.iter().all(|l| def.labels.contains(&l.key())),
            "{}: labels {v:?} not all in {:?}",
            def.name,
            def.labels
        );
        v
    }

    /// Sets counter `def` (labels besides the base ones) to `value`.
    pub fn counter(&mut self, def: &'static Def, labels: &[(&'static str, &str)], value: u64) {
        debug_assert_eq!(def.kind, defs::Kind::Counter, "{}", def.name);
        metrics::counter!(def.name, self.labels(def, labels)).absolute(value);
    }

    /// Sets gauge `def` to `value`.
    pub fn gauge(&mut self, def: &'static Def, labels: &[(&'static str, &str)], value: f64) {
        debug_assert_eq!(def.kind, defs::Kind::Gauge, "{}", def.name);
        metrics::gauge!(def.name, self.labels(def, labels)).set(value);
    }
}

/// The pump's distributions (see the module doc): histogram handles
/// obtained once, when the bridge starts.
#[derive(Debug)]
pub struct PumpHistograms {
    read: Histogram,
    write: Histogram,
    rtt: Histogram,
    resync: Histogram,
}

impl PumpHistograms {
    /// Handles from the installed recorder (no-ops if none is).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            read: metrics::histogram!(defs::READ_SIZE.name),
            write: metrics::histogram!(defs::WRITE_SIZE.name),
            rtt: metrics::histogram!(defs::RTT.name),
            resync: metrics::histogram!(defs::RESYNC_TIME.name),
        })
    }
}

impl PumpObserver for PumpHistograms {
    fn device_read(&self, bytes: usize) {
        self.read.record(bytes as f64);
    }
    fn device_write(&self, bytes: usize) {
        self.write.record(bytes as f64);
    }
    fn rtt(&self, rtt: Duration) {
        self.rtt.record(rtt.as_secs_f64());
    }
    fn resync(&self, took: Duration) {
        self.resync.record(took.as_secs_f64());
    }
}

/// Link resets by reason of a [`PumpStats`], for `status`.
pub fn pump_faults(p: &PumpStats) -> serde_json::Value {
    p.faults_by_reason
        .iter()
        .map(|(r, n)| ((*r).to_owned(), serde_json::json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

//! Runs every front-end in one `JoinSet`, restarts the ones that fail with
//! backoff, and keeps what `status` shows about each.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tbbridge_transport::pump::Bridge;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Ctx, Failure, FrontEnd};

/// First wait before a restart, doubling up to [`BACKOFF_MAX`]: a bind
/// that fails because the port is still taken should not spin.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A front-end that ran this long before failing starts over at
/// [`BACKOFF_MIN`].
const STABLE_RUN: Duration = Duration::from_secs(30);
/// How long `shutdown` waits for the front-ends to return after the
/// cancellation before it aborts them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum State {
    Running { since: Instant },
    Restarting { after: Duration },
    Stopped,
}

#[derive(Debug)]
struct Entry {
    fe: Arc<dyn FrontEnd>,
    state: State,
    restarts: u64,
    failures: u64,
    last_error: Option<String>,
    backoff: Duration,
}

/// The supervisor of a daemon's front-ends.
#[derive(Debug)]
pub struct Supervisor {
    entries: Arc<Mutex<Vec<Entry>>>,
    tasks: JoinSet<Result<(), Failure>>,
    /// Which entry each task runs (a panicked task tells only its id).
    ids: std::collections::HashMap<tokio::task::Id, usize>,
    bridge: Bridge,
    cancel: CancellationToken,
}

fn lock(m: &Mutex<Vec<Entry>>) -> std::sync::MutexGuard<'_, Vec<Entry>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Supervisor {
    /// Starts every front-end.
    pub fn start(bridge: Bridge, fes: Vec<Arc<dyn FrontEnd>>, cancel: CancellationToken) -> Self {
        let entries: Vec<Entry> = fes
            .into_iter()
            .map(|fe| Entry {
                fe,
                state: State::Stopped,
                restarts: 0,
                failures: 0,
                last_error: None,
                backoff: BACKOFF_MIN,
            })
            .collect();
        let mut s = Supervisor {
            entries: Arc::new(Mutex::new(entries)),
            tasks: JoinSet::new(),
            ids: std::collections::HashMap::new(),
            bridge,
            cancel,
        };
        let n = lock(&s.entries).len();
        for i in 0..n {
            s.spawn(i, Duration::ZERO);
        }
        s
    }

    fn spawn(&mut self, i: usize, delay: Duration) {
        let fe = {
            let mut e = lock(&self.entries);
            let Some(entry) = e.get_mut(i) else {
                return;
            };
            entry.state = if delay.is_zero() {
                State::Running {
                    since: Instant::now(),
                }
            } else {
                State::Restarting { after: delay }
            };
            entry.fe.clone()
        };
        let ctx = Ctx {
            bridge: self.bridge.clone(),
            cancel: self.cancel.clone(),
        };
        let entries = self.entries.clone();
        let handle = self.tasks.spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.cancel.cancelled() => return Ok(()),
                }
                if let Some(e) = lock(&entries).get_mut(i) {
                    e.state = State::Running {
                        since: Instant::now(),
                    };
                }
            }
            fe.run(ctx).await
        });
        self.ids.insert(handle.id(), i);
    }

    /// Waits until a front-end ends and deals with it: a failure is logged,
    /// counted and restarted with backoff. `Err` for a fatal failure (the
    /// daemon should go down with it). Pending forever when there is no
    /// front-end, so it can sit in the daemon's `select!`.
    pub async fn next(&mut self) -> anyhow::Result<()> {
        let Some(joined) = self.tasks.join_next_with_id().await else {
            std::future::pending::<()>().await;
            return Ok(());
        };
        let (id, result) = match joined {
            Ok((id, r)) => (id, r),
            // A bug in a front-end: a failure like any other, restarted.
            Err(e) if e.is_panic() => (
                e.id(),
                Err(Failure::Retry(anyhow::anyhow!("panicked: {e}"))),
            ),
            Err(e) => (e.id(), Ok(())),
        };
        let Some(i) = self.ids.remove(&id) else {
            return Ok(());
        };
        if self.cancel.is_cancelled() {
            if let Some(e) = lock(&self.entries).get_mut(i) {
                e.state = State::Stopped;
            }
            return Ok(());
        }
        let err = match result {
            Ok(()) => anyhow::anyhow!("it stopped by itself"),
            Err(Failure::Retry(e)) => e,
            Err(Failure::Fatal(e)) => {
                let name = self.record_failure(i, &e, false);
                return Err(e.context(format!("{name} failed and cannot be restarted")));
            }
        };
        self.record_failure(i, &err, true);
        let delay = {
            let mut es = lock(&self.entries);
            let Some(e) = es.get_mut(i) else {
                return Ok(());
            };
            let d = e.backoff;
            e.backoff = (e.backoff * 2).min(BACKOFF_MAX);
            e.restarts += 1;
            d
        };
        self.spawn(i, delay);
        Ok(())
    }

    /// Logs and counts a failure; returns the front-end's name.
    fn record_failure(&self, i: usize, err: &anyhow::Error, restarting: bool) -> String {
        let mut es = lock(&self.entries);
        let Some(e) = es.get_mut(i) else {
            return String::new();
        };
        if let State::Running { since } = e.state {
            if since.elapsed() >= STABLE_RUN {
                e.backoff = BACKOFF_MIN;
            }
        }
        e.failures += 1;
        e.last_error = Some(format!("{err:#}"));
        let name = e.fe.name();
        if restarting {
            tracing::warn!("{name} failed: {err:#}; restarting in {:?}", e.backoff);
        } else {
            tracing::error!("{name} failed: {err:#}");
        }
        e.state = State::Stopped;
        name
    }

    /// Each front-end: name, state, restarts, last error and its own
    /// section.
    pub fn status(&self) -> Value {
        let es = lock(&self.entries);
        Value::Array(
            es.iter()
                .map(|e| {
                    let (state, detail) = match &e.state {
                        State::Running { since } => ("running", json!(since.elapsed().as_secs())),
                        State::Restarting { after } => {
                            ("restarting", json!(after.as_millis() as u64))
                        }
                        State::Stopped => ("stopped", Value::Null),
                    };
                    json!({
                        "name": e.fe.name(),
                        "state": state,
                        "running_s": if state == "running" { detail.clone() } else { Value::Null },
                        "restart_in_ms": if state == "restarting" { detail } else { Value::Null },
                        "restarts": e.restarts,
                        "failures": e.failures,
                        "last_error": e.last_error,
                        "counters": e.fe.status(),
                    })
                })
                .collect(),
        )
    }

    /// Exports every front-end's metrics: running, restarts, and its own
    /// ([`FrontEnd::metrics`]), each labelled with its name.
    pub fn export_metrics(&self) {
        use crate::metrics::{defs, Out};
        let es = lock(&self.entries);
        for e in es.iter() {
            let base = [metrics::Label::new("front_end", e.fe.name())];
            let mut out = Out::with(&base);
            let up = matches!(e.state, State::Running { .. });
            out.gauge(&defs::FRONTEND_UP, &[], f64::from(u8::from(up)));
            out.counter(&defs::FRONTEND_RESTARTS, &[], e.restarts);
            e.fe.metrics(&mut out);
        }
    }

    /// Cancels every front-end and waits (a bounded time) for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("front-ends did not stop within {SHUTDOWN_GRACE:?}; aborting them");
            self.tasks.abort_all();
        }
    }
}

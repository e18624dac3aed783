//! Process-wide counters, rendered as Prometheus text at `/metrics` and summarised in
//! `/api/stats`. Plain relaxed atomics: counting never takes a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Handshake outcomes, the `result` label of `minipush_handshakes_total`.
pub const HANDSHAKE_RESULTS: [&str; 5] =
    ["ok", "malformed", "expired", "bad_signature", "server_full"];
/// Reasons a frame or message was dropped, the `reason` label of `minipush_dropped_total`.
pub const DROP_REASONS: [&str; 3] = ["slow_consumer", "closed", "rate_limited"];

#[derive(Default)]
pub struct Metrics {
    connections: AtomicU64,
    handshakes: [AtomicU64; HANDSHAKE_RESULTS.len()],
    dropped: [AtomicU64; DROP_REASONS.len()],
    pushes: AtomicU64,
    deliveries: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
}

/// A snapshot for `/api/stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    pub pushes: u64,
    pub deliveries: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub drops: u64,
}

fn slot(names: &[&str], name: &str) -> usize {
    names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("unknown metric label {name}"))
}

impl Metrics {
    pub fn set_connections(&self, n: usize) {
        self.connections.store(n as u64, Relaxed);
    }
    pub fn handshake(&self, result: &str) {
        self.handshakes[slot(&HANDSHAKE_RESULTS, result)].fetch_add(1, Relaxed);
    }
    pub fn dropped(&self, reason: &str) {
        self.dropped[slot(&DROP_REASONS, reason)].fetch_add(1, Relaxed);
    }
    pub fn pushed(&self) {
        self.pushes.fetch_add(1, Relaxed);
    }
    pub fn delivered(&self, n: usize) {
        self.deliveries.fetch_add(n as u64, Relaxed);
    }
    pub fn frame_in(&self) {
        self.frames_in.fetch_add(1, Relaxed);
    }
    pub fn frames_out(&self, n: u64) {
        self.frames_out.fetch_add(n, Relaxed);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            pushes: self.pushes.load(Relaxed),
            deliveries: self.deliveries.load(Relaxed),
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            drops: self.dropped.iter().map(|d| d.load(Relaxed)).sum(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let labelled = |label: &str, names: &[&str], values: &[AtomicU64]| -> Vec<(String, u64)> {
            names
                .iter()
                .zip(values)
                .map(|(n, v)| (format!("{{{label}=\"{n}\"}}"), v.load(Relaxed)))
                .collect()
        };
        let plain = |v: &AtomicU64| vec![(String::new(), v.load(Relaxed))];
        let families = [
            (
                "minipush_connections",
                "gauge",
                "Live WebSocket connections on this node.",
                plain(&self.connections),
            ),
            (
                "minipush_handshakes_total",
                "counter",
                "WebSocket handshakes by result.",
                labelled("result", &HANDSHAKE_RESULTS, &self.handshakes),
            ),
            (
                "minipush_pushes_total",
                "counter",
                "Pushes accepted.",
                plain(&self.pushes),
            ),
            (
                "minipush_deliveries_total",
                "counter",
                "Push frames queued to connections.",
                plain(&self.deliveries),
            ),
            (
                "minipush_dropped_total",
                "counter",
                "Frames or client messages dropped, by reason.",
                labelled("reason", &DROP_REASONS, &self.dropped),
            ),
            (
                "minipush_frames_in_total",
                "counter",
                "Frames received from clients.",
                plain(&self.frames_in),
            ),
            (
                "minipush_frames_out_total",
                "counter",
                "Frames written to clients.",
                plain(&self.frames_out),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, samples) in families {
            out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for (labels, value) in samples {
                out += &format!("{name}{labels} {value}\n");
            }
        }
        out
    }
}

/// One node's line in `GET /api/stats` (also what a cluster node publishes about itself).
pub fn node_stats(node: &str, hub: &crate::hub::Hub, metrics: &Metrics) -> serde_json::Value {
    let counts = hub.counts();
    let totals = metrics.totals();
    serde_json::json!({
        "node": node,
        "connections": counts.connections,
        "uids": counts.uids,
        "groups": counts.groups,
        "frames_in": totals.frames_in,
        "frames_out": totals.frames_out,
        "pushes": totals.pushes,
        "deliveries": totals.deliveries,
        "drops": totals.drops,
    })
}

//! Process-wide counters, rendered as Prometheus text at `/metrics` and summarised in
//! `/api/stats`. Plain relaxed atomics: counting never takes a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Handshake outcomes, the `result` label of `minipush_handshakes_total`.
pub const HANDSHAKE_RESULTS: [&str; 5] =
    ["ok", "malformed", "expired", "bad_signature", "server_full"];
/// Reasons a frame or message was dropped, the `reason` label of `minipush_dropped_total`.
pub const DROP_REASONS: [&str; 3] = ["slow_consumer", "closed", "rate_limited"];
/// `/api/login` outcomes, the `result` label of `minipush_wechat_login_total`: `ok` or the
/// error code of the answer.
pub const LOGIN_RESULTS: [&str; 9] = [
    "ok",
    "bad_request",
    "rate_limited",
    "wechat_invalid_code",
    "wechat_rate_limited",
    "wechat_risky_user",
    "wechat_error",
    "wechat_unavailable",
    "wechat_bad_answer",
];
/// Why a subscribe-message fallback failed, the `reason` label of
/// `minipush_wechat_fallback_failures_total`: WeChat's errcode when it is one of these,
/// `other` for any other errcode, `network` when WeChat could not be reached.
pub const FALLBACK_FAILURES: [&str; 9] = [
    "40001", "40003", "40037", "41030", "42001", "43101", "47003", "other", "network",
];
/// Outcomes of access-token fetches and DingTalk messages.
pub const CALL_RESULTS: [&str; 2] = ["ok", "failed"];

#[derive(Default)]
pub struct Metrics {
    connections: AtomicU64,
    handshakes: [AtomicU64; HANDSHAKE_RESULTS.len()],
    dropped: [AtomicU64; DROP_REASONS.len()],
    pushes: AtomicU64,
    deliveries: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    wechat_logins: [AtomicU64; LOGIN_RESULTS.len()],
    fallbacks_sent: AtomicU64,
    fallback_failures: [AtomicU64; FALLBACK_FAILURES.len()],
    token_refreshes: [AtomicU64; CALL_RESULTS.len()],
    alert_messages: [AtomicU64; CALL_RESULTS.len()],
    alerts_dropped: AtomicU64,
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

    pub fn wechat_login(&self, result: &str) {
        self.wechat_logins[slot(&LOGIN_RESULTS, result)].fetch_add(1, Relaxed);
    }
    /// A fallback outcome: `None` when sent, else the failure's reason label.
    pub fn wechat_fallback(&self, failure: Option<&str>) {
        match failure {
            None => &self.fallbacks_sent,
            Some(reason) => &self.fallback_failures[slot(&FALLBACK_FAILURES, reason)],
        }
        .fetch_add(1, Relaxed);
    }
    pub fn wechat_token_refresh(&self, ok: bool) {
        self.token_refreshes[usize::from(!ok)].fetch_add(1, Relaxed);
    }
    pub fn alert_message(&self, ok: bool) {
        self.alert_messages[usize::from(!ok)].fetch_add(1, Relaxed);
    }
    pub fn alerts_dropped(&self, n: u64) {
        self.alerts_dropped.fetch_add(n, Relaxed);
    }

    /// Live connections on this node, as last set.
    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }
    /// Handshakes that did not end in a welcome, since start.
    pub fn handshake_failures(&self) -> u64 {
        let ok = slot(&HANDSHAKE_RESULTS, "ok");
        self.handshakes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ok)
            .map(|(_, v)| v.load(Relaxed))
            .sum()
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
            (
                "minipush_wechat_login_total",
                "counter",
                "POST /api/login answers, by result (ok or the error code).",
                labelled("result", &LOGIN_RESULTS, &self.wechat_logins),
            ),
            (
                "minipush_wechat_fallback_total",
                "counter",
                "Subscribe-message fallbacks sent to WeChat.",
                vec![
                    (
                        "{result=\"sent\"}".into(),
                        self.fallbacks_sent.load(Relaxed),
                    ),
                    (
                        "{result=\"failed\"}".into(),
                        self.fallback_failures.iter().map(|v| v.load(Relaxed)).sum(),
                    ),
                ],
            ),
            (
                "minipush_wechat_fallback_failures_total",
                "counter",
                "Failed subscribe-message fallbacks, by WeChat errcode (or other, network).",
                labelled("reason", &FALLBACK_FAILURES, &self.fallback_failures),
            ),
            (
                "minipush_wechat_token_refresh_total",
                "counter",
                "Access-token fetches from WeChat (cgi-bin/stable_token), by result.",
                labelled("result", &CALL_RESULTS, &self.token_refreshes),
            ),
            (
                "minipush_alert_messages_total",
                "counter",
                "Messages sent to the DingTalk robot, by result.",
                labelled("result", &CALL_RESULTS, &self.alert_messages),
            ),
            (
                "minipush_alerts_dropped_total",
                "counter",
                "Alerts dropped before reaching a message (queue full or backlog too long).",
                plain(&self.alerts_dropped),
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

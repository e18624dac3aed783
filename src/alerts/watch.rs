//! Threshold checks: the node's connection count (every `check_every`) against
//! `alerts.connections_over`, and failed handshakes per `handshake_window` against
//! `alerts.handshake_failures_per_min`. Each alert fires once per crossing: the
//! connection alert re-arms when the count falls to 90 % of the limit (at least one under it; and says
//! so), the
//! handshake alert after a window at or under the limit.

use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};

use super::{Alert, AlertTuning, Notifier};
use crate::{config::AlertsConfig, metrics::Metrics};

/// A limit with hysteresis: `over` once above `limit`, until back at `rearm` or below.
struct Threshold {
    limit: u64,
    rearm: u64,
    over: bool,
}

impl Threshold {
    fn new(limit: u64, rearm: u64) -> Threshold {
        Threshold {
            limit,
            rearm,
            over: false,
        }
    }

    /// `Some(true)` when `value` crosses above the limit, `Some(false)` when it falls back.
    fn observe(&mut self, value: u64) -> Option<bool> {
        if !self.over && value > self.limit {
            self.over = true;
            Some(true)
        } else if self.over && value <= self.rearm {
            self.over = false;
            Some(false)
        } else {
            None
        }
    }
}

pub struct Watch {
    connections: Option<Threshold>,
    handshakes: Option<Threshold>,
    tuning: AlertTuning,
}

impl Watch {
    pub fn new(config: &AlertsConfig, tuning: AlertTuning) -> Watch {
        Watch {
            connections: config
                .connections_over
                .map(|limit| Threshold::new(limit, limit - (limit / 10).max(1))),
            handshakes: config
                .handshake_failures_per_min
                .map(|limit| Threshold::new(limit, limit)),
            tuning,
        }
    }

    pub async fn run(mut self, alerts: Notifier, metrics: Arc<Metrics>) {
        let mut ticks = tokio::time::interval(self.tuning.check_every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut window_start = Instant::now();
        let mut failures_before = metrics.handshake_failures();
        loop {
            ticks.tick().await;
            if let Some(t) = &mut self.connections {
                let connections = metrics.connections();
                let limit = t.limit;
                match t.observe(connections) {
                    Some(true) => alerts.notify(Alert::ConnectionsOver { connections, limit }),
                    Some(false) => alerts.notify(Alert::ConnectionsBack { connections, limit }),
                    None => {}
                }
            }
            if window_start.elapsed() < self.tuning.handshake_window {
                continue;
            }
            window_start = Instant::now();
            let failures_now = metrics.handshake_failures();
            let failures = failures_now - failures_before;
            failures_before = failures_now;
            if let Some(t) = &mut self.handshakes {
                if t.observe(failures) == Some(true) {
                    let limit = t.limit;
                    alerts.notify(Alert::HandshakeFailures { failures, limit });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Threshold;

    #[test]
    fn a_threshold_fires_once_per_crossing() {
        let mut t = Threshold::new(10, 9);
        let seen: Vec<_> = [5, 11, 12, 10, 11, 9, 8, 11]
            .into_iter()
            .map(|v| t.observe(v))
            .collect();
        assert_eq!(
            seen,
            [
                None,
                Some(true),
                None,
                None,
                None,
                Some(false),
                None,
                Some(true)
            ]
        );
    }
}

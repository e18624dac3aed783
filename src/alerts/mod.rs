//! Operator alerts, sent as markdown messages to a DingTalk group robot
//! (`[alerts.dingtalk]`): node start and stop, broker lost and regained, the connection
//! count going over `alerts.connections_over` (and back under 90 % of it), and more than
//! `alerts.handshake_failures_per_min` failed handshakes in a minute.
//!
//! Raising an alert never blocks and never fails: [`Alerts::notify`] logs it and puts it
//! on a bounded queue (`try_send`; when full, the alert is dropped and counted in
//! `minipush_alerts_dropped_total`). A background task ([`sender`]) sends at most 20
//! messages a minute (DingTalk throttles a robot for 10 minutes past that): alerts that
//! arrive faster are batched into one summary message. Delivery failures are logged
//! (without the webhook's token or the secret) and counted, never retried.

mod dingtalk;
mod sender;
mod watch;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::{sync::mpsc, task::JoinHandle};

pub use dingtalk::sign;

use crate::{config::AlertsConfig, metrics::Metrics};

/// Alerts waiting for the sender task; more are dropped (and counted).
const QUEUE: usize = 256;

/// Something operators should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    NodeStarted {
        addr: SocketAddr,
    },
    NodeStopping {
        connections: usize,
    },
    /// The cluster broker (Redis) is unreachable. `reason` must not carry credentials.
    BrokerLost {
        reason: String,
    },
    BrokerRegained,
    ConnectionsOver {
        connections: u64,
        limit: u64,
    },
    ConnectionsBack {
        connections: u64,
        limit: u64,
    },
    HandshakeFailures {
        failures: u64,
        limit: u64,
    },
}

impl Alert {
    fn title(&self) -> &'static str {
        match self {
            Alert::NodeStarted { .. } => "node started",
            Alert::NodeStopping { .. } => "node stopping",
            Alert::BrokerLost { .. } => "broker lost",
            Alert::BrokerRegained => "broker regained",
            Alert::ConnectionsOver { .. } => "too many connections",
            Alert::ConnectionsBack { .. } => "connections back to normal",
            Alert::HandshakeFailures { .. } => "handshake failures",
        }
    }

    fn text(&self) -> String {
        match self {
            Alert::NodeStarted { addr } => format!("listening on {addr}"),
            Alert::NodeStopping { connections } => {
                format!("shutting down, closing {connections} connections")
            }
            Alert::BrokerLost { reason } => {
                format!("the broker is unreachable ({reason}); API pushes answer 503")
            }
            Alert::BrokerRegained => "the broker is reachable again".into(),
            Alert::ConnectionsOver { connections, limit } => {
                format!("{connections} connections, over alerts.connections_over = {limit}")
            }
            Alert::ConnectionsBack { connections, limit } => {
                format!("{connections} connections, back under alerts.connections_over = {limit}")
            }
            Alert::HandshakeFailures { failures, limit } => format!(
                "{failures} failed handshakes in the last minute, over alerts.handshake_failures_per_min = {limit}"
            ),
        }
    }
}

/// Timing of the alert machinery. Production uses [`AlertTuning::default`]; tests shorten it.
#[derive(Debug, Clone, Copy)]
pub struct AlertTuning {
    /// The robot's throttling window and the messages allowed in it (60 s, 20).
    pub window: Duration,
    pub per_window: usize,
    /// How often the connection count is checked (1 s).
    pub check_every: Duration,
    /// What "per minute" means for `handshake_failures_per_min` (60 s).
    pub handshake_window: Duration,
}

impl Default for AlertTuning {
    fn default() -> Self {
        AlertTuning {
            window: Duration::from_secs(60),
            per_window: 20,
            check_every: Duration::from_secs(1),
            handshake_window: Duration::from_secs(60),
        }
    }
}

/// One alert on its way to the robot.
#[derive(Debug)]
enum Msg {
    Alert {
        title: &'static str,
        text: String,
        at: String,
    },
    /// Send what is queued, then end.
    Stop,
}

/// Queues alerts for the sender task without ever waiting.
#[derive(Clone)]
struct Notifier {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    fn notify(&self, alert: Alert) {
        let (title, text) = (alert.title(), alert.text());
        tracing::warn!("alert: {title}: {text}");
        let at = chrono::Utc::now()
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string();
        if self.tx.try_send(Msg::Alert { title, text, at }).is_err() {
            self.metrics.alerts_dropped(1);
        }
    }
}

struct Inner {
    notifier: Notifier,
    sender: Mutex<Option<JoinHandle<()>>>,
    watch: JoinHandle<()>,
}

/// The handle every part of the server raises alerts through; cheap to clone. Without
/// `alerts.dingtalk.webhook` it is disabled and [`Alerts::notify`] does nothing.
#[derive(Clone, Default)]
pub struct Alerts {
    inner: Option<Arc<Inner>>,
}

impl Alerts {
    /// Starts the sender and the threshold checks, if a webhook is configured.
    pub fn start(
        config: &AlertsConfig,
        node: &str,
        metrics: Arc<Metrics>,
        tuning: AlertTuning,
    ) -> Alerts {
        let Some(robot) = dingtalk::Robot::new(&config.dingtalk) else {
            return Alerts::default();
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let notifier = Notifier {
            tx,
            metrics: metrics.clone(),
        };
        let sender = sender::Sender::new(robot, node, metrics.clone(), tuning);
        let watch = watch::Watch::new(config, tuning);
        Alerts {
            inner: Some(Arc::new(Inner {
                sender: Mutex::new(Some(tokio::spawn(sender.run(rx)))),
                watch: tokio::spawn(watch.run(notifier.clone(), metrics)),
                notifier,
            })),
        }
    }

    /// Raises an alert: logged, then queued for the robot. Never blocks, never fails.
    pub fn notify(&self, alert: Alert) {
        match &self.inner {
            Some(inner) => inner.notifier.notify(alert),
            None => tracing::info!(
                "alert (no robot configured): {}: {}",
                alert.title(),
                alert.text()
            ),
        }
    }

    /// Stops the checks, sends what is queued and ends the sender, waiting at most `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        let Some(inner) = &self.inner else { return };
        inner.watch.abort();
        let Some(mut sender) = inner.sender.lock().take() else {
            return;
        };
        let stopped = async {
            if inner.notifier.tx.send(Msg::Stop).await.is_ok() {
                let _ = (&mut sender).await;
            }
        };
        if tokio::time::timeout(limit, stopped).await.is_err() {
            tracing::warn!("alerts still queued at shutdown were not sent");
            sender.abort();
        }
    }
}

//! Operator alerts to a DingTalk group robot (a fake robot that checks signatures exactly
//! as DingTalk does): node start and stop, the connection-count and handshake-failure
//! thresholds, at most `per_window` messages per window with bursts batched into
//! summaries that lose no alert, and a failing robot that breaks nothing.

mod common;

use std::{sync::Arc, time::Duration};

use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use minipush::{
    alerts::{Alert, AlertTuning, Alerts},
    config::{AlertsConfig, DingtalkConfig, Secret},
    metrics::Metrics,
    protocol::now_ms,
    Server,
};
use serde_json::json;
use sha2::Sha256;

const ROBOT_SECRET: &str = "SEC0123456789abcdef";
const ROBOT_PATH: &str = "/robot/send";

/// DingTalk's check: `sign` must be Base64(HMAC-SHA256(secret, timestamp + "\n" + secret))
/// and `timestamp` (ms) within an hour of now.
fn signature_ok(seen: &Seen) -> bool {
    let (Some(ts), Some(sign)) = (seen.query.get("timestamp"), seen.query.get("sign")) else {
        return false;
    };
    let Ok(ts_ms) = ts.parse::<i64>() else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(ROBOT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}\n{ROBOT_SECRET}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    *sign == expected && (now_ms() - ts_ms).abs() < 3_600_000
}

/// A fake robot: answers `{"errcode":0}` to a correctly signed markdown message with the
/// right access token, DingTalk's 310000 otherwise.
async fn fake_robot() -> FakeHttp {
    FakeHttp::start(|req| {
        let markdown = &req.json["markdown"];
        let good = req.query.get("access_token").map(String::as_str) == Some("robot-token")
            && req.json["msgtype"] == "markdown"
            && markdown["title"].is_string()
            && markdown["text"].is_string()
            && signature_ok(req);
        if good {
            Reply::json(json!({"errcode": 0, "errmsg": "ok"}))
        } else {
            Reply::json(json!({"errcode": 310000, "errmsg": "sign not match"}))
        }
    })
    .await
}

fn robot_config(robot_base: &str) -> AlertsConfig {
    AlertsConfig {
        dingtalk: DingtalkConfig {
            webhook: Some(Secret::new(format!(
                "{robot_base}{ROBOT_PATH}?access_token=robot-token"
            ))),
            secret: Some(Secret::new(ROBOT_SECRET)),
        },
        ..AlertsConfig::default()
    }
}

fn quick(window_ms: u64, per_window: usize) -> AlertTuning {
    AlertTuning {
        window: Duration::from_millis(window_ms),
        per_window,
        check_every: Duration::from_millis(50),
        handshake_window: Duration::from_millis(400),
    }
}

async fn start_server(alerts: AlertsConfig, tuning: AlertTuning) -> TestServer {
    let mut config = base_config();
    config.alerts = alerts;
    TestServer::from_builder(Server::builder(config).alert_tuning(tuning)).await
}

/// Every markdown text the robot received, in order.
fn texts(robot: &FakeHttp) -> Vec<String> {
    robot
        .calls(ROBOT_PATH)
        .iter()
        .map(|s| {
            s.json["markdown"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Waits until some message the robot received contains `needle`.
async fn robot_said(robot: &FakeHttp, needle: &str) -> bool {
    eventually(|| async { texts(robot).iter().any(|t| t.contains(needle)) }).await
}

#[tokio::test]
async fn start_and_stop_are_signed_markdown_messages() {
    let robot = fake_robot().await;
    let srv = start_server(robot_config(&robot.base), AlertTuning::default()).await;
    assert!(
        robot_said(&robot, "node started").await,
        "{:?}",
        texts(&robot)
    );
    let started = robot.next().await;
    assert_eq!(started.method, "POST");
    assert!(signature_ok(&started), "{started:?}");
    assert!(started.json["markdown"]["text"]
        .as_str()
        .unwrap()
        .contains(&srv.addr.to_string()));
    let sent = "minipush_alert_messages_total{result=\"ok\"}";
    assert!(eventually(|| async { srv.metric(sent).await == 1.0 }).await);
    srv.stop().await;
    assert!(
        robot_said(&robot, "node stopping").await,
        "{:?}",
        texts(&robot)
    );
    assert!(robot.calls(ROBOT_PATH).iter().all(signature_ok));
}

#[tokio::test]
async fn a_burst_of_100_alerts_is_batched_within_the_limit_and_loses_nothing() {
    let robot = fake_robot().await;
    let metrics = Arc::new(Metrics::default());
    let alerts = Alerts::start(&robot_config(&robot.base), "n1", metrics, quick(2_000, 20));
    for i in 0..100 {
        alerts.notify(Alert::BrokerLost {
            reason: format!("reason-{i}-end"),
        });
    }
    let all_arrived = eventually(|| async {
        let all = texts(&robot).concat();
        (0..100).all(|i| all.contains(&format!("reason-{i}-end")))
    })
    .await;
    assert!(all_arrived, "{:?}", texts(&robot));
    let calls = robot.calls(ROBOT_PATH);
    assert!(
        calls.len() <= 20,
        "{} robot calls in one window",
        calls.len()
    );
    assert!(calls.iter().all(signature_ok));
    // Each alert is in exactly one message.
    let all = texts(&robot).concat();
    for i in 0..100 {
        assert_eq!(
            all.matches(&format!("reason-{i}-end")).count(),
            1,
            "reason-{i}"
        );
    }
    alerts.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn alerts_faster_than_the_window_allows_wait_and_are_summarised() {
    let robot = fake_robot().await;
    let alerts = Alerts::start(
        &robot_config(&robot.base),
        "n1",
        Arc::new(Metrics::default()),
        quick(1_000, 5),
    );
    for i in 0..12 {
        alerts.notify(Alert::BrokerLost {
            reason: format!("slow-{i}-end"),
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let all_arrived = eventually(|| async {
        let all = texts(&robot).concat();
        (0..12).all(|i| all.contains(&format!("slow-{i}-end")))
    })
    .await;
    assert!(all_arrived, "{:?}", texts(&robot));
    let times: Vec<_> = robot.calls(ROBOT_PATH).iter().map(|s| s.at).collect();
    assert!(
        times.len() < 12,
        "nothing was batched: {} calls",
        times.len()
    );
    // No 950 ms span (the window, less some scheduling slack) holds more than 5 calls.
    for (i, first) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .filter(|t| t.duration_since(*first) < Duration::from_millis(950))
            .count();
        assert!(within <= 5, "{within} calls within one window: {times:?}");
    }
    alerts.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_failing_robot_breaks_nothing() {
    let robot = FakeHttp::start(|_| Reply::raw(500, "oops")).await;
    let srv = start_server(robot_config(&robot.base), quick(1_000, 20)).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    assert_eq!(
        srv.push(json!({"uid": "u1", "data": 1})).await["delivered"],
        1
    );
    assert_eq!(c.next().await["data"], 1);
    let failed = "minipush_alert_messages_total{result=\"failed\"}";
    assert!(eventually(|| async { srv.metric(failed).await >= 1.0 }).await);

    // A robot that answers an errcode is a failure too, and so is no robot at all.
    let refusing =
        FakeHttp::start(|_| Reply::json(json!({"errcode": 310000, "errmsg": "no"}))).await;
    let srv2 = start_server(robot_config(&refusing.base), quick(1_000, 20)).await;
    assert!(eventually(|| async { srv2.metric(failed).await >= 1.0 }).await);
    let closed = closed_addr();
    let srv3 = start_server(robot_config(&format!("http://{closed}")), quick(1_000, 20)).await;
    assert!(eventually(|| async { srv3.metric(failed).await >= 1.0 }).await);
    let (status, _) = srv3.api("GET", "/api/stats", None).await;
    assert_eq!(status, 200);
    for s in [srv, srv2, srv3] {
        s.stop().await;
    }
}

#[tokio::test]
async fn going_over_the_connection_limit_alerts_once_per_crossing() {
    let robot = fake_robot().await;
    let mut config = robot_config(&robot.base);
    config.connections_over = Some(2);
    let srv = start_server(config, quick(1_000, 20)).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(srv.connect(None).await.0);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert!(
        robot_said(&robot, "too many connections").await,
        "{:?}",
        texts(&robot)
    );
    for c in clients.drain(..3) {
        c.close().await;
    }
    assert!(
        robot_said(&robot, "back to normal").await,
        "{:?}",
        texts(&robot)
    );
    let over = texts(&robot)
        .concat()
        .matches("too many connections")
        .count();
    assert_eq!(over, 1, "{:?}", texts(&robot));
}

#[tokio::test]
async fn handshake_failures_over_the_threshold_alert() {
    let robot = fake_robot().await;
    let mut config = robot_config(&robot.base);
    config.handshake_failures_per_min = Some(3);
    let srv = start_server(config, quick(1_000, 20)).await;
    for _ in 0..8 {
        let mut c = srv.open(Some("nonsense")).await;
        let (code, _) = c.closed().await;
        assert_eq!(code, 4003);
    }
    assert!(
        robot_said(&robot, "handshake failures").await,
        "{:?}",
        texts(&robot)
    );
    // However the 8 failures fell into the 400 ms windows, one window held more than 3.
    let text = texts(&robot).concat();
    let counted: u64 = text
        .split(" failed handshakes")
        .next()
        .and_then(|before| before.rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(counted > 3, "{text}");
}

//! SPEC section 1: the signed handshake, its close codes, and connection limits.

mod common;

use std::time::Duration;

use common::*;
use minipush::{auth::sign, protocol::now_secs};
use serde_json::json;

#[tokio::test]
async fn anonymous_ticket_is_welcomed_and_first_protocol_echoed() {
    let srv = TestServer::start().await;
    let ts = now_secs();
    let sig = sign(TOKEN, ts, None);
    let mut c = srv.open(Some(&format!("{sig}, {ts}"))).await;
    assert_eq!(c.protocol.as_deref(), Some(sig.as_str()));
    let w = c.next().await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["uid"], serde_json::Value::Null);
    assert_eq!(w["heartbeat"], 25);
    assert!(w["conn"].as_str().is_some_and(|s| s.starts_with('c')));
    assert!(w["node"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(w["epoch"].as_str().is_some_and(|s| !s.is_empty()));
    assert!((w["time"].as_i64().unwrap() - now_secs()).abs() <= 2);
}

#[tokio::test]
async fn bound_ticket_makes_the_connection_the_uids() {
    let srv = TestServer::start().await;
    let (_c, w) = srv.connect(Some("oUser_1.x-y")).await;
    assert_eq!(w["uid"], "oUser_1.x-y");
    let (_, online) = srv.api("GET", "/api/online/oUser_1.x-y", None).await;
    assert_eq!(online["online"], true);
}

#[tokio::test]
async fn uppercase_signatures_are_accepted() {
    let srv = TestServer::start().await;
    let ts = now_secs();
    let sig = sign(TOKEN, ts, Some("u1")).to_uppercase();
    let mut c = srv.open(Some(&format!("{sig},{ts},u1"))).await;
    assert_eq!(c.next().await["type"], "welcome");
}

#[tokio::test]
async fn any_listed_token_validates_for_rotation() {
    let srv = TestServer::start_with(|c| {
        c.auth.tokens = vec![
            minipush::config::Secret::new("old-token-1234"),
            minipush::config::Secret::new("new-token-5678"),
        ]
    })
    .await;
    for token in ["old-token-1234", "new-token-5678"] {
        let mut c = srv.open(Some(&ticket(token, now_secs(), Some("u1")))).await;
        assert_eq!(c.next().await["type"], "welcome", "{token}");
    }
    let mut c = srv.open(Some(&ticket(TOKEN, now_secs(), Some("u1")))).await;
    assert_eq!(c.closed().await.0, 4001);
}

#[tokio::test]
async fn bad_signature_closes_4001_before_anything_is_delivered() {
    let srv = TestServer::start().await;
    let ts = now_secs();
    let mut c = srv.open(Some(&ticket("wrong-token", ts, Some("u1")))).await;
    // The upgrade completes and echoes the first value, then the first frame is the close.
    assert_eq!(
        c.protocol.as_deref(),
        Some(sign("wrong-token", ts, Some("u1")).as_str())
    );
    let event = c.event().await;
    assert_eq!(event, Event::Close(4001, "invalid signature".into()));
    // A ticket for one uid does not work for another.
    let sig = sign(TOKEN, ts, Some("u1"));
    let mut c = srv.open(Some(&format!("{sig}, {ts}, u2"))).await;
    assert_eq!(c.closed().await.0, 4001);
}

#[tokio::test]
async fn timestamp_outside_the_window_closes_4002() {
    let srv = TestServer::start().await;
    for ts in [now_secs() - 400, now_secs() + 400] {
        let mut c = srv.open(Some(&ticket(TOKEN, ts, None))).await;
        assert_eq!(
            c.closed().await,
            (4002, "timestamp outside the allowed window".into())
        );
    }
    // Inside the window is fine, on either side.
    let mut c = srv.open(Some(&ticket(TOKEN, now_secs() - 200, None))).await;
    assert_eq!(c.next().await["type"], "welcome");
}

#[tokio::test]
async fn malformed_credentials_close_4003() {
    let srv = TestServer::start().await;
    let ts = now_secs();
    let sig = sign(TOKEN, ts, None);
    let cases = [
        None,
        Some(sig.clone()),
        Some(format!("{sig}, {ts}, u1, extra")),
        Some(format!("{sig}, 12ab")),
        Some(format!("{}, {ts}", &sig[..30])),
        Some(format!("{sig}, {ts}, bad!uid")),
    ];
    for case in cases {
        let mut c = srv.open(case.as_deref()).await;
        assert_eq!(c.closed().await.0, 4003, "{case:?}");
    }
}

#[tokio::test]
async fn checks_run_shape_then_window_then_signature() {
    let srv = TestServer::start().await;
    let old = now_secs() - 1000;
    // Bad shape and an old timestamp: the shape decides.
    let mut c = srv
        .open(Some(&format!("{}, {old}, bad uid", sign(TOKEN, old, None))))
        .await;
    assert_eq!(c.closed().await.0, 4003);
    // Old timestamp and a wrong signature: the window decides.
    let mut c = srv.open(Some(&ticket("wrong", old, None))).await;
    assert_eq!(c.closed().await.0, 4002);
}

#[tokio::test]
async fn refused_clients_that_ignore_the_close_are_dropped_within_a_second() {
    let srv = TestServer::start().await;
    let mut raw = RawClient::open(srv.addr, "nonsense, 1").await;
    assert!(raw.head.starts_with("HTTP/1.1 101"), "{}", raw.head);
    assert!(raw
        .head
        .to_ascii_lowercase()
        .contains("sec-websocket-protocol: nonsense"));
    let started = std::time::Instant::now();
    let (frames, dropped) = raw.frames_until_dropped(Duration::from_secs(4)).await;
    assert!(dropped, "the server kept the connection open");
    assert!(started.elapsed() < Duration::from_millis(2500));
    // Nothing but the close frame (opcode 8) with 4003.
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].0, 8);
    assert_eq!(close_code(&frames[0].1), 4003);
}

#[tokio::test]
async fn plain_get_on_ws_path_is_a_json_400() {
    let srv = TestServer::start().await;
    let (status, body) = srv.api_as(None, "GET", "/ws", None).await;
    assert_eq!(status, 400);
    assert_eq!(body["ok"], false);
    assert_eq!(body["error"], "not_websocket");
}

#[tokio::test]
async fn ws_path_is_configurable() {
    let srv = TestServer::start_with(|c| c.server.ws_path = "/push".into()).await;
    let (status, _) = srv.api_as(None, "GET", "/push", None).await;
    assert_eq!(status, 400);
    let (status, _) = srv.api_as(None, "GET", "/ws", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_full_server_closes_new_clients_with_4009() {
    let srv = TestServer::start_with(|c| c.limits.max_connections = 2).await;
    let (_a, _) = srv.connect(None).await;
    let (_b, _) = srv.connect(Some("u1")).await;
    let mut c = srv.open(Some(&ticket(TOKEN, now_secs(), None))).await;
    assert_eq!(c.closed().await.0, 4009);
    // A slot frees up when someone leaves.
    _a.close().await;
    assert!(eventually(|| async { srv.server.as_ref().unwrap().app().hub.len() == 1 }).await);
    let (_c, _) = srv.connect(None).await;
}

#[tokio::test]
async fn the_oldest_connection_of_a_uid_is_replaced_with_4004() {
    let srv = TestServer::start_with(|c| c.limits.max_conns_per_uid = 2).await;
    let (mut first, _) = srv.connect(Some("u1")).await;
    let (mut second, _) = srv.connect(Some("u1")).await;
    let (mut third, _) = srv.connect(Some("u1")).await;
    assert_eq!(first.closed().await.0, 4004);
    let (_, online) = srv.api("GET", "/api/online/u1", None).await;
    assert_eq!(online["conns"], 2);
    srv.push(json!({"uid": "u1", "data": "hi"})).await;
    assert_eq!(second.next().await["data"], "hi");
    assert_eq!(third.next().await["data"], "hi");
}

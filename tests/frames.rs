//! SPEC section 2 and the liveness limits: client frames and their answers, bad input
//! that never closes the connection at the first mistake, the rate limit, the frame size
//! limit, the heartbeat, and the built-in `echo` and `chat` handlers.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(None).await;
    c.send(json!({"type": "ping"})).await;
    let pong = c.next().await;
    assert_eq!(pong["type"], "pong");
    let t = pong["time"].as_i64().unwrap();
    assert!((t - minipush::protocol::now_ms()).abs() < 5000);
}

#[tokio::test]
async fn join_and_leave_reply_with_the_group_and_ref() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(None).await;
    let r = c
        .request("1", json!({"type": "join", "group": "room1"}))
        .await;
    assert_eq!(
        r,
        json!({"type": "reply", "ref": "1", "data": {"joined": "room1", "seq": 0}})
    );
    srv.push(json!({"group": "room1", "data": 1})).await;
    assert_eq!(c.next().await["stream"], "g:room1");
    let r = c
        .request("2", json!({"type": "leave", "group": "room1"}))
        .await;
    assert_eq!(r["data"], json!({"left": "room1"}));
    let answer = srv.push(json!({"group": "room1", "data": 2})).await;
    assert_eq!(answer["delivered"], 0);
    c.silent_for(200).await;
}

#[tokio::test]
async fn messages_without_id_are_answered_with_a_null_ref() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(None).await;
    c.send(json!({"type": "join", "group": "g"})).await;
    assert_eq!(
        c.next().await,
        json!({"type": "reply", "ref": null, "data": {"joined": "g", "seq": 0}})
    );
}

#[tokio::test]
async fn bad_input_gets_documented_errors_and_the_connection_stays_usable() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(None).await;
    let cases: [(&str, &str); 7] = [
        ("{not json", "bad_json"),
        ("[1,2,3]", "bad_request"),
        ("\"text\"", "bad_request"),
        ("{\"id\":\"x\"}", "bad_request"),
        ("{\"type\":7}", "bad_request"),
        ("{\"type\":\"echo\",\"id\":5}", "bad_request"),
        ("{\"type\":\"no_such_type\"}", "unknown_type"),
    ];
    for (frame, code) in cases {
        c.send_text(frame).await;
        let e = c.next().await;
        assert_eq!(e["type"], "error", "{frame}");
        assert_eq!(e["code"], code, "{frame}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    c.ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(c.next().await["code"], "binary_not_supported");
    // Field errors keep the ref.
    let e = c
        .request("j", json!({"type": "join", "group": "bad group!"}))
        .await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    let e = c.request("k", json!({"type": "join"})).await;
    assert_eq!(e["code"], "bad_request");
    let r = c.request("ok", json!({"type": "echo", "data": 1})).await;
    assert_eq!(r["data"], json!({"echo": 1}));
}

#[tokio::test]
async fn echo_returns_data_byte_for_byte() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(None).await;
    c.send_text(r#"{"type":"echo","id":"e","data":{"big":12345678901234567890,"f":1.0,"s":"é"}}"#)
        .await;
    let raw = loop {
        if let Some(Ok(Message::Text(t))) = c.ws.next().await {
            break t;
        }
    };
    assert_eq!(
        raw,
        r#"{"type":"reply","ref":"e","data":{"echo":{"big":12345678901234567890,"f":1.0,"s":"é"}}}"#
    );
}

#[tokio::test]
async fn chat_reaches_the_group_and_refuses_non_members() {
    let srv = TestServer::start().await;
    let (mut alice, _) = srv.connect(Some("alice")).await;
    let (mut bob, bob_welcome) = srv.connect(None).await;
    let msg = json!({"type": "chat", "group": "room1", "text": "hi"});
    let e = alice.request("1", msg.clone()).await;
    assert_eq!(e["code"], "not_member");
    alice
        .request("2", json!({"type": "join", "group": "room1"}))
        .await;
    bob.request("3", json!({"type": "join", "group": "room1"}))
        .await;
    // The sender's own copy of the push is queued before its reply.
    alice
        .send(json!({"type": "chat", "group": "room1", "text": "hi", "id": "4"}))
        .await;
    let p = alice.next().await;
    let r = alice.next().await;
    assert_eq!(r["data"], json!({"sent": true, "seq": 1}));
    let q = bob.next().await;
    for p in [p, q] {
        assert_eq!(
            (p["stream"].as_str(), p["seq"].as_u64()),
            (Some("g:room1"), Some(1))
        );
        assert_eq!(p["data"]["from"], "alice");
        assert_eq!(p["data"]["text"], "hi");
        assert!(p["data"]["time"].as_i64().is_some());
    }
    // An anonymous sender is named by its connection id.
    bob.request("5", msg).await;
    let p = alice.next_where(|v| v["type"] == "push").await;
    assert_eq!(p["data"]["from"], bob_welcome["conn"]);
}

#[tokio::test]
async fn client_join_can_be_switched_off() {
    let srv = TestServer::start_with(|c| c.groups.client_join = false).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    let e = c.request("1", json!({"type": "join", "group": "g"})).await;
    assert_eq!(e["code"], "forbidden");
    // The API can still add members.
    let (status, _) = srv
        .api("POST", "/api/groups/g/members", Some(json!({"uid": "u1"})))
        .await;
    assert_eq!(status, 200);
    srv.push(json!({"group": "g", "data": "x"})).await;
    assert_eq!(c.next().await["stream"], "g:g");
}

#[tokio::test]
async fn bind_needs_allow_client_bind() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(None).await;
    let e = c.request("1", json!({"type": "bind", "uid": "u9"})).await;
    assert_eq!(e["code"], "forbidden");

    let srv = TestServer::start_with(|c| c.auth.allow_client_bind = true).await;
    let (mut c, _) = srv.connect(None).await;
    let r = c.request("1", json!({"type": "bind", "uid": "u9"})).await;
    assert_eq!(r["data"], json!({"bound": "u9"}));
    srv.push(json!({"uid": "u9", "data": "for u9"})).await;
    assert_eq!(c.next().await["stream"], "u:u9");
    let e = c.request("2", json!({"type": "bind", "uid": "u10"})).await;
    assert_eq!(e["code"], "bad_request");
}

#[tokio::test]
async fn rate_limit_answers_then_closes_with_4029() {
    let srv = TestServer::start_with(|c| c.limits.client_msgs_per_sec = 2).await;
    let (mut c, _) = srv.connect(None).await;
    // Burst of 4 passes; the rest are refused with rate_limited, keeping their ref.
    for i in 0..6 {
        c.send(json!({"type": "echo", "id": i.to_string(), "data": i}))
            .await;
    }
    let mut answers: Vec<Value> = Vec::new();
    for _ in 0..6 {
        answers.push(c.next().await);
    }
    let limited: Vec<&Value> = answers
        .iter()
        .filter(|a| a["code"] == "rate_limited")
        .collect();
    assert!(limited.len() >= 2, "{answers:?}");
    assert!(limited.iter().all(|a| a["ref"].is_string()));
    // Ten refusals in a row close the connection.
    for i in 0..12 {
        c.send(json!({"type": "ping", "id": i.to_string()})).await;
    }
    assert_eq!(c.closed().await.0, 4029);
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let srv = TestServer::start_with(|c| c.limits.max_frame_bytes = 1024).await;
    let (mut c, _) = srv.connect(None).await;
    // Just under the limit is fine.
    let ok = json!({"type": "echo", "id": "a", "data": "x".repeat(900)});
    assert_eq!(c.request("a", ok).await["type"], "reply");
    c.send(json!({"type": "echo", "data": "x".repeat(2000)}))
        .await;
    assert_eq!(c.closed().await.0, 1009);
}

#[tokio::test]
async fn the_server_pings_and_closes_silent_clients_with_4000() {
    let srv = TestServer::start_with(|c| {
        c.heartbeat.interval_secs = 1;
        c.heartbeat.timeout_secs = 2;
    })
    .await;
    let (mut c, w) = srv.connect(None).await;
    assert_eq!(w["heartbeat"], 1);
    // A client that reads (and so answers pings) stays connected past the timeout.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, c.ws.next()).await {
        if matches!(msg, Message::Ping(_)) {
            pings += 1;
        }
        assert!(
            !matches!(msg, Message::Close(_)),
            "closed while answering pings"
        );
    }
    assert!(pings >= 2, "server sent {pings} pings");
    // A client that answers nothing is pinged, then closed with 4000 and dropped.
    let mut raw = RawClient::open(
        srv.addr,
        &ticket(TOKEN, minipush::protocol::now_secs(), None),
    )
    .await;
    let (frames, dropped) = raw.frames_until_dropped(Duration::from_secs(6)).await;
    assert!(dropped);
    let ops: Vec<u8> = frames.iter().map(|f| f.0).collect();
    assert_eq!(ops.first(), Some(&1), "welcome first: {ops:?}");
    assert!(ops.contains(&9), "pinged: {ops:?}");
    let (op, payload) = frames.last().unwrap();
    assert_eq!((*op, close_code(payload)), (8, 4000));
}

#[tokio::test]
async fn app_level_ping_counts_as_traffic() {
    let srv = TestServer::start_with(|c| {
        c.heartbeat.interval_secs = 1;
        c.heartbeat.timeout_secs = 2;
    })
    .await;
    // Raw client that never answers WebSocket pings but sends {"type":"ping"} every 500 ms.
    let (mut c, _) = srv.connect(None).await;
    for _ in 0..8 {
        c.send(json!({"type": "ping"})).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.next_where(|v| v["type"] == "pong").await["type"], "pong");
}

#[tokio::test]
async fn fragmented_messages_are_joined_and_limited_as_a_whole() {
    let srv = TestServer::start_with(|c| c.limits.max_frame_bytes = 1024).await;
    let (mut c, _) = srv.connect(None).await;
    let text = json!({"type": "echo", "id": "f", "data": "y".repeat(600)}).to_string();
    let (head, tail) = text.split_at(300);
    send_fragments(&mut c, head, tail).await;
    assert_eq!(c.next().await["ref"], "f");
    // Two fragments under the limit that together exceed it.
    let part = "z".repeat(700);
    send_fragments(&mut c, &part, &part).await;
    assert_eq!(c.closed().await.0, 1009);
}

async fn send_fragments(c: &mut Client, first: &str, last: &str) {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let first = Frame::message(first.as_bytes().to_vec(), OpCode::Data(Data::Text), false);
    let last = Frame::message(last.as_bytes().to_vec(), OpCode::Data(Data::Continue), true);
    c.ws.send(Message::Frame(first)).await.unwrap();
    c.ws.send(Message::Frame(last)).await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(None).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(c.closed().await.0, 1007);
    // Everyone else is still served.
    let (mut d, _) = srv.connect(None).await;
    d.send(json!({"type": "ping"})).await;
    assert_eq!(d.next().await["type"], "pong");
}

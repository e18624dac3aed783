//! SPEC section 3, the `upstream` handler: client messages of configured types are POSTed
//! to a business backend (a small actix-web server inside each test) as
//! `{"conn":..,"uid":..,"message":<the frame>}`; the backend's `reply` goes to the sender
//! and its `push` items are pushed; `order.*` patterns; the first matching entry wins;
//! every backend failure answers `upstream_unavailable` and leaves the connection usable.

mod common;

use std::time::Duration;

use common::*;
use minipush::config::UpstreamConfig;
use serde_json::{json, Value};

fn entry(types: &[&str], url: &str, timeout_ms: u64) -> UpstreamConfig {
    UpstreamConfig {
        types: types.iter().map(|t| t.to_string()).collect(),
        url: url.to_string(),
        timeout_ms,
    }
}

/// A server whose `order.*` messages go to `url`.
async fn server_for(url: &str) -> TestServer {
    let entries = vec![entry(&["order.*"], url, 500)];
    TestServer::start_with(move |c| c.upstream = entries).await
}

/// The next `n` JSON frames, in arrival order.
async fn take(c: &mut Client, n: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    for _ in 0..n {
        frames.push(c.next().await);
    }
    frames
}

/// Sends an `order.create` and expects `upstream_unavailable`; then the connection still
/// answers an `echo`.
async fn assert_unavailable_and_still_usable(c: &mut Client, id: &str, msg: Value) {
    let answer = c.request(id, msg).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["ref"], id, "{answer}");
    assert_eq!(answer["code"], "upstream_unavailable", "{answer}");
    assert!(answer["message"].is_string(), "{answer}");
    let echo = c
        .request(&format!("{id}-echo"), json!({"type": "echo", "data": id}))
        .await;
    assert_eq!(echo["type"], "reply", "{echo}");
    assert_eq!(echo["data"], json!({ "echo": id }));
}

#[tokio::test]
async fn backend_receives_conn_uid_and_the_exact_frame() {
    let be = FakeHttp::start(|_| Reply::json(json!({"reply": {"got": true}}))).await;
    let srv = server_for(&be.url("/hook")).await;
    let (mut c, welcome) = srv.connect(Some("u1")).await;
    let frame = r#"{"type":"order.create","id":"7","item":12345678901234567890,"price":1.0,"note":"\u00e9"}"#;
    c.send_text(frame).await;
    let reply = c.next().await;
    assert_eq!(
        reply,
        json!({"type": "reply", "ref": "7", "data": {"got": true}})
    );
    let Seen {
        raw, json: body, ..
    } = be.next().await;
    assert_eq!(body["conn"], welcome["conn"], "{raw}");
    assert_eq!(body["uid"], "u1", "{raw}");
    assert_eq!(
        body["message"],
        serde_json::from_str::<Value>(frame).unwrap()
    );
    // The frame is forwarded as the client wrote it, not re-encoded.
    assert!(raw.contains(&format!(r#""message":{frame}"#)), "{raw}");

    // An anonymous connection is forwarded with a null uid.
    let (mut anon, welcome) = srv.connect(None).await;
    let reply = anon
        .request("8", json!({"type": "order.list", "page": 2}))
        .await;
    assert_eq!(reply["type"], "reply", "{reply}");
    let Seen {
        raw, json: body, ..
    } = be.next().await;
    assert_eq!(body["conn"], welcome["conn"], "{raw}");
    assert_eq!(body.get("uid"), Some(&Value::Null), "{raw}");
    assert_eq!(body["message"]["page"], 2, "{raw}");
}

#[tokio::test]
async fn backend_answer_replies_to_the_sender_and_pushes() {
    let be = FakeHttp::start(|req| {
        Reply::json(json!({
            "reply": {"order": 42, "for": req.json["message"]["id"]},
            "push": [
                {"uid": "u2", "data": {"paid": true}},
                {"group": "ops", "data": {"new_order": 42}},
                {"conn": req.json["conn"], "data": "just you"},
            ],
        }))
    })
    .await;
    let srv = server_for(&be.url("/hook")).await;
    let (mut sender, welcome) = srv.connect(Some("u1")).await;
    let (mut u2, _) = srv.connect(Some("u2")).await;
    let (mut ops, _) = srv.connect(None).await;
    ops.request("j", json!({"type": "join", "group": "ops"}))
        .await;

    sender
        .send(json!({"type": "order.pay", "id": "p1", "order": 42}))
        .await;
    // The sender gets its reply and the push to its own connection, in either order.
    let frames = take(&mut sender, 2).await;
    let reply = frames
        .iter()
        .find(|f| f["type"] == "reply")
        .expect("a reply");
    assert_eq!(
        reply,
        &json!({"type": "reply", "ref": "p1", "data": {"order": 42, "for": "p1"}})
    );
    let own = frames
        .iter()
        .find(|f| f["type"] == "push")
        .expect("a push to the sender's conn");
    assert_eq!(
        own["stream"],
        format!("c:{}", welcome["conn"].as_str().unwrap())
    );
    assert_eq!(own["data"], "just you");

    let push = u2.next().await;
    assert_eq!(push["type"], "push", "{push}");
    assert_eq!(push["stream"], "u:u2");
    assert_eq!(push["seq"], 1);
    assert_eq!(push["data"], json!({"paid": true}));

    let push = ops.next().await;
    assert_eq!(push["stream"], "g:ops", "{push}");
    assert_eq!(push["data"], json!({"new_order": 42}));
}

#[tokio::test]
async fn order_star_matches_dotted_types_but_not_order_itself() {
    let be =
        FakeHttp::start(|req| Reply::json(json!({"reply": req.json["message"]["type"]}))).await;
    let srv = server_for(&be.url("/hook")).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    for ty in ["order.create", "order.a.b"] {
        let reply = c.request(ty, json!({ "type": ty })).await;
        assert_eq!(reply["type"], "reply", "{ty}: {reply}");
        assert_eq!(reply["data"], ty);
        assert_eq!(be.next().await.json["message"]["type"], ty);
    }
    for ty in ["order", "orders.create", "xorder.create"] {
        let answer = c.request(ty, json!({ "type": ty })).await;
        assert_eq!(answer["type"], "error", "{ty}: {answer}");
        assert_eq!(answer["code"], "unknown_type", "{ty}: {answer}");
    }
    assert_eq!(be.pending(), 0, "unmatched types reached the backend");
}

#[tokio::test]
async fn backend_http_error_is_upstream_unavailable() {
    let be = FakeHttp::start(|req| {
        let status = req.json["message"]["status"].as_u64().unwrap_or(500) as u16;
        Reply::raw(status, r#"{"reply":"should not be used"}"#)
    })
    .await;
    let srv = server_for(&be.url("/hook")).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    for status in [500, 503, 404, 400] {
        let msg = json!({"type": "order.create", "status": status});
        assert_unavailable_and_still_usable(&mut c, &format!("s{status}"), msg).await;
    }
}

#[tokio::test]
async fn backend_slower_than_timeout_is_upstream_unavailable() {
    let be =
        FakeHttp::start(|_| Reply::json(json!({"reply": "late"})).after(Duration::from_secs(3)))
            .await;
    let srv = server_for(&be.url("/hook")).await; // timeout_ms = 500
    let (mut c, _) = srv.connect(Some("u1")).await;
    let (mut other, _) = srv.connect(Some("u2")).await;
    let started = std::time::Instant::now();
    c.send(json!({"type": "order.create", "id": "slow"})).await;
    // While the call is pending, other connections are served.
    let echo = other.request("e", json!({"type": "echo", "data": 1})).await;
    assert_eq!(echo["data"], json!({"echo": 1}));
    let answer = c.next_where(|v| v["ref"] == "slow").await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "upstream_unavailable", "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "timeout_ms = 500 was not applied: {:?}",
        started.elapsed()
    );
    let echo = c.request("after", json!({"type": "echo", "data": 2})).await;
    assert_eq!(echo["data"], json!({"echo": 2}), "{echo}");
}

#[tokio::test]
async fn backend_answer_that_is_not_json_is_upstream_unavailable() {
    let be = FakeHttp::start(|req| {
        let body = req.json["message"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Reply::raw(200, &body)
    })
    .await;
    let srv = server_for(&be.url("/hook")).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    for (i, body) in ["<html>oops</html>", "", "{\"reply\":", "not json"]
        .into_iter()
        .enumerate()
    {
        let msg = json!({"type": "order.create", "body": body});
        assert_unavailable_and_still_usable(&mut c, &format!("nj{i}"), msg).await;
    }
}

#[tokio::test]
async fn unreachable_backend_is_upstream_unavailable() {
    let closed = closed_addr();
    let srv = server_for(&format!("http://{closed}/hook")).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    for id in ["r1", "r2"] {
        assert_unavailable_and_still_usable(&mut c, id, json!({"type": "order.create"})).await;
    }
}

#[tokio::test]
async fn backend_answer_with_an_invalid_push_is_upstream_unavailable() {
    let be = FakeHttp::start(|req| {
        let push = req.json["message"]["push"].clone();
        Reply::json(json!({"reply": {"ok": 1}, "push": [push]}))
    })
    .await;
    let srv = server_for(&be.url("/hook")).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    let (mut u2, _) = srv.connect(Some("u2")).await;
    let bad_items = [
        json!({"uid": "bad uid", "data": 1}),
        json!({"data": 1}),
        json!({"uid": "u2", "group": "g", "data": 1}),
        json!({"uid": "u2"}),
        json!({"all": false, "data": 1}),
        json!({"uid": "u2", "data": 1, "gruop": "g"}),
        // The WeChat fallback belongs to the HTTP API, not to upstream answers.
        json!({"uid": "u2", "data": 1, "subscribe": {"template_id": "t", "data": {}}}),
    ];
    for (i, item) in bad_items.into_iter().enumerate() {
        let msg = json!({"type": "order.create", "push": item});
        assert_unavailable_and_still_usable(&mut c, &format!("bad{i}"), msg).await;
    }
    u2.silent_for(300).await;
    // A valid item from the same backend works.
    let msg = json!({"type": "order.create", "push": {"uid": "u2", "data": "ok"}});
    let reply = c.request("good", msg).await;
    assert_eq!(reply["type"], "reply", "{reply}");
    assert_eq!(reply["data"], json!({"ok": 1}));
    assert_eq!(u2.next().await["data"], "ok");
}

#[tokio::test]
async fn the_first_matching_entry_wins() {
    let a = FakeHttp::start(|_| Reply::json(json!({"reply": "a"}))).await;
    let b = FakeHttp::start(|_| Reply::json(json!({"reply": "b"}))).await;
    let entries = vec![
        entry(&["order.pay", "shop.*"], &a.url("/hook"), 500),
        entry(&["order.*", "shop.buy"], &b.url("/hook"), 500),
    ];
    let srv = TestServer::start_with(move |c| c.upstream = entries).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    for (ty, want) in [
        ("order.pay", "a"),
        ("order.ship", "b"),
        // `shop.*` comes first, so it wins over the exact `shop.buy` listed later.
        ("shop.buy", "a"),
        ("shop.sell", "a"),
    ] {
        let reply = c.request(ty, json!({ "type": ty })).await;
        assert_eq!(reply["data"], want, "{ty}: {reply}");
    }
    for _ in 0..3 {
        a.next().await;
    }
    b.next().await;
    assert_eq!(a.pending() + b.pending(), 0);
}

#[tokio::test]
async fn upstream_entries_cannot_claim_built_in_types() {
    for ty in ["echo", "chat", "ping", "join", "leave", "resume", "bind"] {
        let text = format!(
            "[auth]\ntokens = [\"{TOKEN}\"]\n[api]\nkeys = [\"{KEY}\"]\n\
             [[upstream]]\ntypes = [\"{ty}\"]\nurl = \"http://127.0.0.1:1/\"\n"
        );
        let err = minipush::Config::from_toml(&text, Vec::new(), false)
            .err()
            .unwrap_or_else(|| panic!("{ty} was accepted"));
        assert!(err.to_string().contains("upstream"), "{ty}: {err}");
    }
    // The same entry with a business type is fine.
    let text = format!(
        "[auth]\ntokens = [\"{TOKEN}\"]\n[api]\nkeys = [\"{KEY}\"]\n\
         [[upstream]]\ntypes = [\"order.*\"]\nurl = \"http://127.0.0.1:1/\"\n"
    );
    let config = minipush::Config::from_toml(&text, Vec::new(), false).unwrap();
    assert_eq!(config.upstream[0].timeout_ms, 3000);
}

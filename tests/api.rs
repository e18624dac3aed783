//! SPEC section 4: the HTTP API against a real server. Pushes to every kind of target
//! (uid, uids, group, conn, all) with their `seq` rules and byte-exact `data`, request
//! validation, API keys, the public endpoints (`/api/time`, `/healthz`, `/readyz`,
//! `/metrics`), body limits, batches, online status, group membership, kicks, stats and
//! unknown routes.

mod common;

use common::*;
use futures_util::StreamExt;
use minipush::protocol::{now_ms, now_secs};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The next `push` frame, skipping anything else.
async fn next_push(c: &mut Client) -> Value {
    c.next_where(|v| v["type"] == "push").await
}

/// Asserts a `push` frame's shape: stream, seq (JSON `null` must be present), data, time.
fn assert_push(frame: &Value, stream: &str, seq: Value, data: Value) {
    assert_eq!(frame["type"], "push", "{frame}");
    assert_eq!(frame["stream"], stream, "{frame}");
    assert_eq!(frame.get("seq"), Some(&seq), "seq of {frame}");
    assert_eq!(frame["data"], data, "{frame}");
    let time = frame["time"].as_i64().expect("time is an integer");
    assert!((time - now_ms()).abs() < 10_000, "time in ms: {frame}");
}

/// Asserts an API error answer: status, `ok:false`, the code and a human message.
fn assert_api_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

fn conn_id(welcome: &Value) -> String {
    welcome["conn"]
        .as_str()
        .expect("welcome has a conn")
        .to_string()
}

async fn join(c: &mut Client, group: &str) {
    let r = c
        .request("join", json!({"type": "join", "group": group}))
        .await;
    assert_eq!(r["type"], "reply", "{r}");
    assert_eq!(r["data"]["joined"], group);
    assert!(r["data"]["seq"].is_u64(), "{r}");
}

// ---------------------------------------------------------------------------------------
// Pushes and their targets
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn push_to_uid_reaches_every_connection_with_growing_seq() {
    let srv = TestServer::start().await;
    let (mut a, _) = srv.connect(Some("u1")).await;
    let (mut b, _) = srv.connect(Some("u1")).await;
    let (mut other, _) = srv.connect(Some("u2")).await;
    for n in 1..=3u64 {
        let answer = srv.push(json!({"uid": "u1", "data": {"n": n}})).await;
        assert_eq!(answer, json!({"ok": true, "delivered": 2, "seq": n}));
        for c in [&mut a, &mut b] {
            assert_push(&next_push(c).await, "u:u1", json!(n), json!({ "n": n }));
        }
    }
    other.silent_for(300).await;
}

#[tokio::test]
async fn push_to_group_reaches_members_only() {
    let srv = TestServer::start().await;
    let (mut member, _) = srv.connect(Some("u1")).await;
    let (mut anon_member, _) = srv.connect(None).await;
    let (mut outsider, _) = srv.connect(Some("u2")).await;
    join(&mut member, "room1").await;
    join(&mut anon_member, "room1").await;
    for n in 1..=2u64 {
        let answer = srv.push(json!({"group": "room1", "data": "hi"})).await;
        assert_eq!(answer, json!({"ok": true, "delivered": 2, "seq": n}));
        for c in [&mut member, &mut anon_member] {
            assert_push(&next_push(c).await, "g:room1", json!(n), json!("hi"));
        }
    }
    outsider.silent_for(300).await;
}

#[tokio::test]
async fn push_to_conn_reaches_that_connection_without_seq() {
    let srv = TestServer::start().await;
    let (mut a, wa) = srv.connect(Some("u1")).await;
    let (mut b, _) = srv.connect(Some("u1")).await;
    let id = conn_id(&wa);
    for _ in 0..2 {
        let answer = srv.push(json!({"conn": id, "data": [1, 2]})).await;
        assert_eq!(answer, json!({"ok": true, "delivered": 1, "seq": null}));
        assert_push(
            &next_push(&mut a).await,
            &format!("c:{id}"),
            Value::Null,
            json!([1, 2]),
        );
    }
    b.silent_for(300).await;
    // A connection that does not exist is written to by nobody.
    let answer = srv.push(json!({"conn": "c-nobody", "data": 1})).await;
    assert_eq!(answer["delivered"], 0);
}

#[tokio::test]
async fn push_to_all_reaches_everyone() {
    let srv = TestServer::start().await;
    let (mut anon, _) = srv.connect(None).await;
    let (mut bound, _) = srv.connect(Some("u1")).await;
    for n in 1..=2u64 {
        let answer = srv.push(json!({"all": true, "data": {"news": n}})).await;
        assert_eq!(answer, json!({"ok": true, "delivered": 2, "seq": n}));
        for c in [&mut anon, &mut bound] {
            assert_push(&next_push(c).await, "all", json!(n), json!({ "news": n }));
        }
    }
}

#[tokio::test]
async fn push_to_uids_sums_deliveries_on_each_uids_stream() {
    let srv = TestServer::start().await;
    let (mut a1, _) = srv.connect(Some("u1")).await;
    let (mut a2, _) = srv.connect(Some("u1")).await;
    let (mut b, _) = srv.connect(Some("u2")).await;
    let (mut outsider, _) = srv.connect(Some("u4")).await;
    let answer = srv
        .push(json!({"uids": ["u1", "u2", "u3"], "data": "x"}))
        .await;
    assert_eq!(answer, json!({"ok": true, "delivered": 3, "seq": null}));
    for c in [&mut a1, &mut a2] {
        assert_push(&next_push(c).await, "u:u1", json!(1), json!("x"));
    }
    assert_push(&next_push(&mut b).await, "u:u2", json!(1), json!("x"));
    outsider.silent_for(300).await;
    // Each uid's stream was advanced on its own.
    let answer = srv.push(json!({"uid": "u2", "data": "y"})).await;
    assert_eq!(answer["seq"], 2);
}

#[tokio::test]
async fn unstored_push_has_no_seq_and_does_not_advance_the_stream() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    let first = srv.push(json!({"uid": "u1", "data": 1})).await;
    assert_eq!(first["seq"], 1);
    assert_push(&next_push(&mut c).await, "u:u1", json!(1), json!(1));

    let unstored = srv
        .push(json!({"uid": "u1", "data": 2, "store": false}))
        .await;
    assert_eq!(unstored, json!({"ok": true, "delivered": 1, "seq": null}));
    assert_push(&next_push(&mut c).await, "u:u1", Value::Null, json!(2));

    let next = srv.push(json!({"uid": "u1", "data": 3})).await;
    assert_eq!(next["seq"], 2);
    assert_push(&next_push(&mut c).await, "u:u1", json!(2), json!(3));

    // On a stream that has never been written, store:false does not start it either.
    let (mut g, _) = srv.connect(None).await;
    join(&mut g, "fresh").await;
    let unstored = srv
        .push(json!({"group": "fresh", "data": "a", "store": false}))
        .await;
    assert_eq!(unstored["seq"], Value::Null);
    assert_push(&next_push(&mut g).await, "g:fresh", Value::Null, json!("a"));
    let stored = srv.push(json!({"group": "fresh", "data": "b"})).await;
    assert_eq!(stored["seq"], 1);
    assert_push(&next_push(&mut g).await, "g:fresh", json!(1), json!("b"));
}

#[tokio::test]
async fn push_data_passes_through_byte_exact() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    let data = r#"{"n":12345678901234567890,"f":1.0,"big":123456789012345678901234567890,"e":1e2,"s":"\u00e9"}"#;
    let res = srv
        .http
        .post(srv.url("/api/push"))
        .bearer_auth(KEY)
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"uid":"u1","data":{data}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
    let text = loop {
        let msg = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("the push arrives in time")
            .expect("the connection is open")
            .expect("a frame");
        if let Message::Text(t) = msg {
            break t;
        }
    };
    assert!(text.contains("12345678901234567890"), "{text}");
    assert!(text.contains("1.0"), "{text}");
    assert!(text.contains(&format!(r#""data":{data}"#)), "{text}");
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_push_needs_exactly_one_target() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    join(&mut c, "g1").await;
    let bodies = [
        json!({"data": 1}),
        json!({"uid": "u1", "group": "g1", "data": 1}),
        json!({"uid": "u1", "all": true, "data": 1}),
        json!({"uid": "u1", "uids": ["u1"], "data": 1}),
    ];
    for body in bodies {
        let (status, answer) = srv.api("POST", "/api/push", Some(body.clone())).await;
        assert_api_error(status, &answer, 400, "bad_request");
        assert_eq!(answer["ok"], false, "{body}");
    }
    // Nothing was delivered by the refused pushes.
    c.silent_for(300).await;
}

#[tokio::test]
async fn invalid_uid_or_group_names_are_refused() {
    let srv = TestServer::start().await;
    let long = "x".repeat(65);
    let bodies = [
        json!({"uid": "bad uid", "data": 1}),
        json!({"uid": "", "data": 1}),
        json!({"uid": long, "data": 1}),
        json!({"uid": "a/b", "data": 1}),
        json!({"uids": ["u1", "bad!uid"], "data": 1}),
        json!({"group": "bad group", "data": 1}),
        json!({"group": "", "data": 1}),
        json!({"group": "a/b", "data": 1}),
        json!({"group": long, "data": 1}),
    ];
    for body in bodies {
        let (status, answer) = srv.api("POST", "/api/push", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_api_error(status, &answer, 400, "bad_request");
    }
    // The longest valid names and every allowed character are fine.
    let ok = "x".repeat(64);
    srv.push(json!({"uid": ok, "data": 1})).await;
    srv.push(json!({"uid": "oA_9.-z", "data": 1})).await;
    srv.push(json!({"group": "room:1_a.b-c", "data": 1})).await;
}

#[tokio::test]
async fn unknown_fields_are_refused() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(None).await;
    join(&mut c, "room1").await;
    let (status, answer) = srv
        .api(
            "POST",
            "/api/push",
            Some(json!({"all": true, "gruop": "room1", "data": 1})),
        )
        .await;
    assert_api_error(status, &answer, 400, "bad_request");
    c.silent_for(300).await;
}

#[tokio::test]
async fn missing_data_is_refused() {
    let srv = TestServer::start().await;
    let (status, answer) = srv
        .api("POST", "/api/push", Some(json!({"uid": "u1"})))
        .await;
    assert_api_error(status, &answer, 400, "bad_request");
}

#[tokio::test]
async fn all_false_is_refused() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(None).await;
    let (status, answer) = srv
        .api("POST", "/api/push", Some(json!({"all": false, "data": 1})))
        .await;
    assert_api_error(status, &answer, 400, "bad_request");
    c.silent_for(300).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused() {
    let srv = TestServer::start().await;
    for body in ["{not json", "", "[1,2]", "\"uid\""] {
        let res = srv
            .http
            .post(srv.url("/api/push"))
            .bearer_auth(KEY)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let answer: Value = res.json().await.expect("a JSON error");
        assert_api_error(status, &answer, 400, "bad_request");
    }
}

// ---------------------------------------------------------------------------------------
// Keys and public endpoints
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn api_routes_need_a_valid_key() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    let push = json!({"uid": "u1", "data": 1});
    for key in [None, Some("wrong-key"), Some(TOKEN), Some("")] {
        let (status, answer) = srv
            .api_as(key, "POST", "/api/push", Some(push.clone()))
            .await;
        assert_api_error(status, &answer, 401, "unauthorized");
    }
    // The refused pushes were not delivered.
    c.silent_for(300).await;

    // Every other /api route is protected too.
    let routes: [(&str, &str, Option<Value>); 8] = [
        ("POST", "/api/push/batch", Some(json!({"pushes": [push]}))),
        ("GET", "/api/online/u1", None),
        ("POST", "/api/groups/g1/members", Some(json!({"uid": "u1"}))),
        ("DELETE", "/api/groups/g1/members/u1", None),
        ("GET", "/api/groups/g1", None),
        ("POST", "/api/kick", Some(json!({"uid": "u1"}))),
        ("GET", "/api/stats", None),
        ("POST", "/api/push", Some(json!({"all": true, "data": 1}))),
    ];
    for (method, path, body) in routes {
        let (status, answer) = srv.api_as(None, method, path, body.clone()).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        assert_api_error(status, &answer, 401, "unauthorized");
        let (status, answer) = srv.api_as(Some(TOKEN), method, path, body).await;
        assert_eq!(
            status, 401,
            "{method} {path} with the client token: {answer}"
        );
    }
    // Nothing of the above happened: u1 is still connected and received nothing.
    c.silent_for(200).await;
    let (_, online) = srv.api("GET", "/api/online/u1", None).await;
    assert_eq!(online["conns"], 1);
    // Without the `Bearer` scheme the key is not accepted either.
    let res = srv
        .http
        .get(srv.url("/api/stats"))
        .header("Authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    // And with it, it is.
    let (status, _) = srv.api("GET", "/api/stats", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn time_needs_no_key_and_is_close_to_now() {
    let srv = TestServer::start().await;
    let (status, body) = srv.api_as(None, "GET", "/api/time", None).await;
    assert_eq!(status, 200, "{body}");
    let time = body["time"].as_i64().expect("time is an integer");
    assert!((time - now_secs()).abs() <= 2, "{body}");
}

#[tokio::test]
async fn health_and_readiness_need_no_key() {
    let srv = TestServer::start().await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = srv.api_as(None, "GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn metrics_use_the_spec_names_and_count() {
    let srv = TestServer::start().await;
    let before = srv.metrics_text().await;
    for name in [
        "minipush_connections",
        "minipush_handshakes_total{result=\"ok\"}",
        "minipush_pushes_total",
        "minipush_deliveries_total",
        "minipush_dropped_total",
    ] {
        assert!(before.contains(name), "{name} missing from:\n{before}");
    }
    assert_eq!(metric(&before, "minipush_connections"), 0.0);

    let (mut c, _) = srv.connect(Some("u1")).await;
    srv.push(json!({"uid": "u1", "data": 1})).await;
    next_push(&mut c).await;

    let after = srv.metrics_text().await;
    assert_eq!(metric(&after, "minipush_connections"), 1.0, "{after}");
    let ok = "minipush_handshakes_total{result=\"ok\"}";
    assert_eq!(metric(&after, ok), metric(&before, ok) + 1.0, "{after}");
    let pushes = "minipush_pushes_total";
    assert_eq!(metric(&after, pushes), metric(&before, pushes) + 1.0);
    let deliveries = "minipush_deliveries_total";
    assert_eq!(
        metric(&after, deliveries),
        metric(&before, deliveries) + 1.0
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let srv = TestServer::start_with(|c| c.api.max_body_bytes = 200).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    let big = "x".repeat(500);
    let (status, answer) = srv
        .api("POST", "/api/push", Some(json!({"uid": "u1", "data": big})))
        .await;
    assert_api_error(status, &answer, 413, "too_large");
    let (status, answer) = srv
        .api(
            "POST",
            "/api/push/batch",
            Some(json!({"pushes": [{"uid": "u1", "data": big}]})),
        )
        .await;
    assert_api_error(status, &answer, 413, "too_large");
    c.silent_for(300).await;
    // A body under the limit is fine.
    srv.push(json!({"uid": "u1", "data": "small"})).await;
    assert_eq!(next_push(&mut c).await["data"], "small");
}

// ---------------------------------------------------------------------------------------
// Batch, online, groups, kick, stats, routes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn batch_runs_each_push_on_its_own() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    let (status, answer) = srv
        .api(
            "POST",
            "/api/push/batch",
            Some(json!({"pushes": [
                {"uid": "u1", "data": "first"},
                {"uid": "u1", "gruop": "x", "data": "bad"},
                {"uid": "u1", "data": "third"},
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    let results = answer["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 3, "{answer}");
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["delivered"], 1);
    assert_eq!(results[0]["seq"], 1);
    assert_eq!(results[1]["ok"], false);
    assert_eq!(results[1]["error"], "bad_request");
    assert_eq!(results[2]["ok"], true);
    assert_eq!(results[2]["seq"], 2);
    assert_push(&next_push(&mut c).await, "u:u1", json!(1), json!("first"));
    assert_push(&next_push(&mut c).await, "u:u1", json!(2), json!("third"));
    c.silent_for(300).await;
}

#[tokio::test]
async fn online_counts_live_connections() {
    let srv = TestServer::start().await;
    let (status, body) = srv.api("GET", "/api/online/u1", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"ok": true, "uid": "u1", "online": false, "conns": 0})
    );

    let (a, _) = srv.connect(Some("u1")).await;
    let (b, _) = srv.connect(Some("u1")).await;
    let (_other, _) = srv.connect(Some("u2")).await;
    let (_, body) = srv.api("GET", "/api/online/u1", None).await;
    assert_eq!(body["uid"], "u1");
    assert_eq!(body["online"], true);
    assert_eq!(body["conns"], 2);

    a.close().await;
    b.close().await;
    assert!(
        eventually(|| async {
            let (_, body) = srv.api("GET", "/api/online/u1", None).await;
            body["online"] == false && body["conns"] == 0
        })
        .await,
        "u1 still online after its connections closed"
    );
    let (status, answer) = srv.api("GET", "/api/online/bad!uid", None).await;
    assert_api_error(status, &answer, 400, "bad_request");
}

#[tokio::test]
async fn a_uid_member_covers_its_live_and_future_connections() {
    let srv = TestServer::start().await;
    let (mut live, _) = srv.connect(Some("u1")).await;
    let (mut outsider, _) = srv.connect(Some("u2")).await;
    let (status, answer) = srv
        .api(
            "POST",
            "/api/groups/vip/members",
            Some(json!({"uid": "u1"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true);
    let (mut later, _) = srv.connect(Some("u1")).await;

    let answer = srv.push(json!({"group": "vip", "data": "hello"})).await;
    assert_eq!(answer["delivered"], 2, "{answer}");
    for c in [&mut live, &mut later] {
        assert_push(&next_push(c).await, "g:vip", json!(1), json!("hello"));
    }
    outsider.silent_for(300).await;
}

#[tokio::test]
async fn a_conn_member_is_that_connection_only() {
    let srv = TestServer::start().await;
    let (mut a, wa) = srv.connect(Some("u1")).await;
    let (mut b, _) = srv.connect(Some("u1")).await;
    let (status, answer) = srv
        .api(
            "POST",
            "/api/groups/g1/members",
            Some(json!({ "conn": conn_id(&wa) })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let answer = srv.push(json!({"group": "g1", "data": 7})).await;
    assert_eq!(answer["delivered"], 1);
    assert_push(&next_push(&mut a).await, "g:g1", json!(1), json!(7));
    b.silent_for(300).await;

    let (status, answer) = srv
        .api(
            "POST",
            "/api/groups/g1/members",
            Some(json!({"conn": "c-does-not-exist"})),
        )
        .await;
    assert_api_error(status, &answer, 404, "not_found");
    // Neither or both of uid and conn, or a bad group name, is a bad request.
    for (path, body) in [
        ("/api/groups/g1/members", json!({})),
        (
            "/api/groups/g1/members",
            json!({"uid": "u1", "conn": conn_id(&wa)}),
        ),
        ("/api/groups/g1/members", json!({"uid": "bad uid"})),
        ("/api/groups/bad!group/members", json!({"uid": "u1"})),
    ] {
        let (status, answer) = srv.api("POST", path, Some(body)).await;
        assert_api_error(status, &answer, 400, "bad_request");
    }
}

#[tokio::test]
async fn group_info_counts_conns_and_lists_sorted_uids() {
    let srv = TestServer::start().await;
    let (status, empty) = srv.api("GET", "/api/groups/room", None).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["group"], "room");
    assert_eq!(empty["conns"], 0);
    assert_eq!(empty["uids"], json!([]));

    // zed: an API member with no connection; bob: joined by himself; al: by the API,
    // online; plus an anonymous connection that joined.
    srv.api(
        "POST",
        "/api/groups/room/members",
        Some(json!({"uid": "zed"})),
    )
    .await;
    let (mut bob, _) = srv.connect(Some("bob")).await;
    join(&mut bob, "room").await;
    let (_al, _) = srv.connect(Some("al")).await;
    let (status, _) = srv
        .api(
            "POST",
            "/api/groups/room/members",
            Some(json!({"uid": "al"})),
        )
        .await;
    assert_eq!(status, 200);
    let (mut anon, _) = srv.connect(None).await;
    join(&mut anon, "room").await;

    let (status, info) = srv.api("GET", "/api/groups/room", None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["group"], "room");
    assert_eq!(info["conns"], 3, "{info}");
    assert_eq!(info["uids"], json!(["al", "bob", "zed"]), "{info}");
}

#[tokio::test]
async fn removing_a_uid_member_stops_group_pushes() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    srv.api(
        "POST",
        "/api/groups/vip/members",
        Some(json!({"uid": "u1"})),
    )
    .await;
    srv.push(json!({"group": "vip", "data": "in"})).await;
    assert_eq!(next_push(&mut c).await["data"], "in");

    let (status, answer) = srv.api("DELETE", "/api/groups/vip/members/u1", None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true);

    let answer = srv.push(json!({"group": "vip", "data": "out"})).await;
    assert_eq!(answer["delivered"], 0, "{answer}");
    c.silent_for(300).await;
    // Nor do its later connections belong.
    let (mut later, _) = srv.connect(Some("u1")).await;
    let answer = srv.push(json!({"group": "vip", "data": "out"})).await;
    assert_eq!(answer["delivered"], 0, "{answer}");
    later.silent_for(300).await;
    let (_, info) = srv.api("GET", "/api/groups/vip", None).await;
    assert_eq!(info["conns"], 0, "{info}");
    assert_eq!(info["uids"], json!([]), "{info}");
}

#[tokio::test]
async fn kick_by_uid_closes_all_its_connections_with_4010() {
    let srv = TestServer::start().await;
    let (mut a, _) = srv.connect(Some("u1")).await;
    let (mut b, _) = srv.connect(Some("u1")).await;
    let (mut other, _) = srv.connect(Some("u2")).await;
    let (status, answer) = srv
        .api(
            "POST",
            "/api/kick",
            Some(json!({"uid": "u1", "reason": "bye"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"ok": true, "kicked": 2}));
    assert_eq!(a.closed().await, (4010, "bye".to_string()));
    assert_eq!(b.closed().await, (4010, "bye".to_string()));
    // Others are untouched.
    let r = other.request("e", json!({"type": "echo", "data": 1})).await;
    assert_eq!(r["data"], json!({"echo": 1}));
    assert!(
        eventually(|| async { srv.api("GET", "/api/online/u1", None).await.1["conns"] == 0 }).await
    );
    // Kicking a uid with no connection kicks nobody.
    let (_, answer) = srv
        .api("POST", "/api/kick", Some(json!({"uid": "u9"})))
        .await;
    assert_eq!(answer["kicked"], 0, "{answer}");
}

#[tokio::test]
async fn kick_by_conn_closes_just_that_connection() {
    let srv = TestServer::start().await;
    let (mut a, wa) = srv.connect(Some("u1")).await;
    let (mut b, _) = srv.connect(Some("u1")).await;
    let (status, answer) = srv
        .api("POST", "/api/kick", Some(json!({ "conn": conn_id(&wa) })))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["kicked"], 1, "{answer}");
    assert_eq!(a.closed().await.0, 4010);
    assert!(
        eventually(|| async { srv.api("GET", "/api/online/u1", None).await.1["conns"] == 1 }).await
    );
    srv.push(json!({"uid": "u1", "data": "still here"})).await;
    assert_eq!(next_push(&mut b).await["data"], "still here");

    let (status, answer) = srv.api("POST", "/api/kick", Some(json!({}))).await;
    assert_api_error(status, &answer, 400, "bad_request");
}

#[tokio::test]
async fn stats_count_connections_per_node_and_in_total() {
    let srv = TestServer::start().await;
    let (_anon, welcome) = srv.connect(None).await;
    let (mut a, _) = srv.connect(Some("u1")).await;
    let (_b, _) = srv.connect(Some("u1")).await;
    let (_c, _) = srv.connect(Some("u2")).await;
    join(&mut a, "room1").await;
    srv.push(json!({"uid": "u1", "data": 1})).await;

    let (status, stats) = srv.api("GET", "/api/stats", None).await;
    assert_eq!(status, 200, "{stats}");
    let nodes = stats["nodes"].as_array().expect("nodes is an array");
    assert_eq!(nodes.len(), 1, "{stats}");
    let node = &nodes[0];
    assert_eq!(node["node"], welcome["node"], "{stats}");
    for key in [
        "connections",
        "uids",
        "groups",
        "frames_in",
        "frames_out",
        "pushes",
        "deliveries",
        "drops",
    ] {
        assert!(node[key].is_u64(), "{key} in {stats}");
        assert!(stats["total"][key].is_u64(), "total {key} in {stats}");
    }
    assert_eq!(node["connections"], 4, "{stats}");
    assert_eq!(node["uids"], 2, "{stats}");
    assert_eq!(node["groups"], 1, "{stats}");
    assert!(node["pushes"].as_u64().unwrap() >= 1, "{stats}");
    assert!(node["deliveries"].as_u64().unwrap() >= 2, "{stats}");
    assert!(node["frames_in"].as_u64().unwrap() >= 1, "{stats}");
    assert!(node["frames_out"].as_u64().unwrap() >= 4, "{stats}");
    assert_eq!(stats["total"]["connections"], 4, "{stats}");
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let srv = TestServer::start().await;
    for path in ["/api/nope", "/nope", "/api/push/nope"] {
        let (status, body) = srv.api("GET", path, None).await;
        assert_api_error(status, &body, 404, "not_found");
        let (status, body) = srv.api_as(None, "GET", path, None).await;
        assert_api_error(status, &body, 404, "not_found");
    }
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::start_with(|c| c.api.max_body_bytes = 200).await;
    let body = json!({"uid": "u1", "data": "x".repeat(500)}).to_string();
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /api/push HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        srv.addr
    );
    let mut request = head.into_bytes();
    for chunk in body.as_bytes().chunks(100) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer (and close) before reading everything: tolerate that.
    let _ = tcp.write_all(&request).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(WAIT, async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"too_large\""), "{text}");
}

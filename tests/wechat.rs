//! SPEC section 4, WeChat: `POST /api/login` (a `wx.login` code exchanged at a fake
//! `sns/jscode2session` for a ticket bound to the openid, WeChat's errors mapped to
//! statuses, the code validated, a per-address rate limit, 404 when WeChat is not
//! configured) and the offline fallback by subscribe message (the access token from a fake
//! `cgi-bin/stable_token`: fetched once for many pushes, refreshed after expiry and after
//! 40001; the message sent only when the uid has no live connection).

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use minipush::config::Secret;
use serde_json::{json, Value};

const APPID: &str = "wx-test-appid";
const APP_SECRET: &str = "app-secret-0123456789";
const SESSION_KEY: &str = "SESSIONKEYtUu0w+zN8w==";
const TOKEN_PATH: &str = "/cgi-bin/stable_token";
const SEND_PATH: &str = "/cgi-bin/message/subscribe/send";

/// How the fake WeChat behaves where a test needs it to differ.
#[derive(Clone)]
struct Behaviour {
    expires_in: u64,
    token_delay: Duration,
    /// `stable_token` answers this errcode instead of a token.
    token_errcode: Option<i64>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            expires_in: 7200,
            token_delay: Duration::ZERO,
            token_errcode: None,
        }
    }
}

fn errcode(code: i64, msg: &str) -> Reply {
    Reply::json(json!({"errcode": code, "errmsg": msg}))
}

/// A fake WeChat API as documented. `jscode2session` answers by `js_code`: `good`, `bad`
/// (40029), `used` (40163), `busy` (45011), `risky` (40226), `other` (40013), `slow`
/// (2 s late), `badopenid`. `stable_token` hands out `tok-1`, `tok-2`, … The subscribe
/// send refuses `tok-1` and template `tpl-bad-token` with 40001 when `reject_tok1`, and
/// `tpl-unsubscribed` with 43101.
async fn fake_wechat(b: Behaviour, reject_tok1: bool) -> FakeHttp {
    let tokens = Arc::new(AtomicUsize::new(0));
    FakeHttp::start(move |req| match req.path.as_str() {
        "/sns/jscode2session" => {
            if req.query.get("secret").map(String::as_str) != Some(APP_SECRET)
                || req.query.get("appid").map(String::as_str) != Some(APPID)
                || req.query.get("grant_type").map(String::as_str) != Some("authorization_code")
            {
                return errcode(40013, "invalid appid");
            }
            let session = |openid: &str| {
                Reply::json(json!({"openid": openid, "session_key": SESSION_KEY, "unionid": "un1"}))
            };
            match req.query.get("js_code").map(String::as_str) {
                Some("good") => session("oUser_1-x.y"),
                Some("bad") => errcode(40029, "invalid code"),
                Some("used") => errcode(40163, "code been used"),
                Some("busy") => errcode(45011, "api minute-quota reach limit"),
                Some("risky") => errcode(40226, "high risk user"),
                Some("slow") => session("oSlow").after(Duration::from_secs(2)),
                Some("badopenid") => session("not a uid!"),
                _ => errcode(40013, "invalid appid"),
            }
        }
        TOKEN_PATH if b.token_errcode.is_some() => {
            errcode(b.token_errcode.unwrap_or_default(), "invalid appsecret")
        }
        TOKEN_PATH => {
            let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::json(json!({"access_token": format!("tok-{n}"), "expires_in": b.expires_in}))
                .after(b.token_delay)
        }
        SEND_PATH => {
            let token = req.query.get("access_token").cloned().unwrap_or_default();
            let template = req.json["template_id"].as_str().unwrap_or_default();
            if !token.starts_with("tok-") {
                errcode(40001, "invalid credential")
            } else if reject_tok1 && (token == "tok-1" || template == "tpl-bad-token") {
                errcode(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                )
            } else if template == "tpl-unsubscribed" {
                errcode(43101, "user refuse to accept the msg")
            } else {
                errcode(0, "ok")
            }
        }
        _ => Reply::raw(404, "{}"),
    })
    .await
}

/// A server whose `[wechat]` points at `api_base`, with `edit` applied after.
async fn server_with_wechat(
    api_base: &str,
    edit: impl FnOnce(&mut minipush::Config),
) -> TestServer {
    let api_base = api_base.to_string();
    TestServer::start_with(move |c| {
        c.wechat.appid = Some(APPID.into());
        c.wechat.secret = Some(Secret::new(APP_SECRET));
        c.wechat.api_base = api_base;
        c.wechat.timeout_ms = 500;
        edit(c);
    })
    .await
}

/// A fake WeChat and a server using it.
async fn wechat_and_server(b: Behaviour, reject_tok1: bool) -> (FakeHttp, TestServer) {
    let wx = fake_wechat(b, reject_tok1).await;
    let srv = server_with_wechat(&wx.base, |_| {}).await;
    (wx, srv)
}

/// `POST /api/push` to `uid` with a subscribe fallback of `template`; the answer.
async fn push_with_fallback(srv: &TestServer, uid: &str, template: &str) -> Value {
    srv.push(json!({"uid": uid, "data": 1, "subscribe": subscribe(template)}))
        .await
}

async fn login(srv: &TestServer, body: Value) -> (u16, Value) {
    srv.api_as(None, "POST", "/api/login", Some(body)).await
}

fn subscribe(template: &str) -> Value {
    json!({
        "template_id": template,
        "page": "pages/order/index?id=42",
        "data": {"thing1": {"value": "Your order shipped"}},
        "miniprogram_state": "trial",
    })
}

// ---------------------------------------------------------------------------------------
// /api/login
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn login_returns_a_ticket_that_opens_a_bound_connection() {
    let (wx, srv) = wechat_and_server(Behaviour::default(), false).await;
    let (status, ticket) = login(&srv, json!({"code": "good"})).await;
    assert_eq!(status, 200, "{ticket}");
    assert_eq!(ticket["ok"], true);
    assert_eq!(ticket["uid"], "oUser_1-x.y");
    let shown = ticket.to_string();
    assert!(
        !shown.contains(SESSION_KEY) && !shown.contains("session_key") && !shown.contains("un1"),
        "{shown}"
    );

    let seen = wx.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/sns/jscode2session")
    );
    assert_eq!(seen.query["js_code"], "good");

    // The ticket opens a WebSocket bound to the openid.
    let (sig, ts, uid) = (
        ticket["sig"].as_str().unwrap(),
        ticket["ts"].as_i64().unwrap(),
        ticket["uid"].as_str().unwrap(),
    );
    let mut c = srv.open(Some(&format!("{sig}, {ts}, {uid}"))).await;
    let welcome = c.next().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["uid"], "oUser_1-x.y");
    assert_eq!(
        srv.metric("minipush_wechat_login_total{result=\"ok\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn wechat_errors_map_to_statuses_with_their_errcode() {
    let (_wx, srv) = wechat_and_server(Behaviour::default(), false).await;
    for (code, status, error, errcode) in [
        ("bad", 401, "wechat_invalid_code", 40029),
        ("used", 401, "wechat_invalid_code", 40163),
        ("busy", 429, "wechat_rate_limited", 45011),
        ("risky", 403, "wechat_risky_user", 40226),
        ("other", 502, "wechat_error", 40013),
    ] {
        let (got, body) = login(&srv, json!({ "code": code })).await;
        assert_eq!(got, status, "{code}: {body}");
        assert_eq!(body["ok"], false, "{body}");
        assert_eq!(body["error"], error, "{code}: {body}");
        assert_eq!(body["errcode"], errcode, "{code}: {body}");
        assert!(body["message"].is_string(), "{body}");
    }
    let invalid = "minipush_wechat_login_total{result=\"wechat_invalid_code\"}";
    assert_eq!(srv.metric(invalid).await, 2.0);
}

#[tokio::test]
async fn unreachable_slow_or_odd_wechat_is_502() {
    let closed = closed_addr();
    let down = server_with_wechat(&format!("http://{closed}"), |_| {}).await;
    let (status, body) = login(&down, json!({"code": "good"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "wechat_unavailable", "{body}");
    assert_eq!(body["errcode"], Value::Null, "{body}");

    let (_wx, srv) = wechat_and_server(Behaviour::default(), false).await;
    let started = std::time::Instant::now();
    let (status, body) = login(&srv, json!({"code": "slow"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "wechat_unavailable", "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // An openid that cannot be a uid is WeChat's fault, not the client's.
    let (status, body) = login(&srv, json!({"code": "badopenid"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "wechat_bad_answer", "{body}");
}

#[tokio::test]
async fn login_validates_the_code_before_calling_wechat() {
    let (wx, srv) = wechat_and_server(Behaviour::default(), false).await;
    for body in [
        json!({}),
        json!({"code": ""}),
        json!({"code": 42}),
        json!({"code": "a b"}),
        json!({"code": "x".repeat(129)}),
        json!({"code": "good", "extra": 1}),
    ] {
        let (status, answer) = login(&srv, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{answer}");
    }
    let (status, _) = srv
        .api_as(None, "POST", "/api/login", Some(json!("not an object")))
        .await;
    assert_eq!(status, 400);
    assert_eq!(wx.pending(), 0, "WeChat was called for an invalid code");
}

#[tokio::test]
async fn login_is_a_plain_404_without_wechat() {
    let srv = TestServer::start().await;
    let (status, body) = login(&srv, json!({"code": "good"})).await;
    let (_, unknown) = srv.api_as(None, "POST", "/api/nope", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body, unknown);
}

#[tokio::test]
async fn login_is_rate_limited_per_client_address() {
    let wx = fake_wechat(Behaviour::default(), false).await;
    let srv = server_with_wechat(&wx.base, |c| c.wechat.login_per_min = 3).await;
    for _ in 0..3 {
        let (status, body) = login(&srv, json!({"code": "good"})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = login(&srv, json!({"code": "good"})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(wx.calls("/sns/jscode2session").len(), 3);
}

// ---------------------------------------------------------------------------------------
// The subscribe-message fallback
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_offline_uid_gets_a_subscribe_message() {
    let (wx, srv) = wechat_and_server(Behaviour::default(), false).await;
    let answer = srv
        .push(json!({"uid": "u9", "data": {"n": 1}, "subscribe": subscribe("tpl-ok")}))
        .await;
    assert_eq!(
        answer,
        json!({"ok": true, "delivered": 0, "seq": 1, "fallback": "sent"})
    );

    let token = wx.next().await;
    assert_eq!(
        (token.method.as_str(), token.path.as_str()),
        ("POST", TOKEN_PATH)
    );
    assert_eq!(
        token.json,
        json!({"grant_type": "client_credential", "appid": APPID, "secret": APP_SECRET, "force_refresh": false})
    );
    let send = wx.next().await;
    assert_eq!(
        (send.method.as_str(), send.path.as_str()),
        ("POST", SEND_PATH)
    );
    assert_eq!(send.query["access_token"], "tok-1");
    let mut want = subscribe("tpl-ok");
    want["touser"] = json!("u9");
    assert_eq!(send.json, want);

    // Batch items carry `subscribe` too.
    let (status, batch) = srv
        .api(
            "POST",
            "/api/push/batch",
            Some(json!({"pushes": [
                {"uid": "u8", "data": 1, "subscribe": subscribe("tpl-ok")},
                {"uid": "u8", "data": 2},
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["fallback"], "sent", "{batch}");
    assert!(batch["results"][1].get("fallback").is_none(), "{batch}");
    assert_eq!(
        srv.metric("minipush_wechat_fallback_total{result=\"sent\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn an_online_uid_needs_no_fallback() {
    let (wx, srv) = wechat_and_server(Behaviour::default(), false).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    let answer = srv
        .push(json!({"uid": "u1", "data": "hi", "subscribe": subscribe("tpl-ok")}))
        .await;
    assert_eq!(
        answer,
        json!({"ok": true, "delivered": 1, "seq": 1, "fallback": null})
    );
    assert_eq!(c.next().await["data"], "hi");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(wx.pending(), 0, "WeChat was called for an online uid");
}

#[tokio::test]
async fn failures_are_reported_not_retried() {
    let (wx, srv) = wechat_and_server(Behaviour::default(), false).await;
    let answer = push_with_fallback(&srv, "u9", "tpl-unsubscribed").await;
    assert_eq!(answer["fallback"], "failed:43101", "{answer}");
    assert_eq!(wx.calls(SEND_PATH).len(), 1);
    let failed = "minipush_wechat_fallback_failures_total{reason=\"43101\"}";
    assert_eq!(srv.metric(failed).await, 1.0);

    let closed = closed_addr();
    let down = server_with_wechat(&format!("http://{closed}"), |_| {}).await;
    let answer = push_with_fallback(&down, "u9", "tpl-ok").await;
    assert_eq!(answer["fallback"], "failed:network", "{answer}");
    assert_eq!(answer["seq"], 1, "the push is still stored: {answer}");
}

#[tokio::test]
async fn subscribe_is_refused_where_it_cannot_apply() {
    let (wx, srv) = wechat_and_server(Behaviour::default(), false).await;
    let sub = subscribe("tpl-ok");
    let mut bad_state = sub.clone();
    bad_state["miniprogram_state"] = json!("prod");
    let mut extra = sub.clone();
    extra["templat_id"] = json!("x");
    for body in [
        json!({"group": "g", "data": 1, "subscribe": sub}),
        json!({"uids": ["u1"], "data": 1, "subscribe": sub}),
        json!({"all": true, "data": 1, "subscribe": sub}),
        json!({"uid": "u1", "data": 1, "subscribe": bad_state}),
        json!({"uid": "u1", "data": 1, "subscribe": extra}),
        json!({"uid": "u1", "data": 1, "subscribe": {"template_id": "t", "data": [1]}}),
    ] {
        let (status, answer) = srv.api("POST", "/api/push", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{answer}");
    }
    let plain = TestServer::start().await;
    let (status, answer) = plain
        .api(
            "POST",
            "/api/push",
            Some(json!({"uid": "u1", "data": 1, "subscribe": sub})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("wechat"),
        "{answer}"
    );
    assert_eq!(wx.pending(), 0);
}

#[tokio::test]
async fn one_token_fetch_serves_100_concurrent_fallbacks() {
    let slow_token = Behaviour {
        token_delay: Duration::from_millis(300),
        ..Behaviour::default()
    };
    let (wx, srv) = wechat_and_server(slow_token, false).await;
    let pushes = (0..100).map(|i| {
        let body = json!({"uid": format!("u{i}"), "data": i, "subscribe": subscribe("tpl-ok")});
        srv.api("POST", "/api/push", Some(body))
    });
    for (status, answer) in futures_util::future::join_all(pushes).await {
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["fallback"], "sent", "{answer}");
    }
    assert_eq!(wx.calls(TOKEN_PATH).len(), 1);
    let sends = wx.calls(SEND_PATH);
    assert_eq!(sends.len(), 100);
    assert!(sends.iter().all(|s| s.query["access_token"] == "tok-1"));
    assert_eq!(
        srv.metric("minipush_wechat_token_refresh_total{result=\"ok\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_token_is_refreshed_when_it_expires() {
    let short = Behaviour {
        expires_in: 1,
        ..Behaviour::default()
    };
    let (wx, srv) = wechat_and_server(short, false).await;
    let body = json!({"uid": "u9", "data": 1, "subscribe": subscribe("tpl-ok")});
    assert_eq!(srv.push(body.clone()).await["fallback"], "sent");
    assert_eq!(srv.push(body.clone()).await["fallback"], "sent");
    assert_eq!(
        wx.calls(TOKEN_PATH).len(),
        1,
        "the token is reused while fresh"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(srv.push(body).await["fallback"], "sent");
    assert_eq!(wx.calls(TOKEN_PATH).len(), 2);
    let tokens: Vec<String> = wx
        .calls(SEND_PATH)
        .iter()
        .map(|s| s.query["access_token"].clone())
        .collect();
    assert_eq!(tokens, ["tok-1", "tok-1", "tok-2"]);
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_and_the_send_retried_once() {
    let (wx, srv) = wechat_and_server(Behaviour::default(), true).await;
    let answer = push_with_fallback(&srv, "u9", "tpl-ok").await;
    assert_eq!(answer["fallback"], "sent", "{answer}");
    let fetches = wx.calls(TOKEN_PATH);
    assert_eq!(fetches.len(), 2);
    assert_eq!(
        fetches[1].json["force_refresh"], true,
        "a rejected token is force-refreshed"
    );
    let sends: Vec<String> = wx
        .calls(SEND_PATH)
        .iter()
        .map(|s| s.query["access_token"].clone())
        .collect();
    assert_eq!(sends, ["tok-1", "tok-2"]);

    // Rejected again: one retry only, and no second forced refresh within 30 s.
    let answer = push_with_fallback(&srv, "u9", "tpl-bad-token").await;
    assert_eq!(answer["fallback"], "failed:40001", "{answer}");
    assert_eq!(wx.calls(SEND_PATH).len(), 4);
    let fetches = wx.calls(TOKEN_PATH);
    assert_eq!(fetches.len(), 3);
    assert_eq!(fetches[2].json["force_refresh"], false);
}

#[tokio::test]
async fn a_failed_token_fetch_is_reported_and_held_briefly() {
    let bad_secret = Behaviour {
        token_errcode: Some(40125),
        ..Behaviour::default()
    };
    let (wx, srv) = wechat_and_server(bad_secret, false).await;
    for _ in 0..2 {
        let answer = push_with_fallback(&srv, "u9", "tpl-ok").await;
        assert_eq!(answer["fallback"], "failed:40125", "{answer}");
    }
    // The second push took the remembered failure instead of asking again.
    assert_eq!(wx.calls(TOKEN_PATH).len(), 1);
    assert!(wx.calls(SEND_PATH).is_empty());
    let failed = "minipush_wechat_token_refresh_total{result=\"failed\"}";
    assert_eq!(srv.metric(failed).await, 1.0);
}

//! Cluster mode on a real `redis-server`: several nodes, one gateway. Pushes through any
//! node reach every node's connections exactly once; presence and membership are
//! cluster-wide; a client resumes on another node; a killed node is counted out; a Redis
//! outage makes nodes unready and refuse pushes, and they recover when it returns.

mod common;

use std::time::Duration;

use common::{eventually, RedisServer, TestServer};
use serde_json::{json, Value};

async fn node(redis: &RedisServer, name: &str) -> TestServer {
    let url = redis.url();
    let name = name.to_string();
    TestServer::start_with(move |c| {
        c.broker.url = Some(minipush::config::Secret::new(url));
        c.server.node_id = Some(name);
    })
    .await
}

fn is_push(v: &Value) -> bool {
    v["type"] == "push"
}

#[tokio::test]
async fn pushes_through_any_node_reach_every_node_exactly_once() {
    let redis = RedisServer::start();
    let (a, b, c) = (
        node(&redis, "a").await,
        node(&redis, "b").await,
        node(&redis, "c").await,
    );
    let (mut on_a, wa) = a.connect(Some("u1")).await;
    let (mut on_b, wb) = b.connect(Some("u1")).await;
    let (mut on_c, wc) = c.connect(Some("u2")).await;
    assert_eq!(wa["epoch"], wb["epoch"]);
    assert_eq!(wb["epoch"], wc["epoch"]);
    assert_eq!(wb["node"], "b");
    for client in [&mut on_a, &mut on_b, &mut on_c] {
        let r = client
            .request("j", json!({"type":"join","group":"room"}))
            .await;
        assert_eq!(r["data"]["joined"], "room", "{r}");
    }

    let answer = c.push(json!({"uid":"u1","data":{"n":1}})).await;
    assert_eq!(
        (answer["delivered"].as_u64(), answer["seq"].as_u64()),
        (Some(2), Some(1))
    );
    for client in [&mut on_a, &mut on_b] {
        let p = client.next_where(is_push).await;
        assert_eq!(
            (p["stream"].as_str(), p["seq"].as_u64()),
            (Some("u:u1"), Some(1))
        );
        assert_eq!(p["data"], json!({"n":1}));
    }

    let answer = a.push(json!({"group":"room","data":"g"})).await;
    assert_eq!(answer["delivered"], 3, "{answer}");
    let answer = b.push(json!({"all":true,"data":"everyone"})).await;
    assert_eq!(answer["delivered"], 3, "{answer}");
    for client in [&mut on_a, &mut on_b, &mut on_c] {
        let g = client.next_where(is_push).await;
        assert_eq!(
            (g["stream"].as_str(), g["data"].as_str()),
            (Some("g:room"), Some("g"))
        );
        let all = client.next_where(is_push).await;
        assert_eq!(
            (all["stream"].as_str(), all["seq"].as_u64()),
            (Some("all"), Some(1))
        );
        client.silent_for(300).await;
    }

    // One connection, wherever it lives; and a kick through another node.
    let conn_c = wc["conn"].as_str().unwrap();
    let answer = a.push(json!({"conn":conn_c,"data":"just you"})).await;
    assert_eq!(answer["delivered"], 1);
    assert_eq!(on_c.next_where(is_push).await["data"], "just you");
    let (_, kicked) = a.api("POST", "/api/kick", Some(json!({"uid":"u2"}))).await;
    assert_eq!(kicked["kicked"], 1);
    assert_eq!(on_c.closed().await.0, 4010);
}

#[tokio::test]
async fn presence_membership_and_stats_are_cluster_wide() {
    let redis = RedisServer::start();
    let (a, b, c) = (
        node(&redis, "a").await,
        node(&redis, "b").await,
        node(&redis, "c").await,
    );
    let (mut on_a, _) = a.connect(Some("u1")).await;
    let (_on_b, _) = b.connect(Some("u1")).await;
    for n in [&a, &b, &c] {
        let (_, online) = n.api("GET", "/api/online/u1", None).await;
        assert_eq!(
            (online["online"].as_bool(), online["conns"].as_u64()),
            (Some(true), Some(2))
        );
    }

    // An API member's connections on any node join, now and later.
    let (status, _) = c
        .api("POST", "/api/groups/vip/members", Some(json!({"uid":"u1"})))
        .await;
    assert_eq!(status, 200);
    let (status, _) = b
        .api("POST", "/api/groups/vip/members", Some(json!({"uid":"u3"})))
        .await;
    assert_eq!(status, 200);
    let (mut later, _) = c.connect(Some("u3")).await;
    assert!(
        eventually(|| async { c.api("GET", "/api/groups/vip", None).await.1["conns"] == 3 }).await
    );
    let (_, info) = a.api("GET", "/api/groups/vip", None).await;
    assert_eq!(info["uids"], json!(["u1", "u3"]));
    b.push(json!({"group":"vip","data":"vip news"})).await;
    assert_eq!(on_a.next_where(is_push).await["data"], "vip news");
    assert_eq!(later.next_where(is_push).await["data"], "vip news");

    // Other nodes' figures are their last heartbeat's (every second).
    assert!(
        eventually(|| async {
            a.api("GET", "/api/stats", None).await.1["total"]["connections"] == 3
        })
        .await
    );
    let (_, stats) = a.api("GET", "/api/stats", None).await;
    let nodes: Vec<&str> = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 3, "{stats}");
    assert_eq!(nodes[0], "a");
    assert_eq!(stats["total"]["connections"], 3, "{stats}");

    let (status, _) = a.api("DELETE", "/api/groups/vip/members/u1", None).await;
    assert_eq!(status, 200);
    b.push(json!({"group":"vip","data":"u3 only"})).await;
    assert_eq!(later.next_where(is_push).await["data"], "u3 only");
    on_a.silent_for(300).await;
}

#[tokio::test]
async fn a_client_moved_to_another_node_resumes_with_nothing_lost() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let (mut client, welcome) = a.connect(Some("mover")).await;
    let epoch = welcome["epoch"].as_str().unwrap().to_string();
    a.push(json!({"uid":"mover","data":1})).await;
    assert_eq!(client.next_where(is_push).await["seq"], 1);
    client.close().await;

    for n in 2..=5 {
        b.push(json!({"uid":"mover","data":n})).await;
    }
    let (mut client, welcome) = b.connect(Some("mover")).await;
    assert_eq!(welcome["epoch"], epoch.as_str());
    client
        .send(json!({"type":"resume","streams":{"u:mover":1},"epoch":epoch,"id":"r"}))
        .await;
    let (mut seqs, mut reply) = (Vec::new(), Value::Null);
    while seqs.len() < 4 || reply.is_null() {
        let frame = client.next().await;
        match frame["type"].as_str() {
            Some("push") => seqs.push(frame["seq"].as_u64().unwrap()),
            _ => reply = frame,
        }
    }
    assert_eq!(seqs, [2, 3, 4, 5]);
    assert_eq!(
        reply["data"],
        json!({"resumed":4,"complete":true}),
        "{reply}"
    );
}

#[tokio::test]
async fn a_killed_node_is_counted_out_within_30_seconds() {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let mut doomed = common::spawn_binary(&[
        ("MINIPUSH_BROKER_URL", &redis.url()),
        ("MINIPUSH_SERVER_NODE_ID", "doomed"),
    ])
    .await;
    let url = format!("ws://{}/ws", doomed.addr);
    let ticket = common::ticket(&doomed.token, minipush::protocol::now_secs(), Some("gone"));
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", ticket.parse().unwrap());
    let (_ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert!(
        eventually(|| async { a.api("GET", "/api/online/gone", None).await.1["conns"] == 1 }).await
    );

    doomed.child.start_kill().unwrap();
    doomed.child.wait().await.unwrap();
    let killed = std::time::Instant::now();
    loop {
        let (_, online) = a.api("GET", "/api/online/gone", None).await;
        if online["conns"] == 0 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "still online: {online}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, stats) = a.api("GET", "/api/stats", None).await;
    assert_eq!(stats["nodes"].as_array().unwrap().len(), 1, "{stats}");
}

/// The texts a fake DingTalk robot received so far.
fn robot_texts(robot: &common::FakeHttp) -> Vec<String> {
    robot
        .calls("/robot")
        .iter()
        .map(|c| {
            c.json["markdown"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_redis_outage_is_reported_and_healed() {
    let mut redis = RedisServer::start();
    let robot = common::FakeHttp::start(|_| common::Reply::json(json!({"errcode": 0}))).await;
    let (url, webhook) = (redis.url(), robot.url("/robot?access_token=t"));
    let a = TestServer::start_with(move |c| {
        c.broker.url = Some(minipush::config::Secret::new(url));
        c.server.node_id = Some("a".into());
        c.alerts.dingtalk.webhook = Some(minipush::config::Secret::new(webhook));
        c.alerts.dingtalk.secret = Some(minipush::config::Secret::new("SECxyz"));
    })
    .await;
    let b = node(&redis, "b").await;
    let (mut client, _) = a.connect(Some("u1")).await;
    b.push(json!({"uid":"u1","data":"before"})).await;
    assert_eq!(client.next_where(is_push).await["data"], "before");

    redis.stop();
    let unready = std::time::Instant::now();
    assert!(eventually(|| async { a.api("GET", "/readyz", None).await.0 == 503 }).await);
    assert!(unready.elapsed() < Duration::from_secs(10));
    let (status, answer) = b
        .api(
            "POST",
            "/api/push",
            Some(json!({"uid":"u1","data":"lost?"})),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable")),
        "{answer}"
    );
    let ticket = common::ticket(common::TOKEN, minipush::protocol::now_secs(), Some("late"));
    let (code, reason) = a.open(Some(&ticket)).await.closed().await;
    assert_eq!(code, 4009, "{reason}");
    // Local connections are still served.
    client.send(json!({"type":"ping"})).await;
    client.next_where(|v| v["type"] == "pong").await;

    redis.restart();
    let back = std::time::Instant::now();
    for n in [&a, &b] {
        while n.api("GET", "/readyz", None).await.0 != 200 {
            assert!(
                back.elapsed() < Duration::from_secs(15),
                "not ready again in 15 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The operator heard about both.
    let alerted = |text: &'static str| {
        let robot = &robot;
        async move { robot_texts(robot).iter().any(|t| t.contains(text)) }
    };
    assert!(
        eventually(|| alerted("broker is unreachable")).await,
        "{:?}",
        robot_texts(&robot)
    );
    assert!(
        eventually(|| alerted("reachable again")).await,
        "{:?}",
        robot_texts(&robot)
    );

    let answer = b.push(json!({"uid":"u1","data":"after"})).await;
    assert_eq!(answer["seq"], 2, "{answer}");
    let p = client.next_where(is_push).await;
    assert_eq!(
        (p["data"].as_str(), p["seq"].as_u64()),
        (Some("after"), Some(2))
    );
}

#[tokio::test]
async fn a_password_in_the_url_is_used_and_never_shown() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let with = |password: &str| format!("redis://:{password}@127.0.0.1:{}/", redis.port);
    let mut config = common::base_config();
    config.broker.url = Some(minipush::config::Secret::new(with("wrong-pw")));
    let err = minipush::Server::start(config)
        .await
        .err()
        .expect("a wrong password stops start-up");
    let message = err.to_string();
    assert!(message.contains("broker.url"), "{message}");
    assert!(!message.contains("wrong-pw"), "{message}");

    let url = with("s3cret-pw");
    let a =
        TestServer::start_with(move |c| c.broker.url = Some(minipush::config::Secret::new(url)))
            .await;
    let (mut client, _) = a.connect(Some("u1")).await;
    assert_eq!(
        a.push(json!({"uid":"u1","data":"ok"})).await["delivered"],
        1
    );
    assert_eq!(client.next_where(is_push).await["data"], "ok");
}

#[tokio::test]
async fn rediss_urls_speak_tls_to_redis_verified_by_the_system_store() {
    let cert = common::TestCert::new();
    // The TLS port is a second free port; the plain one stays for the harness's PING.
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert.cert.to_str().unwrap(),
        "--tls-key-file",
        cert.key.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{tls_port}/");
    // The node trusts the certificate as operators trust a private CA: through the
    // system store (`SSL_CERT_FILE`).
    let node = common::spawn_binary(&[
        ("MINIPUSH_BROKER_URL", &url),
        ("SSL_CERT_FILE", cert.cert.to_str().unwrap()),
    ])
    .await;
    let srv = TestServer::at(node.addr);
    let ticket = common::ticket(&node.token, minipush::protocol::now_secs(), Some("t1"));
    let mut client = srv.open(Some(&ticket)).await;
    assert_eq!(client.next().await["type"], "welcome");
    let push = json!({"uid":"t1","data":"tls"});
    let (status, answer) = srv
        .api_as(Some(&node.key), "POST", "/api/push", Some(push))
        .await;
    assert_eq!((status, answer["seq"].as_u64()), (200, Some(1)), "{answer}");
    assert_eq!(client.next_where(is_push).await["data"], "tls");

    // A node that does not trust Redis's certificate refuses to start.
    let stranger = common::TestCert::new();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_minipush"))
        .args(["serve", "--dev"])
        .env("MINIPUSH_SERVER_LISTEN", "127.0.0.1:0")
        .env("MINIPUSH_BROKER_URL", &url)
        .env("SSL_CERT_FILE", stranger.cert.to_str().unwrap())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broker.url"), "{stderr}");
}

#[tokio::test]
async fn the_subscribe_fallback_asks_the_whole_cluster_who_is_online() {
    let redis = RedisServer::start();
    let wechat = common::FakeHttp::start(|req| match req.path.as_str() {
        "/cgi-bin/stable_token" => {
            common::Reply::json(json!({"access_token": "tok", "expires_in": 7200}))
        }
        _ => common::Reply::json(json!({"errcode": 0, "errmsg": "ok"})),
    })
    .await;
    let (url, base) = (redis.url(), wechat.base.clone());
    let a = TestServer::start_with(move |c| {
        c.broker.url = Some(minipush::config::Secret::new(url));
        c.wechat.appid = Some("wx0123456789abcdef".into());
        c.wechat.secret = Some(minipush::config::Secret::new("app-secret"));
        c.wechat.api_base = base;
    })
    .await;
    let b = node(&redis, "b").await;
    let (mut on_b, _) = b.connect(Some("here")).await;
    let subscribe = json!({"template_id": "tpl", "page": "pages/index", "data": {}});

    // Online on another node: delivered there, no subscribe message.
    let answer = a
        .push(json!({"uid": "here", "data": 1, "subscribe": subscribe}))
        .await;
    assert_eq!(
        (answer["delivered"].as_u64(), &answer["fallback"]),
        (Some(1), &Value::Null)
    );
    assert_eq!(on_b.next_where(is_push).await["data"], 1);
    // Offline everywhere: the subscribe message goes out.
    let answer = a
        .push(json!({"uid": "away", "data": 2, "subscribe": subscribe}))
        .await;
    assert_eq!(answer["fallback"], "sent", "{answer}");
    assert_eq!(wechat.calls("/cgi-bin/message/subscribe/send").len(), 1);
}

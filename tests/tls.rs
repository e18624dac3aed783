//! Built-in TLS (`server.tls_cert`, `server.tls_key`): `wss://` clients get pushes (small,
//! large and many), client frames are answered, the HTTP API works over `https://`, a
//! refused ticket still reads its close code, and bad certificate or key files stop
//! `check-config` and `serve` with a message naming the key.

mod common;

use common::*;
use minipush::protocol::now_secs;
use serde_json::json;

#[tokio::test]
async fn a_wss_client_receives_pushes_sent_over_https() {
    let ts = TestServer::start_tls(|_| {}).await;
    let (mut client, welcome) = ts.connect(Some("u1")).await;
    assert_eq!(welcome["uid"], "u1");
    let answer = ts.push(json!({"uid":"u1","data":{"hello":"tls"}})).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let push = client.next_where(|v| v["type"] == "push").await;
    assert_eq!(push["data"], json!({"hello":"tls"}));

    // Client frames are read and answered over TLS too.
    let reply = client
        .request("1", json!({"type":"echo","data":{"a":1}}))
        .await;
    assert_eq!(reply["data"], json!({"echo":{"a":1}}));
    // A frame much larger than one read: rustls holds the rest, already decrypted.
    let text = "y".repeat(60_000);
    let reply = client
        .request("2", json!({"type":"echo","data":text}))
        .await;
    assert_eq!(reply["data"]["echo"].as_str().map(str::len), Some(60_000));

    // A push far larger than a TLS record, then many small ones: all arrive, in order.
    let big = "x".repeat(300_000);
    ts.push(json!({"uid":"u1","data":big})).await;
    for n in 0..200 {
        ts.push(json!({"uid":"u1","data":n})).await;
    }
    let push = client.next_where(|v| v["type"] == "push").await;
    assert_eq!(push["data"].as_str().map(str::len), Some(300_000));
    for n in 0..200 {
        let push = client.next_where(|v| v["type"] == "push").await;
        assert_eq!(push["data"], n);
    }

    let (status, body) = ts.api_as(None, "GET", "/api/time", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = ts.api_as(None, "GET", "/api/stats", None).await;
    assert_eq!(status, 401, "{body}");
    client.close().await;
    ts.stop().await;
}

#[tokio::test]
async fn a_bad_ticket_over_tls_reads_its_close_code_and_shutdown_sends_1001() {
    let ts = TestServer::start_tls(|_| {}).await;
    let mut refused = ts
        .open(Some(&ticket("wrong-token", now_secs(), None)))
        .await;
    assert_eq!(refused.closed().await.0, 4001);
    let (mut client, _) = ts.connect(None).await;
    let server = ts.server.as_ref().unwrap();
    assert!(server.legacy_addr().is_none());
    let TestServer { server, .. } = ts;
    let stopping = tokio::spawn(server.unwrap().shutdown());
    assert_eq!(client.closed().await.0, 1001);
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_plain_request_to_the_tls_port_gets_no_answer() {
    let ts = TestServer::start_tls(|_| {}).await;
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", ts.addr))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP must not be served on the TLS port"
    );
    let (status, _) = ts.api_as(None, "GET", "/healthz", None).await;
    assert_eq!(status, 200);
    ts.stop().await;
}

#[test]
fn bad_certificate_or_key_files_stop_start_up_naming_the_key() {
    let (a, b) = (TestCert::new(), TestCert::new());
    let garbage = a.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let cases = [
        (
            "/nonexistent/cert.pem".to_string(),
            path(&a.key),
            "`server.tls_cert`",
        ),
        (path(&garbage), path(&a.key), "`server.tls_cert`"),
        (
            path(&a.cert),
            "/nonexistent/key.pem".to_string(),
            "`server.tls_key`",
        ),
        (path(&a.cert), path(&garbage), "`server.tls_key`"),
        // Both files are fine, but the key belongs to another certificate.
        (path(&a.cert), path(&b.key), "`server.tls_key`"),
    ];
    let config = a.dir.path().join("minipush.toml");
    std::fs::write(&config, "").unwrap();
    let secrets = [
        ("MINIPUSH_AUTH_TOKENS", "tls-test-token"),
        ("MINIPUSH_API_KEYS", "tls-test-key"),
    ];
    for (cert, key, named) in &cases {
        let mut env = secrets.to_vec();
        env.extend([
            ("MINIPUSH_SERVER_TLS_CERT", cert.as_str()),
            ("MINIPUSH_SERVER_TLS_KEY", key.as_str()),
            ("MINIPUSH_SERVER_LISTEN", "127.0.0.1:0"),
        ]);
        let config = config.to_str().unwrap();
        for args in [
            vec!["check-config", config],
            vec!["serve", "--config", config],
        ] {
            let (ok, _, err) = run_cli(&args, &env);
            assert!(!ok, "{args:?} with {cert} and {key} must fail");
            assert!(err.contains(named), "{args:?}: {err}");
            assert!(
                !err.contains("PRIVATE KEY"),
                "no key material in errors: {err}"
            );
        }
    }
    // The good pair passes.
    let mut env = secrets.to_vec();
    let (cert, key) = (path(&a.cert), path(&a.key));
    env.extend([
        ("MINIPUSH_SERVER_TLS_CERT", cert.as_str()),
        ("MINIPUSH_SERVER_TLS_KEY", key.as_str()),
    ]);
    let (ok, out, err) = run_cli(&["check-config", config.to_str().unwrap()], &env);
    assert!(ok, "{err}");
    assert!(out.contains("ok"), "{out}");
    // One without the other is refused.
    let (ok, _, err) = run_cli(
        &["check-config", config.to_str().unwrap()],
        &[&secrets[..], &[("MINIPUSH_SERVER_TLS_CERT", cert.as_str())]].concat(),
    );
    assert!(!ok && err.contains("set together"), "{err}");
}

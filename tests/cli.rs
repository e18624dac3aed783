//! The `minipush` binary: `sign` (with the known vector), `check-config`, `push`,
//! `serve --dev` end to end (banner, a push arriving, SIGTERM closing clients with 1001).

mod common;

use std::time::Duration;

use common::*;
use minipush::protocol::now_secs;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_minipush");

fn run(args: &[&str]) -> (bool, String, String) {
    run_cli(args, &[])
}

#[test]
fn sign_prints_the_known_vector() {
    // printf T1700000000 | sha1sum
    let expected = "37eaefd917e8b583189edba6dc0c0ff9a42ab191";
    let (ok, out, _) = run(&["sign", "--token", "T", "--ts", "1700000000"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            expected,
            "1700000000",
            &format!("Sec-WebSocket-Protocol: {expected}, 1700000000")
        ]
    );
    let (ok, out, _) = run(&["sign", "--token", "T", "--ts", "1700000000", "--uid", "u1"]);
    assert!(ok);
    assert_eq!(
        out.lines().next(),
        Some(minipush::auth::sign("T", 1_700_000_000, Some("u1")).as_str())
    );
    assert!(out.lines().nth(2).unwrap().ends_with(", 1700000000, u1"));
    let (ok, _, err) = run(&["sign", "--token", "T", "--uid", "bad uid"]);
    assert!(!ok && err.contains("--uid"));
}

#[test]
fn check_config_names_the_offending_key() {
    let tmp = TempDir::new("cli");
    let dir = tmp.path();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[auth]\ntokens = [\"abcdefgh12345\"]\n[api]\nkeys = [\"k-12345678\"]\n",
    )
    .unwrap();
    let (ok, out, _) = run(&["check-config", good.to_str().unwrap()]);
    assert!(ok, "{out}");

    let cases = [
        ("[api]\nkeys = [\"k-12345678\"]\n", "auth.tokens"),
        ("[auth]\ntokens = [\"t-1234\"]\n[api]\nkeys = [\"k-1\"]\n[limits]\nmax_frame_bytes = \"lots\"\n", "limits.max_frame_bytes"),
        ("[auth]\ntokens = [\"t-1234\"]\n[api]\nkeys = [\"k-1\"]\n[heartbeat]\nintervl_secs = 3\n", "intervl_secs"),
        ("[auth]\ntokens = [\"t-1234\"]\n", "api.keys"),
        ("[auth\n", "TOML"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (ok, _, err) = run(&["check-config", path.to_str().unwrap()]);
        assert!(!ok, "{text}");
        assert!(err.contains(key), "{key} not in: {err}");
    }
    let (ok, _, err) = run(&["check-config", dir.join("missing.toml").to_str().unwrap()]);
    assert!(!ok && err.contains("cannot read"));
}

#[test]
fn serve_without_secrets_refuses_to_start() {
    let (ok, _, err) = run(&["serve"]);
    assert!(!ok);
    assert!(err.contains("auth.tokens"), "{err}");
}

#[test]
fn gen_secret_prints_a_fresh_secret() {
    let (ok, a, _) = run(&["gen-secret"]);
    let (_, b, _) = run(&["gen-secret"]);
    assert!(ok);
    assert!(a.trim().len() >= 32);
    assert_ne!(a, b);
}

#[tokio::test]
async fn push_command_delivers_json_unchanged() {
    let srv = TestServer::start().await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    let url = format!("http://{}", srv.addr);
    let out = tokio::process::Command::new(BIN)
        .args([
            "push",
            "--url",
            &url,
            "--key",
            KEY,
            "--uid",
            "u1",
            r#"{"n":12345678901234567890}"#,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["delivered"], 1);
    let p = c.next().await;
    assert_eq!(p["data"]["n"].to_string(), "12345678901234567890");
    let out = tokio::process::Command::new(BIN)
        .args(["push", "--url", &url, "--key", "wrong", "--all", "{}"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn serve_dev_prints_a_working_example_and_shuts_down_with_1001() {
    let Spawned {
        mut child,
        addr,
        token,
        key,
    } = spawn_binary(&[("MINIPUSH_SERVER_SHUTDOWN_GRACE_SECS", "3")]).await;
    assert_ne!(token, key);

    // The printed token signs tickets, the printed key pushes.
    let srv = TestServer::at(addr);
    let mut c = srv
        .open(Some(&ticket(&token, now_secs(), Some("demo"))))
        .await;
    assert_eq!(c.next().await["type"], "welcome");
    let (status, answer) = srv
        .api_as(
            Some(&key),
            "POST",
            "/api/push",
            Some(json!({"uid": "demo", "data": {"hello": "world"}})),
        )
        .await;
    assert_eq!((status, answer["delivered"].as_u64()), (200, Some(1)));
    assert_eq!(c.next().await["data"], json!({"hello": "world"}));

    // Pushes accepted before SIGTERM are flushed, then the client gets 1001, new clients
    // are refused, and the process exits 0 within the grace period.
    for i in 0..50 {
        srv.api_as(
            Some(&key),
            "POST",
            "/api/push",
            Some(json!({"uid": "demo", "data": i})),
        )
        .await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    for i in 0..50 {
        assert_eq!(c.next().await["data"], i);
    }
    assert_eq!(c.closed().await.0, 1001);
    let refused = tokio_tungstenite::connect_async(srv.ws_url()).await;
    assert!(
        refused.is_err(),
        "a new client was accepted during shutdown"
    );
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "{status}");
}

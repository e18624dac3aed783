//! The operator's kit in `deploy/`, used as shipped: the example configuration passes
//! `check-config` with its secrets in the environment, nginx accepts
//! `deploy/nginx/minipush.conf` (only paths and ports substituted) and carries a `wss://`
//! client to minipush, and `systemd-analyze verify` accepts the unit file.

mod common;

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::json;

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A system tool found on `PATH` or in the sbin/bin directories (nginx lives in
/// /usr/sbin, which is not on a non-root user's `PATH`).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Replaces `from` with `to`, insisting that the shipped text contains `from`.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the shipped file has no {from:?}");
    text.replace(from, to)
}

/// Runs `cmd` and asserts that it exits 0, showing its output otherwise.
fn succeeds(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_example_configuration_passes_check_config_with_secrets_from_the_environment() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/minipush.toml");
    let path = path.to_str().unwrap();
    let secrets = [
        ("MINIPUSH_AUTH_TOKENS", "deploy-test-token"),
        ("MINIPUSH_API_KEYS", "deploy-test-key"),
        ("MINIPUSH_WECHAT_APPID", "wx0123456789abcdef"),
        ("MINIPUSH_WECHAT_SECRET", "deploy-test-wechat-secret"),
        (
            "MINIPUSH_ALERTS_DINGTALK_WEBHOOK",
            "https://oapi.dingtalk.com/robot/send?access_token=t",
        ),
        ("MINIPUSH_ALERTS_DINGTALK_SECRET", "SECdeploytest"),
        ("MINIPUSH_BROKER_URL", "redis://:pw@10.0.0.5:6379/0"),
    ];
    let (ok, out, err) = run_cli(&["check-config", path], &secrets);
    assert!(ok, "{out}{err}");
    assert!(out.contains(": ok"), "{out}");
    // The file itself holds no secret: without the variables, start-up is refused.
    let (ok, _, err) = run_cli(&["check-config", path], &[]);
    assert!(!ok && err.contains("auth.tokens"), "{err}");
    // Every configuration key is documented in it.
    let text = deploy_file("minipush.toml");
    for key in [
        "listen",
        "ws_path",
        "node_id",
        "shutdown_grace_secs",
        "tls_cert",
        "tls_key",
        "MINIPUSH_AUTH_TOKENS",
        "max_skew_secs",
        "allow_client_bind",
        "MINIPUSH_API_KEYS",
        "max_body_bytes",
        "interval_secs",
        "timeout_secs",
        "max_connections",
        "max_conns_per_uid",
        "max_frame_bytes",
        "client_msgs_per_sec",
        "outbound_queue",
        "client_join",
        "size",
        "ttl_secs",
        "url",
        "appid",
        "MINIPUSH_WECHAT_SECRET",
        "api_base",
        "login_per_min",
        "login_ip_header",
        "connections_over",
        "handshake_failures_per_min",
        "MINIPUSH_ALERTS_DINGTALK_WEBHOOK",
        "MINIPUSH_ALERTS_DINGTALK_SECRET",
        "MINIPUSH_BROKER_URL",
        "text_listen",
        "[[upstream]]",
        "types",
        "timeout_ms",
    ] {
        assert!(
            text.contains(key),
            "deploy/minipush.toml does not document {key}"
        );
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let unit = deploy_file("minipush.service");
    for directive in [
        "User=minipush",
        "EnvironmentFile=",
        "Restart=on-failure",
        "LimitNOFILE=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(directive), "the unit lacks {directive}");
    }
    let Some(analyze) = find_tool("systemd-analyze") else {
        println!("skipped: systemd-analyze is not installed, so the unit cannot be verified");
        return;
    };
    // The unit runs /usr/local/bin/minipush; verify checks that it exists, so the copy
    // points at the binary under test.
    let unit = substitute(
        &unit,
        "/usr/local/bin/minipush",
        env!("CARGO_BIN_EXE_minipush"),
    );
    let dir = TempDir::new("systemd");
    let path = dir.path().join("minipush.service");
    std::fs::write(&path, unit).unwrap();
    succeeds(Command::new(analyze).arg("verify").arg(&path));
}

/// A private nginx instance running `deploy/nginx/minipush.conf`; killed when dropped.
struct Nginx {
    child: Child,
    https: u16,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> PathBuf {
    find_tool("nginx")
        .expect("nginx is missing: ./scripts/test installs it (apt-get install nginx)")
}

/// Writes the shipped site file, with the test's certificate, ports and upstream, inside
/// a minimal main configuration whose every path lies in `dir`; returns nginx's
/// arguments and the HTTPS port.
fn nginx_setup(dir: &Path, cert: &TestCert, upstream: SocketAddr) -> (Vec<String>, u16) {
    let (https, http) = (free_port(), free_port());
    let mut site = deploy_file("nginx/minipush.conf");
    for (from, to) in [
        (
            "/etc/ssl/minipush/fullchain.pem",
            cert.cert.display().to_string(),
        ),
        (
            "/etc/ssl/minipush/privkey.pem",
            cert.key.display().to_string(),
        ),
        ("listen 443 ssl;", format!("listen 127.0.0.1:{https} ssl;")),
        ("listen 80;", format!("listen 127.0.0.1:{http};")),
        ("server 127.0.0.1:9501", format!("server {upstream}")),
    ] {
        site = substitute(&site, from, &to);
    }
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let d = dir.display();
    let main = format!(
        "events {{}}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let args = vec![
        "-p".into(),
        format!("{d}/"),
        "-c".into(),
        format!("{d}/nginx.conf"),
        "-g".into(),
        // One process (no master and workers), so killing it leaves nothing behind.
        format!("daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;"),
    ];
    (args, https)
}

#[test]
fn nginx_accepts_the_shipped_file() {
    let text = deploy_file("nginx/minipush.conf");
    let timeout: u64 = text
        .split("proxy_read_timeout")
        .nth(1)
        .and_then(|rest| rest.trim().split('s').next()?.parse().ok())
        .expect("proxy_read_timeout in seconds");
    assert!(
        timeout > 60,
        "proxy_read_timeout must outlast heartbeat.timeout_secs"
    );
    let cert = TestCert::new();
    let (args, _) = nginx_setup(cert.dir.path(), &cert, "127.0.0.1:9501".parse().unwrap());
    succeeds(Command::new(nginx_bin()).arg("-t").args(&args));
}

async fn start_nginx(upstream: SocketAddr, cert: &TestCert) -> Nginx {
    let dir = TempDir::new("nginx");
    let (args, https) = nginx_setup(dir.path(), cert, upstream);
    let child = Command::new(nginx_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let nginx = Nginx {
        child,
        https,
        _dir: dir,
    };
    let up = eventually(|| async move {
        tokio::net::TcpStream::connect(("127.0.0.1", https))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "nginx listens on {https}");
    nginx
}

#[tokio::test]
async fn a_wss_client_through_nginx_receives_a_push() {
    let ts = TestServer::start().await;
    let cert = TestCert::new();
    let nginx = start_nginx(ts.addr, &cert).await;
    let base = format!("127.0.0.1:{}", nginx.https);
    let url = format!("wss://{base}/ws");
    let (mut client, welcome) = connect_client(&url, Some("u1"), Some(cert.client_config())).await;
    assert_eq!(welcome["uid"], "u1");
    // The push goes to minipush directly, as a backend next to it would send it.
    let answer = ts.push(json!({"uid":"u1","data":{"via":"nginx"}})).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let push = client.next_where(|v| v["type"] == "push").await;
    assert_eq!(push["data"], json!({"via":"nginx"}));
    // Client frames go the other way through the proxy too.
    let reply = client.request("1", json!({"type":"echo","data":7})).await;
    assert_eq!(reply["data"], json!({"echo":7}));

    // The HTTP side: /api/time is public, other paths are not served.
    let http = cert.http_client();
    let res = http
        .get(format!("https://{base}/api/time"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http.get(format!("https://{base}/")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    client.close().await;
    drop(nginx);
    ts.stop().await;
}

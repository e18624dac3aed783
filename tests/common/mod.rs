//! Shared test harness: a real minipush server on 127.0.0.1:0 (plain, or with built-in
//! TLS and a self-signed test certificate), a signed WebSocket client (tokio-tungstenite)
//! with `next(predicate)`, a small HTTP API client (reqwest), runners for the binary, a
//! private redis-server, and [`FakeHttp`], a recording HTTP server that plays business
//! backends, WeChat and DingTalk.
#![allow(dead_code)] // each test file uses its own subset

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse, HttpServer};

use futures_util::{SinkExt, StreamExt};
use minipush::{auth::sign, protocol::now_secs, Config, Server, ServerBuilder};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{
        client::IntoClientRequest,
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message,
    },
    Connector, MaybeTlsStream, WebSocketStream,
};

pub const TOKEN: &str = "test-token-0123456789";
pub const KEY: &str = "test-key-0123456789";
/// How long any single expectation may wait before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The configuration every test starts from: loopback, port 0, one token, one API key.
pub fn base_config() -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 3\n[auth]\ntokens = [\"{TOKEN}\"]\n[api]\nkeys = [\"{KEY}\"]\n"
    );
    Config::from_toml(&text, Vec::new(), false).expect("base config is valid")
}

pub struct TestServer {
    pub server: Option<Server>,
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    _redis: Option<RedisServer>,
    /// With built-in TLS: the server's certificate, trusted by `http` and `open`.
    pub cert: Option<TestCert>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server from the base config changed by `edit`. With
    /// `MINIPUSH_TEST_BROKER=redis` (the test command's second pass) each server gets a
    /// private redis-server as its broker: the same tests then check the Redis broker.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = base_config();
        let redis = (std::env::var("MINIPUSH_TEST_BROKER").as_deref() == Ok("redis")).then(|| {
            let redis = RedisServer::start();
            config.broker.url = Some(minipush::config::Secret::new(redis.url()));
            redis
        });
        edit(&mut config);
        let mut server = Self::from_builder(Server::builder(config)).await;
        server._redis = redis;
        server
    }

    pub async fn from_builder(builder: ServerBuilder) -> TestServer {
        let server = builder.start().await.expect("server starts");
        let mut ts = Self::at(server.addr());
        ts.server = Some(server);
        ts
    }

    /// A plain server already running elsewhere (e.g. a spawned binary) at `addr`.
    pub fn at(addr: std::net::SocketAddr) -> TestServer {
        TestServer {
            server: None,
            addr,
            http: reqwest::Client::new(),
            _redis: None,
            cert: None,
        }
    }

    /// Starts a server with built-in TLS on a fresh self-signed certificate, changed by
    /// `edit`; `http`, `open` and `connect` then speak `https://` and `wss://`.
    pub async fn start_tls(edit: impl FnOnce(&mut Config)) -> TestServer {
        let cert = TestCert::new();
        let mut ts = Self::start_with(|c| {
            c.server.tls_cert = Some(cert.cert.display().to_string());
            c.server.tls_key = Some(cert.key.display().to_string());
            edit(c);
        })
        .await;
        ts.http = cert.http_client();
        ts.cert = Some(cert);
        ts
    }

    pub fn ws_url(&self) -> String {
        let scheme = if self.cert.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.cert.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// The legacy text port's address (`legacy.text_listen` must be set).
    pub fn legacy_addr(&self) -> std::net::SocketAddr {
        let server = self.server.as_ref().expect("running");
        server.legacy_addr().expect("legacy.text_listen is set")
    }

    /// Opens a WebSocket with `protocols` as the raw `Sec-WebSocket-Protocol` value.
    pub async fn open(&self, protocols: Option<&str>) -> Client {
        let tls = self.cert.as_ref().map(TestCert::client_config);
        open_client(&self.ws_url(), protocols, tls).await
    }

    /// A client with a valid ticket (bound to `uid` if given), past its `welcome`.
    pub async fn connect(&self, uid: Option<&str>) -> (Client, Value) {
        let tls = self.cert.as_ref().map(TestCert::client_config);
        connect_client(&self.ws_url(), uid, tls).await
    }

    /// Calls the HTTP API with the test key; returns the status and the JSON body.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as(Some(KEY), method, path, body).await
    }

    pub async fn api_as(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("API answers");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = self.api_as(None, "GET", "/metrics", None).await;
        assert_eq!(status, 200, "{body}");
        body.as_str().expect("metrics are text").to_string()
    }

    /// The value of one `/metrics` sample, e.g. `minipush_pushes_total`.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric(&self.metrics_text().await, sample)
    }

    /// `POST /api/push`, expecting success.
    pub async fn push(&self, body: Value) -> Value {
        let (status, answer) = self.api("POST", "/api/push", Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

/// Opens a WebSocket to `url` (`ws://`, or `wss://` trusting `tls`) with `protocols` as
/// the raw `Sec-WebSocket-Protocol` value.
pub async fn open_client(
    url: &str,
    protocols: Option<&str>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Client {
    let mut req = url.into_client_request().unwrap();
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        tls.map(Connector::Rustls),
    );
    let (ws, res) = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("handshake in time")
        .expect("handshake succeeds");
    let protocol = res
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Client { ws, protocol }
}

/// A client of `url` with a valid ticket (bound to `uid` if given), past its `welcome`.
pub async fn connect_client(
    url: &str,
    uid: Option<&str>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> (Client, Value) {
    let mut c = open_client(url, Some(&ticket(TOKEN, now_secs(), uid)), tls).await;
    let welcome = c.next().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (c, welcome)
}

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let name = format!(
            "minipush-{tag}-{}-{}",
            std::process::id(),
            minipush::random_id(8)
        );
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `127.0.0.1` and `localhost` (rcgen), written as PEM
/// files `cert.pem` and `key.pem` in a temporary directory.
pub struct TestCert {
    pub dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pem: String,
}

impl TestCert {
    pub fn new() -> TestCert {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let made = rcgen::generate_simple_self_signed(names).expect("rcgen makes a certificate");
        let dir = TempDir::new("cert");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let pem = made.cert.pem();
        std::fs::write(&cert, &pem).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        TestCert {
            dir,
            cert,
            key,
            pem,
        }
    }

    /// A rustls client configuration that trusts this certificate only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// An HTTP client that trusts this certificate.
    pub fn http_client(&self) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(root)
            .build()
            .unwrap()
    }
}

/// Runs the `minipush` binary with `args` and the `MINIPUSH_*` variables in `env` (no
/// others from the test's environment); returns success, standard output and error.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_minipush"));
    cmd.args(args)
        .env_remove("MINIPUSH_AUTH_TOKENS")
        .env_remove("MINIPUSH_API_KEYS")
        .env_remove("MINIPUSH_WECHAT_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The value of one sample line (`name{labels} value`) in Prometheus text.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
}

/// A loopback address nothing listens on (connections to it are refused).
pub fn closed_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The `Sec-WebSocket-Protocol` value of a ticket: `sig, ts[, uid]`.
pub fn ticket(token: &str, ts: i64, uid: Option<&str>) -> String {
    let sig = sign(token, ts, uid);
    match uid {
        Some(u) => format!("{sig}, {ts}, {u}"),
        None => format!("{sig}, {ts}"),
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server echoed in its 101 response.
    pub protocol: Option<String>,
}

/// What a client observed instead of a JSON frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Json(Value),
    Close(u16, String),
    Ended,
}

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string())).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_string())).await.unwrap();
    }

    /// The next JSON frame, a close, or the end of the connection (control frames skipped).
    pub async fn event(&mut self) -> Event {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame arrives in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Event::Json(serde_json::from_str(&t).expect("server sends JSON"))
                }
                Some(Ok(Message::Close(f))) => {
                    return match f {
                        Some(CloseFrame { code, reason }) => {
                            Event::Close(u16::from(code), reason.to_string())
                        }
                        None => Event::Close(1005, String::new()),
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Ended,
            }
        }
    }

    /// The next JSON frame; fails on a close.
    pub async fn next(&mut self) -> Value {
        match self.event().await {
            Event::Json(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next JSON frame for which `pred` holds, skipping others.
    pub async fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Sends `msg` with `"id": id` and returns the `reply` or `error` whose `ref` is `id`.
    pub async fn request(&mut self, id: &str, mut msg: Value) -> Value {
        msg["id"] = json!(id);
        self.send(msg).await;
        self.next_where(|v| v["ref"] == id && (v["type"] == "reply" || v["type"] == "error"))
            .await
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.event().await {
                Event::Json(_) => continue,
                Event::Close(code, reason) => return (code, reason),
                Event::Ended => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Asserts that no JSON frame arrives within `ms` milliseconds.
    pub async fn silent_for(&mut self, ms: u64) {
        let got = tokio::time::timeout(Duration::from_millis(ms), async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => return Some(t),
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await;
        if let Ok(Some(t)) = got {
            panic!("expected silence, got {t}");
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// Polls `cond` every 20 ms until it holds or `WAIT` passes.
pub async fn eventually<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A bare TCP WebSocket client that never answers anything (not even pings): for testing
/// what the server does to clients that go silent or ignore its close frame.
pub struct RawClient {
    pub tcp: TcpStream,
    /// The 101 response head.
    pub head: String,
    buf: Vec<u8>,
}

impl RawClient {
    /// Sends an upgrade request with `protocols` and reads the response head.
    pub async fn open(addr: std::net::SocketAddr, protocols: &str) -> RawClient {
        Self::handshake(TcpStream::connect(addr).await.unwrap(), protocols).await
    }

    /// Upgrades an already connected socket (a client that connected earlier and sends
    /// its request only now, as slow networks do).
    pub async fn handshake(mut tcp: TcpStream, protocols: &str) -> RawClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = tcp.peer_addr().unwrap();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                .await
                .expect("response in time")
                .unwrap();
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let rest = buf[end..].to_vec();
        RawClient {
            tcp,
            head,
            buf: rest,
        }
    }

    /// Reads server frames (opcode, payload) until the server drops the TCP connection or
    /// `limit` passes; returns them in order.
    pub async fn frames_until_dropped(&mut self, limit: Duration) -> (Vec<(u8, Vec<u8>)>, bool) {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let dropped = tokio::time::timeout(limit, async {
            loop {
                match self.tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .is_ok();
        (parse_frames(&self.buf), dropped)
    }
}

impl RawClient {
    /// The close code the server ended with, reading (never answering) for up to 3 s.
    pub async fn final_close_code(&mut self) -> Option<u16> {
        let (frames, _) = self.frames_until_dropped(Duration::from_secs(3)).await;
        frames
            .last()
            .filter(|(op, p)| *op == 8 && p.len() >= 2)
            .map(|(_, p)| close_code(p))
    }
}

/// Splits unmasked server frames: FIN+opcode byte, length, payload.
fn parse_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let op = b[0] & 0x0f;
        let (len, at) = match b[1] & 0x7f {
            126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            break;
        }
        out.push((op, b[at..at + len].to_vec()));
        b = &b[at + len..];
    }
    out
}

/// The close code carried by a close frame's payload.
pub fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

/// A `minipush serve --dev` child process and what its banner said.
pub struct Spawned {
    pub child: tokio::process::Child,
    pub addr: std::net::SocketAddr,
    pub token: String,
    pub key: String,
}

/// Starts `minipush serve --dev` on a free port with the given `MINIPUSH_*` variables and
/// waits for its banner (address, client token, API key).
pub async fn spawn_binary(env: &[(&str, &str)]) -> Spawned {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_minipush"));
    cmd.args(["serve", "--dev"])
        .env("MINIPUSH_SERVER_LISTEN", "127.0.0.1:0")
        .env_remove("MINIPUSH_AUTH_TOKENS")
        .env_remove("MINIPUSH_API_KEYS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut token) = (None, None);
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("banner in time")
            .unwrap()
            .expect("banner printed");
        let line = line.trim();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = Some(rest.trim().parse().unwrap());
        } else if let Some(rest) = line.strip_prefix("client token:") {
            token = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("API key:") {
            // Keep draining stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Spawned {
                child,
                addr: addr.expect("address before key"),
                token: token.expect("token before key"),
                key: rest.trim().to_string(),
            };
        }
    }
}

/// A kilobyte figure from `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A private `redis-server` on a free loopback port, with an append-only file so that a
/// restart keeps its data (as production Redis should). Killed when dropped.
pub struct RedisServer {
    pub port: u16,
    dir: std::path::PathBuf,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("minipush-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = RedisServer {
            port,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port and data directory; waits until it answers.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                // Any answer (`+PONG`, or `-NOAUTH` with a password) means it is up.
                let mut answer = [0u8; 1];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut answer).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills the server (its data stays on disk for `restart`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One request a [`FakeHttp`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    /// The body as sent, and parsed (`Null` when it is not JSON).
    pub raw: String,
    pub json: Value,
    pub at: Instant,
}

/// What a [`FakeHttp`] answers to one request.
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(v: Value) -> Reply {
        Reply::raw(200, &v.to_string())
    }
    pub fn raw(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Respond = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A fake HTTP service on 127.0.0.1:0 (a business backend, WeChat's API, a DingTalk
/// robot): records every request and answers it with `respond`.
pub struct FakeHttp {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// How many of `seen` were taken by `next` or `pending`.
    taken: Mutex<usize>,
}

impl FakeHttp {
    pub async fn start(respond: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeHttp {
        let respond: Respond = Arc::new(respond);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            let respond = respond.clone();
            let log = log.clone();
            actix_web::App::new().default_service(web::to(
                move |req: HttpRequest, body: web::Bytes| {
                    let respond = respond.clone();
                    let log = log.clone();
                    async move {
                        let raw = String::from_utf8_lossy(&body).into_owned();
                        let query =
                            web::Query::<HashMap<String, String>>::from_query(req.query_string())
                                .map(|q| q.into_inner())
                                .unwrap_or_default();
                        let seen = Seen {
                            method: req.method().to_string(),
                            path: req.path().to_string(),
                            query,
                            json: serde_json::from_str(&raw).unwrap_or(Value::Null),
                            raw,
                            at: Instant::now(),
                        };
                        let answer = respond(&seen);
                        log.lock().unwrap().push(seen);
                        if !answer.delay.is_zero() {
                            tokio::time::sleep(answer.delay).await;
                        }
                        HttpResponse::build(StatusCode::from_u16(answer.status).unwrap())
                            .content_type("application/json")
                            .body(answer.body)
                    }
                },
            ))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server); // ends with the test's runtime
        FakeHttp {
            base: format!("http://{addr}"),
            seen,
            taken: Mutex::new(0),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next request not yet taken, waiting up to `WAIT`.
    pub async fn next(&self) -> Seen {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                let mut taken = self.taken.lock().unwrap();
                if let Some(s) = seen.get(*taken) {
                    *taken += 1;
                    return s.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the fake server is called in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many requests arrived that were not taken with `next`; takes them.
    pub fn pending(&self) -> usize {
        let n = self.seen.lock().unwrap().len();
        let mut taken = self.taken.lock().unwrap();
        std::mem::replace(&mut *taken, n).abs_diff(n)
    }

    /// Every request so far whose path is `path`.
    pub fn calls(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }
}

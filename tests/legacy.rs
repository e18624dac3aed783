//! The Workerman-compatible text port (`legacy.text_listen`): `ok`/`fail` answers, the
//! whole object delivered as `data`, garbage lines that never break the port, several
//! connections at once, and the port closing with the server.

mod common;

use common::*;
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// A client of the text port: writes raw bytes, reads answer lines.
struct TextClient(BufReader<TcpStream>);

impl TextClient {
    async fn connect(ts: &TestServer) -> TextClient {
        TextClient(BufReader::new(
            TcpStream::connect(ts.legacy_addr()).await.unwrap(),
        ))
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).await.unwrap();
    }

    /// The next answer line, without its newline; `None` when the port closed.
    async fn answer(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.0.read_line(&mut line))
            .await
            .expect("an answer in time")
            .unwrap_or(0);
        (n > 0).then(|| line.trim_end_matches('\n').to_string())
    }

    async fn line(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes()).await;
        self.answer().await.expect("the port answers")
    }
}

async fn start() -> TestServer {
    TestServer::start_with(|c| {
        c.legacy.text_listen = Some(([127, 0, 0, 1], 0).into());
        c.api.max_body_bytes = 1024;
    })
    .await
}

#[tokio::test]
async fn a_line_to_an_online_uid_pushes_the_whole_object() {
    let ts = start().await;
    let (mut client, _) = ts.connect(Some("uid1")).await;
    let mut port = TextClient::connect(&ts).await;
    let line = r#"{"uid":"uid1","percent":"88%","big":12345678901234567890}"#;
    assert_eq!(port.line(line).await, "ok");
    let push = client.next_where(|v| v["type"] == "push").await;
    assert_eq!(push["stream"], "u:uid1");
    assert_eq!(push["seq"], 1);
    assert_eq!(
        push["data"],
        json!({"uid":"uid1","percent":"88%","big":12345678901234567890u64})
    );
    // A numeric uid, as PHP code sends it.
    let (mut numeric, _) = ts.connect(Some("42")).await;
    assert_eq!(port.line(r#"{"uid":42,"n":1}"#).await, "ok");
    let push = numeric.next_where(|v| v["type"] == "push").await;
    assert_eq!(push["data"], json!({"uid":42,"n":1}));
    ts.stop().await;
}

#[tokio::test]
async fn an_offline_uid_answers_fail_and_the_push_is_kept_for_resume() {
    let ts = start().await;
    let mut port = TextClient::connect(&ts).await;
    assert_eq!(port.line(r#"{"uid":"nobody","n":1}"#).await, "fail");
    let (mut client, welcome) = ts.connect(Some("nobody")).await;
    let reply = client
        .request(
            "r",
            json!({"type":"resume","streams":{"u:nobody":0},"epoch":welcome["epoch"]}),
        )
        .await;
    assert_eq!(reply["data"]["resumed"], 1, "{reply}");
    ts.stop().await;
}

#[tokio::test]
async fn garbage_answers_fail_and_the_port_keeps_working() {
    let ts = start().await;
    let (mut client, _) = ts.connect(Some("u1")).await;
    let mut port = TextClient::connect(&ts).await;
    let long = format!(r#"{{"uid":"u1","pad":"{}"}}"#, "x".repeat(5000));
    for bad in [
        "not json",
        "[1,2]",
        r#"["u1"]"#,
        "42",
        r#"{"to":"u1"}"#,
        r#"{"uid":"bad uid"}"#,
        r#"{"uid":null}"#,
        r#"{"uid":"u1""#,
        "",
        &long,
    ] {
        assert_eq!(port.line(bad).await, "fail", "{:.60}", bad);
    }
    port.send(b"\xff\xfe\n").await;
    assert_eq!(port.answer().await.as_deref(), Some("fail"));
    // Several lines in one write, with CRLF endings: one answer each, in order.
    port.send(b"{\"uid\":\"u1\",\"n\":1}\r\nnope\r\n{\"uid\":\"u1\",\"n\":2}\r\n")
        .await;
    for expected in ["ok", "fail", "ok"] {
        assert_eq!(port.answer().await.as_deref(), Some(expected));
    }
    for n in [1, 2] {
        let push = client.next_where(|v| v["type"] == "push").await;
        assert_eq!(push["data"]["n"], n);
    }
    assert_eq!(port.line(r#"{"uid":"u1","n":3}"#).await, "ok");
    ts.stop().await;
}

#[tokio::test]
async fn several_connections_at_once_and_the_port_closes_with_the_server() {
    let ts = start().await;
    let (mut client, _) = ts.connect(Some("u1")).await;
    let mut a = TextClient::connect(&ts).await;
    let mut b = TextClient::connect(&ts).await;
    // A half-sent line on one connection does not hold up the other.
    a.send(br#"{"uid":"u1","#).await;
    assert_eq!(b.line(r#"{"uid":"u1","from":"b"}"#).await, "ok");
    a.send(b"\"from\":\"a\"}\n").await;
    assert_eq!(a.answer().await.as_deref(), Some("ok"));
    let first = client.next_where(|v| v["type"] == "push").await;
    let second = client.next_where(|v| v["type"] == "push").await;
    assert_eq!(
        (
            first["data"]["from"].as_str(),
            second["data"]["from"].as_str()
        ),
        (Some("b"), Some("a"))
    );
    let addr = ts.legacy_addr();
    ts.stop().await;
    assert_eq!(
        a.answer().await,
        None,
        "open connections end with the server"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}

#[tokio::test]
async fn a_taken_text_port_stops_start_up_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = base_config();
    config.legacy.text_listen = Some(taken.local_addr().unwrap());
    let err = minipush::Server::start(config)
        .await
        .err()
        .expect("start-up fails");
    assert!(err.to_string().contains("legacy.text_listen"), "{err}");
}

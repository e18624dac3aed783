//! Hostile clients against the real binary: readers that stop reading (memory stays
//! bounded, they are closed with 4008), oversized and absurd handshake headers. Each time,
//! the server stays up and keeps serving a well-behaved client.

mod common;

use common::*;
use minipush::protocol::now_secs;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client that never reads cannot make the server hold more than its bounded queues.
#[tokio::test]
async fn clients_that_stop_reading_cost_bounded_memory() {
    const FRAME: usize = 200_000;
    const PUSHES: usize = 600; // 120 MB pushed to each silent client
    let server = spawn_binary(&[
        ("MINIPUSH_AUTH_TOKENS", TOKEN),
        ("MINIPUSH_API_KEYS", KEY),
        ("MINIPUSH_LIMITS_OUTBOUND_QUEUE", "64"),
    ])
    .await;
    let (pid, addr) = (server.child.id().unwrap(), server.addr);
    let srv = TestServer::at(addr);
    let mut silent = Vec::new();
    for i in 0..5 {
        silent
            .push(RawClient::open(addr, &ticket(TOKEN, now_secs(), Some(&format!("s{i}")))).await);
    }
    let before = proc_status_kb(pid, "VmRSS");
    let big = "x".repeat(FRAME);
    for _ in 0..PUSHES {
        srv.push(json!({"all": true, "data": big})).await;
    }
    let peak = proc_status_kb(pid, "VmHWM");
    // Each silent client holds at most its queue (64) plus the HTTP layer's few frames; the
    // frames are shared. 64 MB is far below the 120 MB pushed through.
    let bound_kb = 64 * 1024;
    assert!(
        peak < before + bound_kb,
        "RSS grew from {before} kB to a peak of {peak} kB"
    );
    let (_, stats) = srv.api("GET", "/api/stats", None).await;
    assert_eq!(
        stats["total"]["connections"], 0,
        "silent clients were not closed: {stats}"
    );
    let (mut ok, _) = srv.connect(Some("fine")).await;
    srv.push(json!({"uid": "fine", "data": 1})).await;
    assert_eq!(ok.next().await["data"], 1);
    drop(silent);
}

async fn raw_request(addr: std::net::SocketAddr, head: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(head.as_bytes()).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).to_string()
}

fn upgrade(addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn absurd_handshake_headers_are_refused_and_the_server_stays_up() {
    let srv = TestServer::start().await;
    // An oversized header is refused by the HTTP layer (or the connection is dropped).
    let huge = format!("Sec-WebSocket-Protocol: {}\r\n", "a".repeat(200_000));
    let answer = raw_request(srv.addr, &upgrade(srv.addr, &huge)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    // Thousands of subprotocol values: a malformed ticket, 4003.
    let many = format!("Sec-WebSocket-Protocol: {}\r\n", vec!["v"; 5000].join(", "));
    let mut raw = RawClient::open(
        srv.addr,
        &many["Sec-WebSocket-Protocol: ".len()..many.len() - 2],
    )
    .await;
    assert_eq!(raw.final_close_code().await, Some(4003));
    // Many header lines of values.
    let lines = "Sec-WebSocket-Protocol: x\r\n".repeat(80);
    let answer = raw_request(srv.addr, &upgrade(srv.addr, &lines)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 "),
        "{answer}"
    );
    // A header value that is not visible ASCII.
    let mut raw = RawClient::open(srv.addr, "\u{e9}t\u{e9}, 1").await;
    assert!(raw.head.starts_with("HTTP/1.1 101"), "{}", raw.head);
    assert_eq!(raw.final_close_code().await, Some(4003));
    // Everyone else is still served.
    let (mut c, _) = srv.connect(Some("u1")).await;
    srv.push(json!({"uid": "u1", "data": "still here"})).await;
    assert_eq!(c.next().await["data"], "still here");
}

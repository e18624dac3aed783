//! Peer server for the benchmarks: what a Rust developer writes in an afternoon with tokio
//! and tokio-tungstenite (the shape of tokio-tungstenite's own `server.rs` example).
//!
//! Protocol (bench/peers/README.md): WebSocket on any path, no auth, no subprotocol.
//! `{"type":"broadcast","data":X}` sends `{"type":"push","data":X}` to every connected
//! client; `{"type":"echo","id":I,"data":X}` answers
//! `{"type":"reply","ref":I,"data":{"echo":X}}`; anything else is ignored.
//!
//! One task per connection; a shared map of per-connection unbounded senders. A broadcast
//! is serialised once; 0.24's `Message::Text` owns a `String`, so each client's queue
//! gets a copy of those bytes.
//!
//! Why tokio-tungstenite 0.24 (the version minipush's tests and loadgen use) and not the
//! newest: 0.30's default `WebSocketConfig` has a 128 KiB read buffer per connection
//! (measured here: 132 KiB of RSS per idle connection with 0.30, 10.9 KiB with 0.24, and
//! about the same fan-out throughput). 0.24 is the stronger peer.
//!
//! Port: first argument, else env PORT, else 9502.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::{future, pin_mut, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

type PeerMap = Arc<Mutex<HashMap<SocketAddr, UnboundedSender<Message>>>>;

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

async fn handle_connection(peers: PeerMap, raw: TcpStream, addr: SocketAddr) {
    let _ = raw.set_nodelay(true);
    let ws = match tokio_tungstenite::accept_async(raw).await {
        Ok(ws) => ws,
        Err(_) => return, // not a WebSocket client (e.g. a readiness probe)
    };
    let (tx, rx) = unbounded();
    peers.lock().unwrap().insert(addr, tx.clone());
    let (outgoing, incoming) = ws.split();

    let handle_incoming = incoming.try_for_each(|msg| {
        if let Message::Text(text) = msg {
            if let Ok(m) = serde_json::from_str::<Incoming>(text.as_str()) {
                let data = m.data.map_or("null", RawValue::get);
                match m.ty {
                    "broadcast" => {
                        let out = format!(r#"{{"type":"push","data":{data}}}"#);
                        for s in peers.lock().unwrap().values() {
                            let _ = s.unbounded_send(Message::Text(out.clone()));
                        }
                    }
                    "echo" => {
                        let id = m.id.map_or("null", RawValue::get);
                        let out =
                            format!(r#"{{"type":"reply","ref":{id},"data":{{"echo":{data}}}}}"#);
                        let _ = tx.unbounded_send(Message::Text(out));
                    }
                    _ => {}
                }
            }
        }
        future::ok(())
    });
    // `forward` feeds every queued message and flushes when the queue is empty.
    let send_queued = rx.map(Ok).forward(outgoing);
    pin_mut!(handle_incoming, send_queued);
    future::select(handle_incoming, send_queued).await;
    peers.lock().unwrap().remove(&addr);
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(9502);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    eprintln!("peer-tokio-tungstenite listening on 127.0.0.1:{port}");
    let peers = PeerMap::default();
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                tokio::spawn(handle_connection(peers.clone(), stream, addr));
            }
            Err(e) => {
                // e.g. out of file descriptors: wait a little instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

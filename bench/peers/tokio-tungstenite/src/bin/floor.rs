//! The floor: the least work any server can do for a broadcast, to show what the kernel
//! alone costs on this machine. Not a real server and not a peer in the tables.
//!
//! It speaks the peer protocol's `broadcast` (bench/peers/README.md) and nothing else.
//! The handshake uses tokio-tungstenite; after it, each client is kept only as its
//! socket, and the trigger's frames are cut and unmasked by hand. A broadcast frame is encoded once and written to
//! every client in one tight loop, one `send` per client, on the thread that read the
//! trigger: no queues, no tasks woken, no locks per client. A client whose socket is
//! full misses the frame (said on stderr; the sustainable load never fills one).
//!
//! Port: first argument, else env PORT, else 9605.

use std::{
    net::TcpStream as StdStream,
    os::fd::AsFd,
    sync::{Arc, Mutex},
};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

type Clients = Arc<Mutex<Vec<Arc<TcpStream>>>>;

/// A server-to-client text frame (unmasked, not fragmented).
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xFFFF => {
            f.push(126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// The first whole client frame in `b` (masked, as clients send): opcode, unmasked
/// payload and the bytes it used.
fn client_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (len, at) = match *b.get(1)? & 0x7F {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    let body = b.get(at + 4..at + 4 + len)?;
    let payload = body
        .iter()
        .enumerate()
        .map(|(i, x)| x ^ mask[i % 4])
        .collect();
    Some((b[0] & 0x0F, payload, at + 4 + len))
}

async fn handle_connection(clients: Clients, raw: TcpStream) {
    let _ = raw.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(raw).await else {
        return;
    };
    // tokio-tungstenite 0.24 cannot hand the socket back: keep a duplicate of it and
    // drop the WebSocket (one descriptor per client again).
    let fd = ws.get_ref().as_fd().try_clone_to_owned().expect("dup");
    drop(ws);
    let std = StdStream::from(fd);
    std.set_nonblocking(true).expect("non-blocking");
    let sock = Arc::new(TcpStream::from_std(std).expect("registered"));
    clients.lock().unwrap().push(sock.clone());
    // Only the trigger sends anything; everyone else just stays connected.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        match sock.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        while let Some((opcode, payload, used)) = client_frame(&buf) {
            buf.drain(..used);
            if opcode == 0x8 {
                return;
            }
            let Ok(m) = serde_json::from_slice::<Incoming>(&payload) else {
                continue;
            };
            if m.ty != "broadcast" {
                continue;
            }
            let data = m.data.map_or("null", RawValue::get);
            let frame = text_frame(format!(r#"{{"type":"push","data":{data}}}"#).as_bytes());
            let mut missed = 0;
            for c in clients.lock().unwrap().iter() {
                if !matches!(c.try_write(&frame), Ok(n) if n == frame.len()) {
                    missed += 1;
                }
            }
            if missed > 0 {
                eprintln!("floor: {missed} clients missed a frame");
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(9605);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    eprintln!("floor listening on 127.0.0.1:{port}");
    let clients = Clients::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle_connection(clients.clone(), stream));
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

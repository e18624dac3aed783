//! The Workerman-compatible text port (`legacy.text_listen`), for backends written
//! against GatewayWorker's "Text" protocol: connect over TCP, send one JSON object per
//! line, read one answer line per line sent.
//!
//! - `{"uid":"uid1", ...}\n` pushes the whole object, unchanged, as the `data` of a push
//!   to `u:uid1`, exactly like `POST /api/push {"uid":"uid1","data":{...}}` (stored in
//!   history). The uid may also be a non-negative integer, as PHP code often sends it.
//! - The answer is `ok\n` when the push reached at least one live connection, `fail\n`
//!   otherwise: the uid is offline (the push is still stored for `resume`), or the line
//!   is not such an object (not JSON, not an object, no uid or an invalid one, blank).
//! - A line longer than `api.max_body_bytes` is answered `fail\n` once and skipped up to
//!   its newline; the connection stays open. Answers come in the order of the lines.
//!
//! The port has no authentication: it binds where the operator says (the SPEC's example
//! is `127.0.0.1:5678`), and a non-loopback address is logged as a warning at start.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{value::RawValue, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

use crate::{auth::valid_uid, hub::Target, server::App};

const OK: &[u8] = b"ok\n";
const FAIL: &[u8] = b"fail\n";
/// Bytes reserved for each read.
const READ_CHUNK: usize = 4096;

/// The running text port; [`LegacyPort::stop`] closes it and every connection on it.
pub struct LegacyPort {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl LegacyPort {
    /// Binds `addr` (port 0 picks a free port) and starts accepting connections.
    pub async fn start(app: Arc<App>, addr: SocketAddr) -> io::Result<LegacyPort> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "legacy.text_listen is not a loopback address: the text port has no authentication, so anyone who reaches it can push to any uid"
            );
        }
        tracing::info!(%addr, "legacy text port listening");
        let task = tokio::spawn(accept(app, listener));
        Ok(LegacyPort { addr, task })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and drops every open connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Accepts connections until aborted; dropping the set ends every connection task.
async fn accept(app: Arc<App>, listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    conns.spawn(serve(app.clone(), tcp));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!("legacy text port cannot accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Answers each line of one connection until the client closes it.
async fn serve(app: Arc<App>, mut tcp: TcpStream) {
    let max_line = app.config.api.max_body_bytes;
    let mut buf = BytesMut::new();
    let mut answers = Vec::new();
    // Inside a line that was too long (already answered): discard up to its newline.
    let mut skipping = false;
    loop {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(end + 1);
            if std::mem::take(&mut skipping) {
                continue; // the end of a line already answered as too long
            }
            answers.extend_from_slice(if end > max_line {
                FAIL
            } else {
                answer(&app, &line[..end]).await
            });
        }
        if buf.len() > max_line {
            if !skipping {
                answers.extend_from_slice(FAIL);
            }
            skipping = true;
            buf.clear();
        }
        if !answers.is_empty() && tcp.write_all(&answers).await.is_err() {
            return;
        }
        answers.clear();
        buf.reserve(READ_CHUNK);
        match tcp.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Pushes one line's object to its uid; `ok` when a live connection took it.
async fn answer(app: &App, line: &[u8]) -> &'static [u8] {
    let Some((uid, data)) = parse(line) else {
        return FAIL;
    };
    match app.broker.publish(&Target::Uid(uid), &data, true).await {
        Ok(published) if published.delivered > 0 => OK,
        Ok(_) => FAIL,
        Err(e) => {
            tracing::warn!("legacy text port: push failed: {e}");
            FAIL
        }
    }
}

/// The uid and the whole object of a line `{"uid":..., ...}`, or `None`.
fn parse(line: &[u8]) -> Option<(String, Box<RawValue>)> {
    #[derive(Deserialize)]
    struct Line {
        uid: Value,
    }
    let text = std::str::from_utf8(line).ok()?.trim();
    // serde would also read a struct from a JSON array; only objects count.
    if !text.starts_with('{') {
        return None;
    }
    let data: Box<RawValue> = serde_json::from_str(text).ok()?;
    let uid = match serde_json::from_str::<Line>(data.get()).ok()?.uid {
        Value::String(s) => s,
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return None,
    };
    valid_uid(&uid).then_some((uid, data))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn only_objects_with_a_valid_uid_parse() {
        let (uid, data) = parse(br#" {"uid":"u1","percent":"88%"} "#).unwrap();
        assert_eq!(
            (uid.as_str(), data.get()),
            ("u1", r#"{"uid":"u1","percent":"88%"}"#)
        );
        assert_eq!(parse(br#"{"uid":42}"#).unwrap().0, "42");
        for bad in [
            &b"not json"[..],
            br#"["u1"]"#,
            br#"{"to":"u1"}"#,
            br#"{"uid":"bad uid"}"#,
            br#"{"uid":-1}"#,
            br#"{"uid":null}"#,
            b"",
            b"\xff\xfe",
        ] {
            assert!(parse(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

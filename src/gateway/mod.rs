//! The WebSocket endpoint. actix-http hands every `Upgrade: websocket` request, with its
//! raw socket, to [`upgrade_service`]: it checks the path and the ticket, answers `101`
//! (echoing the first offered subprotocol) and runs the connection ([`connection`]) on
//! the socket itself, with no HTTP-layer buffers left attached to it. A plain `GET` on
//! the WebSocket path reaches [`not_websocket`] through the normal routes.
//!
//! Bad credentials and a full server still complete the upgrade, so the client can read
//! the close code, and are closed at once; nothing is delivered to them.
//!
//! Everything here is generic over the [`Socket`]: plain TCP, or TLS when
//! `server.tls_cert` is set ([`socket`] explains how).

mod connection;
mod messages;
mod socket;

pub use socket::Socket;

use std::{io, sync::Arc};

use actix_codec::Framed;
use actix_http::{h1, ws, Request};
use actix_service::{fn_service, ServiceFactory};
use actix_web::{http::header::SEC_WEBSOCKET_PROTOCOL, HttpMessage, HttpResponse};
use bytes::BytesMut;

use crate::{
    auth::{first_protocol, AuthError, Ticket},
    hub::Conn,
    protocol::{self, close, now_secs},
    server::App,
};

/// A plain `GET` (no upgrade) on the WebSocket path.
pub async fn not_websocket() -> HttpResponse {
    crate::api::error_response(
        actix_web::http::StatusCode::BAD_REQUEST,
        "not_websocket",
        "this endpoint only accepts WebSocket upgrades",
    )
}

/// The service actix-http calls with each upgrade request and its socket.
pub fn upgrade_service<S: Socket>(
    app: Arc<App>,
) -> impl ServiceFactory<
    (Request, Framed<S, h1::Codec>),
    Config = (),
    Response = (),
    Error = actix_web::Error,
    InitError = (),
> {
    fn_service(move |(req, framed): (Request, Framed<S, h1::Codec>)| {
        let app = app.clone();
        async move {
            // Keep the socket and any bytes read past the request; drop HTTP buffers.
            let parts = framed.into_parts();
            let (mut io, leftover) = (parts.io, parts.read_buf);
            drop(parts.write_buf);
            let outcome = if req.path() != app.config.server.ws_path {
                refuse(&mut io, "404 Not Found", "not_found", "no such route").await
            } else if ws::verify_handshake(req.head()).is_err() {
                let msg = "not a valid WebSocket upgrade";
                refuse(&mut io, "400 Bad Request", "not_websocket", msg).await
            } else {
                let accept = accept_key(&req);
                upgrade(app, req, io, leftover, accept).await
            };
            // A socket error only ends this connection.
            if let Err(e) = outcome {
                tracing::debug!("upgrade connection ended: {e}");
            }
            Ok(())
        }
    })
}

fn accept_key(req: &Request) -> String {
    let key = req
        .headers()
        .get(actix_web::http::header::SEC_WEBSOCKET_KEY)
        .map(|k| ws::hash_key(k.as_bytes()))
        .unwrap_or_default();
    String::from_utf8_lossy(&key).into_owned()
}

/// Answers a request that cannot be upgraded with a JSON error, then closes.
async fn refuse(io: &mut impl Socket, status: &str, code: &str, message: &str) -> io::Result<()> {
    let body = serde_json::json!({ "ok": false, "error": code, "message": message }).to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket::write_all(io, format!("{head}{body}").as_bytes()).await?;
    io.shutdown().await;
    Ok(())
}

/// Verifies the ticket, answers `101`, and runs the connection (or its refusal).
async fn upgrade<S: Socket>(
    app: Arc<App>,
    req: Request,
    mut io: S,
    leftover: BytesMut,
    accept: String,
) -> io::Result<()> {
    let mut values = Vec::new();
    let mut readable = true;
    for v in req.headers().get_all(SEC_WEBSOCKET_PROTOCOL) {
        match v.to_str() {
            Ok(s) => values.push(s),
            Err(_) => readable = false,
        }
    }
    let verdict = if readable {
        Ticket::parse(&values).and_then(|t| {
            let auth = &app.config.auth;
            t.verify(&auth.tokens, now_secs(), auth.max_skew_secs)
                .map(|()| t)
        })
    } else {
        Err(AuthError::Malformed)
    };
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {accept}\r\n"
    );
    // Browsers and WeChat fail a handshake whose answer omits the first offered value.
    if let Some(first) = first_protocol(&values).filter(|p| p.bytes().all(|b| b.is_ascii_graphic()))
    {
        head.push_str(&format!("sec-websocket-protocol: {first}\r\n"));
    }
    head.push_str("\r\n");
    drop(req);
    connection::limit_unacked(io.tcp(), app.config.heartbeat.timeout_secs);
    socket::write_all(&mut io, head.as_bytes()).await?;

    let limits = &app.config.limits;
    let uid = verdict.as_ref().ok().and_then(|t| t.uid.as_deref());
    let conn = Conn::new(
        app.new_conn_id(),
        uid.map(Into::into),
        app.hub.next_serial(),
        limits.outbound_queue,
    );
    let admitted = match verdict {
        Err(e) => {
            app.metrics.handshake(e.label());
            conn.close(e.close_code(), &e.to_string());
            false
        }
        Ok(_) => {
            let (node, epoch) = (&app.node_id, app.broker.epoch());
            let heartbeat = app.config.heartbeat.interval_secs;
            let welcome = |seqs: &[(String, u64)]| {
                protocol::welcome(
                    conn.id(),
                    conn.uid().map(|u| &**u),
                    node,
                    epoch,
                    heartbeat,
                    seqs,
                )
            };
            let attached = app
                .broker
                .attach(&conn, limits.max_connections, &welcome)
                .await;
            if matches!(attached, Ok(true)) {
                app.metrics.handshake("ok");
                true
            } else {
                // Full, or the broker cannot register it: either way, come back later.
                let reason = match attached {
                    Err(_) => "broker unavailable: try again later",
                    _ => "server full",
                };
                app.metrics.handshake("server_full");
                conn.discard_queue();
                conn.close(close::SERVER_FULL, reason);
                false
            }
        }
    };
    // The connection runs as its own small task; the HTTP dispatcher is done with it.
    let live = app.connection_started();
    actix_web::rt::spawn(async move {
        connection::run(app, conn, io, leftover, admitted).await;
        drop(live);
    });
    Ok(())
}

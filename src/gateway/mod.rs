//! The WebSocket endpoint: the signed handshake, then, per connection, a reader task and
//! a writer.
//!
//! - The reader task decodes client frames, enforces the rate limit and the idle timeout,
//!   and handles messages one at a time, in order ([`messages`]); while one is being
//!   handled (an upstream call may take seconds) reading pauses, but pushes keep flowing.
//! - The [`writer`] is the upgrade response's body: it writes the connection's queue
//!   (welcome, pushes, replies, errors, in the order they were produced), pings, and the
//!   close frame.
//!
//! Every close goes through [`Conn::close`]; the reader then waits (at most
//! [`CLOSE_WAIT`]) for the client's close frame, and the connection ends.

mod messages;
mod writer;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use actix_web::{
    body::BodyStream,
    http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL},
    web, HttpRequest, HttpResponse,
};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, ProtocolError};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::{
    auth::{first_protocol, AuthError, Ticket},
    hub::{conn::Peer, CloseRequest, Conn},
    protocol::{self, close, code, now_secs, ClientMessage},
    server::App,
};

/// Consecutive `rate_limited` answers after which the connection is closed with 4029.
const RATE_LIMIT_STRIKES: u32 = 10;
/// How long a closing client gets to answer our close frame.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a new connection remembers its first live pushes for a `resume` to come.
const RESUME_WINDOW: Duration = Duration::from_secs(60);

/// `GET <ws_path>`: verifies the ticket and upgrades. Bad credentials still upgrade (so
/// the client can read the close code) and are closed at once; nothing is delivered.
pub async fn ws_route(req: HttpRequest, body: web::Payload, app: web::Data<App>) -> HttpResponse {
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
    // actix-ws validates the upgrade and decodes incoming frames; outgoing frames are
    // written by our own body, so its session channel is not used.
    let (res, _session, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(_) => {
            return crate::api::error_response(
                actix_web::http::StatusCode::BAD_REQUEST,
                "not_websocket",
                "this endpoint only accepts WebSocket upgrades",
            )
        }
    };
    let app = app.into_inner();
    let limits = &app.config.limits;
    let stream = stream
        .max_frame_size(limits.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(limits.max_frame_bytes);
    let conn = Conn::new(
        app.new_conn_id(),
        verdict
            .as_ref()
            .ok()
            .and_then(|t| t.uid.as_deref())
            .map(Into::into),
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
            conn.send(&protocol::welcome(
                conn.id(),
                conn.uid().map(|u| &**u),
                &app.node_id,
                app.broker.epoch(),
                app.config.heartbeat.interval_secs,
            ));
            if app.hub.register(&conn, limits.max_connections) {
                app.metrics.handshake("ok");
                true
            } else {
                app.metrics.handshake("server_full");
                conn.discard_queue();
                conn.close(close::SERVER_FULL, "server full");
                false
            }
        }
    };
    let ping = admitted.then(|| Duration::from_secs(app.config.heartbeat.interval_secs));
    let writer = writer::Writer::new(conn.clone(), app.metrics.clone(), ping);
    actix_web::rt::spawn(read(app, conn, stream, admitted));
    let mut res = res.set_body(BodyStream::new(writer)).map_into_boxed_body();
    if let Some(first) = first_protocol(&values).and_then(|p| HeaderValue::from_str(&p).ok()) {
        res.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, first);
    }
    res
}

/// The reader task: runs an admitted connection until it must close, then waits for the
/// client's close frame. A refused connection only does the waiting.
async fn read(app: Arc<App>, conn: Arc<Conn>, mut frames: AggregatedMessageStream, admitted: bool) {
    let peer = if admitted {
        let mut link = Link {
            app: app.clone(),
            conn: conn.clone(),
            bucket: TokenBucket::new(app.config.limits.client_msgs_per_sec),
            strikes: 0,
        };
        let peer = link.run(&mut frames).await;
        app.hub.unregister(&conn);
        peer
    } else {
        Peer::Open
    };
    if peer == Peer::Open {
        let answered = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(msg)) = frames.next().await {
                if matches!(msg, AggregatedMessage::Close(_)) {
                    return Peer::Closed;
                }
            }
            Peer::Gone
        })
        .await;
        conn.peer(answered.unwrap_or(Peer::Gone));
    } else {
        conn.peer(peer);
    }
    // Whatever a client that never read is still owed, it will not get.
    conn.discard_queue();
}

type Pending = Pin<Box<dyn Future<Output = ()>>>;

/// One admitted connection's reading state.
struct Link {
    app: Arc<App>,
    conn: Arc<Conn>,
    bucket: TokenBucket,
    strikes: u32,
}

impl Link {
    /// Reads until the connection is asked to close or the client closes or vanishes;
    /// returns where the client stands.
    async fn run(&mut self, frames: &mut AggregatedMessageStream) -> Peer {
        let timeout = Duration::from_secs(self.app.config.heartbeat.timeout_secs);
        let mut last_seen = Instant::now();
        let idle = tokio::time::sleep(timeout);
        tokio::pin!(idle);
        let resume_window = tokio::time::sleep(RESUME_WINDOW);
        tokio::pin!(resume_window);
        let mut recording = true;
        let mut pending: Option<Pending> = None;
        let conn = self.conn.clone();
        loop {
            tokio::select! {
                biased;
                _ = conn.closing() => return Peer::Open,
                () = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    pending = None;
                }
                msg = frames.next(), if pending.is_none() => {
                    last_seen = Instant::now();
                    self.app.metrics.frame_in();
                    match msg {
                        None => {
                            conn.close(close::GOING_AWAY, "client went away");
                            return Peer::Gone;
                        }
                        Some(Err(e)) => {
                            let req = protocol_close(&e);
                            conn.close(req.code, &req.reason);
                            return Peer::Open;
                        }
                        Some(Ok(AggregatedMessage::Close(reason))) => {
                            // Answer with the client's own code.
                            conn.peer(Peer::Closed);
                            conn.close(reason.map_or(1000, |r| u16::from(r.code)), "");
                            return Peer::Closed;
                        }
                        Some(Ok(msg)) => pending = self.on_frame(msg),
                    }
                }
                () = &mut idle => {
                    if last_seen.elapsed() >= timeout {
                        conn.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    } else {
                        idle.as_mut().reset(last_seen + timeout);
                    }
                }
                () = &mut resume_window, if recording => {
                    recording = false;
                    conn.stop_recording();
                }
            }
        }
    }

    /// Handles one frame; returns the message handling to await, if any.
    fn on_frame(&mut self, msg: AggregatedMessage) -> Option<Pending> {
        match msg {
            AggregatedMessage::Text(text) => self.on_text(&text),
            AggregatedMessage::Binary(_) => {
                if !self.rate_limited(None) {
                    self.conn.send(&protocol::error(
                        None,
                        code::BINARY_NOT_SUPPORTED,
                        "send JSON in text frames",
                    ));
                }
                None
            }
            AggregatedMessage::Ping(bytes) => {
                self.conn.pong(bytes);
                None
            }
            AggregatedMessage::Pong(_) | AggregatedMessage::Close(_) => None,
        }
    }

    fn on_text(&mut self, text: &str) -> Option<Pending> {
        let parsed = ClientMessage::parse(text);
        let reference = match &parsed {
            Ok(m) => m.id().map(str::to_string),
            Err(e) => e.reference.clone(),
        };
        if self.rate_limited(reference.as_deref()) {
            return None;
        }
        match parsed {
            Err(e) => {
                self.conn.send(&e.to_frame());
                None
            }
            Ok(msg) if msg.ty() == "ping" => {
                self.conn.send(&protocol::pong());
                None
            }
            Ok(msg) => Some(Box::pin(messages::handle(
                self.app.clone(),
                self.conn.clone(),
                msg,
            ))),
        }
    }

    /// Takes a token; without one, answers `rate_limited` and, after ten in a row, closes.
    fn rate_limited(&mut self, reference: Option<&str>) -> bool {
        if self.bucket.take() {
            self.strikes = 0;
            return false;
        }
        self.strikes += 1;
        self.app.metrics.dropped("rate_limited");
        self.conn.send(&protocol::error(
            reference,
            code::RATE_LIMITED,
            "too many messages: slow down",
        ));
        if self.strikes >= RATE_LIMIT_STRIKES {
            self.conn
                .close(close::RATE_LIMITED, "too many messages from this client");
        }
        true
    }
}

fn protocol_close(e: &ProtocolError) -> CloseRequest {
    let (code, reason) = match e {
        ProtocolError::Overflow => (close::TOO_BIG, "frame larger than limits.max_frame_bytes"),
        // actix-ws reports an oversized fragmented message only through this message.
        ProtocolError::Io(io) if io.to_string().contains("maximum continuation size") => {
            (close::TOO_BIG, "message larger than limits.max_frame_bytes")
        }
        ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            (close::INVALID_PAYLOAD, "text frame is not valid UTF-8")
        }
        _ => (close::PROTOCOL_ERROR, "WebSocket protocol error"),
    };
    CloseRequest {
        code,
        reason: reason.into(),
    }
}

/// `client_msgs_per_sec` tokens a second, bursts up to twice that.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_sec: u32) -> Self {
        let rate = f64::from(per_sec);
        TokenBucket {
            rate,
            tokens: rate * 2.0,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate * 2.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

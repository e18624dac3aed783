//! The WebSocket endpoint: the signed handshake, then one task per connection that reads
//! client frames, writes the connection's outbound queue, enforces the rate limit and
//! the heartbeat, and closes with the documented code.
//!
//! Every frame to the client (welcome, pushes, replies, errors) goes through the
//! connection's bounded queue, so they leave in the order they were produced. Client
//! messages are handled one at a time, in order; while one is being handled (an upstream
//! call may take seconds) reading pauses, but pushes and heartbeats keep flowing.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use actix_web::{
    http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL},
    web, HttpRequest, HttpResponse,
};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseReason, ProtocolError, Session};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::{
    auth::{first_protocol, valid_uid, AuthError, Ticket},
    handlers::{Ctx, HandlerError},
    hub::{CloseRequest, Conn},
    protocol::{self, close, code, now_secs, valid_group, ClientMessage},
    server::App,
};

/// Consecutive `rate_limited` answers after which the connection is closed with 4029.
const RATE_LIMIT_STRIKES: u32 = 10;
/// How long a refused or closed client gets to answer our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a new connection remembers its first live pushes for a `resume` to come.
const RESUME_WINDOW: Duration = Duration::from_secs(60);
/// Frames written to the socket per wake-up before other work gets a turn.
const WRITE_BATCH: usize = 64;

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
            t.verify(
                &app.config.auth.tokens,
                now_secs(),
                app.config.auth.max_skew_secs,
            )
            .map(|()| t)
        })
    } else {
        Err(AuthError::Malformed)
    };
    let (mut res, session, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(_) => {
            return crate::api::error_response(
                actix_web::http::StatusCode::BAD_REQUEST,
                "not_websocket",
                "this endpoint only accepts WebSocket upgrades",
            )
        }
    };
    if let Some(first) = first_protocol(&values).and_then(|p| HeaderValue::from_str(&p).ok()) {
        res.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, first);
    }
    let app = app.into_inner();
    let max = app.config.limits.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    match verdict {
        Err(e) => {
            app.metrics.handshake(e.label());
            actix_web::rt::spawn(finish(session, stream, e.close_code(), e.to_string()));
        }
        Ok(ticket) => {
            actix_web::rt::spawn(serve(app, session, stream, ticket.uid));
        }
    }
    res
}

/// Sends a close frame, waits briefly for the client's, then lets the connection drop.
async fn finish(session: Session, stream: AggregatedMessageStream, code: u16, reason: String) {
    close_link(session, stream, None, CloseRequest { code, reason }).await;
}

/// Closes a connection: flushes what is queued (unless it overflowed), sends the close
/// frame, and waits for the client's answer; each step is bounded by [`CLOSE_WAIT`], so a
/// client that stopped reading cannot hold the task.
async fn close_link(
    mut session: Session,
    mut stream: AggregatedMessageStream,
    queue: Option<tokio::sync::mpsc::Receiver<bytestring::ByteString>>,
    req: CloseRequest,
) {
    let sent = tokio::time::timeout(CLOSE_WAIT, async {
        if let Some(mut rx) = queue.filter(|_| req.code != close::SLOW_CONSUMER) {
            while let Ok(frame) = rx.try_recv() {
                session.text(frame).await?;
            }
        }
        let reason = CloseReason {
            code: req.code.into(),
            description: Some(req.reason),
        };
        session.close(Some(reason)).await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, AggregatedMessage::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Runs one authenticated connection from welcome to close.
async fn serve(
    app: Arc<App>,
    session: Session,
    stream: AggregatedMessageStream,
    uid: Option<String>,
) {
    let limits = &app.config.limits;
    let (conn, rx) = Conn::new(
        app.new_conn_id(),
        uid.map(Into::into),
        app.hub.next_serial(),
        limits.outbound_queue,
    );
    conn.send(&protocol::welcome(
        conn.id(),
        conn.uid().map(|u| &**u),
        &app.node_id,
        app.broker.epoch(),
        app.config.heartbeat.interval_secs,
    ));
    if !app.hub.register(&conn, limits.max_connections) {
        app.metrics.handshake("server_full");
        finish(session, stream, close::SERVER_FULL, "server full".into()).await;
        return;
    }
    app.metrics.handshake("ok");
    let mut link = Link {
        app: app.clone(),
        conn: conn.clone(),
        session,
        rx,
        bucket: TokenBucket::new(limits.client_msgs_per_sec),
        strikes: 0,
    };
    let outcome = link.run(stream).await;
    app.hub.unregister(&conn);
    if let Some((req, stream)) = outcome {
        close_link(link.session, stream, Some(link.rx), req).await;
    }
}

type Pending = Pin<Box<dyn Future<Output = ()>>>;

/// One connection's loop state.
struct Link {
    app: Arc<App>,
    conn: Arc<Conn>,
    session: Session,
    rx: tokio::sync::mpsc::Receiver<bytestring::ByteString>,
    bucket: TokenBucket,
    strikes: u32,
}

impl Link {
    /// Runs until the connection must close (returns how, with the stream to finish it)
    /// or the peer is gone (returns `None`).
    async fn run(
        &mut self,
        mut frames: AggregatedMessageStream,
    ) -> Option<(CloseRequest, AggregatedMessageStream)> {
        let hb = &self.app.config.heartbeat;
        let interval = Duration::from_secs(hb.interval_secs);
        let timeout = Duration::from_secs(hb.timeout_secs);
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut last_seen = Instant::now();
        let idle = tokio::time::sleep(timeout);
        tokio::pin!(idle);
        let mut pending: Option<Pending> = None;
        let resume_window = tokio::time::sleep(RESUME_WINDOW);
        tokio::pin!(resume_window);
        let mut recording = true;
        let conn = self.conn.clone();

        let req = loop {
            tokio::select! {
                biased;
                req = conn.closing() => break req,
                Some(frame) = self.rx.recv() => {
                    if !self.write(frame).await {
                        return None;
                    }
                }
                () = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    pending = None;
                }
                msg = frames.next(), if pending.is_none() => {
                    last_seen = Instant::now();
                    self.app.metrics.frame_in();
                    match msg {
                        None => return None,
                        Some(Ok(msg)) => match self.on_frame(msg) {
                            Step::Continue => {}
                            Step::Handle(fut) => pending = Some(fut),
                            Step::Pong(bytes) => {
                                if self.session.pong(&bytes).await.is_err() {
                                    return None;
                                }
                            }
                            Step::Close(req) => break req,
                        },
                        Some(Err(e)) => break protocol_close(&e),
                    }
                }
                _ = ping.tick() => {
                    if self.session.ping(b"").await.is_err() {
                        return None;
                    }
                }
                () = &mut resume_window, if recording => {
                    recording = false;
                    conn.stop_recording();
                }
                () = &mut idle => {
                    if last_seen.elapsed() >= timeout {
                        break CloseRequest {
                            code: close::HEARTBEAT_TIMEOUT,
                            reason: "heartbeat timeout".into(),
                        };
                    }
                    idle.as_mut().reset(last_seen + timeout);
                }
            }
        };
        Some((req, frames))
    }

    /// Writes one frame and whatever else is queued, up to a batch. False if the peer is
    /// gone. A close request interrupts a write that waits on a client that stopped reading.
    async fn write(&mut self, frame: bytestring::ByteString) -> bool {
        let conn = self.conn.clone();
        tokio::select! {
            biased;
            _ = conn.closing() => true,
            written = self.write_batch(frame) => written,
        }
    }

    async fn write_batch(&mut self, frame: bytestring::ByteString) -> bool {
        if self.session.text(frame).await.is_err() {
            return false;
        }
        let mut n = 1;
        while n < WRITE_BATCH {
            let Ok(frame) = self.rx.try_recv() else { break };
            if self.session.text(frame).await.is_err() {
                return false;
            }
            n += 1;
        }
        self.app.metrics.frames_out(n as u64);
        true
    }

    fn on_frame(&mut self, msg: AggregatedMessage) -> Step {
        match msg {
            AggregatedMessage::Text(text) => self.on_text(&text),
            AggregatedMessage::Binary(_) => {
                if self.rate_limited(None) {
                    return Step::Continue;
                }
                self.conn.send(&protocol::error(
                    None,
                    code::BINARY_NOT_SUPPORTED,
                    "send JSON in text frames",
                ));
                Step::Continue
            }
            AggregatedMessage::Ping(bytes) => Step::Pong(bytes),
            AggregatedMessage::Pong(_) => Step::Continue,
            AggregatedMessage::Close(reason) => Step::Close(CloseRequest {
                code: reason.map_or(1000, |r| u16::from(r.code)),
                reason: String::new(),
            }),
        }
    }

    fn on_text(&mut self, text: &str) -> Step {
        let parsed = ClientMessage::parse(text);
        let reference = match &parsed {
            Ok(m) => m.id().map(str::to_string),
            Err(e) => e.reference.clone(),
        };
        if self.rate_limited(reference.as_deref()) {
            return Step::Continue;
        }
        match parsed {
            Err(e) => {
                self.conn.send(&e.to_frame());
                Step::Continue
            }
            Ok(msg) if msg.ty() == "ping" => {
                self.conn.send(&protocol::pong());
                Step::Continue
            }
            Ok(msg) => Step::Handle(Box::pin(handle(self.app.clone(), self.conn.clone(), msg))),
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

enum Step {
    Continue,
    Handle(Pending),
    Pong(web::Bytes),
    Close(CloseRequest),
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

/// Handles one decoded client message and queues its answer (`reply` or `error`).
async fn handle(app: Arc<App>, conn: Arc<Conn>, msg: ClientMessage) {
    let answer = match msg.ty() {
        "join" | "leave" => membership(&app, &conn, &msg).await,
        "resume" => resume(&app, &conn, &msg).await,
        "bind" => bind(&app, &conn, &msg),
        ty => match app.handlers.find(ty) {
            Some(handler) => {
                let ctx = Ctx::new(conn.clone(), app.broker.clone());
                handler
                    .handle(&ctx, &msg)
                    .await
                    .map(|reply| protocol::reply(msg.id(), reply.get()))
            }
            None => Err(HandlerError::new(
                code::UNKNOWN_TYPE,
                format!("no handler for type {ty:?}"),
            )),
        },
    };
    let frame = answer.unwrap_or_else(|e| protocol::error(msg.id(), &e.code, &e.message));
    conn.send(&frame);
}

fn reply_json(msg: &ClientMessage, value: serde_json::Value) -> bytestring::ByteString {
    let raw = serde_json::value::to_raw_value(&value).expect("a Value is always JSON");
    protocol::reply(msg.id(), &raw)
}

type Answer = Result<bytestring::ByteString, HandlerError>;

async fn membership(app: &App, conn: &Arc<Conn>, msg: &ClientMessage) -> Answer {
    let group: String = msg.field("group")?;
    if !valid_group(&group) {
        return Err(msg.bad_request("invalid group name").into());
    }
    if msg.ty() == "join" {
        if !app.config.groups.client_join {
            return Err(HandlerError::new(
                code::FORBIDDEN,
                "clients may not join groups on this server",
            ));
        }
        app.broker.join(conn, &group).await?;
        Ok(reply_json(msg, serde_json::json!({ "joined": group })))
    } else {
        app.broker.leave(conn, &group).await?;
        Ok(reply_json(msg, serde_json::json!({ "left": group })))
    }
}

async fn resume(app: &App, conn: &Arc<Conn>, msg: &ClientMessage) -> Answer {
    let streams: std::collections::BTreeMap<String, u64> = msg.field("streams")?;
    let epoch: String = msg.field("epoch")?;
    let same_epoch = epoch == app.broker.epoch();
    let (mut resumed, mut complete) = (0, same_epoch);
    for (stream, after) in streams {
        if !may_read(conn, &stream) {
            continue;
        }
        // Across epochs the client's numbers mean nothing here: replay all we have.
        let after = if same_epoch { after } else { 0 };
        let r = app.broker.resume(conn, &stream, after).await?;
        resumed += r.sent;
        complete &= r.complete;
    }
    conn.stop_recording();
    Ok(reply_json(
        msg,
        serde_json::json!({ "resumed": resumed, "complete": complete }),
    ))
}

/// Whether `conn` may read `stream`: its own uid stream, its groups, and `all`.
fn may_read(conn: &Conn, stream: &str) -> bool {
    if stream == "all" {
        return true;
    }
    if let Some(uid) = stream.strip_prefix("u:") {
        return conn.uid().is_some_and(|u| &**u == uid);
    }
    stream.strip_prefix("g:").is_some_and(|g| conn.in_group(g))
}

fn bind(app: &App, conn: &Arc<Conn>, msg: &ClientMessage) -> Answer {
    if !app.config.auth.allow_client_bind {
        return Err(HandlerError::new(
            code::FORBIDDEN,
            "bind is disabled (auth.allow_client_bind = false); use a ticket bound to the uid",
        ));
    }
    let uid: String = msg.field("uid")?;
    if !valid_uid(&uid) {
        return Err(HandlerError::bad_request("invalid uid"));
    }
    if !app.hub.bind(conn, &uid) {
        return Err(HandlerError::bad_request(
            "this connection already has a uid",
        ));
    }
    Ok(reply_json(msg, serde_json::json!({ "bound": uid })))
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

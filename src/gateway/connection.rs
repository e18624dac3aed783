//! One WebSocket connection on its raw socket: a single task that writes the
//! connection's queue, reads and decodes client frames, pings, and enforces the rate
//! limit and the idle timeout.
//!
//! - Writing: queued frames (already encoded, shared by every recipient) go out with
//!   vectored writes, many frames per system call, never copied. When the socket is full
//!   the task stops taking frames, the queue fills, and producers see the overflow (4008).
//! - Reading: bytes are read only when the socket is readable, into a buffer that is
//!   freed again as soon as it is empty, so an idle connection holds no buffer at all.
//! - Messages are handled one at a time, in order ([`super::messages`]); while one is
//!   being handled (an upstream call may take seconds) reading pauses, writing does not.
//! - Closing: every close goes through [`Conn::close`]. The task flushes what is queued
//!   (unless the client overflowed), writes the close frame, waits at most [`CLOSE_WAIT`]
//!   for the client's close frame, and shuts the socket.

use std::{
    collections::VecDeque,
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use actix_codec::Decoder;
use actix_http::ws::{self, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use tokio::{net::TcpStream, time::Instant};

use super::{messages, socket::Socket};
use crate::{
    hub::{
        conn::{Taken, QUEUE_KEEP},
        Conn,
    },
    protocol::{self, close, code, ClientMessage, Frame},
    ratelimit::TokenBucket,
    server::App,
};

/// How long a closing client gets to read our last frames and answer our close frame.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Consecutive `rate_limited` answers after which the connection is closed with 4029.
const RATE_LIMIT_STRIKES: u32 = 10;
/// How long a new connection remembers its first live pushes for a `resume` to come.
const RESUME_WINDOW: Duration = Duration::from_secs(60);
/// Frames taken from the queue, and handed to one vectored write, at a time.
const BATCH: usize = 64;
/// Bytes reserved for each read.
const READ_CHUNK: usize = 4096;

/// Sets `TCP_USER_TIMEOUT`: a peer that leaves our data unacknowledged (it stopped
/// reading, or vanished) for the heartbeat timeout is dropped by the kernel, which frees
/// the socket even if the client never reads our close frame.
pub fn limit_unacked(io: &TcpStream, secs: u64) {
    let limit = Some(Duration::from_secs(secs));
    if let Err(e) = socket2::SockRef::from(io).set_tcp_user_timeout(limit) {
        tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
}

/// Where the client stands when reading stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Still there: we close, it should answer.
    Open,
    /// It sent its close frame: ours is the answer.
    Closed,
    /// Its side ended: nothing more is written.
    Gone,
}

type Pending = Pin<Box<dyn Future<Output = ()>>>;

struct Link<S> {
    app: Arc<App>,
    conn: Arc<Conn>,
    io: S,
    codec: ws::Codec,
    read_buf: BytesMut,
    /// A fragmented message being assembled: its bytes and whether it is text.
    fragments: Option<(BytesMut, bool)>,
    out: VecDeque<Frame>,
    /// Bytes of `out`'s first frame already written.
    written: usize,
    bucket: TokenBucket,
    strikes: u32,
}

/// Runs a connection to its end. A refused connection (`admitted` false) already has its
/// close request and only goes through the closing handshake.
pub async fn run<S: Socket>(
    app: Arc<App>,
    conn: Arc<Conn>,
    io: S,
    leftover: BytesMut,
    admitted: bool,
) {
    let max = app.config.limits.max_frame_bytes;
    // `client_msgs_per_sec` tokens a second, bursts up to twice that.
    let rate = f64::from(app.config.limits.client_msgs_per_sec);
    let mut link = Link {
        bucket: TokenBucket::new(rate, rate * 2.0),
        app: app.clone(),
        conn: conn.clone(),
        io,
        codec: ws::Codec::new().max_size(max),
        read_buf: leftover,
        fragments: None,
        out: VecDeque::new(),
        written: 0,
        strikes: 0,
    };
    let peer = if admitted {
        app.hub.pace(&conn);
        let peer = link.serve().await;
        app.broker.detach(&conn).await;
        peer
    } else {
        Peer::Open
    };
    link.finish(peer).await;
    conn.discard_queue();
}

impl<S: Socket> Link<S> {
    /// Serves until the connection must close; returns where the client stands.
    async fn serve(&mut self) -> Peer {
        let hb = &self.app.config.heartbeat;
        let interval = Duration::from_secs(hb.interval_secs);
        let timeout = Duration::from_secs(hb.timeout_secs);
        let started = Instant::now();
        let mut last_seen = started;
        let mut next_ping = started + interval;
        let mut resume_until = Some(started + RESUME_WINDOW);
        // One timer per connection: the next ping, idle check or end of the resume window.
        let timer = tokio::time::sleep_until(next_ping.min(started + timeout));
        tokio::pin!(timer);
        let mut pending: Option<Pending> = None;
        let conn = self.conn.clone();
        // Frames that arrived with the upgrade request.
        if let Err(peer) = self.decode(&mut pending) {
            return peer;
        }
        loop {
            // One lock: take frames when the last batch is written, and see a close request.
            let take = if self.out.is_empty() { BATCH } else { 0 };
            match conn.take_frames(&mut self.out, take) {
                Taken::Open => {}
                Taken::Closing => return Peer::Open,
                Taken::Overrun => {
                    self.app.metrics.dropped("slow_consumer");
                    return Peer::Open;
                }
            }
            tokio::select! {
                biased;
                // Frames queued or a close requested (even while a write waits).
                () = conn.changed() => {}
                ready = self.io.writable(), if !self.out.is_empty() || self.io.pending_output() => {
                    if ready.is_err() || self.write_some().is_err() {
                        return Peer::Gone;
                    }
                }
                () = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    pending = None;
                    if let Err(peer) = self.decode(&mut pending) {
                        return peer;
                    }
                }
                ready = self.io.readable(), if pending.is_none() => {
                    if ready.is_err() {
                        return Peer::Gone;
                    }
                    match self.read_some() {
                        Ok(0) => return Peer::Gone,
                        Ok(_) => {
                            last_seen = Instant::now();
                            if let Err(peer) = self.decode(&mut pending) {
                                return peer;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Peer::Gone,
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= next_ping {
                        self.out.push_back(Frame::ping());
                        next_ping = now + interval;
                    }
                    if resume_until.is_some_and(|until| now >= until) {
                        resume_until = None;
                        conn.stop_recording();
                    }
                    if now >= last_seen + timeout {
                        conn.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    }
                    let next = next_ping.min(last_seen + timeout);
                    timer.as_mut().reset(resume_until.map_or(next, |until| next.min(until)));
                }
            }
        }
    }

    /// Writes as much of `out` as the socket takes now, in one vectored write (or, with
    /// nothing queued, what the socket still holds: TLS records).
    fn write_some(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return match self.io.flush_pending() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                other => other,
            };
        }
        let mut slices = [IoSlice::new(&[]); BATCH];
        let mut n = 0;
        for (i, frame) in self.out.iter().take(BATCH).enumerate() {
            let bytes = frame.bytes();
            slices[i] = IoSlice::new(if i == 0 {
                &bytes[self.written..]
            } else {
                bytes
            });
            n += 1;
        }
        let mut wrote = match self.io.try_write_vectored(&slices[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(wrote) => wrote,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut done = 0;
        while let Some(front) = self.out.front() {
            let left = front.bytes().len() - self.written;
            if wrote < left {
                self.written += wrote;
                break;
            }
            wrote -= left;
            self.written = 0;
            self.out.pop_front();
            done += 1;
        }
        self.app.metrics.frames_out(done);
        if self.out.is_empty() && self.out.capacity() > QUEUE_KEEP {
            self.out = VecDeque::new();
        }
        Ok(())
    }

    /// Reads what the socket has now (at most [`READ_CHUNK`]; a socket with more stays
    /// readable). Bytes land on the stack first and only what arrived is kept on the heap:
    /// thousands of idle connections answering a heartbeat at once then allocate a few
    /// bytes each, not a 4 KiB buffer each that the allocator could not give back.
    /// `Ok(0)` means the client closed its side.
    fn read_some(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = self.io.try_read(&mut chunk)?;
        self.read_buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Decodes and handles buffered frames until one needs awaiting (`pending`) or the
    /// buffer is empty. `Err` ends reading, saying where the client stands.
    fn decode(&mut self, pending: &mut Option<Pending>) -> Result<(), Peer> {
        while pending.is_none() {
            let frame = match self.codec.decode(&mut self.read_buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    let (code, reason) = protocol_error(&e);
                    self.conn.close(code, reason);
                    return Err(Peer::Open);
                }
            };
            self.app.metrics.frame_in();
            match frame {
                ws::Frame::Text(text) => *pending = self.on_text(text)?,
                ws::Frame::Binary(_) => self.on_binary(),
                ws::Frame::Continuation(item) => *pending = self.on_fragment(item)?,
                ws::Frame::Ping(payload) => self.out.push_back(Frame::pong(&payload)),
                ws::Frame::Pong(_) => {}
                ws::Frame::Close(reason) => {
                    // Answer with the client's own code.
                    self.conn
                        .close(reason.map_or(1000, |r| u16::from(r.code)), "");
                    return Err(Peer::Closed);
                }
            }
        }
        if self.read_buf.is_empty() {
            // An idle connection keeps no read buffer.
            self.read_buf = BytesMut::new();
        }
        Ok(())
    }

    fn on_fragment(&mut self, item: Item) -> Result<Option<Pending>, Peer> {
        let max = self.app.config.limits.max_frame_bytes;
        let (chunk, last) = match item {
            Item::FirstText(b) => {
                self.fragments = Some((BytesMut::new(), true));
                (b, false)
            }
            Item::FirstBinary(b) => {
                self.fragments = Some((BytesMut::new(), false));
                (b, false)
            }
            Item::Continue(b) => (b, false),
            Item::Last(b) => (b, true),
        };
        let Some((buf, _)) = self.fragments.as_mut() else {
            self.conn.close(
                close::PROTOCOL_ERROR,
                "continuation without a first fragment",
            );
            return Err(Peer::Open);
        };
        if buf.len() + chunk.len() > max {
            self.conn
                .close(close::TOO_BIG, "message larger than limits.max_frame_bytes");
            return Err(Peer::Open);
        }
        buf.extend_from_slice(&chunk);
        if !last {
            return Ok(None);
        }
        let (whole, text) = self.fragments.take().expect("checked above");
        if text {
            self.on_text(whole.freeze())
        } else {
            self.on_binary();
            Ok(None)
        }
    }

    fn on_binary(&mut self) {
        if !self.rate_limited(None) {
            self.conn.send(&protocol::error(
                None,
                code::BINARY_NOT_SUPPORTED,
                "send JSON in text frames",
            ));
        }
    }

    fn on_text(&mut self, bytes: Bytes) -> Result<Option<Pending>, Peer> {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            self.conn
                .close(close::INVALID_PAYLOAD, "text frame is not valid UTF-8");
            return Err(Peer::Open);
        };
        let parsed = ClientMessage::parse(text);
        let reference = match &parsed {
            Ok(m) => m.id().map(str::to_string),
            Err(e) => e.reference.clone(),
        };
        if self.rate_limited(reference.as_deref()) {
            return Ok(None);
        }
        Ok(match parsed {
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
        })
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

    /// The closing handshake: flush, close frame, wait for the client's, shut the socket.
    async fn finish(&mut self, peer: Peer) {
        if peer == Peer::Gone {
            return;
        }
        let req = self
            .conn
            .close_request()
            .unwrap_or(crate::hub::CloseRequest {
                code: 1000,
                reason: String::new(),
            });
        if peer == Peer::Open && req.code != close::SLOW_CONSUMER {
            self.conn.take_frames(&mut self.out, usize::MAX);
        } else if req.code == close::SLOW_CONSUMER {
            self.out.clear();
            self.written = 0;
        }
        self.out.push_back(Frame::close(req.code, &req.reason));
        let flushed = tokio::time::timeout(CLOSE_WAIT, async {
            while !self.out.is_empty() || self.io.pending_output() {
                self.io.writable().await?;
                self.write_some()?;
            }
            io::Result::Ok(())
        })
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            return;
        }
        if peer == Peer::Open {
            let _ = tokio::time::timeout(CLOSE_WAIT, self.await_close()).await;
        }
        self.io.shutdown().await;
    }

    /// Reads until the client's close frame or the end of its stream.
    async fn await_close(&mut self) {
        loop {
            loop {
                match self.codec.decode(&mut self.read_buf) {
                    Ok(Some(ws::Frame::Close(_))) | Err(_) => return,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                }
            }
            if self.io.readable().await.is_err() {
                return;
            }
            match self.read_some() {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

fn protocol_error(e: &ProtocolError) -> (u16, &'static str) {
    match e {
        ProtocolError::Overflow => (close::TOO_BIG, "frame larger than limits.max_frame_bytes"),
        _ => (close::PROTOCOL_ERROR, "WebSocket protocol error"),
    }
}

//! The writing half of a connection: the HTTP response body of the WebSocket upgrade.
//!
//! actix-web polls the body whenever the socket can take more bytes; each poll takes the
//! next already encoded frame from the connection's queue (reference-counted bytes, no
//! copy and no extra task hop), or a pong, a heartbeat ping, or the close frame. When
//! the socket is full the body is simply not polled, the queue fills, and producers see
//! the overflow (4008). After the close frame it waits (at most [`CLOSE_WAIT`]) for the
//! client's close, then ends, and actix-web closes the TCP connection.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::web::Bytes;
use futures_util::Stream;
use std::future::Future;
use tokio::time::{Instant, Interval, Sleep};

use super::CLOSE_WAIT;
use crate::{
    hub::conn::{Conn, Out, Peer},
    metrics::Metrics,
    protocol::Frame,
};

pub struct Writer {
    conn: Arc<Conn>,
    metrics: Arc<Metrics>,
    ping: Option<Interval>,
    state: State,
}

enum State {
    Open,
    /// The close frame is written; waiting for the client's answer or the deadline.
    Closing(Pin<Box<Sleep>>),
    Done,
}

impl Writer {
    /// A writer for `conn` that pings every `ping_every` (none for refused connections).
    pub fn new(conn: Arc<Conn>, metrics: Arc<Metrics>, ping_every: Option<Duration>) -> Writer {
        let ping = ping_every.map(|every| tokio::time::interval_at(Instant::now() + every, every));
        Writer {
            conn,
            metrics,
            ping,
            state: State::Open,
        }
    }

    fn emit(&self, frame: Frame) -> Poll<Option<Result<Bytes, Infallible>>> {
        self.metrics.frames_out(1);
        Poll::Ready(Some(Ok(frame.bytes().clone())))
    }
}

impl Stream for Writer {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Closing(deadline) => {
                    let answered = this.conn.watch_peer(cx.waker()) != Peer::Open;
                    if answered || deadline.as_mut().poll(cx).is_ready() {
                        this.state = State::Done;
                        continue;
                    }
                    return Poll::Pending;
                }
                State::Open => match this.conn.next_out(cx.waker()) {
                    Out::Frame(frame) => return this.emit(frame),
                    Out::End => this.state = State::Done,
                    Out::Close(req, peer) => {
                        this.state = if peer == Peer::Open {
                            State::Closing(Box::pin(tokio::time::sleep(CLOSE_WAIT)))
                        } else {
                            State::Done
                        };
                        return this.emit(Frame::close(req.code, &req.reason));
                    }
                    Out::Idle => {
                        let due = this
                            .ping
                            .as_mut()
                            .is_some_and(|p| p.poll_tick(cx).is_ready());
                        if due {
                            return this.emit(Frame::ping());
                        }
                        return Poll::Pending;
                    }
                },
            }
        }
    }
}

//! One live connection as the hub sees it: identity, group list, and the bounded outbound
//! queue that every producer fills without ever waiting.
//!
//! Producers call [`Conn::send`] (a non-blocking `try_send` of shared bytes); when the
//! queue is full the connection is marked for closing with 4008 instead of buffering more.
//! Any part of the server may ask a connection to close ([`Conn::close`]); the first
//! request wins and the connection's own task carries it out.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, OnceLock,
};

use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::protocol::close;

/// Why and how a connection is to be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

/// What happened to one frame offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The queue was full: the frame is dropped and the connection closes with 4008.
    Overflow,
    /// The connection is already going away.
    Closed,
}

pub struct Conn {
    id: Arc<str>,
    uid: OnceLock<Arc<str>>,
    /// Increases with every connection of this node: the smallest is the oldest.
    pub(crate) serial: u64,
    tx: mpsc::Sender<ByteString>,
    close: Mutex<Option<CloseRequest>>,
    wake: Notify,
    /// Groups this connection belongs to, and whether it has left the hub for good.
    groups: Mutex<(Vec<Arc<str>>, bool)>,
    overflowed: AtomicBool,
    /// Until the client resumes (or the resume window passes), the first `seq` it was
    /// sent live on each stream: a replay stops just before it, so nothing that arrived
    /// between `welcome` and `resume` is sent twice or out of order.
    recording: AtomicBool,
    first_live: Mutex<Vec<(Box<str>, u64)>>,
}

/// Streams whose first live `seq` a connection remembers before it resumes.
const MAX_RECORDED_STREAMS: usize = 64;

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("uid", &self.uid.get())
            .finish()
    }
}

impl Conn {
    /// A connection and the receiving end of its outbound queue (`queue` frames deep).
    pub fn new(
        id: Arc<str>,
        uid: Option<Arc<str>>,
        serial: u64,
        queue: usize,
    ) -> (Arc<Conn>, mpsc::Receiver<ByteString>) {
        let (tx, rx) = mpsc::channel(queue);
        let cell = OnceLock::new();
        if let Some(uid) = uid {
            let _ = cell.set(uid);
        }
        let conn = Conn {
            id,
            uid: cell,
            serial,
            tx,
            close: Mutex::new(None),
            wake: Notify::new(),
            groups: Mutex::new((Vec::new(), false)),
            overflowed: AtomicBool::new(false),
            recording: AtomicBool::new(true),
            first_live: Mutex::new(Vec::new()),
        };
        (Arc::new(conn), rx)
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn uid(&self) -> Option<&Arc<str>> {
        self.uid.get()
    }

    /// Binds an anonymous connection to `uid` (client `bind`); false if it already has one.
    pub(crate) fn bind_uid(&self, uid: Arc<str>) -> bool {
        self.uid.set(uid).is_ok()
    }

    /// Offers a frame without waiting. A full queue closes the connection with 4008.
    pub fn send(&self, frame: &ByteString) -> Sent {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Closed,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.overflowed.swap(true, Ordering::Relaxed) {
                    return Sent::Closed;
                }
                self.close(
                    close::SLOW_CONSUMER,
                    "slow consumer: outbound queue overflowed",
                );
                Sent::Overflow
            }
        }
    }

    /// Notes that push `seq` of `stream` was queued live (see `first_live`).
    pub(crate) fn note_live(&self, stream: &str, seq: u64) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let mut seen = self.first_live.lock();
        if seen.len() < MAX_RECORDED_STREAMS && !seen.iter().any(|(s, _)| &**s == stream) {
            seen.push((stream.into(), seq));
        }
    }

    /// The first `seq` of `stream` this connection was sent live, if it is still recording.
    pub fn first_live(&self, stream: &str) -> Option<u64> {
        if !self.recording.load(Ordering::Relaxed) {
            return None;
        }
        self.first_live
            .lock()
            .iter()
            .find(|(s, _)| &**s == stream)
            .map(|(_, seq)| *seq)
    }

    /// Stops recording first live pushes (after a resume, or when the window passes).
    pub fn stop_recording(&self) {
        self.recording.store(false, Ordering::Relaxed);
        self.first_live.lock().clear();
    }

    /// Asks the connection to close; the first request wins.
    pub fn close(&self, code: u16, reason: &str) {
        let mut slot = self.close.lock();
        if slot.is_none() {
            *slot = Some(CloseRequest {
                code,
                reason: reason.to_string(),
            });
            self.wake.notify_one();
        }
    }

    /// Waits until someone asks this connection to close, and says how.
    pub async fn closing(&self) -> CloseRequest {
        loop {
            if let Some(req) = self.close.lock().clone() {
                return req;
            }
            self.wake.notified().await;
        }
    }

    /// A snapshot of the groups this connection is in.
    pub fn groups(&self) -> Vec<Arc<str>> {
        self.groups.lock().0.clone()
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.lock().0.iter().any(|g| &**g == group)
    }

    /// Records membership unless the connection has left; `f` runs under the same lock so
    /// the group index and this list never disagree. Returns false if the connection left.
    pub(crate) fn add_group(&self, group: &Arc<str>, f: impl FnOnce()) -> bool {
        let mut g = self.groups.lock();
        if g.1 {
            return false;
        }
        if !g.0.iter().any(|x| x == group) {
            g.0.push(group.clone());
        }
        f();
        true
    }

    pub(crate) fn remove_group(&self, group: &str) -> bool {
        let mut g = self.groups.lock();
        let before = g.0.len();
        g.0.retain(|x| &**x != group);
        g.0.len() != before
    }

    /// Marks the connection as gone and hands back its groups for removal from the index.
    pub(crate) fn leave_all(&self) -> Vec<Arc<str>> {
        let mut g = self.groups.lock();
        g.1 = true;
        std::mem::take(&mut g.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_with_4008_once() {
        let (conn, _rx) = Conn::new("c1".into(), None, 1, 2);
        let f: ByteString = "x".into();
        assert_eq!(conn.send(&f), Sent::Queued);
        assert_eq!(conn.send(&f), Sent::Queued);
        assert_eq!(conn.send(&f), Sent::Overflow);
        assert_eq!(conn.send(&f), Sent::Closed);
        assert_eq!(
            conn.close.lock().as_ref().unwrap().code,
            close::SLOW_CONSUMER
        );
        conn.close(close::KICKED, "later requests do not override");
        assert_eq!(
            conn.close.lock().as_ref().unwrap().code,
            close::SLOW_CONSUMER
        );
    }
}

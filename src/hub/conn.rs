//! One live connection as the hub sees it: identity, groups, and the bounded outbound
//! queue that every producer fills without ever waiting.
//!
//! Producers call [`Conn::send`] with an already encoded [`Frame`] (shared bytes) and the
//! connection's task is woken to write it. When the queue is full the connection is
//! closed with 4008 and its queue is dropped at once, so a client that stops reading costs
//! no more than `limits.outbound_queue` frames. Any part of the server may ask a
//! connection to close ([`Conn::close`]); the first request wins.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::protocol::{close, Frame};

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
    /// The connection is closing or gone.
    Closed,
}

/// The queue and the close request, behind one small lock.
struct Shared {
    queue: VecDeque<Frame>,
    close: Option<CloseRequest>,
}

pub struct Conn {
    id: Arc<str>,
    uid: OnceLock<Arc<str>>,
    /// Increases with every connection of this node: the smallest is the oldest.
    pub(crate) serial: u64,
    capacity: usize,
    shared: Mutex<Shared>,
    /// Wakes the connection's task: frames queued, or a close requested.
    wake: Notify,
    /// Groups this connection belongs to, and whether it has left the hub for good.
    groups: Mutex<(Vec<Arc<str>>, bool)>,
    /// Until the client resumes (or the resume window passes), each stream's `seq` at the
    /// moment this connection started receiving it live (read under the stream's lock at
    /// attach and join): a replay stops there, so nothing that arrived between `welcome`
    /// and `resume` is sent twice or out of order.
    recording: AtomicBool,
    live_from: Mutex<Vec<(Box<str>, u64)>>,
}

/// Streams whose first live `seq` a connection remembers before it resumes.
const MAX_RECORDED_STREAMS: usize = 64;
/// A queue that grew past this many slots gives the memory back once it is empty.
pub(crate) const QUEUE_KEEP: usize = 8;

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("uid", &self.uid.get())
            .finish()
    }
}

impl Conn {
    /// A connection whose queue holds at most `capacity` frames.
    pub fn new(id: Arc<str>, uid: Option<Arc<str>>, serial: u64, capacity: usize) -> Arc<Conn> {
        let cell = OnceLock::new();
        if let Some(uid) = uid {
            let _ = cell.set(uid);
        }
        Arc::new(Conn {
            id,
            uid: cell,
            serial,
            capacity,
            shared: Mutex::new(Shared {
                queue: VecDeque::new(),
                close: None,
            }),
            wake: Notify::new(),
            groups: Mutex::new((Vec::new(), false)),
            recording: AtomicBool::new(true),
            live_from: Mutex::new(Vec::new()),
        })
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
    pub fn send(&self, frame: &Frame) -> Sent {
        let mut shared = self.shared.lock();
        if shared.close.is_some() {
            return Sent::Closed;
        }
        if shared.queue.len() >= self.capacity {
            drop(shared);
            self.close(
                close::SLOW_CONSUMER,
                "slow consumer: outbound queue overflowed",
            );
            return Sent::Overflow;
        }
        let was_empty = shared.queue.is_empty();
        shared.queue.push_back(frame.clone());
        drop(shared);
        if was_empty {
            self.wake.notify_one();
        }
        Sent::Queued
    }

    /// Asks the connection to close; the first request wins. A slow consumer's queue is
    /// dropped at once; otherwise what is queued is still written before the close frame.
    pub fn close(&self, code: u16, reason: &str) {
        let mut shared = self.shared.lock();
        if shared.close.is_some() {
            return;
        }
        shared.close = Some(CloseRequest {
            code,
            reason: reason.to_string(),
        });
        if code == close::SLOW_CONSUMER {
            shared.queue = VecDeque::new();
        }
        drop(shared);
        self.wake.notify_one();
    }

    /// The close request, if any.
    pub fn close_request(&self) -> Option<CloseRequest> {
        self.shared.lock().close.clone()
    }

    /// Waits until frames are queued or a close is requested (returns at once if that
    /// happened since the last wait).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Moves up to `max` queued frames to `out`; returns whether a close is requested.
    pub(crate) fn take_frames(&self, out: &mut VecDeque<Frame>, max: usize) -> bool {
        let mut shared = self.shared.lock();
        let n = shared.queue.len().min(max);
        out.extend(shared.queue.drain(..n));
        if shared.queue.is_empty() && shared.queue.capacity() > QUEUE_KEEP {
            shared.queue = VecDeque::new();
        }
        shared.close.is_some()
    }

    /// Drops whatever is still queued (the client had its chance to read it).
    pub(crate) fn discard_queue(&self) {
        self.shared.lock().queue = VecDeque::new();
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

    /// Records that live pushes of `stream` reach this connection after `seq`. Called with
    /// the stream's lock held; the first record of a stream wins.
    pub(crate) fn live_after(&self, stream: &str, seq: u64) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let mut seen = self.live_from.lock();
        if seen.len() < MAX_RECORDED_STREAMS && !seen.iter().any(|(s, _)| &**s == stream) {
            seen.push((stream.into(), seq));
        }
    }

    /// The first `seq` of `stream` this connection receives live, if it is still recording.
    pub fn first_live(&self, stream: &str) -> Option<u64> {
        if !self.recording.load(Ordering::Relaxed) {
            return None;
        }
        self.live_from
            .lock()
            .iter()
            .find(|(s, _)| &**s == stream)
            .map(|(_, seq)| seq + 1)
    }

    /// Stops recording where live pushes start (after a resume, or when the window passes).
    pub fn stop_recording(&self) {
        self.recording.store(false, Ordering::Relaxed);
        *self.live_from.lock() = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_with_4008_and_drops_the_queue() {
        let conn = Conn::new("c1".into(), None, 1, 2);
        let f = Frame::text("x");
        assert_eq!(conn.send(&f), Sent::Queued);
        assert_eq!(conn.send(&f), Sent::Queued);
        assert_eq!(conn.send(&f), Sent::Overflow);
        assert_eq!(conn.send(&f), Sent::Closed);
        conn.close(close::KICKED, "later requests do not override");
        assert_eq!(conn.close_request().unwrap().code, close::SLOW_CONSUMER);
        let mut out = VecDeque::new();
        conn.take_frames(&mut out, 10);
        assert!(out.is_empty());
    }

    #[test]
    fn other_closes_keep_the_queue_for_a_final_flush() {
        let conn = Conn::new("c1".into(), None, 1, 8);
        conn.send(&Frame::text("a"));
        conn.close(close::KICKED, "bye");
        assert_eq!(conn.send(&Frame::text("late")), Sent::Closed);
        let mut out = VecDeque::new();
        conn.take_frames(&mut out, 10);
        assert_eq!(out, [Frame::text("a")]);
    }
}

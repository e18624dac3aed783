//! One live connection as the hub sees it: identity, groups, and the bounded outbound
//! queue that every producer fills without ever waiting.
//!
//! Producers call [`Conn::send`] with an already encoded [`Frame`] (shared bytes) and the
//! connection's task is woken to write it. Pushes to `all` are not queued here: they are
//! read from the hub's [`BroadcastLog`] with the connection's own cursor, and each queued
//! frame remembers the log's head when it was queued, so [`Conn::take_frames`] hands the
//! two out in the order they happened. When the queue plus the unread broadcasts exceed
//! `limits.outbound_queue` frames, the connection is closed with 4008 and its queue is
//! dropped at once, so a client that stops reading costs no more than that. Any part of
//! the server may ask a connection to close ([`Conn::close`]); the first request wins.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{broadcast::BroadcastLog, pacer::Ready};
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

/// What [`Conn::take_frames`] found besides the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Keep serving.
    Open,
    /// A close is requested.
    Closing,
    /// The connection fell more than the log's capacity behind the broadcasts: it is now
    /// closing with 4008.
    Overrun,
}

/// The queue and the close request, behind one small lock. Each queued frame carries
/// the broadcast log's head at the time it was queued.
struct Shared {
    queue: VecDeque<(u64, Frame)>,
    close: Option<CloseRequest>,
}

pub struct Conn {
    id: Arc<str>,
    uid: OnceLock<Arc<str>>,
    /// Increases with every connection of this node: the smallest is the oldest.
    pub(crate) serial: u64,
    capacity: usize,
    shared: Mutex<Shared>,
    /// Wakes the connection's task: frames queued, a broadcast, or a close requested.
    wake: Notify,
    /// Whether a close was requested or the connection left the hub (read without the
    /// lock by broadcasts and pacers).
    closing: AtomicBool,
    /// The broadcast log, once the connection is registered in a hub, and the position of
    /// the next broadcast it has not taken yet.
    feed: OnceLock<Arc<BroadcastLog>>,
    cursor: AtomicU64,
    /// Its worker thread's pacer, once the connection's task runs: big group pushes hand
    /// it the connection to wake in turn.
    pacer: OnceLock<Arc<Ready>>,
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
            closing: AtomicBool::new(false),
            feed: OnceLock::new(),
            cursor: AtomicU64::new(0),
            pacer: OnceLock::new(),
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

    /// Starts reading `log` from its head (the hub registers the connection; called
    /// under the `all` stream's lock, like the welcome's `seq`).
    pub(crate) fn follow(&self, log: &Arc<BroadcastLog>) {
        self.cursor.store(log.head(), Ordering::Relaxed);
        let _ = self.feed.set(log.clone());
    }

    /// Offers a frame without waiting. A full queue closes the connection with 4008.
    pub fn send(&self, frame: &Frame) -> Sent {
        match self.enqueue(frame) {
            Ok(wake) => {
                if wake {
                    self.wake();
                }
                Sent::Queued
            }
            Err(refused) => refused,
        }
    }

    /// Like [`Conn::send`], but has its thread's pacer wake the connection, in turn with
    /// the others (for pushes to many connections at once).
    pub(crate) fn send_paced(self: &Arc<Self>, frame: &Frame) -> Sent {
        match self.enqueue(frame) {
            Ok(wake) => {
                if wake {
                    match self.pacer.get() {
                        Some(ready) => ready.push(self.clone()),
                        None => self.wake(),
                    }
                }
                Sent::Queued
            }
            Err(refused) => refused,
        }
    }

    /// Hands the connection's wake-ups for big pushes to `ready` (its thread's pacer).
    pub(crate) fn paced_by(&self, ready: &Arc<Ready>) {
        let _ = self.pacer.set(ready.clone());
    }

    /// Wakes the connection's task.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Queues a frame; `Ok(true)` when the task must be woken for it.
    fn enqueue(&self, frame: &Frame) -> Result<bool, Sent> {
        let mut shared = self.shared.lock();
        if shared.close.is_some() {
            return Err(Sent::Closed);
        }
        let head = self.feed.get().map_or(0, |log| log.head());
        let unread = head.saturating_sub(self.cursor.load(Ordering::Relaxed));
        if shared.queue.len() as u64 + unread >= self.capacity as u64 {
            drop(shared);
            self.close(
                close::SLOW_CONSUMER,
                "slow consumer: outbound queue overflowed",
            );
            return Err(Sent::Overflow);
        }
        let was_empty = shared.queue.is_empty();
        shared.queue.push_back((head, frame.clone()));
        Ok(was_empty)
    }

    /// Wakes the connection if it has not taken the broadcasts before `head` yet; false
    /// if it has, or if it is closing.
    pub(crate) fn wake_for_broadcast(&self, head: u64) -> bool {
        if self.is_closing() || self.cursor.load(Ordering::Relaxed) >= head {
            return false;
        }
        self.wake();
        true
    }

    /// Whether a close was requested, or the connection has left the hub.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Asks the connection to close; the first request wins. A slow consumer's queue is
    /// dropped at once; otherwise what is queued is still written before the close frame.
    pub fn close(&self, code: u16, reason: &str) {
        let mut shared = self.shared.lock();
        if shared.close.is_some() {
            return;
        }
        Self::request_close(&mut shared, code, reason);
        self.closing.store(true, Ordering::Relaxed);
        drop(shared);
        self.wake.notify_one();
    }

    fn request_close(shared: &mut Shared, code: u16, reason: &str) {
        shared.close = Some(CloseRequest {
            code,
            reason: reason.to_string(),
        });
        if code == close::SLOW_CONSUMER {
            shared.queue = VecDeque::new();
        }
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

    /// Moves up to `max` frames to `out`, queued ones and broadcasts in the order they
    /// came, and says whether the connection must close.
    pub(crate) fn take_frames(&self, out: &mut VecDeque<Frame>, max: usize) -> Taken {
        let mut shared = self.shared.lock();
        let dropped = shared
            .close
            .as_ref()
            .is_some_and(|c| c.code == close::SLOW_CONSUMER);
        match self.feed.get() {
            Some(log) if !dropped => {
                if self.take_merged(log, &mut shared.queue, out, max).is_err() {
                    Self::request_close(
                        &mut shared,
                        close::SLOW_CONSUMER,
                        "slow consumer: outbound queue overflowed",
                    );
                    self.closing.store(true, Ordering::Relaxed);
                    return Taken::Overrun;
                }
            }
            _ => {
                let n = shared.queue.len().min(max);
                out.extend(shared.queue.drain(..n).map(|(_, f)| f));
            }
        }
        if shared.queue.is_empty() && shared.queue.capacity() > QUEUE_KEEP {
            shared.queue = VecDeque::new();
        }
        if shared.close.is_some() {
            Taken::Closing
        } else {
            Taken::Open
        }
    }

    /// Merges the queue with the broadcasts after the cursor: a queued frame goes out once
    /// every broadcast appended before it was queued has.
    fn take_merged(
        &self,
        log: &BroadcastLog,
        queue: &mut VecDeque<(u64, Frame)>,
        out: &mut VecDeque<Frame>,
        max: usize,
    ) -> Result<(), super::broadcast::Overrun> {
        let mut cursor = self.cursor.load(Ordering::Relaxed);
        if max == 0 && log.overrun(cursor) {
            return Err(super::broadcast::Overrun);
        }
        let mut budget = max;
        while budget > 0 {
            let due = queue.front().map(|(at, _)| *at);
            if due.is_some_and(|at| at <= cursor) {
                out.extend(queue.pop_front().map(|(_, f)| f));
                budget -= 1;
                continue;
            }
            let n = log.read(cursor, due.unwrap_or(u64::MAX), budget, out)?;
            if n == 0 {
                // Nothing left in the log before the next queued frame (or at all).
                match queue.pop_front() {
                    Some((_, f)) => {
                        out.push_back(f);
                        budget -= 1;
                    }
                    None => break,
                }
            }
            cursor += n as u64;
            budget -= n;
        }
        self.cursor.store(cursor, Ordering::Relaxed);
        Ok(())
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
        self.closing.store(true, Ordering::Relaxed);
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
        assert_eq!(conn.take_frames(&mut out, 10), Taken::Closing);
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

    #[test]
    fn queued_frames_and_broadcasts_come_out_in_the_order_they_came() {
        let log = Arc::new(BroadcastLog::new(16));
        log.append(Frame::text("before"));
        let conn = Conn::new("c1".into(), None, 1, 16);
        conn.send(&Frame::text("welcome"));
        conn.follow(&log);
        log.append(Frame::text("b1"));
        conn.send(&Frame::text("reply"));
        log.append(Frame::text("b2"));
        log.append(Frame::text("b3"));
        conn.send(&Frame::text("last"));
        let mut out = VecDeque::new();
        let mut seen = Vec::new();
        loop {
            assert_eq!(conn.take_frames(&mut out, 2), Taken::Open);
            if out.is_empty() {
                break;
            }
            assert!(out.len() <= 2);
            seen.extend(out.drain(..));
        }
        let want = ["welcome", "b1", "reply", "b2", "b3", "last"].map(Frame::text);
        assert_eq!(seen, want);
    }

    #[test]
    fn falling_behind_the_broadcast_log_closes_with_4008() {
        let log = Arc::new(BroadcastLog::new(4));
        let conn = Conn::new("c1".into(), None, 1, 4);
        conn.follow(&log);
        for _ in 0..3 {
            log.append(Frame::text("b"));
        }
        // Three unread broadcasts and one queued frame fill the connection's budget.
        assert_eq!(conn.send(&Frame::text("q")), Sent::Queued);
        assert_eq!(conn.send(&Frame::text("q")), Sent::Overflow);
        let conn = Conn::new("c2".into(), None, 2, 4);
        conn.follow(&log);
        for _ in 0..5 {
            log.append(Frame::text("b"));
        }
        let mut out = VecDeque::new();
        assert_eq!(conn.take_frames(&mut out, 0), Taken::Overrun);
        assert_eq!(conn.close_request().unwrap().code, close::SLOW_CONSUMER);
        assert!(!conn.wake_for_broadcast(log.head()));
        assert_eq!(conn.take_frames(&mut out, 10), Taken::Closing);
        assert!(out.is_empty());
    }
}

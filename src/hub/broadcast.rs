//! The broadcast log: every push to `all` is stored here once, and each connection reads
//! it with its own cursor, instead of the frame being queued on every connection.
//!
//! A push to everyone then costs one append plus a wake-up per connection, and a
//! connection that wakes up takes every frame it has not written yet in one go, so the
//! frames that piled up while it waited go out in one vectored write.
//!
//! Positions count appends since start. The log keeps the last `capacity` frames
//! (`limits.outbound_queue`), and no more than [`MAX_BYTES`] of them, since it keeps them
//! even when every connection has written them (a push may be up to
//! `api.max_body_bytes`). A connection behind by more than what the log keeps has lost
//! frames, and is closed as a slow consumer (4008), as a full queue would be.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicU64, Ordering},
};

use parking_lot::RwLock;

use crate::protocol::Frame;

/// The most bytes of broadcasts the log keeps (but always the newest one).
pub const MAX_BYTES: usize = 16 << 20;

/// A connection's cursor fell behind what the log still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun;

pub struct BroadcastLog {
    frames: RwLock<Frames>,
    /// The position the next append gets (kept outside the lock for producers' checks).
    head: AtomicU64,
    capacity: usize,
}

struct Frames {
    /// Position of `list[0]`.
    base: u64,
    list: VecDeque<Frame>,
    /// Bytes of the frames in `list`.
    bytes: usize,
}

impl BroadcastLog {
    /// A log that keeps the last `capacity` frames (at least one).
    pub fn new(capacity: usize) -> BroadcastLog {
        BroadcastLog {
            frames: RwLock::new(Frames {
                base: 0,
                list: VecDeque::new(),
                bytes: 0,
            }),
            head: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// The position the next broadcast will get: a connection registered now reads from
    /// here.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Appends a frame, forgetting the oldest ones beyond `capacity` or [`MAX_BYTES`].
    pub fn append(&self, frame: Frame) {
        let mut frames = self.frames.write();
        frames.bytes += frame.bytes().len();
        frames.list.push_back(frame);
        while frames.list.len() > self.capacity
            || (frames.bytes > MAX_BYTES && frames.list.len() > 1)
        {
            let old = frames.list.pop_front().expect("not empty");
            frames.bytes -= old.bytes().len();
            frames.base += 1;
        }
        self.head
            .store(frames.base + frames.list.len() as u64, Ordering::Release);
    }

    /// Copies to `out` the frames from position `from` up to `until` (exclusive, capped at
    /// the head), at most `max` of them; returns how many.
    pub fn read(
        &self,
        from: u64,
        until: u64,
        max: usize,
        out: &mut VecDeque<Frame>,
    ) -> Result<usize, Overrun> {
        let frames = self.frames.read();
        if from < frames.base {
            return Err(Overrun);
        }
        let start = (from - frames.base) as usize;
        let end = until
            .saturating_sub(frames.base)
            .min(frames.list.len() as u64) as usize;
        let end = end.min(start.saturating_add(max));
        if end <= start {
            return Ok(0);
        }
        out.extend(frames.list.range(start..end).cloned());
        Ok(end - start)
    }

    /// Whether a cursor at `from` has fallen behind the oldest frame kept.
    pub fn overrun(&self, from: u64) -> bool {
        from < self.frames.read().base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(log: &BroadcastLog, from: u64) -> Result<Vec<Frame>, Overrun> {
        let mut out = VecDeque::new();
        log.read(from, u64::MAX, usize::MAX, &mut out)?;
        Ok(out.into())
    }

    #[test]
    fn readers_get_what_was_appended_after_their_cursor() {
        let log = BroadcastLog::new(8);
        log.append(Frame::text("a"));
        let cursor = log.head();
        log.append(Frame::text("b"));
        log.append(Frame::text("c"));
        assert_eq!(
            read_all(&log, cursor),
            Ok(vec![Frame::text("b"), Frame::text("c")])
        );
        let mut out = VecDeque::new();
        assert_eq!(log.read(cursor, cursor + 1, 10, &mut out), Ok(1));
        assert_eq!(log.read(cursor, u64::MAX, 1, &mut out), Ok(1));
        assert_eq!(log.read(log.head(), u64::MAX, 10, &mut out), Ok(0));
    }

    #[test]
    fn a_cursor_older_than_the_capacity_is_overrun() {
        let log = BroadcastLog::new(2);
        for s in ["a", "b", "c"] {
            log.append(Frame::text(s));
        }
        assert_eq!(log.head(), 3);
        assert!(log.overrun(0));
        assert_eq!(read_all(&log, 0), Err(Overrun));
        assert_eq!(
            read_all(&log, 1),
            Ok(vec![Frame::text("b"), Frame::text("c")])
        );
    }

    #[test]
    fn big_frames_are_kept_up_to_the_byte_budget() {
        let log = BroadcastLog::new(1024);
        let big = Frame::text(&"x".repeat(MAX_BYTES / 4));
        for _ in 0..10 {
            log.append(big.clone());
        }
        // Three fit (each is a little over a quarter of the budget with its header).
        assert!(log.overrun(6));
        assert_eq!(read_all(&log, 7).map(|f| f.len()), Ok(3));
        let huge = Frame::text(&"y".repeat(MAX_BYTES + 1));
        log.append(huge.clone());
        assert_eq!(read_all(&log, 10), Ok(vec![huge]));
    }
}

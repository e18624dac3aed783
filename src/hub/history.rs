//! Per-stream sequence numbers and the ring buffer of recent pushes that `resume` replays.
//!
//! Each stream (`u:…`, `g:…`, `all`) has its own lock, held while a push takes its `seq`,
//! is recorded and is handed to the hub: so pushes on one stream reach every connection
//! in `seq` order, and a replay under the same lock can neither miss nor duplicate a push
//! that arrives meanwhile. Streams idle for longer than the TTL are dropped by [`History::sweep`].

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::protocol::Frame;
use dashmap::DashMap;
use parking_lot::Mutex;

struct Entry {
    seq: u64,
    frame: Frame,
    at: Instant,
}

/// One stream's counter and its most recent pushes (oldest first).
#[derive(Default)]
pub struct StreamLog {
    seq: u64,
    entries: VecDeque<Entry>,
    last: Option<Instant>,
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay<T = Frame> {
    pub frames: Vec<T>,
    /// False when history no longer reaches back to the requested point.
    pub complete: bool,
}

impl StreamLog {
    /// The stream's latest `seq` (0 before its first stored push).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The next `seq` of this stream (not yet recorded).
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Keeps `frame` as push `seq`, forgetting the oldest beyond `size`.
    pub fn record(&mut self, seq: u64, frame: Frame, size: usize) {
        let now = Instant::now();
        self.last = Some(now);
        if size == 0 {
            return;
        }
        self.entries.push_back(Entry {
            seq,
            frame,
            at: now,
        });
        while self.entries.len() > size {
            self.entries.pop_front();
        }
    }

    /// Every kept push after `after` (and before `until`, when given), in order, ignoring
    /// those older than `ttl`.
    pub fn since(&mut self, after: u64, until: Option<u64>, ttl: Duration) -> Replay {
        let now = Instant::now();
        while self
            .entries
            .front()
            .is_some_and(|e| now.duration_since(e.at) > ttl)
        {
            self.entries.pop_front();
        }
        select(
            self.seq,
            self.entries.iter().map(|e| (e.seq, e.frame.clone())),
            after,
            until,
        )
    }

    fn idle(&self, now: Instant, ttl: Duration) -> bool {
        self.last.is_none_or(|t| now.duration_since(t) > ttl)
    }
}

/// Which kept pushes a `resume` after `after` re-sends, given the stream's latest `seq`
/// and `kept` (unexpired pushes, oldest first): those before `until` (where the
/// connection's live pushes start), and whether history still reaches back to `after`.
pub fn select<T>(
    seq: u64,
    kept: impl IntoIterator<Item = (u64, T)>,
    after: u64,
    until: Option<u64>,
) -> Replay<T> {
    if after >= seq {
        // A client claiming more than the stream ever had is out of step.
        return Replay {
            frames: Vec::new(),
            complete: after == seq,
        };
    }
    // Pushes from `until` on already reached this connection live.
    let upper = until.map_or(seq + 1, |u| u.min(seq + 1));
    if after + 1 >= upper {
        return Replay {
            frames: Vec::new(),
            complete: true,
        };
    }
    let mut oldest = seq + 1;
    let mut frames = Vec::new();
    for (s, item) in kept {
        oldest = oldest.min(s);
        if s > after && s < upper {
            frames.push(item);
        }
    }
    Replay {
        frames,
        complete: oldest <= after + 1,
    }
}

/// Every stream's log, each behind its own lock.
pub struct History {
    streams: DashMap<String, Arc<Mutex<StreamLog>>>,
    pub size: usize,
    pub ttl: Duration,
}

impl History {
    pub fn new(size: usize, ttl: Duration) -> History {
        History {
            streams: DashMap::new(),
            size,
            ttl,
        }
    }

    /// The log of `stream`, created on first use.
    pub fn stream(&self, stream: &str) -> Arc<Mutex<StreamLog>> {
        if let Some(s) = self.streams.get(stream) {
            return s.clone();
        }
        self.streams.entry(stream.to_string()).or_default().clone()
    }

    /// The log of `stream` if it exists.
    pub fn existing(&self, stream: &str) -> Option<Arc<Mutex<StreamLog>>> {
        self.streams.get(stream).map(|s| s.clone())
    }

    /// Drops streams that saw no push within the TTL; returns how many remain.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        self.streams
            .retain(|_, log| Arc::strong_count(log) > 1 || !log.lock().idle(now, self.ttl));
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(texts: &[&str]) -> Vec<Frame> {
        texts.iter().map(|t| Frame::text(t)).collect()
    }

    fn filled(n: u64, size: usize) -> StreamLog {
        let mut log = StreamLog::default();
        for _ in 0..n {
            let seq = log.next_seq();
            log.record(seq, Frame::text(&seq.to_string()), size);
        }
        log
    }

    #[test]
    fn replays_what_was_missed_in_order() {
        let mut log = filled(5, 10);
        let r = log.since(2, None, Duration::from_secs(60));
        assert_eq!(r.frames, frames(&["3", "4", "5"]));
        assert!(r.complete);
        assert!(log.since(5, None, Duration::from_secs(60)).complete);
    }

    #[test]
    fn incomplete_when_history_is_too_short() {
        let mut log = filled(10, 3);
        let r = log.since(2, None, Duration::from_secs(60));
        assert_eq!(r.frames, frames(&["8", "9", "10"]));
        assert!(!r.complete);
        assert!(log.since(7, None, Duration::from_secs(60)).complete);
        let r = log.since(7, Some(10), Duration::from_secs(60));
        assert_eq!(r.frames, frames(&["8", "9"]));
        // Everything after `after` came live: nothing to replay, nothing missing.
        assert_eq!(
            log.since(2, Some(3), Duration::from_secs(60)),
            Replay {
                frames: vec![],
                complete: true
            }
        );
        // A client claiming more than the stream ever had is out of step.
        assert!(!log.since(11, None, Duration::from_secs(60)).complete);
    }

    #[test]
    fn idle_streams_are_swept() {
        let h = History::new(10, Duration::from_millis(0));
        {
            let log = h.stream("u:a");
            let mut log = log.lock();
            let seq = log.next_seq();
            log.record(seq, Frame::text("x"), 10);
        }
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(h.sweep(), 0);
    }
}

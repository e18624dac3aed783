//! Taps: this node's view of each stream it subscribes to. A tap remembers the last `seq`
//! the node delivered on the stream; its lock orders that delivery against connections
//! attaching or joining, exactly as the in-memory broker's stream lock does, so a
//! connection's `welcome` or join `seq` is where its live pushes start.
//!
//! A tap is born uninitialised: the node subscribes first, then reads the stream's seq
//! from Redis. Pushes that arrive in between only move the starting point forward (no
//! local connection reads the stream yet).

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::OnceCell;

#[derive(Default)]
pub struct TapState {
    /// The last seq delivered here; `None` until the tap is initialised.
    pub seq: Option<u64>,
    /// The highest seq seen before initialisation.
    pub seen: u64,
    /// The tap was dropped (no local reader); whoever holds it must look it up again.
    pub removed: bool,
}

#[derive(Default)]
pub struct Tap {
    pub init: OnceCell<()>,
    state: Mutex<TapState>,
}

impl Tap {
    pub fn lock(&self) -> MutexGuard<'_, TapState> {
        self.state.lock()
    }

    /// Sets the starting seq read from Redis (or later, if pushes already passed it).
    pub fn start_at(&self, seq: u64) {
        let mut st = self.state.lock();
        st.seq = Some(seq.max(st.seen));
    }
}

/// What a pushed seq means for a tap.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Deliver it (and the tap now stands there).
    Deliver,
    /// Already delivered, or nobody here reads the stream yet.
    Skip,
    /// Pushes between the tap and this one were missed: fetch them from history first.
    Gap(u64),
}

impl TapState {
    /// Decides what to do with a push numbered `seq` (0: unnumbered) and advances.
    pub fn step(&mut self, seq: u64) -> Step {
        if self.removed {
            return Step::Skip;
        }
        let Some(cur) = self.seq else {
            self.seen = self.seen.max(seq);
            return Step::Skip;
        };
        match seq {
            0 => Step::Deliver,
            s if s <= cur => Step::Skip,
            s if s == cur + 1 => {
                self.seq = Some(s);
                Step::Deliver
            }
            _ => Step::Gap(cur),
        }
    }
}

/// Every tap of this node, by stream name.
#[derive(Default)]
pub struct Taps {
    map: DashMap<String, Arc<Tap>>,
}

impl Taps {
    pub fn get(&self, stream: &str) -> Option<Arc<Tap>> {
        self.map.get(stream).map(|t| t.clone())
    }

    pub fn get_or_create(&self, stream: &str) -> Arc<Tap> {
        self.map.entry(stream.to_string()).or_default().clone()
    }

    pub fn streams(&self) -> Vec<String> {
        self.map.iter().map(|e| e.key().clone()).collect()
    }

    /// Drops the initialised taps for which `unread(stream)` holds (checked under the tap's
    /// lock); returns their streams, to unsubscribe.
    pub fn drop_unread(&self, unread: impl Fn(&str) -> bool) -> Vec<String> {
        let mut dropped = Vec::new();
        self.map.retain(|stream, tap| {
            let mut st = tap.lock();
            if st.seq.is_some() && unread(stream) {
                st.removed = true;
                dropped.push(stream.clone());
                false
            } else {
                true
            }
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_before_initialisation_move_the_start() {
        let tap = Tap::default();
        assert_eq!(tap.lock().step(5), Step::Skip);
        tap.start_at(3);
        assert_eq!(tap.lock().seq, Some(5));
        assert_eq!(tap.lock().step(5), Step::Skip);
        assert_eq!(tap.lock().step(6), Step::Deliver);
        assert_eq!(tap.lock().step(0), Step::Deliver);
        assert_eq!(tap.lock().step(9), Step::Gap(6));
        assert_eq!(tap.lock().seq, Some(6));
    }
}

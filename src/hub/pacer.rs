//! Pacers wake connections for broadcasts and big group pushes, a small batch at a time,
//! one pacer per worker thread.
//!
//! A push to `all` is appended to the [`BroadcastLog`](super::broadcast::BroadcastLog)
//! once and each worker thread's pacer is signalled once. The pacer then walks its own
//! connections and wakes those with unread broadcasts, [`BATCH`] at a time, yielding to
//! the runtime in between. Waking all of them at once would put every connection's task
//! in the run queue ahead of the HTTP requests that carry the next pushes: those would
//! wait a whole round of writes (tens of milliseconds at 10,000 connections) before
//! being read. Paced, a push is read within about two batches of writes, and a
//! connection that is woken late simply writes every broadcast that arrived meanwhile
//! in one vectored write.
//!
//! A push to a group of more than [`BATCH`] connections is queued on each of them, and
//! the connections are handed to their pacers ([`Ready`]) to be woken the same way.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::{Arc, Weak},
};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{broadcast::BroadcastLog, Conn};

/// Connections woken between two yields to the runtime.
pub const BATCH: usize = 64;

/// Connections with newly queued frames, handed to a pacer from any thread.
pub struct Ready {
    conns: Mutex<Vec<Arc<Conn>>>,
    signal: Arc<Notify>,
}

impl Ready {
    /// Adds a connection to wake, signalling the pacer if the list was empty.
    pub fn push(&self, conn: Arc<Conn>) {
        let first = {
            let mut conns = self.conns.lock();
            conns.push(conn);
            conns.len() == 1
        };
        if first {
            self.signal.notify_one();
        }
    }
}

/// The hub's side: one signal per worker thread that has connections.
#[derive(Default)]
pub struct Pacers {
    signals: Mutex<Vec<Weak<Notify>>>,
}

impl Pacers {
    /// Tells every worker thread's pacer that a broadcast was appended.
    pub fn signal(&self) {
        self.signals.lock().retain(|s| match s.upgrade() {
            Some(s) => {
                s.notify_one();
                true
            }
            None => false,
        });
    }

    /// Adds `conn` to the current thread's pacer for `log`, starting the pacer if this is
    /// the thread's first connection. Must run on the thread (and in the `LocalSet`) of
    /// the connection's task.
    pub fn follow(&self, log: &Arc<BroadcastLog>, conn: &Arc<Conn>) {
        LOCAL.with(|locals| {
            let mut locals = locals.borrow_mut();
            locals.retain(|l| l.log.strong_count() > 0);
            let local = match locals.iter().find(|l| l.log.as_ptr() == Arc::as_ptr(log)) {
                Some(l) => l.clone(),
                None => {
                    let signal = Arc::new(Notify::new());
                    let local = Rc::new(Local {
                        log: Arc::downgrade(log),
                        ready: Arc::new(Ready {
                            conns: Mutex::new(Vec::new()),
                            signal: signal.clone(),
                        }),
                        signal,
                        conns: RefCell::new(Vec::new()),
                        prune_at: Cell::new(PRUNE_MIN),
                        passed: Cell::new(0),
                    });
                    self.signals.lock().push(Arc::downgrade(&local.signal));
                    tokio::task::spawn_local(run(local.clone()));
                    locals.push(local.clone());
                    local
                }
            };
            conn.paced_by(&local.ready);
            local.add(conn);
        });
    }
}

/// One thread's pacer for one hub.
struct Local {
    log: Weak<BroadcastLog>,
    signal: Arc<Notify>,
    /// Connections with frames queued by a big group push.
    ready: Arc<Ready>,
    /// Every connection of this thread (for broadcasts).
    conns: RefCell<Vec<Arc<Conn>>>,
    /// The log's head when the last broadcast pass started.
    passed: Cell<u64>,
    /// The list's length at which connections that left are dropped from it: a pass
    /// drops them too, but a node that never broadcasts never passes.
    prune_at: Cell<usize>,
}

impl Local {
    fn add(&self, conn: &Arc<Conn>) {
        let mut conns = self.conns.borrow_mut();
        conns.push(conn.clone());
        if conns.len() >= self.prune_at.get() {
            conns.retain(|c| !c.is_closing());
            self.prune_at.set((2 * conns.len()).max(PRUNE_MIN));
        }
    }
}

/// The smallest list length that triggers pruning.
const PRUNE_MIN: usize = 64;

thread_local! {
    static LOCAL: RefCell<Vec<Rc<Local>>> = const { RefCell::new(Vec::new()) };
}

async fn run(local: Rc<Local>) {
    // Connections handed over by group pushes, and how many of them are woken.
    let mut ready: Vec<Arc<Conn>> = Vec::new();
    let mut ready_at = 0;
    // Where the current broadcast pass is, if one is under way.
    let mut pass: Option<usize> = None;
    loop {
        local.signal.notified().await;
        // One batch of each per turn, so neither kind waits for the other to finish.
        loop {
            if ready_at == ready.len() {
                ready.clear();
                ready_at = 0;
                ready.append(&mut local.ready.conns.lock());
            }
            let end = (ready_at + BATCH).min(ready.len());
            ready[ready_at..end].iter().for_each(|c| c.wake());
            ready_at = end;
            // A pass over the thread's connections starts when something was broadcast
            // since the last one. A broadcast appended during a pass reaches the
            // connections not visited yet; the signal it left starts another pass.
            let Some(head) = local.log.upgrade().map(|log| log.head()) else {
                return;
            };
            if pass.is_none() && head != local.passed.get() {
                local.passed.set(head);
                pass = Some(0);
            }
            if let Some(at) = pass.as_mut() {
                if wake_batch(&local.conns, at, head) {
                    pass = None;
                }
            }
            if ready_at == ready.len() && pass.is_none() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Wakes up to [`BATCH`] connections from `at` that have not read up to `head`, dropping
/// closed ones from the list; returns true at the end of the list.
fn wake_batch(conns: &RefCell<Vec<Arc<Conn>>>, at: &mut usize, head: u64) -> bool {
    let mut conns = conns.borrow_mut();
    let mut woken = 0;
    while woken < BATCH {
        let Some(conn) = conns.get(*at) else {
            if conns.capacity() > 2 * conns.len() + 16 {
                conns.shrink_to_fit();
            }
            return true;
        };
        if conn.is_closing() {
            conns.swap_remove(*at);
            continue;
        }
        if conn.wake_for_broadcast(head) {
            woken += 1;
        }
        *at += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_a_local_set(test: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, test);
    }

    fn conn(i: u64) -> Arc<Conn> {
        Conn::new(format!("c{i}").into(), None, i, 8)
    }

    /// Three batches of connections reading `log`, each handed to this thread's pacer.
    fn paced_conns(pacers: &Pacers, log: &Arc<BroadcastLog>) -> Vec<Arc<Conn>> {
        let conns: Vec<_> = (0..3 * BATCH as u64).map(conn).collect();
        for c in &conns {
            c.follow(log);
            pacers.follow(log, c);
        }
        conns
    }

    async fn all_woken(conns: &[Arc<Conn>]) {
        for c in conns {
            tokio::time::timeout(std::time::Duration::from_secs(5), c.changed())
                .await
                .expect("woken");
        }
    }

    #[test]
    fn a_broadcast_wakes_every_connection_that_has_not_read_it() {
        on_a_local_set(async {
            let (pacers, log) = (Pacers::default(), Arc::new(BroadcastLog::new(8)));
            let conns = paced_conns(&pacers, &log);
            log.append(crate::protocol::Frame::text("hi"));
            pacers.signal();
            all_woken(&conns).await;
        });
    }

    #[test]
    fn a_big_group_push_wakes_every_member_through_the_pacer() {
        on_a_local_set(async {
            let (pacers, log) = (Pacers::default(), Arc::new(BroadcastLog::new(8)));
            let conns = paced_conns(&pacers, &log);
            for c in &conns {
                let sent = c.send_paced(&crate::protocol::Frame::text("hi"));
                assert_eq!(sent, crate::hub::Sent::Queued);
            }
            all_woken(&conns).await;
        });
    }

    #[test]
    fn connections_that_left_are_dropped_without_any_broadcast() {
        on_a_local_set(async {
            let (pacers, log) = (Pacers::default(), Arc::new(BroadcastLog::new(8)));
            for i in 0..1000 {
                let c = conn(i);
                pacers.follow(&log, &c);
                c.leave_all();
            }
            let len = LOCAL.with(|l| l.borrow()[0].conns.borrow().len());
            assert!(len <= PRUNE_MIN, "{len} connections kept");
        });
    }
}

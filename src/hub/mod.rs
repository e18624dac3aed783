//! The hub indexes this node's live connections: by id, by uid and by group, and writes
//! frames to them. It knows nothing of other nodes, sequence numbers or history: the
//! broker decides what to send and calls [`Hub::deliver`].
//!
//! The indexes are sharded concurrent maps (no global lock on the delivery path), and
//! delivery only ever does a non-blocking `try_send` while a shard is read-locked. Pushes
//! to `all` are appended once to the [`BroadcastLog`] that every connection reads, and
//! each worker thread's pacer wakes its connections for them, and for pushes to big
//! groups ([`pacer`]).

pub mod broadcast;
pub mod conn;
pub mod history;
mod pacer;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
};

use dashmap::DashMap;

use broadcast::BroadcastLog;
pub use conn::{CloseRequest, Conn, Sent};

use crate::{
    metrics::Metrics,
    protocol::{close, Frame},
};

/// Where a push goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Uid(String),
    Group(String),
    Conn(String),
    All,
}

impl Target {
    /// The stream name carried in `push` frames: `u:<uid>`, `g:<group>`, `c:<conn>`, `all`.
    pub fn stream(&self) -> String {
        match self {
            Target::Uid(u) => format!("u:{u}"),
            Target::Group(g) => format!("g:{g}"),
            Target::Conn(c) => format!("c:{c}"),
            Target::All => "all".into(),
        }
    }

    /// Whether pushes to this target get a `seq` and history (all but `c:` streams).
    pub fn has_history(&self) -> bool {
        !matches!(self, Target::Conn(_))
    }
}

#[derive(Default)]
struct Group {
    conns: HashMap<Arc<str>, Arc<Conn>>,
    /// Uids made members through the API: their live and future connections belong.
    uids: HashSet<Arc<str>>,
}

/// A group as reported by `GET /api/groups/{group}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupInfo {
    pub conns: usize,
    pub uids: Vec<String>,
}

/// This node's counts for `/api/stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HubCounts {
    pub connections: usize,
    pub uids: usize,
    pub groups: usize,
}

pub struct Hub {
    conns: DashMap<Arc<str>, Arc<Conn>>,
    uids: DashMap<Arc<str>, Vec<Arc<Conn>>>,
    groups: DashMap<Arc<str>, Group>,
    uid_groups: DashMap<Arc<str>, HashSet<Arc<str>>>,
    broadcast: Arc<BroadcastLog>,
    pacers: pacer::Pacers,
    count: AtomicUsize,
    serial: AtomicU64,
    max_per_uid: usize,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub whose connections each hold at most `outbound_queue` unwritten frames.
    pub fn new(max_per_uid: usize, outbound_queue: usize, metrics: Arc<Metrics>) -> Hub {
        Hub {
            conns: DashMap::new(),
            uids: DashMap::new(),
            groups: DashMap::new(),
            uid_groups: DashMap::new(),
            broadcast: Arc::new(BroadcastLog::new(outbound_queue)),
            pacers: pacer::Pacers::default(),
            count: AtomicUsize::new(0),
            serial: AtomicU64::new(0),
            max_per_uid,
            metrics,
        }
    }

    /// Live connections on this node.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A fresh serial number for a new connection (orders connections by age).
    pub fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a connection to the indexes and to the groups its uid belongs to, unless the
    /// node already holds `max_connections` (then returns false). When the uid now has more
    /// than `max_conns_per_uid` connections, the oldest are closed with 4004.
    pub fn register(&self, conn: &Arc<Conn>, max_connections: usize) -> bool {
        let admitted = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_connections).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return false;
        }
        conn.follow(&self.broadcast);
        self.conns.insert(conn.id().clone(), conn.clone());
        self.metrics.set_connections(self.len());
        if let Some(uid) = conn.uid() {
            self.index_uid(uid, conn);
        }
        true
    }

    /// Has the calling thread's pacer wake `conn` for broadcasts and big group pushes.
    /// Called once by the connection's own task, on its thread.
    pub fn pace(&self, conn: &Arc<Conn>) {
        self.pacers.follow(&self.broadcast, conn);
    }

    /// Gives an anonymous connection a uid (client `bind`); false if it already had one.
    pub fn bind(&self, conn: &Arc<Conn>, uid: &str) -> bool {
        let uid: Arc<str> = uid.into();
        if !conn.bind_uid(uid.clone()) {
            return false;
        }
        self.index_uid(&uid, conn);
        true
    }

    fn index_uid(&self, uid: &Arc<str>, conn: &Arc<Conn>) {
        let evicted: Vec<Arc<Conn>> = {
            let mut list = self.uids.entry(uid.clone()).or_default();
            list.push(conn.clone());
            list.sort_by_key(|c| c.serial);
            let excess = list.len().saturating_sub(self.max_per_uid);
            list.drain(..excess).collect()
        };
        for old in evicted {
            old.close(
                close::REPLACED,
                "replaced: this uid opened more connections than allowed",
            );
        }
        let groups: Vec<Arc<str>> = self
            .uid_groups
            .get(uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        for g in groups {
            self.join(conn, &g);
        }
    }

    /// Removes a connection from every index. Safe to call more than once.
    pub fn unregister(&self, conn: &Arc<Conn>) {
        let groups = conn.leave_all();
        for g in groups {
            self.drop_from_group(&g, conn.id());
        }
        if let Some(uid) = conn.uid() {
            if let Some(mut list) = self.uids.get_mut(uid) {
                list.retain(|c| !Arc::ptr_eq(c, conn));
            }
            self.uids.remove_if(uid, |_, list| list.is_empty());
        }
        if self
            .conns
            .remove_if(conn.id(), |_, c| Arc::ptr_eq(c, conn))
            .is_some()
        {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.metrics.set_connections(self.len());
        }
    }

    fn drop_from_group(&self, group: &str, conn_id: &str) {
        if let Some(mut g) = self.groups.get_mut(group) {
            g.conns.remove(conn_id);
        }
        self.groups
            .remove_if(group, |_, g| g.conns.is_empty() && g.uids.is_empty());
    }

    /// Every live connection of this node.
    pub fn snapshot(&self) -> Vec<Arc<Conn>> {
        self.conns.iter().map(|e| e.value().clone()).collect()
    }

    /// How many of this node's connections are in `group`.
    pub fn group_len(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |g| g.conns.len())
    }

    pub fn get(&self, conn_id: &str) -> Option<Arc<Conn>> {
        self.conns.get(conn_id).map(|c| c.clone())
    }

    /// The groups `uid` belongs to through the API (its connections join them on arrival).
    pub fn groups_of_uid(&self, uid: &str) -> Vec<Arc<str>> {
        let mut groups: Vec<Arc<str>> = self
            .uid_groups
            .get(uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        groups.sort();
        groups
    }

    /// Live connections of `uid` on this node.
    pub fn uid_conns(&self, uid: &str) -> Vec<Arc<Conn>> {
        self.uids.get(uid).map(|l| l.clone()).unwrap_or_default()
    }

    /// Puts a connection in a group (idempotent).
    pub fn join(&self, conn: &Arc<Conn>, group: &str) {
        let mut entry = self.groups.entry(Arc::from(group)).or_default();
        let name = entry.key().clone();
        conn.add_group(&name, || {
            entry.conns.insert(conn.id().clone(), conn.clone());
        });
        let empty = entry.conns.is_empty() && entry.uids.is_empty();
        drop(entry);
        if empty {
            self.groups
                .remove_if(group, |_, g| g.conns.is_empty() && g.uids.is_empty());
        }
    }

    /// Takes a connection out of a group; false if it was not in it.
    pub fn leave(&self, conn: &Arc<Conn>, group: &str) -> bool {
        let was = conn.remove_group(group);
        self.drop_from_group(group, conn.id());
        was
    }

    /// Makes `uid` a member of `group`, with its live and future connections.
    pub fn add_uid_to_group(&self, group: &str, uid: &str) {
        let g: Arc<str> = group.into();
        let u: Arc<str> = uid.into();
        self.uid_groups
            .entry(u.clone())
            .or_default()
            .insert(g.clone());
        self.groups.entry(g.clone()).or_default().uids.insert(u);
        for conn in self.uid_conns(uid) {
            self.join(&conn, group);
        }
    }

    /// Removes `uid` from `group`: the API membership and every connection of the uid.
    pub fn remove_uid_from_group(&self, group: &str, uid: &str) {
        if let Some(mut set) = self.uid_groups.get_mut(uid) {
            set.remove(group);
        }
        self.uid_groups.remove_if(uid, |_, set| set.is_empty());
        if let Some(mut g) = self.groups.get_mut(group) {
            g.uids.remove(uid);
        }
        for conn in self.uid_conns(uid) {
            self.leave(&conn, group);
        }
        self.groups
            .remove_if(group, |_, g| g.conns.is_empty() && g.uids.is_empty());
    }

    pub fn group_info(&self, group: &str) -> GroupInfo {
        let Some(g) = self.groups.get(group) else {
            return GroupInfo::default();
        };
        let mut uids: Vec<String> = g.uids.iter().map(|u| u.to_string()).collect();
        uids.extend(
            g.conns
                .values()
                .filter_map(|c| c.uid())
                .map(|u| u.to_string()),
        );
        uids.sort();
        uids.dedup();
        GroupInfo {
            conns: g.conns.len(),
            uids,
        }
    }

    /// Writes one serialised frame to every local connection of `target`; returns how
    /// many connections will write it (queues that took it; for `all`, every registered
    /// connection).
    pub fn deliver(&self, target: &Target, frame: &Frame) -> usize {
        let mut delivered = 0;
        // `paced`: many connections at once; waking all their tasks together would delay
        // the requests carrying the next pushes, so their thread's pacer wakes them.
        let mut offer = |conn: &Arc<Conn>, paced: bool| {
            let sent = if paced {
                conn.send_paced(frame)
            } else {
                conn.send(frame)
            };
            match sent {
                Sent::Queued => delivered += 1,
                Sent::Overflow => self.metrics.dropped("slow_consumer"),
                Sent::Closed => self.metrics.dropped("closed"),
            }
        };
        match target {
            Target::Uid(uid) => {
                if let Some(list) = self.uids.get(uid.as_str()) {
                    list.iter().for_each(|c| offer(c, false));
                }
            }
            Target::Group(group) => {
                if let Some(g) = self.groups.get(group.as_str()) {
                    let paced = g.conns.len() > pacer::BATCH;
                    g.conns.values().for_each(|c| offer(c, paced));
                }
            }
            Target::Conn(id) => {
                if let Some(c) = self.conns.get(id.as_str()) {
                    offer(&c, false);
                }
            }
            Target::All => {
                self.broadcast.append(frame.clone());
                self.pacers.signal();
                delivered = self.len();
            }
        }
        self.metrics.delivered(delivered);
        delivered
    }

    /// Asks every connection of `target` to close (kick, shutdown); returns how many.
    pub fn close_target(&self, target: &Target, code: u16, reason: &str) -> usize {
        let conns: Vec<Arc<Conn>> = match target {
            Target::Uid(uid) => self.uid_conns(uid),
            Target::Conn(id) => self.get(id).into_iter().collect(),
            Target::Group(group) => self
                .groups
                .get(group.as_str())
                .map(|g| g.conns.values().cloned().collect())
                .unwrap_or_default(),
            Target::All => self.conns.iter().map(|e| e.value().clone()).collect(),
        };
        for c in &conns {
            c.close(code, reason);
        }
        conns.len()
    }

    pub fn counts(&self) -> HubCounts {
        HubCounts {
            connections: self.len(),
            uids: self.uids.len(),
            groups: self.groups.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(max: usize) -> Hub {
        Hub::new(max, 8, Arc::new(Metrics::default()))
    }

    fn conn(hub: &Hub, id: &str, uid: Option<&str>) -> Arc<Conn> {
        let c = Conn::new(id.into(), uid.map(Into::into), hub.next_serial(), 8);
        assert!(hub.register(&c, 100));
        c
    }

    #[test]
    fn indexes_empty_after_everyone_leaves() {
        let h = hub(5);
        let a = conn(&h, "a", Some("u1"));
        let b = conn(&h, "b", None);
        h.join(&a, "room");
        h.join(&b, "room");
        h.add_uid_to_group("vip", "u1");
        assert_eq!(h.group_info("room").conns, 2);
        assert_eq!(h.group_info("vip").uids, vec!["u1".to_string()]);
        h.unregister(&a);
        h.unregister(&b);
        h.remove_uid_from_group("vip", "u1");
        let c = h.counts();
        assert_eq!((c.connections, c.uids, c.groups), (0, 0, 0));
    }

    #[test]
    fn uid_members_include_future_connections() {
        let h = hub(5);
        h.add_uid_to_group("g", "u1");
        let a = conn(&h, "a", Some("u1"));
        assert!(a.in_group("g"));
        assert_eq!(h.deliver(&Target::Group("g".into()), &Frame::text("hi")), 1);
        let mut out = std::collections::VecDeque::new();
        a.take_frames(&mut out, 10);
        assert_eq!(out, [Frame::text("hi")]);
        h.remove_uid_from_group("g", "u1");
        assert!(!a.in_group("g"));
    }

    #[test]
    fn oldest_connection_of_a_uid_is_replaced() {
        let h = hub(2);
        let a = conn(&h, "a", Some("u"));
        let _b = conn(&h, "b", Some("u"));
        let _c = conn(&h, "c", Some("u"));
        assert_eq!(h.uid_conns("u").len(), 2);
        assert_eq!(a.close_request().unwrap().code, close::REPLACED);
    }

    #[test]
    fn a_connection_that_left_cannot_rejoin() {
        let h = hub(5);
        let a = conn(&h, "a", None);
        h.unregister(&a);
        h.join(&a, "g");
        assert_eq!(h.counts().groups, 0);
    }

    #[test]
    fn no_index_entry_survives_a_churn_of_connections() {
        let h = hub(2);
        for i in 0..100_000u32 {
            let uid = format!("u{}", i % 1000);
            let c = conn(&h, &format!("c{i}"), (i % 3 != 0).then_some(uid.as_str()));
            h.join(&c, &format!("g{}", i % 50));
            h.join(&c, "all-members");
            if i % 10 == 0 {
                h.leave(&c, "all-members");
            }
            h.unregister(&c);
        }
        let c = h.counts();
        assert_eq!((c.connections, c.uids, c.groups), (0, 0, 0));
        assert!(h.conns.is_empty() && h.uid_groups.is_empty());
    }
}

//! The in-memory broker: one process is the whole cluster. Sequence numbers and history
//! live in [`History`]; fan-out is a direct call into the local [`Hub`].

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::value::RawValue;

use super::{Broker, BrokerError, Greeting, Published, Resumed};
use crate::{
    hub::{history::History, Conn, GroupInfo, Hub, Target},
    metrics::Metrics,
    protocol::{self, close},
};

pub struct MemoryBroker {
    hub: Arc<Hub>,
    history: Arc<History>,
    epoch: String,
    metrics: Arc<Metrics>,
}

impl MemoryBroker {
    /// A broker over `hub`. Must be called inside a Tokio runtime: it starts the task that
    /// forgets streams idle for longer than the history TTL.
    pub fn new(hub: Arc<Hub>, metrics: Arc<Metrics>, history_size: usize, ttl: Duration) -> Self {
        let history = Arc::new(History::new(history_size, ttl));
        let weak = Arc::downgrade(&history);
        let every = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(h) => {
                        h.sweep();
                    }
                    None => break,
                }
            }
        });
        MemoryBroker {
            hub,
            history,
            epoch: crate::random_id(12),
            metrics,
        }
    }
}

impl MemoryBroker {
    /// Puts `conn` in `group` under the group stream's lock; returns the stream's seq,
    /// after which every push reaches the connection live.
    fn join_live(&self, conn: &Arc<Conn>, group: &str) -> u64 {
        let stream = format!("g:{group}");
        let log = self.history.stream(&stream);
        let log = log.lock();
        self.hub.join(conn, group);
        conn.live_after(&stream, log.seq());
        log.seq()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    async fn publish(
        &self,
        target: &Target,
        data: &RawValue,
        store: bool,
    ) -> Result<Published, BrokerError> {
        self.metrics.pushed();
        let stream = target.stream();
        let time = protocol::now_ms();
        let log = match (target.has_history(), store) {
            (false, _) => None,
            (true, true) => Some(self.history.stream(&stream)),
            (true, false) => self.history.existing(&stream),
        };
        let Some(log) = log else {
            let frame = protocol::push(&stream, None, data, time);
            let delivered = self.hub.deliver(target, &frame);
            return Ok(Published {
                delivered,
                seq: None,
            });
        };
        // The stream's lock is held from numbering to queueing: one order for everyone.
        let mut log = log.lock();
        let seq = (target.has_history() && store).then(|| log.next_seq());
        let frame = protocol::push(&stream, seq, data, time);
        if let Some(seq) = seq {
            log.record(seq, frame.clone(), self.history.size);
        }
        let delivered = self.hub.deliver(target, &frame);
        Ok(Published { delivered, seq })
    }

    async fn resume(
        &self,
        conn: &Arc<Conn>,
        stream: &str,
        after: u64,
    ) -> Result<Resumed, BrokerError> {
        let Some(log) = self.history.existing(stream) else {
            return Ok(Resumed {
                sent: 0,
                complete: after == 0,
            });
        };
        let mut log = log.lock();
        let replay = log.since(after, conn.first_live(stream), self.history.ttl);
        Ok(Resumed::queue(conn, replay.frames, replay.complete))
    }

    async fn detach(&self, conn: &Arc<Conn>) {
        self.hub.unregister(conn);
    }

    async fn bind(&self, conn: &Arc<Conn>, uid: &str) -> Result<bool, BrokerError> {
        Ok(self.hub.bind(conn, uid))
    }

    async fn online(&self, uid: &str) -> Result<usize, BrokerError> {
        Ok(self.hub.uid_conns(uid).len())
    }

    async fn attach(
        &self,
        conn: &Arc<Conn>,
        max_connections: usize,
        welcome: Greeting<'_>,
    ) -> Result<bool, BrokerError> {
        let mut streams = vec!["all".to_string()];
        let mut groups = Vec::new();
        if let Some(uid) = conn.uid() {
            streams.push(format!("u:{uid}"));
            // The groups the connection joins on arrival, in a fixed (sorted) order.
            groups = self.hub.groups_of_uid(uid);
        }
        let group_streams: Vec<String> = groups.iter().map(|g| format!("g:{g}")).collect();
        // Created if absent (an empty stream is swept within a minute), so no push can
        // slip between reading a seq and registering. Always `all` before `u:`; pushes
        // take one stream lock at a time.
        let logs: Vec<_> = streams
            .iter()
            .chain(&group_streams)
            .map(|s| self.history.stream(s))
            .collect();
        let guards: Vec<_> = logs.iter().map(|l| l.lock()).collect();
        for (stream, guard) in streams.iter().chain(&group_streams).zip(&guards) {
            conn.live_after(stream, guard.seq());
        }
        let seqs: Vec<(String, u64)> = streams
            .into_iter()
            .zip(&guards)
            .map(|(s, g)| (s, g.seq()))
            .collect();
        conn.send(&welcome(&seqs));
        Ok(self.hub.register(conn, max_connections))
    }

    async fn join(&self, conn: &Arc<Conn>, group: &str) -> Result<u64, BrokerError> {
        Ok(self.join_live(conn, group))
    }

    async fn leave(&self, conn: &Arc<Conn>, group: &str) -> Result<bool, BrokerError> {
        Ok(self.hub.leave(conn, group))
    }

    async fn add_uid_to_group(&self, group: &str, uid: &str) -> Result<(), BrokerError> {
        let stream = format!("g:{group}");
        let log = self.history.stream(&stream);
        let log = log.lock();
        self.hub.add_uid_to_group(group, uid);
        for conn in self.hub.uid_conns(uid) {
            conn.live_after(&stream, log.seq());
        }
        Ok(())
    }

    async fn remove_uid_from_group(&self, group: &str, uid: &str) -> Result<(), BrokerError> {
        self.hub.remove_uid_from_group(group, uid);
        Ok(())
    }

    async fn add_conn_to_group(&self, group: &str, conn: &str) -> Result<bool, BrokerError> {
        Ok(match self.hub.get(conn) {
            Some(c) => {
                self.join_live(&c, group);
                true
            }
            None => false,
        })
    }

    async fn group_info(&self, group: &str) -> Result<GroupInfo, BrokerError> {
        Ok(self.hub.group_info(group))
    }

    async fn kick(&self, target: &Target, reason: &str) -> Result<usize, BrokerError> {
        Ok(self.hub.close_target(target, close::KICKED, reason))
    }

    async fn ready(&self) -> bool {
        true
    }
}

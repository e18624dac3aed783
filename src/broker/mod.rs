//! The broker: everything that must be agreed on across nodes. It gives pushes their `seq`,
//! keeps history, fans pushes out to every node's hub, and answers cluster-wide questions
//! (who is online, who is in a group).
//!
//! [`MemoryBroker`] is the one-process default; a Redis broker for clusters implements the
//! same trait. The gateway, the handlers and the HTTP API only ever talk to `dyn Broker`.

mod memory;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;

pub use memory::MemoryBroker;
pub use redis::RedisBroker;

use crate::{
    hub::{Conn, GroupInfo, Target},
    protocol::Frame,
};

/// Builds a connection's `welcome` from the current `seq` of each stream it reads from
/// the start (`all`, and `u:<uid>` when bound).
pub type Greeting<'a> = &'a (dyn Fn(&[(String, u64)]) -> Frame + Send + Sync);

/// The broker cannot do what was asked (for example, Redis is unreachable): answered with
/// HTTP 503 or the frame error `unavailable`, never with a false success.
#[derive(Debug, Clone, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct BrokerError(pub String);

/// The outcome of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// Live connections whose queues took the frame.
    pub delivered: usize,
    /// The push's place in its stream; `None` for `c:` streams and unstored pushes.
    pub seq: Option<u64>,
}

/// The outcome of replaying one stream for `resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    pub sent: usize,
    pub complete: bool,
}

impl Resumed {
    /// Queues a replay's `frames` to `conn` in order, stopping at the first one refused
    /// (a full queue or a closing connection).
    pub fn queue(conn: &Conn, frames: impl IntoIterator<Item = Frame>, complete: bool) -> Self {
        let mut sent = 0;
        for frame in frames {
            if conn.send(&frame) != crate::hub::Sent::Queued {
                break;
            }
            sent += 1;
        }
        Resumed { sent, complete }
    }
}

/// Cluster-wide bookkeeping and fan-out. Every method may fail with [`BrokerError`].
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Identifies this history's lifetime; `resume` across a different epoch is incomplete.
    fn epoch(&self) -> &str;

    /// Sends `data` to `target` on every node; stores it in history unless `store` is false.
    async fn publish(
        &self,
        target: &Target,
        data: &RawValue,
        store: bool,
    ) -> Result<Published, BrokerError>;

    /// Queues to `conn`, in order, the stored pushes of `stream` after `after`.
    async fn resume(
        &self,
        conn: &Arc<Conn>,
        stream: &str,
        after: u64,
    ) -> Result<Resumed, BrokerError>;

    /// Queues `welcome` and registers `conn`, with no push to its streams in between: the
    /// `seq`s the welcome carries are exactly where its live pushes start. False when the
    /// node already holds `max_connections`.
    async fn attach(
        &self,
        conn: &Arc<Conn>,
        max_connections: usize,
        welcome: Greeting<'_>,
    ) -> Result<bool, BrokerError>;

    /// Takes a connection that ended out of the hub and out of cluster-wide presence.
    async fn detach(&self, conn: &Arc<Conn>);

    /// Gives an anonymous connection a uid (client `bind`); false if it already had one.
    async fn bind(&self, conn: &Arc<Conn>, uid: &str) -> Result<bool, BrokerError>;

    /// How many live connections `uid` has, cluster-wide.
    async fn online(&self, uid: &str) -> Result<usize, BrokerError>;

    /// A connection joins a group (client `join`); returns the group stream's current
    /// `seq`, after which every push reaches the connection live.
    async fn join(&self, conn: &Arc<Conn>, group: &str) -> Result<u64, BrokerError>;
    /// A connection leaves a group (client `leave`); false if it was not in it.
    async fn leave(&self, conn: &Arc<Conn>, group: &str) -> Result<bool, BrokerError>;

    /// Makes `uid` a member of `group` with its live and future connections, or removes it.
    async fn add_uid_to_group(&self, group: &str, uid: &str) -> Result<(), BrokerError>;
    async fn remove_uid_from_group(&self, group: &str, uid: &str) -> Result<(), BrokerError>;

    /// Adds one connection, wherever it lives, to a group; false if there is no such connection.
    async fn add_conn_to_group(&self, group: &str, conn: &str) -> Result<bool, BrokerError>;

    async fn group_info(&self, group: &str) -> Result<GroupInfo, BrokerError>;

    /// Closes every connection of `target` (uid or conn) with 4010; returns how many.
    async fn kick(&self, target: &Target, reason: &str) -> Result<usize, BrokerError>;

    /// Whether the broker can currently serve (for `/readyz`).
    async fn ready(&self) -> bool;

    /// Every live node's stats (this one's first), when there are other nodes to ask.
    async fn nodes(&self) -> Result<Option<Vec<serde_json::Value>>, BrokerError> {
        Ok(None)
    }

    /// Leaves the cluster at shutdown, after the connections closed.
    async fn stop(&self) {}
}

//! The broker: everything that must be agreed on across nodes. It gives pushes their `seq`,
//! keeps history, fans pushes out to every node's hub, and answers cluster-wide questions
//! (who is online, who is in a group).
//!
//! [`MemoryBroker`] is the one-process default; a Redis broker for clusters implements the
//! same trait. The gateway, the handlers and the HTTP API only ever talk to `dyn Broker`.

mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;

pub use memory::MemoryBroker;

use crate::hub::{Conn, GroupInfo, Target};

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

    /// How many live connections `uid` has, cluster-wide.
    async fn online(&self, uid: &str) -> Result<usize, BrokerError>;

    /// A connection joins or leaves a group (client `join`/`leave`, API `{"conn"}`).
    async fn join(&self, conn: &Arc<Conn>, group: &str) -> Result<(), BrokerError>;
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
}

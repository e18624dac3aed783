//! The Redis broker: many nodes, one gateway. Redis numbers every push, keeps history,
//! fans pushes out over pub/sub and holds cluster-wide presence ([`store`]); each node
//! subscribes only to the streams its own connections read and orders their delivery
//! with [`taps`].
//!
//! When Redis goes away the node keeps serving its connections, `/readyz` fails and
//! pushes answer 503; the subscriber reconnects with backoff, subscribes again, rewrites
//! this node's presence, and delivers what its connections missed from history.

mod store;
mod taps;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use tokio::sync::{watch, Mutex};

use self::{
    store::{node_channel, stream_channel, Count, Delta, Store},
    taps::{Step, Tap, Taps},
};
use super::{Broker, BrokerError, Greeting, Published, Resumed};
use crate::{
    alerts::{Alert, Alerts},
    hub::{history, Conn, GroupInfo, Hub, Target},
    metrics::Metrics,
    protocol::{self, close, Frame},
};

/// How often a node marks itself alive and publishes its stats.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Every this many heartbeats it also sweeps dead nodes and drops unread streams.
const CLEANUP_EVERY: u32 = 5;
/// Every Redis call gives up after this long (then the caller answers 503).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    node: String,
    epoch: String,
    client: redis::Client,
    store: Store,
    /// The subscriber connection's command half; `None` while disconnected.
    sink: Mutex<Option<PubSubSink>>,
    taps: Taps,
    subscribed: AtomicBool,
    reachable: AtomicBool,
    history_size: usize,
    ttl: Duration,
    alerts: Alerts,
    /// Dropped with the broker: background tasks end.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError(e.to_string())
}

/// An order carried on a node's channel or (without `conn`) on a uid's stream channel.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Order {
    Push {
        conn: String,
        frame: String,
    },
    Kick {
        conn: Option<String>,
        reason: String,
    },
    Join {
        conn: Option<String>,
        group: String,
    },
    Leave {
        group: String,
    },
}

impl RedisBroker {
    /// Connects to `url`, joins the cluster as `node` and starts the subscriber. Fails
    /// (with a message that never shows the URL's password) when Redis cannot be reached.
    pub async fn connect(
        url: &str,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        node: String,
        history_size: usize,
        ttl: Duration,
        alerts: Alerts,
    ) -> Result<RedisBroker, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("`broker.url` is not a usable Redis URL: {:?}", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(BACKOFF_MAX);
        let cannot = |e: redis::RedisError| format!("cannot reach Redis (`broker.url`): {e}");
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(cannot)?;
        let store = Store::new(conn);
        let epoch = store.epoch(&crate::random_id(12)).await.map_err(cannot)?;
        let (alive_tx, alive) = watch::channel(());
        let inner = Arc::new(Inner {
            hub,
            metrics,
            node,
            epoch,
            client,
            store,
            sink: Mutex::new(None),
            taps: Taps::default(),
            subscribed: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            history_size,
            ttl,
            alerts,
            _alive: alive_tx,
            alive,
        });
        tokio::spawn(subscriber(Arc::downgrade(&inner)));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !inner.subscribed.load(Ordering::Acquire) {
            if tokio::time::Instant::now() > deadline {
                return Err("cannot subscribe to Redis (`broker.url`)".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        inner.tap("all").await.map_err(|e| e.to_string())?;
        inner.beat().await;
        tokio::spawn(maintenance(Arc::downgrade(&inner)));
        tracing::info!(node = %inner.node, epoch = %inner.epoch, "joined the cluster on Redis");
        Ok(RedisBroker { inner })
    }
}

impl Inner {
    fn base(&self) -> String {
        format!("mp:node:{}", self.node)
    }

    /// Presence changes for a connection arriving (`sign` 1) or leaving (-1) with `groups`.
    fn presence(&self, conn: &Conn, groups: &[Arc<str>], sign: i64) -> Vec<Delta> {
        let base = self.base();
        let d = |key: String, field: &str| Delta {
            key,
            field: field.to_string(),
            delta: sign,
        };
        let mut out = vec![d(base.clone(), "conns"), d(format!("{base}:c"), conn.id())];
        if let Some(uid) = conn.uid() {
            out.push(d(format!("{base}:u"), uid));
        }
        for g in groups {
            out.extend(self.membership(conn, g, sign));
        }
        out
    }

    /// Presence changes for `conn` joining (1) or leaving (-1) `group`.
    fn membership(&self, conn: &Conn, group: &str, sign: i64) -> Vec<Delta> {
        let base = self.base();
        let mut out = vec![Delta {
            key: format!("{base}:g"),
            field: group.to_string(),
            delta: sign,
        }];
        if let Some(uid) = conn.uid() {
            out.push(Delta {
                key: format!("{base}:gm:{group}"),
                field: uid.to_string(),
                delta: sign,
            });
        }
        out
    }

    async fn record(&self, deltas: Vec<Delta>) {
        if let Err(e) = self.store.apply(&deltas).await {
            // Rewritten in full when Redis is back (see `resync`).
            tracing::warn!("could not record presence in Redis: {e}");
        }
    }

    /// The tap of `stream`, subscribed and initialised.
    async fn tap(&self, stream: &str) -> Result<Arc<Tap>, BrokerError> {
        let tap = self.taps.get_or_create(stream);
        tap.init
            .get_or_try_init(|| async {
                self.subscribe(&stream_channel(stream)).await?;
                let seq = self.store.seq(stream).await.map_err(unavailable)?;
                tap.start_at(seq);
                Ok::<(), BrokerError>(())
            })
            .await?;
        Ok(tap)
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let mut sink = self.sink.lock().await;
        let sink = sink
            .as_mut()
            .ok_or_else(|| unavailable("not subscribed to Redis"))?;
        tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(channel))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }

    /// Puts a local connection in `group`, in order with the group's live pushes.
    async fn join_local(&self, conn: &Arc<Conn>, group: &str) -> Result<u64, BrokerError> {
        let stream = format!("g:{group}");
        let (seq, new) = loop {
            let tap = self.tap(&stream).await?;
            let st = tap.lock();
            if st.removed {
                continue;
            }
            let seq = st.seq.expect("an initialised tap has a seq");
            let new = !conn.in_group(group);
            self.hub.join(conn, group);
            conn.live_after(&stream, seq);
            break (seq, new && conn.in_group(group));
        };
        if new {
            self.record(self.membership(conn, group, 1)).await;
        }
        Ok(seq)
    }

    async fn leave_local(&self, conn: &Arc<Conn>, group: &str) -> bool {
        let left = self.hub.leave(conn, group);
        if left {
            self.record(self.membership(conn, group, -1)).await;
        }
        left
    }

    /// Sends `order` to the node holding connection `conn`; false if no node holds it.
    async fn order_conn(&self, conn: &str, order: serde_json::Value) -> Result<bool, BrokerError> {
        let Some(node) = self.store.find_conn(conn).await.map_err(unavailable)? else {
            return Ok(false);
        };
        let channel = node_channel(&node);
        let order = order.to_string();
        self.store
            .send(&channel, &order)
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    /// Hands a pushed message of `stream` to this node's connections, in seq order.
    async fn on_push(&self, stream: &str, seq: u64, frame: &str) {
        let Some(tap) = self.taps.get(stream) else {
            return;
        };
        let Some(target) = target_of(stream) else {
            return;
        };
        let frame = Frame::text(frame);
        let missed = match tap.lock().step(seq) {
            Step::Deliver => {
                self.hub.deliver(&target, &frame);
                return;
            }
            Step::Skip => return,
            Step::Gap(cur) => cur,
        };
        self.catch_up(stream, &tap, missed, Some(seq - 1)).await;
        let mut st = tap.lock();
        if st.step(seq) == Step::Deliver {
            self.hub.deliver(&target, &frame);
        }
    }

    /// Delivers from history what this node missed on `stream` after `cur` (up to `upto`,
    /// or the stream's current seq). What history no longer holds is skipped: those
    /// clients see a gap and their `resume` says `complete:false`.
    async fn catch_up(&self, stream: &str, tap: &Tap, cur: u64, upto: Option<u64>) {
        let (now, stored) = match self.store.since(stream, cur).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(stream, "could not read missed pushes from Redis: {e}");
                (upto.unwrap_or(cur), Vec::new())
            }
        };
        let upto = upto.unwrap_or(now);
        let Some(target) = target_of(stream) else {
            return;
        };
        let mut st = tap.lock();
        let Some(mut at) = st.seq else {
            return;
        };
        for s in &stored {
            if s.seq > at && s.seq <= upto {
                self.hub.deliver(&target, &Frame::text(&s.frame));
                at = s.seq;
            }
        }
        st.seq = Some(at.max(upto));
    }

    /// Carries out an order from another node.
    async fn on_order(self: &Arc<Self>, uid: Option<&str>, order: Order) {
        let conns = |conn: Option<String>| match (conn, uid) {
            (Some(id), _) => self.hub.get(&id).into_iter().collect(),
            (None, Some(uid)) => self.hub.uid_conns(uid),
            (None, None) => Vec::new(),
        };
        match order {
            Order::Push { conn, frame } => {
                self.hub.deliver(&Target::Conn(conn), &Frame::text(&frame));
            }
            Order::Kick { conn, reason } => {
                for c in conns(conn) {
                    c.close(close::KICKED, &reason);
                }
            }
            Order::Join { conn, group } => {
                for c in conns(conn) {
                    if let Err(e) = self.join_local(&c, &group).await {
                        tracing::warn!("could not join {} to {group}: {e}", c.id());
                    }
                }
            }
            Order::Leave { group } => {
                for c in conns(None) {
                    self.leave_local(&c, &group).await;
                }
            }
        }
    }

    async fn on_message(self: &Arc<Self>, msg: redis::Msg) {
        let channel = msg.get_channel_name();
        let Ok(payload) = std::str::from_utf8(msg.get_payload_bytes()) else {
            return;
        };
        if channel == node_channel(&self.node) {
            if let Ok(order) = serde_json::from_str(payload) {
                self.on_order(None, order).await;
            }
            return;
        }
        let Some(stream) = channel.strip_prefix("mp:s:") else {
            return;
        };
        if let Some(order) = payload.strip_prefix('!') {
            if let (Some(uid), Ok(order)) = (stream.strip_prefix("u:"), serde_json::from_str(order))
            {
                self.on_order(Some(uid), order).await;
            }
            return;
        }
        if let Some((seq, frame)) = payload.split_once('|') {
            if let Ok(seq) = seq.parse() {
                self.on_push(stream, seq, frame).await;
            }
        }
    }

    /// After (re)connecting: subscribe to everything this node reads, rewrite its
    /// presence, and deliver what was missed meanwhile.
    async fn resubscribe(&self, mut sink: PubSubSink) -> Result<(), BrokerError> {
        let mut channels = vec![node_channel(&self.node)];
        channels.extend(self.taps.streams().iter().map(|s| stream_channel(s)));
        tokio::time::timeout(REDIS_TIMEOUT * 5, sink.subscribe(&channels))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        *self.sink.lock().await = Some(sink);
        self.resync().await.map_err(unavailable)?;
        let epoch = self.store.epoch(&self.epoch).await.map_err(unavailable)?;
        if epoch != self.epoch {
            tracing::warn!("Redis holds another epoch than this node: restart this node");
        }
        for stream in self.taps.streams() {
            let Some(tap) = self.taps.get(&stream) else {
                continue;
            };
            let Some(cur) = tap.lock().seq else {
                continue;
            };
            let seq = self.store.seq(&stream).await.map_err(unavailable)?;
            if seq < cur {
                // Redis lost its data (no persistence): number on from what it holds now.
                tracing::warn!(
                    stream,
                    "Redis lost this stream's seq; clients will resume incomplete"
                );
                tap.lock().seq = Some(seq);
            } else {
                self.catch_up(&stream, &tap, cur, None).await;
            }
        }
        Ok(())
    }

    /// Rewrites this node's presence from the hub (after an outage other nodes may have
    /// counted it out).
    async fn resync(&self) -> redis::RedisResult<()> {
        self.store.forget_node(&self.node).await?;
        let deltas: Vec<Delta> = self
            .hub
            .snapshot()
            .iter()
            .flat_map(|c| self.presence(c, &c.groups(), 1))
            .collect();
        for chunk in deltas.chunks(1000) {
            self.store.apply(chunk).await?;
        }
        self.beat().await;
        Ok(())
    }

    /// Marks this node alive and publishes its stats; records whether Redis answered.
    async fn beat(&self) {
        let stats = crate::metrics::node_stats(&self.node, &self.hub, &self.metrics).to_string();
        match self.store.heartbeat(&self.node, &stats).await {
            Ok(()) => self.set_reachable(Ok(())),
            Err(e) => self.set_reachable(Err(&format!("heartbeat failed: {e}"))),
        }
    }

    /// Records whether Redis answers; a change is logged and alerted. `reason` (why it
    /// does not) never holds the URL.
    fn set_reachable(&self, state: Result<(), &str>) {
        let ok = state.is_ok();
        if self.reachable.swap(ok, Ordering::AcqRel) == ok {
            return;
        }
        match state {
            Ok(()) => {
                tracing::info!("Redis is reachable again");
                self.alerts.notify(Alert::BrokerRegained);
            }
            Err(reason) => {
                tracing::warn!(
                    reason,
                    "Redis is unreachable: serving local connections only"
                );
                self.alerts.notify(Alert::BrokerLost {
                    reason: reason.to_string(),
                });
            }
        }
    }

    /// Drops the taps no local connection reads any more, and unsubscribes from them.
    async fn drop_unread(&self) {
        let mut sink = self.sink.lock().await;
        let dropped = self.taps.drop_unread(|stream| {
            if let Some(uid) = stream.strip_prefix("u:") {
                self.hub.uid_conns(uid).is_empty()
            } else if let Some(group) = stream.strip_prefix("g:") {
                self.hub.group_len(group) == 0
            } else {
                false
            }
        });
        if let (false, Some(sink)) = (dropped.is_empty(), sink.as_mut()) {
            let channels: Vec<String> = dropped.iter().map(|s| stream_channel(s)).collect();
            if let Ok(Err(e)) =
                tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(&channels)).await
            {
                tracing::debug!("unsubscribe failed: {e}");
            }
        }
    }
}

/// The target whose local connections read `stream`.
fn target_of(stream: &str) -> Option<Target> {
    if stream == "all" {
        return Some(Target::All);
    }
    if let Some(uid) = stream.strip_prefix("u:") {
        return Some(Target::Uid(uid.to_string()));
    }
    stream
        .strip_prefix("g:")
        .map(|g| Target::Group(g.to_string()))
}

/// Keeps a pub/sub connection open for as long as the broker lives, reconnecting with
/// backoff.
async fn subscriber(weak: Weak<Inner>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let mut alive = inner.alive.clone();
        let connected = tokio::time::timeout(REDIS_TIMEOUT, inner.client.get_async_pubsub()).await;
        match connected {
            Ok(Ok(pubsub)) => {
                let (sink, mut stream) = pubsub.split();
                match inner.resubscribe(sink).await {
                    Ok(()) => {
                        backoff = BACKOFF_MIN;
                        inner.subscribed.store(true, Ordering::Release);
                        inner.set_reachable(Ok(()));
                        drop(inner);
                        loop {
                            let msg = tokio::select! {
                                msg = stream.next() => msg,
                                _ = alive.changed() => return,
                            };
                            let (Some(msg), Some(inner)) = (msg, weak.upgrade()) else {
                                break;
                            };
                            inner.on_message(msg).await;
                        }
                    }
                    Err(e) => tracing::warn!("could not subscribe to Redis: {e}"),
                }
            }
            Ok(Err(e)) => tracing::debug!("cannot connect to Redis: {e}"),
            Err(_) => tracing::debug!("connecting to Redis timed out"),
        }
        if let Some(inner) = weak.upgrade() {
            inner.subscribed.store(false, Ordering::Release);
            *inner.sink.lock().await = None;
            inner.set_reachable(Err("lost the subscriber connection"));
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = alive.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Heartbeat every [`HEARTBEAT`]; dead-node sweep and unread-stream cleanup less often.
async fn maintenance(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 1u32.. {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        inner.beat().await;
        if round % CLEANUP_EVERY != 0 {
            continue;
        }
        if let Err(e) = inner.store.sweep().await {
            tracing::debug!("sweep failed: {e}");
        }
        inner.drop_unread().await;
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    async fn publish(
        &self,
        target: &Target,
        data: &RawValue,
        store: bool,
    ) -> Result<Published, BrokerError> {
        let inner = &self.inner;
        inner.metrics.pushed();
        let stream = target.stream();
        let time = protocol::now_ms();
        let count = match target {
            Target::Uid(uid) => Count::Uid(uid),
            Target::Group(group) => Count::Group(group),
            Target::All => Count::All,
            Target::Conn(id) => {
                let frame = protocol::push(&stream, None, data, time);
                let delivered = if inner.hub.get(id).is_some() {
                    inner.hub.deliver(target, &frame)
                } else {
                    let text = std::str::from_utf8(frame.payload()).expect("frames are UTF-8");
                    let order = json!({"op": "push", "conn": id, "frame": text});
                    usize::from(inner.order_conn(id, order).await?)
                };
                return Ok(Published {
                    delivered,
                    seq: None,
                });
            }
        };
        let (before, after) = protocol::push_template(&stream, data, time);
        let (seq, delivered) = inner
            .store
            .publish(
                &stream,
                (&before, &after),
                store,
                inner.history_size,
                inner.ttl,
                count,
            )
            .await
            .map_err(unavailable)?;
        if seq > 0 {
            // This node's readers get it now, in order, ahead of the publisher's reply
            // (as with the in-memory broker); the copy coming back from Redis is skipped.
            inner
                .on_push(&stream, seq, &format!("{before}{seq}{after}"))
                .await;
        }
        Ok(Published {
            delivered,
            seq: (seq > 0).then_some(seq),
        })
    }

    async fn resume(
        &self,
        conn: &Arc<Conn>,
        stream: &str,
        after: u64,
    ) -> Result<Resumed, BrokerError> {
        let (seq, stored) = self
            .inner
            .store
            .since(stream, after)
            .await
            .map_err(unavailable)?;
        let oldest_kept = protocol::now_ms() - self.inner.ttl.as_millis() as i64;
        let kept = stored
            .into_iter()
            .filter(|s| s.at_ms >= oldest_kept)
            .map(|s| (s.seq, s.frame));
        let replay = history::select(seq, kept, after, conn.first_live(stream));
        let frames = replay.frames.iter().map(|text| Frame::text(text));
        Ok(Resumed::queue(conn, frames, replay.complete))
    }

    async fn attach(
        &self,
        conn: &Arc<Conn>,
        max_connections: usize,
        welcome: Greeting<'_>,
    ) -> Result<bool, BrokerError> {
        let inner = &self.inner;
        let mut streams = vec!["all".to_string()];
        let mut groups = Vec::new();
        if let Some(uid) = conn.uid() {
            streams.push(format!("u:{uid}"));
            groups = inner.store.uid_groups(uid).await.map_err(unavailable)?;
        }
        let group_streams: Vec<String> = groups.iter().map(|g| format!("g:{g}")).collect();
        loop {
            let mut taps = Vec::new();
            for stream in streams.iter().chain(&group_streams) {
                taps.push(inner.tap(stream).await?);
            }
            // Taps lock in one order everywhere: `all`, `u:`, then groups sorted.
            let guards: Vec<_> = taps.iter().map(|t| t.lock()).collect();
            if guards.iter().any(|g| g.removed) {
                continue;
            }
            let seqs: Vec<u64> = guards
                .iter()
                .map(|g| g.seq.expect("an initialised tap has a seq"))
                .collect();
            for (stream, seq) in streams.iter().chain(&group_streams).zip(&seqs) {
                conn.live_after(stream, *seq);
            }
            let greeting: Vec<(String, u64)> = streams.iter().cloned().zip(seqs).collect();
            conn.send(&welcome(&greeting));
            if !inner.hub.register(conn, max_connections) {
                return Ok(false);
            }
            for g in &groups {
                inner.hub.join(conn, g);
            }
            break;
        }
        inner.record(inner.presence(conn, &conn.groups(), 1)).await;
        Ok(true)
    }

    async fn detach(&self, conn: &Arc<Conn>) {
        let groups = conn.groups();
        self.inner.hub.unregister(conn);
        self.inner
            .record(self.inner.presence(conn, &groups, -1))
            .await;
    }

    async fn bind(&self, conn: &Arc<Conn>, uid: &str) -> Result<bool, BrokerError> {
        let inner = &self.inner;
        let stream = format!("u:{uid}");
        loop {
            let tap = inner.tap(&stream).await?;
            let st = tap.lock();
            if st.removed {
                continue;
            }
            if !inner.hub.bind(conn, uid) {
                return Ok(false);
            }
            conn.live_after(&stream, st.seq.expect("an initialised tap has a seq"));
            break;
        }
        let base = inner.base();
        inner
            .record(vec![Delta {
                key: format!("{base}:u"),
                field: uid.to_string(),
                delta: 1,
            }])
            .await;
        Ok(true)
    }

    async fn online(&self, uid: &str) -> Result<usize, BrokerError> {
        self.inner
            .store
            .count(Count::Uid(uid))
            .await
            .map_err(unavailable)
    }

    async fn join(&self, conn: &Arc<Conn>, group: &str) -> Result<u64, BrokerError> {
        self.inner.join_local(conn, group).await
    }

    async fn leave(&self, conn: &Arc<Conn>, group: &str) -> Result<bool, BrokerError> {
        Ok(self.inner.leave_local(conn, group).await)
    }

    async fn add_uid_to_group(&self, group: &str, uid: &str) -> Result<(), BrokerError> {
        let order = format!("!{}", json!({"op": "join", "group": group}));
        self.inner
            .store
            .set_member(group, uid, true, &order)
            .await
            .map_err(unavailable)
    }

    async fn remove_uid_from_group(&self, group: &str, uid: &str) -> Result<(), BrokerError> {
        let order = format!("!{}", json!({"op": "leave", "group": group}));
        self.inner
            .store
            .set_member(group, uid, false, &order)
            .await
            .map_err(unavailable)
    }

    async fn add_conn_to_group(&self, group: &str, conn: &str) -> Result<bool, BrokerError> {
        let inner = &self.inner;
        if let Some(c) = inner.hub.get(conn) {
            inner.join_local(&c, group).await?;
            return Ok(true);
        }
        let order = json!({"op": "join", "conn": conn, "group": group});
        inner.order_conn(conn, order).await
    }

    async fn group_info(&self, group: &str) -> Result<GroupInfo, BrokerError> {
        let (conns, mut uids) = self.inner.store.group(group).await.map_err(unavailable)?;
        uids.sort();
        Ok(GroupInfo { conns, uids })
    }

    async fn kick(&self, target: &Target, reason: &str) -> Result<usize, BrokerError> {
        let inner = &self.inner;
        match target {
            Target::Uid(uid) => {
                let n = inner
                    .store
                    .count(Count::Uid(uid))
                    .await
                    .map_err(unavailable)?;
                let order = format!("!{}", json!({"op": "kick", "reason": reason}));
                let channel = stream_channel(&target.stream());
                inner
                    .store
                    .send(&channel, &order)
                    .await
                    .map_err(unavailable)?;
                Ok(n)
            }
            Target::Conn(id) if inner.hub.get(id).is_none() => {
                let order = json!({"op": "kick", "conn": id, "reason": reason});
                Ok(usize::from(inner.order_conn(id, order).await?))
            }
            _ => Ok(inner.hub.close_target(target, close::KICKED, reason)),
        }
    }

    async fn ready(&self) -> bool {
        self.inner.subscribed.load(Ordering::Acquire)
            && self.inner.reachable.load(Ordering::Acquire)
    }

    async fn nodes(&self) -> Result<Option<Vec<serde_json::Value>>, BrokerError> {
        let inner = &self.inner;
        let stats = inner.store.stats().await.map_err(unavailable)?;
        let mine = crate::metrics::node_stats(&inner.node, &inner.hub, &inner.metrics);
        let mut nodes = vec![mine];
        for text in stats {
            if let Ok(node) = serde_json::from_str::<serde_json::Value>(&text) {
                if node["node"] != inner.node.as_str() {
                    nodes.push(node);
                }
            }
        }
        Ok(Some(nodes))
    }

    async fn stop(&self) {
        if let Err(e) = self.inner.store.forget_node(&self.inner.node).await {
            tracing::debug!("could not leave the cluster cleanly: {e}");
        }
    }
}

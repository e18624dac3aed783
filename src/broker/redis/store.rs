//! What the Redis broker keeps in Redis, and the commands and Lua scripts that read and
//! write it. Every key starts with `mp:`; one Redis (standalone, or a Sentinel-managed
//! primary) serves one cluster. Redis Cluster is not supported: the scripts touch keys
//! they compute.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `mp:epoch` | string | the cluster's epoch, set once |
//! | `mp:seq:<stream>` | counter | the stream's last `seq` |
//! | `mp:h:<stream>` | sorted set | history: score `seq`, member `<unix ms>|<frame>` (trimmed to `history.size`, expires after `history.ttl_secs` idle) |
//! | `mp:gu:<group>`, `mp:ug:<uid>` | sets | uids made group members through the API, both ways |
//! | `mp:nodes` | sorted set | node id -> last heartbeat (unix ms) |
//! | `mp:node:<n>` | hash | `conns` (live connections), `stats` (JSON for `/api/stats`) |
//! | `mp:node:<n>:u`, `:g`, `:c` | hashes | that node's connections per uid, member connections per group, connection ids |
//! | `mp:node:<n>:gm:<group>` | hash | uids with a connection in the group on that node |
//!
//! Channels: `mp:s:<stream>` carries a stream's pushes (`<seq>|<frame>`, seq 0 when
//! unnumbered) and uid-wide orders (`!<json>`); `mp:n:<node>` carries orders for one node.
//! A node subscribes only to the streams its connections read.

use std::time::Duration;

use redis::{aio::ConnectionManager, AsyncCommands, Script};

/// A node whose heartbeat is older than this is counted out (SPEC: within 30 s).
pub const NODE_TTL: Duration = Duration::from_secs(20);

pub fn stream_channel(stream: &str) -> String {
    format!("mp:s:{stream}")
}

pub fn node_channel(node: &str) -> String {
    format!("mp:n:{node}")
}

/// One change to a node's presence hashes: `field` of `key` grows by `delta`; a field
/// that reaches 0 is removed.
pub struct Delta {
    pub key: String,
    pub field: String,
    pub delta: i64,
}

/// Which per-node counter sums to a cluster-wide count.
pub enum Count<'a> {
    Uid(&'a str),
    Group(&'a str),
    All,
}

impl Count<'_> {
    fn suffix_and_field(&self) -> (&'static str, &str) {
        match self {
            Count::Uid(u) => (":u", u),
            Count::Group(g) => (":g", g),
            Count::All => ("", "conns"),
        }
    }
}

/// The live node ids, then a sum over them (shared by the scripts below).
const LIVE: &str = r#"
local function live(now, ttl)
  return redis.call('ZRANGEBYSCORE', 'mp:nodes', tonumber(now) - tonumber(ttl), '+inf')
end
local function sum(nodes, suffix, field)
  local n = 0
  for _, node in ipairs(nodes) do
    n = n + (tonumber(redis.call('HGET', 'mp:node:' .. node .. suffix, field)) or 0)
  end
  return n
end
"#;

/// ARGV: stream, text before seq, text after seq, store (1/0), history size, history ttl,
/// now (ms), node ttl (ms), count suffix, count field. Numbers, stores, publishes and
/// counts in one step, so every node sees a stream's pushes in `seq` order.
const PUBLISH: &str = r#"
local stream = ARGV[1]
local seq = 0
local frame
if ARGV[4] == '1' then
  seq = redis.call('INCR', 'mp:seq:' .. stream)
  frame = ARGV[2] .. seq .. ARGV[3]
  local h = 'mp:h:' .. stream
  redis.call('ZADD', h, seq, ARGV[7] .. '|' .. frame)
  redis.call('ZREMRANGEBYRANK', h, 0, -(tonumber(ARGV[5]) + 1))
  redis.call('EXPIRE', h, ARGV[6])
else
  frame = ARGV[2] .. 'null' .. ARGV[3]
end
redis.call('PUBLISH', 'mp:s:' .. stream, seq .. '|' .. frame)
return {seq, sum(live(ARGV[7], ARGV[8]), ARGV[9], ARGV[10])}
"#;

/// ARGV: now, node ttl, suffix, field.
const COUNT: &str = "return sum(live(ARGV[1], ARGV[2]), ARGV[3], ARGV[4])";

/// ARGV: now, node ttl, group -> {member connections, uid...}.
const GROUP: &str = r#"
local nodes = live(ARGV[1], ARGV[2])
local seen, uids = {}, {}
local function add(u) if not seen[u] then seen[u] = true; table.insert(uids, u) end end
for _, u in ipairs(redis.call('SMEMBERS', 'mp:gu:' .. ARGV[3])) do add(u) end
for _, node in ipairs(nodes) do
  for _, u in ipairs(redis.call('HKEYS', 'mp:node:' .. node .. ':gm:' .. ARGV[3])) do add(u) end
end
return {sum(nodes, ':g', ARGV[3]), uids}
"#;

/// ARGV: now, node ttl, conn -> the live node holding that connection, or false.
const FIND_CONN: &str = r#"
for _, node in ipairs(live(ARGV[1], ARGV[2])) do
  if redis.call('HEXISTS', 'mp:node:' .. node .. ':c', ARGV[3]) == 1 then return node end
end
return false
"#;

/// ARGV: key, field, delta, key, field, delta, ...
const DELTAS: &str = r#"
for i = 1, #ARGV, 3 do
  if tonumber(redis.call('HINCRBY', ARGV[i], ARGV[i + 1], ARGV[i + 2])) <= 0 then
    redis.call('HDEL', ARGV[i], ARGV[i + 1])
  end
end
return 0
"#;

/// ARGV: now, node ttl -> every live node's `stats` JSON.
const STATS: &str = r#"
local out = {}
for _, node in ipairs(live(ARGV[1], ARGV[2])) do
  local s = redis.call('HGET', 'mp:node:' .. node, 'stats')
  if s then table.insert(out, s) end
end
return out
"#;

/// One stored push read back for `resume`.
pub struct Stored {
    pub seq: u64,
    pub at_ms: i64,
    pub frame: String,
}

/// The Redis side of the broker: a self-healing connection and the scripts.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    publish: Script,
    count: Script,
    group: Script,
    find_conn: Script,
    deltas: Script,
    stats: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{LIVE}{body}"))
}

fn now_ms() -> i64 {
    crate::protocol::now_ms()
}

const NODE_TTL_MS: u64 = NODE_TTL.as_millis() as u64;

impl Store {
    pub fn new(conn: ConnectionManager) -> Store {
        Store {
            conn,
            publish: script(PUBLISH),
            count: script(COUNT),
            group: script(GROUP),
            find_conn: script(FIND_CONN),
            deltas: script(DELTAS),
            stats: script(STATS),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The cluster's epoch: the first node to start sets it.
    pub async fn epoch(&self, candidate: &str) -> redis::RedisResult<String> {
        let mut c = self.conn();
        let _: Option<String> = redis::cmd("SET")
            .arg("mp:epoch")
            .arg(candidate)
            .arg("NX")
            .query_async(&mut c)
            .await?;
        c.get("mp:epoch").await
    }

    /// Numbers (when `store`), keeps and publishes a push; returns its seq (0 when
    /// unnumbered) and how many connections cluster-wide read the target.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish(
        &self,
        stream: &str,
        (before, after): (&str, &str),
        store: bool,
        size: usize,
        ttl: Duration,
        count: Count<'_>,
    ) -> redis::RedisResult<(u64, usize)> {
        let (suffix, field) = count.suffix_and_field();
        self.publish
            .arg(stream)
            .arg(before)
            .arg(after)
            .arg(if store { "1" } else { "0" })
            .arg(size)
            .arg(ttl.as_secs())
            .arg(now_ms())
            .arg(NODE_TTL_MS)
            .arg(suffix)
            .arg(field)
            .invoke_async(&mut self.conn())
            .await
    }

    /// Connections cluster-wide for a uid, a group, or all.
    pub async fn count(&self, count: Count<'_>) -> redis::RedisResult<usize> {
        let (suffix, field) = count.suffix_and_field();
        self.count
            .arg(now_ms())
            .arg(NODE_TTL_MS)
            .arg(suffix)
            .arg(field)
            .invoke_async(&mut self.conn())
            .await
    }

    pub async fn group(&self, group: &str) -> redis::RedisResult<(usize, Vec<String>)> {
        self.group
            .arg(now_ms())
            .arg(NODE_TTL_MS)
            .arg(group)
            .invoke_async(&mut self.conn())
            .await
    }

    /// The live node holding connection `conn`, if any.
    pub async fn find_conn(&self, conn: &str) -> redis::RedisResult<Option<String>> {
        self.find_conn
            .arg(now_ms())
            .arg(NODE_TTL_MS)
            .arg(conn)
            .invoke_async(&mut self.conn())
            .await
    }

    pub async fn stats(&self) -> redis::RedisResult<Vec<String>> {
        self.stats
            .arg(now_ms())
            .arg(NODE_TTL_MS)
            .invoke_async(&mut self.conn())
            .await
    }

    pub async fn apply(&self, deltas: &[Delta]) -> redis::RedisResult<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut call = self.deltas.prepare_invoke();
        for d in deltas {
            call.arg(&d.key).arg(&d.field).arg(d.delta);
        }
        call.invoke_async(&mut self.conn()).await
    }

    /// A stream's current seq.
    pub async fn seq(&self, stream: &str) -> redis::RedisResult<u64> {
        let seq: Option<u64> = self.conn().get(format!("mp:seq:{stream}")).await?;
        Ok(seq.unwrap_or(0))
    }

    /// The stream's current seq and its stored pushes after `after`, read together.
    pub async fn since(&self, stream: &str, after: u64) -> redis::RedisResult<(u64, Vec<Stored>)> {
        let (seq, members): (Option<u64>, Vec<(String, u64)>) = redis::pipe()
            .atomic()
            .get(format!("mp:seq:{stream}"))
            .cmd("ZRANGEBYSCORE")
            .arg(format!("mp:h:{stream}"))
            .arg(format!("({after}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await?;
        let stored = members
            .into_iter()
            .filter_map(|(member, seq)| {
                let (at, frame) = member.split_once('|')?;
                Some(Stored {
                    seq,
                    at_ms: at.parse().ok()?,
                    frame: frame.to_string(),
                })
            })
            .collect();
        Ok((seq.unwrap_or(0), stored))
    }

    pub async fn uid_groups(&self, uid: &str) -> redis::RedisResult<Vec<String>> {
        let mut groups: Vec<String> = self.conn().smembers(format!("mp:ug:{uid}")).await?;
        groups.sort();
        Ok(groups)
    }

    /// Makes `uid` an API member of `group` (or not), then tells its nodes.
    pub async fn set_member(
        &self,
        group: &str,
        uid: &str,
        member: bool,
        order: &str,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        if member {
            pipe.sadd(format!("mp:gu:{group}"), uid)
                .sadd(format!("mp:ug:{uid}"), group);
        } else {
            pipe.srem(format!("mp:gu:{group}"), uid)
                .srem(format!("mp:ug:{uid}"), group);
        }
        pipe.publish(stream_channel(&format!("u:{uid}")), order)
            .query_async(&mut self.conn())
            .await
    }

    pub async fn send(&self, channel: &str, message: &str) -> redis::RedisResult<()> {
        self.conn().publish(channel, message).await
    }

    /// Marks `node` alive now and stores its stats.
    pub async fn heartbeat(&self, node: &str, stats: &str) -> redis::RedisResult<()> {
        redis::pipe()
            .zadd("mp:nodes", node, now_ms())
            .hset(format!("mp:node:{node}"), "stats", stats)
            .query_async(&mut self.conn())
            .await
    }

    /// Every key a node writes about itself.
    async fn node_keys(&self, node: &str) -> redis::RedisResult<Vec<String>> {
        let base = format!("mp:node:{node}");
        let mut keys = vec![
            base.clone(),
            format!("{base}:u"),
            format!("{base}:g"),
            format!("{base}:c"),
        ];
        let mut c = self.conn();
        let mut iter: redis::AsyncIter<String> = c.scan_match(format!("{base}:gm:*")).await?;
        while let Some(key) = iter.next_item().await {
            keys.push(key?);
        }
        Ok(keys)
    }

    /// Forgets a node's presence (its connections are counted out).
    pub async fn forget_node(&self, node: &str) -> redis::RedisResult<()> {
        let keys = self.node_keys(node).await?;
        let mut c = self.conn();
        let () = c.zrem("mp:nodes", node).await?;
        c.del(keys).await
    }

    /// Counts out every node whose heartbeat is older than [`NODE_TTL`]. Each dead node is
    /// cleaned by the one live node that removes it from `mp:nodes`.
    pub async fn sweep(&self) -> redis::RedisResult<usize> {
        let mut c = self.conn();
        let cutoff = now_ms() - NODE_TTL_MS as i64;
        let dead: Vec<String> = c.zrangebyscore("mp:nodes", "-inf", cutoff).await?;
        let mut swept = 0;
        for node in dead {
            let removed: usize = c.zrem("mp:nodes", &node).await?;
            if removed == 1 {
                let keys = self.node_keys(&node).await?;
                let () = c.del(keys).await?;
                swept += 1;
            }
        }
        Ok(swept)
    }
}

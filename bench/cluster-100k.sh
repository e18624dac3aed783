#!/usr/bin/env bash
# bench/cluster-100k.sh — about 100,000 connections held by a cluster of NODES [5]
# minipush nodes on one machine, sharing one redis-server.
#
# (Run it alone: it takes about 1.5 minutes and both CPUs.)
# Each process here may open at most `ulimit -Hn` (20,000) files, so each node holds
# PER_NODE [19,950] connections (it needs a few files of its own), and each node gets its
# own load generator process (which also holds its connections' files). The loadgens ramp
# at RAMP [4,000]/s each, all at once, then hold for HOLD [40] s: longer than the 25 s
# heartbeat, so every connection answers a ping while it is counted. Meanwhile the script
# reads every node's RSS and CPU from /proc, asks one node for `GET /api/stats` (the
# cluster's total) and pushes one broadcast through one node; each loadgen reports how
# many of its clients received it. One JSON line goes to bench/results/<stamp>-cluster.jsonl.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
NODES=${NODES:-5}
PER_NODE=${PER_NODE:-19950}
RAMP=${RAMP:-4000}
HOLD=${HOLD:-50}
REDIS_PORT=${REDIS_PORT:-9630}
TOKEN=bench-token-$RANDOM$RANDOM
KEY=bench-key-$RANDOM$RANDOM
TARGET=$ROOT/target/release
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
OUT=$BENCH/results/$STAMP-cluster.jsonl
LOG=$BENCH/results/$STAMP-cluster.log
mkdir -p "$BENCH/results"
: >"$LOG"

[ "${SKIP_BUILD:-0}" = 1 ] ||
  (cd "$ROOT" && cargo build --release --locked -p minipush -p minipush-loadgen) >>"$LOG" 2>&1

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_port() {
  local i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}

redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no >>"$LOG" 2>&1 &
PIDS+=($!)
wait_port $REDIS_PORT

NODE_PIDS=()
for i in $(seq "$NODES"); do
  MINIPUSH_AUTH_TOKENS=$TOKEN MINIPUSH_API_KEYS=$KEY MINIPUSH_SERVER_LISTEN=127.0.0.1:$((9640 + i)) \
    MINIPUSH_SERVER_NODE_ID=node$i MINIPUSH_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/ \
    MINIPUSH_LIMITS_MAX_CONNECTIONS=$((PER_NODE + 10)) \
    "$TARGET/minipush" serve 2>>"$LOG" >/dev/null &
  NODE_PIDS+=($!)
  PIDS+=($!)
  wait_port $((9640 + i))
done

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A RSS0
for p in "${NODE_PIDS[@]}"; do RSS0[$p]=$(rss_kb "$p"); done

# One loadgen per node. Its `fanout` workload with --wait-secs holds the connections,
# then counts one broadcast sent by this script.
LG_OUT=()
for i in $(seq "$NODES"); do
  f=$(mktemp)
  LG_OUT+=("$f")
  "$TARGET/loadgen" --url "ws://127.0.0.1:$((9640 + i))/ws" --api "http://127.0.0.1:$((9640 + i))" \
    --token "$TOKEN" --key "$KEY" --clients "$PER_NODE" --first $(((i - 1) * PER_NODE)) \
    --ramp "$RAMP" --label "node$i" idle --hold-secs "$HOLD" >"$f" 2>>"$LOG" &
  PIDS+=($!)
done

# Wait until the cluster holds every connection (at most 60 s past the ramp).
want=$((NODES * PER_NODE))
total=0
t_start=$(date +%s.%N)
for _ in $(seq 600); do
  total=$(curl -s -H "Authorization: Bearer $KEY" http://127.0.0.1:9641/api/stats |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["connections"])' 2>/dev/null || echo 0)
  [ "$total" -ge "$want" ] && break
  sleep 0.2
done
t_full=$(date +%s.%N)
declare -A CPU0
for p in "${NODE_PIDS[@]}"; do CPU0[$p]=$(cpu_ticks "$p"); done
sleep 30 # a heartbeat round (25 s) while everything is held
declare -A CPU1 RSS1
for p in "${NODE_PIDS[@]}"; do CPU1[$p]=$(cpu_ticks "$p") RSS1[$p]=$(rss_kb "$p"); done
stats=$(curl -s -H "Authorization: Bearer $KEY" http://127.0.0.1:9641/api/stats)
online=$(curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:9643/api/online/u0")
push=$(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"all":true,"data":{"t":0}}' http://127.0.0.1:9642/api/push)
wait "${PIDS[@]:$((NODES + 1))}" 2>/dev/null || true

python3 - "$OUT" "$want" "$total" "$t_start" "$t_full" "$stats" "$online" "$push" \
  "$(for p in "${NODE_PIDS[@]}"; do echo "$p ${RSS0[$p]} ${RSS1[$p]} ${CPU0[$p]} ${CPU1[$p]}"; done)" \
  "${LG_OUT[@]}" <<'EOF'
import json, sys
out, want, total, t0, t1, stats, online, push, nodes = sys.argv[1:10]
loadgens = [json.loads(open(p).read() or "{}") for p in sys.argv[10:]]
rows = [l.split() for l in nodes.splitlines() if l.strip()]
per_node = [{
    "pid": int(p), "rss_mb": int(r1) / 1024, "rss_kb_per_conn": (int(r1) - int(r0)) / (int(want) / len(rows)),
    "cpu_percent_idle": (int(c1) - int(c0)) / 30.0,
} for p, r0, r1, c0, c1 in rows]
line = {
    "case": "cluster-100k", "nodes": len(rows), "connections_wanted": int(want),
    "connections_counted_by_api": int(total), "secs_until_all_connected": float(t1) - float(t0),
    "failed_connects": sum(l.get("failed_connects", 0) for l in loadgens),
    "broadcast_received": sum(l.get("pushes_received", 0) for l in loadgens),
    "handshakes_per_sec_sum": sum(l.get("handshakes_per_sec", 0) for l in loadgens),
    "per_node": per_node, "stats_total": json.loads(stats).get("total"),
    "online_u0_seen_from_node3": json.loads(online), "broadcast_answer": json.loads(push),
}
open(out, "a").write(json.dumps(line) + "\n")
print(json.dumps(line, indent=1))
EOF

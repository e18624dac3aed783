#!/usr/bin/env bash
# bench/run.sh — reproduces the tables in BENCHMARKS.md with one command.
#
# Builds minipush, the load generator and the tokio-tungstenite peer in release mode,
# installs the Node `ws` peer (npm ci) and the Python `websockets` peer (a venv in
# bench/.venv), then, for each workload and each server, runs one short warm-up and
# REPS (3) repetitions back to back. Every run starts the server fresh, pinned to CPU 0
# (`taskset -c 0`), with the load generator pinned to CPU 1 (`taskset -c 1`), and kills
# the server after. Each run appends one JSON line to bench/results/<UTC date>-<time>.jsonl
# (the loadgen's line plus "case", "server", "rep", "listen_drops" and, for warm-ups,
# "warmup"); bench/report.py then prints
# the markdown tables of medians and minipush/peer ratios (also saved next to it as .md).
#
# Cases (sizes are environment variables; defaults in brackets):
#   fanout-sat  CLIENTS [10000] clients, SAT_PUSHES [200] broadcasts every SAT_INTERVAL_MS [2]
#               ms: more than any server here can deliver. Deliveries/s and deliveries per
#               server CPU-second.
#   fanout-sus  CLIENTS clients, SUS_PUSHES [100] broadcasts every SUS_INTERVAL_MS [100] ms
#               (10,000 x 10/s). Latency p50/p90/p99. Also run against `floor`
#               (bench/peers/tokio-tungstenite/src/bin/floor.rs): one send per client in a
#               tight loop, the least any server can do, to show what the kernel costs.
#   idle        IDLE_CLIENTS [10000] connections opened at IDLE_RAMP [40000]/s (the ramp caps
#               the handshake rate: twice the 20,000/s target), held IDLE_HOLD [10] s: RSS
#               per connection and handshakes/s.
#   idle-burst  (minipush) the same at BURST_RAMP [100000]/s, held 1 s: the loadgen then
#               opens 1,000 connections at once every 10 ms, more than a small listen
#               backlog holds (std's default is 128); shows the SYNs the kernel drops
#               (each costs the client a 1 s retransmit).
#   echo        ECHO_CLIENTS [1000] clients, each sends echo and waits, ECHO_SECS [10] s.
#   targeted    (minipush) TARGETED_PUSHES [10000] pushes to random uids of CLIENTS clients,
#               via /api/push and via /api/push/batch (TARGETED_BATCH [100] per call).
#   idle-max    (minipush) IDLE_MAX_CLIENTS [19900] connections, split over two loadgen
#               processes (each process here may open at most `ulimit -n` files) ramping at
#               IDLE_RAMP/2 each, held while heartbeats run (IDLE_MAX_WATCH [30] s > the
#               25 s ping interval): RSS per connection once connected and after the
#               watch, and the server's CPU use while idle.
#   fanout-group  (minipush) fanout-sat, but every client joins the group `room` (client
#               `join`) and the pushes go to `{"group":"room"}`.
#   fanout-cluster  (minipush) fanout-sat on the Redis broker: one node, then two nodes with
#               the clients split between them (the trigger pushes through the first);
#               in-memory minipush alongside. The nodes and redis-server share CPU 0, and
#               "server CPU" counts all of them, Redis included.
# PUSH_BYTES [120] is the size of each push frame as the clients receive it.
# Other knobs: REPS [3], SERVERS, CASES (space-separated subsets), SKIP_BUILD=1.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)

CLIENTS=${CLIENTS:-10000}
PUSH_BYTES=${PUSH_BYTES:-120}
SAT_PUSHES=${SAT_PUSHES:-200}
SAT_INTERVAL_MS=${SAT_INTERVAL_MS:-2}
SUS_PUSHES=${SUS_PUSHES:-100}
SUS_INTERVAL_MS=${SUS_INTERVAL_MS:-100}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
IDLE_RAMP=${IDLE_RAMP:-40000}
BURST_RAMP=${BURST_RAMP:-100000}
IDLE_HOLD=${IDLE_HOLD:-10}
IDLE_MAX_CLIENTS=${IDLE_MAX_CLIENTS:-19900}
IDLE_MAX_WATCH=${IDLE_MAX_WATCH:-30}
ECHO_CLIENTS=${ECHO_CLIENTS:-1000}
ECHO_SECS=${ECHO_SECS:-10}
TARGETED_PUSHES=${TARGETED_PUSHES:-10000}
TARGETED_BATCH=${TARGETED_BATCH:-100}
RAMP=${RAMP:-5000}          # connections/s for every case but idle
REPS=${REPS:-3}
SERVERS=${SERVERS:-"minipush tokio-tungstenite node-ws python-websockets"}
CASES=${CASES:-"fanout-sat fanout-sus idle idle-burst echo targeted idle-max fanout-group fanout-cluster"}
CLUSTER_SERVERS="minipush minipush-redis-1node minipush-redis-2nodes"

SERVER_CPU=0
LOADGEN_CPU=1
TOKEN=bench-token-$RANDOM$RANDOM
KEY=bench-key-$RANDOM$RANDOM

TARGET=$ROOT/target/release
PEER_TARGET=$BENCH/target
VENV=$BENCH/.venv
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
RESULTS=$BENCH/results/$STAMP.jsonl
LOG=$BENCH/results/$STAMP.log

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

# ---------------------------------------------------------------------------- build
build() {
  log "building minipush and the loadgen (release)"
  (cd "$ROOT" && cargo build --release --locked -p minipush -p minipush-loadgen) >>"$LOG" 2>&1
  log "building the tokio-tungstenite peer (release, target dir $PEER_TARGET)"
  (cd "$BENCH/peers/tokio-tungstenite" &&
    cargo build --release --locked --target-dir "$PEER_TARGET") >>"$LOG" 2>&1
  log "installing the node-ws peer (npm ci)"
  (cd "$BENCH/peers/node-ws" && npm ci --no-audit --no-fund) >>"$LOG" 2>&1
  log "installing the python-websockets peer into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r "$BENCH/peers/python-websockets/requirements.txt" >>"$LOG" 2>&1
}

# ---------------------------------------------------------------------------- servers
declare -A PORT=([minipush]=9601 [tokio-tungstenite]=9602 [node-ws]=9603 [python-websockets]=9604 [floor]=9605
  [minipush-redis-1node]=9611 [minipush-redis-2nodes]=9611)
REDIS_PORT=9620
# Bytes a server's push frame adds around the loadgen's padding, measured on the wire:
# peers send {"type":"push","data":{"t":<8 digits>,"pad":"…"}} (46 bytes + pad);
# minipush sends {"type":"push","stream":"all","seq":N,"data":{…},"time":<13 digits>}.
declare -A FRAME_OVERHEAD=([minipush]=92 [tokio-tungstenite]=46 [node-ws]=46 [python-websockets]=46 [floor]=46
  [minipush-redis-1node]=92 [minipush-redis-2nodes]=92)
SERVER_PID=
CLUSTER_PIDS=() # a cluster's other processes: redis-server, then the nodes after the first
CLUSTER_URLS=

wait_port() { # port: waits until something listens there
  local i
  for i in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
      sleep 0.2
      return 0
    fi
    sleep 0.1
  done
  log "error: nothing listens on port $1"
  exit 1
}

start_node() { # port node-id [broker url]: a minipush node on CPU 0; prints its pid
  env MINIPUSH_AUTH_TOKENS="$TOKEN" MINIPUSH_API_KEYS="$KEY" MINIPUSH_SERVER_LISTEN="127.0.0.1:$1" \
    MINIPUSH_SERVER_NODE_ID="$2" ${3:+MINIPUSH_BROKER_URL="$3"} \
    MINIPUSH_LIMITS_CLIENT_MSGS_PER_SEC=1000000 MINIPUSH_LIMITS_MAX_CONNECTIONS=200000 \
    taskset -c $SERVER_CPU "$TARGET/minipush" serve 2>>"$LOG" >/dev/null &
  echo $!
}

start_cluster() { # nodes: redis-server and that many nodes on CPU 0
  local n=$1 i port pid
  taskset -c $SERVER_CPU redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" \
    --appendonly no >>"$LOG" 2>&1 &
  CLUSTER_PIDS=($!)
  wait_port $REDIS_PORT
  CLUSTER_URLS=
  for i in $(seq "$n"); do
    port=$((9610 + i))
    pid=$(start_node $port "node$i" "redis://127.0.0.1:$REDIS_PORT/")
    wait_port $port
    if [ "$i" = 1 ]; then SERVER_PID=$pid; else CLUSTER_PIDS+=("$pid"); fi
    CLUSTER_URLS+="${CLUSTER_URLS:+,}ws://127.0.0.1:$port/ws"
  done
}

start_server() { # name
  local name=$1 port=${PORT[$1]}
  case $name in
  minipush)
    SERVER_PID=$(start_node "$port" bench)
    wait_port "$port"
    return 0
    ;;
  minipush-redis-1node)
    start_cluster 1
    return 0
    ;;
  minipush-redis-2nodes)
    start_cluster 2
    return 0
    ;;
  tokio-tungstenite)
    taskset -c $SERVER_CPU "$PEER_TARGET/release/peer-tokio-tungstenite" "$port" 2>>"$LOG" &
    ;;
  floor)
    taskset -c $SERVER_CPU "$PEER_TARGET/release/floor" "$port" 2>>"$LOG" &
    ;;
  node-ws)
    taskset -c $SERVER_CPU node "$BENCH/peers/node-ws/server.js" "$port" 2>>"$LOG" &
    ;;
  python-websockets)
    taskset -c $SERVER_CPU "$VENV/bin/python" "$BENCH/peers/python-websockets/server.py" "$port" 2>>"$LOG" &
    ;;
  esac
  SERVER_PID=$! # taskset execs the server: this is the server's own pid
  wait_port "$port"
}

stop_server() {
  local pid i
  # The nodes first (they leave the cluster), redis-server last.
  for pid in $SERVER_PID $(printf '%s\n' "${CLUSTER_PIDS[@]}" | tac); do
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PID= CLUSTER_PIDS=() CLUSTER_URLS=
}
trap 'stop_server' EXIT

# ---------------------------------------------------------------------------- loadgen
loadgen() { # name, loadgen arguments...: prints the loadgen's JSON line
  local name=$1 port=${PORT[$1]}
  shift
  local auth=() urls="ws://127.0.0.1:$port/ws" pids=$SERVER_PID
  [[ "$name" = minipush* ]] && auth=(--token "$TOKEN" --key "$KEY")
  if [ -n "$CLUSTER_URLS" ]; then
    urls=$CLUSTER_URLS
    pids+=$(printf ',%s' "${CLUSTER_PIDS[@]}")
  fi
  taskset -c $LOADGEN_CPU "$TARGET/loadgen" --url "$urls" \
    --api "http://127.0.0.1:$port" "${auth[@]}" --pid "$pids" --label "$name" "$@" \
    2>>"$LOG"
}

record() { # case server rep listen_drops json: appends one line to the results
  local json=$5
  [ -n "$json" ] || json='{"error":"no result (see the .log)"}'
  echo "{\"case\":\"$1\",\"server\":\"$2\",\"rep\":$3,\"listen_drops\":$4,${json#\{}" >>"$RESULTS"
}

# The kernel's count of connection attempts dropped because a listen backlog was full (a
# dropped SYN is retried after 1 s, which shows in the handshake rate).
listen_drops() {
  awk '/^TcpExt:/ { if (!seen) { for (i = 1; i <= NF; i++) name[i] = $i; seen = 1 }
                    else for (i = 1; i <= NF; i++) if (name[i] == "ListenDrops") print $i }' \
    /proc/net/netstat
}

pad_for() { echo $((PUSH_BYTES - ${FRAME_OVERHEAD[$1]})); }

# One run of a case against a fresh server. $3 = 1 for the warm-up (a shorter run).
run_case() { # case server warmup
  local case=$1 name=$2 warm=$3 out= drops
  wait_until_idle
  start_server "$name"
  drops=$(listen_drops)
  case $case in
  fanout-sat | fanout-cluster)
    out=$(loadgen "$name" --clients "$CLIENTS" --ramp "$RAMP" fanout --pad "$(pad_for "$name")" \
      --pushes $((warm ? SAT_PUSHES / 10 : SAT_PUSHES)) --interval-ms "$SAT_INTERVAL_MS") || true
    ;;
  fanout-group)
    out=$(loadgen "$name" --clients "$CLIENTS" --ramp "$RAMP" fanout --group room \
      --pad $(($(pad_for "$name") - 3)) --interval-ms "$SAT_INTERVAL_MS" \
      --pushes $((warm ? SAT_PUSHES / 10 : SAT_PUSHES))) || true
    ;;
  fanout-sus)
    out=$(loadgen "$name" --clients "$CLIENTS" --ramp "$RAMP" fanout --pad "$(pad_for "$name")" \
      --pushes $((warm ? SUS_PUSHES / 10 : SUS_PUSHES)) --interval-ms "$SUS_INTERVAL_MS") || true
    ;;
  idle)
    out=$(loadgen "$name" --clients "$IDLE_CLIENTS" --ramp "$IDLE_RAMP" idle \
      --hold-secs $((warm ? 1 : IDLE_HOLD))) || true
    ;;
  idle-burst)
    out=$(loadgen "$name" --clients "$IDLE_CLIENTS" --ramp "$BURST_RAMP" idle --hold-secs 1) || true
    ;;
  echo)
    out=$(loadgen "$name" --clients "$ECHO_CLIENTS" --ramp "$RAMP" echo \
      --secs $((warm ? 2 : ECHO_SECS))) || true
    ;;
  targeted-single | targeted-batch)
    local batch=1
    [ "$case" = targeted-batch ] && batch=$TARGETED_BATCH
    out=$(loadgen "$name" --clients "$CLIENTS" --ramp "$RAMP" targeted --batch "$batch" \
      --pushes $((warm ? TARGETED_PUSHES / 10 : TARGETED_PUSHES))) || true
    ;;
  idle-max)
    out=$(idle_max "$warm") || true
    ;;
  esac
  drops=$(($(listen_drops) - drops))
  stop_server
  record "$case" "$name" "$rep" "$drops" "$out"
  [ "$warm" = 1 ] && sed -i '$ s/^{/{"warmup":true,/' "$RESULTS"
  log "$case $name rep $rep: $(tail -c 400 "$RESULTS" | tail -n 1 | cut -c1-300)"
}

# minipush at the per-process file limit: two loadgen processes, RSS and CPU from /proc.
idle_max() { # warmup
  local warm=$1 half=$((IDLE_MAX_CLIENTS / 2)) watch=$IDLE_MAX_WATCH
  [ "$warm" = 1 ] && watch=2
  local rss0 fds0 a b i
  rss0=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
  fds0=$(ls "/proc/$SERVER_PID/fd" | wc -l)
  a=$(mktemp) b=$(mktemp)
  local hold=$((watch + 30))
  loadgen minipush --clients "$half" --ramp $((IDLE_RAMP / 2)) idle --hold-secs "$hold" >"$a" &
  local pa=$!
  loadgen minipush --clients $((IDLE_MAX_CLIENTS - half)) --first "$half" \
    --ramp $((IDLE_RAMP / 2)) idle --hold-secs "$hold" >"$b" &
  local pb=$!
  # Wait until the server holds every connection (its open files; at most 25 s).
  local conns=0
  for i in $(seq 250); do
    conns=$(($(ls "/proc/$SERVER_PID/fd" | wc -l) - fds0))
    [ "$conns" -ge "$IDLE_MAX_CLIENTS" ] && break
    sleep 0.1
  done
  local t0 t1 cpu0 cpu1 rss1 rssc
  rssc=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
  t0=$(date +%s.%N)
  cpu0=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
  sleep "$watch"
  t1=$(date +%s.%N)
  cpu1=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
  rss1=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
  conns=$(($(ls "/proc/$SERVER_PID/fd" | wc -l) - fds0))
  wait "$pa" "$pb" || true
  python3 - "$a" "$b" "$rss0" "$rss1" "$conns" "$t0" "$t1" "$cpu0" "$cpu1" "$rssc" <<'EOF'
import json, sys
a, b = (json.loads(open(p).read() or "{}") for p in sys.argv[1:3])
rss0, rss1, conns = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5] or 0)
t0, t1, cpu0, cpu1 = (float(x) for x in sys.argv[6:10])
rssc = int(sys.argv[10])
n = a.get("clients", 0) + b.get("clients", 0)
print(json.dumps({
    "workload": "idle", "label": "minipush", "clients": n, "server_connections": conns,
    "failed_connects": a.get("failed_connects", 0) + b.get("failed_connects", 0),
    # Two processes ramped at once: the sum of their rates.
    "handshakes_per_sec": a.get("handshakes_per_sec", 0) + b.get("handshakes_per_sec", 0),
    "rss_kb_before": rss0, "rss_kb_connected": rssc, "rss_kb_after": rss1,
    # Right after every client connected, and after the watch (a heartbeat round).
    "rss_bytes_per_conn_connected": (rssc - rss0) * 1024 / n if n else None,
    "rss_bytes_per_conn": (rss1 - rss0) * 1024 / n if n else None,
    "watch_secs": t1 - t0, "server_cpu_secs": (cpu1 - cpu0) / 100,
    "server_cpu_percent": 100 * (cpu1 - cpu0) / 100 / (t1 - t0),
}))
EOF
  rm -f "$a" "$b"
}

# ---------------------------------------------------------------------------- idle check
busy_percent() { # CPU use of the whole machine over one second, in percent
  local a b
  a=($(head -1 /proc/stat)) && sleep 1 && b=($(head -1 /proc/stat))
  local total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  local idle=$((b[4] - a[4] + b[5] - a[5]))
  echo $((total > 0 ? 100 * (total - idle) / total : 0))
}

# Waits while another engineer's soak test runs, or while something else keeps the machine
# busy (more than IDLE_BUSY_MAX [10] % of both CPUs), for at most IDLE_WAIT_MAX [900] s.
wait_until_idle() {
  local waited=0 busy
  while pgrep -x soak >/dev/null; do
    [ $((waited % 60)) = 0 ] && log "a soak test is running; waiting for it to end"
    sleep 10
    waited=$((waited + 10))
  done
  while busy=$(busy_percent) && [ "$busy" -gt "${IDLE_BUSY_MAX:-10}" ]; do
    if [ "$waited" -ge "${IDLE_WAIT_MAX:-900}" ]; then
      log "warning: the machine is still ${busy} % busy; measuring anyway"
      break
    fi
    [ $((waited % 60)) = 0 ] && log "the machine is ${busy} % busy; waiting: $(ps -eo pid,pcpu,comm --sort=-pcpu --no-headers | head -3 | tr -s ' ' | tr '\n' ';')"
    sleep 4
    waited=$((waited + 5))
  done
}

meta() {
  python3 - "$ROOT" <<'EOF'
import json, os, platform, subprocess, sys
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=sys.argv[1]).stdout.strip()
    except OSError:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
env = {k: os.environ[k] for k in os.environ if k.isupper() and k in (
    "CLIENTS PUSH_BYTES SAT_PUSHES SAT_INTERVAL_MS SUS_PUSHES SUS_INTERVAL_MS IDLE_CLIENTS "
    "IDLE_RAMP BURST_RAMP IDLE_HOLD IDLE_MAX_CLIENTS IDLE_MAX_WATCH ECHO_CLIENTS ECHO_SECS "
    "TARGETED_PUSHES TARGETED_BATCH RAMP REPS").split()}
print(json.dumps({"meta": {
    "commit": out("git", "rev-parse", "--short", "HEAD"),
    "dirty": bool(out("git", "status", "--porcelain", "--untracked-files=no")),
    "cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
    "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    "nofile": out("sh", "-c", "ulimit -n"), "rustc": out("rustc", "--version"),
    "node": out("node", "--version"), "python": platform.python_version(), "overrides": env,
}}))
EOF
}

# ---------------------------------------------------------------------------- main
mkdir -p "$BENCH/results"
: >"$LOG"
[ "${SKIP_BUILD:-0}" = 1 ] || build
wait_until_idle
ps aux --sort=-%cpu | head -6 >>"$LOG"
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 CPUs; server and loadgen share one"
meta >"$RESULTS"
log "results: $RESULTS"

for case in $CASES; do
  names=$SERVERS
  subcases=$case
  case $case in
  targeted) names=minipush subcases="targeted-single targeted-batch" ;;
  idle-max | idle-burst | fanout-group) names=minipush ;;
  fanout-cluster) names=$CLUSTER_SERVERS ;;
  fanout-sus) names="$SERVERS floor" ;;
  esac
  for sub in $subcases; do
    for name in $names; do
      [[ " $SERVERS $CLUSTER_SERVERS floor " == *" $name "* ]] || continue
      rep=0
      run_case "$sub" "$name" 1
      for rep in $(seq "$REPS"); do
        run_case "$sub" "$name" 0
      done
    done
  done
done

python3 "$BENCH/report.py" "$RESULTS" | tee "${RESULTS%.jsonl}.md"
log "done: $RESULTS"

#!/usr/bin/env bash
# bench/profile.sh — where minipush spends its CPU time at the fan-out limit.
#
# Builds minipush with debug line tables (into bench/target/profile, so the normal release
# build is untouched), starts it pinned to CPU 0, connects CLIENTS [10000] clients from the
# load generator pinned to CPU 1, then records `perf record -g --call-graph dwarf` on the
# server only while PUSHES [400] broadcasts are offered every INTERVAL_MS [2] ms (the
# saturation case of bench/run.sh). Writes, next to the perf data in bench/results/:
#   perf-<stamp>.self.txt      functions by self time (flat profile)
#   perf-<stamp>.children.txt  inclusive time (callee time included) of minipush's own
#                              functions and of the main kernel paths
#   perf-<stamp>.dso.txt       time by binary / shared object (ours, libc, the kernel)
# Needs `perf` (Debian: apt-get install -y linux-perf).
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
CLIENTS=${CLIENTS:-10000}
PUSHES=${PUSHES:-400}
INTERVAL_MS=${INTERVAL_MS:-2}
PAD=${PAD:-28}            # 120-byte push frames for minipush (see FRAME_OVERHEAD in run.sh)
PORT=${PORT:-9611}
FREQ=${FREQ:-499}
TOKEN=bench-token-$RANDOM$RANDOM
KEY=bench-key-$RANDOM$RANDOM
STAMP=$(date -u +%Y-%m-%d-%H%M%S)
OUT=$BENCH/results/perf-$STAMP
mkdir -p "$BENCH/results"

command -v perf >/dev/null || { echo "perf is missing: apt-get install -y linux-perf" >&2; exit 1; }
perf stat -e cpu-clock true >/dev/null 2>&1 || { echo "perf cannot count here" >&2; exit 1; }

echo "building minipush with debug info and the loadgen" >&2
(cd "$ROOT" && CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --locked -p minipush \
  --target-dir "$BENCH/target/profile") >&2
(cd "$ROOT" && cargo build --release --locked -p minipush-loadgen) >&2

MINIPUSH_AUTH_TOKENS=$TOKEN MINIPUSH_API_KEYS=$KEY MINIPUSH_SERVER_LISTEN=127.0.0.1:$PORT \
  MINIPUSH_LIMITS_CLIENT_MSGS_PER_SEC=1000000 MINIPUSH_LIMITS_MAX_CONNECTIONS=200000 \
  taskset -c 0 "$BENCH/target/profile/release/minipush" serve 2>"$OUT.server.log" >/dev/null &
SERVER=$!
PERF=
cleanup() {
  [ -n "$PERF" ] && kill -INT "$PERF" 2>/dev/null || true
  kill -TERM "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.1; done
fds0=$(ls "/proc/$SERVER/fd" | wc -l)

taskset -c 1 "$ROOT/target/release/loadgen" --url "ws://127.0.0.1:$PORT/ws" \
  --api "http://127.0.0.1:$PORT" --token "$TOKEN" --key "$KEY" --pid "$SERVER" \
  --clients "$CLIENTS" fanout --pushes "$PUSHES" --interval-ms "$INTERVAL_MS" --pad "$PAD" \
  >"$OUT.loadgen.json" &
LOADGEN=$!
# Record only once every client is connected, so the handshakes stay out of the profile.
while [ $(($(ls "/proc/$SERVER/fd" | wc -l) - fds0)) -lt "$CLIENTS" ]; do sleep 0.05; done
taskset -c 1 perf record -F "$FREQ" -g --call-graph dwarf,16384 -p "$SERVER" -o "$OUT.data" \
  2>"$OUT.perf.log" &
PERF=$!
wait "$LOADGEN"
kill -INT "$PERF"
wait "$PERF" || true
PERF=
cat "$OUT.loadgen.json"

# Symbol names are long and perf pads every column to the widest: squeeze the spaces.
report() { perf report -i "$OUT.data" --stdio -g none --sort "$@" 2>/dev/null | sed 's/  *$//; s/   */  /g'; }
report symbol --no-children --percent-limit 0.7 >"$OUT.self.txt"
# Inclusive time of the parts that matter (the rest are inlined runtime frames).
report symbol --children --percent-limit 1 |
  grep -E '^#|minipush::|__GI___writev|tcp_sendmsg |net_rx_action|tcp_v4_rcv|epoll_wait|__x64_sys_close|Readiness' \
    >"$OUT.children.txt"
report dso --no-children >"$OUT.dso.txt"
echo "profile: $OUT.{self,children,dso}.txt" >&2
grep -v '^#' "$OUT.self.txt" | grep -v '^$' | head -40

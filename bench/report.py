#!/usr/bin/env python3
"""bench/report.py: turns a results file of bench/run.sh into the markdown tables of
BENCHMARKS.md (standard library only).

    python3 bench/report.py bench/results/<UTC date>-<time>.jsonl

For each case: the median of the repetitions (warm-ups are left out) for every server, with
the range (min-max) beside it, the ratios minipush/peer of those medians (all measured in
the same run), and the issue's targets with whether the medians meet them. Runs that
dropped connections or deliveries are listed under the table they belong to.
"""

import json
import statistics
import sys

# case -> (title, [(column title, getter, format, higher_is_better)])
KIB = 1024


def lat(q):
    return lambda r: (r.get("latency_ms") or {}).get(q)


def per_cpu(count_key):
    def get(r):
        cpu = r.get("server_cpu_secs")
        return r[count_key] / cpu if cpu and r.get(count_key) is not None else None

    return get


def field(key, scale=1.0):
    return lambda r: None if r.get(key) is None else r[key] * scale


# The columns of every fan-out-at-saturation case.
SATURATION = [
    ("deliveries/s", field("deliveries_per_sec"), "{:,.0f}", True),
    ("deliveries per server CPU-s", field("deliveries_per_cpu_sec"), "{:,.0f}", True),
    ("server CPU s", field("server_cpu_secs"), "{:.2f}", None),
    ("p99 ms", lat("p99"), "{:,.0f}", False),
]

CASES = {
    "fanout-sat": (
        "Fan-out at saturation (broadcasts offered faster than any server delivers)",
        SATURATION,
    ),
    "fanout-sus": (
        "Fan-out at a sustainable load (10 broadcasts/s)",
        [
            ("p50 ms", lat("p50"), "{:.2f}", False),
            ("p90 ms", lat("p90"), "{:.2f}", False),
            ("p99 ms", lat("p99"), "{:.2f}", False),
            ("max ms", lat("max"), "{:.1f}", False),
            ("deliveries per server CPU-s", field("deliveries_per_cpu_sec"), "{:,.0f}", True),
        ],
    ),
    "idle": (
        "Idle connections",
        [
            ("RSS KiB per connection", field("rss_bytes_per_conn", 1 / KIB), "{:.2f}", False),
            ("handshakes/s", field("handshakes_per_sec"), "{:,.0f}", True),
            ("SYNs dropped (backlog full)", field("listen_drops"), "{:,.0f}", None),
        ],
    ),
    "idle-burst": (
        "Idle connections opened in bursts of 1,000 every 10 ms (ramp 100,000/s)",
        [
            ("handshakes/s", field("handshakes_per_sec"), "{:,.0f}", True),
            ("SYNs dropped (backlog full)", field("listen_drops"), "{:,.0f}", None),
            ("RSS KiB per connection", field("rss_bytes_per_conn", 1 / KIB), "{:.2f}", False),
        ],
    ),
    "echo": (
        "Echo (each client sends and waits for the reply)",
        [
            ("round trips/s", field("round_trips_per_sec"), "{:,.0f}", True),
            ("round trips per server CPU-s", per_cpu("round_trips"), "{:,.0f}", True),
            ("p50 ms", lat("p50"), "{:.2f}", False),
            ("p99 ms", lat("p99"), "{:.2f}", False),
        ],
    ),
    "targeted-single": (
        "Targeted pushes to random uids, one per `POST /api/push`",
        [
            ("pushes/s", field("pushes_per_sec"), "{:,.0f}", True),
            ("pushes per server CPU-s", per_cpu("pushes"), "{:,.0f}", True),
            ("delivered", field("deliveries"), "{:,.0f}", True),
            ("p99 ms", lat("p99"), "{:.2f}", False),
        ],
    ),
    "targeted-batch": (
        "Targeted pushes to random uids through `POST /api/push/batch`",
        [
            ("pushes/s", field("pushes_per_sec"), "{:,.0f}", True),
            ("pushes per server CPU-s", per_cpu("pushes"), "{:,.0f}", True),
            ("delivered", field("deliveries"), "{:,.0f}", True),
            ("p99 ms", lat("p99"), "{:.2f}", False),
        ],
    ),
    "fanout-cluster": (
        "Fan-out at saturation on the Redis broker: 1 node, 2 nodes (CPU counts Redis too)",
        SATURATION,
    ),
    "fanout-group": (
        "Fan-out at saturation to one group that every client joined (minipush)",
        SATURATION,
    ),
    "idle-max": (
        "minipush at the per-process file limit (two loadgen processes, heartbeats running)",
        [
            ("connections", field("server_connections"), "{:,.0f}", True),
            ("RSS KiB/conn connected",
             field("rss_bytes_per_conn_connected", 1 / KIB), "{:.2f}", False),
            ("RSS KiB/conn after heartbeats", field("rss_bytes_per_conn", 1 / KIB), "{:.2f}", False),
            ("RSS MiB total", field("rss_kb_after", 1 / KIB), "{:.1f}", False),
            ("handshakes/s", field("handshakes_per_sec"), "{:,.0f}", True),
            ("SYNs dropped (backlog full)", field("listen_drops"), "{:,.0f}", None),
            ("server CPU % while idle", field("server_cpu_percent"), "{:.2f}", False),
        ],
    ),
}

# `floor` (fanout-sus only) is not a product: one send per client in a tight loop.
SERVERS = ["minipush", "tokio-tungstenite", "node-ws", "python-websockets", "floor",
           "minipush-redis-1node", "minipush-redis-2nodes"]

# The targets: (text, case, column, test on the minipush median or ratio, goal text)
TARGETS = [
    ("fan-out efficiency >= 1.5x tokio-tungstenite", "fanout-sat",
     "deliveries per server CPU-s", "ratio", 1.5),
    ("deliveries/s at saturation >= 1.5x tokio-tungstenite", "fanout-sat",
     "deliveries/s", "ratio", 1.5),
    ("p99 < 20 ms at 10,000 clients x 10 pushes/s", "fanout-sus", "p99 ms", "below", 20.0),
    ("idle RSS <= 4 KiB per authenticated connection", "idle",
     "RSS KiB per connection", "at_most", 4.0),
    (">= 20,000 handshakes/s on one core", "idle", "handshakes/s", "at_least", 20000.0),
]


def fmt(spec, v):
    return "–" if v is None else spec.format(v)


def load(path):
    meta, runs = None, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if "meta" in rec:
                meta = rec["meta"]
            elif not rec.get("warmup"):
                runs.append(rec)
    return meta, runs


def problems(r):
    out = []
    if r.get("error"):
        out.append(r["error"])
    if r.get("failed_connects"):
        out.append(f"{r['failed_connects']:,} failed connects")
    exp, got = r.get("expected"), r.get("deliveries")
    if exp is not None and got is not None and got < exp:
        out.append(f"{got:,} of {exp:,} deliveries")
    if r.get("case", "").startswith("targeted") and got is not None and got < r.get("pushes", 0):
        out.append(f"{got:,} of {r['pushes']:,} pushes delivered")
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS.jsonl")
    meta, runs = load(sys.argv[1])
    print(f"Results: `{sys.argv[1].split('/bench/')[-1]}`")
    if meta:
        print(
            f"(commit {meta.get('commit')}{' + local changes' if meta.get('dirty') else ''}, "
            f"{meta.get('cpus')} CPUs {meta.get('cpu')}, kernel {meta.get('kernel')}, "
            f"{meta.get('rustc')}, node {meta.get('node')}, python {meta.get('python')}, "
            f"nofile {meta.get('nofile')}"
            + (f", overrides {meta['overrides']}" if meta.get("overrides") else "")
            + ")"
        )
    medians = {}  # (case, server, column) -> median
    for case, (title, cols) in CASES.items():
        rows = [r for r in runs if r.get("case") == case]
        if not rows:
            continue
        servers = [s for s in SERVERS if any(r["server"] == s for r in rows)]
        print(f"\n### {case}: {title}\n")
        n = {s: sum(1 for r in rows if r["server"] == s) for s in servers}
        print("| server | runs | " + " | ".join(c[0] for c in cols) + " |")
        print("| --- | ---: | " + " | ".join("---:" for _ in cols) + " |")
        for s in servers:
            cells = []
            for name, get, spec, _ in cols:
                vals = [v for v in (get(r) for r in rows if r["server"] == s) if v is not None]
                if not vals:
                    cells.append("–")
                    continue
                med = statistics.median(vals)
                medians[(case, s, name)] = med
                cell = fmt(spec, med)
                if len(vals) > 1:
                    cell += f" ({fmt(spec, min(vals))}–{fmt(spec, max(vals))})"
                cells.append(cell)
            print(f"| {s} | {n[s]} | " + " | ".join(cells) + " |")
        peers = [s for s in servers if s != "minipush"]
        if "minipush" in servers and peers:
            print(f"\nRatios minipush/peer of the medians ({case}):\n")
            ratio_cols = [c for c in cols if c[3] is not None]
            print(
                "| minipush / | "
                + " | ".join(f"{c[0]} ({'higher' if c[3] else 'lower'} is better)" for c in ratio_cols)
                + " |"
            )
            print("| --- | " + " | ".join("---:" for _ in ratio_cols) + " |")
            for p in peers:
                cells = []
                for name, _, _, _ in ratio_cols:
                    a, b = medians.get((case, "minipush", name)), medians.get((case, p, name))
                    cells.append(f"{a / b:.2f}x" if a is not None and b else "–")
                print(f"| {p} | " + " | ".join(cells) + " |")
        bad = [(r, problems(r)) for r in rows if problems(r)]
        if bad:
            print()
            for r, why in bad:
                print(f"- note: {r['server']} rep {r.get('rep')}: {'; '.join(why)}")

    print("\n### Targets (medians of this run)\n")
    print("| target | measured | met? |")
    print("| --- | --- | --- |")
    for text, case, col, kind, goal in TARGETS:
        mp = medians.get((case, "minipush", col))
        if mp is None:
            print(f"| {text} | not measured | – |")
            continue
        # The targets are stated for 10,000 clients: smaller runs are not judged.
        sizes = [r.get("clients", 0) for r in runs if r.get("case") == case]
        if sizes and statistics.median(sizes) < 10_000:
            print(f"| {text} | run with {statistics.median(sizes):,.0f} clients | not judged |")
            continue
        if kind == "ratio":
            peer = medians.get((case, "tokio-tungstenite", col))
            if not peer:
                print(f"| {text} | no peer figure | – |")
                continue
            value, ok = mp / peer, mp / peer >= goal
            shown = f"{value:.2f}x ({mp:,.0f} vs {peer:,.0f})"
            gap = "" if ok else f": {goal / value:.2f}x more needed"
        elif kind == "below":
            ok, shown = mp < goal, f"{mp:.2f} ms"
            gap = "" if ok else f": {mp / goal:.2f}x the limit"
        elif kind == "at_most":
            ok, shown = mp <= goal, f"{mp:.2f} KiB"
            gap = "" if ok else f": {mp - goal:.2f} KiB ({(mp / goal - 1) * 100:.0f} %) over"
        else:
            ok, shown = mp >= goal, f"{mp:,.0f}/s"
            gap = "" if ok else f": {goal / mp:.2f}x more needed"
        print(f"| {text} | {shown} | {'yes' if ok else 'no' + gap} |")


if __name__ == "__main__":
    main()

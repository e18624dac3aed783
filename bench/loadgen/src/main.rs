//! `loadgen`: drives minipush, or a peer server speaking the small peer protocol in
//! `bench/peers/README.md`, with N WebSocket clients and prints one JSON line of results.
//!
//! Workloads:
//! - `fanout`: every client listens; M broadcasts of a small JSON are sent at an interval
//!   (minipush: `POST /api/push {"all":true}`; peers: a trigger client's `broadcast`).
//!   Reports deliveries/s, latency percentiles, and deliveries per second of server CPU.
//! - `targeted`: pushes to random uids through `/api/push` or `/api/push/batch`.
//! - `idle`: holds N connections; reports the handshake rate and server RSS per connection.
//! - `echo`: every client sends `echo` and waits for its reply; reports round trips/s.
//!
//! Clients bind to source addresses 127.0.0.1..=127.0.0.K (`--sources`) so that many
//! connections do not exhaust one address's ephemeral ports. Every frame sent carries
//! `"t":<µs since start>`, so latency is measured on one clock.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::json;
use tokio::{net::TcpSocket, sync::Mutex};
use tokio_tungstenite::{
    client_async,
    tungstenite::{client::IntoClientRequest, Message},
    WebSocketStream,
};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for minipush and peer servers"
)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Args, Clone)]
struct Opts {
    /// WebSocket URL of the server under test; for a cluster, one per node, comma
    /// separated: client i connects to URL i mod n.
    #[arg(
        long,
        default_value = "ws://127.0.0.1:9501/ws",
        global = true,
        value_delimiter = ','
    )]
    url: Vec<String>,
    /// minipush: base URL of the HTTP API (the trigger for pushes).
    #[arg(long, default_value = "http://127.0.0.1:9501", global = true)]
    api: String,
    /// minipush's client token: clients sign tickets with it. Without it, clients connect
    /// with no subprotocol and the server is treated as a peer.
    #[arg(long, global = true)]
    token: Option<String>,
    /// minipush's API key.
    #[arg(long, global = true)]
    key: Option<String>,
    #[arg(long, default_value_t = 1000, global = true)]
    clients: usize,
    /// Index of the first client (its uid is `u<index>`): lets several loadgen processes
    /// share one server without sharing uids.
    #[arg(long, default_value_t = 0, global = true)]
    first: usize,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 5000, global = true)]
    ramp: u64,
    /// Spread clients over 127.0.0.1..=127.0.0.K.
    #[arg(long, default_value_t = 16, global = true)]
    sources: u8,
    /// The server's process id (comma separated for a cluster's nodes): CPU time and RSS
    /// are read from /proc/<pid> and summed.
    #[arg(long, global = true, value_delimiter = ',')]
    pid: Vec<u32>,
    /// A name for the server in the results line.
    #[arg(long, default_value = "minipush", global = true)]
    label: String,
}

#[derive(Subcommand)]
enum Workload {
    /// Broadcasts to every client.
    Fanout {
        #[arg(long, default_value_t = 100)]
        pushes: u64,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Bytes of padding in each push's data.
        #[arg(long, default_value_t = 40)]
        pad: usize,
        #[arg(long, value_enum, default_value_t = Trigger::Auto)]
        trigger: Trigger,
        /// minipush: every client joins this group (client `join`) and the pushes go to
        /// it instead of to everyone.
        #[arg(long)]
        group: Option<String>,
    },
    /// Pushes to random uids through the API (minipush only).
    Targeted {
        #[arg(long, default_value_t = 10_000)]
        pushes: u64,
        /// Pushes per API call: 1 uses /api/push, more uses /api/push/batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Concurrent API callers.
        #[arg(long, default_value_t = 8)]
        callers: usize,
    },
    /// Holds the connections open.
    Idle {
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
    },
    /// Every client sends echo and waits for the reply, for a while.
    Echo {
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Trigger {
    /// The HTTP API with a token, a trigger client without.
    Auto,
    Api,
    Ws,
}

type Ws = WebSocketStream<tokio::net::TcpStream>;

/// Microseconds since the run started: the one clock every timestamp uses.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn micros(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// The value of the first `"t":<digits>` in a frame, without parsing the JSON.
fn stamp(text: &str) -> Option<u64> {
    let at = text.find("\"t\":")? + 4;
    let digits: &str = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Server CPU seconds (user + system) and RSS in kB from /proc, summed over `pids`.
fn server_usage(pids: &[u32]) -> Option<(f64, u64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold((0.0, 0), |(cpu, rss), pid| {
        let (c, r) = process_usage(*pid)?;
        Some((cpu + c, rss + r))
    })
}

/// CPU seconds and RSS (KiB) of one process. CPU is the sum of its threads' time on a
/// CPU from `/proc/<pid>/task/*/schedstat` (nanoseconds; a run uses well under a second,
/// and `utime`/`stime` count 10 ms ticks), or those ticks where schedstat is missing.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let cpu = thread_cpu_ns(pid).map(|ns| ns as f64 / 1e9).or_else(|| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    })?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some((cpu, rss))
}

fn thread_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

async fn connect(opts: &Opts, i: usize) -> Result<Ws, String> {
    let url_text = &opts.url[i % opts.url.len()];
    let url: url_parts::Parts = url_parts::parse(url_text)?;
    let source = Ipv4Addr::new(127, 0, 0, 1 + (i % opts.sources.max(1) as usize) as u8);
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let tcp = socket
        .connect(url.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut req = url_text
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(token) = &opts.token {
        let ts = minipush::protocol::now_secs();
        let uid = format!("u{i}");
        let sig = minipush::auth::sign(token, ts, Some(&uid));
        let value = format!("{sig}, {ts}, {uid}").parse().expect("ASCII");
        req.headers_mut().insert("Sec-WebSocket-Protocol", value);
    }
    let (mut ws, _) = client_async(req, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    if opts.token.is_some() {
        // minipush greets first; the welcome proves the ticket was accepted.
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"welcome\"") => {}
            other => return Err(format!("no welcome: {other:?}")),
        }
    }
    Ok(ws)
}

/// Minimal `ws://host:port/path` parsing (the loadgen only talks to loopback servers).
mod url_parts {
    use std::net::SocketAddr;

    pub struct Parts {
        pub addr: SocketAddr,
    }

    pub fn parse(url: &str) -> Result<Parts, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or("the URL must start with ws://")?;
        let host = rest.split('/').next().unwrap_or(rest);
        let addr = host.parse().map_err(|_| format!("{host} is not IP:port"))?;
        Ok(Parts { addr })
    }
}

/// Opens `opts.clients` connections at `opts.ramp` per second; returns them and how long
/// it took. Failed handshakes are counted, not fatal.
async fn connect_all(opts: &Opts) -> (Vec<Ws>, Duration, usize) {
    let started = Instant::now();
    let opts = Arc::new(opts.clone());
    let mut tasks = Vec::with_capacity(opts.clients);
    let per_tick = (opts.ramp / 100).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut i = 0;
    while i < opts.clients {
        tick.tick().await;
        for _ in 0..per_tick.min(opts.clients - i) {
            let opts = opts.clone();
            tasks.push(tokio::spawn(
                async move { connect(&opts, opts.first + i).await },
            ));
            i += 1;
        }
    }
    let mut conns = Vec::with_capacity(opts.clients);
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(ws)) => conns.push(ws),
            Ok(Err(e)) => {
                if failed < 3 {
                    eprintln!("loadgen: {e}");
                }
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    (conns, started.elapsed(), failed)
}

/// Latency samples in microseconds -> {p50, p90, p99, max} in milliseconds.
fn percentiles(mut samples: Vec<u64>) -> serde_json::Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    json!({ "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": at(1.0) })
}

/// A listening client's socket after the handshake, read without tungstenite: the load
/// generator has one core for 10,000 clients, and at millions of frames per second
/// tungstenite's per-message allocation and checks made it, not the server, the
/// bottleneck. Server frames are unmasked and unfragmented; text frames give their
/// stamp, pings get a pong, a close frame or the end of the stream ends the client.
struct RawReader {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
    stamps: Vec<u64>,
    pongs: Vec<u8>,
}

impl RawReader {
    fn new(ws: Ws) -> RawReader {
        // Nothing is in flight at this point (the welcome was read, no push was sent), so
        // tungstenite's buffer is empty. tokio-tungstenite 0.24 cannot hand the socket
        // back: keep a duplicate of its descriptor and drop the WebSocket (which sends
        // nothing when dropped).
        use std::os::fd::AsFd;
        let fd = ws.get_ref().as_fd().try_clone_to_owned().expect("dup");
        drop(ws);
        let std = std::net::TcpStream::from(fd);
        std.set_nonblocking(true).expect("non-blocking");
        RawReader {
            tcp: tokio::net::TcpStream::from_std(std).expect("registered"),
            buf: Vec::new(),
            stamps: Vec::new(),
            pongs: Vec::new(),
        }
    }

    /// Reads what arrived and parses every whole frame; false when the client is done.
    async fn read(&mut self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.buf.reserve(16 * 1024);
        match self.tcp.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let open = self.parse();
        if !self.pongs.is_empty() {
            let pongs = std::mem::take(&mut self.pongs);
            if self.tcp.write_all(&pongs).await.is_err() {
                return false;
            }
        }
        open
    }

    fn take_stamps(&mut self) -> std::vec::Drain<'_, u64> {
        self.stamps.drain(..)
    }

    /// Parses the whole frames in the buffer; false after a close frame.
    fn parse(&mut self) -> bool {
        let mut at = 0;
        let mut open = true;
        while let Some((opcode, start, end)) = frame_at(&self.buf[at..]) {
            let payload = &self.buf[at + start..at + end];
            match opcode {
                0x1 => self
                    .stamps
                    .extend(std::str::from_utf8(payload).ok().and_then(stamp)),
                0x8 => open = false,
                0x9 if payload.len() < 126 => {
                    // A masked pong (mask 0) with the ping's payload.
                    self.pongs
                        .extend([0x8A, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
                    self.pongs.extend_from_slice(payload);
                }
                _ => {}
            }
            at += end;
        }
        self.buf.drain(..at);
        open
    }
}

/// The opcode and payload range of the unmasked frame at the start of `b`, if whole.
fn frame_at(b: &[u8]) -> Option<(u8, usize, usize)> {
    let (len, start) = match *b.get(1)? & 0x7F {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    (b.len() >= start + len).then_some((b[0] & 0x0F, start, start + len))
}

/// Listeners count pushed frames and keep their latency until [`Listeners::finish`].
struct Listeners {
    tasks: Vec<tokio::task::JoinHandle<Vec<u64>>>,
    stop: tokio::sync::watch::Sender<bool>,
    delivered: Arc<AtomicU64>,
    /// Time (µs) of the latest delivery.
    last: Arc<AtomicU64>,
}

impl Listeners {
    fn start(conns: Vec<Ws>, clock: Clock) -> Listeners {
        let (stop, watch) = tokio::sync::watch::channel(false);
        let delivered = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicU64::new(0));
        let tasks = conns
            .into_iter()
            .map(|ws| {
                let (delivered, last, mut watch) = (delivered.clone(), last.clone(), watch.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut reader = RawReader::new(ws);
                    loop {
                        tokio::select! {
                            _ = watch.changed() => break,
                            more = reader.read() => {
                                if !more {
                                    break;
                                }
                                for t in reader.take_stamps() {
                                    let now = clock.micros();
                                    samples.push(now.saturating_sub(t));
                                    delivered.fetch_add(1, Relaxed);
                                    last.fetch_max(now, Relaxed);
                                }
                            }
                        }
                    }
                    samples
                })
            })
            .collect();
        Listeners {
            tasks,
            stop,
            delivered,
            last,
        }
    }

    /// Waits until `expected` deliveries arrived (or `patience` passed), then stops.
    /// Also returns the usage of the processes `pids` when the wait ended.
    async fn finish(
        self,
        expected: u64,
        patience: Duration,
        pids: &[u32],
    ) -> (u64, u64, Vec<u64>, Option<(f64, u64)>) {
        let deadline = Instant::now() + patience;
        while self.delivered.load(Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let usage = server_usage(pids);
        let _ = self.stop.send(true);
        let mut samples = Vec::new();
        for t in self.tasks {
            if let Ok(s) = t.await {
                samples.extend(s);
            }
        }
        (
            self.delivered.load(Relaxed),
            self.last.load(Relaxed),
            samples,
            usage,
        )
    }
}

async fn fanout(
    opts: &Opts,
    pushes: u64,
    interval_ms: u64,
    pad: usize,
    trigger: Trigger,
    group: Option<String>,
) -> serde_json::Value {
    let use_api = match trigger {
        Trigger::Auto => opts.token.is_some(),
        Trigger::Api => true,
        Trigger::Ws => false,
    };
    let (mut conns, ramp_time, failed) = connect_all(opts).await;
    if let Some(g) = &group {
        join_all_to(&mut conns, g).await;
    }
    let n = conns.len() as u64;
    let clock = Clock(Instant::now());
    let listeners = Listeners::start(conns, clock);
    let mut trigger_ws = if use_api {
        None
    } else {
        let mut trigger_opts = opts.clone();
        trigger_opts.token = None;
        Some(
            connect(&trigger_opts, opts.first + opts.clients)
                .await
                .expect("trigger client connects"),
        )
    };
    let padding = "x".repeat(pad);
    let before = server_usage(&opts.pid);
    let first_send = clock.micros();
    let frame_bytes = match trigger_ws.as_mut() {
        Some(ws) => {
            let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
            let mut frame_bytes = 0;
            for _ in 0..pushes {
                tick.tick().await;
                let data = json!({ "t": clock.micros(), "pad": padding });
                let msg = json!({ "type": "broadcast", "data": data }).to_string();
                frame_bytes = msg.len();
                ws.send(Message::Text(msg)).await.expect("trigger sends");
                // The trigger is not a listener: drain what the server sends it.
                while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, ws.next()).await {}
            }
            frame_bytes
        }
        None => {
            let (api, key) = (opts.api.clone(), opts.key.clone().unwrap_or_default());
            let target = match group {
                Some(g) => json!({ "group": g }),
                None => json!({ "all": true }),
            };
            std::thread::spawn(move || {
                api_trigger(&api, &key, &target, pushes, interval_ms, &padding, clock)
            })
            .join()
            .expect("the API trigger thread")
        }
    };
    let expected = pushes * n;
    // Read when the last delivery arrived, before the clients disconnect: closing 10,000
    // connections is not fan-out work.
    let (got, last, samples, after) = listeners
        .finish(expected, Duration::from_secs(30), &opts.pid)
        .await;
    let span = last.saturating_sub(first_send).max(1) as f64 / 1e6;
    let cpu = match (before, after) {
        (Some(b), Some(a)) => Some(a.0 - b.0),
        _ => None,
    };
    json!({
        "workload": "fanout",
        "label": opts.label,
        "clients": n,
        "failed_connects": failed,
        "ramp_secs": ramp_time.as_secs_f64(),
        "pushes": pushes,
        "interval_ms": interval_ms,
        "approx_frame_bytes": frame_bytes,
        "expected": expected,
        "deliveries": got,
        "seconds": span,
        "deliveries_per_sec": got as f64 / span,
        "server_cpu_secs": cpu,
        "deliveries_per_cpu_sec": cpu.filter(|c| *c > 0.0).map(|c| got as f64 / c),
        "latency_ms": percentiles(samples),
    })
}

/// Has every client join `group` (client `join`), all at once, and waits for the replies.
async fn join_all_to(conns: &mut [Ws], group: &str) {
    let joins = conns.iter_mut().map(|ws| async move {
        let join = json!({ "type": "join", "group": group, "id": "j" }).to_string();
        ws.send(Message::Text(join)).await.expect("join sent");
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("\"ref\":\"j\"") => {
                    assert!(t.contains("\"reply\""), "join refused: {t}");
                    return;
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no join reply: {other:?}"),
            }
        }
    });
    futures_util::future::join_all(joins).await;
}

/// Sends `pushes` pushes to `target` (`"all":true` or a group) through `POST /api/push`,
/// one every `interval_ms`, open loop (the next one leaves on schedule while earlier ones
/// are still being answered; the pool opens more connections as needed). It runs on a thread of its own,
/// like the peers' trigger, which sends from the main thread: on the runtime that reads
/// the 10,000 clients its requests would wait behind them and leave late. Returns the
/// approximate size of a push frame.
fn api_trigger(
    api: &str,
    key: &str,
    target: &serde_json::Value,
    pushes: u64,
    interval_ms: u64,
    pad: &str,
    clock: Clock,
) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
        let mut frame_bytes = 0;
        let mut in_flight = Vec::new();
        for _ in 0..pushes {
            tick.tick().await;
            let mut body = target.clone();
            body["data"] = json!({ "t": clock.micros(), "pad": pad });
            frame_bytes = body.to_string().len() + 60;
            let request = http
                .post(format!("{api}/api/push"))
                .bearer_auth(key)
                .json(&body)
                .send();
            in_flight.push(tokio::spawn(request));
        }
        for push in in_flight {
            let answer = push.await.expect("push task").expect("push sent");
            assert!(
                answer.status().is_success(),
                "push refused: {}",
                answer.status()
            );
        }
        frame_bytes
    })
}

async fn targeted(opts: &Opts, pushes: u64, batch: usize, callers: usize) -> serde_json::Value {
    let (conns, _, failed) = connect_all(opts).await;
    let n = conns.len();
    let clock = Clock(Instant::now());
    let listeners = Listeners::start(conns, clock);
    let http = reqwest::Client::new();
    let remaining = Arc::new(Mutex::new(pushes));
    let before = server_usage(&opts.pid);
    let first_send = clock.micros();
    let callers: Vec<_> = (0..callers.max(1))
        .map(|_| {
            let (http, remaining, opts) = (http.clone(), remaining.clone(), opts.clone());
            tokio::spawn(async move {
                loop {
                    let take = {
                        let mut r = remaining.lock().await;
                        let take = (*r).min(batch.max(1) as u64);
                        *r -= take;
                        take
                    };
                    if take == 0 {
                        break;
                    }
                    let mut items = Vec::new();
                    for _ in 0..take {
                        let uid = format!("u{}", rand::thread_rng().gen_range(0..n.max(1)));
                        items.push(json!({ "uid": uid, "data": { "t": clock.micros() } }));
                    }
                    let (path, body) = if batch <= 1 {
                        ("/api/push", items.pop().expect("one item"))
                    } else {
                        ("/api/push/batch", json!({ "pushes": items }))
                    };
                    http.post(format!("{}{path}", opts.api))
                        .bearer_auth(opts.key.as_deref().unwrap_or_default())
                        .json(&body)
                        .send()
                        .await
                        .expect("push accepted");
                }
            })
        })
        .collect();
    for c in callers {
        let _ = c.await;
    }
    let sent_done = clock.micros();
    let (delivered, _, samples, after) = listeners
        .finish(pushes, Duration::from_secs(10), &opts.pid)
        .await;
    let secs = (sent_done - first_send).max(1) as f64 / 1e6;
    json!({
        "workload": "targeted",
        "label": opts.label,
        "clients": n,
        "failed_connects": failed,
        "pushes": pushes,
        "batch": batch,
        "deliveries": delivered,
        "pushes_per_sec": pushes as f64 / secs,
        "server_cpu_secs": match (before, after) { (Some(b), Some(a)) => Some(a.0 - b.0), _ => None },
        "latency_ms": percentiles(samples),
    })
}

async fn idle(opts: &Opts, hold_secs: u64) -> serde_json::Value {
    let before = server_usage(&opts.pid);
    let (conns, ramp_time, failed) = connect_all(opts).await;
    let n = conns.len();
    // Keep reading so the clients answer the server's pings while they are held.
    let listeners = Listeners::start(conns, Clock(Instant::now()));
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    let after = server_usage(&opts.pid);
    // Pushes that arrived while holding (bench/cluster-100k.sh sends one broadcast).
    let (received, _, _, _) = listeners.finish(0, Duration::ZERO, &[]).await;
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if n > 0 => Some((a.1.saturating_sub(b.1) * 1024) as f64 / n as f64),
        _ => None,
    };
    json!({
        "workload": "idle",
        "label": opts.label,
        "clients": n,
        "failed_connects": failed,
        "handshakes_per_sec": n as f64 / ramp_time.as_secs_f64(),
        "rss_kb_before": before.map(|b| b.1),
        "rss_kb_after": after.map(|a| a.1),
        "rss_bytes_per_conn": per_conn,
        "pushes_received": received,
    })
}

async fn echo(opts: &Opts, secs: u64) -> serde_json::Value {
    let (conns, _, failed) = connect_all(opts).await;
    let n = conns.len();
    let clock = Clock(Instant::now());
    let before = server_usage(&opts.pid);
    let stop = clock.micros() + secs * 1_000_000;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut id = 0u64;
                while clock.micros() < stop {
                    id += 1;
                    let msg = json!({ "type": "echo", "id": id.to_string(), "data": { "t": clock.micros() } });
                    if ws.send(Message::Text(msg.to_string())).await.is_err() {
                        break;
                    }
                    loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(t))) if t.contains("\"reply\"") => {
                                if let Some(sent) = stamp(&t) {
                                    samples.push(clock.micros().saturating_sub(sent));
                                }
                                break;
                            }
                            Some(Ok(_)) => continue,
                            _ => return samples,
                        }
                    }
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for t in tasks {
        if let Ok(s) = t.await {
            samples.extend(s);
        }
    }
    let after = server_usage(&opts.pid);
    let trips = samples.len();
    json!({
        "workload": "echo",
        "label": opts.label,
        "clients": n,
        "failed_connects": failed,
        "round_trips": trips,
        "round_trips_per_sec": trips as f64 / secs.max(1) as f64,
        "server_cpu_secs": match (before, after) { (Some(b), Some(a)) => Some(a.0 - b.0), _ => None },
        "latency_ms": percentiles(samples),
    })
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        match cli.workload {
            Workload::Fanout {
                pushes,
                interval_ms,
                pad,
                trigger,
                group,
            } => fanout(&cli.opts, pushes, interval_ms, pad, trigger, group).await,
            Workload::Targeted {
                pushes,
                batch,
                callers,
            } => targeted(&cli.opts, pushes, batch, callers).await,
            Workload::Idle { hold_secs } => idle(&cli.opts, hold_secs).await,
            Workload::Echo { secs } => echo(&cli.opts, secs).await,
        }
    });
    println!("{result}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_read_without_parsing() {
        assert_eq!(
            stamp(r#"{"type":"push","data":{"t":12345,"pad":"x"},"time":9}"#),
            Some(12345)
        );
        assert_eq!(stamp(r#"{"type":"push","time":9}"#), None);
    }

    #[test]
    fn raw_frames_are_cut_at_their_length() {
        assert_eq!(frame_at(&[0x81, 2, b'h', b'i', 0x81]), Some((1, 2, 4)));
        assert_eq!(frame_at(&[0x81, 3, b'h', b'i']), None);
        let mut long = vec![0x81, 126, 0, 200];
        long.extend([b'x'; 200]);
        assert_eq!(frame_at(&long), Some((1, 4, 204)));
        assert_eq!(frame_at(&long[..100]), None);
    }

    #[test]
    fn percentiles_of_samples() {
        let p = percentiles((1..=1000).map(|v| v * 1000).collect());
        assert_eq!(p["p50"], 501.0);
        assert_eq!(p["max"], 1000.0);
    }
}

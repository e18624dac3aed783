//! Soak test for minipush: many churning WebSocket clients against an in-process server,
//! or against a cluster of in-process nodes on Redis.
//!
//! ```text
//! cargo run --release --example soak -- --clients 2000 --secs 600
//! cargo run --release --example soak -- --nodes 3 --redis redis://127.0.0.1:6379/
//! ```
//!
//! With `--nodes N --redis URL` (an empty Redis), every reconnect goes to a random node and
//! every push request through a random node: resume and exactly-once across nodes.
//!
//! The tool starts a server on `127.0.0.1:0` (big history, several connections per uid),
//! makes uid `u{i}` a member of group `g{i % groups}` through the API, and starts one client
//! per uid. A pusher then calls `POST /api/push` (and `/api/push/batch`) at `--rate` pushes
//! per second for `--secs` seconds, to a uid, a group or everyone, each push carrying a
//! unique id, and records the `seq` the API answered on every stream.
//!
//! Each client connects with a fresh signed ticket, reads `welcome`, sends `resume` with the
//! last `seq` it applied on each of its streams (`u:`, `g:`, `all`), holds live pushes until
//! the resume reply, then sorts the held frames per stream by `seq` and applies them. Every
//! few seconds (`--churn`) it drops the connection, abruptly or with a close frame, sometimes
//! while its resume is still outstanding, and reconnects after a short pause.
//!
//! At the end the pusher stops, every client reconnects and resumes one last time, and the
//! tool checks, for every client and stream: the application applied exactly the seqs
//! `1..=final` once each, in increasing order, with the payload the API numbered; no
//! `(stream, seq)` arrived twice on the wire; every resume reply said `complete:true`. It
//! prints a summary and exits non-zero if any check failed.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    process::ExitCode,
    sync::{
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Parser;
use futures_util::{stream, SinkExt, StreamExt};
use minipush::{auth::sign, protocol::now_ms, protocol::now_secs};
use parking_lot::Mutex;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};
use tokio::{net::TcpStream, sync::watch, sync::Notify, sync::Semaphore};
use tokio_tungstenite::{
    tungstenite::{
        client::IntoClientRequest,
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message,
    },
    MaybeTlsStream, WebSocketStream,
};

const TOKEN: &str = "soak-token-0123456789";
const KEY: &str = "soak-key-0123456789";
/// Longest wait for a handshake, a `welcome` or a resume reply before the attempt counts
/// as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// In the final phase, how long a client must hear nothing after it has everything.
const QUIET: Duration = Duration::from_secs(1);
/// Detailed anomaly lines printed at most (the counters keep counting).
const MAX_ANOMALY_LINES: u64 = 40;

#[derive(Parser, Debug, Clone)]
#[command(about = "Soak test: churning clients, pushes, resume, and exact delivery checks")]
struct Args {
    /// Number of WebSocket clients (client i has uid u{i}).
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// How long the pusher runs, in seconds.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Pushes per second (each item of a batch counts as one push).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// How long a connection lives before its client drops it, in seconds: "MIN-MAX".
    #[arg(long, default_value = "2-20")]
    churn: String,
    /// Number of groups; uid u{i} is a member of g{i % groups}.
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// Relative weights of uid, group and all pushes: "UID,GROUP,ALL".
    #[arg(long, default_value = "80,15,5")]
    mix: String,
    /// Percentage of push requests that are batches (/api/push/batch, 2 to 8 pushes each).
    #[arg(long, default_value_t = 10)]
    batch_pct: u32,
    /// Percentage of connections dropped abruptly while their resume is outstanding.
    #[arg(long, default_value_t = 5)]
    mid_resume_drop_pct: u32,
    /// The server's history.size (pushes kept per stream).
    #[arg(long, default_value_t = 2000)]
    history: usize,
    /// Maximum concurrent push requests to the API.
    #[arg(long, default_value_t = 32)]
    inflight: usize,
    /// Seconds the final reconnect-and-resume phase may take.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// Cluster nodes to start (with `--redis`); clients and pushes pick a node at random.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// `broker.url` of the cluster (an empty Redis); without it, one in-memory node.
    #[arg(long)]
    redis: Option<String>,
    /// Seconds between progress lines on standard error (0: none).
    #[arg(long, default_value_t = 10)]
    progress_secs: u64,
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// A growable bit set of `seq` values.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    /// Sets `i`; false if it was already set.
    fn insert(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        let was = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        !was
    }

    fn remove(&mut self, i: u64) {
        if let Some(w) = self.0.get_mut((i / 64) as usize) {
            *w &= !(1 << (i % 64));
        }
    }
}

/// Mixes a push's `seq` and unique id into one number; per stream these are summed, so the
/// pusher's sum over what the API numbered must equal the client's sum over what it applied.
fn mark(seq: u64, id: u64) -> u64 {
    let mut z = seq
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(id.rotate_left(29));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s.split_once('-').ok_or("expected MIN-MAX")?;
    let a: f64 = a.trim().parse().map_err(|e| format!("{e}"))?;
    let b: f64 = b.trim().parse().map_err(|e| format!("{e}"))?;
    if !(a > 0.0 && b >= a) {
        return Err("expected 0 < MIN <= MAX".into());
    }
    Ok((a, b))
}

fn parse_mix(s: &str) -> Result<[u32; 3], String> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{e}")))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [u, g, a] if u + g + a > 0 => Ok([u, g, a]),
        _ => Err("expected three weights UID,GROUP,ALL, not all zero".into()),
    }
}

/// `VmHWM` or `VmRSS` of this process from /proc/self/status, in KiB.
fn proc_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A latency histogram: 1 ms buckets to 100 ms, 10 ms to 1 s, 100 ms to 10 s, then one.
struct Latency(Vec<AtomicU64>);

impl Latency {
    fn new() -> Latency {
        Latency((0..281).map(|_| AtomicU64::new(0)).collect())
    }

    fn record(&self, ms: i64) {
        let ms = ms.max(0) as u64;
        let b = if ms < 100 {
            ms
        } else if ms < 1000 {
            100 + (ms - 100) / 10
        } else if ms < 10_000 {
            190 + (ms - 1000) / 100
        } else {
            280
        };
        self.0[b as usize].fetch_add(1, Relaxed);
    }

    /// The upper bound (ms) of bucket `b`.
    fn upper(b: usize) -> u64 {
        let b = b as u64;
        if b < 100 {
            b
        } else if b < 190 {
            100 + (b - 100) * 10 + 9
        } else if b < 280 {
            1000 + (b - 190) * 100 + 99
        } else {
            u64::MAX
        }
    }

    fn percentiles(&self, ps: &[f64]) -> (u64, Vec<String>) {
        let counts: Vec<u64> = self.0.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let out = ps
            .iter()
            .map(|p| {
                if total == 0 {
                    return "-".to_string();
                }
                let want = ((total as f64) * p).ceil().max(1.0) as u64;
                let mut acc = 0;
                for (b, c) in counts.iter().enumerate() {
                    acc += c;
                    if acc >= want {
                        let u = Self::upper(b);
                        return if u == u64::MAX {
                            ">10000".into()
                        } else {
                            u.to_string()
                        };
                    }
                }
                "-".into()
            })
            .collect();
        (total, out)
    }
}

// ---------------------------------------------------------------------------------------
// Shared state

#[derive(Default)]
struct Stats {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    open: AtomicI64,
    resumes_sent: AtomicU64,
    resumes: AtomicU64,
    incomplete: AtomicU64,
    resume_timeouts: AtomicU64,
    resumed_frames: AtomicU64,
    drops_abrupt: AtomicU64,
    drops_close: AtomicU64,
    drops_mid_resume: AtomicU64,
    rerequested: AtomicU64,
    lost: AtomicU64,
    wire_frames: AtomicU64,
    applied: AtomicU64,
    wire_dups: AtomicU64,
    gaps: AtomicU64,
    order: AtomicU64,
    errors: AtomicU64,
    unexpected: AtomicU64,
    epoch_changes: AtomicU64,
    welcome_behind: AtomicU64,
    ready: AtomicUsize,
    anomaly_lines: AtomicU64,
    server_closes: Mutex<BTreeMap<u16, u64>>,
}

impl Stats {
    fn anomaly(&self, line: impl FnOnce() -> String) {
        if self.anomaly_lines.fetch_add(1, Relaxed) < MAX_ANOMALY_LINES {
            eprintln!("ANOMALY {}", line());
        }
    }
}

/// Per stream: the last `seq` the API answered and the sum of `mark(seq, id)`.
type Finals = HashMap<String, (u64, u64)>;

struct Shared {
    args: Args,
    churn: (f64, f64),
    ws_urls: Vec<String>,
    stats: Stats,
    latency: Latency,
    ready_notify: Notify,
    /// Set once pushing has stopped and every push was answered.
    finals: watch::Receiver<Option<Arc<Finals>>>,
    /// When the final phase must be over.
    final_deadline: Mutex<Option<tokio::time::Instant>>,
}

// ---------------------------------------------------------------------------------------
// Clients

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default, borrow)]
    stream: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, rename = "ref", borrow)]
    reference: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    time: Option<i64>,
    /// In `welcome`: the current `seq` of `all` and of the connection's `u:` stream.
    #[serde(default)]
    seqs: Option<BTreeMap<String, u64>>,
}

#[derive(Deserialize)]
struct PushData {
    id: u64,
}

#[derive(Deserialize)]
struct ResumeReply {
    resumed: u64,
    complete: bool,
}

/// One of a client's streams, as its application sees it.
struct StreamState {
    name: String,
    /// The last `seq` applied.
    applied: u64,
    /// Frames applied.
    count: u64,
    /// Sum of `mark(seq, id)` over the applied frames.
    sum: u64,
    /// Every `seq` received on the wire and kept (applied or held).
    seen: Bits,
    gaps: u64,
    order: u64,
    dups: u64,
}

impl StreamState {
    fn new(name: String) -> StreamState {
        StreamState {
            name,
            applied: 0,
            count: 0,
            sum: 0,
            seen: Bits::default(),
            gaps: 0,
            order: 0,
            dups: 0,
        }
    }
}

/// A push frame as received: stream index, seq, mark.
type Held = (usize, u64, u64);

enum Phase {
    /// The resume with this id is outstanding; live pushes are held.
    Resuming {
        id: String,
        held: Vec<Held>,
    },
    Live,
}

/// How a connection ended, from the client's point of view.
enum Outcome {
    /// Reconnect after a pause.
    Again,
    /// The final resume is done (or the final deadline passed).
    Done,
}

struct Client {
    uid: String,
    streams: [StreamState; 3],
    epoch: Option<String>,
    resumes: u64,
    rng: StdRng,
    finals_rx: watch::Receiver<Option<Arc<Finals>>>,
}

/// What a client reports at the end: failed checks per kind.
#[derive(Default, Debug)]
struct Verdict {
    streams_checked: u64,
    deliveries: u64,
    unsettled: u64,
    beyond_final: u64,
    tail_missing: u64,
    mismatched: u64,
}

impl Client {
    fn new(idx: usize, groups: usize, finals_rx: watch::Receiver<Option<Arc<Finals>>>) -> Client {
        let uid = format!("u{idx}");
        Client {
            streams: [
                StreamState::new(format!("u:{uid}")),
                StreamState::new(format!("g:g{}", idx % groups)),
                StreamState::new("all".into()),
            ],
            uid,
            epoch: None,
            resumes: 0,
            rng: StdRng::from_entropy(),
            finals_rx,
        }
    }

    fn stream_index(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s.name == name)
    }

    async fn run(mut self, sh: Arc<Shared>) -> Verdict {
        let mut counted_ready = false;
        loop {
            let finals = self.finals_rx.borrow().clone();
            if let Some(deadline) = *sh.final_deadline.lock() {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
            let outcome = self.session(&sh, finals.clone(), &mut counted_ready).await;
            if matches!(outcome, Outcome::Done) {
                break;
            }
            let pause = if finals.is_none() && self.finals_rx.borrow().is_some() {
                // The final phase has just begun: spread the reconnects over 3 s.
                self.rng.gen_range(0..3000)
            } else {
                self.rng.gen_range(50..1000)
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.verdict(&sh)
    }

    fn verdict(&self, sh: &Shared) -> Verdict {
        let finals = self.finals_rx.borrow().clone().unwrap_or_default();
        let mut v = Verdict::default();
        for s in &self.streams {
            v.streams_checked += 1;
            v.deliveries += s.count;
            let (fin, sum) = finals.get(&s.name).copied().unwrap_or((0, 0));
            let clean = s.gaps == 0 && s.order == 0 && s.dups == 0;
            if s.applied > fin {
                v.beyond_final += 1;
                sh.stats.anomaly(|| {
                    format!(
                        "{} {}: applied up to {} > final {fin}",
                        self.uid, s.name, s.applied
                    )
                });
            }
            if s.applied < fin {
                v.tail_missing += fin - s.applied;
                v.unsettled += 1;
                sh.stats.anomaly(|| {
                    format!(
                        "{} {}: applied up to {} < final {fin} (count {})",
                        self.uid, s.name, s.applied, s.count
                    )
                });
            } else if s.count != fin || s.sum != sum {
                v.mismatched += 1;
                sh.stats.anomaly(|| {
                    format!(
                        "{} {}: count {} (final {fin}), payload sum {} (expected {sum}), clean {clean}",
                        self.uid, s.name, s.count, s.sum
                    )
                });
            }
        }
        v
    }

    fn ticket(&self) -> String {
        let ts = now_secs();
        format!("{}, {ts}, {}", sign(TOKEN, ts, Some(&self.uid)), self.uid)
    }

    async fn connect(&mut self, sh: &Shared) -> Option<Ws> {
        let url = &sh.ws_urls[rand::thread_rng().gen_range(0..sh.ws_urls.len())];
        let mut req = url.as_str().into_client_request().ok()?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", self.ticket().parse().ok()?);
        match tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(req, None, true),
        )
        .await
        {
            Ok(Ok((ws, _))) => Some(ws),
            Ok(Err(e)) => {
                sh.stats.connect_failures.fetch_add(1, Relaxed);
                sh.stats
                    .anomaly(|| format!("{}: handshake failed: {e}", self.uid));
                None
            }
            Err(_) => {
                sh.stats.connect_failures.fetch_add(1, Relaxed);
                sh.stats
                    .anomaly(|| format!("{}: handshake timed out", self.uid));
                None
            }
        }
    }

    /// One connection: welcome, resume, live pushes, until the client drops it, the server
    /// closes it, or (in the final phase) everything arrived and the line stayed quiet.
    async fn session(
        &mut self,
        sh: &Shared,
        finals: Option<Arc<Finals>>,
        counted_ready: &mut bool,
    ) -> Outcome {
        let Some(mut ws) = self.connect(sh).await else {
            return Outcome::Again;
        };
        sh.stats.connects.fetch_add(1, Relaxed);
        sh.stats.open.fetch_add(1, Relaxed);
        let outcome = self.session_on(sh, &mut ws, finals, counted_ready).await;
        sh.stats.open.fetch_sub(1, Relaxed);
        outcome
    }

    async fn session_on(
        &mut self,
        sh: &Shared,
        ws: &mut Ws,
        finals: Option<Arc<Finals>>,
        counted_ready: &mut bool,
    ) -> Outcome {
        // The welcome.
        let welcome = match tokio::time::timeout(STEP_TIMEOUT, next_text(ws)).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                sh.stats.lost.fetch_add(1, Relaxed);
                return Outcome::Again;
            }
            Err(_) => {
                sh.stats.unexpected.fetch_add(1, Relaxed);
                sh.stats
                    .anomaly(|| format!("{}: no welcome in time", self.uid));
                return Outcome::Again;
            }
        };
        match serde_json::from_str::<Incoming>(&welcome) {
            Ok(w) if w.ty == "welcome" => {
                let epoch = w.epoch.unwrap_or_default().into_owned();
                match &self.epoch {
                    None => self.epoch = Some(epoch),
                    Some(e) if *e != epoch => {
                        sh.stats.epoch_changes.fetch_add(1, Relaxed);
                        sh.stats
                            .anomaly(|| format!("{}: epoch changed {e} -> {epoch}", self.uid));
                    }
                    Some(_) => {}
                }
                // The server's current seq can never be behind what the client applied.
                for (name, seq) in w.seqs.iter().flatten() {
                    match self.stream_index(name) {
                        Some(i) if *seq >= self.streams[i].applied => {}
                        Some(i) => {
                            sh.stats.welcome_behind.fetch_add(1, Relaxed);
                            let applied = self.streams[i].applied;
                            sh.stats.anomaly(|| {
                                format!(
                                    "{}: welcome says {name} is at {seq}, but {applied} was applied",
                                    self.uid
                                )
                            });
                        }
                        None => {
                            sh.stats.unexpected.fetch_add(1, Relaxed);
                            sh.stats.anomaly(|| {
                                format!("{}: welcome names another stream: {welcome}", self.uid)
                            });
                        }
                    }
                }
            }
            _ => {
                sh.stats.unexpected.fetch_add(1, Relaxed);
                sh.stats
                    .anomaly(|| format!("{}: first frame is not a welcome: {welcome}", self.uid));
                return Outcome::Again;
            }
        }

        // The resume.
        self.resumes += 1;
        let id = format!("r{}", self.resumes);
        let streams: serde_json::Map<String, Value> = self
            .streams
            .iter()
            .map(|s| (s.name.clone(), json!(s.applied)))
            .collect();
        let resume = json!({"type": "resume", "streams": streams, "epoch": self.epoch, "id": id});
        if ws.send(Message::Text(resume.to_string())).await.is_err() {
            sh.stats.lost.fetch_add(1, Relaxed);
            return Outcome::Again;
        }
        sh.stats.resumes_sent.fetch_add(1, Relaxed);
        let mut phase = Phase::Resuming {
            id,
            held: Vec::new(),
        };

        let final_mode = finals.is_some();
        let now = tokio::time::Instant::now();
        let far = now + Duration::from_secs(365 * 24 * 3600);
        let churn_at = if final_mode {
            far
        } else {
            let (lo, hi) = sh.churn;
            now + Duration::from_secs_f64(self.rng.gen_range(lo..=hi))
        };
        // Sometimes drop while the resume is outstanding, after 0 to 5 frames.
        let mut mid_drop: Option<u32> = (!final_mode
            && self.rng.gen_range(0..100) < sh.args.mid_resume_drop_pct)
            .then(|| self.rng.gen_range(0..=5));
        let resume_deadline = now + STEP_TIMEOUT;
        let final_deadline = sh.final_deadline.lock().unwrap_or(far);
        let mut quiet_at = far;
        let mut frames_since_resume = 0u32;

        loop {
            if let (Some(k), Phase::Resuming { .. }) = (mid_drop, &phase) {
                if frames_since_resume >= k {
                    sh.stats.drops_mid_resume.fetch_add(1, Relaxed);
                    self.end(sh, phase);
                    return Outcome::Again;
                }
            }
            if matches!(phase, Phase::Live) {
                mid_drop = None;
            }
            let resuming = matches!(phase, Phase::Resuming { .. });
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        frames_since_resume += 1;
                        self.on_text(sh, &t, &mut phase, counted_ready);
                        if let Some(f) = &finals {
                            if matches!(phase, Phase::Live) && self.has_all(f) {
                                quiet_at = tokio::time::Instant::now() + QUIET;
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        *sh.stats.server_closes.lock().entry(code).or_default() += 1;
                        self.end(sh, phase);
                        return Outcome::Again;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        sh.stats.lost.fetch_add(1, Relaxed);
                        self.end(sh, phase);
                        return Outcome::Again;
                    }
                },
                () = tokio::time::sleep_until(churn_at) => {
                    return self.drop_conn(sh, ws, phase, counted_ready).await;
                }
                Ok(()) = self.finals_rx.changed(), if !final_mode => {
                    return self.drop_conn(sh, ws, phase, counted_ready).await;
                }
                () = tokio::time::sleep_until(resume_deadline), if resuming => {
                    sh.stats.resume_timeouts.fetch_add(1, Relaxed);
                    sh.stats.anomaly(|| format!("{}: no resume reply in time", self.uid));
                    self.end(sh, phase);
                    return Outcome::Again;
                }
                () = tokio::time::sleep_until(quiet_at) => {
                    let _ = tokio::time::timeout(QUIET, ws.close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    }))).await;
                    self.end(sh, phase);
                    return Outcome::Done;
                }
                () = tokio::time::sleep_until(final_deadline), if final_mode => {
                    self.end(sh, phase);
                    return Outcome::Done;
                }
            }
        }
    }

    fn has_all(&self, finals: &Finals) -> bool {
        self.streams
            .iter()
            .all(|s| s.applied >= finals.get(&s.name).map_or(0, |f| f.0))
    }

    /// The client leaves: half the time abruptly, half the time with a close frame (and it
    /// reads what still arrives until the server's close, at most 1 s).
    async fn drop_conn(
        &mut self,
        sh: &Shared,
        ws: &mut Ws,
        mut phase: Phase,
        counted_ready: &mut bool,
    ) -> Outcome {
        if self.rng.gen_bool(0.5) {
            sh.stats.drops_abrupt.fetch_add(1, Relaxed);
            self.end(sh, phase);
            return Outcome::Again;
        }
        sh.stats.drops_close.fetch_add(1, Relaxed);
        let close = CloseFrame {
            code: CloseCode::Away,
            reason: "soak churn".into(),
        };
        if let Ok(Ok(())) = tokio::time::timeout(QUIET, ws.send(Message::Close(Some(close)))).await
        {
            let _ = tokio::time::timeout(QUIET, async {
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) => self.on_text(sh, &t, &mut phase, counted_ready),
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            })
            .await;
        }
        self.end(sh, phase);
        Outcome::Again
    }

    /// The connection is gone. If the resume was outstanding, the held frames that continue
    /// what was applied are applied; the rest are forgotten (the next resume asks for them
    /// again, so they are no longer "seen").
    fn end(&mut self, sh: &Shared, phase: Phase) {
        let Phase::Resuming { mut held, .. } = phase else {
            return;
        };
        held.sort_unstable();
        for (i, seq, m) in held {
            let s = &mut self.streams[i];
            if seq == s.applied + 1 {
                s.applied = seq;
                s.count += 1;
                s.sum = s.sum.wrapping_add(m);
                sh.stats.applied.fetch_add(1, Relaxed);
            } else {
                s.seen.remove(seq);
                sh.stats.rerequested.fetch_add(1, Relaxed);
            }
        }
    }

    /// Applies one push at the application level, checking order.
    fn apply(&mut self, sh: &Shared, i: usize, seq: u64, m: u64) {
        let s = &mut self.streams[i];
        if seq == s.applied + 1 {
        } else if seq > s.applied + 1 {
            s.gaps += seq - s.applied - 1;
            sh.stats.gaps.fetch_add(seq - s.applied - 1, Relaxed);
            let (uid, name, after) = (&self.uid, &s.name, s.applied);
            sh.stats
                .anomaly(|| format!("GAP {uid} {name}: applied {after}, then {seq}"));
        } else {
            s.order += 1;
            sh.stats.order.fetch_add(1, Relaxed);
            let (uid, name, after) = (&self.uid, &s.name, s.applied);
            sh.stats
                .anomaly(|| format!("ORDER {uid} {name}: applied {after}, then {seq}"));
            s.count += 1;
            s.sum = s.sum.wrapping_add(m);
            sh.stats.applied.fetch_add(1, Relaxed);
            return;
        }
        s.applied = seq;
        s.count += 1;
        s.sum = s.sum.wrapping_add(m);
        sh.stats.applied.fetch_add(1, Relaxed);
    }

    fn on_text(&mut self, sh: &Shared, text: &str, phase: &mut Phase, counted_ready: &mut bool) {
        let Ok(f) = serde_json::from_str::<Incoming>(text) else {
            sh.stats.unexpected.fetch_add(1, Relaxed);
            sh.stats
                .anomaly(|| format!("{}: not a frame: {text}", self.uid));
            return;
        };
        match &*f.ty {
            "push" => {
                sh.stats.wire_frames.fetch_add(1, Relaxed);
                let stream = f.stream.as_deref().unwrap_or("");
                let id = f
                    .data
                    .and_then(|d| serde_json::from_str::<PushData>(d.get()).ok())
                    .map(|d| d.id);
                let (Some(i), Some(seq), Some(id)) = (self.stream_index(stream), f.seq, id) else {
                    sh.stats.unexpected.fetch_add(1, Relaxed);
                    sh.stats
                        .anomaly(|| format!("{}: unexpected push: {text}", self.uid));
                    return;
                };
                let s = &mut self.streams[i];
                if !s.seen.insert(seq) {
                    s.dups += 1;
                    sh.stats.wire_dups.fetch_add(1, Relaxed);
                    let resuming = matches!(phase, Phase::Resuming { .. });
                    let (uid, name, applied) = (&self.uid, &s.name, s.applied);
                    sh.stats.anomaly(|| {
                        format!(
                            "DUP {uid} {name}: seq {seq} again (applied {applied}, resuming {resuming})"
                        )
                    });
                    return;
                }
                let m = mark(seq, id);
                match phase {
                    Phase::Resuming { held, .. } => held.push((i, seq, m)),
                    Phase::Live => {
                        if let Some(t) = f.time {
                            sh.latency.record(now_ms() - t);
                        }
                        self.apply(sh, i, seq, m);
                    }
                }
            }
            "reply" => {
                let ours = match phase {
                    Phase::Resuming { id, .. } => f.reference.as_deref() == Some(id.as_str()),
                    Phase::Live => false,
                };
                let reply = f
                    .data
                    .and_then(|d| serde_json::from_str::<ResumeReply>(d.get()).ok());
                let (true, Some(reply)) = (ours, reply) else {
                    sh.stats.unexpected.fetch_add(1, Relaxed);
                    sh.stats
                        .anomaly(|| format!("{}: unexpected reply: {text}", self.uid));
                    return;
                };
                sh.stats.resumes.fetch_add(1, Relaxed);
                sh.stats.resumed_frames.fetch_add(reply.resumed, Relaxed);
                if !reply.complete {
                    sh.stats.incomplete.fetch_add(1, Relaxed);
                    sh.stats
                        .anomaly(|| format!("{}: incomplete resume: {text}", self.uid));
                }
                let Phase::Resuming { mut held, .. } = std::mem::replace(phase, Phase::Live) else {
                    unreachable!("checked above")
                };
                held.sort_unstable();
                for (i, seq, m) in held {
                    self.apply(sh, i, seq, m);
                }
                if !*counted_ready {
                    *counted_ready = true;
                    sh.stats.ready.fetch_add(1, Relaxed);
                    sh.ready_notify.notify_one();
                }
            }
            "error" => {
                sh.stats.errors.fetch_add(1, Relaxed);
                sh.stats
                    .anomaly(|| format!("{}: error frame: {text}", self.uid));
            }
            "pong" => {}
            _ => {
                sh.stats.unexpected.fetch_add(1, Relaxed);
                sh.stats
                    .anomaly(|| format!("{}: unexpected frame: {text}", self.uid));
            }
        }
    }
}

/// The next text frame, skipping control frames; `None` if the connection ends.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Some(t),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// The pusher

#[derive(Default)]
struct StreamLedger {
    max: u64,
    count: u64,
    sum: u64,
    seqs: Bits,
}

#[derive(Default)]
struct Ledger {
    streams: HashMap<String, StreamLedger>,
    pushes: u64,
    by_kind: [u64; 3],
    batches: u64,
    batched: u64,
    errors: u64,
    /// A `seq` answered twice on one stream, or a missing/odd `seq` in an answer.
    api_anomalies: u64,
}

impl Ledger {
    fn record(&mut self, stream: &str, id: u64, answer: &Value) {
        let Some(seq) = answer.get("seq").and_then(Value::as_u64) else {
            self.api_anomalies += 1;
            eprintln!("ANOMALY push {id} to {stream}: answer without seq: {answer}");
            return;
        };
        let l = self.streams.entry(stream.to_string()).or_default();
        if !l.seqs.insert(seq) {
            self.api_anomalies += 1;
            eprintln!("ANOMALY push {id} to {stream}: seq {seq} answered twice");
        }
        l.max = l.max.max(seq);
        l.count += 1;
        l.sum = l.sum.wrapping_add(mark(seq, id));
        self.pushes += 1;
    }
}

struct Pusher {
    http: reqwest::Client,
    bases: Vec<String>,
    ledger: Arc<Mutex<Ledger>>,
}

impl Pusher {
    /// One push body (and its stream), chosen by the mix.
    fn pick(rng: &mut StdRng, args: &Args, mix: [u32; 3], id: u64) -> (Value, String, usize) {
        let data = json!({"id": id, "src": "soak"});
        let r = rng.gen_range(0..mix.iter().sum::<u32>());
        if r < mix[0] {
            let u = format!("u{}", rng.gen_range(0..args.clients));
            let stream = format!("u:{u}");
            (json!({"uid": u, "data": data}), stream, 0)
        } else if r < mix[0] + mix[1] {
            let g = format!("g{}", rng.gen_range(0..args.groups));
            let stream = format!("g:{g}");
            (json!({"group": g, "data": data}), stream, 1)
        } else {
            (json!({"all": true, "data": data}), "all".into(), 2)
        }
    }

    async fn send(&self, items: Vec<(Value, String, usize, u64)>) {
        let base = &self.bases[rand::thread_rng().gen_range(0..self.bases.len())];
        let batch = items.len() > 1;
        let (url, body) = if batch {
            let pushes: Vec<&Value> = items.iter().map(|(b, ..)| b).collect();
            (
                format!("{base}/api/push/batch"),
                json!({ "pushes": pushes }),
            )
        } else {
            (format!("{base}/api/push"), items[0].0.clone())
        };
        let res = self
            .http
            .post(&url)
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await;
        let answer = match res {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            Ok(r) => {
                eprintln!("ANOMALY push answered {}", r.status());
                None
            }
            Err(e) => {
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    why.push_str(&format!(": {inner}"));
                    source = inner.source();
                }
                eprintln!("ANOMALY push failed: {why}");
                None
            }
        };
        let mut ledger = self.ledger.lock();
        let Some(answer) = answer else {
            ledger.errors += items.len() as u64;
            return;
        };
        if batch {
            ledger.batches += 1;
            ledger.batched += items.len() as u64;
            let results = answer["results"].as_array().cloned().unwrap_or_default();
            if results.len() != items.len() {
                ledger.errors += items.len() as u64;
                eprintln!(
                    "ANOMALY batch answer has {} results: {answer}",
                    results.len()
                );
                return;
            }
            for ((_, stream, kind, id), r) in items.iter().zip(&results) {
                if r["ok"] == true {
                    ledger.by_kind[*kind] += 1;
                    ledger.record(stream, *id, r);
                } else {
                    ledger.errors += 1;
                    eprintln!("ANOMALY batch item failed: {r}");
                }
            }
        } else {
            let (_, stream, kind, id) = &items[0];
            ledger.by_kind[*kind] += 1;
            ledger.record(stream, *id, &answer);
        }
    }
}

async fn push_for(sh: Arc<Shared>, pusher: Arc<Pusher>, mix: [u32; 3]) -> Duration {
    let args = &sh.args;
    let sem = Arc::new(Semaphore::new(args.inflight));
    let mut rng = StdRng::from_entropy();
    let start = Instant::now();
    let end = start + Duration::from_secs(args.secs);
    let mut issued = 0u64;
    let mut next_id = 1u64;
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * f64::from(args.rate)) as u64;
        while issued < due && Instant::now() < end {
            let n = if rng.gen_range(0..100) < args.batch_pct {
                rng.gen_range(2..=8)
            } else {
                1
            };
            let items: Vec<(Value, String, usize, u64)> = (0..n)
                .map(|_| {
                    let id = next_id;
                    next_id += 1;
                    let (body, stream, kind) = Pusher::pick(&mut rng, args, mix, id);
                    (body, stream, kind, id)
                })
                .collect();
            issued += n;
            let permit = sem.clone().acquire_owned().await.expect("never closed");
            let pusher = pusher.clone();
            tokio::spawn(async move {
                pusher.send(items).await;
                drop(permit);
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pushed_for = start.elapsed();
    // Wait for every answer.
    let _all = sem
        .acquire_many(args.inflight as u32)
        .await
        .expect("never closed");
    pushed_for
}

// ---------------------------------------------------------------------------------------
// Main

fn main() -> ExitCode {
    let args = Args::parse();
    let churn = match parse_range(&args.churn) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("--churn: {e}");
            return ExitCode::from(2);
        }
    };
    let mix = match parse_mix(&args.mix) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("--mix: {e}");
            return ExitCode::from(2);
        }
    };
    if args.clients == 0 || args.groups == 0 || args.rate == 0 || args.inflight == 0 {
        eprintln!("--clients, --groups, --rate and --inflight must be greater than 0");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MINIPUSH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts");
    let passed = runtime.block_on(run(args, churn, mix));
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(args: Args, churn: (f64, f64), mix: [u32; 3]) -> bool {
    let started = Instant::now();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 5\n\
         [auth]\ntokens = [\"{TOKEN}\"]\n[api]\nkeys = [\"{KEY}\"]\n\
         [limits]\nmax_conns_per_uid = 5\nclient_msgs_per_sec = 100\n\
         [history]\nsize = {}\n",
        args.history
    );
    let mut servers = Vec::new();
    for n in 0..args.nodes.max(1) {
        let mut config =
            minipush::Config::from_toml(&toml, Vec::new(), false).expect("valid config");
        if let Some(url) = &args.redis {
            config.broker.url = Some(minipush::config::Secret::new(url.clone()));
            config.server.node_id = Some(format!("soak{n}"));
        } else if n > 0 {
            eprintln!("soak: --nodes needs --redis");
            return false;
        }
        servers.push(
            minipush::Server::start(config)
                .await
                .expect("the server starts"),
        );
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.addr()).collect();
    let bases: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let base = bases[0].clone();
    eprintln!(
        "soak: {} node(s) on {addrs:?}; {} clients, {} s at {} pushes/s, churn {}-{} s, mix {:?}",
        servers.len(),
        args.clients,
        args.secs,
        args.rate,
        churn.0,
        churn.1,
        mix
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.inflight + 8)
        // Below the server's keep-alive (actix-web: 5 s), so a request never goes out on a
        // connection the server is closing at that moment ("connection closed before
        // message completed"): a push must not fail for a reason of the HTTP client's.
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");

    // Group membership by uid, before anyone connects or anything is pushed.
    let failures = AtomicU64::new(0);
    stream::iter(0..args.clients)
        .for_each_concurrent(32, |i| {
            let (http, base, failures) = (&http, &base, &failures);
            let group = format!("g{}", i % args.groups);
            async move {
                let res = http
                    .post(format!("{base}/api/groups/{group}/members"))
                    .bearer_auth(KEY)
                    .json(&json!({"uid": format!("u{i}")}))
                    .send()
                    .await;
                if !matches!(res, Ok(r) if r.status().is_success()) {
                    failures.fetch_add(1, Relaxed);
                }
            }
        })
        .await;
    if failures.load(Relaxed) > 0 {
        eprintln!("soak: {} group memberships failed", failures.load(Relaxed));
        return false;
    }

    let (finals_tx, finals_rx) = watch::channel(None);
    let sh = Arc::new(Shared {
        churn,
        ws_urls: addrs.iter().map(|a| format!("ws://{a}/ws")).collect(),
        stats: Stats::default(),
        latency: Latency::new(),
        ready_notify: Notify::new(),
        finals: finals_rx,
        final_deadline: Mutex::new(None),
        args: args.clone(),
    });

    // Clients, started over about two seconds.
    let mut handles = Vec::with_capacity(args.clients);
    let spacing = Duration::from_micros((2_000_000 / args.clients as u64).max(1));
    for i in 0..args.clients {
        let client = Client::new(i, args.groups, sh.finals.clone());
        handles.push(tokio::spawn(client.run(sh.clone())));
        tokio::time::sleep(spacing).await;
    }
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(120);
    while sh.stats.ready.load(Relaxed) < args.clients {
        if tokio::time::timeout_at(ready_by, sh.ready_notify.notified())
            .await
            .is_err()
        {
            eprintln!(
                "soak: only {} of {} clients resumed within 120 s",
                sh.stats.ready.load(Relaxed),
                args.clients
            );
            break;
        }
    }
    eprintln!(
        "soak: {} clients connected and resumed after {:.1} s; pushing",
        sh.stats.ready.load(Relaxed),
        started.elapsed().as_secs_f64()
    );

    // Progress lines.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let progress = {
        let (sh, ledger) = (sh.clone(), ledger.clone());
        let every = sh.args.progress_secs;
        tokio::spawn(async move {
            if every == 0 {
                return;
            }
            let t0 = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(every)).await;
                let s = &sh.stats;
                let pushes = ledger.lock().pushes;
                eprintln!(
                    "[{:>5.0}s] pushes {pushes} open {} connects {} resumes {} wire {} applied {} \
                     | dup {} gap {} order {} incomplete {} errors {} | rss {} MiB",
                    t0.elapsed().as_secs_f64(),
                    s.open.load(Relaxed),
                    s.connects.load(Relaxed),
                    s.resumes.load(Relaxed),
                    s.wire_frames.load(Relaxed),
                    s.applied.load(Relaxed),
                    s.wire_dups.load(Relaxed),
                    s.gaps.load(Relaxed),
                    s.order.load(Relaxed),
                    s.incomplete.load(Relaxed),
                    s.errors.load(Relaxed),
                    proc_status_kib("VmRSS:") / 1024,
                );
            }
        })
    };

    let pusher = Arc::new(Pusher {
        http: http.clone(),
        bases: bases.clone(),
        ledger: ledger.clone(),
    });
    let pushed_for = push_for(sh.clone(), pusher, mix).await;

    // Final phase: every client reconnects and resumes once more, until quiet.
    let finals: Finals = ledger
        .lock()
        .streams
        .iter()
        .map(|(k, l)| (k.clone(), (l.max, l.sum)))
        .collect();
    {
        let mut ledger = ledger.lock();
        let holes: Vec<String> = ledger
            .streams
            .iter()
            .filter(|(_, l)| l.count != l.max)
            .map(|(k, l)| format!("{k}: {} pushes, max seq {}", l.count, l.max))
            .collect();
        if !holes.is_empty() {
            ledger.api_anomalies += holes.len() as u64;
            eprintln!("ANOMALY API seq numbering has holes: {holes:?}");
        }
    }
    let final_start = Instant::now();
    *sh.final_deadline.lock() =
        Some(tokio::time::Instant::now() + Duration::from_secs(args.settle_secs));
    finals_tx.send_replace(Some(Arc::new(finals)));
    eprintln!("soak: pushing stopped after {pushed_for:.1?}; final reconnect and resume");

    let mut verdict = Verdict::default();
    let mut panicked = 0;
    for h in handles {
        match h.await {
            Ok(v) => {
                verdict.streams_checked += v.streams_checked;
                verdict.deliveries += v.deliveries;
                verdict.unsettled += v.unsettled;
                verdict.beyond_final += v.beyond_final;
                verdict.tail_missing += v.tail_missing;
                verdict.mismatched += v.mismatched;
            }
            Err(e) => {
                panicked += 1;
                eprintln!("ANOMALY a client task failed: {e}");
            }
        }
    }
    let settled_in = final_start.elapsed();
    progress.abort();

    // Why the server dropped frames, if it did (from /metrics).
    let metrics = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let server_drops: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with("minipush_dropped_total"))
        .map(|l| l.trim_start_matches("minipush_dropped_total").to_string())
        .collect();

    let server_stats = http
        .get(format!("{base}/api/stats"))
        .bearer_auth(KEY)
        .send()
        .await
        .ok();
    let server_total = match server_stats {
        Some(r) => r.json::<Value>().await.map(|v| v["total"].clone()).ok(),
        None => None,
    };
    for server in servers {
        let _ = tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await;
    }

    // Summary.
    let s = &sh.stats;
    let l = ledger.lock();
    let ld = |a: &AtomicU64| a.load(Relaxed);
    let closes: Vec<String> = s
        .server_closes
        .lock()
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    let (lat_n, lat) = sh.latency.percentiles(&[0.5, 0.99, 0.999, 1.0]);
    let failures = [
        ("push errors", l.errors),
        ("API seq anomalies", l.api_anomalies),
        ("incomplete resumes", ld(&s.incomplete)),
        ("resume timeouts", ld(&s.resume_timeouts)),
        ("duplicates on the wire", ld(&s.wire_dups)),
        ("gaps", ld(&s.gaps) + verdict.tail_missing),
        ("order violations", ld(&s.order)),
        ("streams unsettled at the end", verdict.unsettled),
        ("streams beyond the final seq", verdict.beyond_final),
        ("streams with wrong count/payload", verdict.mismatched),
        ("error frames", ld(&s.errors)),
        ("unexpected frames", ld(&s.unexpected)),
        ("epoch changes", ld(&s.epoch_changes)),
        ("welcome seqs behind the client", ld(&s.welcome_behind)),
        ("client tasks failed", panicked),
        (
            "clients never resumed before pushing",
            (args.clients - s.ready.load(Relaxed).min(args.clients)) as u64,
        ),
    ];
    let passed = failures.iter().all(|(_, n)| *n == 0);
    let connects = ld(&s.connects);
    let row = |label: &str, value: String| println!("  {label:<36} {value}");
    println!("minipush soak: {}", if passed { "PASS" } else { "FAIL" });
    row(
        "clients",
        format!(
            "{} (groups {}, churn {}-{} s, {}% dropped during resume)",
            args.clients, args.groups, churn.0, churn.1, args.mid_resume_drop_pct
        ),
    );
    row(
        "duration",
        format!(
            "{:.1} s pushing + {:.1} s final resume ({:.1} s in all)",
            pushed_for.as_secs_f64(),
            settled_in.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
    );
    row(
        "pushes",
        format!(
            "{} ({:.1}/s of {}/s asked; uid {}, group {}, all {}; {} of them in {} batches)",
            l.pushes,
            l.pushes as f64 / pushed_for.as_secs_f64(),
            args.rate,
            l.by_kind[0],
            l.by_kind[1],
            l.by_kind[2],
            l.batched,
            l.batches
        ),
    );
    row("streams pushed to", l.streams.len().to_string());
    row(
        "deliveries checked",
        format!(
            "{} (applied by clients, over {} client streams)",
            verdict.deliveries, verdict.streams_checked
        ),
    );
    row("push frames on the wire", ld(&s.wire_frames).to_string());
    row(
        "connections",
        format!(
            "{} ({} reconnects, {} handshake failures)",
            connects,
            connects.saturating_sub(args.clients as u64),
            ld(&s.connect_failures)
        ),
    );
    row(
        "client drops",
        format!(
            "{} abrupt, {} with close frame, {} during resume ({} held frames asked again)",
            ld(&s.drops_abrupt),
            ld(&s.drops_close),
            ld(&s.drops_mid_resume),
            ld(&s.rerequested)
        ),
    );
    row(
        "server closes",
        format!(
            "{}; {} connections ended without a close frame",
            if closes.is_empty() {
                "none".to_string()
            } else {
                closes.join(", ")
            },
            ld(&s.lost)
        ),
    );
    row(
        "resumes",
        format!(
            "{} replied of {} sent ({} frames replayed)",
            ld(&s.resumes),
            ld(&s.resumes_sent),
            ld(&s.resumed_frames)
        ),
    );
    row(
        "live push latency (ms)",
        format!(
            "p50 {} p99 {} p99.9 {} max {} over {} live frames",
            lat[0], lat[1], lat[2], lat[3], lat_n
        ),
    );
    if let Some(t) = server_total {
        row("server /api/stats", t.to_string());
    }
    if !server_drops.is_empty() {
        row("server drops by reason", server_drops.join(", "));
    }
    for (name, n) in failures {
        row(name, n.to_string());
    }
    row(
        "peak RSS (VmHWM)",
        format!(
            "{} MiB (server and clients in one process)",
            proc_status_kib("VmHWM:") / 1024
        ),
    );
    passed
}

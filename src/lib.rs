//! minipush: a realtime push gateway for WeChat mini-programs.
//!
//! Data flows one way through a few modules, each with one job:
//!
//! ```text
//! client frame ─▶ gateway ─▶ handlers ─▶ broker ─▶ hub ─▶ connection queues ─▶ clients
//! HTTP API ──────────────────────────────▶ broker ─▶ hub ─▶ ...
//! ```
//!
//! - [`config`]: the TOML file and `MINIPUSH_*` overrides, validated.
//! - [`auth`]: the signed ticket in `Sec-WebSocket-Protocol`.
//! - [`protocol`]: frames, error codes and close codes.
//! - [`gateway`]: the WebSocket endpoint and the per-connection loop.
//! - [`handlers`]: the [`Handler`](handlers::Handler) trait and the built-in handlers.
//! - [`hub`]: this node's connections, by id, uid and group; stream history.
//! - [`broker`]: sequence numbers, history and fan-out across nodes.
//! - [`push`]: the push request shared by the API and upstream answers.
//! - [`api`]: the HTTP API for backends and operators.
//! - [`metrics`]: counters and the Prometheus text.
//! - [`wechat`]: WeChat's server API: `/api/login`, access token, subscribe fallback.
//! - [`alerts`]: operator alerts to a DingTalk group robot, rate-limited and batched.
//! - [`ratelimit`]: token buckets (per connection, per login address).
//! - [`http`]: the shared outbound HTTP client.
//! - [`demo`]: the browser demo page and dev tickets (`serve --dev` only).
//! - [`legacy`]: the Workerman-compatible text port (`legacy.text_listen`).
//! - [`tls`]: built-in TLS (`server.tls_cert`, `server.tls_key`).
//! - [`server`]: wiring, start and graceful shutdown.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let config = minipush::config::Config::load(None, std::env::vars(), true).unwrap();
//! let server = minipush::Server::start(config).await?;
//! println!("listening on {}", server.addr());
//! server.run_until_signal().await
//! # }
//! ```

pub mod alerts;
pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod handlers;
pub mod http;
pub mod hub;
pub mod legacy;
pub mod metrics;
pub mod protocol;
pub mod push;
pub mod ratelimit;
pub mod server;
pub mod tls;
pub mod wechat;

pub use config::Config;
pub use server::{Server, ServerBuilder};

/// A random string of `len` lowercase letters and digits (ids, epochs, dev secrets).
pub fn random_id(len: usize) -> String {
    use rand::{distributions::Alphanumeric, Rng};
    rand::thread_rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(|b| (b as char).to_ascii_lowercase())
        .collect()
}

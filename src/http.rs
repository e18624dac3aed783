//! The outbound HTTP client shared by the upstream handlers, the WeChat client and the
//! DingTalk alerts (one connection pool), and a way to describe its errors without their
//! URL: outbound URLs may carry credentials (AppSecret, access tokens, webhook tokens).

use std::time::Duration;

/// The HTTP client for every outbound call; each request sets its own time limit.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("minipush/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .expect("the TLS backend initialises")
}

/// What went wrong with a request, without its URL.
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "time limit reached"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let status = e
        .status()
        .map(|s| format!(" (HTTP {s})"))
        .unwrap_or_default();
    format!("{what}{status}")
}

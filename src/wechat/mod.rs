//! WeChat's server API for the mini-program configured in `[wechat]`: the `/api/login`
//! code exchange ([`login`]), the cached access token ([`token`]) and the offline fallback
//! by subscribe message ([`subscribe`]).
//!
//! Every call has `wechat.timeout_ms` as its time limit. Calls are retried (3 attempts,
//! 100 ms then 200 ms apart) only where that is safe: the access-token fetch on network
//! errors, 5xx and WeChat's "system busy" (-1); the login exchange only when the request
//! never reached WeChat (a `wx.login` code is single-use); the subscribe send never (only
//! its one retry with a fresh token after 40001/42001). Request URLs carry the AppSecret,
//! the user's code or the access token, so errors are described without the URL.

mod login;
mod subscribe;
mod token;

use std::{net::IpAddr, sync::Arc, time::Duration};

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use login::{valid_code, MAX_CODE_LEN};
pub use subscribe::Subscribe;

use crate::{config::Secret, config::WechatConfig, metrics::Metrics, ratelimit::KeyedLimiter};

/// Client addresses whose `/api/login` buckets are remembered at once.
const LOGIN_LIMIT_KEYS: usize = 10_000;
const ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_millis(100);

/// The WeChat client, present in the server state when `wechat.appid` and `wechat.secret`
/// are set.
pub struct Wechat {
    http: reqwest::Client,
    api_base: String,
    appid: String,
    secret: Secret,
    timeout: Duration,
    tokens: token::TokenCache,
    metrics: Arc<Metrics>,
    login_limit: KeyedLimiter<IpAddr>,
    /// `wechat.login_ip_header`: where the client address is read from, when not the peer.
    pub login_ip_header: Option<String>,
}

/// A failed call to WeChat.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WechatError {
    /// WeChat answered with a non-zero `errcode`.
    #[error("WeChat answered errcode {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    /// Connection error, time limit, or an HTTP error status.
    #[error("WeChat could not be reached: {0}")]
    Unavailable(String),
    /// The answer was not the JSON the API documents (or its openid is not a valid uid).
    #[error("WeChat's answer is not usable: {0}")]
    BadAnswer(String),
}

/// Which failures a call may be repeated after.
#[derive(Clone, Copy)]
enum Retry {
    Never,
    /// Only when the request was never sent (connection refused, DNS): single-use inputs.
    IfNotSent,
    /// Network errors, time limits, 5xx and errcode -1 (system busy): idempotent calls.
    IfTransient,
}

/// One failed attempt and whether it may be repeated.
struct Failed {
    error: WechatError,
    not_sent: bool,
    transient: bool,
}

impl Retry {
    fn allows(self, f: &Failed) -> bool {
        match self {
            Retry::Never => false,
            Retry::IfNotSent => f.not_sent,
            Retry::IfTransient => f.transient,
        }
    }
}

impl Wechat {
    /// The client for `config`, or `None` when WeChat is not configured.
    pub fn new(config: &WechatConfig, metrics: Arc<Metrics>) -> Option<Wechat> {
        let (appid, secret) = config.credentials()?;
        let per_min = f64::from(config.login_per_min);
        Some(Wechat {
            http: crate::http::client(),
            api_base: config.api_base.trim_end_matches('/').to_string(),
            appid: appid.to_string(),
            secret: secret.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            tokens: token::TokenCache::new(token::MIN_FORCE_INTERVAL),
            metrics,
            login_limit: KeyedLimiter::new(per_min / 60.0, per_min, LOGIN_LIMIT_KEYS),
            login_ip_header: config.login_ip_header.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_base)
    }

    /// Sends the request `build` makes (again for each attempt) and decodes WeChat's JSON
    /// answer: a non-zero `errcode` is [`WechatError::Api`].
    async fn call<T: DeserializeOwned>(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        retry: Retry,
    ) -> Result<T, WechatError> {
        let mut attempt = 1;
        loop {
            match self.call_once(build()).await {
                Ok(v) => return Ok(v),
                Err(f) if attempt < ATTEMPTS && retry.allows(&f) => {
                    tracing::debug!(attempt, "WeChat call failed, retrying: {}", f.error);
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    async fn call_once<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Failed> {
        let network = |e: reqwest::Error| Failed {
            not_sent: e.is_connect(),
            transient: true,
            error: WechatError::Unavailable(crate::http::describe(&e)),
        };
        let res = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(network)?;
        let status = res.status();
        if !status.is_success() {
            return Err(Failed {
                not_sent: false,
                transient: status.is_server_error(),
                error: WechatError::Unavailable(format!("HTTP {status}")),
            });
        }
        let body = res.bytes().await.map_err(network)?;
        let final_failure = |error| Failed {
            not_sent: false,
            transient: false,
            error,
        };
        let value: Value = serde_json::from_slice(&body)
            .map_err(|_| final_failure(WechatError::BadAnswer("not JSON".into())))?;
        match value.get("errcode").and_then(Value::as_i64) {
            Some(errcode) if errcode != 0 => {
                let errmsg = value["errmsg"].as_str().unwrap_or_default().to_string();
                return Err(Failed {
                    not_sent: false,
                    transient: errcode == -1,
                    error: WechatError::Api { errcode, errmsg },
                });
            }
            _ => {}
        }
        serde_json::from_value(value)
            .map_err(|e| final_failure(WechatError::BadAnswer(e.to_string())))
    }
}

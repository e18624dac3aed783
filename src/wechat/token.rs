//! The access token, from WeChat's `POST cgi-bin/stable_token` (the stable token: fetching
//! it does not invalidate the one other servers of the same appid hold).
//!
//! One token is cached per process until shortly before it expires (10 % of its lifetime
//! early, at most 5 minutes). A `tokio::sync::Mutex` around the cache makes refreshes single
//! flight: however many pushes wait, one request goes to WeChat and the others take its
//! result. A token WeChat rejected (40001/42001) is refreshed with `force_refresh: true`,
//! at most once per [`MIN_FORCE_INTERVAL`] (WeChat allows a forced refresh every 30 s and
//! 20 a day); within that interval a plain fetch is made instead. A failed fetch is
//! remembered for [`FAILURE_HOLD`]: while WeChat is down, waiting pushes fail at once with
//! that error instead of queueing for one time limit each.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use serde_json::json;
use tokio::{sync::Mutex, time::Instant};

use super::{Retry, Wechat, WechatError};

/// The least time between two forced refreshes.
pub const MIN_FORCE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a failed fetch answers for the fetches after it.
pub const FAILURE_HOLD: Duration = Duration::from_secs(5);
/// The most a token is refreshed before its `expires_in` runs out.
const MAX_MARGIN: Duration = Duration::from_secs(300);

pub struct TokenCache {
    state: Mutex<State>,
    min_force_interval: Duration,
}

#[derive(Default)]
struct State {
    current: Option<Token>,
    last_forced: Option<Instant>,
    last_failure: Option<(Instant, WechatError)>,
}

struct Token {
    value: Arc<str>,
    refresh_at: Instant,
}

impl State {
    /// The cached token while it is fresh, unless it is `rejected`.
    fn fresh(&self, rejected: Option<&str>) -> Option<Arc<str>> {
        self.current
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at && Some(&*t.value) != rejected)
            .map(|t| t.value.clone())
    }
}

#[derive(Deserialize)]
struct Answer {
    access_token: String,
    expires_in: u64,
}

impl TokenCache {
    pub fn new(min_force_interval: Duration) -> TokenCache {
        TokenCache {
            state: Mutex::new(State::default()),
            min_force_interval,
        }
    }
}

impl Wechat {
    /// A valid access token: the cached one, or a fresh one (single flight).
    pub(super) async fn access_token(&self) -> Result<Arc<str>, WechatError> {
        let mut state = self.tokens.state.lock().await;
        match state.fresh(None) {
            Some(token) => Ok(token),
            None => self.fetch_token(&mut state, false).await,
        }
    }

    /// A token to use instead of `rejected`, which WeChat refused: another caller's newer
    /// token if there is one, else a forced refresh (or a plain one within the interval).
    pub(super) async fn token_after_rejection(
        &self,
        rejected: &str,
    ) -> Result<Arc<str>, WechatError> {
        let mut state = self.tokens.state.lock().await;
        if let Some(token) = state.fresh(Some(rejected)) {
            return Ok(token);
        }
        let force = state
            .last_forced
            .is_none_or(|at| at.elapsed() >= self.tokens.min_force_interval);
        self.fetch_token(&mut state, force).await
    }

    async fn fetch_token(&self, state: &mut State, force: bool) -> Result<Arc<str>, WechatError> {
        if let Some((at, e)) = &state.last_failure {
            if at.elapsed() < FAILURE_HOLD {
                return Err(e.clone());
            }
        }
        if force {
            state.last_forced = Some(Instant::now());
        }
        state.current = None;
        let url = self.url("/cgi-bin/stable_token");
        let body = json!({
            "grant_type": "client_credential",
            "appid": self.appid,
            "secret": self.secret.expose(),
            "force_refresh": force,
        });
        let answer: Result<Answer, _> = self
            .call(|| self.http.post(&url).json(&body), Retry::IfTransient)
            .await;
        self.metrics.wechat_token_refresh(answer.is_ok());
        let answer = answer.inspect_err(|e| {
            tracing::warn!("WeChat access token fetch failed: {e}");
            state.last_failure = Some((Instant::now(), e.clone()));
        })?;
        state.last_failure = None;
        let lifetime = Duration::from_secs(answer.expires_in);
        let margin = (lifetime / 10).min(MAX_MARGIN);
        tracing::info!(
            expires_in = answer.expires_in,
            forced = force,
            "WeChat access token refreshed"
        );
        let value: Arc<str> = answer.access_token.into();
        state.current = Some(Token {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime - margin,
        });
        Ok(value)
    }
}

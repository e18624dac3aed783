//! `upstream`: client messages of configured types are POSTed to a business backend as
//! `{"conn":..,"uid":..,"message":<the frame>}`. The backend answers
//! `{"reply":<any>?, "push":[<push request>, ..]?}`. Any failure (connection error,
//! timeout, non-2xx status, an answer that is not such JSON) answers the sender with
//! `upstream_unavailable`, and nothing else is affected. Pushes in the answer may not carry
//! `subscribe` (the WeChat fallback is a feature of `POST /api/push`).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ClientMessage, Ctx, Handler, HandlerError, Reply};
use crate::{config::UpstreamConfig, protocol::code, push::PushRequest};

pub struct Upstream {
    url: String,
    timeout: Duration,
    client: reqwest::Client,
}

#[derive(Serialize)]
struct Forward<'a> {
    conn: &'a str,
    uid: Option<&'a str>,
    message: &'a RawValue,
}

#[derive(Deserialize)]
struct Answer {
    reply: Option<Box<RawValue>>,
    #[serde(default)]
    push: Vec<PushRequest>,
}

fn unavailable(message: &str) -> HandlerError {
    HandlerError::new(code::UPSTREAM_UNAVAILABLE, message)
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, client: reqwest::Client) -> Upstream {
        Upstream {
            url: config.url.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            client,
        }
    }

    async fn call(&self, ctx: &Ctx, msg: &ClientMessage) -> Result<Answer, String> {
        let message: &RawValue = serde_json::from_str(msg.text()).map_err(|e| e.to_string())?;
        let body = Forward {
            conn: ctx.conn_id(),
            uid: ctx.uid(),
            message,
        };
        let res = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = res.status();
        if !status.is_success() {
            return Err(format!("backend answered HTTP {status}"));
        }
        let bytes = res
            .bytes()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| format!("answer is not the expected JSON: {e}"))?;
        for p in &answer.push {
            p.targets()
                .map_err(|e| format!("answer has a bad push: {e}"))?;
            if p.has_subscribe() {
                return Err("answer has a push with `subscribe`: only the HTTP API sends subscribe messages".into());
            }
        }
        Ok(answer)
    }
}

#[async_trait]
impl Handler for Upstream {
    async fn handle(&self, ctx: &Ctx, msg: &ClientMessage) -> Result<Reply, HandlerError> {
        let answer = self.call(ctx, msg).await.map_err(|why| {
            tracing::warn!(url = %self.url, r#type = msg.ty(), "upstream failed: {why}");
            unavailable("the business backend is unavailable")
        })?;
        for push in &answer.push {
            push.execute(ctx.broker())
                .await
                .map_err(|e| HandlerError::new(code::UNAVAILABLE, e.to_string()))?;
        }
        Ok(answer.reply.map_or_else(Reply::null, Reply::raw))
    }
}

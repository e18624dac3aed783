//! The offline fallback: a push to one uid that reached no live connection, and that
//! carries `"subscribe":{..}`, is sent as a WeChat subscribe message
//! (`POST cgi-bin/message/subscribe/send`). The push answer's `fallback` says how it went:
//! `"sent"`, `"failed:<errcode>"` (43101: the user has not subscribed or used the
//! subscription; 40003, 40037, 41030, 47003: bad openid, template, page or data), or
//! `"failed:network"` / `"failed:bad_answer"`. The send itself is never repeated, except
//! once with a fresh token when WeChat says the token is invalid or expired (40001/42001).

use serde::{de::IgnoredAny, Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Retry, Wechat, WechatError};
use crate::metrics::FALLBACK_FAILURES;

/// `"subscribe"` in a push: the template message to send when the uid is offline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    template_id: String,
    page: Option<String>,
    data: Box<RawValue>,
    miniprogram_state: Option<String>,
    lang: Option<String>,
}

/// The body WeChat expects.
#[derive(Serialize)]
struct Message<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<&'a str>,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<&'a str>,
}

impl Subscribe {
    /// Checks what WeChat would refuse anyway, before anything is pushed.
    pub fn validate(&self) -> Result<(), String> {
        if self.template_id.is_empty() || self.template_id.len() > 128 {
            return Err("`subscribe.template_id` must be 1 to 128 characters".into());
        }
        if !self.data.get().trim_start().starts_with('{') {
            return Err("`subscribe.data` must be an object".into());
        }
        if let Some(state) = &self.miniprogram_state {
            if !["developer", "trial", "formal"].contains(&state.as_str()) {
                return Err(
                    "`subscribe.miniprogram_state` must be developer, trial or formal".into(),
                );
            }
        }
        if let Some(lang) = &self.lang {
            if !["zh_CN", "en_US", "zh_HK", "zh_TW"].contains(&lang.as_str()) {
                return Err("`subscribe.lang` must be zh_CN, en_US, zh_HK or zh_TW".into());
            }
        }
        Ok(())
    }
}

impl Wechat {
    /// Sends `subscribe` to `uid` and answers the push's `fallback` value.
    pub async fn fallback(&self, uid: &str, subscribe: &Subscribe) -> String {
        let outcome = self.send_subscribe(uid, subscribe).await;
        let reason = match &outcome {
            Ok(()) => {
                self.metrics.wechat_fallback(None);
                return "sent".into();
            }
            Err(WechatError::Api { errcode, .. }) => errcode.to_string(),
            Err(WechatError::Unavailable(_)) => "network".into(),
            Err(WechatError::BadAnswer(_)) => "bad_answer".into(),
        };
        if let Err(e) = outcome {
            tracing::info!(uid, "subscribe-message fallback failed: {e}");
        }
        let label = if FALLBACK_FAILURES.contains(&reason.as_str()) {
            reason.as_str()
        } else {
            "other"
        };
        self.metrics.wechat_fallback(Some(label));
        format!("failed:{reason}")
    }

    async fn send_subscribe(&self, uid: &str, s: &Subscribe) -> Result<(), WechatError> {
        let message = Message {
            touser: uid,
            template_id: &s.template_id,
            page: s.page.as_deref(),
            data: &s.data,
            miniprogram_state: s.miniprogram_state.as_deref(),
            lang: s.lang.as_deref(),
        };
        let token = self.access_token().await?;
        match self.post_subscribe(&token, &message).await {
            Err(WechatError::Api {
                errcode: 40001 | 42001,
                ..
            }) => {
                let token = self.token_after_rejection(&token).await?;
                self.post_subscribe(&token, &message).await
            }
            other => other,
        }
    }

    async fn post_subscribe(&self, token: &str, message: &Message<'_>) -> Result<(), WechatError> {
        let url = self.url("/cgi-bin/message/subscribe/send");
        let _: IgnoredAny = self
            .call(
                || {
                    self.http
                        .post(&url)
                        .query(&[("access_token", token)])
                        .json(message)
                },
                Retry::Never,
            )
            .await?;
        Ok(())
    }
}

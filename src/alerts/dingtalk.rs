//! The DingTalk group robot: a markdown message POSTed to the webhook URL, signed when a
//! secret is configured (`timestamp` in ms and `sign` = Base64 of HMAC-SHA256 over
//! `timestamp + "\n" + secret` keyed with the secret, both added to the URL's query).
//! DingTalk answers `{"errcode":0,"errmsg":"ok"}`; any other errcode is a failure.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::{
    config::{DingtalkConfig, Secret},
    http::describe,
    protocol::now_ms,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// DingTalk's signature for `timestamp_ms` (Base64, before URL encoding).
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub struct Robot {
    http: reqwest::Client,
    webhook: reqwest::Url,
    secret: Option<Secret>,
}

#[derive(Deserialize)]
struct Answer {
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

impl Robot {
    /// The robot of `config`, or `None` without a webhook (validated to be a URL).
    pub fn new(config: &DingtalkConfig) -> Option<Robot> {
        Some(Robot {
            http: crate::http::client(),
            webhook: reqwest::Url::parse(config.webhook.as_ref()?.expose()).ok()?,
            secret: config.secret.clone(),
        })
    }

    /// Sends one markdown message. The error never contains the URL or the secret.
    pub async fn send(&self, title: &str, text: &str) -> Result<(), String> {
        let mut url = self.webhook.clone();
        if let Some(secret) = &self.secret {
            let ts = now_ms();
            url.query_pairs_mut()
                .append_pair("timestamp", &ts.to_string())
                .append_pair("sign", &sign(secret.expose(), ts));
        }
        let body = json!({ "msgtype": "markdown", "markdown": { "title": title, "text": text } });
        let res = self
            .http
            .post(url)
            .timeout(TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = res.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let answer: Answer = res
            .json()
            .await
            .map_err(|_| "the answer is not DingTalk's JSON".to_string())?;
        match answer.errcode {
            0 => Ok(()),
            code => Err(format!("errcode {code}: {}", answer.errmsg)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_value() {
        // printf '1700000000000\nSECtest' | openssl dgst -sha256 -hmac SECtest -binary | base64
        assert_eq!(
            super::sign("SECtest", 1_700_000_000_000),
            "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g="
        );
    }
}

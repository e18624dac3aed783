//! `/api/login`: a `wx.login` code exchanged for the user's openid at WeChat's
//! `GET sns/jscode2session`. Only the openid is kept: `session_key` (and `unionid`) are
//! never decoded, stored, logged or returned. The route signs the openid into a ticket.

use std::net::IpAddr;

use actix_web::http::StatusCode;
use serde::Deserialize;

use super::{Retry, Wechat, WechatError};
use crate::auth::valid_uid;

/// The longest `code` accepted (WeChat's are 32 characters).
pub const MAX_CODE_LEN: usize = 128;

/// Whether `code` can be a `wx.login` code: 1 to [`MAX_CODE_LEN`] visible ASCII characters.
pub fn valid_code(code: &str) -> bool {
    !code.is_empty() && code.len() <= MAX_CODE_LEN && code.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Deserialize)]
struct Session {
    openid: String,
}

impl Wechat {
    /// Takes a token from `client`'s `/api/login` bucket (`wechat.login_per_min`).
    pub fn login_allowed(&self, client: IpAddr) -> bool {
        self.login_limit.take(client)
    }

    /// Exchanges a `wx.login` code for the user's openid, checked to be a valid uid.
    pub async fn login(&self, code: &str) -> Result<String, WechatError> {
        let url = self.url("/sns/jscode2session");
        let session: Session = self
            .call(
                || {
                    self.http.get(&url).query(&[
                        ("appid", self.appid.as_str()),
                        ("secret", self.secret.expose()),
                        ("js_code", code),
                        ("grant_type", "authorization_code"),
                    ])
                },
                Retry::IfNotSent,
            )
            .await?;
        if !valid_uid(&session.openid) {
            return Err(WechatError::BadAnswer(
                "the openid is not a valid uid (1 to 64 characters from [A-Za-z0-9_.-])".into(),
            ));
        }
        Ok(session.openid)
    }
}

impl WechatError {
    /// The `/api/login` answer for this failure: HTTP status and error code.
    pub fn login_status(&self) -> (StatusCode, &'static str) {
        match self {
            WechatError::Api { errcode, .. } => match errcode {
                // invalid code; code already used
                40029 | 40163 => (StatusCode::UNAUTHORIZED, "wechat_invalid_code"),
                45011 => (StatusCode::TOO_MANY_REQUESTS, "wechat_rate_limited"),
                40226 => (StatusCode::FORBIDDEN, "wechat_risky_user"),
                _ => (StatusCode::BAD_GATEWAY, "wechat_error"),
            },
            WechatError::Unavailable(_) => (StatusCode::BAD_GATEWAY, "wechat_unavailable"),
            WechatError::BadAnswer(_) => (StatusCode::BAD_GATEWAY, "wechat_bad_answer"),
        }
    }

    /// WeChat's errcode, when it gave one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WechatError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_bounded_visible_ascii() {
        assert!(valid_code("0a3Xyz-_=+/"));
        assert!(!valid_code(""));
        assert!(!valid_code("a b"));
        assert!(!valid_code(&"a".repeat(MAX_CODE_LEN + 1)));
        assert!(!valid_code("é"));
    }

    #[test]
    fn errcodes_map_to_statuses() {
        let api = |errcode| WechatError::Api {
            errcode,
            errmsg: String::new(),
        };
        assert_eq!(api(40029).login_status().0, StatusCode::UNAUTHORIZED);
        assert_eq!(api(40163).login_status().0, StatusCode::UNAUTHORIZED);
        assert_eq!(api(45011).login_status().0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(api(40226).login_status().0, StatusCode::FORBIDDEN);
        assert_eq!(api(-1).login_status().0, StatusCode::BAD_GATEWAY);
    }
}

//! A push request as backends write it (`POST /api/push`, batch items, upstream answers):
//! exactly one target plus `data`, validated here once for every entry point. A single-uid
//! push may carry `subscribe`, the WeChat subscribe message the API sends when the uid has
//! no live connection (see [`crate::wechat`]).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    auth::valid_uid,
    broker::{Broker, BrokerError, Published},
    hub::Target,
    protocol::valid_group,
    wechat::Subscribe,
};

/// `{"uid"|"uids"|"group"|"conn"|"all": .., "data": .., "store"?: bool, "subscribe"?: {..}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    uid: Option<String>,
    uids: Option<Vec<String>>,
    group: Option<String>,
    conn: Option<String>,
    all: Option<bool>,
    data: Box<RawValue>,
    #[serde(default = "stored_by_default")]
    store: bool,
    subscribe: Option<Subscribe>,
}

fn stored_by_default() -> bool {
    true
}

/// Why a push request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl PushRequest {
    /// The validated targets: one, or one per uid for `"uids"`.
    pub fn targets(&self) -> Result<Vec<Target>, PushError> {
        let given = [
            self.uid.is_some(),
            self.uids.is_some(),
            self.group.is_some(),
            self.conn.is_some(),
            self.all.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(invalid(
                "give exactly one target: uid, uids, group, conn or all",
            ));
        }
        if let Some(subscribe) = &self.subscribe {
            if self.uid.is_none() {
                return Err(invalid("`subscribe` needs a single `uid` target"));
            }
            subscribe.validate().map_err(invalid)?;
        }
        let check_uid = |u: &String| {
            if valid_uid(u) {
                Ok(Target::Uid(u.clone()))
            } else {
                Err(invalid(format!(
                    "invalid uid {u:?}: 1 to 64 characters from [A-Za-z0-9_.-]"
                )))
            }
        };
        if let Some(u) = &self.uid {
            return Ok(vec![check_uid(u)?]);
        }
        if let Some(list) = &self.uids {
            let mut list: Vec<&String> = list.iter().collect();
            list.sort();
            list.dedup();
            return list.into_iter().map(check_uid).collect();
        }
        if let Some(g) = &self.group {
            if !valid_group(g) {
                return Err(invalid(format!(
                    "invalid group {g:?}: 1 to 64 characters from [A-Za-z0-9_.:-]"
                )));
            }
            return Ok(vec![Target::Group(g.clone())]);
        }
        if let Some(c) = &self.conn {
            if c.is_empty() || c.len() > 128 {
                return Err(invalid("invalid conn id"));
            }
            return Ok(vec![Target::Conn(c.clone())]);
        }
        match self.all {
            Some(true) => Ok(vec![Target::All]),
            _ => Err(invalid("`all` must be true")),
        }
    }

    /// Whether the push carries a `subscribe` fallback.
    pub fn has_subscribe(&self) -> bool {
        self.subscribe.is_some()
    }

    /// The uid and subscribe message of a push with a `subscribe` fallback.
    pub fn fallback(&self) -> Option<(&str, &Subscribe)> {
        Some((self.uid.as_deref()?, self.subscribe.as_ref()?))
    }

    /// Validates, then publishes. For `"uids"` the answer's `seq` is `None` and `delivered`
    /// is the sum over every uid.
    pub async fn execute(&self, broker: &dyn Broker) -> Result<Published, PushError> {
        let targets = self.targets()?;
        if let [target] = targets.as_slice() {
            if self.uids.is_none() {
                return Ok(broker.publish(target, &self.data, self.store).await?);
            }
        }
        let mut delivered = 0;
        for target in &targets {
            delivered += broker
                .publish(target, &self.data, self.store)
                .await?
                .delivered;
        }
        Ok(Published {
            delivered,
            seq: None,
        })
    }
}

fn invalid(msg: impl Into<String>) -> PushError {
    PushError::Invalid(msg.into())
}

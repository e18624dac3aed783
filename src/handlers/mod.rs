//! Business handlers: the [`Handler`] trait that Rust code implements, the context a
//! handler sees, and the registry that routes a client message's `type` to one handler.
//!
//! Built in: [`echo`], [`chat`] and [`upstream`] (forwarding to a business backend over
//! HTTP). A pattern is an exact type or a prefix ending in `.*`; the first match wins;
//! the protocol's own types (`ping`, `join`, …, `echo`, `chat`) cannot be claimed.

pub mod chat;
pub mod echo;
pub mod upstream;

use std::{borrow::Cow, sync::Arc};

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    broker::{Broker, BrokerError, Published},
    config::{Config, BUILTIN_TYPES},
    hub::{Conn, Target},
    protocol::{code, FrameError},
};

pub use crate::protocol::ClientMessage;

/// The `data` of a `reply` frame: any JSON, kept as text.
#[derive(Debug)]
pub struct Reply(Box<RawValue>);

impl Reply {
    pub fn raw(raw: Box<RawValue>) -> Reply {
        Reply(raw)
    }
    pub fn null() -> Reply {
        Reply(RawValue::from_string("null".into()).expect("null is JSON"))
    }
    /// Serialises any value as the reply's data.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Reply, HandlerError> {
        serde_json::value::to_raw_value(value)
            .map(Reply)
            .map_err(|e| HandlerError::new("internal", format!("reply is not JSON: {e}")))
    }
    pub fn get(&self) -> &RawValue {
        &self.0
    }
}

impl From<serde_json::Value> for Reply {
    fn from(v: serde_json::Value) -> Reply {
        Reply(serde_json::value::to_raw_value(&v).expect("a Value is always JSON"))
    }
}

/// An `error` frame answering the message: a snake_case code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub code: Cow<'static, str>,
    pub message: String,
}

impl HandlerError {
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        HandlerError {
            code: code.into(),
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(code::BAD_REQUEST, message)
    }
}

impl From<FrameError> for HandlerError {
    fn from(e: FrameError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<BrokerError> for HandlerError {
    fn from(e: BrokerError) -> Self {
        Self::new(code::UNAVAILABLE, e.to_string())
    }
}

/// What a handler knows about the sender, and how it pushes to anyone.
pub struct Ctx {
    conn: Arc<Conn>,
    broker: Arc<dyn Broker>,
}

impl Ctx {
    pub(crate) fn new(conn: Arc<Conn>, broker: Arc<dyn Broker>) -> Ctx {
        Ctx { conn, broker }
    }
    /// The sender's connection id (`c:<id>` is its own stream).
    pub fn conn_id(&self) -> &str {
        self.conn.id()
    }
    /// The sender's uid, if its ticket was bound to one.
    pub fn uid(&self) -> Option<&str> {
        self.conn.uid().map(|u| &**u)
    }
    /// The groups the sender's connection belongs to.
    pub fn groups(&self) -> Vec<String> {
        self.conn.groups().iter().map(|g| g.to_string()).collect()
    }
    pub fn in_group(&self, group: &str) -> bool {
        self.conn.in_group(group)
    }
    /// Pushes `data` to `target` (stored in history, with a `seq`, except for `c:` targets).
    pub async fn push<T: Serialize + ?Sized>(
        &self,
        target: &Target,
        data: &T,
    ) -> Result<Published, HandlerError> {
        let raw = serde_json::value::to_raw_value(data)
            .map_err(|e| HandlerError::new("internal", format!("push data is not JSON: {e}")))?;
        Ok(self.broker.publish(target, &raw, true).await?)
    }
    /// The broker, for anything else (online status, groups).
    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }
}

/// A business handler: receives client messages of the types it is registered for and
/// answers with a reply (or an error), pushing to anyone through [`Ctx::push`].
///
/// Messages from one connection are handled one at a time, in order; pushes to that
/// connection keep flowing while a handler awaits.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, ctx: &Ctx, msg: &ClientMessage) -> Result<Reply, HandlerError>;
}

/// Checks a type pattern: `[A-Za-z0-9_.:-]+`, optionally ending in `.*`, not built in.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    let name = pattern.strip_suffix(".*").unwrap_or(pattern);
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
        return Err(format!(
            "{pattern:?} is not a type pattern (an exact type, or a prefix ending in `.*`)"
        ));
    }
    if BUILTIN_TYPES.contains(&pattern) {
        return Err(format!("{pattern:?} is built in and cannot be claimed"));
    }
    Ok(())
}

fn matches(pattern: &str, ty: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => ty.len() > prefix.len() && ty.starts_with(prefix),
        None => pattern == ty,
    }
}

/// Routes message types to handlers: first registered match wins.
#[derive(Default, Clone)]
pub struct Handlers {
    entries: Vec<(String, Arc<dyn Handler>)>,
}

impl Handlers {
    /// The built-in `echo` and `chat`, then the config's `[[upstream]]` entries in order.
    pub fn from_config(config: &Config) -> Handlers {
        let mut h = Handlers::default();
        h.entries.push(("echo".into(), Arc::new(echo::Echo)));
        h.entries.push(("chat".into(), Arc::new(chat::Chat)));
        let client = crate::http::client();
        for up in &config.upstream {
            let handler: Arc<dyn Handler> = Arc::new(upstream::Upstream::new(up, client.clone()));
            for pattern in &up.types {
                h.entries.push((pattern.clone(), handler.clone()));
            }
        }
        h
    }

    /// Adds a Rust handler for `pattern` after those already registered.
    pub fn register(&mut self, pattern: &str, handler: impl Handler) -> Result<(), String> {
        validate_pattern(pattern)?;
        self.entries.push((pattern.to_string(), Arc::new(handler)));
        Ok(())
    }

    pub fn find(&self, ty: &str) -> Option<&Arc<dyn Handler>> {
        self.entries
            .iter()
            .find(|(p, _)| matches(p, ty))
            .map(|(_, h)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_types_and_dotted_prefixes() {
        assert!(matches("order.*", "order.create"));
        assert!(matches("order.*", "order.a.b"));
        assert!(!matches("order.*", "order"));
        assert!(!matches("order.*", "orders.x"));
        assert!(matches("game", "game"));
        assert!(!matches("game", "game.x"));
    }

    #[test]
    fn builtins_and_bad_patterns_are_refused() {
        assert!(validate_pattern("order.*").is_ok());
        assert!(validate_pattern("echo").is_err());
        assert!(validate_pattern("*").is_err());
        assert!(validate_pattern("a b").is_err());
        assert!(validate_pattern(".*").is_err());
    }
}

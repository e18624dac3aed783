//! Configuration: one TOML file, overridden key by key by `MINIPUSH_<SECTION>_<KEY>`
//! environment variables, then validated. Every error names the key it is about.
//!
//! Secrets (`auth.tokens`, `api.keys`, `wechat.secret`, `alerts.dingtalk.webhook` and
//! `alerts.dingtalk.secret`) are held in [`Secret`], whose `Debug` output is redacted, so
//! a config can be logged without leaking them. Nested tables are overridden the same way:
//! `MINIPUSH_ALERTS_DINGTALK_WEBHOOK` sets `alerts.dingtalk.webhook`.

use std::{fmt, net::SocketAddr, path::Path};

use serde::Deserialize;

/// A secret string: compared by the code that needs it, never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret's text. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub api: ApiConfig,
    pub heartbeat: HeartbeatConfig,
    pub limits: LimitsConfig,
    pub groups: GroupsConfig,
    pub history: HistoryConfig,
    pub broker: BrokerConfig,
    pub wechat: WechatConfig,
    pub alerts: AlertsConfig,
    pub legacy: LegacyConfig,
    pub upstream: Vec<UpstreamConfig>,
    /// Not a config key: set by `serve --dev` (demo page on, generated secrets allowed).
    #[serde(skip)]
    pub dev: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `None` means the default: `0.0.0.0:9501`, or `127.0.0.1:9501` with `--dev`.
    pub listen: Option<SocketAddr>,
    pub ws_path: String,
    pub node_id: Option<String>,
    pub shutdown_grace_secs: u64,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: None,
            ws_path: "/ws".into(),
            node_id: None,
            shutdown_grace_secs: 10,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<Secret>,
    pub max_skew_secs: u64,
    pub allow_client_bind: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            max_skew_secs: 300,
            allow_client_bind: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub keys: Vec<Secret>,
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            max_body_bytes: 1_048_576,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    pub interval_secs: u64,
    pub timeout_secs: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval_secs: 25,
            timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_conns_per_uid: usize,
    pub max_frame_bytes: usize,
    pub client_msgs_per_sec: u32,
    pub outbound_queue: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_conns_per_uid: 5,
            max_frame_bytes: 65_536,
            client_msgs_per_sec: 20,
            outbound_queue: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    pub client_join: bool,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self { client_join: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    pub size: usize,
    pub ttl_secs: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: 100,
            ttl_secs: 86_400,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub url: Option<Secret>,
}

/// `[wechat]`: the mini-program's credentials and WeChat's server API (`/api/login`, the
/// subscribe-message fallback).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatConfig {
    pub appid: Option<String>,
    pub secret: Option<Secret>,
    pub api_base: String,
    /// Time limit of one call to WeChat.
    pub timeout_ms: u64,
    /// `/api/login` calls one client address may make a minute (also the burst size).
    pub login_per_min: u32,
    /// A header naming the client address (`X-Real-IP`, or `X-Forwarded-For`, whose last
    /// entry is used), set by a reverse proxy you run. Unset: the TCP peer address.
    pub login_ip_header: Option<String>,
}

impl Default for WechatConfig {
    fn default() -> Self {
        Self {
            appid: None,
            secret: None,
            api_base: "https://api.weixin.qq.com".into(),
            timeout_ms: 5000,
            login_per_min: 60,
            login_ip_header: None,
        }
    }
}

impl WechatConfig {
    /// The appid and AppSecret when both are set: WeChat features are on.
    pub fn credentials(&self) -> Option<(&str, &Secret)> {
        Some((self.appid.as_deref()?, self.secret.as_ref()?))
    }
}

/// `[alerts]`: operator alerts sent to a DingTalk group robot.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Alert when this node holds more connections than this (unset: no such alert).
    pub connections_over: Option<u64>,
    /// Alert when more handshakes than this fail within a minute (unset: no such alert).
    pub handshake_failures_per_min: Option<u64>,
    pub dingtalk: DingtalkConfig,
}

/// `[alerts.dingtalk]`: the group robot. Both values carry credentials.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DingtalkConfig {
    /// `https://oapi.dingtalk.com/robot/send?access_token=...`; unset: alerts are off.
    pub webhook: Option<Secret>,
    /// The robot's signing secret (`SEC...`), when its security setting is "sign".
    pub secret: Option<Secret>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LegacyConfig {
    pub text_listen: Option<SocketAddr>,
}

/// One `[[upstream]]` entry: client message types forwarded to a business backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub types: Vec<String>,
    pub url: String,
    #[serde(default = "default_upstream_timeout")]
    pub timeout_ms: u64,
}

fn default_upstream_timeout() -> u64 {
    3000
}

/// A configuration that could not be loaded; the message names the key or variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// How an environment variable's text becomes a TOML value.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    List,
}

/// Every key that `MINIPUSH_<SECTION>_<KEY>` may override (`[[upstream]]` is file-only).
/// A nested table's section is dotted: `alerts.dingtalk` is `MINIPUSH_ALERTS_DINGTALK_*`.
const ENV_KEYS: &[(&str, &str, Kind)] = &[
    ("server", "listen", Kind::Str),
    ("server", "ws_path", Kind::Str),
    ("server", "node_id", Kind::Str),
    ("server", "shutdown_grace_secs", Kind::Int),
    ("server", "tls_cert", Kind::Str),
    ("server", "tls_key", Kind::Str),
    ("auth", "tokens", Kind::List),
    ("auth", "max_skew_secs", Kind::Int),
    ("auth", "allow_client_bind", Kind::Bool),
    ("api", "keys", Kind::List),
    ("api", "max_body_bytes", Kind::Int),
    ("heartbeat", "interval_secs", Kind::Int),
    ("heartbeat", "timeout_secs", Kind::Int),
    ("limits", "max_connections", Kind::Int),
    ("limits", "max_conns_per_uid", Kind::Int),
    ("limits", "max_frame_bytes", Kind::Int),
    ("limits", "client_msgs_per_sec", Kind::Int),
    ("limits", "outbound_queue", Kind::Int),
    ("groups", "client_join", Kind::Bool),
    ("history", "size", Kind::Int),
    ("history", "ttl_secs", Kind::Int),
    ("broker", "url", Kind::Str),
    ("wechat", "appid", Kind::Str),
    ("wechat", "secret", Kind::Str),
    ("wechat", "api_base", Kind::Str),
    ("wechat", "timeout_ms", Kind::Int),
    ("wechat", "login_per_min", Kind::Int),
    ("wechat", "login_ip_header", Kind::Str),
    ("alerts", "connections_over", Kind::Int),
    ("alerts", "handshake_failures_per_min", Kind::Int),
    ("alerts.dingtalk", "webhook", Kind::Str),
    ("alerts.dingtalk", "secret", Kind::Str),
    ("legacy", "text_listen", Kind::Str),
];

/// Types served by minipush itself; no `[[upstream]]` pattern or Rust handler may claim them.
pub const BUILTIN_TYPES: &[&str] = &["ping", "join", "leave", "resume", "bind", "echo", "chat"];

impl Config {
    /// Reads `path` (if any), applies `vars` (normally `std::env::vars()`), validates.
    pub fn load(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
        dev: bool,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| err(format!("cannot read config file {}: {e}", p.display())))?,
            None => String::new(),
        };
        Self::from_toml(&text, vars, dev)
    }

    /// Parses TOML text, applies environment overrides, validates.
    pub fn from_toml(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        dev: bool,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err(format!("invalid TOML: {e}")))?;
        apply_env(&mut table, vars)?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let msg = inner.message().trim().to_string();
                if path == "." || path.is_empty() {
                    err(format!("invalid configuration: {msg}"))
                } else {
                    err(format!("invalid value for `{path}`: {msg}"))
                }
            })?;
        config.dev = dev;
        config.validate()?;
        Ok(config)
    }

    /// The address to bind, with the `--dev` default applied.
    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.unwrap_or_else(|| {
            if self.dev {
                ([127, 0, 0, 1], 9501).into()
            } else {
                ([0, 0, 0, 0], 9501).into()
            }
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.dev && self.auth.tokens.is_empty() {
            return Err(err(
                "`auth.tokens` is required (set it in the file or MINIPUSH_AUTH_TOKENS)",
            ));
        }
        if !self.dev && self.api.keys.is_empty() {
            return Err(err(
                "`api.keys` is required (set it in the file or MINIPUSH_API_KEYS)",
            ));
        }
        if self.auth.tokens.iter().any(|t| t.expose().is_empty()) {
            return Err(err("`auth.tokens` contains an empty token"));
        }
        if self.api.keys.iter().any(|k| k.expose().is_empty()) {
            return Err(err("`api.keys` contains an empty key"));
        }
        if self.api.keys.iter().any(|k| self.auth.tokens.contains(k)) {
            return Err(err(
                "`api.keys` must differ from `auth.tokens`: a client token must never open the API",
            ));
        }
        let s = &self.server;
        if !s.ws_path.starts_with('/') || s.ws_path.starts_with("/api") {
            return Err(err(
                "`server.ws_path` must start with `/` and not lie under `/api`",
            ));
        }
        if let Some(id) = &s.node_id {
            if id.is_empty() || id.len() > 64 || !id.chars().all(is_name_char) {
                return Err(err(
                    "`server.node_id` must be 1 to 64 characters from [A-Za-z0-9_.-]",
                ));
            }
        }
        match (&s.tls_cert, &s.tls_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                crate::tls::server_config(cert, key).map_err(err)?;
            }
            _ => {
                return Err(err(
                    "`server.tls_cert` and `server.tls_key` must be set together (or neither)",
                ))
            }
        }
        let positive = [
            ("heartbeat.interval_secs", self.heartbeat.interval_secs),
            ("heartbeat.timeout_secs", self.heartbeat.timeout_secs),
            ("limits.max_connections", self.limits.max_connections as u64),
            (
                "limits.max_conns_per_uid",
                self.limits.max_conns_per_uid as u64,
            ),
            ("limits.max_frame_bytes", self.limits.max_frame_bytes as u64),
            (
                "limits.client_msgs_per_sec",
                self.limits.client_msgs_per_sec as u64,
            ),
            ("limits.outbound_queue", self.limits.outbound_queue as u64),
            ("api.max_body_bytes", self.api.max_body_bytes as u64),
            ("history.ttl_secs", self.history.ttl_secs),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(err(format!("`{key}` must be greater than 0")));
        }
        if self.heartbeat.interval_secs >= self.heartbeat.timeout_secs {
            return Err(err(
                "`heartbeat.interval_secs` must be smaller than `heartbeat.timeout_secs`",
            ));
        }
        if let Some(url) = &self.broker.url {
            let scheme = url.expose().split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("redis" | "rediss")) {
                return Err(err(
                    "`broker.url` must be a redis:// or rediss:// URL (e.g. redis://:password@10.0.0.5:6379/0)",
                ));
            }
        }
        self.validate_wechat()?;
        self.validate_alerts()?;
        for (i, up) in self.upstream.iter().enumerate() {
            let key = format!("upstream[{i}]");
            if up.types.is_empty() {
                return Err(err(format!("`{key}.types` must list at least one type")));
            }
            for pattern in &up.types {
                crate::handlers::validate_pattern(pattern)
                    .map_err(|m| err(format!("`{key}.types`: {m}")))?;
            }
            check_http_url(&format!("{key}.url"), &up.url)?;
            if up.timeout_ms == 0 {
                return Err(err(format!("`{key}.timeout_ms` must be greater than 0")));
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_wechat(&self) -> Result<(), ConfigError> {
        let w = &self.wechat;
        if w.appid.is_some() != w.secret.is_some() {
            return Err(err(
                "`wechat.appid` and `wechat.secret` go together: set both or neither",
            ));
        }
        if w.appid.as_deref() == Some("")
            || w.secret.as_ref().is_some_and(|s| s.expose().is_empty())
        {
            return Err(err("`wechat.appid` and `wechat.secret` must not be empty"));
        }
        check_http_url("wechat.api_base", &w.api_base)?;
        if w.timeout_ms == 0 || w.login_per_min == 0 {
            return Err(err(
                "`wechat.timeout_ms` and `wechat.login_per_min` must be greater than 0",
            ));
        }
        if w.login_ip_header
            .as_deref()
            .is_some_and(|h| actix_web::http::header::HeaderName::from_bytes(h.as_bytes()).is_err())
        {
            return Err(err("`wechat.login_ip_header` is not a valid header name"));
        }
        Ok(())
    }

    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let a = &self.alerts;
        if a.connections_over == Some(0) || a.handshake_failures_per_min == Some(0) {
            return Err(err(
                "`alerts.connections_over` and `alerts.handshake_failures_per_min` must be greater than 0",
            ));
        }
        let Some(webhook) = &a.dingtalk.webhook else {
            if a.connections_over.is_some()
                || a.handshake_failures_per_min.is_some()
                || a.dingtalk.secret.is_some()
            {
                return Err(err(
                    "`[alerts]` is set but `alerts.dingtalk.webhook` is not (MINIPUSH_ALERTS_DINGTALK_WEBHOOK)",
                ));
            }
            return Ok(());
        };
        // The URL carries the robot's access token: the message never repeats it.
        check_http_url("alerts.dingtalk.webhook", webhook.expose())
    }
}

/// `value` must be an http:// or https:// URL; the error does not repeat the value.
fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        _ => Err(err(format!("`{key}` must be an http:// or https:// URL"))),
    }
}

/// Characters allowed in uids and node ids: `[A-Za-z0-9_.-]`.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn apply_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("MINIPUSH_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let top = rest.split('_').next().unwrap_or_default();
        if !ENV_KEYS
            .iter()
            .any(|(s, _, _)| s.split('.').next() == Some(top))
        {
            continue; // e.g. MINIPUSH_LOG: not a config key
        }
        let Some((section, key, kind)) = ENV_KEYS
            .iter()
            .find(|(s, k, _)| format!("{}_{k}", s.replace('.', "_")) == rest)
        else {
            let (section, key) = rest.split_once('_').unwrap_or((&rest, ""));
            return Err(err(format!(
                "environment variable {name} names no configuration key `{section}.{key}`"
            )));
        };
        let parsed = parse_env(&name, section, key, *kind, value)?;
        let mut target = &mut *table;
        for part in section.split('.') {
            let entry = target
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                return Err(err(format!("`{section}` must be a table")));
            };
            target = inner;
        }
        target.insert(key.to_string(), parsed);
    }
    Ok(())
}

/// An environment variable's text as the TOML value its key expects.
fn parse_env(
    name: &str,
    section: &str,
    key: &str,
    kind: Kind,
    value: String,
) -> Result<toml::Value, ConfigError> {
    Ok(match kind {
        Kind::Str => toml::Value::String(value),
        Kind::Int => toml::Value::Integer(value.trim().parse().map_err(|_| {
            err(format!(
                "invalid value for `{section}.{key}` (from {name}): expected a whole number"
            ))
        })?),
        Kind::Bool => toml::Value::Boolean(match value.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(err(format!(
                    "invalid value for `{section}.{key}` (from {name}): expected true or false"
                )))
            }
        }),
        Kind::List => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(text, vars, false)
    }

    const MIN: &str = "[auth]\ntokens = [\"t0123456789\"]\n[api]\nkeys = [\"k0123456789\"]\n";

    #[test]
    fn defaults_match_the_spec() {
        let c = load(MIN, &[]).unwrap();
        assert_eq!(c.listen_addr().to_string(), "0.0.0.0:9501");
        assert_eq!(c.server.ws_path, "/ws");
        assert_eq!(c.server.shutdown_grace_secs, 10);
        assert_eq!(c.auth.max_skew_secs, 300);
        assert!(!c.auth.allow_client_bind);
        assert_eq!(c.api.max_body_bytes, 1_048_576);
        assert_eq!(
            (c.heartbeat.interval_secs, c.heartbeat.timeout_secs),
            (25, 60)
        );
        assert_eq!(c.limits.max_connections, 100_000);
        assert_eq!(c.limits.max_conns_per_uid, 5);
        assert_eq!(c.limits.max_frame_bytes, 65_536);
        assert_eq!(c.limits.client_msgs_per_sec, 20);
        assert_eq!(c.limits.outbound_queue, 1024);
        assert!(c.groups.client_join);
        assert_eq!((c.history.size, c.history.ttl_secs), (100, 86_400));
        assert_eq!(c.wechat.api_base, "https://api.weixin.qq.com");
    }

    #[test]
    fn tokens_and_keys_are_required_without_dev() {
        let e = load("", &[]).unwrap_err().to_string();
        assert!(e.contains("auth.tokens"), "{e}");
        let dev = Config::from_toml("", Vec::new(), true).unwrap();
        assert_eq!(dev.listen_addr().to_string(), "127.0.0.1:9501");
    }

    #[test]
    fn env_overrides_replace_lists_and_parse_numbers() {
        let c = load(
            MIN,
            &[
                ("MINIPUSH_AUTH_TOKENS", " a1 , b2 ,"),
                ("MINIPUSH_LIMITS_MAX_CONNECTIONS", "7"),
                ("MINIPUSH_GROUPS_CLIENT_JOIN", "false"),
                ("MINIPUSH_LOG", "debug"),
            ],
        )
        .unwrap();
        let tokens: Vec<&str> = c.auth.tokens.iter().map(Secret::expose).collect();
        assert_eq!(tokens, ["a1", "b2"]);
        assert_eq!(c.limits.max_connections, 7);
        assert!(!c.groups.client_join);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load(&format!("{MIN}[limits]\nmax_frame_bytes = \"big\"\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("limits.max_frame_bytes"), "{e}");
        let e = load(&format!("{MIN}[limits]\nmax_frmae_bytes = 1\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("max_frmae_bytes"), "{e}");
        let e = load(MIN, &[("MINIPUSH_HEARTBEAT_TIMEOUT_SECS", "soon")]).unwrap_err();
        assert!(e.to_string().contains("heartbeat.timeout_secs"), "{e}");
        let e = load(MIN, &[("MINIPUSH_AUTH_TOKEN", "x")]).unwrap_err();
        assert!(e.to_string().contains("MINIPUSH_AUTH_TOKEN"), "{e}");
        let e = load(&format!("{MIN}[limits]\noutbound_queue = 0\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("limits.outbound_queue"), "{e}");
        let e = load(
            &format!("{MIN}[[upstream]]\ntypes = [\"echo\"]\nurl = \"http://x/\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("upstream[0].types"), "{e}");
    }

    #[test]
    fn tls_needs_both_files_and_readable_ones() {
        let e = load(&format!("{MIN}[server]\ntls_cert = \"/x.pem\"\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("must be set together"), "{e}");
        let e = load(
            MIN,
            &[
                ("MINIPUSH_SERVER_TLS_CERT", "/nonexistent/cert.pem"),
                ("MINIPUSH_SERVER_TLS_KEY", "/nonexistent/key.pem"),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("`server.tls_cert`"), "{e}");
    }

    #[test]
    fn legacy_text_listen_is_accepted() {
        let c = load(
            &format!("{MIN}[legacy]\ntext_listen = \"127.0.0.1:5678\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.legacy.text_listen, Some(([127, 0, 0, 1], 5678).into()));
    }

    #[test]
    fn api_keys_must_differ_from_tokens() {
        let e = load("[auth]\ntokens=[\"same\"]\n[api]\nkeys=[\"same\"]\n", &[]).unwrap_err();
        assert!(e.to_string().contains("api.keys"), "{e}");
    }

    #[test]
    fn nested_alert_keys_come_from_the_environment() {
        let c = load(
            &format!("{MIN}[alerts]\nconnections_over = 10\n"),
            &[
                (
                    "MINIPUSH_ALERTS_DINGTALK_WEBHOOK",
                    "https://robot.example/send?access_token=tok1",
                ),
                ("MINIPUSH_ALERTS_DINGTALK_SECRET", "SECabc"),
                ("MINIPUSH_ALERTS_HANDSHAKE_FAILURES_PER_MIN", "50"),
            ],
        )
        .unwrap();
        assert_eq!(c.alerts.connections_over, Some(10));
        assert_eq!(c.alerts.handshake_failures_per_min, Some(50));
        assert_eq!(
            c.alerts.dingtalk.secret.as_ref().unwrap().expose(),
            "SECabc"
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("tok1") && !shown.contains("SECabc"),
            "{shown}"
        );
        let e = load(MIN, &[("MINIPUSH_ALERTS_DINGTALK_HOOK", "x")]).unwrap_err();
        assert!(
            e.to_string().contains("MINIPUSH_ALERTS_DINGTALK_HOOK"),
            "{e}"
        );
        let e = load(
            MIN,
            &[("MINIPUSH_ALERTS_DINGTALK_WEBHOOK", "not a url tok2")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("alerts.dingtalk.webhook"), "{e}");
        assert!(!e.to_string().contains("tok2"), "{e}");
        let e = load(&format!("{MIN}[alerts]\nconnections_over = 10\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("alerts.dingtalk.webhook"), "{e}");
    }

    #[test]
    fn wechat_needs_appid_and_secret_together() {
        let e = load(MIN, &[("MINIPUSH_WECHAT_APPID", "wx1")]).unwrap_err();
        assert!(e.to_string().contains("wechat.secret"), "{e}");
        let c = load(
            MIN,
            &[
                ("MINIPUSH_WECHAT_APPID", "wx1"),
                ("MINIPUSH_WECHAT_SECRET", "s3"),
            ],
        )
        .unwrap();
        assert_eq!(c.wechat.credentials().unwrap().0, "wx1");
        assert_eq!((c.wechat.timeout_ms, c.wechat.login_per_min), (5000, 60));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = load(MIN, &[]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("t0123456789") && !shown.contains("k0123456789"));
    }
}

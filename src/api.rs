//! The HTTP API for backends and operators: thin routes that check the key, parse JSON,
//! call the broker (or [`crate::wechat`]) and answer JSON. Errors are
//! `{"ok":false,"error":..,"message":..}`; WeChat failures add `"errcode"`.

use std::net::IpAddr;

use actix_web::{
    dev::Payload,
    error::JsonPayloadError,
    http::{header, StatusCode},
    web, FromRequest, HttpRequest, HttpResponse, ResponseError,
};
use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};
use subtle::ConstantTimeEq;

use crate::{
    auth::{sign, valid_uid},
    broker::BrokerError,
    hub::Target,
    protocol::{now_secs, valid_group},
    push::{PushError, PushRequest},
    server::App,
    wechat::{valid_code, WechatError, MAX_CODE_LEN},
};

/// Every route of the API and the health endpoints.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/push", web::post().to(push))
        .route("/api/push/batch", web::post().to(push_batch))
        .route("/api/online/{uid}", web::get().to(online))
        .route("/api/groups/{group}/members", web::post().to(add_member))
        .route(
            "/api/groups/{group}/members/{uid}",
            web::delete().to(remove_member),
        )
        .route("/api/groups/{group}", web::get().to(group_info))
        .route("/api/kick", web::post().to(kick))
        .route("/api/stats", web::get().to(stats))
        .route("/api/time", web::get().to(time))
        .route("/api/login", web::post().to(login))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// A JSON error answer.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "ok": false, "error": code, "message": message }))
}

/// Why an API call failed; each variant is one status and error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body larger than api.max_body_bytes")]
    TooLarge,
    #[error("{0}")]
    Unavailable(String),
    #[error("too many requests from this address; try again later")]
    RateLimited,
    #[error("{0}")]
    Wechat(WechatError),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge => "too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::RateLimited => "rate_limited",
            ApiError::Wechat(e) => e.login_status().1,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Wechat(e) => e.login_status().0,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Wechat(e) = self {
            return HttpResponse::build(self.status_code()).json(json!({
                "ok": false,
                "error": self.code(),
                "errcode": e.errcode(),
                "message": self.to_string(),
            }));
        }
        let mut res = error_response(self.status_code(), self.code(), &self.to_string());
        if matches!(self, ApiError::Unauthorized) {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<PushError> for ApiError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Invalid(m) => ApiError::BadRequest(m),
            PushError::Broker(b) => b.into(),
        }
    }
}

/// JSON bodies: any content type, at most `api.max_body_bytes`, errors in our format.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(false)
        .error_handler(|err, _req| {
            match err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::TooLarge,
                JsonPayloadError::Deserialize(e) => {
                    ApiError::BadRequest(format!("invalid body: {e}"))
                }
                other => ApiError::BadRequest(other.to_string()),
            }
            .into()
        })
}

/// Unknown routes.
pub async fn not_found() -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Proof that the request carried `Authorization: Bearer <one of api.keys>`.
pub struct ApiKey;

impl FromRequest for ApiKey {
    type Error = ApiError;
    type Future = std::future::Ready<Result<ApiKey, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let app = req.app_data::<web::Data<App>>().expect("App is registered");
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = given.is_some_and(|given| {
            let mut found = subtle::Choice::from(0);
            for key in &app.config.api.keys {
                found |= key.expose().as_bytes().ct_eq(given.as_bytes());
            }
            bool::from(found)
        });
        std::future::ready(if ok {
            Ok(ApiKey)
        } else {
            Err(ApiError::Unauthorized)
        })
    }
}

type Answer = Result<HttpResponse, ApiError>;

fn ok(mut body: serde_json::Value) -> Answer {
    body["ok"] = json!(true);
    Ok(HttpResponse::Ok().json(body))
}

async fn push(_: ApiKey, app: web::Data<App>, body: web::Json<PushRequest>) -> Answer {
    ok(publish(&app, &body).await?)
}

/// Publishes one push. With `subscribe`, a push that reached no live connection is also
/// sent as a WeChat subscribe message and the answer has `"fallback"` (`null` when the uid
/// was online, so no message was needed).
async fn publish(app: &App, req: &PushRequest) -> Result<Value, ApiError> {
    if req.has_subscribe() && app.wechat.is_none() {
        return Err(ApiError::BadRequest(
            "`subscribe` needs WeChat configured (wechat.appid and wechat.secret)".into(),
        ));
    }
    let published = req.execute(&*app.broker).await?;
    let mut answer = json!({ "delivered": published.delivered, "seq": published.seq });
    if let (Some(wechat), Some((uid, subscribe))) = (&app.wechat, req.fallback()) {
        answer["fallback"] = match published.delivered {
            0 => json!(wechat.fallback(uid, subscribe).await),
            _ => Value::Null,
        };
    }
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    pushes: Vec<Box<RawValue>>,
}

/// Each item is validated and executed on its own, in order: one bad item does not fail
/// the rest. Items may carry `subscribe` like single pushes.
async fn push_batch(_: ApiKey, app: web::Data<App>, body: web::Json<Batch>) -> Answer {
    let mut results = Vec::with_capacity(body.pushes.len());
    for raw in &body.pushes {
        let outcome = match serde_json::from_str::<PushRequest>(raw.get()) {
            Ok(req) => publish(&app, &req).await,
            Err(e) => Err(ApiError::BadRequest(format!("invalid push: {e}"))),
        };
        results.push(match outcome {
            Ok(mut answer) => {
                answer["ok"] = json!(true);
                answer
            }
            Err(e) => json!({ "ok": false, "error": e.code(), "message": e.to_string() }),
        });
    }
    ok(json!({ "results": results }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    code: String,
}

/// `POST /api/login` (no API key): a `wx.login` code -> a ticket bound to the openid,
/// signed with the first of `auth.tokens`. A 404 like any unknown route unless WeChat is
/// configured; limited per client address (`wechat.login_per_min`).
async fn login(
    req: HttpRequest,
    app: web::Data<App>,
    body: Result<web::Json<Login>, actix_web::Error>,
) -> Answer {
    let Some(wechat) = &app.wechat else {
        return Ok(not_found().await);
    };
    let outcome = async {
        if let Some(ip) = client_ip(&req, wechat.login_ip_header.as_deref()) {
            if !wechat.login_allowed(ip) {
                return Err(ApiError::RateLimited);
            }
        }
        // Any unreadable body (not JSON, too large) is a 400 here.
        let code = &body.map_err(|e| ApiError::BadRequest(e.to_string()))?.code;
        if !valid_code(code) {
            return Err(ApiError::BadRequest(format!(
                "`code` must be 1 to {MAX_CODE_LEN} visible ASCII characters"
            )));
        }
        let token = app.config.auth.tokens.first().ok_or_else(|| {
            ApiError::Unavailable("no auth.tokens to sign the ticket with".into())
        })?;
        let uid = wechat.login(code).await.map_err(ApiError::Wechat)?;
        let ts = now_secs();
        let sig = sign(token.expose(), ts, Some(&uid));
        Ok(json!({ "ok": true, "uid": uid, "ts": ts, "sig": sig }))
    }
    .await;
    match outcome {
        Ok(ticket) => {
            app.metrics.wechat_login("ok");
            Ok(HttpResponse::Ok().json(ticket))
        }
        Err(e) => {
            let label = match &e {
                ApiError::Wechat(why) => {
                    tracing::info!("login failed: {why}");
                    why.login_status().1
                }
                ApiError::RateLimited => "rate_limited",
                ApiError::Unavailable(_) => "wechat_unavailable",
                _ => "bad_request",
            };
            app.metrics.wechat_login(label);
            Err(e)
        }
    }
}

/// The address a login is limited by: the TCP peer, or the header a trusted reverse
/// proxy sets (`wechat.login_ip_header`; for `X-Forwarded-For`, its last entry).
fn client_ip(req: &HttpRequest, header: Option<&str>) -> Option<IpAddr> {
    let from_header = header
        .and_then(|h| req.headers().get(h))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok());
    from_header.or_else(|| req.peer_addr().map(|a| a.ip()))
}

fn check_uid(uid: &str) -> Result<(), ApiError> {
    if valid_uid(uid) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "invalid uid: 1 to 64 characters from [A-Za-z0-9_.-]".into(),
        ))
    }
}

fn check_group(group: &str) -> Result<(), ApiError> {
    if valid_group(group) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "invalid group: 1 to 64 characters from [A-Za-z0-9_.:-]".into(),
        ))
    }
}

async fn online(_: ApiKey, app: web::Data<App>, uid: web::Path<String>) -> Answer {
    check_uid(&uid)?;
    let conns = app.broker.online(&uid).await?;
    ok(json!({ "uid": *uid, "online": conns > 0, "conns": conns }))
}

/// `{"uid":..}` or `{"conn":..}`: exactly one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Member {
    uid: Option<String>,
    conn: Option<String>,
}

async fn add_member(
    _: ApiKey,
    app: web::Data<App>,
    group: web::Path<String>,
    body: web::Json<Member>,
) -> Answer {
    check_group(&group)?;
    match (&body.uid, &body.conn) {
        (Some(uid), None) => {
            check_uid(uid)?;
            app.broker.add_uid_to_group(&group, uid).await?;
        }
        (None, Some(conn)) => {
            if !app.broker.add_conn_to_group(&group, conn).await? {
                return Err(ApiError::NotFound(format!("no live connection {conn:?}")));
            }
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of uid or conn".into(),
            ))
        }
    }
    ok(json!({ "group": *group }))
}

async fn remove_member(
    _: ApiKey,
    app: web::Data<App>,
    path: web::Path<(String, String)>,
) -> Answer {
    let (group, uid) = path.into_inner();
    check_group(&group)?;
    check_uid(&uid)?;
    app.broker.remove_uid_from_group(&group, &uid).await?;
    ok(json!({ "group": group, "uid": uid }))
}

async fn group_info(_: ApiKey, app: web::Data<App>, group: web::Path<String>) -> Answer {
    check_group(&group)?;
    let info = app.broker.group_info(&group).await?;
    ok(json!({ "group": *group, "conns": info.conns, "uids": info.uids }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Kick {
    uid: Option<String>,
    conn: Option<String>,
    reason: Option<String>,
}

async fn kick(_: ApiKey, app: web::Data<App>, body: web::Json<Kick>) -> Answer {
    let target = match (&body.uid, &body.conn) {
        (Some(uid), None) => {
            check_uid(uid)?;
            Target::Uid(uid.clone())
        }
        (None, Some(conn)) => Target::Conn(conn.clone()),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of uid or conn".into(),
            ))
        }
    };
    // A close reason must fit in a control frame (125 bytes, 2 for the code).
    let mut reason = body.reason.clone().unwrap_or_else(|| "kicked".into());
    while reason.len() > 120 {
        reason.pop();
    }
    let kicked = app.broker.kick(&target, &reason).await?;
    ok(json!({ "kicked": kicked }))
}

/// Per node (every live node of the cluster, this one first) and summed.
async fn stats(_: ApiKey, app: web::Data<App>) -> Answer {
    let nodes = match app.broker.nodes().await? {
        Some(nodes) => nodes,
        None => vec![crate::metrics::node_stats(
            &app.node_id,
            &app.hub,
            &app.metrics,
        )],
    };
    let mut total = serde_json::Map::new();
    for node in &nodes {
        for (key, value) in node.as_object().into_iter().flatten() {
            if let Some(n) = value.as_u64() {
                let sum = total.get(key).and_then(|v| v.as_u64()).unwrap_or(0) + n;
                total.insert(key.clone(), sum.into());
            }
        }
    }
    ok(json!({ "nodes": nodes, "total": total }))
}

async fn time() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "time": now_secs() }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true }))
}

async fn readyz(app: web::Data<App>) -> HttpResponse {
    if app.broker.ready().await {
        HttpResponse::Ok().json(json!({ "ok": true }))
    } else {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the broker is unreachable",
        )
    }
}

async fn metrics(app: web::Data<App>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(app.metrics.render())
}

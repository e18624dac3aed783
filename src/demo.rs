//! The browser demo, served only by `serve --dev`: the page at `/demo`, the same client
//! library the mini-program uses at `/demo/minipush.js`, and `/demo/ticket`, which signs
//! tickets with the dev token so the page needs no backend. Never enabled in production.

use actix_web::{http::StatusCode, web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::{
    api::error_response,
    auth::{sign, valid_uid},
    protocol::now_secs,
    server::App,
};

const PAGE: &str = include_str!("demo/index.html");
const CLIENT: &str = include_str!("../miniprogram-demo/utils/minipush.js");

/// The demo routes (registered only in dev mode).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/demo", web::get().to(page))
        .route("/demo/", web::get().to(page))
        .route("/demo/minipush.js", web::get().to(client))
        .route("/demo/ticket", web::get().to(ticket));
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

async fn client() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(CLIENT)
}

#[derive(Deserialize)]
struct TicketQuery {
    uid: Option<String>,
}

/// `GET /demo/ticket?uid=U` -> `{"uid":U|null,"ts":..,"sig":..}`, signed with the first token.
async fn ticket(app: web::Data<App>, q: web::Query<TicketQuery>) -> HttpResponse {
    let uid = q.uid.as_deref().filter(|u| !u.is_empty());
    if uid.is_some_and(|u| !valid_uid(u)) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid uid: 1 to 64 characters from [A-Za-z0-9_.-]",
        );
    }
    let Some(token) = app.config.auth.tokens.first() else {
        return error_response(StatusCode::NOT_FOUND, "not_found", "no token configured");
    };
    let ts = now_secs();
    HttpResponse::Ok().json(json!({ "uid": uid, "ts": ts, "sig": sign(token.expose(), ts, uid) }))
}

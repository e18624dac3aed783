//! What a decoded client message does: the protocol's own types (`join`, `leave`,
//! `resume`, `bind`) and the routing of every other type to a business handler. Each
//! message gets exactly one answer, a `reply` or an `error`, queued to the connection.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::json;

use crate::{
    auth::valid_uid,
    handlers::{Ctx, HandlerError},
    hub::Conn,
    protocol::{self, code, valid_group, ClientMessage, Frame},
    server::App,
};

type Answer = Result<Frame, HandlerError>;

/// Handles one message and queues its answer.
pub async fn handle(app: Arc<App>, conn: Arc<Conn>, msg: ClientMessage) {
    let answer = match msg.ty() {
        "join" | "leave" => membership(&app, &conn, &msg).await,
        "resume" => resume(&app, &conn, &msg).await,
        "bind" => bind(&app, &conn, &msg).await,
        ty => match app.handlers.find(ty) {
            Some(handler) => {
                let ctx = Ctx::new(conn.clone(), app.broker.clone());
                handler
                    .handle(&ctx, &msg)
                    .await
                    .map(|reply| protocol::reply(msg.id(), reply.get()))
            }
            None => Err(HandlerError::new(
                code::UNKNOWN_TYPE,
                format!("no handler for type {ty:?}"),
            )),
        },
    };
    let frame = answer.unwrap_or_else(|e| protocol::error(msg.id(), &e.code, &e.message));
    conn.send(&frame);
}

fn reply_json(msg: &ClientMessage, value: serde_json::Value) -> Frame {
    let raw = serde_json::value::to_raw_value(&value).expect("a Value is always JSON");
    protocol::reply(msg.id(), &raw)
}

async fn membership(app: &App, conn: &Arc<Conn>, msg: &ClientMessage) -> Answer {
    let group: String = msg.field("group")?;
    if !valid_group(&group) {
        return Err(msg.bad_request("invalid group name").into());
    }
    if msg.ty() == "join" {
        if !app.config.groups.client_join {
            return Err(HandlerError::new(
                code::FORBIDDEN,
                "clients may not join groups on this server",
            ));
        }
        let seq = app.broker.join(conn, &group).await?;
        Ok(reply_json(msg, json!({ "joined": group, "seq": seq })))
    } else {
        app.broker.leave(conn, &group).await?;
        Ok(reply_json(msg, json!({ "left": group })))
    }
}

async fn resume(app: &App, conn: &Arc<Conn>, msg: &ClientMessage) -> Answer {
    let streams: BTreeMap<String, u64> = msg.field("streams")?;
    let epoch: String = msg.field("epoch")?;
    let same_epoch = epoch == app.broker.epoch();
    let (mut resumed, mut complete) = (0, same_epoch);
    for (stream, after) in streams {
        if !may_read(conn, &stream) {
            continue;
        }
        // Across epochs the client's numbers mean nothing here: replay all we have.
        let after = if same_epoch { after } else { 0 };
        let r = app.broker.resume(conn, &stream, after).await?;
        resumed += r.sent;
        complete &= r.complete;
    }
    conn.stop_recording();
    Ok(reply_json(
        msg,
        json!({ "resumed": resumed, "complete": complete }),
    ))
}

/// Whether `conn` may read `stream`: its own uid stream, its groups, and `all`.
fn may_read(conn: &Conn, stream: &str) -> bool {
    if stream == "all" {
        return true;
    }
    if let Some(uid) = stream.strip_prefix("u:") {
        return conn.uid().is_some_and(|u| &**u == uid);
    }
    stream.strip_prefix("g:").is_some_and(|g| conn.in_group(g))
}

async fn bind(app: &App, conn: &Arc<Conn>, msg: &ClientMessage) -> Answer {
    if !app.config.auth.allow_client_bind {
        return Err(HandlerError::new(
            code::FORBIDDEN,
            "bind is disabled (auth.allow_client_bind = false); use a ticket bound to the uid",
        ));
    }
    let uid: String = msg.field("uid")?;
    if !valid_uid(&uid) {
        return Err(HandlerError::bad_request("invalid uid"));
    }
    if !app.broker.bind(conn, &uid).await? {
        return Err(HandlerError::bad_request(
            "this connection already has a uid",
        ));
    }
    Ok(reply_json(msg, json!({ "bound": uid })))
}

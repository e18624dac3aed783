//! `chat`: a member of a group posts text to it. The group receives
//! `{"from":<uid or conn>,"text":..,"time":<unix ms>}` on `g:<group>`, the sender a reply
//! `{"sent":true,"seq":n}`; a sender outside the group gets `not_member`.

use async_trait::async_trait;
use serde_json::json;

use super::{ClientMessage, Ctx, Handler, HandlerError, Reply};
use crate::{
    hub::Target,
    protocol::{code, now_ms, valid_group},
};

pub struct Chat;

#[async_trait]
impl Handler for Chat {
    async fn handle(&self, ctx: &Ctx, msg: &ClientMessage) -> Result<Reply, HandlerError> {
        let group: String = msg.field("group")?;
        let text: String = msg.field("text")?;
        if !valid_group(&group) {
            return Err(HandlerError::bad_request("invalid group name"));
        }
        if !ctx.in_group(&group) {
            return Err(HandlerError::new(
                code::NOT_MEMBER,
                format!("join {group} before sending to it"),
            ));
        }
        let from = ctx.uid().unwrap_or(ctx.conn_id());
        let data = json!({ "from": from, "text": text, "time": now_ms() });
        let published = ctx.push(&Target::Group(group), &data).await?;
        Ok(json!({ "sent": true, "seq": published.seq }).into())
    }
}

//! `echo`: `{"type":"echo","id":"1","data":X}` is answered with `{"echo":X}`, X unchanged.

use async_trait::async_trait;
use serde_json::value::RawValue;

use super::{ClientMessage, Ctx, Handler, HandlerError, Reply};

pub struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, _ctx: &Ctx, msg: &ClientMessage) -> Result<Reply, HandlerError> {
        let data = msg.raw("data").map_or("null", RawValue::get);
        let raw = RawValue::from_string(format!("{{\"echo\":{data}}}"))
            .map_err(|e| HandlerError::new("internal", e.to_string()))?;
        Ok(Reply::raw(raw))
    }
}

//! Fuzzes the client-frame decoder: any text decodes or gets a documented error code,
//! and every accessor a handler may call on a decoded message is safe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minipush::protocol::{code, ClientMessage};

fuzz_target!(|text: &str| {
    match ClientMessage::parse(text) {
        Ok(msg) => {
            let _ = (msg.ty(), msg.id(), msg.text());
            let _ = msg.field::<serde_json::Value>("data");
            let _ = msg.field::<std::collections::BTreeMap<String, u64>>("streams");
            let _ = msg.raw("group").map(|r| r.get().len());
        }
        Err(e) => assert!(e.code == code::BAD_JSON || e.code == code::BAD_REQUEST),
    }
});

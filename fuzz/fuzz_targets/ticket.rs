//! Fuzzes the credential parser: any bytes, split into header lines, must parse or be
//! refused as malformed without panicking; a parsed ticket round-trips its signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minipush::{
    auth::{first_protocol, valid_uid, Ticket},
    config::Secret,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values: Vec<&str> = text.split('\n').collect();
    let _ = first_protocol(&values);
    if let Ok(ticket) = Ticket::parse(&values) {
        assert!(ticket.ts >= 0);
        assert!(ticket.uid.as_deref().is_none_or(valid_uid));
        let first = first_protocol(&values).expect("a parsed ticket has a first value");
        assert_eq!(hex::encode(ticket.sig), first.to_ascii_lowercase());
        let _ = ticket.verify(&[Secret::new("token")], 1_700_000_000, 300);
    }
});

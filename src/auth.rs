//! The client ticket: parsed from `Sec-WebSocket-Protocol`, verified against the configured
//! tokens in constant time, and signed (for `minipush sign`, `/api/login` and tests).
//!
//! A ticket is `<sig>, <ts>` (anonymous) or `<sig>, <ts>, <uid>` (bound to a user), where
//! `sig = hex(sha1(token + ts [+ uid]))`. Checks run in the order the contract fixes:
//! shape (4003), then the time window (4002), then the signature (4001).

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::{config::is_name_char, config::Secret, protocol::close};

/// Why a ticket was refused; each maps to one close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed or missing credentials")]
    Malformed,
    #[error("timestamp outside the allowed window")]
    Expired,
    #[error("invalid signature")]
    BadSignature,
}

impl AuthError {
    pub fn close_code(self) -> u16 {
        match self {
            AuthError::Malformed => close::MALFORMED,
            AuthError::Expired => close::EXPIRED,
            AuthError::BadSignature => close::BAD_SIGNATURE,
        }
    }

    /// Label for the `minipush_handshakes_total{result}` metric.
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::Expired => "expired",
            AuthError::BadSignature => "bad_signature",
        }
    }
}

/// A ticket whose shape is valid, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub sig: [u8; 20],
    pub ts: i64,
    pub uid: Option<String>,
}

/// Whether `uid` is 1 to 64 characters from `[A-Za-z0-9_.-]`.
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.chars().all(is_name_char)
}

/// Splits the offered subprotocol values (all header lines, comma-separated) and returns
/// the first value, if any; it is the one echoed in the 101 response.
pub fn first_protocol(values: &[&str]) -> Option<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

impl Ticket {
    /// Parses the `Sec-WebSocket-Protocol` header lines. Stops reading after four values,
    /// so a header with thousands of values costs no more than one with four.
    pub fn parse(values: &[&str]) -> Result<Ticket, AuthError> {
        let mut parts = values.iter().flat_map(|v| v.split(',')).map(str::trim);
        let mut got: [&str; 3] = [""; 3];
        let mut n = 0;
        for part in parts.by_ref() {
            if n == 3 {
                return Err(AuthError::Malformed);
            }
            got[n] = part;
            n += 1;
        }
        if !(2..=3).contains(&n) {
            return Err(AuthError::Malformed);
        }
        let [sig, ts, uid] = got;
        let mut sig_bytes = [0u8; 20];
        if sig.len() != 40 || hex::decode_to_slice(sig, &mut sig_bytes).is_err() {
            return Err(AuthError::Malformed);
        }
        if ts.is_empty() || ts.len() > 18 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::Malformed);
        }
        let ts: i64 = ts.parse().map_err(|_| AuthError::Malformed)?;
        let uid = if n == 3 {
            if !valid_uid(uid) {
                return Err(AuthError::Malformed);
            }
            Some(uid.to_string())
        } else {
            None
        };
        Ok(Ticket {
            sig: sig_bytes,
            ts,
            uid,
        })
    }

    /// Checks the time window, then the signature against every token (rotation).
    /// Every token is tried, whatever matches, so timing reveals nothing.
    pub fn verify(&self, tokens: &[Secret], now: i64, max_skew_secs: u64) -> Result<(), AuthError> {
        if now.abs_diff(self.ts) > max_skew_secs {
            return Err(AuthError::Expired);
        }
        let mut ok = subtle::Choice::from(0);
        for token in tokens {
            let expected = digest(token.expose(), self.ts, self.uid.as_deref());
            ok |= expected.ct_eq(&self.sig);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

fn digest(token: &str, ts: i64, uid: Option<&str>) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(token.as_bytes());
    h.update(ts.to_string().as_bytes());
    if let Some(uid) = uid {
        h.update(uid.as_bytes());
    }
    h.finalize().into()
}

/// The lowercase hex signature of a ticket: `hex(sha1(token + ts [+ uid]))`.
pub fn sign(token: &str, ts: i64, uid: Option<&str>) -> String {
    hex::encode(digest(token, ts, uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|t| Secret::new(*t)).collect()
    }

    #[test]
    fn known_vector() {
        // sha1("T1700000000"), computed independently with `printf T1700000000 | sha1sum`.
        assert_eq!(
            sign("T", 1_700_000_000, None),
            "37eaefd917e8b583189edba6dc0c0ff9a42ab191"
        );
    }

    #[test]
    fn parses_anonymous_and_bound_tickets() {
        let sig = sign("tok", 100, None);
        let t = Ticket::parse(&[&format!("{sig}, 100")]).unwrap();
        assert_eq!((t.ts, t.uid.as_deref()), (100, None));
        let t = Ticket::parse(&[&sig, "100", "oAbc_1.-x"]).unwrap();
        assert_eq!(t.uid.as_deref(), Some("oAbc_1.-x"));
        let upper = sig.to_uppercase();
        assert!(Ticket::parse(&[&format!("{upper},100")]).is_ok());
    }

    #[test]
    fn shape_errors_are_malformed() {
        let sig = sign("tok", 100, None);
        for bad in [
            String::new(),
            sig.clone(),
            format!("{sig},100,u1,extra"),
            format!("{sig},-100"),
            format!("{sig},1e3"),
            format!("{},100", &sig[..39]),
            format!("{}g,100", &sig[..39]),
            format!("{sig},100,bad uid"),
            format!("{sig},100,{}", "u".repeat(65)),
        ] {
            assert_eq!(Ticket::parse(&[&bad]), Err(AuthError::Malformed), "{bad}");
        }
    }

    #[test]
    fn verify_checks_window_then_signature_with_rotation() {
        let toks = tokens(&["old", "new"]);
        let t = Ticket::parse(&[&sign("new", 1000, Some("u1")), "1000", "u1"]).unwrap();
        assert_eq!(t.verify(&toks, 1000 + 300, 300), Ok(()));
        assert_eq!(t.verify(&toks, 1000 - 300, 300), Ok(()));
        assert_eq!(t.verify(&toks, 1000 + 301, 300), Err(AuthError::Expired));
        assert_eq!(
            t.verify(&tokens(&["other"]), 1000, 300),
            Err(AuthError::BadSignature)
        );
        // A signature for one uid does not validate another.
        let forged = Ticket {
            uid: Some("u2".into()),
            ..t
        };
        assert_eq!(
            forged.verify(&toks, 1000, 300),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn first_protocol_is_echoed() {
        assert_eq!(first_protocol(&["a, b", "c"]).as_deref(), Some("a"));
        assert_eq!(first_protocol(&[]), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn uid() -> impl Strategy<Value = String> {
            "[A-Za-z0-9_.-]{1,64}"
        }

        proptest! {
            #[test]
            fn signed_tickets_parse_and_verify(
                token in "[ -~]{1,40}",
                ts in 0i64..4_000_000_000,
                uid in proptest::option::of(uid()),
                spaces in "[ ]{0,3}",
            ) {
                let sig = sign(&token, ts, uid.as_deref());
                prop_assert_eq!(sig.len(), 40);
                let header = match &uid {
                    Some(u) => format!("{sig},{spaces}{ts},{spaces}{u}"),
                    None => format!("{sig},{spaces}{ts}"),
                };
                let t = Ticket::parse(&[&header]).unwrap();
                prop_assert_eq!(t.ts, ts);
                prop_assert_eq!(&t.uid, &uid);
                prop_assert_eq!(t.verify(&[Secret::new(token.clone())], ts, 0), Ok(()));
                let other = Secret::new(format!("{token}x"));
                prop_assert_eq!(t.verify(&[other], ts, 0), Err(AuthError::BadSignature));
            }

            #[test]
            fn any_changed_signature_digit_is_refused(
                ts in 0i64..4_000_000_000,
                pos in 0usize..40,
                uid in proptest::option::of(uid()),
            ) {
                let mut sig = sign("token", ts, uid.as_deref()).into_bytes();
                sig[pos] = if sig[pos] == b'0' { b'1' } else { b'0' };
                let sig = String::from_utf8(sig).unwrap();
                let header = match &uid {
                    Some(u) => format!("{sig}, {ts}, {u}"),
                    None => format!("{sig}, {ts}"),
                };
                let t = Ticket::parse(&[&header]).unwrap();
                prop_assert_eq!(t.verify(&[Secret::new("token")], ts, 0), Err(AuthError::BadSignature));
            }

            #[test]
            fn parse_never_panics_and_accepts_only_the_shape(values in proptest::collection::vec(".{0,80}", 0..6)) {
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                if let Ok(t) = Ticket::parse(&refs) {
                    prop_assert!(t.uid.as_deref().is_none_or(valid_uid));
                    prop_assert!(t.ts >= 0);
                }
            }
        }
    }
}

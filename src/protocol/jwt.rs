//! Signed identities: HS256 JSON Web Tokens (RFC 7519), checked with the server's
//! `--jwt-secret`.
//!
//! A JWT is three base64url pieces joined by dots: a header (`{"alg":"HS256"}`), the
//! claims (who the holder is, until when the token holds), and a signature, the
//! HMAC-SHA256 of the first two pieces under the shared secret. A backend that knows
//! the secret mints tokens; the server only checks them, and trusts what they say
//! because nobody without the secret can produce a matching signature.
//!
//! The checks, in the order [`verify`] makes them: the token's size
//! ([`MAX_TOKEN_BYTES`]); its shape; the header's algorithm, which must be exactly
//! `HS256` (a token that names `none`, or any other algorithm, is refused: the
//! classic JWT attack lets the *token* choose how it is checked); the signature,
//! compared in constant time; then the claims: `sub` and `exp` are required, and
//! `exp`/`nbf` are checked against the clock with [`CLOCK_LEEWAY_SECS`] of slack.
//! Nothing here logs, and no error carries the token.

use std::collections::HashMap;
use std::fmt;

use data_encoding::BASE64URL_NOPAD;
use tinyjson::JsonValue;

use super::json::JsonObject;

/// Longest token accepted, in bytes. Real tokens with a handful of claims are a few
/// hundred bytes; the bound keeps decoding and parsing cheap whatever a client sends.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Slack for clocks that disagree a little between the backend that minted a token
/// and this server: `exp` and `nbf` are checked this many seconds leniently.
pub const CLOCK_LEEWAY_SECS: u64 = 30;

/// Deepest nesting of arrays and objects in a token's JSON. Claims are flat; the bound
/// stops a crafted token from making the (recursive) parser use deep stack.
const MAX_JSON_DEPTH: usize = 4;

/// Longest `sub` (user id) and `name`, in characters.
pub const MAX_CLAIM_CHARS: usize = 64;

/// What a valid token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The user id (`sub`).
    pub sub: String,
    /// A display name (`name`), if the token gives one.
    pub name: Option<String>,
    /// When the token stops being valid (`exp`), seconds since 1970.
    pub exp: u64,
    /// When it starts being valid (`nbf`), if it says.
    pub nbf: Option<u64>,
    /// Room patterns the holder may join (`rooms`), if the token lists them.
    pub rooms: Option<Vec<String>>,
    /// Room patterns the holder may publish to (`publish`), if the token lists them.
    pub publish: Option<Vec<String>>,
}

impl Claims {
    /// How long from `now` (time since 1970) the token is still accepted: through the
    /// second `exp` plus the leeway, as [`verify`] counts. A connection opened with it
    /// is closed then (4001), and the same token is refused from then on.
    pub fn valid_for(&self, now: std::time::Duration) -> std::time::Duration {
        let refused_from = self.exp.saturating_add(CLOCK_LEEWAY_SECS).saturating_add(1);
        std::time::Duration::from_secs(refused_from).saturating_sub(now)
    }
}

/// Why a token was refused. Its text names the reason, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLong,
    /// Not three base64url pieces of JSON objects; says which part is wrong.
    Malformed(&'static str),
    /// The header names an algorithm other than `HS256` (`none` included).
    Algorithm,
    /// The signature does not match: another key, or a changed header or payload.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` has not come yet.
    NotYetValid,
    /// A required claim is missing, or a claim has the wrong type or size.
    Claim(&'static str),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::TooLong => write!(f, "token longer than {MAX_TOKEN_BYTES} bytes"),
            JwtError::Malformed(what) => write!(f, "malformed token: {what}"),
            JwtError::Algorithm => write!(f, "token not signed with HS256"),
            JwtError::BadSignature => write!(f, "token signature does not match"),
            JwtError::Expired => write!(f, "token expired"),
            JwtError::NotYetValid => write!(f, "token not valid yet (nbf)"),
            JwtError::Claim(what) => write!(f, "token claim: {what}"),
        }
    }
}

impl std::error::Error for JwtError {}

/// Checks `token` against `secret` at `now` (seconds since 1970) and returns its
/// claims.
///
/// # Errors
/// Why the token is refused ([`JwtError`]).
pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLong);
    }
    let mut pieces = token.split('.');
    let (Some(header_piece), Some(payload_piece), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(JwtError::Malformed("not three dot-separated pieces"));
    };
    let header = object(header_piece, "header")?;
    if header.get("alg").and_then(JsonValue::get::<String>) != Some(&"HS256".to_string()) {
        return Err(JwtError::Algorithm);
    }
    let signature = decode(signature, "signature")?;
    let signature: [u8; 32] = signature.try_into().map_err(|_| JwtError::BadSignature)?;
    // The signature covers the first two pieces exactly as sent, dot included.
    let signed = &token[..header_piece.len() + 1 + payload_piece.len()];
    if !hmac_sha256::HMAC::verify(signed.as_bytes(), secret, &signature) {
        return Err(JwtError::BadSignature);
    }
    let claims = claims(&object(payload_piece, "payload")?)?;
    if now > claims.exp.saturating_add(CLOCK_LEEWAY_SECS) {
        return Err(JwtError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| now.saturating_add(CLOCK_LEEWAY_SECS) < nbf)
    {
        return Err(JwtError::NotYetValid);
    }
    Ok(claims)
}

/// A token for `claims`, signed with `secret` (for `threadcast token`, tests and
/// backends written in Rust).
pub fn mint(claims: &Claims, secret: &[u8]) -> String {
    let header = BASE64URL_NOPAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mut body = JsonObject::new();
    body.string("sub", &claims.sub).number("exp", claims.exp);
    if let Some(name) = &claims.name {
        body.string("name", name);
    }
    if let Some(nbf) = claims.nbf {
        body.number("nbf", nbf);
    }
    for (key, patterns) in [("rooms", &claims.rooms), ("publish", &claims.publish)] {
        if let Some(patterns) = patterns {
            body.raw(key, &string_array(patterns));
        }
    }
    let payload = BASE64URL_NOPAD.encode(body.finish().as_bytes());
    let signed = format!("{header}.{payload}");
    let signature = hmac_sha256::HMAC::mac(signed.as_bytes(), secret);
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// `["a","b"]`, each string escaped.
fn string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        super::json::push_string(&mut out, item);
    }
    out.push(']');
    out
}

/// One base64url piece, decoded.
fn decode(piece: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    BASE64URL_NOPAD
        .decode(piece.as_bytes())
        .map_err(|_| JwtError::Malformed(what))
}

/// One base64url piece holding a JSON object, parsed.
fn object(piece: &str, what: &'static str) -> Result<HashMap<String, JsonValue>, JwtError> {
    let text = String::from_utf8(decode(piece, what)?).map_err(|_| JwtError::Malformed(what))?;
    if nesting(&text) > MAX_JSON_DEPTH {
        return Err(JwtError::Malformed(what));
    }
    match text.parse::<JsonValue>() {
        Ok(JsonValue::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(what)),
    }
}

/// How deeply arrays and objects nest in `json` (strings skipped).
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for c in json.chars() {
        match (in_string, c) {
            (true, _) if escaped => escaped = false,
            (true, '\\') => escaped = true,
            (true, '"') | (false, '"') => in_string = !in_string,
            (false, '[' | '{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The claims this server reads, checked for type and size.
fn claims(map: &HashMap<String, JsonValue>) -> Result<Claims, JwtError> {
    let sub = text(map, "sub")?.ok_or(JwtError::Claim("sub is required"))?;
    if sub.is_empty() {
        return Err(JwtError::Claim("sub is empty"));
    }
    Ok(Claims {
        sub,
        name: text(map, "name")?,
        exp: seconds(map, "exp")?.ok_or(JwtError::Claim("exp is required"))?,
        nbf: seconds(map, "nbf")?,
        rooms: patterns(map, "rooms")?,
        publish: patterns(map, "publish")?,
    })
}

/// A string claim of at most [`MAX_CLAIM_CHARS`] characters, with no control ones.
fn text(map: &HashMap<String, JsonValue>, key: &'static str) -> Result<Option<String>, JwtError> {
    match map.get(key) {
        None => Ok(None),
        Some(JsonValue::String(s))
            if s.chars().count() <= MAX_CLAIM_CHARS && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(JwtError::Claim(key)),
    }
}

/// A NumericDate claim: seconds since 1970, fractions dropped.
fn seconds(map: &HashMap<String, JsonValue>, key: &'static str) -> Result<Option<u64>, JwtError> {
    match map.get(key) {
        None => Ok(None),
        Some(JsonValue::Number(n)) if n.is_finite() && *n >= 0.0 && *n < 1e15 => {
            Ok(Some(*n as u64))
        }
        Some(_) => Err(JwtError::Claim(key)),
    }
}

/// A list of room patterns: an array of short strings.
fn patterns(
    map: &HashMap<String, JsonValue>,
    key: &'static str,
) -> Result<Option<Vec<String>>, JwtError> {
    let Some(value) = map.get(key) else {
        return Ok(None);
    };
    let JsonValue::Array(items) = value else {
        return Err(JwtError::Claim(key));
    };
    items
        .iter()
        .map(|item| match item {
            JsonValue::String(s) if !s.is_empty() && s.len() <= 2 * MAX_CLAIM_CHARS => {
                Ok(s.clone())
            }
            _ => Err(JwtError::Claim(key)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-secret-of-at-least-thirty-two-bytes!!";
    const NOW: u64 = 1_800_000_000;

    /// Made with Python's standard library (hmac, hashlib, base64), not with this
    /// file: {"alg":"HS256","typ":"JWT"} . {"sub":"alice","name":"Alice","exp":4102444800,
    /// "rooms":["lobby","news-*"],"publish":["lobby"]} under SECRET.
    const PYTHON_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsIm5hbWUiOiJBbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwicm9vbXMiOlsibG9iYnkiLCJuZXdzLSoiXSwicHVibGlzaCI6WyJsb2JieSJdfQ.AH-lh-1ZkerzK53X5xxicFMNUD3eRiraAC5sx1mXRpw";

    fn alice() -> Claims {
        Claims {
            sub: "alice".into(),
            name: Some("Alice".into()),
            exp: NOW + 3600,
            nbf: None,
            rooms: Some(vec!["lobby".into(), "news-*".into()]),
            publish: Some(vec!["lobby".into()]),
        }
    }

    /// A token with this header and payload JSON, signed with `secret`.
    fn signed(header: &str, payload: &str, secret: &[u8]) -> String {
        let signed = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(header.as_bytes()),
            BASE64URL_NOPAD.encode(payload.as_bytes())
        );
        let mac = hmac_sha256::HMAC::mac(signed.as_bytes(), secret);
        format!("{signed}.{}", BASE64URL_NOPAD.encode(&mac))
    }

    #[test]
    fn a_token_from_another_implementation_is_accepted() {
        let claims = verify(PYTHON_TOKEN, SECRET, NOW).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.name.as_deref(), Some("Alice"));
        assert_eq!(claims.exp, 4_102_444_800);
        assert_eq!(claims.rooms, Some(vec!["lobby".into(), "news-*".into()]));
        assert_eq!(claims.publish, Some(vec!["lobby".into()]));
    }

    #[test]
    fn a_minted_token_verifies_to_the_same_claims() {
        let token = mint(&alice(), SECRET);
        assert_eq!(verify(&token, SECRET, NOW), Ok(alice()));
    }

    #[test]
    fn another_key_or_a_changed_payload_breaks_the_signature() {
        let token = mint(&alice(), SECRET);
        assert_eq!(
            verify(&token, b"another key", NOW),
            Err(JwtError::BadSignature)
        );
        // Alice turns herself into Bob: the payload changes, the signature does not.
        let bob = mint(
            &Claims {
                sub: "bob".into(),
                ..alice()
            },
            b"whatever",
        );
        let pieces: Vec<&str> = token.split('.').collect();
        let bob_payload = bob.split('.').nth(1).unwrap();
        let forged = format!("{}.{bob_payload}.{}", pieces[0], pieces[2]);
        assert_eq!(verify(&forged, SECRET, NOW), Err(JwtError::BadSignature));
        let truncated = &token[..token.len() - 2];
        assert!(verify(truncated, SECRET, NOW).is_err());
    }

    #[test]
    fn only_hs256_is_accepted_whatever_the_token_says() {
        let payload = r#"{"sub":"alice","exp":1800003600}"#;
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"None"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS384"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":["HS256"]}"#,
        ] {
            let token = signed(header, payload, SECRET);
            assert_eq!(
                verify(&token, SECRET, NOW),
                Err(JwtError::Algorithm),
                "{header}"
            );
        }
        // alg none with an empty signature, as the attack sends it.
        let none = format!(
            "{}.{}.",
            BASE64URL_NOPAD.encode(br#"{"alg":"none"}"#),
            BASE64URL_NOPAD.encode(payload.as_bytes())
        );
        assert_eq!(verify(&none, SECRET, NOW), Err(JwtError::Algorithm));
    }

    #[test]
    fn a_token_is_valid_for_as_long_as_verify_accepts_it() {
        let token = mint(
            &Claims {
                exp: NOW + 10,
                ..alice()
            },
            SECRET,
        );
        let claims = verify(&token, SECRET, NOW).unwrap();
        let now = std::time::Duration::from_millis(NOW * 1000 + 250);
        let valid = claims.valid_for(now);
        assert_eq!(
            valid.as_millis(),
            (10 + u128::from(CLOCK_LEEWAY_SECS) + 1) * 1000 - 250
        );
        let last_second = NOW + 10 + CLOCK_LEEWAY_SECS;
        assert!(verify(&token, SECRET, last_second).is_ok());
        assert!(verify(&token, SECRET, last_second + 1).is_err());
        assert_eq!(claims.valid_for(now * 2), std::time::Duration::ZERO);
    }

    #[test]
    fn time_claims_are_checked_with_a_little_leeway() {
        let expired = mint(
            &Claims {
                exp: NOW - CLOCK_LEEWAY_SECS - 1,
                ..alice()
            },
            SECRET,
        );
        assert_eq!(verify(&expired, SECRET, NOW), Err(JwtError::Expired));
        let just = mint(
            &Claims {
                exp: NOW - CLOCK_LEEWAY_SECS,
                ..alice()
            },
            SECRET,
        );
        assert!(verify(&just, SECRET, NOW).is_ok(), "within the leeway");
        let early = Claims {
            nbf: Some(NOW + CLOCK_LEEWAY_SECS + 1),
            ..alice()
        };
        assert_eq!(
            verify(&mint(&early, SECRET), SECRET, NOW),
            Err(JwtError::NotYetValid)
        );
        let started = Claims {
            nbf: Some(NOW),
            ..alice()
        };
        assert!(verify(&mint(&started, SECRET), SECRET, NOW).is_ok());
    }

    #[test]
    fn required_claims_and_their_types_are_checked() {
        let header = r#"{"alg":"HS256"}"#;
        for (payload, why) in [
            (r#"{"exp":1800003600}"#, "sub is required"),
            (r#"{"sub":"","exp":1800003600}"#, "sub is empty"),
            (r#"{"sub":"alice"}"#, "exp is required"),
            (r#"{"sub":7,"exp":1800003600}"#, "sub"),
            (r#"{"sub":"alice","exp":"soon"}"#, "exp"),
            (r#"{"sub":"alice","exp":-5}"#, "exp"),
            (
                r#"{"sub":"alice","exp":1800003600,"rooms":"lobby"}"#,
                "rooms",
            ),
            (
                r#"{"sub":"alice","exp":1800003600,"publish":[1]}"#,
                "publish",
            ),
            (r#"{"sub":"al\nice","exp":1800003600}"#, "sub"),
        ] {
            let token = signed(header, payload, SECRET);
            assert_eq!(
                verify(&token, SECRET, NOW),
                Err(JwtError::Claim(why)),
                "{payload}"
            );
        }
        let long_name = format!(r#"{{"sub":"{}","exp":1800003600}}"#, "x".repeat(65));
        let token = signed(header, &long_name, SECRET);
        assert_eq!(verify(&token, SECRET, NOW), Err(JwtError::Claim("sub")));
    }

    #[test]
    fn garbage_and_oversized_tokens_are_refused_without_being_parsed() {
        for garbage in ["", ".", "..", "a.b.c", "a.b.c.d", "not a token", "🦀.🦀.🦀"] {
            assert!(
                matches!(verify(garbage, SECRET, NOW), Err(JwtError::Malformed(_))),
                "{garbage:?}"
            );
        }
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(verify(&huge, SECRET, NOW), Err(JwtError::TooLong));
        // Deep nesting would make the parser recurse; it is refused before parsing.
        let deep = format!(
            r#"{{"alg":"HS256","x":{}{}}}"#,
            "[".repeat(500),
            "]".repeat(500)
        );
        let token = signed(&deep, r#"{"sub":"a","exp":1800003600}"#, SECRET);
        assert_eq!(
            verify(&token, SECRET, NOW),
            Err(JwtError::Malformed("header"))
        );
    }

    #[test]
    fn errors_never_contain_the_token() {
        let token = mint(&Claims { exp: 1, ..alice() }, SECRET);
        let text = verify(&token, SECRET, NOW).unwrap_err().to_string();
        assert!(!text.contains(&token) && !text.contains(token.split('.').nth(1).unwrap()));
    }
}

//! The opening handshake as a student should see it: the request as the server
//! received it (a token hidden), the `101` it answered, and how
//! `Sec-WebSocket-Accept` is computed from the client's key (RFC 6455 §4.2.2).

use data_encoding::{BASE64, HEXLOWER};
use sha1::{Digest, Sha1};

use crate::protocol::json::JsonObject;

/// The GUID every WebSocket server appends to the client's key (RFC 6455 §1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Shown instead of a token.
pub const REDACTED: &str = "[redacted]";

/// The accept computation, step by step, as JSON: `key`, `guid`, `concatenated`,
/// `sha1` (hex) and `base64`, which is the `Sec-WebSocket-Accept` value.
pub fn accept_steps(key: &str) -> String {
    let concatenated = format!("{key}{GUID}");
    let digest = Sha1::digest(concatenated.as_bytes());
    JsonObject::new()
        .string("key", key)
        .string("guid", GUID)
        .string("concatenated", &concatenated)
        .string("sha1", &HEXLOWER.encode(&digest))
        .string("base64", &BASE64.encode(&digest))
        .finish()
}

/// The request line (`method`, `target`, HTTP/1.`minor`) and `headers`, with a token
/// (in `Authorization` or `?token=`) replaced by [`REDACTED`].
pub fn request_lines(
    (method, target, minor): (&str, &str, u8),
    headers: &[(String, String)],
) -> Vec<String> {
    let target = redact_query(target);
    let mut lines = vec![format!("{method} {target} HTTP/1.{minor}")];
    for (name, value) in headers {
        let value = if name.eq_ignore_ascii_case("authorization") {
            REDACTED
        } else {
            value
        };
        lines.push(format!("{name}: {value}"));
    }
    lines
}

/// `target` with the value of `token=` hidden.
fn redact_query(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => format!("token={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// A JSON array of strings.
pub fn json_lines(lines: &[String]) -> String {
    let quoted: Vec<String> = lines
        .iter()
        .map(|line| {
            let mut out = String::new();
            crate::protocol::json::push_string(&mut out, line);
            out
        })
        .collect();
    format!("[{}]", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_s_example_key_gives_the_rfc_s_accept_value() {
        let steps = accept_steps("dGhlIHNhbXBsZSBub25jZQ==");
        assert!(
            steps.contains(r#""sha1":"b37a4f2cc0624f1690f64606cf385945b2bec4ea""#),
            "{steps}"
        );
        assert!(
            steps.contains(r#""base64":"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=""#),
            "{steps}"
        );
        assert_eq!(
            tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn tokens_never_show() {
        let headers = vec![
            ("Host".into(), "127.0.0.1".into()),
            ("Authorization".into(), "Bearer s3cret".into()),
        ];
        let target = "/ws/lobby?since=3&token=s3cret&inspect=1";
        let lines = request_lines(("GET", target, 1), &headers);
        assert_eq!(
            lines[0],
            "GET /ws/lobby?since=3&token=[redacted]&inspect=1 HTTP/1.1"
        );
        assert_eq!(lines[2], "Authorization: [redacted]");
        assert!(!json_lines(&lines).contains("s3cret"));
    }
}

//! A tiny JSON *writer* for the few flat objects the server sends (`/config.json`,
//! `/stats`, control frames, room messages over SSE and long polling). Writing JSON
//! needs only correct string escaping (RFC 8259 §7), so this one file replaces a
//! serialization framework and keeps the dependency tree small.
//!
//! Strings can also be written piece by piece to any [`fmt::Write`] ([`write_string`]):
//! a replay of a whole history is escaped straight into a bounded buffer that is sent
//! on as it fills, never built in memory as one string.

use std::fmt::{self, Write};

/// The most bytes JSON escaping turns one byte of a string into: a control character
/// with no short escape becomes `\u00XX` (RFC 8259 §7), six bytes for one. So a
/// string of `n` bytes is at most `6 × n + 2` bytes of JSON, which is what a payload of
/// control characters costs over SSE and long polling.
pub const MAX_ESCAPE_FACTOR: usize = 6;

/// Hex digits for `\u00XX` escapes.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Builds one JSON object, field by field.
#[derive(Debug)]
pub struct JsonObject {
    out: String,
}

impl Default for JsonObject {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonObject {
    /// An empty object.
    pub fn new() -> Self {
        JsonObject {
            out: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_string(&mut self.out, key);
        self.out.push(':');
    }

    /// Adds `"key":"value"`, escaped.
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_string(&mut self.out, value);
        self
    }

    /// Adds `"key":123`.
    pub fn number(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// Adds `"key":true` or `false`.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// Adds `"key":` followed by `json`, which must already be valid JSON.
    pub fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key);
        self.out.push_str(json);
        self
    }

    /// Adds `"key":` and returns the object so far, still open: for a last value too
    /// large to build in memory, which the caller writes after it, then `}`.
    pub fn before_value(&mut self, key: &str) -> String {
        self.key(key);
        std::mem::take(&mut self.out)
    }

    /// The finished object.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.out);
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string literal (see [`write_string`]).
pub fn push_string(out: &mut String, s: &str) {
    write_string(out, s).expect("a String takes any text");
}

/// Writes `s` as a JSON string literal: quotes, backslashes and control characters
/// escaped (RFC 8259 §7); everything else is valid UTF-8 already. Runs of characters
/// that need no escape go to `out` as slices of `s`, so nothing is copied on the way.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    // Every byte that needs an escape is ASCII, so cutting `s` around one keeps
    // whole characters on both sides.
    let mut plain_from = 0;
    for (at, byte) in s.bytes().enumerate() {
        if needs_escape(byte) {
            out.write_str(&s[plain_from..at])?;
            write_escape(out, byte)?;
            plain_from = at + 1;
        }
    }
    out.write_str(&s[plain_from..])?;
    out.write_char('"')
}

/// Whether `byte` cannot stand for itself inside a JSON string.
fn needs_escape(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// The escape for one byte that [`needs_escape`]: the short forms where JSON has
/// them, `\u00XX` for the other control characters.
fn write_escape(out: &mut impl fmt::Write, byte: u8) -> fmt::Result {
    match byte {
        b'"' => out.write_str("\\\""),
        b'\\' => out.write_str("\\\\"),
        b'\n' => out.write_str("\\n"),
        b'\r' => out.write_str("\\r"),
        b'\t' => out.write_str("\\t"),
        _ => {
            let hex = |nibble: u8| HEX_DIGITS[usize::from(nibble)];
            let escape = [b'\\', b'u', b'0', b'0', hex(byte >> 4), hex(byte & 0xf)];
            out.write_str(std::str::from_utf8(&escape).expect("an escape is ASCII"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_control_characters() {
        let mut s = String::new();
        push_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn every_control_character_is_escaped_within_the_factor() {
        let all: String = (0u8..0x20).map(char::from).collect();
        let mut s = String::new();
        push_string(&mut s, &all);
        assert!(s.starts_with(r#""\u0000\u0001"#), "{s}");
        assert!(s.contains(r#"\u0008\t\n\u000b\u000c\r\u000e"#), "{s}");
        assert!(s.ends_with(r#"\u001f""#), "{s}");
        for byte in 0u8..0x20 {
            let mut one = String::new();
            push_string(&mut one, &char::from(byte).to_string());
            assert!(one.len() - 2 <= MAX_ESCAPE_FACTOR, "{one}");
        }
        assert_eq!(s.len(), 2 + 29 * MAX_ESCAPE_FACTOR + 3 * 2);
    }

    #[test]
    fn strings_can_be_written_piece_by_piece() {
        /// Records each piece it is given.
        struct Pieces(Vec<String>);
        impl fmt::Write for Pieces {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.push(s.to_string());
                Ok(())
            }
        }
        let mut pieces = Pieces(Vec::new());
        write_string(&mut pieces, "héllo\u{1}wörld").unwrap();
        assert_eq!(pieces.0.concat(), "\"héllo\\u0001wörld\"");
        assert!(pieces.0.contains(&"héllo".to_string()), "{:?}", pieces.0);
    }

    #[test]
    fn an_object_can_be_left_open_for_a_long_last_value() {
        let mut json = JsonObject::new();
        json.number("a", 1);
        assert_eq!(json.before_value("list"), r#"{"a":1,"list":"#);
    }

    #[test]
    fn builds_objects_with_commas_between_fields() {
        let json = JsonObject::new()
            .string("a", "x")
            .number("b", 2)
            .bool("c", true)
            .raw("d", "{}")
            .finish();
        assert_eq!(json, r#"{"a":"x","b":2,"c":true,"d":{}}"#);
        assert_eq!(JsonObject::new().finish(), "{}");
    }
}

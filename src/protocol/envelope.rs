//! The wire format of room messages (see `docs/PROTOCOL.md`): a one-line JSON header,
//! `\n`, then the payload untouched. Also the `cid:` line clients use to name their
//! messages, and the JSON form of a message used by Server-Sent Events and long
//! polling. The control frames beside them are in [`crate::protocol::control`].
//!
//! We only ever *write* JSON, and only flat objects of numbers and plain strings, so
//! the small writer in [`crate::protocol::json`] is all it takes; the one thing we read from
//! clients, the `cid:` line, is a plain prefix rather than JSON on purpose.
//!
//! **How large a message's JSON form gets.** Its `data` is the payload escaped as a
//! JSON string, at most [`json::MAX_ESCAPE_FACTOR`] (6) bytes per payload byte for a
//! payload of control characters, or base64 for binary, 4 characters per 3 bytes. So
//! a message of `n` bytes is at most `6 × n` bytes of JSON plus its header fields, and
//! a replay of a whole history (`--history-bytes`, 4 MiB by default) up to six times
//! that. [`write_message_json`] therefore never builds the whole form: it writes the
//! payload to its destination piece by piece (runs of plain text as they are, escapes
//! one by one, base64 [`BASE64_PIECE_BYTES`] at a time), and SSE and long polling pass
//! the pieces through a bounded buffer (`http::bounded_body::BoundedBody`).

use std::fmt;

use data_encoding::BASE64;
use tungstenite::{Bytes, Message, Utf8Bytes};

use crate::protocol::json::{self, JsonObject};
use crate::protocol::person::Person;
use crate::protocol::url::is_room_name;

/// What starts a client's own message id line: `cid:<id>\n`.
pub const CID_PREFIX: &[u8] = b"cid:";

/// Binary payloads are base64-encoded this many bytes at a time: a multiple of 3, so
/// the pieces join into one valid base64 text with no padding between them, and each
/// piece is 16 KiB of text, well under the buffer SSE and polls send on.
pub const BASE64_PIECE_BYTES: usize = 3 * 4096;

/// An epoch as clients see it: 16 lowercase hex digits.
pub fn format_epoch(epoch: u64) -> String {
    format!("{epoch:016x}")
}

/// Reads an epoch written by [`format_epoch`].
pub fn parse_epoch(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// Reads an SSE event id, `<epoch>:<id>`, back into its parts.
pub fn parse_event_id(s: &str) -> Option<(u64, u64)> {
    let (epoch, id) = s.trim().split_once(':')?;
    Some((parse_epoch(epoch)?, id.parse().ok()?))
}

/// What the header of a stored room message is made of: the fields every form of it
/// carries (the envelope's header line, its JSON, its SSE event id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Its position in the room's sequence, from 1.
    pub id: u64,
    /// The room's epoch when it was published.
    pub epoch: u64,
    /// When the server accepted it, milliseconds since 1970 (UTC).
    pub ts: u64,
    /// The publisher's own id for it, if it gave one.
    pub cid: Option<&'a str>,
    /// Who published it, as the server knows them (`from`), if it does.
    pub from: Option<&'a Person>,
}

/// The SSE event id of message `id` of `epoch`: `<epoch>:<id>`.
pub fn event_id(epoch: u64, id: u64) -> String {
    format!("{}:{}", format_epoch(epoch), id)
}

/// Whether `cid` is an acceptable client message id (same alphabet as room names).
pub fn is_client_id(cid: &str) -> bool {
    is_room_name(cid)
}

/// The header fields every form of a room message shares.
fn header_fields(json: &mut JsonObject, kind: &str, header: Header<'_>) {
    json.string("type", kind)
        .number("id", header.id)
        .string("epoch", &format_epoch(header.epoch))
        .number("ts", header.ts);
    if let Some(cid) = header.cid {
        json.string("cid", cid);
    }
    if let Some(from) = header.from {
        json.raw("from", &from.json());
    }
}

/// Builds both forms of a room message: `framed` (header line, `\n`, payload) for
/// enveloped members, and `raw` (the payload alone, sharing the same buffer) for raw
/// members. The payload is copied once, here, and never again per member.
pub fn frame_room_message(header: Header<'_>, payload: Message) -> (Message, Message) {
    let mut line = JsonObject::new();
    header_fields(&mut line, "message", header);
    let mut framed = line.finish().into_bytes();
    framed.push(b'\n');
    let payload_start = framed.len();
    match payload {
        Message::Text(text) => {
            framed.extend_from_slice(text.as_bytes());
            let framed = Bytes::from(framed);
            let raw = Utf8Bytes::try_from(framed.slice(payload_start..))
                .expect("a str slice stays UTF-8");
            let framed = Utf8Bytes::try_from(framed).expect("JSON header + text is UTF-8");
            (Message::Text(framed), Message::Text(raw))
        }
        other => {
            framed.extend_from_slice(&other.into_data());
            let framed = Bytes::from(framed);
            (
                Message::Binary(framed.slice(..)),
                Message::Binary(framed.slice(payload_start..)),
            )
        }
    }
}

/// Splits a client's `cid:<id>\n` line off its message, if it starts with a valid one.
/// Returns the client id and the message without that line (same frame type).
pub fn split_client_id(message: Message) -> (Option<String>, Message) {
    let bytes = match &message {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b.as_ref(),
        _ => return (None, message),
    };
    let Some(rest) = bytes.strip_prefix(CID_PREFIX) else {
        return (None, message);
    };
    let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
        return (None, message);
    };
    let Some(cid) = std::str::from_utf8(&rest[..newline])
        .ok()
        .filter(|c| is_client_id(c))
    else {
        return (None, message);
    };
    let cid = cid.to_string();
    let skip = CID_PREFIX.len() + newline + 1;
    let stripped = match message {
        Message::Text(t) => {
            let all: Bytes = t.into();
            Message::Text(
                Utf8Bytes::try_from(all.slice(skip..))
                    .expect("cut after an ASCII newline stays UTF-8"),
            )
        }
        Message::Binary(b) => Message::Binary(b.slice(skip..)),
        other => other,
    };
    (Some(cid), stripped)
}

/// A message as one JSON object (SSE events and long-poll answers): the header
/// fields plus `data`, a JSON string for text and base64 for binary (`type` says which).
/// Built in memory, for the tests; replays use [`write_message_json`].
#[cfg(test)]
pub fn message_json(header: Header, payload: &Message) -> String {
    let mut json = String::new();
    write_message_json(&mut json, header, payload).expect("a String takes any text");
    json
}

/// Writes a room message's JSON form to `out` piece by piece, so that a large payload is
/// never held escaped in memory as a whole (see the module's notes on size).
///
/// # Errors
/// Whatever `out` returns.
pub fn write_message_json(
    out: &mut impl fmt::Write,
    header: Header,
    payload: &Message,
) -> fmt::Result {
    let kind = if payload.is_text() {
        "message"
    } else {
        "binary"
    };
    let mut fields = JsonObject::new();
    header_fields(&mut fields, kind, header);
    out.write_str(&fields.before_value("data"))?;
    match payload {
        Message::Text(text) => json::write_string(out, text.as_str())?,
        other => write_base64(out, &other.clone().into_data())?,
    }
    out.write_char('}')
}

/// Writes `bytes` as a JSON string of base64, [`BASE64_PIECE_BYTES`] at a time.
fn write_base64(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    out.write_char('"')?;
    let mut piece = String::with_capacity(BASE64.encode_len(BASE64_PIECE_BYTES));
    for input in bytes.chunks(BASE64_PIECE_BYTES) {
        piece.clear();
        BASE64.encode_append(input, &mut piece);
        out.write_str(&piece)?;
    }
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_message_is_framed_as_header_newline_payload() {
        let header = Header {
            id: 42,
            epoch: 0x9f1c,
            ts: 1000,
            cid: Some("m-1"),
            from: None,
        };
        let (framed, raw) = frame_room_message(header, Message::text("hi\nthere"));
        assert_eq!(
            framed.to_text().unwrap(),
            "{\"type\":\"message\",\"id\":42,\"epoch\":\"0000000000009f1c\",\"ts\":1000,\"cid\":\"m-1\"}\nhi\nthere"
        );
        assert_eq!(raw, Message::text("hi\nthere"));
        // The sender goes into the header, after everything else the server set.
        let alice = Person::User {
            sub: "alice".into(),
            name: Some("Alice".into()),
        };
        let header = Header {
            from: Some(&alice),
            ..header
        };
        let (framed, _) = frame_room_message(header, Message::text("{\"from\":\"x\"}"));
        assert_eq!(
            framed.to_text().unwrap(),
            "{\"type\":\"message\",\"id\":42,\"epoch\":\"0000000000009f1c\",\"ts\":1000,\"cid\":\"m-1\",\"from\":{\"sub\":\"alice\",\"name\":\"Alice\"}}\n{\"from\":\"x\"}"
        );
    }

    #[test]
    fn a_binary_message_keeps_its_bytes_after_the_header() {
        let header = Header {
            id: 1,
            epoch: 1,
            ts: 1,
            cid: None,
            from: None,
        };
        let (framed, raw) = frame_room_message(header, Message::binary(vec![0u8, 10, 255]));
        let Message::Binary(bytes) = framed else {
            panic!("binary stays binary")
        };
        let newline = bytes.iter().position(|&b| b == b'\n').unwrap();
        assert_eq!(&bytes[newline + 1..], &[0u8, 10, 255]);
        assert_eq!(raw, Message::binary(vec![0u8, 10, 255]));
    }

    #[test]
    fn a_cid_line_is_split_off_text_and_binary() {
        assert_eq!(
            split_client_id(Message::text("cid:abc-1\nhello")),
            (Some("abc-1".into()), Message::text("hello"))
        );
        let binary = Message::binary(b"cid:x\n\x00\x01".to_vec());
        assert_eq!(
            split_client_id(binary),
            (Some("x".into()), Message::binary(vec![0u8, 1]))
        );
        assert_eq!(
            split_client_id(Message::text("cid:a\n")),
            (Some("a".into()), Message::text(""))
        );
    }

    #[test]
    fn anything_else_is_left_alone() {
        for text in [
            "hello",
            "cid:no newline",
            "cid:bad id\nx",
            "cid:\nx",
            "xcid:a\nb",
        ] {
            assert_eq!(
                split_client_id(Message::text(text)),
                (None, Message::text(text)),
                "{text}"
            );
        }
    }

    #[test]
    fn epochs_and_event_ids_round_trip() {
        assert_eq!(format_epoch(0xabc), "0000000000000abc");
        assert_eq!(parse_epoch("0000000000000abc"), Some(0xabc));
        assert_eq!(parse_epoch("abc"), None);
        assert_eq!(parse_event_id("0000000000000abc:42"), Some((0xabc, 42)));
        assert_eq!(parse_event_id("42"), None);
    }

    #[test]
    fn messages_become_json_for_sse_and_polling() {
        let header = Header {
            id: 3,
            epoch: 1,
            ts: 5,
            cid: None,
            from: None,
        };
        assert_eq!(
            message_json(header, &Message::text("say \"hi\"\r\n")),
            r#"{"type":"message","id":3,"epoch":"0000000000000001","ts":5,"data":"say \"hi\"\r\n"}"#
        );
        let header = Header {
            id: 4,
            cid: Some("c"),
            ..header
        };
        assert_eq!(
            message_json(header, &Message::binary(vec![0u8, 1, 2, 255])),
            r#"{"type":"binary","id":4,"epoch":"0000000000000001","ts":5,"cid":"c","data":"AAEC/w=="}"#
        );
    }

    /// The JSON of a stored message with this payload.
    fn stored(payload: Message) -> String {
        let header = Header {
            id: 9,
            epoch: 0x9f1c,
            ts: 1000,
            cid: Some("m-1"),
            from: None,
        };
        message_json(header, &payload)
    }

    #[test]
    fn a_message_json_grows_at_most_six_times_its_payload() {
        // What a message costs besides its payload: the header fields and `"data":""`.
        let header = |payload| stored(payload).len();
        let controls: String = (0u8..0x20)
            .filter(|b| !matches!(b, b'\t' | b'\n' | b'\r'))
            .map(char::from)
            .cycle()
            .take(3000)
            .collect();
        let text = stored(Message::text(controls.clone()));
        assert_eq!(
            text.len(),
            header(Message::text("")) + json::MAX_ESCAPE_FACTOR * controls.len()
        );
        let binary = stored(Message::binary(vec![0u8; 3000]));
        let binary_header = header(Message::binary(Vec::new()));
        assert_eq!(binary.len(), binary_header + 3000 / 3 * 4);
        assert!(binary.len() <= binary_header + json::MAX_ESCAPE_FACTOR * 3000);
    }

    #[test]
    fn long_binary_payloads_are_encoded_in_pieces_that_join_exactly() {
        for len in [
            0,
            1,
            BASE64_PIECE_BYTES - 1,
            BASE64_PIECE_BYTES,
            BASE64_PIECE_BYTES + 1,
            3 * BASE64_PIECE_BYTES + 2,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let json = stored(Message::binary(payload.clone()));
            let data = json.rsplit_once("\"data\":\"").unwrap().1;
            let data = data.strip_suffix("\"}").unwrap();
            assert_eq!(
                BASE64.decode(data.as_bytes()).unwrap(),
                payload,
                "{len} bytes"
            );
        }
    }
}

//! A room message as it is kept outside this process — in Redis's history
//! (`src/redis_link/wire.rs`) and in the store on disk (`src/store/`): bytes that give
//! back the same message, its header line built again from the same fields.
//!
//! ```text
//! <ts ms> <t|b>\n<tag line>\n<payload>
//! ```
//!
//! The id and the epoch are not in it: the store keeps them in its keys, Redis in a
//! header of its own. The *tag line* is the client id (or nothing), and when the
//! server knows who sent the message, a tab and the sender: `u`, tab, `sub`, tab,
//! `name` for a user (the name may be empty), or `g`, tab, `name` for a guest. Neither
//! ids nor names may contain control characters, so tabs and newlines cannot occur
//! inside the fields. The payload follows untouched, so binary needs no encoding.

use std::sync::Arc;

use tungstenite::Message;

use super::{RoomMessage, Tag};
use crate::protocol::person::Person;

/// `message` in the stored form above.
pub fn encode(message: &RoomMessage) -> Vec<u8> {
    let tag = Tag {
        cid: message.cid.clone(),
        sender: message.sender.clone(),
    };
    let kind = if message.raw.is_text() { "t" } else { "b" };
    let mut bytes = format!("{} {kind}\n{}\n", message.ts, tag_line(&tag)).into_bytes();
    bytes.extend_from_slice(message.raw.clone().into_data().as_ref());
    bytes
}

/// Reads message `id` of `epoch` back from its stored form.
///
/// # Errors
/// What is wrong with `bytes`, for a log line.
pub fn decode(id: u64, epoch: u64, bytes: &[u8]) -> Result<RoomMessage, String> {
    let (head, rest) = split_line(bytes).ok_or("no header line")?;
    let (tag, payload) = split_line(rest).ok_or("no tag line")?;
    let head = std::str::from_utf8(head).map_err(|_| "header is not UTF-8")?;
    let (ts, kind) = head.split_once(' ').ok_or("header is not '<ts> <kind>'")?;
    let ts = ts.parse().map_err(|_| "bad timestamp")?;
    let tag = read_tag_line(std::str::from_utf8(tag).map_err(|_| "tag line is not UTF-8")?)?;
    Ok(RoomMessage::new(
        id,
        epoch,
        ts,
        tag,
        payload_of(kind, payload)?,
    ))
}

/// A payload of kind `t` (text, which must be UTF-8) or `b` (binary).
///
/// # Errors
/// An unknown kind, or text that is not UTF-8.
pub fn payload_of(kind: &str, payload: &[u8]) -> Result<Message, String> {
    match kind {
        "t" => String::from_utf8(payload.to_vec())
            .map(Message::text)
            .map_err(|_| "text is not UTF-8".into()),
        "b" => Ok(Message::binary(payload.to_vec())),
        other => Err(format!("unknown kind '{other}'")),
    }
}

/// The first line of `bytes` and what follows it.
pub fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// The tag line of a message (see the module's documentation).
pub fn tag_line(tag: &Tag) -> String {
    let mut line = tag.cid.clone().unwrap_or_default();
    match tag.sender.as_deref() {
        Some(Person::User { sub, name }) => {
            line += &format!("\tu\t{sub}\t{}", name.as_deref().unwrap_or(""));
        }
        Some(Person::Guest { name }) => line += &format!("\tg\t{name}"),
        None => {}
    }
    line
}

/// Reads a tag line back.
///
/// # Errors
/// A sender that is not one.
pub fn read_tag_line(line: &str) -> Result<Tag, String> {
    let mut fields = line.split('\t');
    let cid = fields.next().filter(|c| !c.is_empty()).map(str::to_string);
    let sender = match (fields.next(), fields.next(), fields.next()) {
        (None, ..) => None,
        (Some("u"), Some(sub), name) if !sub.is_empty() => Some(Person::User {
            sub: sub.to_string(),
            name: name.filter(|n| !n.is_empty()).map(str::to_string),
        }),
        (Some("g"), Some(name), None) if !name.is_empty() => Some(Person::Guest {
            name: name.to_string(),
        }),
        _ => return Err("bad sender in the tag line".into()),
    };
    Ok(Tag {
        cid,
        sender: sender.map(Arc::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_with_its_header_and_bytes_untouched() {
        let alice = Person::User {
            sub: "alice".into(),
            name: Some("Alice".into()),
        };
        let tag = Tag {
            cid: Some("m-1".into()),
            sender: Some(Arc::new(alice)),
        };
        for payload in [
            Message::text("hi\nthere"),
            Message::binary(vec![0, 10, 255]),
        ] {
            let message = RoomMessage::new(7, 9, 1700, tag.clone(), payload);
            let back = decode(7, 9, &encode(&message)).unwrap();
            assert_eq!(back.framed, message.framed);
            assert_eq!(
                (back.ts, back.cid, back.sender),
                (1700, message.cid, message.sender)
            );
        }
        for bad in ["", "1 t", "x t\n\n", "1 q\n\n", "1 t\n\tz\n"] {
            assert!(decode(1, 1, bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_sender_travels_in_the_tag_line() {
        let alice = Person::User {
            sub: "alice".into(),
            name: Some("Alice A".into()),
        };
        let guest = Person::Guest { name: "Bob".into() };
        let nameless = Person::User {
            sub: "u1".into(),
            name: None,
        };
        for (cid, sender) in [
            (Some("m-1"), Some(alice)),
            (None, Some(guest)),
            (Some("c"), Some(nameless)),
            (Some("c"), None),
            (None, None),
        ] {
            let tag = Tag {
                cid: cid.map(str::to_string),
                sender: sender.map(Arc::new),
            };
            assert_eq!(read_tag_line(&tag_line(&tag)), Ok(tag));
        }
        for bad in ["c\tx\ty", "\tu\t", "\tg\t", "\tg\ta\tb"] {
            assert!(read_tag_line(bad).is_err(), "{bad:?}");
        }
    }
}

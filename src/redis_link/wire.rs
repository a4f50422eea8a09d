//! How rooms look inside Redis: key names, and the one format a message has both
//! in a room's history stream and on its channel.
//!
//! Keys of room `R` (the `{R}` braces keep them on one Redis Cluster slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `threadcast:{R}:epoch` | string | the room's epoch (16 hex digits) |
//! | `threadcast:{R}:seq` | string | the last id given (`INCR`) |
//! | `threadcast:{R}:log` | stream | the newest `--history` messages (`XADD MAXLEN ~`) |
//! | `threadcast:{R}:cid:C` | string | id of the message client id `C` got (expires) |
//!
//! and the channel `threadcast:room:R` carries each message to every instance.
//!
//! A message, as `publish.lua` writes it (one header line, the client id line, then
//! the payload untouched, so binary payloads need no encoding):
//!
//! ```text
//! <epoch hex> <id> <ts ms> <t|b> <origin hex> <late 0|1>\n<tag line>\n<payload>
//! ```
//!
//! The *tag line* is the client id (or nothing), and when the server knows who sent
//! the message, a tab and the sender: `u`, tab, `sub`, tab, `name` for a user (the
//! name may be empty), or `g`, tab, `name` for a guest. Neither ids nor names may
//! contain control characters, so tabs and newlines cannot occur inside the fields.

use std::sync::Arc;

use tungstenite::Message;

use crate::hub::cluster::Arrival;
use crate::protocol::envelope::{format_epoch, parse_epoch};
use crate::protocol::person::Person;
use crate::room::{RoomMessage, Tag};

/// Every key and channel starts with this.
pub const PREFIX: &str = "threadcast:";
/// Channels are `threadcast:room:<room>`; instances subscribe to the pattern.
pub const CHANNEL_PATTERN: &str = "threadcast:room:*";

/// The keys one room uses, in the order the scripts expect them.
#[derive(Debug)]
pub struct RoomKeys {
    /// The room's epoch.
    pub epoch: String,
    /// The id sequence.
    pub seq: String,
    /// The history stream.
    pub log: String,
    /// The room's channel.
    pub channel: String,
}

impl RoomKeys {
    /// The keys of `room`.
    pub fn new(room: &str) -> Self {
        RoomKeys {
            epoch: format!("{PREFIX}{{{room}}}:epoch"),
            seq: format!("{PREFIX}{{{room}}}:seq"),
            log: format!("{PREFIX}{{{room}}}:log"),
            channel: format!("{PREFIX}room:{room}"),
        }
    }

    /// The key remembering which id client id `cid` got.
    pub fn client_id(&self, cid: &str) -> String {
        format!("{}:cid:{cid}", self.log.trim_end_matches(":log"))
    }
}

/// The room a channel belongs to.
pub fn room_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix(PREFIX)?.strip_prefix("room:")
}

/// An instance's name on the wire (who published a message).
pub fn format_origin(origin: u64) -> String {
    format_epoch(origin)
}

/// The kind letter of a payload: `t` for text, `b` for binary.
pub fn kind(message: &Message) -> &'static str {
    if message.is_text() { "t" } else { "b" }
}

/// Reads a message of `room` in the format above. `me` is this instance's origin:
/// a late message of its own was delivered here already.
pub fn decode(room: &str, bytes: &[u8], me: u64) -> Result<Arrival, String> {
    let (header, rest) = split_line(bytes).ok_or("no header line")?;
    let (cid, payload) = split_line(rest).ok_or("no client id line")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not UTF-8")?;
    let fields: Vec<&str> = header.split(' ').collect();
    let [epoch, id, ts, kind, origin, late] = fields[..] else {
        return Err(format!("header has {} fields, not 6", fields.len()));
    };
    let epoch = parse_epoch(epoch).ok_or("bad epoch")?;
    let id: u64 = id.parse().map_err(|_| "bad id")?;
    let ts: u64 = ts.parse().map_err(|_| "bad timestamp")?;
    let tag = read_tag_line(std::str::from_utf8(cid).map_err(|_| "tag line is not UTF-8")?)?;
    let payload = match kind {
        "t" => Message::text(String::from_utf8(payload.to_vec()).map_err(|_| "text is not UTF-8")?),
        "b" => Message::binary(payload.to_vec()),
        other => return Err(format!("unknown kind '{other}'")),
    };
    Ok(Arrival {
        room: room.to_string(),
        message: Arc::new(RoomMessage::new(id, epoch, ts, tag, payload)),
        delivered_here: late == "1" && parse_epoch(origin) == Some(me),
    })
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
fn read_tag_line(line: &str) -> Result<Tag, String> {
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

fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_cluster_slot_and_channels_name_their_room() {
        let keys = RoomKeys::new("lobby");
        assert_eq!(keys.seq, "threadcast:{lobby}:seq");
        assert_eq!(keys.client_id("m-1"), "threadcast:{lobby}:cid:m-1");
        assert_eq!(room_of_channel(&keys.channel), Some("lobby"));
        assert_eq!(room_of_channel("other:room:x"), None);
    }

    #[test]
    fn a_message_reads_back_with_its_bytes_untouched() {
        let me = 0xabc;
        let wire = format!(
            "{} 42 1700 b {} 1\nm-7\n",
            format_epoch(9),
            format_origin(me)
        );
        let mut bytes = wire.into_bytes();
        bytes.extend_from_slice(&[0, 10, 255]);
        let arrival = decode("lobby", &bytes, me).unwrap();
        let m = &arrival.message;
        assert_eq!((m.id, m.epoch, m.ts), (42, 9, 1700));
        assert_eq!(m.cid.as_deref(), Some("m-7"));
        assert_eq!(m.raw, Message::binary(vec![0, 10, 255]));
        assert!(arrival.delivered_here, "late, and ours");
        assert!(!decode("lobby", &bytes, 0xdef).unwrap().delivered_here);
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

    #[test]
    fn text_without_a_client_id_and_damaged_messages() {
        let ok = format!("{} 1 5 t 01 0\n\nhi\nthere", format_epoch(3));
        let arrival = decode("r", ok.as_bytes(), 1).unwrap();
        assert_eq!(arrival.message.raw, Message::text("hi\nthere"));
        assert_eq!(arrival.message.cid, None);
        for bad in ["", "no newline", "1 2 3\n\n", "zz 1 5 t 01 0\n\nx"] {
            assert!(decode("r", bad.as_bytes(), 1).is_err(), "{bad:?}");
        }
        let bad_text = [
            format!("{} 1 5 t 01 0\n\n", format_epoch(3)).as_bytes(),
            &[0xff],
        ]
        .concat();
        assert!(decode("r", &bad_text, 1).is_err());
    }
}

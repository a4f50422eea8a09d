//! The control frames (see `docs/PROTOCOL.md`): text frames with a JSON header line and
//! nothing after it, which tell a client about the room rather than carry a message —
//! the welcome, gaps, acks, member counts, people arriving and leaving, refusals — and
//! the `close` event that ends an SSE stream.

use crate::protocol::envelope::format_epoch;
use crate::protocol::json::JsonObject;
use crate::protocol::person::Person;

/// What a joining client is told first (the welcome control frame).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Welcome {
    /// The room's epoch.
    pub epoch: u64,
    /// The newest id in the room (0 when nothing was ever published).
    pub last_id: u64,
    /// Members after this join.
    pub members: usize,
    /// The client resumed with another epoch: its ids no longer apply.
    pub epoch_changed: bool,
}

/// The welcome control frame that opens every enveloped join.
/// `users` is who is in the room ([`users_json`]), in rooms small enough to list.
pub fn welcome_json(room: &str, welcome: &Welcome, users: Option<&str>) -> String {
    let mut json = JsonObject::new();
    json.string("type", "welcome")
        .string("room", room)
        .string("epoch", &format_epoch(welcome.epoch))
        .number("last_id", welcome.last_id)
        .number("members", welcome.members as u64)
        .bool("epoch_changed", welcome.epoch_changed);
    if let Some(users) = users {
        json.raw("users", users);
    }
    json.finish()
}

/// A list of people and their connection counts:
/// `[{"sub":"alice","name":"Alice","connections":2},…]`.
pub fn users_json<'a>(people: impl Iterator<Item = (&'a Person, usize)>) -> String {
    let entries: Vec<String> = people
        .map(|(person, connections)| {
            person
                .object()
                .number("connections", connections as u64)
                .finish()
        })
        .collect();
    format!("[{}]", entries.join(","))
}

/// The `join` or `leave` control frame (`kind`): a person's first connection to the
/// room arrived, or their last one left.
pub fn presence_json(kind: &str, person: &Person) -> String {
    JsonObject::new()
        .string("type", kind)
        .raw("user", &person.json())
        .finish()
}

/// The gap control frame: ids `from..=to` are no longer in history.
pub fn gap_json(from: u64, to: u64) -> String {
    JsonObject::new()
        .string("type", "gap")
        .number("from", from)
        .number("to", to)
        .finish()
}

/// The acknowledgement a publisher gets for a message that carried a client id.
pub fn ack_json(cid: &str, id: u64, duplicate: bool) -> String {
    JsonObject::new()
        .string("type", "ack")
        .string("cid", cid)
        .number("id", id)
        .bool("duplicate", duplicate)
        .finish()
}

/// The member-count control frame.
pub fn members_json(count: usize) -> String {
    JsonObject::new()
        .string("type", "members")
        .number("count", count as u64)
        .finish()
}

/// What ends an SSE stream (`event: close`): the close code and reason a WebSocket
/// would have got.
pub fn close_json(code: u16, reason: &str) -> String {
    JsonObject::new()
        .string("type", "close")
        .number("code", u64::from(code))
        .string("reason", reason)
        .finish()
}

/// The `error` control frame: a message of the client's was refused, and why.
pub fn error_json(reason: &str) -> String {
    JsonObject::new()
        .string("type", "error")
        .string("reason", reason)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_match_the_protocol_document() {
        assert_eq!(gap_json(5, 57), r#"{"type":"gap","from":5,"to":57}"#);
        assert_eq!(
            ack_json("m-17", 42, false),
            r#"{"type":"ack","cid":"m-17","id":42,"duplicate":false}"#
        );
        assert_eq!(members_json(4), r#"{"type":"members","count":4}"#);
        let welcome = Welcome {
            epoch: 1,
            last_id: 41,
            members: 3,
            epoch_changed: false,
        };
        assert_eq!(
            welcome_json("lobby", &welcome, None),
            r#"{"type":"welcome","room":"lobby","epoch":"0000000000000001","last_id":41,"members":3,"epoch_changed":false}"#
        );
        let bob = Person::Guest { name: "Bob".into() };
        let users = users_json([(&bob, 2)].into_iter());
        assert_eq!(
            users,
            r#"[{"name":"Bob","unverified":true,"connections":2}]"#
        );
        assert_eq!(
            welcome_json("lobby", &welcome, Some(&users)),
            r#"{"type":"welcome","room":"lobby","epoch":"0000000000000001","last_id":41,"members":3,"epoch_changed":false,"users":[{"name":"Bob","unverified":true,"connections":2}]}"#
        );
        assert_eq!(
            presence_json("leave", &bob),
            r#"{"type":"leave","user":{"name":"Bob","unverified":true}}"#
        );
    }
}

//! Who may join or publish to which room: personal rooms (`@alice` is user alice's,
//! and only hers) and the room patterns a signed token grants (`rooms`, `publish`).
//!
//! The rules, each checked by [`Caller::may`]:
//! - the operator (`--admin-token`) may do anything;
//! - a personal room `@<sub>` admits only the user whose token says `sub`, on every
//!   transport; nobody without a signed token ever enters one;
//! - any other room admits callers without a signed token as before (the shared
//!   `--token`, or no token at all), and a signed token's holder when one of its
//!   `rooms` patterns matches (no `rooms` claim: every room); publishing needs a
//!   `publish` pattern (no `publish` claim: the `rooms` rule again).
//!
//! A pattern is an exact room name, a prefix ending in `*` (`news-*`), or `*` alone. No
//! pattern ever reaches a personal room: `*` means every *shared* room.

use std::sync::Arc;

use super::jwt::Claims;
use super::person::Person;

/// A personal room's name starts with this character, followed by its owner's `sub`.
pub const PERSONAL_ROOM_PREFIX: char = '@';

/// What a caller hears when its token does not cover the room (403, or close 1008).
pub const NOT_ALLOWED_HERE: &str = "not allowed in this room: a personal room (@USER) admits only its owner, and a signed token only the rooms it lists";

/// What a caller wants to do with a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Join it: receive its messages and history (WebSocket, SSE, long poll).
    Join,
    /// Publish into it.
    Publish,
}

/// Who is asking, as its token showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No signed token: the shared `--token`, or no token where none is required.
    Anonymous,
    /// Like [`Caller::Anonymous`], with a display name it chose (`?name=`, only on a
    /// server with no `--jwt-secret`). May do what an anonymous caller may; its
    /// messages say who it claims to be, marked unverified.
    Guest(String),
    /// A user with a valid signed token.
    User(Claims),
    /// The operator (`--admin-token`): a backend.
    Operator,
}

impl Caller {
    /// Whether this caller may do `action` in `room`.
    pub fn may(&self, room: &str, action: Action) -> bool {
        match (self, owner_of(room)) {
            (Caller::Operator, _) => true,
            (Caller::User(claims), Some(owner)) => claims.sub == owner,
            (_, Some(_)) => false,
            (Caller::Anonymous | Caller::Guest(_), None) => true,
            (Caller::User(claims), None) => {
                let granted = match (action, &claims.publish) {
                    (Action::Publish, Some(publish)) => Some(publish),
                    _ => claims.rooms.as_ref(),
                };
                granted.is_none_or(|patterns| patterns.iter().any(|p| matches(p, room)))
            }
        }
    }

    /// The verified user, if any: who a message is from, whose personal room is whose.
    pub fn claims(&self) -> Option<&Claims> {
        match self {
            Caller::User(claims) => Some(claims),
            _ => None,
        }
    }

    /// How long from now the caller's signed token stays valid; `None` for callers
    /// without one (their access does not run out).
    pub fn valid_for(&self) -> Option<std::time::Duration> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.claims().map(|claims| claims.valid_for(now))
    }

    /// Who this caller is to the others in a room: the `from` of its messages, its
    /// entry in the room's presence. `None` for callers with no name.
    pub fn person(&self) -> Option<Arc<Person>> {
        let person = match self {
            Caller::User(claims) => Person::User {
                sub: claims.sub.clone(),
                name: claims.name.clone(),
            },
            Caller::Guest(name) => Person::Guest { name: name.clone() },
            Caller::Anonymous | Caller::Operator => return None,
        };
        Some(Arc::new(person))
    }
}

/// The owner of a personal room (`@alice` → `alice`); `None` for a shared room.
pub fn owner_of(room: &str) -> Option<&str> {
    room.strip_prefix(PERSONAL_ROOM_PREFIX)
}

/// Whether `pattern` (a name, `prefix*`, or `*`) covers the shared room `room`.
fn matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(sub: &str, rooms: Option<&[&str]>, publish: Option<&[&str]>) -> Caller {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|p| p.to_string()).collect());
        Caller::User(Claims {
            sub: sub.into(),
            name: None,
            exp: u64::MAX,
            nbf: None,
            rooms: list(rooms),
            publish: list(publish),
        })
    }

    #[test]
    fn a_personal_room_is_its_owner_s_alone() {
        let alice = user("alice", Some(&["*"]), Some(&["*"]));
        for action in [Action::Join, Action::Publish] {
            assert!(alice.may("@alice", action));
            assert!(
                !alice.may("@bob", action),
                "* never reaches a personal room"
            );
            assert!(!Caller::Anonymous.may("@alice", action));
            assert!(Caller::Operator.may("@bob", action));
        }
        // Her rooms claim does not have to list her own room.
        assert!(user("alice", Some(&["lobby"]), None).may("@alice", Action::Join));
    }

    #[test]
    fn patterns_grant_shared_rooms() {
        let reader = user("r", Some(&["lobby", "news-*"]), Some(&["lobby"]));
        assert!(reader.may("lobby", Action::Join));
        assert!(reader.may("news-1", Action::Join));
        assert!(!reader.may("newsroom", Action::Join));
        assert!(!reader.may("other", Action::Join));
        assert!(reader.may("lobby", Action::Publish));
        assert!(
            !reader.may("news-1", Action::Publish),
            "reading is not writing"
        );
    }

    #[test]
    fn missing_claims_mean_every_shared_room() {
        let open = user("o", None, None);
        assert!(open.may("anything", Action::Join));
        assert!(open.may("anything", Action::Publish));
        // publish falls back to rooms when it is not given.
        let limited = user("l", Some(&["lobby"]), None);
        assert!(limited.may("lobby", Action::Publish));
        assert!(!limited.may("other", Action::Publish));
        assert!(Caller::Anonymous.may("lobby", Action::Publish));
    }
}

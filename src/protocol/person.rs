//! Who a message is from and who is in a room: a [`Person`], as the server knows them.
//!
//! Two kinds, never mixed up:
//! - a **user**, whose signed token says who they are (`sub`, and a display `name` if
//!   the token has one): verified;
//! - a **guest**, who chose a display name with `?name=` on a server with no
//!   `--jwt-secret` (the zero-configuration demo). Anyone can pick any name, so a
//!   guest is written with `"unverified":true` and never with a `sub`.
//!
//! The server writes a person into a room message's header (`from`), into the
//! welcome's `users` and into `join`/`leave` frames; it never reads one from a client.

use super::json::JsonObject;
use super::url::query_param;

/// Longest guest name, in characters.
pub const MAX_GUEST_NAME_CHARS: usize = 32;

/// What a client hears when its `?name=` is not a usable name (400).
pub const BAD_GUEST_NAME: &str = "name must be 1-32 characters with no control characters";

/// Someone the server can name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Person {
    /// A user with a valid signed token.
    User {
        /// The token's `sub`: the user id.
        sub: String,
        /// The token's `name`, if it has one.
        name: Option<String>,
    },
    /// A guest with a display name nobody checked.
    Guest {
        /// The name the guest chose.
        name: String,
    },
}

impl Person {
    /// The person as JSON: `{"sub":"alice","name":"Alice"}` or
    /// `{"name":"Bob","unverified":true}`.
    pub fn json(&self) -> String {
        self.object().finish()
    }

    /// The person's fields, for an object the caller goes on adding to.
    pub fn object(&self) -> JsonObject {
        let mut json = JsonObject::new();
        match self {
            Person::User { sub, name } => {
                json.string("sub", sub);
                if let Some(name) = name {
                    json.string("name", name);
                }
            }
            Person::Guest { name } => {
                json.string("name", name).bool("unverified", true);
            }
        }
        json
    }

    /// The user id, for a verified user.
    pub fn sub(&self) -> Option<&str> {
        match self {
            Person::User { sub, .. } => Some(sub),
            Person::Guest { .. } => None,
        }
    }
}

/// The guest name in `query` (`?name=`): `Ok(None)` when there is none.
///
/// # Errors
/// [`BAD_GUEST_NAME`] when it is empty, too long or has control characters.
pub fn guest_name(query: &str) -> Result<Option<String>, &'static str> {
    let Some(name) = query_param(query, "name") else {
        return Ok(None);
    };
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_GUEST_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(BAD_GUEST_NAME);
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_has_a_sub_and_a_guest_is_marked_unverified() {
        let alice = Person::User {
            sub: "alice".into(),
            name: Some("Alice \"A\"".into()),
        };
        assert_eq!(alice.json(), r#"{"sub":"alice","name":"Alice \"A\""}"#);
        assert_eq!(alice.sub(), Some("alice"));
        let bob = Person::Guest {
            name: "alice".into(),
        };
        assert_eq!(bob.json(), r#"{"name":"alice","unverified":true}"#);
        assert_eq!(bob.sub(), None, "a guest named alice is not alice");
        assert_ne!(
            Person::User {
                sub: "alice".into(),
                name: None
            },
            bob
        );
    }

    #[test]
    fn guest_names_are_bounded() {
        assert_eq!(guest_name("room=x"), Ok(None));
        assert_eq!(guest_name("name=Bob%20B"), Ok(Some("Bob B".into())));
        assert_eq!(
            guest_name(&format!("name={}", "é".repeat(32)))
                .unwrap()
                .unwrap()
                .chars()
                .count(),
            32
        );
        for bad in ["name=", "name=a%0Ab", &format!("name={}", "x".repeat(33))] {
            assert_eq!(guest_name(bad), Err(BAD_GUEST_NAME), "{bad}");
        }
    }
}

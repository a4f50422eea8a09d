//! Who is in a room: each person with a name (a user or a guest, see
//! [`Person`]) and how many connections they have open in it.
//!
//! A person with three tabs open is one entry with `connections: 3`. Their first
//! connection arriving is announced to the room (`join`), and so is their last one
//! leaving (`leave`); the tabs in between change nothing the others see. Connections
//! with no name count only in the room's member count.
//!
//! A connection counts from the moment the hub adds it to the room until its `Leave`
//! arrives — even if the hub dropped it earlier as a slow consumer: it is still
//! connected until it closes, which it does at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::offer::offer;
use super::rooms::Room;
use super::{ConnId, Counters, Notice, Outgoing, PRESENCE_MAX_MEMBERS};
use crate::protocol::control;
use crate::protocol::person::Person;

/// One person present in a room.
#[derive(Debug)]
struct Present {
    /// Who (as their first connection showed them).
    person: Arc<Person>,
    /// Their connections in the room.
    connections: usize,
}

/// The people in one room.
#[derive(Debug, Default)]
pub(super) struct Presence {
    /// Each named connection, and whose it is.
    by_connection: HashMap<ConnId, String>,
    /// Each person, by key (sorted, so lists come out in a stable order).
    people: BTreeMap<String, Present>,
}

/// What identifies a person in a room: a user by `sub`, a guest by name. The two
/// can never be confused: the first character says which.
fn key(person: &Person) -> String {
    match person {
        Person::User { sub, .. } => format!("u{sub}"),
        Person::Guest { name } => format!("g{name}"),
    }
}

impl Presence {
    /// Counts connection `id` of `person` in; `true` when it is their first.
    pub(super) fn arrive(&mut self, id: ConnId, person: &Arc<Person>) -> bool {
        let key = key(person);
        self.by_connection.insert(id, key.clone());
        let present = self.people.entry(key).or_insert_with(|| Present {
            person: Arc::clone(person),
            connections: 0,
        });
        present.connections += 1;
        present.connections == 1
    }

    /// Counts connection `id` out; the person when it was their last connection.
    pub(super) fn depart(&mut self, id: ConnId) -> Option<Arc<Person>> {
        let key = self.by_connection.remove(&id)?;
        let present = self.people.get_mut(&key)?;
        present.connections -= 1;
        if present.connections > 0 {
            return None;
        }
        self.people.remove(&key).map(|gone| gone.person)
    }

    /// The list of people as JSON (the welcome's `users`, `GET /presence`).
    pub(super) fn users_json(&self) -> String {
        let people = self.people.values();
        control::users_json(people.map(|p| (p.person.as_ref(), p.connections)))
    }
}

impl Room {
    /// Tells every enveloped member but `except` that a person arrived or left (small
    /// rooms only, like the member count).
    pub(super) fn announce(&mut self, notice: &Notice, except: ConnId, counters: &Counters) {
        if self.members.len() > PRESENCE_MAX_MEMBERS {
            return;
        }
        self.members.retain(|id, member| {
            *id == except
                || member.raw
                || offer(
                    *id,
                    member,
                    Outgoing::Notice(Box::new(notice.clone())),
                    counters,
                )
        });
    }

    /// The welcome's `users`: `None` in a room too large to list.
    pub(super) fn users_for_welcome(&self) -> Option<String> {
        (self.members.len() <= PRESENCE_MAX_MEMBERS).then(|| self.presence.users_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(sub: &str) -> Arc<Person> {
        Arc::new(Person::User {
            sub: sub.into(),
            name: None,
        })
    }

    #[test]
    fn a_person_arrives_with_the_first_connection_and_leaves_with_the_last() {
        let mut presence = Presence::default();
        let alice = user("alice");
        assert!(presence.arrive(1, &alice), "first tab");
        assert!(!presence.arrive(2, &alice), "second tab");
        assert!(presence.users_json().contains(r#""connections":2"#));
        assert_eq!(presence.depart(1), None);
        assert_eq!(presence.depart(7), None, "a connection never counted");
        assert_eq!(presence.depart(2), Some(alice));
        assert_eq!(presence.users_json(), "[]");
    }

    #[test]
    fn a_guest_named_like_a_user_is_another_person() {
        let mut presence = Presence::default();
        assert!(presence.arrive(1, &user("bob")));
        let guest = Arc::new(Person::Guest { name: "bob".into() });
        assert!(presence.arrive(2, &guest), "not bob's second tab");
        assert_eq!(
            presence.users_json(),
            r#"[{"name":"bob","unverified":true,"connections":1},{"sub":"bob","connections":1}]"#
        );
    }
}

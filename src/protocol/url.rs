//! The small pieces of URL handling the HTTP and WebSocket sides share: splitting a request target
//! into path and query, reading query parameters, percent-decoding, room names.

/// Longest room name; names are `[A-Za-z0-9_-]{1,64}` so they are safe in URLs, logs,
/// JSON and file names without any escaping.
pub const MAX_ROOM_NAME: usize = 64;

/// Splits `/ws/lobby?raw=1` into `("/ws/lobby", "raw=1")`.
pub fn split_target(target: &str) -> (&str, &str) {
    match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    }
}

/// The decoded value of the first `name=value` pair in `query`, if present.
/// `?raw` without `=` yields an empty value. Undecodable values count as absent.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(&value.replace('+', " ")))
}

/// Every value of `name` in `query`, decoded, in order (`?room=a&room=b`); values
/// that do not decode are left out.
pub fn query_params(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == name)
        .filter_map(|(_, value)| percent_decode(&value.replace('+', " ")))
        .collect()
}

/// Whether `?name` is present and not explicitly false (`raw=1`, `raw=true`, `raw`).
pub fn query_flag(query: &str, name: &str) -> bool {
    matches!(
        query_param(query, name).as_deref(),
        Some("" | "1" | "true" | "yes")
    )
}

/// Decodes `%XX` escapes. `None` when an escape is malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `name` is a valid room name: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn is_room_name(name: &str) -> bool {
    (1..=MAX_ROOM_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a client hears when a room name is not one (404).
pub const BAD_ROOM: &str =
    "room names are 1-64 characters of A-Z a-z 0-9 _ -, or @ and a user id (a personal room)";

/// Whether `name` names a room: a shared room ([`is_room_name`]), or a personal one,
/// `@` and its owner's user id in the same characters (64 in all, `@` included).
pub fn is_room(name: &str) -> bool {
    match name.strip_prefix('@') {
        Some(owner) => owner.len() < MAX_ROOM_NAME && is_room_name(owner),
        None => is_room_name(name),
    }
}

/// The room in a path like `/ws/lobby` (or `/ws/@alice`) for `prefix` `/ws/`, if the
/// name is valid.
pub fn room_in_path<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix).filter(|name| is_room(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_splits_at_the_first_question_mark() {
        assert_eq!(split_target("/ws/a?raw=1&x=?"), ("/ws/a", "raw=1&x=?"));
        assert_eq!(split_target("/echo"), ("/echo", ""));
    }

    #[test]
    fn query_params_are_found_and_decoded() {
        assert_eq!(
            query_param("raw=1&token=a%2Bb", "token").as_deref(),
            Some("a+b")
        );
        assert_eq!(query_param("token=a+b", "token").as_deref(), Some("a b"));
        assert_eq!(query_param("raw", "raw").as_deref(), Some(""));
        assert_eq!(query_param("", "raw"), None);
        assert_eq!(query_param("token=%zz", "token"), None);
        assert_eq!(query_params("room=a&x=1&room=%40b", "room"), ["a", "@b"]);
        assert!(query_params("rooms=a", "room").is_empty());
        assert!(query_flag("raw=1", "raw"));
        assert!(query_flag("x=2&raw", "raw"));
        assert!(!query_flag("raw=0", "raw"));
        assert!(!query_flag("rawish=1", "raw"));
    }

    #[test]
    fn percent_decoding_rejects_broken_escapes_and_bad_utf8() {
        assert_eq!(percent_decode("%2e%2E/x").as_deref(), Some("../x"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    }

    #[test]
    fn room_names_are_short_and_plain() {
        assert!(is_room_name("lobby"));
        assert!(is_room_name("A-z_09"));
        assert!(is_room_name(&"a".repeat(64)));
        assert!(!is_room_name(&"a".repeat(65)));
        assert!(!is_room_name(""));
        assert!(!is_room_name("a/b"));
        assert!(!is_room_name("a.b"));
        assert!(!is_room_name("é"));
        assert_eq!(room_in_path("/ws/ops", "/ws/"), Some("ops"));
        assert_eq!(room_in_path("/ws/", "/ws/"), None);
        assert_eq!(room_in_path("/ws/a/b", "/ws/"), None);
    }
}

//! Property tests (fuzzing with proptest) for every parser we wrote by hand: URL
//! pieces, room names, the handshake checks, Host/Origin/Authorization parsing, and
//! static-file paths. Each property runs a bounded number of random cases per
//! `cargo test`; set `PROPTEST_CASES=100000` for a longer run.
//!
//! The properties: nothing panics on any input; decoding inverts encoding; every
//! accepted value really has the promised shape; no request path ever reaches a file
//! outside the public folder.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use threadcast::internals::Head;
use threadcast::internals::handshake::{self, Checks, Route};
use threadcast::internals::url::{
    is_room_name, percent_decode, query_flag, query_param, room_in_path, split_target,
};
use threadcast::internals::{
    AccessPolicy, bearer_token, host_without_port, is_loopback_name, normalize_host,
};
use threadcast::internals::{Lookup, StaticFiles};

/// Cases per property: cheap ones run many, the file-system one fewer. No regression
/// files are written into the source tree.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Percent-encodes every byte that is not unreserved (RFC 3986).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Strings built from the characters URL parsers care about, plus anything else.
fn url_ish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("%".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("%00".to_string()),
        Just("%25".to_string()),
        Just("%c0%ae".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("/".to_string()),
        Just("\\".to_string()),
        Just("?".to_string()),
        Just("&".to_string()),
        Just("=".to_string()),
        Just("+".to_string()),
        "[a-z0-9]{1,4}",
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

mod url {
    use super::*;

    proptest! {
        #![proptest_config(cases(500))]

        #[test]
        fn split_target_cuts_at_the_first_question_mark(target in url_ish()) {
            let (path, query) = split_target(&target);
            prop_assert!(!path.contains('?'));
            let joined = if target.contains('?') { format!("{path}?{query}") } else { path.to_string() };
            prop_assert_eq!(joined, target);
        }

        #[test]
        fn percent_decoding_inverts_percent_encoding(s in any::<String>()) {
            prop_assert_eq!(percent_decode(&percent_encode(&s)), Some(s));
        }

        #[test]
        fn percent_decoding_never_panics_and_never_grows(s in url_ish()) {
            if let Some(decoded) = percent_decode(&s) {
                prop_assert!(decoded.len() <= s.len());
                if !s.contains('%') {
                    prop_assert_eq!(decoded, s);
                }
            }
        }

        #[test]
        fn query_params_find_the_first_value_decoded(
            pairs in proptest::collection::vec(("[a-z]{1,3}", any::<String>()), 0..6),
            name in "[a-z]{1,3}",
        ) {
            let query = pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let expected = pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
            prop_assert_eq!(query_param(&query, &name), expected);
        }

        #[test]
        fn query_parsing_never_panics(query in url_ish(), name in url_ish()) {
            let _ = query_param(&query, &name);
            let _ = query_flag(&query, &name);
        }

        #[test]
        fn room_names_are_exactly_1_to_64_plain_characters_or_a_personal_room(name in url_ish()) {
            let plain_name = |n: &str| !n.is_empty()
                && n.len() <= 64
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            let plain = plain_name(&name);
            prop_assert_eq!(is_room_name(&name), plain);
            // `@` and a user id of plain characters is a personal room (64 in all).
            let personal = name.len() <= 64 && name.strip_prefix('@').is_some_and(plain_name);
            let path = format!("/ws/{name}");
            let routed = plain || personal;
            prop_assert_eq!(room_in_path(&path, "/ws/"), routed.then_some(name.as_str()));
        }

        #[test]
        fn every_personal_room_is_routed(name in "@[A-Za-z0-9_-]{1,63}") {
            let path = format!("/ws/{name}");
            prop_assert_eq!(room_in_path(&path, "/ws/"), Some(name.as_str()));
        }

        #[test]
        fn every_valid_room_name_is_routed(name in "[A-Za-z0-9_-]{1,64}") {
            prop_assert!(is_room_name(&name));
            let path = format!("/ws/{name}");
            prop_assert_eq!(room_in_path(&path, "/ws/"), Some(name.as_str()));
        }
    }
}

mod handshake_checks {
    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Parses the head as the door does, then runs the handshake checks.
    fn check(
        request: &[u8],
        policy: &AccessPolicy,
    ) -> Result<handshake::Accepted, handshake::Rejection> {
        let head = match Head::parse(request) {
            Ok(Some(head)) => head,
            Ok(None) => {
                return Err(handshake::Rejection {
                    status: 0,
                    message: "incomplete".into(),
                });
            }
            Err((status, message)) => return Err(handshake::Rejection { status, message }),
        };
        handshake::check(
            &head,
            &Checks {
                policy,
                peer: LOOPBACK,
                token_in_first_message: false,
            },
        )
    }

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn request(path: &str, key: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:8081\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    proptest! {
        #![proptest_config(cases(300))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = check(&bytes, &AccessPolicy::default());
        }

        #[test]
        fn any_prefix_of_a_request_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cut in any::<usize>(),
        ) {
            let cut = if bytes.is_empty() { 0 } else { cut % (bytes.len() + 1) };
            let _ = check(&bytes[..cut], &AccessPolicy::default());
        }

        #[test]
        fn request_bodies_framing_never_panics(
            lengths in proptest::collection::vec("[0-9a-zA-Z ,-]{0,24}", 0..3),
            codings in proptest::collection::vec("[a-zA-Z ,]{0,16}", 0..2),
        ) {
            let mut text = String::from("POST /publish/a HTTP/1.1\r\n");
            for l in &lengths { text.push_str(&format!("Content-Length: {l}\r\n")); }
            for c in &codings { text.push_str(&format!("Transfer-Encoding: {c}\r\n")); }
            text.push_str("\r\n");
            if let Ok(Some(head)) = Head::parse(text.as_bytes()) {
                if let Ok(threadcast::internals::Framing::Length(n)) = threadcast::internals::framing(&head, 1000) {
                    prop_assert!(n <= 1000);
                }
            }
        }

        #[test]
        fn mutated_handshakes_never_panic(
            room in "[a-z]{1,8}",
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = request(&format!("/ws/{room}?raw=1"), "dGhlIHNhbXBsZSBub25jZQ==", "").into_bytes();
            for (at, byte) in flips {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if let Ok(accepted) = check(&bytes, &AccessPolicy::default()) {
                prop_assert_eq!(accepted.accept_key.len(), 28);
            }
        }

        #[test]
        fn every_well_formed_handshake_is_accepted_with_the_right_key(
            key_bytes in proptest::array::uniform16(any::<u8>()),
            room in "[A-Za-z0-9_-]{1,64}",
            raw in any::<bool>(),
            trailing in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let key = base64(&key_bytes);
            let path = if raw { format!("/ws/{room}?raw=1") } else { format!("/ws/{room}") };
            let mut bytes = request(&path, &key, "").into_bytes();
            bytes.extend_from_slice(&trailing);
            let accepted = check(&bytes, &AccessPolicy::default()).map_err(|r| TestCaseError::fail(r.message))?;
            prop_assert_eq!(accepted.accept_key, tungstenite::handshake::derive_accept_key(key.as_bytes()));
            prop_assert_eq!(accepted.leftover, trailing);
            match accepted.route {
                Route::Room { name, raw: got_raw, .. } => {
                    prop_assert_eq!(name, room);
                    prop_assert_eq!(got_raw, raw);
                }
                other => prop_assert!(false, "routed to {:?}", other),
            }
        }

        #[test]
        fn a_key_that_is_not_16_bytes_of_base64_is_refused(key in "[A-Za-z0-9+/=!]{0,40}") {
            let valid = key.len() == 24
                && key.ends_with("==")
                && key[..22].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
            let result = check(request("/echo", &key, "").as_bytes(), &AccessPolicy::default());
            match result {
                Ok(_) => prop_assert!(valid, "accepted key {:?}", key),
                Err(rejection) => {
                    prop_assert!(!valid, "refused valid key {:?}: {}", key, rejection.message);
                    prop_assert_eq!(rejection.status, 400);
                }
            }
        }
    }
}

mod access {
    use super::*;

    fn policy() -> AccessPolicy {
        AccessPolicy::default()
    }

    proptest! {
        #![proptest_config(cases(500))]

        #[test]
        fn host_parsing_never_panics(host in url_ish(), origin in url_ish(), auth in url_ish()) {
            let stripped = host_without_port(&host);
            prop_assert!(host.trim().starts_with(stripped));
            let _ = normalize_host(&host);
            let _ = is_loopback_name(&host);
            let p = policy();
            let _ = p.host_allowed(Some(&host), IpAddr::V4(Ipv4Addr::LOCALHOST));
            let _ = p.origin_allowed(Some(&origin), Some(&host));
            let _ = bearer_token(&auth);
        }

        #[test]
        fn loopback_names_pass_with_any_port(
            name in prop_oneof![
                Just("localhost".to_string()),
                "[a-z0-9-]{1,10}\\.localhost",
                (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| format!("127.{a}.{b}.{c}")),
                Just("[::1]".to_string()),
            ],
            port in proptest::option::of(any::<u16>()),
        ) {
            let host = match port { Some(p) => format!("{name}:{p}"), None => name };
            prop_assert!(policy().host_allowed(Some(&host), IpAddr::V4(Ipv4Addr::LOCALHOST)), "{}", host);
        }

        #[test]
        fn other_names_on_loopback_are_refused(
            label in "[a-z0-9-]{1,12}",
            tld in "(com|example|test|io|nip\\.io|localhost\\.evil)",
            port in proptest::option::of(any::<u16>()),
        ) {
            let name = format!("{label}.{tld}");
            let host = match port { Some(p) => format!("{name}:{p}"), None => name };
            prop_assert!(!policy().host_allowed(Some(&host), IpAddr::V4(Ipv4Addr::LOCALHOST)), "{}", host);
        }

        #[test]
        fn a_bearer_token_is_read_back_exactly(token in "[!-~]{1,40}") {
            let header = format!("Bearer {token}");
            prop_assert_eq!(bearer_token(&header), Some(token.as_str()));
        }
    }
}

mod static_paths {
    use super::*;

    /// A public folder with one file, beside a secret file and with symlinks out.
    fn site() -> &'static (PathBuf, StaticFiles) {
        static SITE: OnceLock<(PathBuf, StaticFiles)> = OnceLock::new();
        SITE.get_or_init(|| {
            let root = common::temp_dir("fuzz-static");
            let public = root.join("public");
            std::fs::create_dir_all(public.join("sub")).unwrap();
            std::fs::write(public.join("index.html"), b"inside").unwrap();
            std::fs::write(public.join("sub/a.txt"), b"inside").unwrap();
            std::fs::write(root.join("secret.txt"), b"SECRET").unwrap();
            std::os::unix::fs::symlink(root.join("secret.txt"), public.join("sub/link.txt"))
                .unwrap();
            std::os::unix::fs::symlink(&root, public.join("up")).unwrap();
            let files = StaticFiles::new(&public);
            (public, files)
        })
    }

    /// Paths made of traversal material and the real names in and around the folder.
    fn hostile_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("..".to_string()),
            Just("%2e%2e".to_string()),
            Just("%2E.".to_string()),
            Just(".%2e".to_string()),
            Just(".".to_string()),
            Just("/".to_string()),
            Just("%2f".to_string()),
            Just("%5c".to_string()),
            Just("\\".to_string()),
            Just("%00".to_string()),
            Just("%252e".to_string()),
            Just("secret.txt".to_string()),
            Just("sub".to_string()),
            Just("up".to_string()),
            Just("link.txt".to_string()),
            Just("public".to_string()),
            Just("index.html".to_string()),
            "[a-z]{1,3}",
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #![proptest_config(cases(300))]

        #[test]
        fn no_path_reaches_a_file_outside_the_folder(path in hostile_path()) {
            let (_, files) = site();
            if let Lookup::Found(mut found) = files.lookup(&path) {
                let mut body = Vec::new();
                found.body.read_to_end(&mut body).unwrap();
                prop_assert_eq!(body.as_slice(), b"inside", "{} escaped the folder", path);
            }
        }

        #[test]
        fn arbitrary_paths_never_panic(path in any::<String>()) {
            let (_, files) = site();
            let _ = files.lookup(&path);
            let _ = files.lookup(&format!("/{path}"));
        }
    }
}

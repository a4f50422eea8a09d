//! Each flag's value, checked: addresses, origins, sizes, durations, feeds, URLs. A
//! wrong value is a [`UsageError`] that names the flag.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::defaults::MIN_JWT_SECRET_BYTES;
use super::{Feed, FeedSource, UsageError};
use crate::logging::LogSpec;

/// A log spec from `source` (`--log-level` or `RUST_LOG`); see [`LogSpec`].
pub(super) fn parse_log_spec(source: &str, spec: &str) -> Result<LogSpec, UsageError> {
    spec.parse()
        .map_err(|e| UsageError(format!("{source}: {e}")))
}

/// A token from `source` (`--token` or [`TOKEN_ENV`](super::defaults::TOKEN_ENV)). An empty one is refused: every
/// check would compare against nothing, which is the same as no token at all, and an
/// operator who set it surely meant to require one.
pub(super) fn parse_token(source: &str, token: String) -> Result<String, UsageError> {
    if token.is_empty() {
        Err(UsageError(format!(
            "{source}: an empty token would turn authentication off; leave it unset for no token"
        )))
    } else {
        Ok(token)
    }
}

/// `--jwt-secret` (or [`JWT_SECRET_ENV`](super::defaults::JWT_SECRET_ENV)): at least
/// [`MIN_JWT_SECRET_BYTES`] bytes.
pub(super) fn parse_jwt_secret(source: &str, secret: String) -> Result<String, UsageError> {
    if secret.len() < MIN_JWT_SECRET_BYTES {
        return Err(UsageError(format!(
            "{source}: a JWT secret needs at least {MIN_JWT_SECRET_BYTES} bytes (HS256's key \
             should be as long as its hash); a short one is guessable from a single token"
        )));
    }
    Ok(secret)
}

/// `--allow-origin`: `*`, or an origin as browsers send it in the `Origin` header,
/// `scheme://host[:port]` and nothing after (one trailing `/` is forgiven). A value
/// without a scheme or with a path could never equal a real `Origin`, so the flag
/// would silently allow nothing.
pub(super) fn parse_origin(value: &str) -> Result<String, UsageError> {
    if value == "*" {
        return Ok(value.to_string());
    }
    let origin = value.strip_suffix('/').unwrap_or(value);
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(UsageError(format!(
            "--allow-origin: '{value}' needs a scheme, like https://{origin}"
        )));
    };
    if let Some(end) = authority.find(['/', '?', '#']) {
        return Err(UsageError(format!(
            "--allow-origin: '{value}' has a path; an origin is scheme://host[:port], like {scheme}://{}",
            &authority[..end]
        )));
    }
    if !is_scheme(scheme) || !is_host_and_port(authority) {
        return Err(UsageError(format!(
            "--allow-origin: '{value}' is not scheme://host[:port], like https://example.com"
        )));
    }
    Ok(origin.to_string())
}

/// A URL scheme: a letter, then letters, digits, `+`, `-` or `.` (RFC 3986).
pub(super) fn is_scheme(scheme: &str) -> bool {
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// `host` or `host:port`, where host may be a bracketed IPv6 literal (`[::1]:8080`).
/// No user name (`user@host`) and no spaces: browsers never send those in `Origin`.
pub(super) fn is_host_and_port(authority: &str) -> bool {
    // The port starts after the last `:` that is not inside an IPv6 literal.
    let after_literal = authority.rfind(']').map_or(0, |i| i + 1);
    let (host, port) = match authority[after_literal..].rfind(':') {
        Some(i) => (
            &authority[..after_literal + i],
            Some(&authority[after_literal + i + 1..]),
        ),
        None => (authority, None),
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok());
    let odd = authority.contains(|c: char| c == '@' || c.is_whitespace());
    !host.is_empty() && port_ok && !odd
}

/// The path given to `--tls-cert` or `--tls-key`; an error in a build without TLS, so
/// the flag is not mistaken for a typo.
pub(super) fn tls_file(flag: &str, value: String) -> Result<PathBuf, UsageError> {
    if cfg!(feature = "tls") {
        Ok(PathBuf::from(value))
    } else {
        Err(UsageError(format!(
            "{flag}: this threadcast was built without TLS support; rebuild with --features tls"
        )))
    }
}

/// `--redis URL`: only in a build with the `redis` feature, and only plain
/// connections (the URL may carry a password, so it is never echoed back).
pub(super) fn parse_redis_url(value: &str) -> Result<String, UsageError> {
    if !cfg!(feature = "redis") {
        return Err(UsageError(
            "--redis: this build has no Redis support; build with `cargo build --release --features redis`".into(),
        ));
    }
    if !(value.starts_with("redis://") || value.starts_with("unix://")) {
        return Err(UsageError(
            "--redis: the URL must start with redis:// or unix://".into(),
        ));
    }
    Ok(value.to_string())
}

/// `--http` / `--ws`: `IP:PORT`, or `NAME:PORT` resolved here, once, at start-up.
pub(super) fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, UsageError> {
    // An IP address needs no lookup, which could be slow or fail.
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let has_port = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        return Err(UsageError(format!(
            "{flag}: '{value}' is not an address like 127.0.0.1:8080 or localhost:8080"
        )));
    }
    let found = value
        .to_socket_addrs()
        .map_err(|e| UsageError(format!("{flag}: cannot resolve '{value}': {e}")))?;
    pick_address(found)
        .ok_or_else(|| UsageError(format!("{flag}: '{value}' resolves to no address")))
}

/// The address to listen on among those a name resolves to: the first IPv4 one, else
/// the first. IPv4 because `localhost` often resolves to `::1` first, and listening
/// there fails outright on hosts with IPv6 turned off (many containers), and misses
/// clients that use `127.0.0.1` — the default and what the README and scripts use.
/// For IPv6, give the literal: `--http [::1]:8080`.
pub(super) fn pick_address(found: impl IntoIterator<Item = SocketAddr>) -> Option<SocketAddr> {
    let found: Vec<SocketAddr> = found.into_iter().collect();
    found
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(found.first())
        .copied()
}

/// A size in bytes (see [`crate::budget::parse_size`]); 0 is refused.
pub(super) fn parse_bytes(flag: &str, value: &str) -> Result<usize, UsageError> {
    match crate::budget::parse_size(value) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(UsageError(format!(
            "{flag}: '{value}' is not a size, like 65536, 64KiB or 256MiB"
        ))),
    }
}

/// `--memory-limit SIZE`, at least [`crate::budget::MIN_LIMIT`].
pub(super) fn parse_memory_limit(value: &str) -> Result<usize, UsageError> {
    let bytes = parse_bytes("--memory-limit", value)?;
    if bytes < crate::budget::MIN_LIMIT {
        return Err(UsageError(format!(
            "--memory-limit: '{value}' is below the smallest budget, {}",
            crate::budget::Size(crate::budget::MIN_LIMIT)
        )));
    }
    Ok(bytes)
}

pub(super) fn parse_count(flag: &str, value: &str) -> Result<usize, UsageError> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(UsageError(format!(
            "{flag}: '{value}' is not a positive whole number"
        ))),
    }
}

pub(super) fn parse_feed(value: &str) -> Result<Feed, UsageError> {
    let bad = || {
        UsageError(format!(
            "--feed: '{value}' is not ROOM=COMMAND or ROOM=- (room: 1-64 of A-Z a-z 0-9 _ -)"
        ))
    };
    let (room, command) = value.split_once('=').ok_or_else(bad)?;
    if !crate::protocol::url::is_room_name(room) || command.trim().is_empty() {
        return Err(bad());
    }
    let source = if command == "-" {
        FeedSource::Stdin
    } else {
        FeedSource::Command(command.to_string())
    };
    Ok(Feed {
        room: room.to_string(),
        source,
    })
}

pub(super) fn parse_ws_url(value: &str) -> Result<String, UsageError> {
    if value.starts_with("ws://") || value.starts_with("wss://") {
        Ok(value.trim_end_matches('/').to_string())
    } else {
        Err(UsageError(format!(
            "--public-ws-url: '{value}' must start with ws:// or wss://"
        )))
    }
}

/// `20` (seconds), `500ms`, `20s` or `2m`.
pub fn parse_duration(flag: &str, value: &str) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "{flag}: '{value}' is not a duration like 20s or 500ms"
        ))
    };
    let (number, unit_ms) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = value.strip_suffix('m') {
        (n, 60_000)
    } else {
        (value, 1_000)
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(bad()),
    }
}

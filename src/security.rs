//! Who may connect: the Origin check and the shared-secret token.
//!
//! **Origin.** Browsers attach an `Origin` header to every WebSocket handshake and,
//! unlike with `fetch`, the server is the only one who can refuse a cross-site one.
//! Without this check any web page a user visits could open a socket to our server
//! with the user's cookies and network position (cross-site WebSocket hijacking). By
//! default we accept an Origin only when its host is the host the browser was talking
//! to (the `Host` header), so our own page may open sockets on the host it came from.
//! Clients that are not browsers send no Origin and are allowed.
//!
//! **Token.** An optional shared secret, compared in constant time so a timing
//! attacker cannot learn it byte by byte, and never logged. With `--jwt-secret`, a
//! signed token (an HS256 JWT, see `protocol/jwt.rs`) is accepted wherever the shared
//! one is; why one is refused is logged, the token never.
//!
//! **Host (DNS rebinding).** The Origin check alone cannot stop this attack: a page on
//! `http://evil.example:8080` waits until its DNS entry expires, then answers the next
//! lookup of `evil.example` with `127.0.0.1`. The browser now sends the page's requests
//! to *our* loopback server, and to the browser they are same-origin (Origin and Host
//! both say `evil.example`), so the page may read every answer: `/stats`, room
//! messages, anything a local-only server thought was private. What gives it away is
//! the `Host` header, which still names the attacker's domain. So on a loopback
//! connection we accept only Host values that name loopback (`localhost`,
//! `*.localhost`, `127.0.0.0/8`, `[::1]`, with any port) plus names the operator lists
//! with `--allow-host`; anything else gets 403. A request without Host (not a browser)
//! passes. Connections from other machines are not checked: the server was bound to a
//! public address on purpose, and Origin and token rules protect it there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::Config;
use crate::protocol::jwt::{self, Claims};
use crate::protocol::person::guest_name;
use crate::protocol::rights::Caller;

/// The rules from the configuration, prepared once at start-up.
#[derive(Clone, Debug, Default)]
pub struct AccessPolicy {
    allowed_origins: Vec<String>,
    any_origin: bool,
    token: Option<String>,
    /// `--jwt-secret`: the key HS256 tokens are signed with.
    jwt_secret: Option<Vec<u8>>,
    /// `--admin-token`: the operator's token.
    admin_token: Option<String>,
    /// Extra names accepted in `Host` on loopback connections, normalized.
    allowed_hosts: Vec<String>,
    /// `--allow-host '*'`: the Host check is off.
    any_host: bool,
}

impl AccessPolicy {
    /// Builds the policy; warns once when every origin is allowed.
    pub fn new(config: &Config) -> Self {
        let any_origin = config.allowed_origins.iter().any(|o| o == "*");
        if any_origin {
            log::warn!("--allow-origin '*': any web site may open WebSockets to this server");
        }
        AccessPolicy {
            allowed_origins: config
                .allowed_origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| normalize_origin(o))
                .collect(),
            any_origin,
            token: config.token.clone(),
            jwt_secret: config.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            admin_token: config.admin_token.clone(),
            allowed_hosts: Vec::new(),
            any_host: false,
        }
        .allow_hosts(&config.allowed_hosts)
        // Behind a proxy, the public name the page is told to use is a legitimate Host.
        .allow_hosts(config.public_ws_url.as_deref().and_then(origin_host))
    }

    /// Adds names that may appear in `Host` on loopback connections besides loopback
    /// itself (`--allow-host NAME`, repeatable; `*` turns the check off, logged as a
    /// warning). Names compare case-insensitively, without port or trailing dot.
    #[must_use]
    pub fn allow_hosts<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        for name in names {
            let name = name.as_ref();
            if name.trim() == "*" {
                log::warn!("--allow-host '*': DNS rebinding protection is off");
                self.any_host = true;
            } else {
                self.allowed_hosts.push(normalize_host(name));
            }
        }
        self
    }

    /// Whether a request with this `Host` header (if any), arriving from `peer`, may
    /// proceed: the DNS-rebinding guard described in the module documentation.
    pub fn host_allowed(&self, host: Option<&str>, peer: IpAddr) -> bool {
        if !peer.to_canonical().is_loopback() || self.any_host {
            return true; // only loopback connections can be reached by rebinding a name
        }
        let Some(host) = host else {
            return true; // not a browser: browsers always send Host
        };
        let name = normalize_host(host);
        is_loopback_name(&name) || self.allowed_hosts.contains(&name)
    }

    /// Whether a handshake with this `Origin` (if any) and `Host` may proceed.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true; // not a browser: nothing to protect against
        };
        if self.any_origin {
            return true;
        }
        let origin = normalize_origin(origin);
        if self.allowed_origins.contains(&origin) {
            return true;
        }
        match (origin_host(&origin), host) {
            (Some(origin_host), Some(host)) => {
                origin_host.eq_ignore_ascii_case(host_without_port(host))
            }
            _ => false,
        }
    }

    /// Whether `origin` is one that `--allow-origin` names (or `*` allows): such a
    /// page gets CORS headers. The same-host rule of [`origin_allowed`] needs none.
    ///
    /// [`origin_allowed`]: Self::origin_allowed
    pub fn origin_listed(&self, origin: &str) -> bool {
        self.any_origin || self.allowed_origins.contains(&normalize_origin(origin))
    }

    /// Whether a token is required at all.
    pub fn token_required(&self) -> bool {
        self.token.is_some() || self.jwt_secret.is_some()
    }

    /// Whether `presented` lets its holder in: the shared token, or a valid signed
    /// token under `--jwt-secret` (always true when neither is set).
    pub fn token_ok(&self, presented: Option<&str>) -> bool {
        self.caller(presented).is_some()
    }

    /// Whether signed tokens name the users (`--jwt-secret`); if not, guests may name
    /// themselves (`?name=`), unverified.
    pub fn signs_identities(&self) -> bool {
        self.jwt_secret.is_some()
    }

    /// Whether an operator token (`--admin-token`) is set.
    pub fn has_operator(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Who `presented` shows its holder to be: the operator (`--admin-token`), a user
    /// (a valid signed token), or anonymous (the shared token, or no token where none
    /// is required); `None` when it lets nobody in.
    pub fn caller(&self, presented: Option<&str>) -> Option<Caller> {
        let matches = |expected: &Option<String>, given: &str| {
            expected.as_deref().is_some_and(|e| tokens_equal(e, given))
        };
        match presented {
            Some(given) if matches(&self.admin_token, given) => Some(Caller::Operator),
            Some(given) if matches(&self.token, given) => Some(Caller::Anonymous),
            Some(given) if self.jwt_secret.is_some() => self.identity(given).map(Caller::User),
            _ => (!self.token_required()).then_some(Caller::Anonymous),
        }
    }

    /// `caller` with the display name it chose (`?name=` in `query`) when it is an
    /// anonymous caller on a server with no `--jwt-secret`: a guest, whose name is
    /// passed on marked unverified. Where signed tokens name users, `?name=` is
    /// ignored, so a made-up name never sits beside a verified one.
    ///
    /// # Errors
    /// The reason (for a 400) when the name is not a usable one.
    pub fn with_guest_name(&self, caller: Caller, query: &str) -> Result<Caller, &'static str> {
        if caller != Caller::Anonymous || self.signs_identities() {
            return Ok(caller);
        }
        Ok(guest_name(query)?.map_or(Caller::Anonymous, Caller::Guest))
    }

    /// The claims of `token` when it is a valid signed token under `--jwt-secret`.
    /// Why one is refused is logged (at debug: a client can send many); the token
    /// never is.
    pub fn identity(&self, token: &str) -> Option<Claims> {
        let secret = self.jwt_secret.as_deref()?;
        match jwt::verify(token, secret, unix_seconds()) {
            Ok(claims) => Some(claims),
            Err(e) => {
                log::debug!("refused a signed token: {e}");
                None
            }
        }
    }
}

/// Compares two secrets in time that depends only on their lengths, never on where
/// they first differ.
fn tokens_equal(expected: &str, given: &str) -> bool {
    constant_time_eq::constant_time_eq(expected.as_bytes(), given.as_bytes())
}

/// Seconds since 1970 by the system clock (0 if it is before then).
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token in an `Authorization: Bearer TOKEN` header value.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The first address in an `X-Forwarded-For` value: the client as the proxy nearest
/// to it reported. Only to be believed with `--trust-proxy` (anyone can send it).
pub fn forwarded_client(header: Option<&str>) -> Option<String> {
    let first = header?.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// Origins compare case-insensitively and without a trailing slash.
fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// `https://example.com:8443` → `example.com`; `http://[::1]:8080` → `[::1]`.
fn origin_host(origin: &str) -> Option<&str> {
    let (_scheme, rest) = origin.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    Some(host_without_port(authority))
}

/// A `Host` value as compared by the rebinding guard: no port, no trailing dot,
/// lowercase. `LocalHost.:8080` → `localhost`.
pub fn normalize_host(host: &str) -> String {
    let name = host_without_port(host);
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether a normalized host name can only mean this machine: `localhost` and
/// `*.localhost` (RFC 6761: never sent to DNS by browsers), an IPv4 literal in
/// 127.0.0.0/8, or a bracketed IPv6 loopback literal (`[::1]`, `[::ffff:127.0.0.1]`).
/// IP literals cannot be rebound, and only loopback ones reach a loopback listener.
pub fn is_loopback_name(name: &str) -> bool {
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .is_ok_and(|ip| IpAddr::V6(ip).to_canonical().is_loopback());
    }
    name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`; `example.com` unchanged.
pub fn host_without_port(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], token: Option<&str>) -> AccessPolicy {
        AccessPolicy::new(&Config {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            token: token.map(str::to_string),
            ..Config::default()
        })
    }

    #[test]
    fn same_host_on_another_port_is_allowed() {
        let p = policy(&[], None);
        assert!(p.origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8081")));
        assert!(p.origin_allowed(Some("http://LOCALHOST:8080"), Some("localhost:8081")));
        assert!(p.origin_allowed(Some("http://[::1]:8080"), Some("[::1]:8081")));
    }

    #[test]
    fn an_https_page_may_reach_the_same_host_over_wss() {
        // With --tls-cert the page comes from https:// and connects with wss://; the
        // check compares hosts only, so the scheme makes no difference.
        let p = policy(&[], None);
        assert!(p.origin_allowed(Some("https://localhost:8080"), Some("localhost:8081")));
        assert!(p.origin_allowed(Some("https://127.0.0.1:8443"), Some("127.0.0.1:8444")));
        assert!(!p.origin_allowed(Some("https://evil.example"), Some("localhost:8081")));
    }

    #[test]
    fn other_sites_and_odd_origins_are_refused() {
        let p = policy(&[], None);
        assert!(!p.origin_allowed(Some("https://evil.example"), Some("127.0.0.1:8081")));
        assert!(!p.origin_allowed(Some("null"), Some("127.0.0.1:8081")));
        assert!(!p.origin_allowed(
            Some("http://127.0.0.1.evil.example"),
            Some("127.0.0.1:8081")
        ));
        assert!(!p.origin_allowed(Some("http://localhost:8080"), None));
    }

    #[test]
    fn requests_without_origin_are_not_browsers_and_pass() {
        assert!(policy(&[], None).origin_allowed(None, None));
    }

    #[test]
    fn configured_origins_and_the_wildcard_are_honoured() {
        let p = policy(&["https://app.example/"], None);
        assert!(p.origin_allowed(Some("https://APP.example"), Some("ws.example:443")));
        assert!(!p.origin_allowed(Some("http://app.example"), Some("ws.example:443")));
        assert!(policy(&["*"], None).origin_allowed(Some("https://anything"), Some("x")));
    }

    #[test]
    fn tokens_must_match_exactly() {
        let p = policy(&[], Some("s3cret"));
        assert!(p.token_required());
        assert!(p.token_ok(Some("s3cret")));
        assert!(!p.token_ok(Some("s3cre")));
        assert!(!p.token_ok(Some("s3cretX")));
        assert!(!p.token_ok(None));
        assert!(policy(&[], None).token_ok(None));
    }

    #[test]
    fn bearer_tokens_are_read_from_authorization() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn loopback_names_pass_the_rebinding_guard_with_any_port() {
        let p = policy(&[], None);
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.:1",
            "app.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8081",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:8081",
            "[0:0:0:0:0:0:0:1]:9",
            "[::ffff:127.0.0.1]:8080",
        ] {
            assert!(p.host_allowed(Some(host), LOOPBACK), "{host}");
        }
    }

    #[test]
    fn other_names_on_a_loopback_connection_are_refused() {
        let p = policy(&[], None);
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "localhostx",
            "127.0.0.1:80x",
            "127.1",
            "0.0.0.0",
            "10.0.0.1:8080",
            "[::2]",
            "[::1",
            "::1",
            "",
            " ",
        ] {
            assert!(!p.host_allowed(Some(host), LOOPBACK), "{host:?}");
        }
        let v6_peer = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(!p.host_allowed(Some("evil.example"), v6_peer));
        let mapped_peer: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(!p.host_allowed(Some("evil.example"), mapped_peer));
    }

    #[test]
    fn allowed_hosts_and_the_wildcard_open_the_guard() {
        let p = policy(&[], None).allow_hosts(["App.Example.", "other.test"]);
        assert!(p.host_allowed(Some("app.example:8080"), LOOPBACK));
        assert!(p.host_allowed(Some("OTHER.test"), LOOPBACK));
        assert!(!p.host_allowed(Some("sub.app.example"), LOOPBACK));
        assert!(
            policy(&[], None)
                .allow_hosts(["*"])
                .host_allowed(Some("x.example"), LOOPBACK)
        );
    }

    #[test]
    fn remote_peers_and_requests_without_host_are_not_checked() {
        let p = policy(&[], None);
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        assert!(p.host_allowed(Some("my-server.lan:8080"), lan));
        assert!(p.host_allowed(None, LOOPBACK));
    }

    #[test]
    fn the_public_ws_url_names_an_allowed_host() {
        let p = AccessPolicy::new(&Config {
            public_ws_url: Some("wss://chat.example.com:8443/ws-base".into()),
            ..Config::default()
        });
        let loopback = "127.0.0.1".parse().unwrap();
        assert!(p.host_allowed(Some("chat.example.com"), loopback));
        assert!(!p.host_allowed(Some("evil.example"), loopback));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("a.example:80"), "a.example");
        assert_eq!(host_without_port("a.example"), "a.example");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}

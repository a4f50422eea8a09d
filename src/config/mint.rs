//! `threadcast token …`: minting a signed token (an HS256 JWT) from the command line,
//! for tests, demos and lessons, like `centrifugo gentoken`. A real deployment mints
//! tokens in its backend, with the same secret the server is given (`--jwt-secret`).
//!
//! ```text
//! threadcast token --secret S --sub alice [--name Alice] [--rooms 'lobby,news-*']
//!                  [--publish lobby] [--ttl 1h]
//! ```

use std::ffi::OsString;
use std::time::Duration;

use super::defaults::JWT_SECRET_ENV;
use super::parse::jwt_secret_from_env;
use super::values::{parse_duration, parse_jwt_secret};
use super::{Invocation, UsageError};
use crate::protocol::jwt::{self, Claims};

/// How long a minted token holds when `--ttl` is not given.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What `threadcast token` was asked to mint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOrder {
    secret: String,
    sub: String,
    name: Option<String>,
    rooms: Option<Vec<String>>,
    publish: Option<Vec<String>>,
    ttl: Duration,
}

impl TokenOrder {
    /// The token, valid from `now` (seconds since 1970) for the order's time to live.
    pub fn mint(&self, now: u64) -> String {
        let claims = Claims {
            sub: self.sub.clone(),
            name: self.name.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: None,
            rooms: self.rooms.clone(),
            publish: self.publish.clone(),
        };
        jwt::mint(&claims, self.secret.as_bytes())
    }
}

/// Reads `token`'s flags (the words after `token`). The secret may come from
/// [`JWT_SECRET_ENV`] instead of `--secret`, so it need not appear in `ps` output.
pub(super) fn parse_token_order(
    args: impl IntoIterator<Item = String>,
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<Invocation, UsageError> {
    let (mut secret, mut sub, mut name, mut rooms, mut publish) = (None, None, None, None, None);
    let mut ttl = DEFAULT_TOKEN_TTL;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| UsageError(format!("token {flag} needs a value")))
        };
        match flag.as_str() {
            "--secret" => secret = Some(parse_jwt_secret("--secret", value()?)?),
            "--sub" => sub = Some(value()?),
            "--name" => name = Some(value()?),
            "--rooms" => rooms = Some(patterns(&value()?)),
            "--publish" => publish = Some(patterns(&value()?)),
            "--ttl" => ttl = parse_duration("--ttl", &value()?)?,
            other => return Err(UsageError(format!("token: unknown flag '{other}'"))),
        }
    }
    let secret = match secret {
        Some(secret) => secret,
        None => jwt_secret_from_env(env)?
            .ok_or_else(|| UsageError(format!("token needs --secret (or env {JWT_SECRET_ENV})")))?,
    };
    let sub = sub
        .filter(|s| !s.is_empty())
        .ok_or_else(|| UsageError("token needs --sub (the user id)".into()))?;
    Ok(Invocation::Token(TokenOrder {
        secret,
        sub,
        name,
        rooms,
        publish,
        ttl,
    }))
}

/// `'lobby,news-*'` → `["lobby", "news-*"]`.
fn patterns(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!!";

    fn parse(args: &[&str]) -> Result<Invocation, UsageError> {
        parse_token_order(args.iter().map(|a| a.to_string()), &|_| None)
    }

    #[test]
    fn a_minted_token_carries_what_was_asked_and_verifies() {
        let args = [
            "--secret",
            SECRET,
            "--sub",
            "alice",
            "--name",
            "Alice",
            "--rooms",
            "lobby, news-*",
            "--publish",
            "lobby",
            "--ttl",
            "2m",
        ];
        let Ok(Invocation::Token(order)) = parse(&args) else {
            panic!("a token order");
        };
        let token = order.mint(1_000);
        let claims = Claims {
            sub: "alice".into(),
            name: Some("Alice".into()),
            exp: 1_120,
            nbf: None,
            rooms: Some(vec!["lobby".into(), "news-*".into()]),
            publish: Some(vec!["lobby".into()]),
        };
        assert_eq!(jwt::verify(&token, SECRET.as_bytes(), 1_000), Ok(claims));
    }

    #[test]
    fn the_secret_may_come_from_the_environment_and_must_be_long_enough() {
        let env = |k: &str| (k == JWT_SECRET_ENV).then(|| SECRET.into());
        let args = ["--sub", "bob"].map(String::from);
        let Ok(Invocation::Token(order)) = parse_token_order(args, &env) else {
            panic!("a token order");
        };
        let claims = jwt::verify(&order.mint(5), SECRET.as_bytes(), 5).unwrap();
        assert_eq!((claims.sub.as_str(), claims.exp), ("bob", 5 + 3600));

        assert!(
            parse(&["--sub", "bob"])
                .unwrap_err()
                .0
                .contains("needs --secret")
        );
        assert!(
            parse(&["--secret", "short", "--sub", "b"])
                .unwrap_err()
                .0
                .contains("32 bytes")
        );
        assert!(
            parse(&["--secret", SECRET])
                .unwrap_err()
                .0
                .contains("needs --sub")
        );
        assert!(parse(&["--secret", SECRET, "--sub", "a", "--bogus"]).is_err());
    }
}

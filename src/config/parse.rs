//! Reading the command line (and the environment variables some flags may come from)
//! into a [`Config`].

use std::ffi::OsString;
use std::path::PathBuf;

use super::defaults::{ADMIN_TOKEN_ENV, JWT_SECRET_ENV, REDIS_ENV, TOKEN_ENV};
use super::mint::parse_token_order;
use super::values::{
    parse_addr, parse_bytes, parse_count, parse_feed, parse_jwt_secret, parse_log_spec,
    parse_memory_limit, parse_origin, parse_redis_url, parse_token, parse_ws_url, tls_file,
};
use super::{AuthMode, Config, Invocation, UsageError, parse_duration};
use crate::logging::LogSpec;

/// Parses the command line (without the program name), as the operating system gives
/// it (`std::env::args_os`): text that is not UTF-8 is a usage error, not a panic.
/// `env` looks up environment variables (`std::env::var_os`), so tests can pass their
/// own instead of the process environment. A flag wins over its variable, which is
/// then not read at all.
pub fn parse_args<I, S>(
    args: I,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Invocation, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut config = Config::default();
    let mut log_spec = None;

    let mut args = utf8_args(args)?.into_iter().peekable();
    if args.next_if(|first| first == "token").is_some() {
        return parse_token_order(args, &env);
    }
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| UsageError(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            "--log-level" => log_spec = Some(parse_log_spec(&flag, &value()?)?),
            _ => set(&mut config, &flag, &arg, &mut value)?,
        }
    }
    if config.token.is_none() {
        config.token = token_from_env(&env)?;
    }
    if config.redis_url.is_none() {
        config.redis_url = redis_url_from_env(&env)?;
    }
    if config.jwt_secret.is_none() {
        config.jwt_secret = jwt_secret_from_env(&env)?;
    }
    if config.admin_token.is_none() {
        config.admin_token = secret_from_env(&env, ADMIN_TOKEN_ENV, parse_token)?;
    }
    let log_spec = match log_spec {
        Some(spec) => spec,
        None => log_spec_from_env(&env)?,
    };
    config.validate()?;
    Ok(Invocation::Run(Box::new(config), log_spec))
}

/// Sets the one setting `flag` names (`arg` is the argument as given); `value` takes
/// the flag's value from the command line.
fn set(
    config: &mut Config,
    flag: &str,
    arg: &str,
    value: &mut dyn FnMut() -> Result<String, UsageError>,
) -> Result<(), UsageError> {
    match flag {
        "--http" => config.http_addr = parse_addr(flag, &value()?)?,
        "--ws" => config.ws_addr = Some(parse_addr(flag, &value()?)?),
        "--public" => config.public_dir = PathBuf::from(value()?),
        "--public-ws-url" => config.public_ws_url = Some(parse_ws_url(&value()?)?),
        "--allow-origin" => config.allowed_origins.push(parse_origin(&value()?)?),
        "--allow-host" => config.allowed_hosts.push(value()?),
        "--token" => config.token = Some(parse_token(flag, value()?)?),
        "--jwt-secret" => config.jwt_secret = Some(parse_jwt_secret(flag, value()?)?),
        "--admin-token" => config.admin_token = Some(parse_token(flag, value()?)?),
        "--max-connections" => config.max_connections = parse_count(flag, &value()?)?,
        "--max-connections-per-ip" => config.max_connections_per_ip = parse_count(flag, &value()?)?,
        "--max-messages-per-second" => {
            config.max_messages_per_second =
                u32::try_from(parse_count(flag, &value()?)?).unwrap_or(u32::MAX)
        }
        "--max-message-bytes" => config.max_message_bytes = parse_bytes(flag, &value()?)?,
        "--memory-limit" => config.memory_limit = Some(parse_memory_limit(&value()?)?),
        "--send-queue-bytes" => {
            config.send_queue_bytes = Some(parse_bytes(flag, &value()?)?);
        }
        "--ping-interval" => config.ping_interval = parse_duration(flag, &value()?)?,
        "--pong-timeout" => config.pong_timeout = parse_duration(flag, &value()?)?,
        "--handshake-timeout" => config.handshake_timeout = parse_duration(flag, &value()?)?,
        "--request-timeout" => config.request_timeout = parse_duration(flag, &value()?)?,
        "--send-queue" => config.send_queue = parse_count(flag, &value()?)?,
        "--history" => config.history = parse_count(flag, &value()?)?,
        "--history-bytes" => config.history_bytes = Some(parse_bytes(flag, &value()?)?),
        "--max-idle-rooms" => config.max_idle_rooms = parse_count(flag, &value()?)?,
        "--data-dir" => config.data_dir = Some(value()?.into()),
        "--fsync" => config.fsync = parse_fsync(&value()?)?,
        "--history-ttl" => config.history_ttl = Some(parse_duration(flag, &value()?)?),
        "--poll-timeout" => config.poll_timeout = parse_duration(flag, &value()?)?,
        "--feed" => config.feeds.push(parse_feed(&value()?)?),
        "--no-demo-feed" => config.demo_feed = false,
        "--lesson" => config.lesson = true,
        "--allow-inspect" => config.allow_inspect = true,
        "--trust-proxy" => config.trust_proxy = true,
        "--redis" => config.redis_url = Some(parse_redis_url(&value()?)?),
        "--redis-queue" => config.redis_queue = parse_count(flag, &value()?)?,
        "--tls-cert" => config.tls_cert = Some(tls_file(flag, value()?)?),
        "--tls-key" => config.tls_key = Some(tls_file(flag, value()?)?),
        "--auth" => config.auth = parse_auth(&value()?)?,
        _ => return Err(UsageError(format!("unknown flag '{arg}'"))),
    }
    Ok(())
}

/// `--auth`'s value: where WebSocket clients give the token.
fn parse_auth(mode: &str) -> Result<AuthMode, UsageError> {
    match mode {
        "handshake" => Ok(AuthMode::Handshake),
        "first-message" => Ok(AuthMode::FirstMessage),
        other => Err(UsageError(format!(
            "--auth: '{other}' is not handshake or first-message"
        ))),
    }
}

/// The arguments as text. One that is not UTF-8 is named by its position, counted
/// from 1 after the program name like `$1` in a shell. Neither it nor the argument
/// before it is shown: either may be a token.
pub(super) fn utf8_args<S: Into<OsString>>(
    args: impl IntoIterator<Item = S>,
) -> Result<Vec<String>, UsageError> {
    args.into_iter()
        .enumerate()
        .map(|(index, arg)| {
            arg.into()
                .into_string()
                .map_err(|_| UsageError(format!("argument {} is not valid UTF-8 text", index + 1)))
        })
        .collect()
}

/// An environment variable's value, `None` when unset. A value that is not UTF-8 is
/// an error, not "unset": a mangled token must not quietly turn authentication off.
/// The value is never shown, as it may be a secret.
pub(super) fn env_var(
    env: &impl Fn(&str) -> Option<OsString>,
    name: &str,
) -> Result<Option<String>, UsageError> {
    env(name)
        .map(|value| {
            value
                .into_string()
                .map_err(|_| UsageError(format!("{name} is not valid UTF-8 text")))
        })
        .transpose()
}

/// The token from [`TOKEN_ENV`], when `--token` did not set one. Set but empty is an
/// error, like `--token ''`.
pub(super) fn token_from_env(
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<Option<String>, UsageError> {
    secret_from_env(env, TOKEN_ENV, parse_token)
}

/// The JWT secret from [`JWT_SECRET_ENV`], when `--jwt-secret` did not set one.
pub(super) fn jwt_secret_from_env(
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<Option<String>, UsageError> {
    secret_from_env(env, JWT_SECRET_ENV, parse_jwt_secret)
}

/// A secret from the environment variable `name`, checked as its flag's value is.
fn secret_from_env(
    env: &impl Fn(&str) -> Option<OsString>,
    name: &str,
    check: fn(&str, String) -> Result<String, UsageError>,
) -> Result<Option<String>, UsageError> {
    env_var(env, name)?
        .map(|secret| check(name, secret))
        .transpose()
}

/// The Redis URL from [`REDIS_ENV`], when `--redis` did not set one; empty counts as
/// unset (no secret is at stake: without a URL, nothing is shared).
pub(super) fn redis_url_from_env(
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<Option<String>, UsageError> {
    match env_var(env, REDIS_ENV)? {
        Some(url) if !url.is_empty() => Ok(Some(parse_redis_url(&url)?)),
        _ => Ok(None),
    }
}

/// What `RUST_LOG` asks for, when `--log-level` did not; unset or empty is the default.
pub(super) fn log_spec_from_env(
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<LogSpec, UsageError> {
    match env_var(env, "RUST_LOG")? {
        Some(spec) => parse_log_spec("RUST_LOG", &spec),
        None => Ok(LogSpec::default()),
    }
}

/// `--fsync always|batch|never`.
fn parse_fsync(value: &str) -> Result<crate::store::Fsync, UsageError> {
    use crate::store::Fsync;
    match value {
        "batch" => Ok(Fsync::Batch),
        "always" => Ok(Fsync::Always),
        "never" => Ok(Fsync::Never),
        other => Err(UsageError(format!(
            "--fsync: '{other}' is not batch, always or never"
        ))),
    }
}

//! Every setting of the server, its default, and the command-line flags that change it.
//!
//! Each default is a named constant with the reason for its value (`defaults.rs`), so a
//! reader can see at a glance what the server does out of the box; `parse.rs` reads
//! the command line, `values.rs` each flag's value, `help.rs` writes `--help`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::logging::LogSpec;

pub mod defaults;
mod help;
mod mint;
mod parse;
mod values;

use defaults::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HISTORY, DEFAULT_HISTORY_BYTES, DEFAULT_HTTP_ADDR,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_IDLE_ROOMS,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGES_PER_SECOND, DEFAULT_PING_INTERVAL,
    DEFAULT_POLL_TIMEOUT, DEFAULT_PONG_TIMEOUT, DEFAULT_PUBLIC_DIR, DEFAULT_REDIS_QUEUE,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_QUEUE, HISTORY_SHARE, MAX_DEFAULT_SEND_QUEUE_BYTES,
    SEND_QUEUE_SHARE,
};
use help::format_duration;
pub use help::help;
pub use mint::{DEFAULT_TOKEN_TTL, TokenOrder};
pub use parse::parse_args;
pub use values::parse_duration;
#[cfg(test)]
use values::*;

/// Log level when neither `--log-level` nor `RUST_LOG` says otherwise.
pub use crate::logging::DEFAULT_LOG_LEVEL;

/// Everything the server needs to start. `Config::default()` is the zero-configuration
/// demo; tests usually change only the addresses (to `127.0.0.1:0`) and a timeout.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address of the one listener: page, files, HTTP endpoints and WebSockets.
    /// Default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// An extra listener that serves WebSockets only (`--ws`). Default: none.
    pub ws_addr: Option<SocketAddr>,
    /// Folder of static files. Default `public`; when it does not exist, the page
    /// compiled into the binary is served instead.
    pub public_dir: PathBuf,
    /// WebSocket base URL the page should use (e.g. `wss://example.com/ws-base`) when
    /// a proxy sits in front. Default: derived from the request's Host header.
    pub public_ws_url: Option<String>,
    /// Extra origins allowed to open WebSockets besides the same host; `*` allows all.
    pub allowed_origins: Vec<String>,
    /// Shared secret required on handshakes and `/publish`. Default: none.
    pub token: Option<String>,
    /// Secret that signs HS256 JWTs (`--jwt-secret`): a valid token is accepted wherever
    /// the shared token is. Default: none.
    pub jwt_secret: Option<String>,
    /// The operator's token (`--admin-token`): a backend holding it may publish into
    /// any room, personal rooms included. Default: none.
    pub admin_token: Option<String>,
    /// Open connections above which handshakes get 503. Default 1024.
    pub max_connections: usize,
    /// Connections one client address may hold at once; past it, 503. Default 256.
    pub max_connections_per_ip: usize,
    /// Messages per second one connection may publish (bursts of twice that); past
    /// it, close 1008. Default 100.
    pub max_messages_per_second: u32,
    /// Largest message accepted from a client; larger closes with 1009. Default 1 MiB.
    pub max_message_bytes: usize,
    /// Idle time after which the writer sends a ping. Default 20 s.
    pub ping_interval: Duration,
    /// Silence after which the reader drops the peer. Default 30 s.
    pub pong_timeout: Duration,
    /// Deadline for a complete upgrade request. Default 5 s.
    pub handshake_timeout: Duration,
    /// Deadline for a request body after its head. Default 30 s.
    pub request_timeout: Duration,
    /// Outgoing messages queued per connection before it counts as slow. Default 128.
    pub send_queue: usize,
    /// Bytes queued per connection before it counts as slow; `None`: derived from
    /// the memory budget (see [`Config::send_queue_bytes`]).
    pub send_queue_bytes: Option<usize>,
    /// The memory budget (`--memory-limit`); `None`: derived from the machine
    /// (see `budget::machine_limit`).
    pub memory_limit: Option<usize>,
    /// Messages kept per room for resuming clients. Default 1000.
    pub history: usize,
    /// Bytes kept per room; `None`: derived from the memory budget (see
    /// [`Config::history_bytes`]).
    pub history_bytes: Option<usize>,
    /// Idle rooms kept with their history (`--max-idle-rooms`); past it the least
    /// recently used is dropped. Personal rooms holding messages are not counted and
    /// never dropped for it. Default 1024.
    pub max_idle_rooms: usize,
    /// Where room histories are kept across restarts (`--data-dir`); `None`: in memory
    /// only. See `src/store/`.
    pub data_dir: Option<std::path::PathBuf>,
    /// How often the store forces the disk (`--fsync`). Default: once per group of
    /// publishes, before any is acknowledged.
    pub fsync: crate::store::Fsync,
    /// Messages older than this leave history (`--history-ttl`); `None`: they stay
    /// until the other limits push them out.
    pub history_ttl: Option<Duration>,
    /// `--lesson`: narrate every connection's protocol steps on the console.
    pub lesson: bool,
    /// `--allow-inspect`: `?inspect=1` is allowed on every listener, not only on
    /// loopback ones.
    pub allow_inspect: bool,
    /// Longest wait of a long-poll request. Default 25 s.
    pub poll_timeout: Duration,
    /// Live feeds: each line a command prints becomes a message in its room.
    pub feeds: Vec<Feed>,
    /// Run the built-in demo feed in room `ticker`. Default true.
    pub demo_feed: bool,
    /// Where a WebSocket client presents the token. Default: in the handshake.
    pub auth: AuthMode,
    /// Extra `Host` names answered on a loopback listener (DNS-rebinding guard);
    /// `*` turns the check off. Default: loopback names only.
    pub allowed_hosts: Vec<String>,
    /// Log the client address a proxy reports in `X-Forwarded-For`. Default false.
    pub trust_proxy: bool,
    /// Share rooms with other instances through this Redis (`redis://…` or
    /// `unix://…`; needs `--features redis`). Default: none.
    pub redis_url: Option<String>,
    /// Messages kept for Redis while it is unreachable. Default 1024.
    pub redis_queue: usize,
    /// PEM certificate chain (leaf first) for HTTPS and WSS on every listener
    /// (`--tls-cert`, needs `--features tls`). Set together with `tls_key`. Default: none.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (`--tls-key`). Default: none.
    pub tls_key: Option<PathBuf>,
}

/// Where WebSocket clients present the token (`--auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// `Authorization: Bearer` or `?token=` on the handshake (`--auth handshake`).
    #[default]
    Handshake,
    /// The first message after the handshake (`--auth first-message`), so the token
    /// never appears in a URL that proxies log.
    FirstMessage,
}

/// A live feed: `--feed ROOM=COMMAND` (or `ROOM=-` for standard input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feed {
    /// Room the lines go to.
    pub room: String,
    /// Where the lines come from.
    pub source: FeedSource,
}

/// Where a feed's lines come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedSource {
    /// A shell command (`sh -c`), restarted with backoff whenever it exits.
    Command(String),
    /// The server's own standard input, until it ends.
    Stdin,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: DEFAULT_HTTP_ADDR.parse().expect("valid default address"),
            ws_addr: None,
            public_dir: PathBuf::from(DEFAULT_PUBLIC_DIR),
            public_ws_url: None,
            allowed_origins: Vec::new(),
            token: None,
            jwt_secret: None,
            admin_token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_messages_per_second: DEFAULT_MAX_MESSAGES_PER_SECOND,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            send_queue: DEFAULT_SEND_QUEUE,
            send_queue_bytes: None,
            memory_limit: None,
            history: DEFAULT_HISTORY,
            max_idle_rooms: DEFAULT_MAX_IDLE_ROOMS,
            data_dir: None,
            fsync: crate::store::Fsync::Batch,
            history_ttl: None,
            lesson: false,
            allow_inspect: false,
            history_bytes: None,
            poll_timeout: DEFAULT_POLL_TIMEOUT,
            feeds: Vec::new(),
            demo_feed: true,
            auth: AuthMode::Handshake,
            allowed_hosts: Vec::new(),
            trust_proxy: false,
            redis_url: None,
            redis_queue: DEFAULT_REDIS_QUEUE,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// What the command line asked for: run with a config, or print help/version.
#[derive(Debug)]
pub enum Invocation {
    /// Start the server, logging what the spec asks for.
    Run(Box<Config>, LogSpec),
    /// Print `--help` and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
    /// `threadcast token …`: print a signed token and exit 0.
    Token(TokenOrder),
}

/// A flag or value the command line got wrong. The binary prints it and exits 2.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see --help)", self.0)
    }
}

impl std::error::Error for UsageError {}

impl Config {
    /// Checks values that are each fine alone but wrong together.
    pub fn validate(&self) -> Result<(), UsageError> {
        if self.pong_timeout <= self.ping_interval {
            return Err(UsageError(format!(
                "--pong-timeout ({}) must be longer than --ping-interval ({}), or every idle peer is dropped",
                format_duration(self.pong_timeout),
                format_duration(self.ping_interval)
            )));
        }
        if self.data_dir.is_some() && self.redis_url.is_some() {
            return Err(UsageError(
                "--data-dir and --redis do not go together: with --redis, Redis keeps the rooms' history (and is where it survives a restart)".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(UsageError(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            ));
        }
        Ok(())
    }

    /// Bytes each room's history may hold under a budget of `budget` bytes:
    /// `--history-bytes`, or [`DEFAULT_HISTORY_BYTES`] but at most 1/[`HISTORY_SHARE`]
    /// of the budget.
    pub fn history_bytes(&self, budget: usize) -> usize {
        self.history_bytes
            .unwrap_or_else(|| DEFAULT_HISTORY_BYTES.min(budget / HISTORY_SHARE))
    }

    /// Bytes one connection may have queued under a budget of `budget` bytes before
    /// it is a slow consumer: `--send-queue-bytes`, or 1/[`SEND_QUEUE_SHARE`] of the
    /// budget, at least two of the largest messages, at most
    /// [`MAX_DEFAULT_SEND_QUEUE_BYTES`].
    pub fn send_queue_bytes(&self, budget: usize) -> usize {
        let two_messages = 2 * (self.max_message_bytes + crate::room::MESSAGE_OVERHEAD_BYTES);
        self.send_queue_bytes.unwrap_or_else(|| {
            (budget / SEND_QUEUE_SHARE)
                .min(MAX_DEFAULT_SEND_QUEUE_BYTES)
                .max(two_messages)
        })
    }

    /// Whether the listeners speak TLS (`https://`, `wss://`).
    pub fn uses_tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::defaults::{REDIS_ENV, TOKEN_ENV};
    use super::*;
    use std::ffi::OsString;

    fn parse(args: &[&str]) -> Result<Invocation, UsageError> {
        parse_args(args.iter().copied(), |_| None)
    }

    /// Parses `args` with only the environment variables in `vars` set.
    fn parse_with_env(args: &[&str], vars: &[(&str, &str)]) -> Result<Invocation, UsageError> {
        parse_args(args.iter().copied(), |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| OsString::from(value))
        })
    }

    /// The log spec `args` and `vars` ask for.
    fn log_spec(args: &[&str], vars: &[(&str, &str)]) -> Result<LogSpec, UsageError> {
        match parse_with_env(args, vars)? {
            Invocation::Run(_, spec) => Ok(spec),
            other => panic!("expected a config, got {other:?}"),
        }
    }

    /// Bytes that are not UTF-8, as Linux may hand them to a program.
    #[cfg(unix)]
    fn not_utf8() -> OsString {
        use std::os::unix::ffi::OsStringExt;
        OsString::from_vec(vec![b'a', 0xff, b'b'])
    }

    fn config(args: &[&str]) -> Config {
        match parse(args) {
            Ok(Invocation::Run(c, _)) => *c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn no_flags_give_the_documented_defaults() {
        let c = config(&[]);
        assert_eq!(c.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(c.ws_addr, None);
        assert_eq!(c.max_connections_per_ip, 256);
        assert_eq!(c.max_messages_per_second, 100);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_message_bytes, 1 << 20);
        assert_eq!(c.ping_interval, Duration::from_secs(20));
        assert_eq!(c.pong_timeout, Duration::from_secs(30));
        assert!(c.token.is_none());
        assert_eq!(c.history, 1000);
        assert_eq!(c.history_bytes(1 << 30), 4 << 20);
        assert_eq!(c.memory_limit, None);
        assert_eq!(c.poll_timeout, Duration::from_secs(25));
        assert!(c.demo_feed && c.feeds.is_empty());
    }

    #[test]
    fn byte_limits_are_derived_from_the_memory_budget_unless_given() {
        let c = config(&["--memory-limit", "256MiB"]);
        assert_eq!(c.memory_limit, Some(256 << 20));
        assert_eq!(c.history_bytes(256 << 20), 4 << 20);
        assert_eq!(
            c.history_bytes(64 << 20),
            1 << 20,
            "a 64th of a small budget"
        );
        assert_eq!(c.send_queue_bytes(256 << 20), 4 << 20);
        let two_messages = 2 * ((1 << 20) + crate::room::MESSAGE_OVERHEAD_BYTES);
        assert_eq!(
            c.send_queue_bytes(16 << 20),
            two_messages,
            "room for two messages"
        );
        assert_eq!(c.send_queue_bytes(64 << 30), MAX_DEFAULT_SEND_QUEUE_BYTES);
        let given = config(&["--history-bytes=64KiB", "--send-queue-bytes", "1m"]);
        assert_eq!(given.history_bytes(256 << 20), 64 << 10);
        assert_eq!(given.send_queue_bytes(256 << 20), 1 << 20);
        assert_eq!(
            config(&["--max-message-bytes", "2MiB"]).max_message_bytes,
            2 << 20
        );
        assert!(
            parse(&["--memory-limit", "1MiB"]).is_err(),
            "below the smallest budget"
        );
        assert!(parse(&["--memory-limit", "lots"]).is_err());
        assert!(parse(&["--history-bytes", "0"]).is_err());
    }

    #[test]
    fn feeds_name_a_room_and_a_command_or_stdin() {
        let c = config(&[
            "--feed",
            "logs=-",
            "--feed=clock=date; sleep 1",
            "--no-demo-feed",
        ]);
        assert_eq!(
            c.feeds[0],
            Feed {
                room: "logs".into(),
                source: FeedSource::Stdin
            }
        );
        assert_eq!(
            c.feeds[1],
            Feed {
                room: "clock".into(),
                source: FeedSource::Command("date; sleep 1".into())
            }
        );
        assert!(!c.demo_feed);
        assert!(parse(&["--feed", "no-equals"]).is_err());
        assert!(parse(&["--feed", "bad room=x"]).is_err());
        assert!(parse(&["--feed", "room="]).is_err());
    }

    #[test]
    fn flags_accept_space_or_equals() {
        let c = config(&[
            "--ws=127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--allow-origin",
            "https://a",
            "--allow-origin=https://b",
        ]);
        assert_eq!(c.ws_addr.map(|a| a.port()), Some(0));
        assert_eq!(c.http_addr.port(), 0);
        assert_eq!(c.allowed_origins, vec!["https://a", "https://b"]);
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("x", "20").unwrap(), Duration::from_secs(20));
        assert_eq!(
            parse_duration("x", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x", "0").is_err());
        assert!(parse_duration("x", "-1s").is_err());
        assert!(parse_duration("x", "soon").is_err());
    }

    #[test]
    fn bad_flags_and_values_are_usage_errors() {
        assert!(parse(&["--nope"]).is_err());
        assert!(
            parse(&["--redis", "http://x"]).is_err(),
            "a Redis URL, or (without the feature) a clear refusal"
        );
        assert!(parse(&["--ws"]).is_err());
        assert!(parse(&["--ws", "localhost"]).is_err());
        assert!(parse(&["--max-connections", "0"]).is_err());
        assert!(parse(&["--log-level", "loud"]).is_err());
        assert!(parse(&["--public-ws-url", "http://x"]).is_err());
        assert!(
            parse(&["--ping-interval", "40s"]).is_err(),
            "pong timeout must exceed ping interval"
        );
    }

    #[test]
    fn tls_flags_go_together_and_need_the_feature() {
        let both = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        if cfg!(feature = "tls") {
            let Ok(Invocation::Run(c, _)) = both else {
                panic!("{both:?}")
            };
            assert_eq!(c.tls_cert, Some(PathBuf::from("c.pem")));
            assert_eq!(c.tls_key, Some(PathBuf::from("k.pem")));
            assert!(c.uses_tls());
            let alone = parse(&["--tls-cert", "c.pem"]).unwrap_err();
            assert!(alone.0.contains("give both or neither"), "{alone}");
        } else {
            let e = both.unwrap_err();
            assert!(e.0.contains("rebuild with --features tls"), "{e}");
        }
        assert!(!config(&[]).uses_tls());
    }

    #[test]
    fn token_comes_from_the_environment_unless_a_flag_sets_it() {
        let from_env = parse_args(Vec::<String>::new(), |k| {
            (k == TOKEN_ENV).then(|| "s3cret".into())
        });
        match from_env {
            Ok(Invocation::Run(c, _)) => assert_eq!(c.token.as_deref(), Some("s3cret")),
            other => panic!("{other:?}"),
        }
        assert_eq!(config(&["--token", "abc"]).token.as_deref(), Some("abc"));
        // The flag wins, and the variable is then not even read: its emptiness is moot.
        match parse_with_env(&["--token", "abc"], &[(TOKEN_ENV, "")]) {
            Ok(Invocation::Run(c, _)) => assert_eq!(c.token.as_deref(), Some("abc")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_token_is_refused_from_the_flag_and_the_environment() {
        for result in [
            parse(&["--token", ""]),
            parse(&["--token="]),
            parse_with_env(&[], &[(TOKEN_ENV, "")]),
        ] {
            let e = result.unwrap_err();
            assert!(
                e.0.contains("an empty token would turn authentication off; leave it unset"),
                "{e}"
            );
        }
        let e = parse_with_env(&[], &[(TOKEN_ENV, "")]).unwrap_err();
        assert!(e.0.starts_with(TOKEN_ENV), "names where it came from: {e}");
    }

    #[cfg(unix)]
    #[test]
    fn arguments_that_are_not_utf8_are_usage_errors_naming_their_position() {
        let e = parse_args([not_utf8()], |_| None).unwrap_err();
        assert_eq!(e.0, "argument 1 is not valid UTF-8 text");

        let args = [
            OsString::from("--no-demo-feed"),
            "--token".into(),
            not_utf8(),
        ];
        let e = parse_args(args, |_| None).unwrap_err();
        assert_eq!(
            e.0, "argument 3 is not valid UTF-8 text",
            "the value is not shown"
        );
    }

    #[cfg(unix)]
    #[test]
    fn environment_variables_that_are_not_utf8_are_usage_errors() {
        for var in [TOKEN_ENV, "RUST_LOG", REDIS_ENV] {
            let e =
                parse_args(Vec::<String>::new(), |name| (name == var).then(not_utf8)).unwrap_err();
            assert_eq!(e.0, format!("{var} is not valid UTF-8 text"));
        }
    }

    #[test]
    fn origins_need_a_scheme_and_no_path() {
        let c = config(&[
            "--allow-origin=*",
            "--allow-origin=https://a.example/",
            "--allow-origin=http://[::1]:8080",
            "--allow-origin=HTTPS://B.example:8443",
        ]);
        assert_eq!(
            c.allowed_origins,
            [
                "*",
                "https://a.example",
                "http://[::1]:8080",
                "HTTPS://B.example:8443"
            ]
        );
        let refusal = |value: &str| parse(&["--allow-origin", value]).unwrap_err().0;
        assert_eq!(
            refusal("example.com"),
            "--allow-origin: 'example.com' needs a scheme, like https://example.com"
        );
        assert!(
            refusal("https://a.example/x")
                .contains("has a path; an origin is scheme://host[:port], like https://a.example"),
            "{}",
            refusal("https://a.example/x")
        );
        for bad in [
            "https://a.example?x",
            "https://",
            "://a.example",
            "1http://a.example",
            "https://user@a.example",
            "https://a.example:port",
            "https://a.example:99999",
            "null",
        ] {
            assert!(parse(&["--allow-origin", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_may_be_host_names() {
        let c = config(&["--http", "localhost:0", "--ws=localhost:9"]);
        assert!(c.http_addr.ip().is_loopback(), "{}", c.http_addr);
        assert_eq!(c.http_addr.port(), 0);
        assert_eq!(c.ws_addr.map(|a| a.port()), Some(9));
        assert_eq!(
            config(&["--http", "[::1]:80"]).http_addr.to_string(),
            "[::1]:80"
        );
        for bad in [
            "localhost",
            "localhost:",
            ":8080",
            "localhost:http",
            "localhost:70000",
        ] {
            let e = parse(&["--http", bad]).unwrap_err();
            assert!(
                e.0.contains("like 127.0.0.1:8080 or localhost:8080"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_name_with_both_families_listens_on_ipv4() {
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(pick_address([v6, v4]), Some(v4));
        assert_eq!(pick_address([v6]), Some(v6));
        assert_eq!(pick_address([]), None);
    }

    #[test]
    fn rust_log_takes_specs_and_the_flag_wins() {
        let debug_here = "threadcast=debug,tungstenite=warn";
        let spec = log_spec(&[], &[("RUST_LOG", debug_here)]).unwrap();
        assert_eq!(spec.level_for("threadcast::hub"), log::LevelFilter::Debug);
        assert_eq!(spec.level_for("tungstenite"), log::LevelFilter::Warn);
        assert_eq!(spec.max_level(), log::LevelFilter::Debug);

        let empty = log_spec(&[], &[("RUST_LOG", "")]).unwrap();
        assert_eq!(empty, LogSpec::default());
        assert_eq!(log_spec(&[], &[]).unwrap(), LogSpec::default());

        // The flag wins, and a bad RUST_LOG it replaces does not matter.
        let flag = log_spec(
            &["--log-level", "info,threadcast::hub=trace"],
            &[("RUST_LOG", "loud")],
        )
        .unwrap();
        assert_eq!(flag.level_for("threadcast::hub"), log::LevelFilter::Trace);
        assert_eq!(flag.level_for("threadcast::http"), log::LevelFilter::Info);
    }

    #[test]
    fn a_bad_log_spec_is_a_usage_error_naming_its_source() {
        let e = log_spec(&[], &[("RUST_LOG", "loud")]).unwrap_err();
        assert!(e.0.starts_with("RUST_LOG: 'loud' is not a level"), "{e}");
        let e = log_spec(&["--log-level", "threadcast=loud"], &[]).unwrap_err();
        assert!(e.0.starts_with("--log-level: 'loud' is not a level"), "{e}");
    }

    #[test]
    fn help_explains_the_new_rules() {
        let text = help();
        for expected in [
            "RUST_LOG",
            "threadcast::hub=trace",
            "tungstenite never goes",
            "An empty token is refused",
            "scheme://host[:port]",
            "localhost:8080",
        ] {
            assert!(text.contains(expected), "help misses {expected}");
        }
    }

    #[test]
    fn the_redis_url_may_come_from_the_environment() {
        let from_env = parse_args(Vec::<String>::new(), |k| {
            (k == REDIS_ENV).then(|| "redis://:pw@127.0.0.1:6379".into())
        });
        if cfg!(feature = "redis") {
            match from_env {
                Ok(Invocation::Run(c, _)) => {
                    assert_eq!(c.redis_url.as_deref(), Some("redis://:pw@127.0.0.1:6379"));
                }
                other => panic!("{other:?}"),
            }
        } else {
            let e = from_env.unwrap_err();
            assert!(e.0.contains("--features redis"), "{e}");
        }
    }

    #[test]
    fn data_dir_and_redis_do_not_go_together() {
        let both = Config {
            data_dir: Some("/tmp/x".into()),
            redis_url: Some("redis://127.0.0.1:1".into()),
            ..Config::default()
        };
        let refusal = both.validate().unwrap_err().to_string();
        assert!(
            refusal.contains("--data-dir and --redis do not go together"),
            "{refusal}"
        );
    }

    #[test]
    fn help_names_every_flag() {
        let text = help();
        for flag in [
            "--http",
            "--ws",
            "--public",
            "--public-ws-url",
            "--allow-origin",
            "--token",
            "--max-connections",
            "--max-connections-per-ip",
            "--max-messages-per-second",
            "--max-message-bytes",
            "--ping-interval",
            "--pong-timeout",
            "--handshake-timeout",
            "--request-timeout",
            "--send-queue",
            "--log-level",
            "--history",
            "--history-bytes",
            "--max-idle-rooms",
            "--data-dir",
            "--fsync",
            "--history-ttl",
            "--lesson",
            "--allow-inspect",
            "--jwt-secret",
            "--admin-token",
            "--poll-timeout",
            "--feed",
            "--no-demo-feed",
            "--auth",
            "--allow-host",
            "--trust-proxy",
            "--redis",
            "--redis-queue",
            "--tls-cert",
            "--tls-key",
        ] {
            assert!(text.contains(flag), "help misses {flag}");
        }
    }
}

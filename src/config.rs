//! Every setting of the server, its default, and the command-line flags that change it.
//!
//! Each default is a named constant with the reason for its value, so a reader can see
//! at a glance what the server does out of the box.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// HTTP listener (page, static files, plain-HTTP endpoints). Loopback: safe by default.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// WebSocket listener. The page on :8080 connects here.
pub const DEFAULT_WS_ADDR: &str = "127.0.0.1:8081";
/// Folder the static files come from, relative to the current directory.
pub const DEFAULT_PUBLIC_DIR: &str = "public";
/// Each connection costs two threads; 1024 connections is ~2048 threads, far below the
/// usual `pid_max` and `ulimit -u`, and fits the default `ulimit -n` of 1024 only when
/// raised a little (see README, Capacity).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Largest message a client may send. Big enough for a photo, small enough that a
/// hostile client cannot make us buffer much.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How often the writer pings an idle peer (gorilla's `pingPeriod`). Under the 30–60 s
/// idle timeouts of common proxies and NAT boxes, so the connection stays open.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long the reader waits for any frame (data or pong) before it calls the peer dead
/// (gorilla's `pongWait`). Must exceed the ping interval plus one round trip.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(30);
/// A client must finish its upgrade request within this time (defeats slowloris).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages that may wait for one connection's writer. A client that falls this far
/// behind a room is a slow consumer and is disconnected (close 1008). The queue's
/// slots are reserved up front (16 bytes each), so this is also idle memory.
pub const DEFAULT_SEND_QUEUE: usize = 128;
/// Messages each room keeps for clients that reconnect.
pub const DEFAULT_HISTORY: usize = 1000;
/// Bytes each room's history may hold, so a room of large messages cannot eat the
/// memory: 1000 messages of 1 KiB with their envelopes fit comfortably.
pub const DEFAULT_HISTORY_BYTES: usize = 4 << 20;
/// How long a long-poll request waits for a message before answering with none.
/// Under the 30 s idle timeout of many proxies.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(25);
/// The room of the built-in demo feed (a line every second with the time and stats).
pub const DEMO_FEED_ROOM: &str = "ticker";
/// Log level when neither `--log-level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LOG_LEVEL: log::LevelFilter = log::LevelFilter::Info;
/// Messages kept for Redis while it is unreachable (`--redis-queue`); past it they are
/// still delivered here, counted and logged, but not forwarded.
pub const DEFAULT_REDIS_QUEUE: usize = 1024;
/// Environment variable that may carry the token, so it need not appear in `ps` output.
pub const TOKEN_ENV: &str = "THREADCAST_TOKEN";
/// Environment variable that may carry `--redis`'s URL, so a password in it need not
/// appear in `ps` output.
pub const REDIS_ENV: &str = "THREADCAST_REDIS_URL";

/// Everything the server needs to start. `Config::default()` is the zero-configuration
/// demo; tests usually change only the addresses (to `127.0.0.1:0`) and a timeout.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address of the HTTP listener. Default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// Address of the WebSocket listener. Default `127.0.0.1:8081`.
    pub ws_addr: SocketAddr,
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
    /// Open connections above which handshakes get 503. Default 1024.
    pub max_connections: usize,
    /// Largest message accepted from a client; larger closes with 1009. Default 1 MiB.
    pub max_message_bytes: usize,
    /// Idle time after which the writer sends a ping. Default 20 s.
    pub ping_interval: Duration,
    /// Silence after which the reader drops the peer. Default 30 s.
    pub pong_timeout: Duration,
    /// Deadline for a complete upgrade request. Default 5 s.
    pub handshake_timeout: Duration,
    /// Outgoing messages queued per connection before it counts as slow. Default 128.
    pub send_queue: usize,
    /// Messages kept per room for resuming clients. Default 1000.
    pub history: usize,
    /// Bytes kept per room. Default 4 MiB.
    pub history_bytes: usize,
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
    /// PEM certificate chain (leaf first) for HTTPS and WSS on both listeners
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
            ws_addr: DEFAULT_WS_ADDR.parse().expect("valid default address"),
            public_dir: PathBuf::from(DEFAULT_PUBLIC_DIR),
            public_ws_url: None,
            allowed_origins: Vec::new(),
            token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            send_queue: DEFAULT_SEND_QUEUE,
            history: DEFAULT_HISTORY,
            history_bytes: DEFAULT_HISTORY_BYTES,
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
pub enum Command {
    /// Start the server.
    Run(Box<Config>, log::LevelFilter),
    /// Print `--help` and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
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

/// The `--help` text. Every flag with its default.
pub fn help() -> String {
    format!(
        "threadcast {version} - a small real-time web server (WebSocket rooms, no async runtime)

USAGE: threadcast [FLAGS]

FLAGS:
  --http ADDR              HTTP listener: page, static files, /config.json, /healthz,
                           /stats, POST /publish/ROOM, /events/ROOM (SSE),
                           /poll/ROOM (long polling)             [default: {http}]
  --ws ADDR                WebSocket listener: /echo, /ws/ROOM   [default: {ws}]
  --public DIR             static files; the bundled page if DIR is missing [default: {public}]
  --public-ws-url URL      WebSocket URL the page uses behind a proxy [default: derived from Host]
  --allow-origin URL       also accept handshakes from this Origin (repeatable; '*' = any)
                           [default: same host as the Host header only]
  --auth MODE              where WebSocket clients give the token: handshake
                           (Bearer header or ?token=) or first-message (the
                           first message, within the handshake timeout; else
                           close 1008)                           [default: handshake]
  --allow-host NAME        on a loopback listener, also answer requests whose Host
                           is NAME (DNS-rebinding guard; repeatable; '*' = any)
                           [default: localhost, 127.0.0.1, [::1] only]
  --token SECRET           require this token on handshakes, /publish, /events, /poll
                           (or env {token_env}) [default: none]
  --max-connections N      WebSockets + SSE streams + waiting polls before 503; lowered
                           at start-up to what the machine's limits allow [default: {max_conn}]
  --max-message-bytes N    largest client message, else close 1009 [default: {max_msg}]
  --ping-interval DUR      ping an idle peer this often          [default: {ping}]
  --pong-timeout DUR       drop a peer silent this long          [default: {pong}]
  --handshake-timeout DUR  deadline for the upgrade request      [default: {hs}]
  --send-queue N           messages queued per client before it is a slow consumer
                           (closed with 1008)                    [default: {queue}]
  --history N              messages each room keeps for resuming clients [default: {history}]
  --history-bytes N        bytes each room's history may hold    [default: {history_bytes}]
  --poll-timeout DUR       longest wait of GET /poll/ROOM        [default: {poll}]
  --feed ROOM=COMMAND      broadcast each line COMMAND prints (via sh -c) into ROOM,
                           restarting it when it exits; ROOM=- reads standard input
                           (repeatable)
  --tls-cert FILE          serve both listeners over TLS (https://, wss://) with this
                           PEM certificate chain; needs --tls-key and a build with
                           --features tls                        [default: none]
  --tls-key FILE           PEM private key of --tls-cert; both files are read
                           again on SIGHUP (certificate renewal)  [default: none]
  --trust-proxy            log the client address from X-Forwarded-For (only behind
                           a proxy you run: anyone can send that header)
  --redis URL              share rooms with every instance using this Redis
                           (redis://[:PASSWORD@]HOST:PORT[/DB] or unix:///PATH;
                           or env {redis_env}; build with --features redis)
                                                                 [default: none]
  --redis-queue N          messages kept for Redis while it is unreachable
                           (then delivered here only, counted)   [default: {redis_queue}]
  --no-demo-feed           do not run the demo feed in room '{demo}' (a line a second)
  --log-level LEVEL        off|error|warn|info|debug|trace (or env RUST_LOG) [default: info]
  -h, --help               print this help
  -V, --version            print the version

DUR is a number of seconds (20), or with a unit: 500ms, 20s, 2m.
",
        version = env!("CARGO_PKG_VERSION"),
        http = DEFAULT_HTTP_ADDR,
        ws = DEFAULT_WS_ADDR,
        public = DEFAULT_PUBLIC_DIR,
        token_env = TOKEN_ENV,
        max_conn = DEFAULT_MAX_CONNECTIONS,
        max_msg = DEFAULT_MAX_MESSAGE_BYTES,
        ping = format_duration(DEFAULT_PING_INTERVAL),
        pong = format_duration(DEFAULT_PONG_TIMEOUT),
        hs = format_duration(DEFAULT_HANDSHAKE_TIMEOUT),
        queue = DEFAULT_SEND_QUEUE,
        history = DEFAULT_HISTORY,
        history_bytes = DEFAULT_HISTORY_BYTES,
        poll = format_duration(DEFAULT_POLL_TIMEOUT),
        demo = DEMO_FEED_ROOM,
        redis_queue = DEFAULT_REDIS_QUEUE,
        redis_env = REDIS_ENV,
    )
}

/// Parses the command line (without the program name). `env` looks up environment
/// variables, so tests can pass their own instead of the process environment.
pub fn parse_args<I, S>(
    args: I,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = Config {
        token: env(TOKEN_ENV).filter(|t| !t.is_empty()),
        ..Config::default()
    };
    let mut level = match env("RUST_LOG") {
        Some(value) => parse_level(&value)?,
        None => DEFAULT_LOG_LEVEL,
    };

    let mut args = args.into_iter().map(Into::into);
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
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--http" => config.http_addr = parse_addr(&flag, &value()?)?,
            "--ws" => config.ws_addr = parse_addr(&flag, &value()?)?,
            "--public" => config.public_dir = PathBuf::from(value()?),
            "--public-ws-url" => config.public_ws_url = Some(parse_ws_url(&value()?)?),
            "--allow-origin" => config.allowed_origins.push(value()?),
            "--allow-host" => config.allowed_hosts.push(value()?),
            "--token" => config.token = Some(value()?).filter(|t| !t.is_empty()),
            "--max-connections" => config.max_connections = parse_count(&flag, &value()?)?,
            "--max-message-bytes" => config.max_message_bytes = parse_count(&flag, &value()?)?,
            "--ping-interval" => config.ping_interval = parse_duration(&flag, &value()?)?,
            "--pong-timeout" => config.pong_timeout = parse_duration(&flag, &value()?)?,
            "--handshake-timeout" => config.handshake_timeout = parse_duration(&flag, &value()?)?,
            "--send-queue" => config.send_queue = parse_count(&flag, &value()?)?,
            "--history" => config.history = parse_count(&flag, &value()?)?,
            "--history-bytes" => config.history_bytes = parse_count(&flag, &value()?)?,
            "--poll-timeout" => config.poll_timeout = parse_duration(&flag, &value()?)?,
            "--feed" => config.feeds.push(parse_feed(&value()?)?),
            "--no-demo-feed" => config.demo_feed = false,
            "--trust-proxy" => config.trust_proxy = true,
            "--redis" => config.redis_url = Some(parse_redis_url(&value()?)?),
            "--redis-queue" => config.redis_queue = parse_count(&flag, &value()?)?,
            "--tls-cert" => config.tls_cert = Some(tls_file(&flag, value()?)?),
            "--tls-key" => config.tls_key = Some(tls_file(&flag, value()?)?),
            "--auth" => {
                config.auth = match value()?.as_str() {
                    "handshake" => AuthMode::Handshake,
                    "first-message" => AuthMode::FirstMessage,
                    other => {
                        return Err(UsageError(format!(
                            "--auth: '{other}' is not handshake or first-message"
                        )));
                    }
                }
            }
            "--log-level" => level = parse_level(&value()?)?,
            _ => return Err(UsageError(format!("unknown flag '{arg}'"))),
        }
    }
    if config.redis_url.is_none() {
        if let Some(url) = env(REDIS_ENV).filter(|u| !u.is_empty()) {
            config.redis_url = Some(parse_redis_url(&url)?);
        }
    }
    config.validate()?;
    Ok(Command::Run(Box::new(config), level))
}

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
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(UsageError(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            ));
        }
        Ok(())
    }

    /// Whether both listeners speak TLS (`https://`, `wss://`).
    pub fn uses_tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}

/// The path given to `--tls-cert` or `--tls-key`; an error in a build without TLS, so
/// the flag is not mistaken for a typo.
fn tls_file(flag: &str, value: String) -> Result<PathBuf, UsageError> {
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
fn parse_redis_url(value: &str) -> Result<String, UsageError> {
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

fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, UsageError> {
    value.parse().map_err(|_| {
        UsageError(format!(
            "{flag}: '{value}' is not an address like 127.0.0.1:8080"
        ))
    })
}

fn parse_count(flag: &str, value: &str) -> Result<usize, UsageError> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(UsageError(format!(
            "{flag}: '{value}' is not a positive whole number"
        ))),
    }
}

fn parse_feed(value: &str) -> Result<Feed, UsageError> {
    let bad = || {
        UsageError(format!(
            "--feed: '{value}' is not ROOM=COMMAND or ROOM=- (room: 1-64 of A-Z a-z 0-9 _ -)"
        ))
    };
    let (room, command) = value.split_once('=').ok_or_else(bad)?;
    if !crate::url::is_room_name(room) || command.trim().is_empty() {
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

fn parse_ws_url(value: &str) -> Result<String, UsageError> {
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

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn parse_level(value: &str) -> Result<log::LevelFilter, UsageError> {
    value.parse().map_err(|_| {
        UsageError(format!(
            "log level '{value}' is not one of off|error|warn|info|debug|trace"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, UsageError> {
        parse_args(args.iter().copied(), |_| None)
    }

    fn config(args: &[&str]) -> Config {
        match parse(args) {
            Ok(Command::Run(c, _)) => *c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn no_flags_give_the_documented_defaults() {
        let c = config(&[]);
        assert_eq!(c.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(c.ws_addr.to_string(), DEFAULT_WS_ADDR);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_message_bytes, 1 << 20);
        assert_eq!(c.ping_interval, Duration::from_secs(20));
        assert_eq!(c.pong_timeout, Duration::from_secs(30));
        assert!(c.token.is_none());
        assert_eq!((c.history, c.history_bytes), (1000, 4 << 20));
        assert_eq!(c.poll_timeout, Duration::from_secs(25));
        assert!(c.demo_feed && c.feeds.is_empty());
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
        assert_eq!(c.ws_addr.port(), 0);
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
            let Ok(Command::Run(c, _)) = both else {
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
            (k == TOKEN_ENV).then(|| "s3cret".to_string())
        });
        match from_env {
            Ok(Command::Run(c, _)) => assert_eq!(c.token.as_deref(), Some("s3cret")),
            other => panic!("{other:?}"),
        }
        assert_eq!(config(&["--token", "abc"]).token.as_deref(), Some("abc"));
    }

    #[test]
    fn the_redis_url_may_come_from_the_environment() {
        let from_env = parse_args(Vec::<String>::new(), |k| {
            (k == REDIS_ENV).then(|| "redis://:pw@127.0.0.1:6379".to_string())
        });
        if cfg!(feature = "redis") {
            match from_env {
                Ok(Command::Run(c, _)) => {
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
            "--max-message-bytes",
            "--ping-interval",
            "--pong-timeout",
            "--handshake-timeout",
            "--send-queue",
            "--log-level",
            "--history",
            "--history-bytes",
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

//! Every setting of the server, its default, and the command-line flags that change it.
//!
//! Each default is a named constant with the reason for its value, so a reader can see
//! at a glance what the server does out of the box.

use std::ffi::OsString;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::logging::LogSpec;

/// The one listener: the page, static files, the HTTP endpoints and WebSockets.
/// Loopback: safe by default.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Folder the static files come from, relative to the current directory.
pub const DEFAULT_PUBLIC_DIR: &str = "public";
/// Each connection costs two threads; 1024 connections is ~2048 threads, far below the
/// usual `pid_max` and `ulimit -u`, and fits the default `ulimit -n` of 1024 only when
/// raised a little (see README, Capacity and memory).
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
/// A request body (`POST /publish`) must arrive completely within this time: 1 MiB
/// takes under 10 s even at 1 Mbit/s, and a client trickling bytes is cut off (408).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages that may wait for one connection's writer. A client that falls this far
/// behind a room is a slow consumer and is disconnected (close 1008). The queue's
/// slots are reserved up front (16 bytes each), so this is also idle memory.
pub const DEFAULT_SEND_QUEUE: usize = 128;
/// Connections one client address may hold open at once (WebSockets, SSE streams,
/// polls and requests in progress). A classroom behind one NAT address must fit: the
/// bundled page keeps 3 WebSockets open per tab (its room, the ticker, the echo
/// panel), so 30 students with two tabs each hold 180, and a page load adds a brief
/// burst of up to 6 file requests per tab. 256 leaves that room and still keeps one
/// address from taking every one of the 1024 default slots; a larger class behind
/// one address raises it.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Messages per second one connection may send into a room (a token bucket that holds
/// twice this many, for bursts). A person typing or a sensor at 100 Hz stays far below;
/// a client flooding a room is closed with 1008.
pub const DEFAULT_MAX_MESSAGES_PER_SECOND: u32 = 100;
/// Messages each room keeps for clients that reconnect.
pub const DEFAULT_HISTORY: usize = 1000;
/// Bytes each room's history may hold, so a room of large messages cannot eat the
/// memory: 1000 messages of 1 KiB with their envelopes fit comfortably. Lowered to
/// [`HISTORY_SHARE`] of a small memory budget.
pub const DEFAULT_HISTORY_BYTES: usize = 4 << 20;
/// Without `--history-bytes`, one room's history takes at most this fraction of the
/// memory budget, so one busy room cannot crowd out the others.
pub const HISTORY_SHARE: usize = 64;
/// Without `--send-queue-bytes`, one connection may have this fraction of the memory
/// budget queued for it (but always room for two of the largest messages, and at most
/// [`MAX_DEFAULT_SEND_QUEUE_BYTES`]) before it counts as a slow consumer.
pub const SEND_QUEUE_SHARE: usize = 64;
/// The most bytes the derived `--send-queue-bytes` allows one connection: more than
/// a minute of any real client's traffic.
pub const MAX_DEFAULT_SEND_QUEUE_BYTES: usize = 64 << 20;
/// How long a long-poll request waits for a message before answering with none.
/// Under the 30 s idle timeout of many proxies.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(25);
/// The room of the built-in demo feed (a line every second with the time and stats).
pub const DEMO_FEED_ROOM: &str = "ticker";
/// Log level when neither `--log-level` nor `RUST_LOG` says otherwise.
pub use crate::logging::DEFAULT_LOG_LEVEL;
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
    /// (see [`crate::budget::machine_limit`]).
    pub memory_limit: Option<usize>,
    /// Messages kept per room for resuming clients. Default 1000.
    pub history: usize,
    /// Bytes kept per room; `None`: derived from the memory budget (see
    /// [`Config::history_bytes`]).
    pub history_bytes: Option<usize>,
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
pub enum Command {
    /// Start the server, logging what the spec asks for.
    Run(Box<Config>, LogSpec),
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
  --http ADDR              the one listener: page, static files, WebSockets (/echo,
                           /ws/ROOM), /config.json, /healthz, /stats, /metrics,
                           POST /publish/ROOM, /events/ROOM (SSE), /poll/ROOM
                           (long polling)                        [default: {http}]
  --ws ADDR                an extra listener for WebSockets only [default: none]
  --public DIR             static files; the bundled page if DIR is missing [default: {public}]
  --public-ws-url URL      WebSocket URL the page uses behind a proxy [default: derived from Host]
  --allow-origin ORIGIN    also accept pages from this Origin (WebSocket handshakes,
                           /publish, /events, /poll, /stats; answers carry CORS
                           headers for it), given as scheme://host[:port] with no
                           path, like https://example.com (repeatable; '*' = any)
                           [default: same host as the Host header only]
  --auth MODE              where WebSocket clients give the token: handshake
                           (Bearer header or ?token=) or first-message (the
                           first message, within the handshake timeout; else
                           close 1008)                           [default: handshake]
  --allow-host NAME        on a loopback listener, also answer requests whose Host
                           is NAME (DNS-rebinding guard; repeatable; '*' = any)
                           [default: localhost, 127.0.0.1, [::1] only]
  --token SECRET           require this token on handshakes, /publish, /events, /poll,
                           /stats
                           (or env {token_env}). An empty token is refused, as it
                           would turn authentication off: leave both unset for
                           no token                              [default: none]
  --max-connections N      WebSockets + SSE streams + waiting polls before 503; lowered
                           at start-up to what the machine's limits allow [default: {max_conn}]
  --max-connections-per-ip N
                           connections one client address may hold (not applied
                           to loopback with --trust-proxy)        [default: {per_ip}]
  --max-messages-per-second N
                           messages a connection may publish per second (bursts
                           of twice that), else close 1008       [default: {rate}]
  --max-message-bytes SIZE largest client message or request body, else close
                           1009 / 413                            [default: {max_msg}]
  --memory-limit SIZE      the memory budget: what messages, histories, send queues,
                           bytes being read and replay buffers may take together;
                           short of it, slow consumers are closed (1008), the
                           oldest history is trimmed, then publishes and new
                           connections get 503 (see README, Capacity and memory)
                           [default: half the cgroup's memory.max, else a quarter
                           of the RAM]
  --ping-interval DUR      ping an idle peer this often          [default: {ping}]
  --pong-timeout DUR       drop a peer silent this long          [default: {pong}]
  --handshake-timeout DUR  deadline for a request head (and TLS handshake), and for
                           the token under --auth first-message  [default: {hs}]
  --request-timeout DUR    deadline for a request body, e.g. POST /publish (else 408)
                                                                 [default: {request}]
  --send-queue N           messages queued per client before it is a slow consumer
                           (closed with 1008)                    [default: {queue}]
  --send-queue-bytes SIZE  bytes queued per client before it is a slow consumer
                           [default: 1/{queue_share} of the budget, at least twice
                           --max-message-bytes, at most {queue_cap}]
  --history N              messages each room keeps for resuming clients [default: {history}]
  --history-bytes SIZE     bytes each room's history may hold
                           [default: {history_bytes}, at most 1/{history_share} of the budget]
  --poll-timeout DUR       longest wait of GET /poll/ROOM        [default: {poll}]
  --feed ROOM=COMMAND      broadcast each line COMMAND prints (via sh -c) into ROOM,
                           restarting it when it exits; ROOM=- reads standard input
                           (repeatable)
  --tls-cert FILE          serve every listener over TLS (https://, wss://) with this
                           PEM certificate chain; needs --tls-key and a build with
                           --features tls                        [default: none]
  --tls-key FILE           PEM private key of --tls-cert; both files are read
                           again on SIGHUP (certificate renewal)  [default: none]
  --trust-proxy            log the client address from X-Forwarded-For, and let the
                           proxy's own limits replace --max-connections-per-ip for
                           loopback peers (only behind a proxy you run on this
                           machine: anyone can send that header)
  --redis URL              share rooms with every instance using this Redis
                           (redis://[:PASSWORD@]HOST:PORT[/DB] or unix:///PATH;
                           or env {redis_env}; build with --features redis)
                                                                 [default: none]
  --redis-queue N          messages kept for Redis while it is unreachable
                           (then delivered here only, counted)   [default: {redis_queue}]
  --no-demo-feed           do not run the demo feed in room '{demo}' (a line a second)
  --log-level SPEC         what to log; wins over env RUST_LOG, which takes the same
                           SPEC: comma-separated LEVEL (off|error|warn|info|debug|
                           trace) for threadcast itself and MODULE=LEVEL for one
                           module or crate, like 'debug' or
                           'info,threadcast::hub=trace'. Other crates stay at info
                           (lower if LEVEL is) unless named; tungstenite never goes
                           above debug, as its trace lines print message payloads
                           (tokens). Empty = the default. Access lines, at most
                           {access} a second, have target threadcast::access
                                                                 [default: info]
  -h, --help               print this help
  -V, --version            print the version

ADDR is IP:PORT (127.0.0.1:8080, [::1]:8080) or NAME:PORT (localhost:8080); a name
is resolved once at start-up, and its first IPv4 address is used if it has one.
DUR is a number of seconds (20), or with a unit: 500ms, 20s, 2m.
SIZE is a number of bytes (65536), or with a unit: 64KiB, 256MiB, 1GiB (K, M, G too;
all powers of 1024).
",
        version = env!("CARGO_PKG_VERSION"),
        http = DEFAULT_HTTP_ADDR,
        per_ip = DEFAULT_MAX_CONNECTIONS_PER_IP,
        rate = DEFAULT_MAX_MESSAGES_PER_SECOND,
        public = DEFAULT_PUBLIC_DIR,
        token_env = TOKEN_ENV,
        max_conn = DEFAULT_MAX_CONNECTIONS,
        max_msg = crate::budget::Size(DEFAULT_MAX_MESSAGE_BYTES),
        ping = format_duration(DEFAULT_PING_INTERVAL),
        pong = format_duration(DEFAULT_PONG_TIMEOUT),
        hs = format_duration(DEFAULT_HANDSHAKE_TIMEOUT),
        request = format_duration(DEFAULT_REQUEST_TIMEOUT),
        queue = DEFAULT_SEND_QUEUE,
        history = DEFAULT_HISTORY,
        history_bytes = crate::budget::Size(DEFAULT_HISTORY_BYTES),
        history_share = HISTORY_SHARE,
        queue_share = SEND_QUEUE_SHARE,
        queue_cap = crate::budget::Size(MAX_DEFAULT_SEND_QUEUE_BYTES),
        poll = format_duration(DEFAULT_POLL_TIMEOUT),
        demo = DEMO_FEED_ROOM,
        redis_queue = DEFAULT_REDIS_QUEUE,
        redis_env = REDIS_ENV,
        access = crate::logging::ACCESS_LINES_PER_SECOND,
    )
}

/// Parses the command line (without the program name), as the operating system gives
/// it (`std::env::args_os`): text that is not UTF-8 is a usage error, not a panic.
/// `env` looks up environment variables (`std::env::var_os`), so tests can pass their
/// own instead of the process environment. A flag wins over its variable, which is
/// then not read at all.
pub fn parse_args<I, S>(
    args: I,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut config = Config::default();
    let mut log_spec = None;

    let mut args = utf8_args(args)?.into_iter();
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
            "--ws" => config.ws_addr = Some(parse_addr(&flag, &value()?)?),
            "--public" => config.public_dir = PathBuf::from(value()?),
            "--public-ws-url" => config.public_ws_url = Some(parse_ws_url(&value()?)?),
            "--allow-origin" => config.allowed_origins.push(parse_origin(&value()?)?),
            "--allow-host" => config.allowed_hosts.push(value()?),
            "--token" => config.token = Some(parse_token(&flag, value()?)?),
            "--max-connections" => config.max_connections = parse_count(&flag, &value()?)?,
            "--max-connections-per-ip" => {
                config.max_connections_per_ip = parse_count(&flag, &value()?)?
            }
            "--max-messages-per-second" => {
                config.max_messages_per_second =
                    u32::try_from(parse_count(&flag, &value()?)?).unwrap_or(u32::MAX)
            }
            "--max-message-bytes" => config.max_message_bytes = parse_bytes(&flag, &value()?)?,
            "--memory-limit" => config.memory_limit = Some(parse_memory_limit(&value()?)?),
            "--send-queue-bytes" => {
                config.send_queue_bytes = Some(parse_bytes(&flag, &value()?)?);
            }
            "--ping-interval" => config.ping_interval = parse_duration(&flag, &value()?)?,
            "--pong-timeout" => config.pong_timeout = parse_duration(&flag, &value()?)?,
            "--handshake-timeout" => config.handshake_timeout = parse_duration(&flag, &value()?)?,
            "--request-timeout" => config.request_timeout = parse_duration(&flag, &value()?)?,
            "--send-queue" => config.send_queue = parse_count(&flag, &value()?)?,
            "--history" => config.history = parse_count(&flag, &value()?)?,
            "--history-bytes" => config.history_bytes = Some(parse_bytes(&flag, &value()?)?),
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
            "--log-level" => log_spec = Some(parse_log_spec(&flag, &value()?)?),
            _ => return Err(UsageError(format!("unknown flag '{arg}'"))),
        }
    }
    if config.token.is_none() {
        config.token = token_from_env(&env)?;
    }
    if config.redis_url.is_none() {
        config.redis_url = redis_url_from_env(&env)?;
    }
    let log_spec = match log_spec {
        Some(spec) => spec,
        None => log_spec_from_env(&env)?,
    };
    config.validate()?;
    Ok(Command::Run(Box::new(config), log_spec))
}

/// The arguments as text. One that is not UTF-8 is named by its position, counted
/// from 1 after the program name like `$1` in a shell. Neither it nor the argument
/// before it is shown: either may be a token.
fn utf8_args<S: Into<OsString>>(
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
fn env_var(
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
fn token_from_env(env: &impl Fn(&str) -> Option<OsString>) -> Result<Option<String>, UsageError> {
    env_var(env, TOKEN_ENV)?
        .map(|token| parse_token(TOKEN_ENV, token))
        .transpose()
}

/// The Redis URL from [`REDIS_ENV`], when `--redis` did not set one; empty counts as
/// unset (no secret is at stake: without a URL, nothing is shared).
fn redis_url_from_env(
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<Option<String>, UsageError> {
    match env_var(env, REDIS_ENV)? {
        Some(url) if !url.is_empty() => Ok(Some(parse_redis_url(&url)?)),
        _ => Ok(None),
    }
}

/// What `RUST_LOG` asks for, when `--log-level` did not; unset or empty is the default.
fn log_spec_from_env(env: &impl Fn(&str) -> Option<OsString>) -> Result<LogSpec, UsageError> {
    match env_var(env, "RUST_LOG")? {
        Some(spec) => parse_log_spec("RUST_LOG", &spec),
        None => Ok(LogSpec::default()),
    }
}

/// A log spec from `source` (`--log-level` or `RUST_LOG`); see [`LogSpec`].
fn parse_log_spec(source: &str, spec: &str) -> Result<LogSpec, UsageError> {
    spec.parse()
        .map_err(|e| UsageError(format!("{source}: {e}")))
}

/// A token from `source` (`--token` or [`TOKEN_ENV`]). An empty one is refused: every
/// check would compare against nothing, which is the same as no token at all, and an
/// operator who set it surely meant to require one.
fn parse_token(source: &str, token: String) -> Result<String, UsageError> {
    if token.is_empty() {
        Err(UsageError(format!(
            "{source}: an empty token would turn authentication off; leave it unset for no token"
        )))
    } else {
        Ok(token)
    }
}

/// `--allow-origin`: `*`, or an origin as browsers send it in the `Origin` header,
/// `scheme://host[:port]` and nothing after (one trailing `/` is forgiven). A value
/// without a scheme or with a path could never equal a real `Origin`, so the flag
/// would silently allow nothing.
fn parse_origin(value: &str) -> Result<String, UsageError> {
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
fn is_scheme(scheme: &str) -> bool {
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// `host` or `host:port`, where host may be a bracketed IPv6 literal (`[::1]:8080`).
/// No user name (`user@host`) and no spaces: browsers never send those in `Origin`.
fn is_host_and_port(authority: &str) -> bool {
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

/// `--http` / `--ws`: `IP:PORT`, or `NAME:PORT` resolved here, once, at start-up.
fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, UsageError> {
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
fn pick_address(found: impl IntoIterator<Item = SocketAddr>) -> Option<SocketAddr> {
    let found: Vec<SocketAddr> = found.into_iter().collect();
    found
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(found.first())
        .copied()
}

/// A size in bytes (see [`crate::budget::parse_size`]); 0 is refused.
fn parse_bytes(flag: &str, value: &str) -> Result<usize, UsageError> {
    match crate::budget::parse_size(value) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(UsageError(format!(
            "{flag}: '{value}' is not a size, like 65536, 64KiB or 256MiB"
        ))),
    }
}

/// `--memory-limit SIZE`, at least [`crate::budget::MIN_LIMIT`].
fn parse_memory_limit(value: &str) -> Result<usize, UsageError> {
    let bytes = parse_bytes("--memory-limit", value)?;
    if bytes < crate::budget::MIN_LIMIT {
        return Err(UsageError(format!(
            "--memory-limit: '{value}' is below the smallest budget, {}",
            crate::budget::Size(crate::budget::MIN_LIMIT)
        )));
    }
    Ok(bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, UsageError> {
        parse_args(args.iter().copied(), |_| None)
    }

    /// Parses `args` with only the environment variables in `vars` set.
    fn parse_with_env(args: &[&str], vars: &[(&str, &str)]) -> Result<Command, UsageError> {
        parse_args(args.iter().copied(), |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| OsString::from(value))
        })
    }

    /// The log spec `args` and `vars` ask for.
    fn log_spec(args: &[&str], vars: &[(&str, &str)]) -> Result<LogSpec, UsageError> {
        match parse_with_env(args, vars)? {
            Command::Run(_, spec) => Ok(spec),
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
            Ok(Command::Run(c, _)) => *c,
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
            (k == TOKEN_ENV).then(|| "s3cret".into())
        });
        match from_env {
            Ok(Command::Run(c, _)) => assert_eq!(c.token.as_deref(), Some("s3cret")),
            other => panic!("{other:?}"),
        }
        assert_eq!(config(&["--token", "abc"]).token.as_deref(), Some("abc"));
        // The flag wins, and the variable is then not even read: its emptiness is moot.
        match parse_with_env(&["--token", "abc"], &[(TOKEN_ENV, "")]) {
            Ok(Command::Run(c, _)) => assert_eq!(c.token.as_deref(), Some("abc")),
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

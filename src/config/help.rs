//! The `--help` text: every flag with its default, from the same constants the
//! defaults come from.

use std::time::Duration;

use super::defaults::{ADMIN_TOKEN_ENV, JWT_SECRET_ENV, MIN_JWT_SECRET_BYTES};
use super::defaults::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HISTORY, DEFAULT_HISTORY_BYTES, DEFAULT_HTTP_ADDR,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_IDLE_ROOMS,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGES_PER_SECOND, DEFAULT_PING_INTERVAL,
    DEFAULT_POLL_TIMEOUT, DEFAULT_PONG_TIMEOUT, DEFAULT_PUBLIC_DIR, DEFAULT_REDIS_QUEUE,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_QUEUE, DEMO_FEED_ROOM, HISTORY_SHARE,
    MAX_DEFAULT_SEND_QUEUE_BYTES, REDIS_ENV, SEND_QUEUE_SHARE, TOKEN_ENV,
};

/// The `--help` text. Every flag with its default, section by section.
pub fn help() -> String {
    [
        usage_and_access(),
        connection_limits(),
        timing_and_queues(),
        features_and_logging(),
        value_formats(),
    ]
    .concat()
}

/// `--help`: what the server listens on and who may use it.
fn usage_and_access() -> String {
    format!(
        "threadcast {version} - a small real-time web server (WebSocket rooms, no async runtime)

USAGE: threadcast [FLAGS]
       threadcast token --secret SECRET --sub USER [--name NAME] [--rooms LIST]
                        [--publish LIST] [--ttl DUR]
         prints a signed token (HS256 JWT) for --jwt-secret; the secret may come
         from env {jwt_env} instead; --ttl defaults to {token_ttl}

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
  --jwt-secret SECRET      also accept signed tokens (HS256 JWTs with sub and exp)
                           wherever --token is: they name their users (from, who is
                           here) and open personal rooms @SUB; a connection closes
                           with 4001 when its token expires; at least {jwt_min}
                           bytes, or env {jwt_env}   [default: none]
  --admin-token SECRET     the operator's token: a backend holding it may publish into
                           any room, personal rooms (@USER) included, and use the
                           operator's API (GET /rooms, GET /presence/ROOM,
                           DELETE /rooms/ROOM, POST /disconnect/SUB,
                           POST /publish?room=A&room=B); only it may read /stats and
                           /metrics; or env {admin_env}
                                                                 [default: none]
",
        version = env!("CARGO_PKG_VERSION"),
        http = DEFAULT_HTTP_ADDR,
        public = DEFAULT_PUBLIC_DIR,
        token_env = TOKEN_ENV,
        jwt_env = JWT_SECRET_ENV,
        admin_env = ADMIN_TOKEN_ENV,
        jwt_min = MIN_JWT_SECRET_BYTES,
        token_ttl = format_duration(super::DEFAULT_TOKEN_TTL),
    )
}

/// `--help`: limits on connections, messages and memory.
fn connection_limits() -> String {
    format!(
        "  --max-connections N      WebSockets + SSE streams + waiting polls before 503; lowered
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
",
        per_ip = DEFAULT_MAX_CONNECTIONS_PER_IP,
        rate = DEFAULT_MAX_MESSAGES_PER_SECOND,
        max_conn = DEFAULT_MAX_CONNECTIONS,
        max_msg = crate::budget::Size(DEFAULT_MAX_MESSAGE_BYTES),
    )
}

/// `--help`: timing, send queues and history.
fn timing_and_queues() -> String {
    format!(
        "  --ping-interval DUR      ping every peer this often            [default: {ping}]
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
  --max-idle-rooms N       rooms with no members kept with their history; past it the
                           least recently used is dropped (personal rooms holding
                           messages are not counted)             [default: {idle_rooms}]
  --history-ttl DUR        messages older than this leave history [default: none]
  --data-dir DIR           keep room histories in DIR across restarts (crashes
                           too); not with --redis                [default: memory only]
  --fsync MODE             with --data-dir: batch (one fsync per group of publishes,
                           before any is acknowledged: nothing acknowledged is ever
                           lost), always (one per message), never (the OS decides,
                           forced every second: a crash may lose the last second)
                                                                 [default: batch]
  --poll-timeout DUR       longest wait of GET /poll/ROOM        [default: {poll}]
  --lesson                 narrate every connection's protocol steps (handshake,
                           frames, pings, close, threads) on the console at info
  --allow-inspect          allow ?inspect=1 (a page watching its own connection's
                           frames) on every listener   [default: loopback ones only]
",
        ping = format_duration(DEFAULT_PING_INTERVAL),
        pong = format_duration(DEFAULT_PONG_TIMEOUT),
        hs = format_duration(DEFAULT_HANDSHAKE_TIMEOUT),
        request = format_duration(DEFAULT_REQUEST_TIMEOUT),
        queue = DEFAULT_SEND_QUEUE,
        history = DEFAULT_HISTORY,
        idle_rooms = DEFAULT_MAX_IDLE_ROOMS,
        history_bytes = crate::budget::Size(DEFAULT_HISTORY_BYTES),
        history_share = HISTORY_SHARE,
        queue_share = SEND_QUEUE_SHARE,
        queue_cap = crate::budget::Size(MAX_DEFAULT_SEND_QUEUE_BYTES),
        poll = format_duration(DEFAULT_POLL_TIMEOUT),
    )
}

/// `--help`: feeds, TLS, proxies, Redis and logging.
fn features_and_logging() -> String {
    format!(
        "  --feed ROOM=COMMAND      broadcast each line COMMAND prints (via sh -c) into ROOM,
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

",
        demo = DEMO_FEED_ROOM,
        redis_queue = DEFAULT_REDIS_QUEUE,
        redis_env = REDIS_ENV,
        access = crate::logging::ACCESS_LINES_PER_SECOND,
    )
}

/// `--help`: how ADDR, DUR and SIZE are written.
fn value_formats() -> String {
    "ADDR is IP:PORT (127.0.0.1:8080, [::1]:8080) or NAME:PORT (localhost:8080); a name
is resolved once at start-up, and its first IPv4 address is used if it has one.
DUR is a number of seconds (20), or with a unit: 500ms, 20s, 2m.
SIZE is a number of bytes (65536), or with a unit: 64KiB, 256MiB, 1GiB (K, M, G too;
all powers of 1024).
"
    .to_string()
}

pub(super) fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

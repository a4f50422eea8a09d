//! Every default of the server, each a named constant with the reason for its value,
//! so a reader can see at a glance what the server does out of the box.

use std::time::Duration;

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

/// How often the writer pings each peer, on a schedule even while data flows
/// (gorilla's `pingPeriod`). Under the 30–60 s
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
/// slots are reserved up front (24 bytes each: a 16-byte `Outgoing` and the slot's
/// stamp), so this is also idle memory.
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

/// Rooms with no members that keep their history for returning clients; past this
/// many, the least recently used one is dropped with its history (bounds memory
/// whatever names clients invent). Personal rooms holding messages do not count.
pub const DEFAULT_MAX_IDLE_ROOMS: usize = 1024;

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

/// Messages kept for Redis while it is unreachable (`--redis-queue`); past it they are
/// still delivered here, counted and logged, but not forwarded.
pub const DEFAULT_REDIS_QUEUE: usize = 1024;

/// Environment variable that may carry `--admin-token`, so it need not appear in `ps`
/// output.
pub const ADMIN_TOKEN_ENV: &str = "THREADCAST_ADMIN_TOKEN";

/// Environment variable that may carry `--jwt-secret`, so it need not appear in `ps`
/// output.
pub const JWT_SECRET_ENV: &str = "THREADCAST_JWT_SECRET";

/// Shortest `--jwt-secret`, in bytes: HS256's key should be at least as long as its
/// 256-bit hash (RFC 7518 §3.2), or it is guessable offline from one token.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Environment variable that may carry the token, so it need not appear in `ps` output.
pub const TOKEN_ENV: &str = "THREADCAST_TOKEN";

/// Environment variable that may carry `--redis`'s URL, so a password in it need not
/// appear in `ps` output.
pub const REDIS_ENV: &str = "THREADCAST_REDIS_URL";

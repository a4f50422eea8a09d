//! Server push: a live stream of messages to every open page, through the library.
//!
//! ```sh
//! cargo run --example push                  # page on http://127.0.0.1:8080/
//! cargo run --example push -- 127.0.0.1:0   # any free port
//! ```
//! Argument (or `PUSH_ADDR`): the one address serving the page and the WebSockets.
//! `PUSH_INTERVAL_MS` sets the pace (default 1000).
//!
//! The tutorials' version of this reads a Twitter stream and forwards each tweet to
//! every connected browser. Here the "stream" is a made-up feed, and threadcast does
//! the rest: `Server::start` serves the page, accepts WebSockets on `/ws/<room>`, and
//! `publish` hands each item to the hub, which fans it out to every member of the room
//! without waiting for any of them (a member too slow to keep up is closed with 1008).
//! Open the page, join the room `stream`, and watch the items arrive.
//!
//! On Ctrl-C (SIGINT) or SIGTERM we call `shutdown()`: every client gets close code 1001
//! ("going away"), so a page knows to reconnect later instead of reporting an error.

use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use threadcast::{Config, Message, Server};

/// The room the stream goes to; a browser joins it at `ws://ADDR/ws/stream`.
const ROOM: &str = "stream";
/// Pretend posts, cycled forever.
const FEED: [&str; 4] = [
    "@ferris: blocking I/O is fine, actually",
    "@tcp: my window is zero, please slow down",
    "@hub: fanned out to everyone, waited for no one",
    "@writer: I am the only one who writes",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut setting = |env: &str, default: &str| {
        args.next()
            .or_else(|| std::env::var(env).ok())
            .unwrap_or_else(|| default.to_string())
    };
    let http_addr = setting("PUSH_ADDR", "127.0.0.1:8080").parse()?;
    let interval = std::env::var("PUSH_INTERVAL_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis);

    // The library logs through the `log` crate: show its connections on stderr.
    simple_logger::init_with_level(log::Level::Info)?;
    // Catch the signals before starting, so one that arrives early is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    // The page's files live in the repository's public/ folder; if it is missing the
    // server falls back to the page built into the library. Port 0 = any free port.
    let config = Config {
        http_addr,
        public_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/public").into(),
        ..Config::default()
    };
    let server = Server::start(config)?;
    println!(
        "listening on http={} ws={}",
        server.http_addr(),
        server.ws_addr()
    );
    println!(
        "open http://{}/ and join room '{ROOM}' (or ws://{}/ws/{ROOM})",
        server.http_addr(),
        server.ws_addr()
    );

    // A signal ends the stream: close every client with 1001, then exit.
    let mut seq = 0;
    while signals.pending().next().is_none() {
        seq += 1;
        let post = FEED[(seq - 1) % FEED.len()];
        // publish() returns how many members the item was queued to (0 if none yet).
        let reached = server.publish(ROOM, Message::text(format!("#{seq} {post}")))?;
        if reached > 0 {
            println!("#{seq} to {reached} client(s)");
        }
        std::thread::sleep(interval);
    }
    println!("shutting down");
    server.shutdown();
    Ok(())
}

//! `floor`: the floor of threadcast's model — what our shape costs with nothing else.
//!
//! threadcast gives every WebSocket connection two OS threads (a reader and a writer,
//! the writer the only one that writes to the socket) and runs every room in one hub
//! thread that fans messages out over bounded crossbeam channels. This server has
//! exactly that shape and nothing more: no history, no envelope, no limits, no memory
//! budget, no timeouts, no logging. Whatever it reaches in a benchmark is the limit of
//! the design itself; the distance between it and threadcast is what our features cost.
//!
//! ```text
//!  socket ─▶ reader ──Publish──▶ hub ──try_send──▶ member queue ─▶ writer ─▶ socket
//!              │                 (all rooms)       (bounded, 256)     ▲
//!              └── echoes, pongs, close replies ──▶ same queue ───────┘
//! ```
//!
//! Endpoints: `/echo` sends every message back unchanged; `/ws/<room>` (a query such
//! as `?raw=1` is ignored) sends every message a member sends to every member of the
//! room, sender included, with its type and payload exactly as sent.
//!
//! Usage: `floor [--addr HOST:PORT]` (default 127.0.0.1:0); prints
//! `listening ws=HOST:PORT` on stderr once it accepts connections.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::StatusCode;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message, WebSocket};

// The sizes below are threadcast's own, so that the floor differs from it in what it
// does, not in how it is tuned.

/// Each connection's send queue, in messages (as gorilla's chat example, and the
/// benchmark's threadcast). A member whose queue is full when the hub offers it a
/// message is a slow consumer: it leaves the room and is closed with 1008.
const SEND_QUEUE: usize = 256;
/// The hub's command queue (threadcast's `HUB_QUEUE`): a reader publishing into a
/// full one waits, which slows its client down through TCP.
const HUB_QUEUE: usize = 4096;
/// Stack of every connection thread (threadcast's `THREAD_STACK_BYTES`).
const THREAD_STACK_BYTES: usize = 128 * 1024;
/// How much tungstenite reads per system call, and how much the writer collects
/// before a `write` (threadcast's `READ_BUFFER_BYTES` and `WRITE_BUFFER_BYTES`).
const READ_BUFFER_BYTES: usize = 2 * 1024;
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

fn main() {
    let addr = parse_args();
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("floor: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    eprintln!("listening ws={local}");

    let (hub, commands) = crossbeam_channel::bounded(HUB_QUEUE);
    thread::spawn(move || run_hub(&commands));

    let mut next_id: u64 = 0;
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Typically out of file descriptors: let some connections end first.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        next_id += 1;
        let (id, hub) = (next_id, hub.clone());
        // A connection whose thread cannot start is dropped, which closes it.
        let _ = spawn(move || connection(id, stream, &hub));
    }
}

/// `--addr HOST:PORT` is the only option.
fn parse_args() -> String {
    let mut addr = String::from("127.0.0.1:0");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value,
            _ => {
                eprintln!("usage: floor [--addr HOST:PORT]");
                std::process::exit(2);
            }
        }
    }
    addr
}

/// Starts a thread with threadcast's stack size.
fn spawn(f: impl FnOnce() + Send + 'static) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .stack_size(THREAD_STACK_BYTES)
        .spawn(f)
}

/// tungstenite's settings for both halves: threadcast's buffer sizes, default limits.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
}

// ---------------------------------------------------------------------------------
// The hub: one thread owns every room.
// ---------------------------------------------------------------------------------

/// What a reader asks of the hub. One channel from each reader, so a connection's
/// Join, Publishes and Leave reach the hub in the order it sent them.
enum Command {
    Join {
        room: Arc<str>,
        id: u64,
        member: Member,
    },
    Publish {
        room: Arc<str>,
        message: Message,
    },
    Leave {
        room: Arc<str>,
        id: u64,
    },
}

/// The hub's handle on one connection: its writer's queue, and the flag that tells
/// the writer it was dropped as a slow consumer.
struct Member {
    queue: Sender<Out>,
    kicked: Arc<AtomicBool>,
}

/// The hub thread: rooms by name, each its members by connection id. A room exists
/// while it has members.
fn run_hub(commands: &Receiver<Command>) {
    let mut rooms: HashMap<Arc<str>, HashMap<u64, Member>> = HashMap::new();
    for command in commands {
        match command {
            Command::Join { room, id, member } => {
                rooms.entry(room).or_default().insert(id, member);
            }
            Command::Publish { room, message } => {
                if let Some(members) = rooms.get_mut(&room) {
                    members.retain(|_, member| offer(member, &message));
                    if members.is_empty() {
                        rooms.remove(&room);
                    }
                }
            }
            Command::Leave { room, id } => {
                if let Some(members) = rooms.get_mut(&room) {
                    members.remove(&id);
                    if members.is_empty() {
                        rooms.remove(&room);
                    }
                }
            }
        }
    }
}

/// Offers `message` to one member without ever waiting; returns whether it stays in
/// the room. A `Message`'s payload is a reference-counted `Bytes`, so each member's
/// copy is one count more on the same buffer: the payload is never copied.
fn offer(member: &Member, message: &Message) -> bool {
    match member.queue.try_send(Out::Data(message.clone())) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            // A slow consumer. Its writer looks at the flag before each item, so it
            // stops at its next one; should it have emptied the queue since our try,
            // the Wake makes sure it has a next one.
            member.kicked.store(true, Ordering::Release);
            let _ = member.queue.try_send(Out::Wake);
            false
        }
        // Its writer has ended; the reader's Leave is on its way.
        Err(TrySendError::Disconnected(_)) => false,
    }
}

// ---------------------------------------------------------------------------------
// One connection: the accepting thread does the handshake and becomes the reader; it
// starts the writer.
// ---------------------------------------------------------------------------------

/// Where a connection's messages go.
enum Route {
    Echo,
    Room(Arc<str>),
}

/// `/echo`, or `/ws/<room>` with a room name that is not empty.
fn route(path: &str) -> Option<Route> {
    if path == "/echo" {
        return Some(Route::Echo);
    }
    let room = path.strip_prefix("/ws/").filter(|room| !room.is_empty())?;
    Some(Route::Room(room.into()))
}

/// What the writer is given to send.
enum Out {
    /// A text or binary message (an echo, or a room's message).
    Data(Message),
    /// The reply to a ping the reader received.
    Pong(Bytes),
    /// The peer closed: reply with this close frame, then stop.
    Close(Option<CloseFrame>),
    /// Nothing to send: wakes the writer to look at its `kicked` flag.
    Wake,
}

/// The reader's side of the socket. During the handshake it writes (the `101`
/// answer). After that its writes go nowhere: tungstenite's `read` answers pings and
/// closes by writing itself, which could interleave those frames with a message the
/// writer is halfway through. So the reader forwards pings and closes to the writer,
/// the socket's one writer, and what its own tungstenite writes is dropped.
struct ReadHalf {
    stream: TcpStream,
    handshaking: bool,
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.handshaking {
            self.stream.write(buf)
        } else {
            Ok(buf.len())
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.handshaking {
            self.stream.flush()
        } else {
            Ok(())
        }
    }
}

/// A connection, on the thread that accepted it: handshake, start the writer, then
/// read until the connection ends, and wait for the writer.
fn connection(id: u64, stream: TcpStream, hub: &Sender<Command>) {
    // Frames are small and latency matters: no Nagle delay.
    let _ = stream.set_nodelay(true);
    let Ok(writer_stream) = stream.try_clone() else {
        return;
    };

    // The handshake, reading the path: an unknown one is answered 404.
    let mut found = None;
    // (tungstenite's callback type returns the whole error response by value.)
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        found = route(request.uri().path());
        match found {
            Some(_) => Ok(response),
            None => Err(not_found()),
        }
    };
    let half = ReadHalf {
        stream,
        handshaking: true,
    };
    let Ok(mut ws) = tungstenite::accept_hdr_with_config(half, callback, Some(ws_config())) else {
        return;
    };
    ws.get_mut().handshaking = false;
    let Some(route) = found else {
        return;
    };

    // The writer: the only thread that writes to the socket from now on.
    let (to_writer, queue) = crossbeam_channel::bounded(SEND_QUEUE);
    let kicked = Arc::new(AtomicBool::new(false));
    let writer = {
        let kicked = Arc::clone(&kicked);
        spawn(move || write_loop(writer_stream, &queue, &kicked))
    };
    let Ok(writer) = writer else {
        return;
    };

    match route {
        // Straight back to this connection's writer. A blocking send: a client that
        // sends faster than it reads fills its queue, this thread stops reading, and
        // TCP slows the client down.
        Route::Echo => read_loop(&mut ws, &to_writer, |message| {
            to_writer.send(Out::Data(message)).is_ok()
        }),
        Route::Room(room) => {
            let member = Member {
                queue: to_writer.clone(),
                kicked,
            };
            let join = Command::Join {
                room: Arc::clone(&room),
                id,
                member,
            };
            if hub.send(join).is_ok() {
                read_loop(&mut ws, &to_writer, |message| {
                    let room = Arc::clone(&room);
                    hub.send(Command::Publish { room, message }).is_ok()
                });
                let _ = hub.send(Command::Leave { room, id });
            }
        }
    }
    // Once the hub has let go of the queue too, the writer finds it disconnected and
    // ends (if it has not already, after a close frame).
    drop(to_writer);
    let _ = writer.join();
}

/// The answer to a path that is neither `/echo` nor `/ws/<room>`.
fn not_found() -> ErrorResponse {
    let mut response = ErrorResponse::new(None);
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// The reader: reads messages until the connection ends. Text and binary messages go
/// to `deliver` (which returns false when they can no longer go anywhere); pings and
/// the peer's close go to the writer to answer.
fn read_loop(
    ws: &mut WebSocket<ReadHalf>,
    to_writer: &Sender<Out>,
    mut deliver: impl FnMut(Message) -> bool,
) {
    loop {
        let more = match ws.read() {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => deliver(message),
            Ok(Message::Ping(payload)) => to_writer.send(Out::Pong(payload)).is_ok(),
            Ok(Message::Pong(_) | Message::Frame(_)) => true,
            Ok(Message::Close(frame)) => {
                let _ = to_writer.send(Out::Close(frame));
                false
            }
            // The peer vanished, broke the protocol, or the writer shut the socket.
            Err(_) => false,
        };
        if !more {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------
// The writer.
// ---------------------------------------------------------------------------------

/// How the writer's loop ends.
enum End {
    /// Send this close frame, then stop writing.
    Close(Option<CloseFrame>),
    /// Everyone let go of the queue, or a write failed: just stop.
    Stop,
}

/// The writer thread: sends what is queued, then ends the connection its way.
fn write_loop(mut stream: TcpStream, queue: &Receiver<Out>, kicked: &AtomicBool) {
    // Its own tungstenite context over its own handle on the socket; it never reads,
    // so it needs no read buffer.
    let mut ctx = WebSocketContext::new(Role::Server, Some(ws_config().read_buffer_size(0)));
    let end = write_queued(&mut ctx, &mut stream, queue, kicked).unwrap_or(End::Stop);
    // RFC 6455 §5.5.1: nothing is sent after a close frame. Shutting down only our
    // direction then lets the reader see the peer's close reply (or its EOF).
    // Otherwise, shutting down both directions wakes the reader, if it still reads.
    let closed = match end {
        End::Close(frame) => ctx.close(&mut stream, frame).is_ok(),
        End::Stop => false,
    };
    let how = if closed {
        Shutdown::Write
    } else {
        Shutdown::Both
    };
    let _ = stream.shutdown(how);
}

/// Writes queued items as they come: it waits for one, writes it and everything
/// already queued behind it into tungstenite's buffer (which goes to the socket each
/// time it holds WRITE_BUFFER_BYTES), and flushes when the queue is momentarily
/// empty: one system call for a burst of small messages.
fn write_queued(
    ctx: &mut WebSocketContext,
    stream: &mut TcpStream,
    queue: &Receiver<Out>,
    kicked: &AtomicBool,
) -> tungstenite::Result<End> {
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(item) = next {
            if kicked.load(Ordering::Acquire) {
                // Dropped as a slow consumer: what is queued is not sent.
                let policy = CloseFrame {
                    code: CloseCode::Policy,
                    reason: "slow consumer".into(),
                };
                return Ok(End::Close(Some(policy)));
            }
            match item {
                Out::Data(message) => ctx.write(stream, message)?,
                Out::Pong(payload) => ctx.write(stream, Message::Pong(payload))?,
                Out::Close(frame) => return Ok(End::Close(frame)),
                Out::Wake => {}
            }
            next = queue.try_recv().ok();
        }
        ctx.flush(stream)?;
    }
    Ok(End::Stop)
}

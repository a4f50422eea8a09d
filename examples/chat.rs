//! A chat server in miniature: the tutorials' connection pool as a *hub* thread.
//!
//! ```sh
//! cargo run --example chat                              # on 127.0.0.1:9002
//! cargo run --example client -- ws://127.0.0.1:9002/ hi # in another terminal
//! ```
//! The address may also be the first argument or `CHAT_ADDR`; `127.0.0.1:0` picks a port.
//!
//! Why a hub of our own? threadcast's rooms are one call away (`Server::start`, as in
//! `push.rs`; the `threadcast` binary's page is a chat), but using them would hide the
//! lesson. This file is `src/hub/mod.rs` cut to the bone, shaped like gorilla's chat:
//! - One hub thread owns the member list; connections send it `Join`, `Leave` and
//!   `Broadcast` over one channel and it applies them in order: no lock, no races.
//! - The hub never waits for a client: `try_send` offers each member a copy, and a
//!   member whose queue is full is cut off (threadcast closes it with 1008 instead).
//! - Each connection has a reader and a writer thread; only the writer writes (why: see
//!   `echo.rs`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use tungstenite::Message;
use tungstenite::protocol::{Role, WebSocketContext};

/// Messages waiting for one client's writer; a client this far behind is too slow.
const SEND_QUEUE: usize = 64;

/// What connections ask of the hub.
enum Command {
    Join(u64, Sender<Message>, Arc<TcpStream>),
    Leave(u64),
    Broadcast(Message),
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("CHAT_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    let (hub_tx, hub_rx) = crossbeam_channel::bounded(1024);
    thread::spawn(move || hub(&hub_rx));
    for (id, stream) in (1..).zip(listener.incoming().flatten()) {
        let hub_tx = hub_tx.clone();
        thread::spawn(move || connection(id, stream, &hub_tx));
    }
    Ok(())
}

/// Each member's queue to its writer, and its socket (to cut off a slow member).
type Members = HashMap<u64, (Sender<Message>, Arc<TcpStream>)>;

/// The hub: the only code that sees the member list.
fn hub(commands: &Receiver<Command>) {
    let mut members = Members::new();
    for command in commands {
        match command {
            Command::Join(id, tx, socket) => {
                members.insert(id, (tx, socket));
                let note = format!("* guest-{id} joined ({} online)", members.len());
                broadcast(&mut members, Message::text(note));
            }
            Command::Leave(id) => {
                if members.remove(&id).is_some() {
                    let note = format!("* guest-{id} left ({} online)", members.len());
                    broadcast(&mut members, Message::text(note));
                }
            }
            Command::Broadcast(msg) => broadcast(&mut members, msg),
        }
    }
}

/// Fan-out without ever waiting: `try_send` fails at once when a queue is full.
fn broadcast(members: &mut Members, msg: Message) {
    members.retain(|_, (tx, socket)| match tx.try_send(msg.clone()) {
        Ok(()) => true,
        Err(_) => {
            let _ = socket.shutdown(Shutdown::Both); // too slow (or gone): cut it off
            false
        }
    });
}

/// One client: handshake, join, read until it leaves (this thread), write (another).
fn connection(id: u64, stream: TcpStream, hub: &Sender<Command>) {
    let Ok(ws) = tungstenite::accept(stream) else {
        return;
    };
    let socket = Arc::new(ws.into_inner());
    let (tx, queue) = crossbeam_channel::bounded::<Message>(SEND_QUEUE);
    let writer_socket = Arc::clone(&socket);
    let writer = thread::spawn(move || {
        let mut ctx = WebSocketContext::new(Role::Server, None);
        let mut out = &*writer_socket;
        for msg in queue {
            let closing = msg.is_close();
            let sent = ctx.write(&mut out, msg).and_then(|()| ctx.flush(&mut out));
            if sent.is_err() || closing {
                break;
            }
        }
        let _ = writer_socket.shutdown(Shutdown::Both);
    });
    let _ = hub.send(Command::Join(id, tx.clone(), Arc::clone(&socket)));

    let mut ctx = WebSocketContext::new(Role::Server, None);
    let mut input = ReadHalf(socket);
    let mut close_reply = None;
    while let Ok(msg) = ctx.read(&mut input) {
        let line = match msg {
            Message::Text(text) => Message::text(format!("guest-{id}: {text}")),
            Message::Ping(payload) => {
                let _ = tx.send(Message::Pong(payload)); // the writer answers pings
                continue;
            }
            Message::Close(frame) => {
                close_reply = Some(Message::Close(frame)); // sent after we leave the hub
                break;
            }
            _ => continue, // binary and pongs are ignored in this chat
        };
        let _ = hub.send(Command::Broadcast(line));
    }
    // Leave, then queue the close reply. The writer writes nothing after a close frame
    // (RFC 6455 §5.5.1), so a message the hub queues behind it is dropped; threadcast
    // waits for the hub to confirm the Leave first, so no message owed is lost.
    let _ = hub.send(Command::Leave(id));
    if let Some(reply) = close_reply {
        let _ = tx.send(reply);
    }
    drop(tx);
    let _ = writer.join();
}

/// Reads from the socket; discards what tungstenite writes from inside `read()`.
struct ReadHalf(Arc<TcpStream>);

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

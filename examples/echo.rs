//! An echo server, twice: the tutorials' first program, then the shape threadcast uses.
//!
//! ```sh
//! cargo run --example echo                      # simple, on 127.0.0.1:9001
//! cargo run --example echo -- split 127.0.0.1:0 # reader + writer, any free port
//! cargo run --example client -- ws://127.0.0.1:9001/ hello   # in another terminal
//! ```
//! The address may also come from the environment: `ECHO_ADDR=127.0.0.1:0`.
//!
//! **simple**: one thread per connection owns the whole `WebSocket`, reads a message and
//! sends it back. Fine for echo, because the only time it writes is right after a read.
//!
//! **split**: a chat or push server must write *while* its reader is blocked waiting for
//! the client (a message from someone else arrives). So each connection gets a reader
//! thread and a writer thread. The catch: tungstenite's `read()` writes too — it answers
//! every ping with a pong and a close with a close. If the reader wrote those while the
//! writer was in the middle of a frame, the bytes of two frames would interleave and the
//! stream would be garbage. The rule that fixes it: **only the writer writes**. The
//! reader's tungstenite context writes into a sink, and the reader *queues* each reply
//! for the writer instead. threadcast does exactly this in `src/ws/connection.rs`,
//! adding heartbeats, limits and close codes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use tungstenite::Message;
use tungstenite::protocol::{Role, WebSocketContext};

/// Messages the reader may queue for the writer before it waits (back-pressure).
const QUEUE: usize = 64;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "simple".into());
    let addr = args
        .next()
        .or_else(|| std::env::var("ECHO_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let serve: fn(TcpStream) = match mode.as_str() {
        "simple" => simple,
        "split" => split,
        _ => return Err(io::Error::other("usage: echo [simple|split] [ADDR]")),
    };
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {} ({mode})", listener.local_addr()?);
    // One thread per connection: each blocks in its own read(), the OS schedules them.
    for stream in listener.incoming().flatten() {
        thread::spawn(move || serve(stream));
    }
    Ok(())
}

/// One thread, one `WebSocket`: read, send back, repeat.
fn simple(stream: TcpStream) {
    // The HTTP upgrade: read the GET, answer 101 with Sec-WebSocket-Accept.
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    // read() fails with ConnectionClosed after a clean close handshake, or with the
    // error that ended the connection (protocol error, reset, EOF).
    while let Ok(msg) = ws.read() {
        // A ping or close needs no code here: read() queued the pong or close reply and
        // writes it on the next call. Only data is echoed.
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
            break;
        }
    }
}

/// The reader's view of the socket: reads are real, writes are thrown away, because
/// whatever tungstenite wants to write from inside `read()` the writer sends instead.
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

/// Reader (this thread) + writer (a new thread) + a channel between them.
fn split(stream: TcpStream) {
    let Ok(ws) = tungstenite::accept(stream) else {
        return;
    };
    // Both threads share one socket (`&TcpStream` reads and writes; no second fd).
    // Caveat: into_inner() drops any frame a client pipelined right behind its request;
    // threadcast parses the handshake itself to keep those bytes (src/ws/handshake.rs).
    let socket = Arc::new(ws.into_inner());
    let (to_writer, queue) = crossbeam_channel::bounded::<Message>(QUEUE);

    let writer_socket = Arc::clone(&socket);
    let writer = thread::spawn(move || {
        let mut ctx = WebSocketContext::new(Role::Server, None);
        let mut out = &*writer_socket;
        // The only code that writes frames. It ends when the reader drops its sender.
        for msg in queue {
            let closing = msg.is_close();
            // write() of a Close sends our close frame; afterwards we must send nothing.
            let sent = ctx.write(&mut out, msg).and_then(|()| ctx.flush(&mut out));
            if sent.is_err() || closing {
                break;
            }
        }
        // The server closes TCP first (RFC 6455 §7.1.1); this also wakes a blocked reader.
        let _ = writer_socket.shutdown(Shutdown::Both);
    });

    let mut ctx = WebSocketContext::new(Role::Server, None);
    let mut input = ReadHalf(socket);
    loop {
        let reply = match ctx.read(&mut input) {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => msg, // the echo
            Ok(Message::Ping(payload)) => Message::Pong(payload),     // §5.5.2: same payload
            Ok(Message::Close(frame)) => {
                let _ = to_writer.send(Message::Close(frame)); // answer with the same code
                break;
            }
            Ok(_) => continue, // a pong: nothing to answer
            Err(_) => break,   // EOF, reset, or a protocol error (threadcast: `classify`)
        };
        if to_writer.send(reply).is_err() {
            break; // the writer has stopped
        }
    }
    drop(to_writer);
    let _ = writer.join();
}

//! A blocking WebSocket client: connect, send, receive, and close *properly*.
//!
//! ```sh
//! cargo run --example client -- ws://127.0.0.1:8080/echo hello world
//! cargo run --example client -- ws://127.0.0.1:8080/ws/lobby?raw=1 hi  # a room: hear yourself
//! ```
//! The URL may also come from `CLIENT_URL`. Each further argument is sent as one text
//! message, and the client waits for one message back after each.
//!
//! "Properly" is the part tutorials skip. Dropping the socket makes the server see a
//! connection that vanished without a close frame (it logs it as gone, not closed).
//! The close handshake (RFC 6455 §7) is: send a close frame with a code (1000 = normal),
//! keep reading — messages already on their way still arrive — until the server's
//! close frame comes back, then let the *server* close TCP first, which keeps the
//! TIME_WAIT state on the server instead of on us (§7.1.1).

use std::time::Duration;

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error, Message};

/// Give up on a server that says nothing for this long, instead of hanging forever.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("CLIENT_URL").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:8080/echo".into());

    // TCP connect + the HTTP upgrade: tungstenite sends GET with a random
    // Sec-WebSocket-Key and checks that the 101 answer carries the matching Accept.
    let (mut ws, response) = tungstenite::connect(url.as_str())?;
    println!("connected to {url} (HTTP {})", response.status());
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        tcp.set_read_timeout(Some(READ_TIMEOUT))?;
    }

    for text in args {
        // send() masks the frame (clients must) and flushes it.
        ws.send(Message::text(text.as_str()))?;
        println!("sent: {text}");
        // read() also answers the server's pings for us while we wait.
        loop {
            match ws.read()? {
                Message::Text(reply) => break println!("received: {}", reply.as_str()),
                Message::Binary(bytes) => break println!("received {} bytes", bytes.len()),
                _ => continue, // ping/pong: handled inside read()
            }
        }
    }

    // Start the close handshake with 1000 (normal closure) and a short reason.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))?;
    // Keep reading until the server's close frame has arrived and it has closed TCP:
    // tungstenite reports that as Error::ConnectionClosed, the good ending.
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                println!(
                    "server's close frame: {} {}",
                    u16::from(frame.code),
                    frame.reason
                );
            }
            Ok(other) => println!("after close: {other:?}"), // was already in flight
            Err(Error::ConnectionClosed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("closed cleanly");
    Ok(())
}

//! The enveloped protocol (docs/PROTOCOL.md) parsed just enough for the tests.

use std::net::{SocketAddr, TcpStream};

use threadcast::ServerHandle;
use tungstenite::Message;

use super::{connect_addr, next_data};

/// A frame of the enveloped protocol, parsed just enough for the tests.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Welcome {
        epoch: String,
        last_id: u64,
        epoch_changed: bool,
    },
    Gap {
        from: u64,
        to: u64,
    },
    Message {
        id: u64,
        payload: Vec<u8>,
        text: bool,
    },
    Ack {
        cid: String,
        id: u64,
        duplicate: bool,
    },
    Members,
    /// A person's first connection arrived, or last one left (`join`, `leave`).
    Presence,
}

/// The value of `"key":` in a flat JSON object: a number or a string (unescaped
/// strings only, which is all the header fields are).
pub fn field(json: &str, key: &str) -> String {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} missing in {json}"))
        + key.len()
        + 3;
    let rest = &json[start..];
    if let Some(stripped) = rest.strip_prefix('"') {
        stripped[..stripped.find('"').unwrap()].to_string()
    } else {
        rest[..rest.find([',', '}']).unwrap()].to_string()
    }
}

pub fn parse(message: Message) -> Frame {
    let (text, bytes) = match &message {
        Message::Text(t) => (true, t.as_bytes().to_vec()),
        Message::Binary(b) => (false, b.to_vec()),
        other => panic!("unexpected {other:?}"),
    };
    let newline = bytes.iter().position(|&b| b == b'\n');
    let header = String::from_utf8(bytes[..newline.unwrap_or(bytes.len())].to_vec()).unwrap();
    match field(&header, "type").as_str() {
        "message" => Frame::Message {
            id: field(&header, "id").parse().unwrap(),
            payload: bytes[newline.expect("payload after header") + 1..].to_vec(),
            text,
        },
        "welcome" => Frame::Welcome {
            epoch: field(&header, "epoch"),
            last_id: field(&header, "last_id").parse().unwrap(),
            epoch_changed: field(&header, "epoch_changed") == "true",
        },
        "gap" => Frame::Gap {
            from: field(&header, "from").parse().unwrap(),
            to: field(&header, "to").parse().unwrap(),
        },
        "ack" => Frame::Ack {
            cid: field(&header, "cid"),
            id: field(&header, "id").parse().unwrap(),
            duplicate: field(&header, "duplicate") == "true",
        },
        "members" => Frame::Members,
        "join" | "leave" => Frame::Presence,
        other => panic!("unknown frame type {other}"),
    }
}

/// Next frame other than a member-count notice.
pub fn next_frame(ws: &mut tungstenite::WebSocket<TcpStream>) -> Frame {
    loop {
        match parse(next_data(ws)) {
            Frame::Members | Frame::Presence => continue,
            frame => return frame,
        }
    }
}

/// Connects to `/ws/<room><query>` and returns the client with its welcome.
pub fn join(
    server: &ServerHandle,
    room: &str,
    query: &str,
) -> (tungstenite::WebSocket<TcpStream>, Frame) {
    join_addr(server.ws_addr(), room, query)
}

/// [`join`] on the WebSocket listener at `addr`.
pub fn join_addr(
    addr: SocketAddr,
    room: &str,
    query: &str,
) -> (tungstenite::WebSocket<TcpStream>, Frame) {
    let mut ws = connect_addr(addr, &format!("/ws/{room}{query}"));
    let welcome = next_frame(&mut ws);
    assert!(matches!(welcome, Frame::Welcome { .. }), "{welcome:?}");
    (ws, welcome)
}

pub fn epoch_of(welcome: &Frame) -> String {
    match welcome {
        Frame::Welcome { epoch, .. } => epoch.clone(),
        other => panic!("{other:?}"),
    }
}

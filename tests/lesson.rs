//! Lesson mode (issue 17): a connection opened with `?inspect=1` sees its own handshake,
//! the frames its reader read and its writer wrote — decoded from the bytes — and its two
//! threads; a connection without it sees none of that; `/stats?connections=1` lists every
//! connection's threads and traffic; `--lesson` narrates on the console.

mod common;

use std::net::TcpStream;

use common::*;
use tungstenite::{Message, WebSocket};

/// The next inspect event of kind `event`, skipping other frames.
fn next_event(ws: &mut WebSocket<TcpStream>, event: &str) -> String {
    let wanted = format!(r#"{{"type":"inspect","event":"{event}""#);
    loop {
        if let Message::Text(text) = next_data(ws) {
            if text.starts_with(&wanted) {
                return text.to_string();
            }
        }
    }
}

/// The next frame event going `dir` (`in` or `out`) whose kind is `kind`.
fn next_frame(ws: &mut WebSocket<TcpStream>, dir: &str, kind: &str) -> String {
    loop {
        let frame = next_event(ws, "frame");
        if frame.contains(&format!(r#""dir":"{dir}""#))
            && frame.contains(&format!(r#""kind":"{kind}""#))
        {
            return frame;
        }
    }
}

#[test]
fn the_inspector_sees_its_own_handshake_threads_and_frames() {
    let server = start();
    let url = format!(
        "ws://{}/echo?inspect=1&token=none-needed",
        server.http_addr()
    );
    let stream = TcpStream::connect(server.http_addr()).unwrap();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let (mut ws, response) = tungstenite::client(url, stream).unwrap();
    let accept = response.headers()["Sec-WebSocket-Accept"]
        .to_str()
        .unwrap()
        .to_string();

    let handshake = next_event(&mut ws, "handshake");
    assert!(
        handshake.contains(&format!(r#""base64":"{accept}""#)),
        "{handshake}"
    );
    assert!(handshake.contains("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"));
    assert!(handshake.contains("token=[redacted]") && !handshake.contains("none-needed"));
    for role in ["reader", "writer"] {
        let thread = next_event(&mut ws, "thread");
        assert!(thread.contains(&format!(r#""role":"{role}""#)), "{thread}");
        let tid = frames::field(&thread, "tid");
        let task = format!("/proc/{}/task/{tid}", std::process::id());
        assert!(
            std::path::Path::new(&task).exists(),
            "{task}: a thread of the server"
        );
    }

    // The three length encodings, read masked and written back unmasked.
    // (The server sends messages over 32 KiB in fragments, so its 70,000 bytes go out
    // as a first text frame of 32,768, not final, then continuation frames.)
    for (size, bits, out) in [
        (5, 7, "5,\"len_bits\":7"),
        (126, 16, "126,\"len_bits\":16"),
        (70_000, 64, "32768,\"len_bits\":16"),
    ] {
        ws.send(Message::text("x".repeat(size))).unwrap();
        let read = next_frame(&mut ws, "in", "text");
        assert!(
            read.contains(&format!(r#""len":{size},"len_bits":{bits}"#)),
            "{read}"
        );
        assert!(read.contains(r#""masked":true,"mask":""#) && read.contains("clients must mask"));
        let wrote = next_frame(&mut ws, "out", "text");
        assert!(wrote.contains(&format!(r#""len":{out}"#)), "{wrote}");
        assert!(wrote.contains(r#""masked":false"#) && wrote.contains("servers never mask"));
    }
    let last = next_frame(&mut ws, "out", "continuation");
    assert!(
        last.contains(r#""len":32768"#) || last.contains(r#""fin":true"#),
        "{last}"
    );
    ws.send(Message::binary(vec![0, 1, 2])).unwrap();
    assert!(next_frame(&mut ws, "in", "binary").contains(r#""opcode":2"#));
    ws.send(Message::Ping("hi".into())).unwrap();
    assert!(next_frame(&mut ws, "in", "ping").contains(r#""unmasked":"6869""#));
    assert!(next_frame(&mut ws, "out", "pong").contains(r#""unmasked":"6869""#));
    // The page closes: the inspector hears its close frame before the server answers.
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 1000u16.into(),
        reason: "done".into(),
    }))
    .unwrap();
    let close = next_frame(&mut ws, "in", "close");
    assert!(
        close.contains(r#""close_code":1000,"close_reason":"done""#),
        "{close}"
    );
}

#[test]
fn nothing_is_inspected_without_asking() {
    let server = start();
    let mut ws = connect(&server, "/echo");
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(
        next_data(&mut ws),
        Message::text("hello"),
        "no inspect frame first"
    );
}

#[test]
fn stats_lists_each_connection_s_threads_and_traffic() {
    let server = start();
    let mut ws = connect(&server, "/ws/lobby?raw=1");
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(next_data(&mut ws), Message::text("hello"));
    let stats = get(server.http_addr(), "/stats?connections=1").text();
    let list = &stats[stats.find("\"connection_list\":[").expect("the list")..];
    assert!(
        list.contains(r#""room":"lobby""#) && list.contains(r#""messages_in":1,"messages_out":1"#),
        "{list}"
    );
    for role in ["reader_tid", "writer_tid"] {
        let tid = frames::field(list, role);
        assert!(
            std::path::Path::new(&format!("/proc/self/task/{tid}")).exists(),
            "{role} {tid}"
        );
    }
    assert!(
        !get(server.http_addr(), "/stats")
            .text()
            .contains("connection_list")
    );
}

#[test]
fn lesson_mode_narrates_each_step_on_the_console() {
    let mut command = binary_command();
    command.args(["--lesson", "--no-demo-feed"]);
    let mut server = Binary::start(command);
    let mut ws = connect_addr(server.http, "/echo");
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(next_data(&mut ws), Message::text("hello"));
    let mut wanted = vec![
        "handshake checked: GET /echo HTTP/1.1 → 101",
        "reader thread",
        "read a text frame, final, 5 bytes",
        "wrote a text frame, final, 5 bytes",
    ];
    for line in server.logs.by_ref() {
        wanted.retain(|w| !line.contains(w));
        if wanted.is_empty() {
            break;
        }
    }
    assert!(wanted.is_empty(), "not narrated: {wanted:?}");
}

#[test]
fn the_server_s_close_frame_is_announced_before_it_is_written() {
    let server = start_with(|c| c.max_message_bytes = 1024);
    let mut ws = connect(&server, "/echo?inspect=1");
    ws.send(Message::binary(vec![0u8; 2048])).unwrap();
    let close = next_frame(&mut ws, "out", "close");
    assert!(close.contains(r#""close_code":1009"#), "{close}");
    let (code, _) = expect_close(&mut ws);
    assert_eq!(u16::from(code), 1009);
}

//! RFC 6455 conformance, byte by byte: our own suite of raw-socket cases, organised like
//! the Autobahn|Testsuite case groups (framing, pings, reserved, fragmentation, utf8,
//! close, limits).
//!
//! Every case runs twice, against `/echo` and against a room in raw mode
//! (`/ws/<room>?raw=1`) with a single member: a room broadcasts to the sender too, so a
//! lone member hears its own messages back exactly like echo. The reader/writer split
//! must behave identically on both paths.
//!
//! Frames are built by hand (see `tests/common`), so each case says exactly what goes on
//! the wire, including things no well-behaved client library would ever send. Cases
//! that Autobahn cannot see are here too: the *timing* of replies (a ping between the
//! fragments of an unfinished message is answered at once; invalid UTF-8 is reported as
//! soon as the bad byte arrives, before the message is complete).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use threadcast::{Config, ServerHandle};

/// Where a case runs.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    /// `/echo`: the reader hands each message straight to its own writer.
    Echo,
    /// `/ws/<room>?raw=1` with one member: the message goes through the hub and back.
    Room,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Echo => "/echo",
            Endpoint::Room => "/ws/conformance?raw=1",
        }
    }
}

/// A raw client connected to its own server.
struct Peer {
    stream: TcpStream,
    server: ServerHandle,
    endpoint: Endpoint,
}

impl Peer {
    fn open(endpoint: Endpoint) -> Peer {
        Peer::open_with(endpoint, |_| {})
    }

    fn open_with(endpoint: Endpoint, change: impl FnOnce(&mut Config)) -> Peer {
        let server = start_with(change);
        let stream = raw_connect(server.ws_addr(), endpoint.path());
        // Each write_all below leaves the client as its own TCP segment, so "split
        // across writes" really reaches the server in pieces.
        stream.set_nodelay(true).unwrap();
        let peer = Peer {
            stream,
            server,
            endpoint,
        };
        if let Endpoint::Room = endpoint {
            peer.wait_until_joined();
        }
        peer
    }

    /// A message sent before the hub has processed our join would reach nobody.
    fn wait_until_joined(&self) {
        let deadline = Instant::now() + TEST_TIMEOUT;
        while self.server.members("conformance") != 1 {
            assert!(Instant::now() < deadline, "the room member never joined");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `bytes` in pieces of `chunk` bytes, one write (one TCP segment) each.
    fn send_in_pieces(&mut self, bytes: &[u8], chunk: usize) {
        for piece in bytes.chunks(chunk) {
            self.stream.write_all(piece).expect("send a piece");
        }
    }

    /// The next frame that is not one of the server's own heartbeat pings.
    fn next_frame(&mut self) -> Frame {
        read_non_ping(&mut self.stream)
            .unwrap_or_else(|| panic!("{:?}: connection ended, expected a frame", self.endpoint))
    }

    /// Reads one whole message (reassembling fragments) and checks its type and payload.
    fn expect_message(&mut self, opcode: u8, payload: &[u8]) {
        let first = self.next_frame();
        assert_eq!(
            first.opcode, opcode,
            "{:?}: expected opcode {opcode:#x}, got {first:?}",
            self.endpoint
        );
        let mut got = first.payload;
        let mut fin = first.fin;
        while !fin {
            let next = self.next_frame();
            assert_eq!(next.opcode, op::CONTINUATION, "{:?}", self.endpoint);
            got.extend_from_slice(&next.payload);
            fin = next.fin;
        }
        assert!(
            got == payload,
            "{:?}: payload of {} bytes differs from the {} bytes sent",
            self.endpoint,
            got.len(),
            payload.len()
        );
    }

    fn expect_pong(&mut self, payload: &[u8]) {
        let pong = self.next_frame();
        assert_eq!(
            (pong.opcode, pong.payload.as_slice()),
            (op::PONG, payload),
            "{:?}",
            self.endpoint
        );
    }

    /// The server fails the connection: a close frame with `code`, then nothing more,
    /// then the end of the TCP stream.
    fn expect_close(&mut self, code: u16) {
        assert_eq!(
            expect_raw_close(&mut self.stream),
            code,
            "{:?}: wrong close code",
            self.endpoint
        );
    }

    /// The connection finishes on the server side too (its slot is freed).
    fn expect_server_side_finished(&self) {
        let deadline = Instant::now() + TEST_TIMEOUT;
        while self.server.connections() > 0 {
            assert!(
                Instant::now() < deadline,
                "{:?}: the server never finished the connection",
                self.endpoint
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Defines one case as a module holding two tests, `on_echo` and `on_room`.
macro_rules! cases {
    ($( $(#[$attr:meta])* fn $name:ident($endpoint:ident) $body:block )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn case($endpoint: Endpoint) $body

            $(#[$attr])*
            #[test]
            fn on_echo() {
                case(Endpoint::Echo);
            }

            $(#[$attr])*
            #[test]
            fn on_room() {
                case(Endpoint::Room);
            }
        }
    )*};
}

/// `len` bytes of printable ASCII text.
fn text_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `len` bytes covering every byte value.
fn binary_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Autobahn 1.x: text and binary messages at every length encoding (7-bit, 16-bit and
/// 64-bit lengths), whole or split across TCP writes.
mod framing {
    use super::*;

    /// The boundaries of the three length encodings: ≤125 fits the 7-bit length,
    /// 126..=65535 needs the 16-bit one, and 65536 and more the 64-bit one.
    const LENGTHS: [usize; 7] = [0, 125, 126, 127, 65535, 65536, 1 << 20];

    cases! {
        /// Text at every length boundary comes back unchanged.
        fn text_at_every_length_encoding_is_echoed(endpoint) {
            let mut peer = Peer::open(endpoint);
            for len in LENGTHS {
                let payload = text_of(len);
                peer.send(&frame(true, op::TEXT, &payload));
                peer.expect_message(op::TEXT, &payload);
            }
        }

        /// Binary at every length boundary comes back unchanged, still binary.
        fn binary_at_every_length_encoding_is_echoed(endpoint) {
            let mut peer = Peer::open(endpoint);
            for len in LENGTHS {
                let payload = binary_of(len);
                peer.send(&frame(true, op::BINARY, &payload));
                peer.expect_message(op::BINARY, &payload);
            }
        }

        /// Frames arriving one byte per TCP segment are reassembled: header, extended
        /// length, mask and payload may each be cut anywhere.
        fn a_frame_sent_one_byte_at_a_time_is_echoed(endpoint) {
            let mut peer = Peer::open(endpoint);
            for len in [0, 5, 125, 126, 300] {
                let payload = text_of(len);
                peer.send_in_pieces(&frame(true, op::TEXT, &payload), 1);
                peer.expect_message(op::TEXT, &payload);
            }
            let payload = binary_of(70_000); // 64-bit length, cut inside the length field
            let bytes = frame(true, op::BINARY, &payload);
            peer.send_in_pieces(&bytes[..12], 1);
            peer.send_in_pieces(&bytes[12..], 4096);
            peer.expect_message(op::BINARY, &payload);
        }

        /// A large frame arriving in many small writes is echoed whole.
        fn a_large_frame_split_across_many_writes_is_echoed(endpoint) {
            let mut peer = Peer::open(endpoint);
            let payload = binary_of(65536);
            peer.send_in_pieces(&frame(true, op::BINARY, &payload), 1000);
            peer.expect_message(op::BINARY, &payload);
        }

        /// Several frames in one TCP write are all processed, in order.
        fn several_frames_in_one_write_are_echoed_in_order(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut burst = Vec::new();
            for i in 0..20 {
                burst.extend(frame(true, op::TEXT, format!("message {i}").as_bytes()));
            }
            peer.send(&burst);
            for i in 0..20 {
                peer.expect_message(op::TEXT, format!("message {i}").as_bytes());
            }
        }

        /// RFC 6455 §5.1: a server MUST close the connection on an unmasked client frame.
        fn an_unmasked_client_frame_fails_with_1002(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame_with(true, 0, op::TEXT, b"hello", false));
            peer.expect_close(1002);
        }

        /// An unmasked control frame is refused just the same.
        fn an_unmasked_ping_fails_with_1002(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame_with(true, 0, op::PING, b"hi", false));
            peer.expect_close(1002);
        }
    }
}

/// Autobahn 2.x: pings and pongs.
mod pings {
    use super::*;

    cases! {
        /// §5.5.2: a pong carries exactly the ping's application data.
        fn a_ping_is_answered_with_a_pong_with_the_same_payload(endpoint) {
            let mut peer = Peer::open(endpoint);
            for payload in [Vec::new(), b"hello".to_vec(), binary_of(125)] {
                peer.send(&frame(true, op::PING, &payload));
                peer.expect_pong(&payload);
            }
        }

        /// A burst of pings gets one pong each, in order.
        fn ten_pings_get_ten_pongs_in_order(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut burst = Vec::new();
            for i in 0..10u8 {
                burst.extend(frame(true, op::PING, &[i]));
            }
            peer.send(&burst);
            for i in 0..10u8 {
                peer.expect_pong(&[i]);
            }
        }

        /// A ping sent one byte at a time is still answered.
        fn a_ping_sent_one_byte_at_a_time_is_answered(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send_in_pieces(&frame(true, op::PING, b"slowly"), 1);
            peer.expect_pong(b"slowly");
        }

        /// §5.5: control frames carry at most 125 bytes.
        fn a_ping_over_125_bytes_fails_with_1002(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(true, op::PING, &binary_of(126)));
            peer.expect_close(1002);
        }

        /// §5.5.3: an unsolicited pong is allowed and needs no answer.
        fn an_unsolicited_pong_is_ignored(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(true, op::PONG, b"unasked"));
            peer.send(&frame(true, op::PONG, b""));
            peer.send(&frame(true, op::TEXT, b"after the pongs"));
            // The first frame back is the echo: nothing was sent for the pongs.
            peer.expect_message(op::TEXT, b"after the pongs");
        }
    }
}

/// Autobahn 3.x and 4.x: reserved bits and reserved opcodes fail the connection.
mod reserved {
    use super::*;

    cases! {
        /// §5.2: RSV1, RSV2 and RSV3 must be 0 unless an extension says otherwise, and we
        /// negotiate none.
        fn each_reserved_bit_fails_with_1002(endpoint) {
            for rsv in [0x40, 0x20, 0x10, 0x70] {
                let mut peer = Peer::open(endpoint);
                peer.send(&frame_with(true, rsv, op::TEXT, b"x", true));
                peer.expect_close(1002);
            }
        }

        /// A reserved bit on a control frame is refused too.
        fn a_reserved_bit_on_a_ping_fails_with_1002(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame_with(true, 0x20, op::PING, b"x", true));
            peer.expect_close(1002);
        }

        /// Opcodes 0x3–0x7 (data) and 0xB–0xF (control) are reserved.
        fn each_reserved_opcode_fails_with_1002(endpoint) {
            for opcode in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
                let mut peer = Peer::open(endpoint);
                peer.send(&frame(true, opcode, b"x"));
                peer.expect_close(1002);
            }
        }

        /// Frames the client sent after the bad one are still unread when the server
        /// closes; closing a socket with unread input makes the kernel send a reset,
        /// which can destroy the close frame before the client reads it. The server must
        /// drain them first.
        fn a_reserved_opcode_followed_by_more_frames_still_gets_its_close_frame(endpoint) {
            for _ in 0..5 {
                let mut peer = Peer::open(endpoint);
                let mut bytes = frame(true, 0x4, b"");
                for _ in 0..200 {
                    bytes.extend(frame(true, op::BINARY, &binary_of(1000)));
                }
                peer.send(&bytes);
                std::thread::sleep(Duration::from_millis(50)); // let the server close first
                peer.expect_close(1002);
            }
        }

        /// Messages before the bad frame are still delivered, then the connection fails.
        fn a_reserved_opcode_after_a_valid_message_fails_after_the_echo(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut bytes = frame(true, op::TEXT, b"first");
            bytes.extend(frame(true, 0x5, b""));
            peer.send(&bytes);
            peer.expect_message(op::TEXT, b"first");
            peer.expect_close(1002);
        }
    }
}

/// Autobahn 5.x: fragmentation.
mod fragmentation {
    use super::*;

    cases! {
        /// A text message in three fragments comes back as one message.
        fn a_fragmented_text_message_is_echoed_whole(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut bytes = frame(false, op::TEXT, b"frag");
            bytes.extend(frame(false, op::CONTINUATION, b"men"));
            bytes.extend(frame(true, op::CONTINUATION, b"ted"));
            peer.send(&bytes);
            peer.expect_message(op::TEXT, b"fragmented");
        }

        /// A binary message in 100 one-byte fragments, and with empty fragments, comes
        /// back whole and binary.
        fn a_binary_message_in_many_fragments_is_echoed_whole(endpoint) {
            let mut peer = Peer::open(endpoint);
            let payload = binary_of(100);
            let mut bytes = frame(false, op::BINARY, &payload[..1]);
            for (i, byte) in payload.iter().enumerate().skip(1) {
                bytes.extend(frame(i == 99, op::CONTINUATION, &[*byte]));
            }
            peer.send(&bytes);
            peer.expect_message(op::BINARY, &payload);

            let mut bytes = frame(false, op::BINARY, b"");
            bytes.extend(frame(false, op::CONTINUATION, b"middle"));
            bytes.extend(frame(true, op::CONTINUATION, b""));
            peer.send(&bytes);
            peer.expect_message(op::BINARY, b"middle");
        }

        /// Fragments arriving over time, one write each, are assembled.
        fn fragments_sent_one_byte_at_a_time_are_echoed_whole(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut bytes = frame(false, op::TEXT, b"one ");
            bytes.extend(frame(false, op::CONTINUATION, b"two "));
            bytes.extend(frame(true, op::CONTINUATION, b"three"));
            peer.send_in_pieces(&bytes, 1);
            peer.expect_message(op::TEXT, b"one two three");
        }

        /// §5.4: control frames may be injected between fragments, and a ping must be
        /// answered at once — before the message is complete, since the client may not
        /// send the rest until it hears the pong.
        fn a_ping_between_fragments_is_answered_before_the_message_completes(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(false, op::TEXT, b"hello "));
            peer.send(&frame(true, op::PING, b"mid-message"));
            peer.expect_pong(b"mid-message");
            peer.send(&frame(false, op::CONTINUATION, b"big "));
            peer.send(&frame(true, op::PING, b"again"));
            peer.expect_pong(b"again");
            peer.send(&frame(true, op::CONTINUATION, b"world"));
            peer.expect_message(op::TEXT, b"hello big world");
        }

        /// A pong between fragments is ignored and the message still completes.
        fn a_pong_between_fragments_is_ignored(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut bytes = frame(false, op::BINARY, b"ab");
            bytes.extend(frame(true, op::PONG, b"x"));
            bytes.extend(frame(true, op::CONTINUATION, b"cd"));
            peer.send(&bytes);
            peer.expect_message(op::BINARY, b"abcd");
        }

        /// A continuation frame with no message to continue.
        fn a_continuation_without_a_start_fails_with_1002(endpoint) {
            for fin in [true, false] {
                let mut peer = Peer::open(endpoint);
                peer.send(&frame(fin, op::CONTINUATION, b"orphan"));
                peer.expect_close(1002);
            }
        }

        /// A continuation after a finished message has nothing to continue either.
        fn a_continuation_after_a_finished_message_fails_with_1002(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(true, op::TEXT, b"done"));
            peer.expect_message(op::TEXT, b"done");
            peer.send(&frame(true, op::CONTINUATION, b"more?"));
            peer.expect_close(1002);
        }

        /// §5.4: fragments of one message may not be interleaved with another message.
        fn a_new_data_frame_inside_a_fragmented_message_fails_with_1002(endpoint) {
            for opcode in [op::TEXT, op::BINARY] {
                let mut peer = Peer::open(endpoint);
                let mut bytes = frame(false, op::TEXT, b"start");
                bytes.extend(frame(true, opcode, b"intruder"));
                peer.send(&bytes);
                peer.expect_close(1002);
            }
        }

        /// §5.5: control frames MUST NOT be fragmented.
        fn a_fragmented_ping_fails_with_1002(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut bytes = frame(false, op::PING, b"half");
            bytes.extend(frame(true, op::CONTINUATION, b"ping"));
            peer.send(&bytes);
            peer.expect_close(1002);
        }

        /// A fragmented close, and a fragmented pong, are refused the same way.
        fn fragmented_close_and_pong_frames_fail_with_1002(endpoint) {
            for opcode in [op::CLOSE, op::PONG] {
                let mut peer = Peer::open(endpoint);
                peer.send(&frame(false, opcode, &close_payload(1000, "")));
                peer.expect_close(1002);
            }
        }
    }
}

/// Autobahn 6.x: UTF-8 handling of text messages.
mod utf8 {
    use super::*;

    /// Byte sequences that are never valid UTF-8 (RFC 3629).
    const INVALID: [&[u8]; 8] = [
        &[0xff],                   // a byte that never appears
        &[0x80],                   // a lone continuation byte
        &[0xc0, 0x80],             // overlong encoding of U+0000
        &[0xe0, 0x80, 0xaf],       // overlong encoding of '/'
        &[0xed, 0xa0, 0x80],       // a UTF-16 surrogate (U+D800)
        &[0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
        &[0xf8, 0x88, 0x80, 0x80], // a 5-byte form
        &[0xce, 0xba, 0xe1],       // κ then a truncated 3-byte sequence, then end
    ];

    cases! {
        /// Two-, three- and four-byte characters come back unchanged.
        fn valid_multibyte_text_is_echoed(endpoint) {
            let mut peer = Peer::open(endpoint);
            for text in ["κόσμε", "€ ∑ 한국어", "𝄞 music, 😀 smile", "\u{10FFFF}\u{FEFF}"] {
                peer.send(&frame(true, op::TEXT, text.as_bytes()));
                peer.expect_message(op::TEXT, text.as_bytes());
            }
        }

        /// A character may be cut between fragments: validity is a property of the
        /// whole message, not of each frame.
        fn a_code_point_split_across_fragments_is_echoed(endpoint) {
            let mut peer = Peer::open(endpoint);
            let text = "a€b😀c".as_bytes();
            // Cut inside € (3 bytes) and inside 😀 (4 bytes), including a frame that
            // holds nothing but the middle of a character.
            let cuts = [(0, 2), (2, 3), (3, 6), (6, 7), (7, text.len())];
            let mut bytes = Vec::new();
            for (i, (from, to)) in cuts.iter().enumerate() {
                let opcode = if i == 0 { op::TEXT } else { op::CONTINUATION };
                bytes.extend(frame(i == cuts.len() - 1, opcode, &text[*from..*to]));
            }
            peer.send(&bytes);
            peer.expect_message(op::TEXT, text);

            // Every character of a long text in its own one-byte fragment.
            let text = "ü€😀".repeat(20);
            let text = text.as_bytes();
            let mut bytes = frame(false, op::TEXT, &text[..1]);
            for (i, byte) in text.iter().enumerate().skip(1) {
                bytes.extend(frame(i == text.len() - 1, op::CONTINUATION, &[*byte]));
            }
            peer.send(&bytes);
            peer.expect_message(op::TEXT, text);
        }

        /// The same text sent one byte per TCP segment.
        fn multibyte_text_split_across_tcp_writes_is_echoed(endpoint) {
            let mut peer = Peer::open(endpoint);
            let text = "€😀κόσμε".as_bytes();
            peer.send_in_pieces(&frame(true, op::TEXT, text), 1);
            peer.expect_message(op::TEXT, text);
            let mut bytes = frame(false, op::TEXT, &text[..2]);
            bytes.extend(frame(true, op::CONTINUATION, &text[2..]));
            peer.send_in_pieces(&bytes, 1);
            peer.expect_message(op::TEXT, text);
        }

        /// §8.1: invalid UTF-8 in a text message fails the connection with 1007.
        fn invalid_utf8_in_a_text_message_fails_with_1007(endpoint) {
            for bad in INVALID {
                let mut peer = Peer::open(endpoint);
                let mut payload = b"valid prefix ".to_vec();
                payload.extend_from_slice(bad);
                peer.send(&frame(true, op::TEXT, &payload));
                peer.expect_close(1007);
            }
        }

        /// Invalid UTF-8 in the middle or last fragment fails just the same.
        fn invalid_utf8_in_a_later_fragment_fails_with_1007(endpoint) {
            for last in [false, true] {
                let mut peer = Peer::open(endpoint);
                let mut bytes = frame(false, op::TEXT, "héllo ".as_bytes());
                bytes.extend(frame(last, op::CONTINUATION, &[0xed, 0xa0, 0x80]));
                if !last {
                    bytes.extend(frame(true, op::CONTINUATION, b"rest"));
                }
                peer.send(&bytes);
                peer.expect_close(1007);
            }
        }

        /// A message that ends in the middle of a character is invalid.
        fn a_message_ending_inside_a_character_fails_with_1007(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut bytes = frame(false, op::TEXT, b"abc");
            bytes.extend(frame(true, op::CONTINUATION, &[0xe2, 0x82])); // € without its end
            peer.send(&bytes);
            peer.expect_close(1007);
        }

        /// The fault is reported as soon as the invalid byte arrives: the first fragment
        /// is bad, and the close comes without the rest of the message ever being sent.
        fn invalid_utf8_is_reported_before_the_message_completes(endpoint) {
            for bad in &INVALID[..7] {
                let mut peer = Peer::open(endpoint);
                let mut payload = b"ok so far ".to_vec();
                payload.extend_from_slice(bad);
                peer.send(&frame(false, op::TEXT, &payload));
                peer.expect_close(1007);
            }
        }

        /// Binary messages carry any bytes: invalid UTF-8 there is fine.
        fn binary_messages_are_not_checked_for_utf8(endpoint) {
            let mut peer = Peer::open(endpoint);
            for bad in INVALID {
                peer.send(&frame(true, op::BINARY, bad));
                peer.expect_message(op::BINARY, bad);
            }
        }
    }
}

/// Autobahn 7.x: the closing handshake.
mod close {
    use super::*;

    /// Codes a peer may send (§7.4.1, §7.4.2, and the registered 1012–1014 range aside).
    const VALID: [u16; 13] = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ];
    /// Codes that must never appear on the wire (reserved, or meaning "no code").
    const INVALID: [u16; 9] = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000];

    cases! {
        /// §5.5.1: the server answers a close with a close, echoing the code, then ends
        /// the TCP connection (the server closes first, §7.1.1).
        fn each_valid_close_code_is_echoed(endpoint) {
            for code in VALID {
                let mut peer = Peer::open(endpoint);
                peer.send(&frame(true, op::CLOSE, &close_payload(code, "reason")));
                peer.expect_close(code);
                peer.expect_server_side_finished();
            }
        }

        /// A close with no payload at all is answered with an empty close frame.
        fn a_close_without_a_code_is_answered_without_a_code(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(true, op::CLOSE, b""));
            let close = peer.next_frame();
            assert_eq!((close.opcode, close.payload.len()), (op::CLOSE, 0), "{close:?}");
            assert!(read_frame(&mut peer.stream).is_none(), "nothing after the close frame");
            peer.expect_server_side_finished();
        }

        /// A close reason may be up to 123 bytes of UTF-8.
        fn a_close_with_the_longest_reason_is_echoed(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(true, op::CLOSE, &close_payload(1000, &"é".repeat(61))));
            peer.expect_close(1000);
        }

        /// Reserved and forbidden codes are a protocol error.
        fn each_invalid_close_code_fails_with_1002(endpoint) {
            for code in INVALID {
                let mut peer = Peer::open(endpoint);
                peer.send(&frame(true, op::CLOSE, &close_payload(code, "")));
                peer.expect_close(1002);
            }
        }

        /// A close payload of one byte cannot hold a code.
        fn a_one_byte_close_payload_fails_with_1002(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(true, op::CLOSE, &[0x03]));
            peer.expect_close(1002);
        }

        /// A close over 125 bytes is an oversized control frame.
        fn a_close_over_125_bytes_fails_with_1002(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(true, op::CLOSE, &close_payload(1000, &"x".repeat(124))));
            peer.expect_close(1002);
        }

        /// §5.5.1: the reason is UTF-8.
        fn invalid_utf8_in_the_close_reason_fails_with_1007(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut payload = close_payload(1000, "bye ");
            payload.extend_from_slice(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80]);
            peer.send(&frame(true, op::CLOSE, &payload));
            peer.expect_close(1007);
        }

        /// §1.4: after its close frame, the peer sends nothing; whatever a client sends
        /// after its own close is ignored (no echo, no pong).
        fn frames_after_the_clients_close_are_ignored(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut bytes = frame(true, op::CLOSE, &close_payload(1000, ""));
            bytes.extend(frame(true, op::TEXT, b"too late"));
            bytes.extend(frame(true, op::PING, b"too late"));
            peer.send(&bytes);
            peer.expect_close(1000);
        }

        /// A message sent before the close is delivered before the close reply.
        fn a_message_before_the_close_is_echoed_first(endpoint) {
            let mut peer = Peer::open(endpoint);
            let mut bytes = frame(true, op::TEXT, b"last words");
            bytes.extend(frame(true, op::CLOSE, &close_payload(1000, "")));
            peer.send(&bytes);
            peer.expect_message(op::TEXT, b"last words");
            peer.expect_close(1000);
        }

        /// When the server fails a connection, it sends its close frame, nothing after
        /// it, and ends the TCP connection once the client answers with its close.
        fn after_a_server_close_the_client_reply_ends_the_connection(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(true, 0x3, b"")); // reserved opcode
            let close = peer.next_frame();
            assert_eq!(close.close_code(), Some(1002));
            let started = Instant::now();
            peer.send(&frame(true, op::CLOSE, &close_payload(1002, "")));
            assert!(read_frame(&mut peer.stream).is_none(), "nothing after the close frame");
            peer.expect_server_side_finished();
            assert!(
                started.elapsed() < threadcast::internals::CLOSE_LINGER,
                "the server waited for the linger timeout instead of our close reply"
            );
        }

        /// A client that vanishes right after its close still frees its slot.
        fn a_client_that_closes_and_hangs_up_at_once_is_cleaned_up(endpoint) {
            let mut peer = Peer::open(endpoint);
            peer.send(&frame(true, op::CLOSE, &close_payload(1000, "")));
            let _ = peer.stream.shutdown(std::net::Shutdown::Both);
            peer.expect_server_side_finished();
        }
    }
}

/// Autobahn 9.x-style limits: `--max-message-bytes`.
mod limits {
    use super::*;

    const MAX: usize = 1000;

    fn open(endpoint: Endpoint) -> Peer {
        Peer::open_with(endpoint, |c| c.max_message_bytes = MAX)
    }

    cases! {
        /// A message of exactly the limit is fine.
        fn a_message_of_exactly_the_limit_is_echoed(endpoint) {
            let mut peer = open(endpoint);
            peer.send(&frame(true, op::BINARY, &binary_of(MAX)));
            peer.expect_message(op::BINARY, &binary_of(MAX));
        }

        /// One byte more closes with 1009 (message too big).
        fn a_frame_over_the_limit_fails_with_1009(endpoint) {
            for opcode in [op::TEXT, op::BINARY] {
                let mut peer = open(endpoint);
                peer.send(&frame(true, opcode, &text_of(MAX + 1)));
                peer.expect_close(1009);
            }
        }

        /// The limit applies to the whole message, not to each fragment.
        fn fragments_adding_up_to_more_than_the_limit_fail_with_1009(endpoint) {
            let mut peer = open(endpoint);
            let mut bytes = frame(false, op::BINARY, &binary_of(600));
            bytes.extend(frame(true, op::CONTINUATION, &binary_of(600)));
            peer.send(&bytes);
            peer.expect_close(1009);
        }

        /// A frame header announcing a huge payload is refused from the header alone:
        /// the server neither waits for nor allocates the payload.
        fn a_header_announcing_a_huge_frame_fails_with_1009_at_once(endpoint) {
            let mut peer = open(endpoint);
            let mut header = vec![0x80 | op::BINARY, 0x80 | 127];
            header.extend_from_slice(&(1u64 << 40).to_be_bytes());
            header.extend_from_slice(&[1, 2, 3, 4]); // the mask
            peer.send(&header);
            peer.expect_close(1009);
        }

        /// §5.2: the most significant bit of a 64-bit length must be 0.
        fn a_64_bit_length_with_the_top_bit_set_is_refused(endpoint) {
            let mut peer = open(endpoint);
            let mut header = vec![0x80 | op::BINARY, 0x80 | 127];
            header.extend_from_slice(&u64::MAX.to_be_bytes());
            header.extend_from_slice(&[1, 2, 3, 4]);
            peer.send(&header);
            let code = expect_raw_close(&mut peer.stream);
            assert!(matches!(code, 1002 | 1009), "{endpoint:?}: close code {code}");
        }
    }
}

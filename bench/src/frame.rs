//! A minimal RFC 6455 client-side frame codec: masked frames out, unmasked
//! (or masked, tolerated) frames in. No extensions are negotiated, so the
//! RSV bits must be zero.

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const FIN_BIT: u8 = 0x80;
const RSV_BITS: u8 = 0x70;
const OPCODE_BITS: u8 = 0x0F;
const MASK_BIT: u8 = 0x80;
const LEN_7_MAX: usize = 125;
const LEN_16_MARKER: u8 = 126;
const LEN_64_MARKER: u8 = 127;

/// Frames larger than this are treated as a protocol error (the benchmark
/// never sends more than 64 KiB per message).
pub const MAX_FRAME_PAYLOAD: u64 = 16 * 1024 * 1024;

/// The fixed handshake key and the accept value a correct server must return
/// for it (RFC 6455 section 1.3 example), so no SHA-1 is needed here.
pub const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const HANDSHAKE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub fn handshake_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Result of inspecting an HTTP upgrade response.
pub enum HandshakeStatus {
    /// Header not complete yet.
    Incomplete,
    /// 101 with the right accept key; the value is the header length.
    Accepted(usize),
    /// Anything else (status line shown for the error report).
    Rejected(String),
}

pub fn parse_handshake_response(buf: &[u8]) -> HandshakeStatus {
    let Some(end) = find_subslice(buf, b"\r\n\r\n") else {
        return HandshakeStatus::Incomplete;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let status_line = head.lines().next().unwrap_or("").to_string();
    if !status_line.starts_with("HTTP/1.1 101") {
        return HandshakeStatus::Rejected(status_line);
    }
    let accept_ok = head.lines().any(|l| {
        let mut parts = l.splitn(2, ':');
        let name = parts.next().unwrap_or("").trim();
        let value = parts.next().unwrap_or("").trim();
        name.eq_ignore_ascii_case("sec-websocket-accept") && value == HANDSHAKE_ACCEPT
    });
    if !accept_ok {
        return HandshakeStatus::Rejected(format!("{status_line} (bad Sec-WebSocket-Accept)"));
    }
    HandshakeStatus::Accepted(end + 4)
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Append one masked, final frame to `out`.
pub fn encode_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(FIN_BIT | (opcode & OPCODE_BITS));
    let len = payload.len();
    if len <= LEN_7_MAX {
        out.push(MASK_BIT | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(MASK_BIT | LEN_16_MARKER);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(MASK_BIT | LEN_64_MARKER);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XOR `data` with the repeating 4-byte mask, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let m32 = u32::from_ne_bytes(mask) as u64;
    let m64 = m32 | (m32 << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().unwrap()) ^ m64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // chunks of 8 keep the mask phase at 0, so the tail starts at mask[0].
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// One parsed frame header.
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: u8,
    pub header_len: usize,
    pub payload_len: usize,
    pub mask: Option<[u8; 4]>,
}

pub enum ParseResult {
    Incomplete,
    Frame(FrameHeader),
    Error(&'static str),
}

/// Parse a frame header at the start of `buf`. Returns `Frame` only when the
/// whole frame (header and payload) is in `buf`.
pub fn parse_frame(buf: &[u8]) -> ParseResult {
    if buf.len() < 2 {
        return ParseResult::Incomplete;
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & RSV_BITS != 0 {
        return ParseResult::Error("RSV bits set");
    }
    let fin = b0 & FIN_BIT != 0;
    let opcode = b0 & OPCODE_BITS;
    let masked = b1 & MASK_BIT != 0;
    let len7 = b1 & !MASK_BIT;
    let (mut header_len, payload_len) = match len7 {
        LEN_16_MARKER => {
            if buf.len() < 4 {
                return ParseResult::Incomplete;
            }
            (4, u16::from_be_bytes([buf[2], buf[3]]) as u64)
        }
        LEN_64_MARKER => {
            if buf.len() < 10 {
                return ParseResult::Incomplete;
            }
            (10, u64::from_be_bytes(buf[2..10].try_into().unwrap()))
        }
        n => (2, n as u64),
    };
    if payload_len > MAX_FRAME_PAYLOAD {
        return ParseResult::Error("frame too large");
    }
    if opcode >= OP_CLOSE && (payload_len > LEN_7_MAX as u64 || !fin) {
        return ParseResult::Error("bad control frame");
    }
    let mask = if masked {
        if buf.len() < header_len + 4 {
            return ParseResult::Incomplete;
        }
        let m = [buf[header_len], buf[header_len + 1], buf[header_len + 2], buf[header_len + 3]];
        header_len += 4;
        Some(m)
    } else {
        None
    };
    let payload_len = payload_len as usize;
    if buf.len() < header_len + payload_len {
        return ParseResult::Incomplete;
    }
    ParseResult::Frame(FrameHeader { fin, opcode, header_len, payload_len, mask })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_length_forms() {
        for len in [0usize, 5, 125, 126, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            encode_masked(&mut out, OP_BINARY, &payload, [1, 2, 3, 4]);
            let ParseResult::Frame(h) = parse_frame(&out) else { panic!("no frame for {len}") };
            assert_eq!(h.payload_len, len);
            assert!(h.fin);
            assert_eq!(h.opcode, OP_BINARY);
            let mut p = out[h.header_len..].to_vec();
            apply_mask(&mut p, h.mask.unwrap());
            assert_eq!(p, payload);
            assert!(matches!(parse_frame(&out[..out.len() - 1]), ParseResult::Incomplete));
        }
    }

    #[test]
    fn handshake_accept() {
        let ok = format!("HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept: {HANDSHAKE_ACCEPT}\r\n\r\nxx");
        assert!(matches!(parse_handshake_response(ok.as_bytes()), HandshakeStatus::Accepted(n) if n == ok.len() - 2));
        assert!(matches!(parse_handshake_response(b"HTTP/1.1 101 X\r\n"), HandshakeStatus::Incomplete));
        assert!(matches!(parse_handshake_response(b"HTTP/1.1 404 No\r\n\r\n"), HandshakeStatus::Rejected(_)));
    }
}

//! Reading frame headers out of a byte stream as it goes by (RFC 6455 §5.2), for the
//! inspector: it never changes a byte, and it keeps only a frame's header and its
//! first few payload bytes.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               | Masking-key, if MASK set to 1 |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```

/// Payload bytes kept per frame to show (and to recognise the inspector's own frames).
pub const PREVIEW_BYTES: usize = 24;

/// One frame's header and the start of its payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo {
    /// FIN: the last frame of its message.
    pub fin: bool,
    /// RSV1, RSV2, RSV3: zero unless an extension says otherwise.
    pub rsv: [bool; 3],
    /// The opcode: 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// The masking key, when the MASK bit is set (clients must mask, servers never do).
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
    /// Which length encoding the header used: 7 bits, or 16 or 64 more.
    pub len_bits: u8,
    /// The first payload bytes as they were on the wire.
    pub preview: Vec<u8>,
}

impl FrameInfo {
    /// The opcode's name.
    pub fn kind(&self) -> &'static str {
        match self.opcode {
            0 => "continuation",
            1 => "text",
            2 => "binary",
            8 => "close",
            9 => "ping",
            10 => "pong",
            _ => "reserved",
        }
    }

    /// The preview unmasked: byte `i` XOR key byte `i % 4`.
    pub fn unmasked(&self) -> Vec<u8> {
        match self.mask {
            Some(key) => (self.preview.iter().enumerate())
                .map(|(i, b)| b ^ key[i % 4])
                .collect(),
            None => self.preview.clone(),
        }
    }

    /// A close frame's code and the start of its reason, if it has them.
    pub fn close(&self) -> Option<(u16, String)> {
        let bytes = self.unmasked();
        (self.opcode == 8 && bytes.len() >= 2).then(|| {
            let code = u16::from_be_bytes([bytes[0], bytes[1]]);
            (code, String::from_utf8_lossy(&bytes[2..]).into_owned())
        })
    }

    /// The frame in one sentence, for a student.
    pub fn words(&self) -> String {
        let fin = if self.fin {
            "final"
        } else {
            "not final (more fragments follow)"
        };
        let length = match self.len_bits {
            7 => "its length in the 7-bit field".to_string(),
            bits => format!("its length in a {bits}-bit extended field"),
        };
        let mask = match self.mask {
            Some(_) => "masked with 4 bytes — clients must mask",
            None => "not masked — servers never mask",
        };
        format!(
            "a {} frame, {fin}, {} bytes ({length}), {mask}",
            self.kind(),
            self.len
        )
    }
}

/// Where the scanner is in the stream.
#[derive(Debug)]
enum Place {
    /// Collecting a header (its bytes so far).
    Header(Vec<u8>),
    /// Inside a payload: the frame, and the bytes of it still to come.
    Payload(FrameInfo, u64),
}

/// Follows one direction of a connection, frame by frame.
#[derive(Debug)]
pub struct FrameScanner {
    place: Place,
}

impl Default for FrameScanner {
    fn default() -> Self {
        FrameScanner {
            place: Place::Header(Vec::with_capacity(14)),
        }
    }
}

impl FrameScanner {
    /// Takes the next `bytes` of the stream; each frame is handed to `found` once its
    /// preview is complete (or its payload ends, if shorter).
    pub fn feed(&mut self, mut bytes: &[u8], found: &mut impl FnMut(FrameInfo)) {
        while !bytes.is_empty() {
            bytes = match &mut self.place {
                Place::Header(head) => {
                    let (taken, info) = take_header(head, bytes);
                    if let Some(info) = info {
                        let len = info.len;
                        self.place = Place::Payload(info, len);
                        self.payload_done(found);
                    }
                    &bytes[taken..]
                }
                Place::Payload(info, left) => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    let want = PREVIEW_BYTES.saturating_sub(info.preview.len()).min(n);
                    info.preview.extend_from_slice(&bytes[..want]);
                    let was_short = info.preview.len() - want < PREVIEW_BYTES;
                    *left -= n as u64;
                    if was_short && (info.preview.len() == PREVIEW_BYTES || *left == 0) {
                        found(info.clone());
                    }
                    let rest = &bytes[n..];
                    self.payload_done(&mut |_| {});
                    rest
                }
            };
        }
    }

    /// After a header: an empty payload is reported at once; a finished payload makes
    /// room for the next header.
    fn payload_done(&mut self, found: &mut impl FnMut(FrameInfo)) {
        if let Place::Payload(info, 0) = &self.place {
            if info.len == 0 {
                found(info.clone());
            }
            self.place = Place::Header(Vec::with_capacity(14));
        }
    }
}

/// Adds bytes to a header being collected; how many it took, and the frame once the
/// header is whole.
fn take_header(head: &mut Vec<u8>, bytes: &[u8]) -> (usize, Option<FrameInfo>) {
    let mut taken = 0;
    while taken < bytes.len() {
        head.push(bytes[taken]);
        taken += 1;
        if head.len() >= 2 && head.len() == header_len(head) {
            return (taken, Some(parse_header(head)));
        }
    }
    (taken, None)
}

/// The whole header's length, from its first two bytes.
fn header_len(head: &[u8]) -> usize {
    let extended = match head[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if head[1] & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

fn parse_header(head: &[u8]) -> FrameInfo {
    let (len, len_bits, at) = match head[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes([head[2], head[3]])), 16, 4),
        127 => {
            let bytes: [u8; 8] = head[2..10].try_into().expect("8 bytes");
            (u64::from_be_bytes(bytes), 64, 10)
        }
        short => (u64::from(short), 7, 2),
    };
    let mask = (head[1] & 0x80 != 0).then(|| [head[at], head[at + 1], head[at + 2], head[at + 3]]);
    FrameInfo {
        fin: head[0] & 0x80 != 0,
        rsv: [
            head[0] & 0x40 != 0,
            head[0] & 0x20 != 0,
            head[0] & 0x10 != 0,
        ],
        opcode: head[0] & 0x0f,
        mask,
        len,
        len_bits,
        preview: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's frame: masked with `key`.
    fn masked(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        frame
    }

    fn scan(stream: &[u8], chunk: usize) -> Vec<FrameInfo> {
        let mut scanner = FrameScanner::default();
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            scanner.feed(piece, &mut |f| frames.push(f));
        }
        frames
    }

    #[test]
    fn the_three_length_encodings_and_masking_are_read_in_any_chunking() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut stream = masked(1, b"Hello", key);
        stream.extend(masked(1, &[b'a'; 126], key));
        stream.extend(masked(2, &vec![7u8; 70_000], key));
        stream.extend(masked(9, b"", key));
        for chunk in [1, 3, 1000, stream.len()] {
            let frames = scan(&stream, chunk);
            let seen: Vec<_> = frames
                .iter()
                .map(|f| (f.opcode, f.len, f.len_bits))
                .collect();
            assert_eq!(
                seen,
                [(1, 5, 7), (1, 126, 16), (2, 70_000, 64), (9, 0, 7)],
                "chunk {chunk}"
            );
            assert_eq!(frames[0].unmasked(), b"Hello");
            assert_eq!(frames[0].mask, Some(key));
            assert_ne!(frames[0].preview, b"Hello", "masked on the wire");
            assert_eq!(frames[2].preview.len(), PREVIEW_BYTES);
        }
        assert_eq!(
            scan(&masked(1, b"Hello", key), 2)[0].words(),
            "a text frame, final, 5 bytes (its length in the 7-bit field), masked with 4 bytes — clients must mask"
        );
    }

    #[test]
    fn a_server_s_close_frame_shows_its_code_and_reason() {
        let mut frame = vec![0x88, 7];
        frame.extend_from_slice(&1001u16.to_be_bytes());
        frame.extend_from_slice(b"bye!!");
        let frames = scan(&frame, 4);
        assert_eq!(frames[0].close(), Some((1001, "bye!!".to_string())));
        assert_eq!(frames[0].mask, None);
        assert!(frames[0].words().contains("servers never mask"));
        let fragment = scan(&[0x01, 0x01, b'x'], 1);
        assert!(!fragment[0].fin && fragment[0].words().contains("not final"));
    }
}

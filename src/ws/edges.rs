//! Where the frames a client sends begin and end, followed in the raw bytes as the
//! reader passes them to tungstenite.
//!
//! Why the reader needs this: tungstenite reads a frame into one buffer as large as
//! the frame, and keeps that buffer for the connection's life (it reuses it for the
//! next frames). A client that sent one 1 MiB message would hold 1 MiB of server
//! memory until it disconnects; a thousand such idle clients, a gigabyte. The cure is
//! to give the connection a fresh tungstenite context after a large message. That is
//! only safe when tungstenite holds no bytes of the next frame yet, so after the
//! header of a large frame the reader reads *exactly* to frame edges (header, then
//! payload, never beyond) until the message is complete. Small frames are read in
//! ordinary chunks, as many at once as have arrived.
//!
//! A frame header (RFC 6455 §5.2) is 2 bytes, then 2 or 8 more for a length of 126
//! or more, then 4 bytes of mask from a client.

/// Frames with more payload than this are large: reading stops at their edges, and a
/// message that had one gets a fresh context. (tungstenite's read buffer is this
/// size, so smaller frames never grow it.)
pub const LARGE_FRAME: u64 = crate::ws::read_half::READ_BUFFER_BYTES as u64;

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Follows frame edges in a stream of bytes.
#[derive(Debug, Default)]
pub struct FrameEdges {
    /// The bytes of the frame header being read.
    header: [u8; MAX_HEADER],
    /// How many of them have arrived.
    have: usize,
    /// Payload bytes still to come in the current frame.
    payload_left: u64,
    /// Since a large frame began: read exactly to edges, until [`FrameEdges::reset`].
    exact: bool,
}

impl FrameEdges {
    /// How many of `room` bytes the next read may take: all of them normally; since a
    /// large frame began, only up to the next edge (never 0).
    pub fn limit(&self, room: usize) -> usize {
        if !self.exact {
            return room;
        }
        let to_edge = if self.payload_left > 0 {
            usize::try_from(self.payload_left).unwrap_or(usize::MAX)
        } else {
            header_len(&self.header[..self.have]) - self.have
        };
        room.min(to_edge).max(1)
    }

    /// Follows `bytes`, just read from the socket.
    pub fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            // A header: take bytes until it is whole, then learn the payload's length.
            let wanted = header_len(&self.header[..self.have]) - self.have;
            let n = wanted.min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == header_len(&self.header[..self.have]) {
                self.payload_left = payload_len(&self.header[..self.have]);
                self.exact |= self.payload_left > LARGE_FRAME;
                self.have = 0;
            }
        }
    }

    /// Whether a large frame has been read since the last [`FrameEdges::reset`] and
    /// every byte read so far belongs to a frame that is complete: tungstenite holds
    /// nothing of the next one, and the context may be replaced.
    pub fn at_edge_after_large(&self) -> bool {
        self.exact && self.payload_left == 0 && self.have == 0
    }

    /// The context was replaced: back to ordinary reads.
    pub fn reset(&mut self) {
        self.exact = false;
    }
}

/// The length of the header that starts with `seen` (2 while fewer are known).
fn header_len(seen: &[u8]) -> usize {
    let Some(&second) = seen.get(1) else {
        return 2;
    };
    let length = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + length + mask
}

/// The payload length a complete header announces.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => u64::from_be_bytes(header[2..10].try_into().expect("8 bytes")),
        n => u64::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header for `len` payload bytes.
    fn header(len: usize) -> Vec<u8> {
        let mut h = vec![0x82];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=65535 => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    #[test]
    fn small_frames_are_read_in_chunks_of_any_size() {
        let mut edges = FrameEdges::default();
        let mut bytes = header(5);
        bytes.extend_from_slice(b"hello");
        bytes.extend(header(3));
        assert_eq!(edges.limit(2048), 2048);
        edges.saw(&bytes[..7]);
        edges.saw(&bytes[7..]);
        assert_eq!(edges.limit(2048), 2048);
        assert!(!edges.at_edge_after_large());
    }

    #[test]
    fn after_a_large_header_reads_stop_exactly_at_each_edge() {
        let mut edges = FrameEdges::default();
        let big = 100_000;
        let h = header(big);
        assert_eq!(h.len(), 14);
        edges.saw(&h[..1]);
        edges.saw(&h[1..]);
        assert_eq!(
            edges.limit(2048),
            2048,
            "the payload is larger than the room"
        );
        edges.saw(&vec![0; big - 100]);
        assert_eq!(edges.limit(2048), 100, "never past the frame's end");
        edges.saw(&[0; 100]);
        assert!(edges.at_edge_after_large());
        assert_eq!(edges.limit(2048), 2, "then a header's first two bytes");
        let next = header(300);
        edges.saw(&next[..2]);
        assert!(!edges.at_edge_after_large());
        assert_eq!(
            edges.limit(2048),
            6,
            "the rest of that header: length and mask"
        );
        edges.saw(&next[2..]);
        assert_eq!(edges.limit(2048), 300);
        edges.saw(&[0; 300]);
        assert!(edges.at_edge_after_large());
        edges.reset();
        assert_eq!(edges.limit(2048), 2048);
    }

    #[test]
    fn every_header_form_is_measured() {
        assert_eq!(header_len(&[]), 2);
        assert_eq!(header_len(&[0x81, 0x05]), 2, "unmasked, short");
        assert_eq!(header_len(&[0x81, 0x85]), 6);
        assert_eq!(header_len(&[0x81, 0x80 | 126]), 8);
        assert_eq!(header_len(&[0x81, 0x80 | 127]), 14);
        assert_eq!(payload_len(&header(70_000)), 70_000);
        assert_eq!(payload_len(&header(300)), 300);
    }
}

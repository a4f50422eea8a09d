//! A feed's output, line by line: each line of standard output becomes a message in
//! the room (charged to the memory budget), each line of standard error a log line.
//! Lines are cut at a bound, so one endless line cannot grow memory.

use std::io::{self, BufRead, BufReader, Read};

use tungstenite::Message;

use super::Publisher;
use crate::budget::{Category, RECLAIM_WAIT};
use crate::room::{MESSAGE_OVERHEAD_BYTES, Tag};

/// Longest line a feed may send; longer lines are cut (memory stays bounded).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Longest line of a feed's standard error that is logged. The rest of a longer line is
/// read and counted, never kept: a log line is for a person to read, 4 KiB is already a
/// long error message, and a line without end (a binary written to stderr by mistake)
/// must cost neither memory nor the log's disk.
pub const MAX_STDERR_LINE_BYTES: usize = 4 * 1024;

/// Publishes each line of `input` into `room` until it ends. A line that is not
/// UTF-8 goes out as a binary message. A line longer than [`MAX_LINE_BYTES`] goes out
/// in pieces of that size: unlike a log line, every byte a feed prints is content.
pub(super) fn publish_lines(input: impl Read, room: &str, hub: &Publisher) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    while next_line(&mut reader, MAX_LINE_BYTES, &mut line) != Line::End {
        let message = match String::from_utf8(std::mem::take(&mut line)) {
            Ok(text) => Message::text(text),
            Err(not_utf8) => Message::binary(not_utf8.into_bytes()),
        };
        // A feed waits for memory like any publisher; a line the budget cannot take
        // even then is dropped (and counted among the budget's refusals).
        let cost = message.len() + MESSAGE_OVERHEAD_BYTES;
        let Some(charge) = hub
            .budget
            .reserve_within(Category::Messages, cost, RECLAIM_WAIT)
        else {
            log::warn!(
                "feed '{room}': a line of {} bytes dropped: the memory budget is exhausted",
                message.len()
            );
            continue;
        };
        if !hub
            .hub
            .post(room.to_string(), (message, charge), Tag::default(), None)
        {
            return; // the hub has stopped
        }
    }
}

/// Logs each line of a feed's standard error until it ends, cut at
/// [`MAX_STDERR_LINE_BYTES`]: the rest of a longer line is read and counted, and the log
/// says how much was cut.
pub(super) fn log_lines(input: impl Read, room: &str) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        let cut = match next_line(&mut reader, MAX_STDERR_LINE_BYTES, &mut line) {
            Line::End => return,
            Line::Whole => 0,
            Line::Cut => skip_rest_of_line(&mut reader),
        };
        // Lossy: an error message is worth reading even with a byte that is not UTF-8.
        let text = String::from_utf8_lossy(&line);
        if cut == 0 {
            log::warn!("feed '{room}' stderr: {text}");
        } else {
            log::warn!("feed '{room}' stderr: {text}… ({cut} more bytes)");
        }
    }
}

/// How the line read by [`next_line`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// At its end of line (removed), or at the end of the input.
    Whole,
    /// After `limit` bytes, with the rest of the line not read yet.
    Cut,
    /// There was no line: the input ended (or failed, which for a pipe is the same).
    End,
}

/// Reads the next line of `reader` into `line` (emptied first), keeping at most `limit`
/// bytes of it: the one bounded reader of a feed's output, so that no line, however long,
/// costs more than `limit` bytes.
pub(super) fn next_line(reader: &mut impl BufRead, limit: usize, line: &mut Vec<u8>) -> Line {
    line.clear();
    match reader.by_ref().take(limit as u64).read_until(b'\n', line) {
        Ok(0) | Err(_) => Line::End,
        Ok(_) if line.ends_with(b"\n") => {
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            Line::Whole
        }
        Ok(read) if read == limit => Line::Cut,
        Ok(_) => Line::Whole, // the last line, without a newline
    }
}

/// Reads the rest of a cut line and its newline, keeping none of it (only the reader's
/// own buffer is ever filled), and returns how many bytes it had before its newline.
pub(super) fn skip_rest_of_line(reader: &mut impl BufRead) -> u64 {
    let mut skipped = 0;
    loop {
        let buffer = match reader.fill_buf() {
            Ok([]) => return skipped, // the input ended inside the line
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return skipped,
        };
        match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return skipped + end as u64;
            }
            None => {
                let read = buffer.len();
                reader.consume(read);
                skipped += read as u64;
            }
        }
    }
}

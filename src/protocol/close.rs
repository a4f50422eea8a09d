//! Why the server closes a WebSocket: one enum, [`CloseReason`], for every reason it
//! ever has, each with its close code (RFC 6455 §7.4.1) and the text the peer reads.
//!
//! A close frame carries a two-byte code and a short UTF-8 reason. The code tells the
//! client what to do next — 1001: the server is going away, reconnect later; 1008: you
//! broke a rule, reconnecting the same way will fail again; 1013: try again later —
//! and the reason says it in words for a person reading the logs. Keeping every
//! reason in one place means a code can never be mistaken for another on its way from
//! where the decision is taken (the hub, a reader) to the writer that sends the frame.

use std::borrow::Cow;

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// Longest close reason in bytes: a close frame is a control frame, at most 125 bytes
/// of payload (§5.5), and the code takes 2 of them.
pub const MAX_CLOSE_REASON: usize = 123;

/// Every reason the server closes a WebSocket for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// 1001 (going away): the server is shutting down.
    GoingAway,
    /// 1008 (policy violation): the client fell too far behind; its queue is full.
    SlowConsumer,
    /// 1008: the client sent more messages per second than it may.
    TooFast {
        /// The allowed rate.
        per_second: u64,
    },
    /// 1008: under `--auth first-message`, no valid token came first.
    Unauthorized(&'static str),
    /// 1008: tungstenite saw a frame built to exhaust the server.
    AttackAttempt,
    /// 1002 (protocol error): the client broke RFC 6455; what tungstenite found.
    Protocol(String),
    /// 1007 (invalid payload data): a text message or close reason is not UTF-8.
    InvalidUtf8,
    /// 1009 (message too big): past `--max-message-bytes`, or another size limit.
    TooBig(String),
    /// 1011 (internal error): something went wrong on our side.
    Internal(String),
    /// 1013 (try again later): the memory budget cannot take what the client sent.
    TryAgainLater,
    /// 4001 (ours): the connection's signed token expired. Come back with a fresh one.
    TokenExpired,
    /// 4003 (ours): the operator disconnected this user (`POST /disconnect/<sub>`).
    /// Do not reconnect on your own.
    Disconnected,
    /// 4004 (ours): the operator deleted the room (`DELETE /rooms/<room>`); its
    /// history is gone.
    RoomDeleted,
}

/// Our own close codes, in the range RFC 6455 §7.4.2 leaves to applications
/// (4000–4999); `docs/PROTOCOL.md` lists what a client does on each.
pub const TOKEN_EXPIRED: u16 = 4001;
/// See [`CloseReason::Disconnected`].
pub const DISCONNECTED: u16 = 4003;
/// See [`CloseReason::RoomDeleted`].
pub const ROOM_DELETED: u16 = 4004;

impl CloseReason {
    /// The close code the peer reads.
    pub fn code(&self) -> CloseCode {
        match self {
            CloseReason::GoingAway => CloseCode::Away,
            CloseReason::SlowConsumer
            | CloseReason::TooFast { .. }
            | CloseReason::Unauthorized(_)
            | CloseReason::AttackAttempt => CloseCode::Policy,
            CloseReason::Protocol(_) => CloseCode::Protocol,
            CloseReason::InvalidUtf8 => CloseCode::Invalid,
            CloseReason::TooBig(_) => CloseCode::Size,
            CloseReason::Internal(_) => CloseCode::Error,
            CloseReason::TryAgainLater => CloseCode::Again,
            CloseReason::TokenExpired => CloseCode::from(TOKEN_EXPIRED),
            CloseReason::Disconnected => CloseCode::from(DISCONNECTED),
            CloseReason::RoomDeleted => CloseCode::from(ROOM_DELETED),
        }
    }

    /// The reason in words, at most [`MAX_CLOSE_REASON`] bytes (cut at a character).
    pub fn reason(&self) -> Cow<'static, str> {
        let text: Cow<'static, str> = match self {
            CloseReason::GoingAway => "server shutting down".into(),
            CloseReason::SlowConsumer => "slow consumer: too far behind".into(),
            CloseReason::TooFast { per_second } => {
                format!("more than {per_second} messages per second").into()
            }
            CloseReason::Unauthorized(why) => (*why).into(),
            CloseReason::AttackAttempt => "attack attempt".into(),
            CloseReason::Protocol(what) | CloseReason::TooBig(what) => what.clone().into(),
            CloseReason::InvalidUtf8 => "invalid UTF-8 in a text message or close reason".into(),
            CloseReason::Internal(what) => format!("internal error: {what}").into(),
            CloseReason::TryAgainLater => "server memory budget exhausted; try again later".into(),
            CloseReason::TokenExpired => "token expired: reconnect with a fresh token".into(),
            CloseReason::Disconnected => "disconnected by the operator".into(),
            CloseReason::RoomDeleted => "room deleted by the operator".into(),
        };
        cut_to(text, MAX_CLOSE_REASON)
    }

    /// The close frame that says so.
    pub fn frame(&self) -> CloseFrame {
        CloseFrame {
            code: self.code(),
            reason: self.reason().into_owned().into(),
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut_to(text: Cow<'static, str>, max: usize) -> Cow<'static, str> {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_code_and_words() {
        let cases = [
            (CloseReason::GoingAway, 1001, "server shutting down"),
            (
                CloseReason::SlowConsumer,
                1008,
                "slow consumer: too far behind",
            ),
            (
                CloseReason::TooFast { per_second: 5 },
                1008,
                "more than 5 messages per second",
            ),
            (CloseReason::Unauthorized("no token"), 1008, "no token"),
            (CloseReason::AttackAttempt, 1008, "attack attempt"),
            (
                CloseReason::Protocol("bad opcode".into()),
                1002,
                "bad opcode",
            ),
            (
                CloseReason::InvalidUtf8,
                1007,
                "invalid UTF-8 in a text message or close reason",
            ),
            (CloseReason::TooBig("too long".into()), 1009, "too long"),
            (
                CloseReason::Internal("oops".into()),
                1011,
                "internal error: oops",
            ),
            (
                CloseReason::TryAgainLater,
                1013,
                "server memory budget exhausted; try again later",
            ),
            (
                CloseReason::TokenExpired,
                4001,
                "token expired: reconnect with a fresh token",
            ),
            (
                CloseReason::Disconnected,
                4003,
                "disconnected by the operator",
            ),
            (
                CloseReason::RoomDeleted,
                4004,
                "room deleted by the operator",
            ),
        ];
        for (reason, code, words) in cases {
            assert_eq!(u16::from(reason.code()), code, "{reason:?}");
            assert_eq!(reason.reason(), words);
            let frame = reason.frame();
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (code, words)
            );
        }
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_to_fit_a_control_frame() {
        let long = CloseReason::Protocol("é".repeat(100)); // 200 bytes
        let reason = long.reason();
        assert!(reason.len() <= MAX_CLOSE_REASON);
        assert_eq!(
            reason.len(),
            122,
            "cut before the character that would not fit"
        );
        assert!(long.frame().reason.len() + 2 <= 125);
    }
}

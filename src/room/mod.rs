//! One room's memory: the id sequence, the epoch, the bounded history, and the client
//! ids it has seen. Pure bookkeeping with no threads or sockets, so every rule about
//! ids, gaps and duplicates is tested here directly.
//!
//! Only the hub thread owns rooms; nothing here is shared or locked.
//! - `message.rs`: one stored message ([`RoomMessage`]);
//! - `history.rs`: the ids, the epoch and the bounded history ([`History`]);
//! - `resume.rs`: where a joining client starts ([`Resume`]) and its catch-up.

mod history;
mod message;
mod resume;

pub use history::{Duplicate, History, HistoryLimits, new_epoch};
pub use message::{MESSAGE_OVERHEAD_BYTES, RoomMessage, Tag, now_millis};
pub use resume::{CatchUp, Resume};

//! Where a joining client starts in a room's history (`Resume`, from its query
//! string) and what it is sent to get there (`CatchUp`: the welcome, the replay, the
//! gap it missed).

use std::sync::Arc;

use super::RoomMessage;
use crate::protocol::url::query_param;
use crate::protocol::{control, envelope};

/// Where a joining client wants to start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Resume {
    /// Only messages published from now on.
    #[default]
    Live,
    /// Everything after `id`, if `epoch` (when given) is still the room's epoch.
    Since {
        /// Last id the client has.
        id: u64,
        /// The epoch that id belongs to.
        epoch: Option<u64>,
    },
}

impl Resume {
    /// `since=<id>` (and optionally `epoch=<epoch>`) from a query string; anything
    /// unreadable, an id past `u64::MAX` included, means "live only". Any id that can
    /// be read is passed on as it is: one beyond the room's newest, `u64::MAX` too, is
    /// the live edge ([`History::catch_up`](super::History::catch_up)).
    pub fn from_query(query: &str) -> Resume {
        match query_param(query, "since").and_then(|s| s.parse().ok()) {
            Some(id) => Resume::Since {
                id,
                epoch: query_param(query, "epoch").and_then(|e| envelope::parse_epoch(&e)),
            },
            None => Resume::Live,
        }
    }
}

/// What a joining client must be told before live messages: built atomically with
/// the join, so nothing published in between can be missed or doubled.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// The room's epoch.
    pub epoch: u64,
    /// Newest id in the room (0 when nothing was ever published).
    pub last_id: u64,
    /// Members after this join.
    pub members: usize,
    /// The client resumed with another epoch: its ids no longer apply.
    pub epoch_changed: bool,
    /// Ids `(from, to)` the client missed that are no longer in history.
    pub gap: Option<(u64, u64)>,
    /// Messages to replay, oldest first.
    pub replay: Vec<Arc<RoomMessage>>,
}

impl CatchUp {
    /// What the welcome control frame says.
    pub fn welcome(&self) -> control::Welcome {
        control::Welcome {
            epoch: self.epoch,
            last_id: self.last_id,
            members: self.members,
            epoch_changed: self.epoch_changed,
        }
    }
}

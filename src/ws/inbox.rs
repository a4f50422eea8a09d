//! What a connection's writer waits for: its queue (room messages, catch-ups,
//! notices, the reader's pongs and close replies), the server's close requests, and
//! the ping clock — whichever comes first.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{RecvTimeoutError, TryRecvError};
use tungstenite::protocol::CloseFrame;

use super::write_half::{QUEUE_RESERVE, before};
use crate::hub::{CloseSignal, Outgoing, QueueEnd, Queued};
use crate::protocol::close::CloseReason;

/// What the writer does after handling one queued item.
pub(super) enum Next {
    Continue,
    /// Send this close frame, then stop.
    Close(Option<CloseFrame>),
    /// Stop without a close frame (the peer is gone).
    Stop,
}

/// What the writer finds when it looks for work.
pub(super) enum Work {
    /// An item to write.
    Item(Outgoing),
    /// Nothing arrived before the next ping is due.
    PingDue,
    /// The connection ends this way (close, or stop).
    End(Next),
}

/// What the writer listens to: its queue, and the server's close requests.
pub(super) struct Inbox {
    pub(super) queue: QueueEnd,
    pub(super) close: Arc<CloseSignal>,
}

impl Inbox {
    /// The writer's inbox: `queue`, and the server's close requests in `close`.
    pub(super) fn new(queue: QueueEnd, close: &Arc<CloseSignal>) -> Inbox {
        Inbox {
            queue,
            close: Arc::clone(close),
        }
    }

    /// The next item. Normally the writer sleeps for one until `next_ping` (or until
    /// the connection's token expires, when it closes it with 4001). Once asked
    /// to close after its queue it never sleeps: nobody queues it anything more, so an
    /// empty queue means it has sent everything it was owed, and it closes.
    pub(super) fn next(&self, next_ping: Instant) -> Work {
        if let Some(Queued::SendBy(_)) = self.close.queued() {
            return match self.queue.try_recv() {
                Ok(item) => Work::Item(item),
                Err(TryRecvError::Empty) => Work::End(self.requested_close()),
                Err(TryRecvError::Disconnected) => Work::End(Next::Stop),
            };
        }
        // A connection with a signed token also wakes when the token expires.
        let wake = self
            .close
            .expiry()
            .map_or(next_ping, |at| at.min(next_ping));
        match self.queue.recv_deadline(wake) {
            Ok(item) => Work::Item(item),
            Err(RecvTimeoutError::Timeout) if self.close.expired(Instant::now()) => {
                Work::End(self.requested_close())
            }
            Err(RecvTimeoutError::Timeout) => Work::PingDue,
            Err(RecvTimeoutError::Disconnected) => Work::End(Next::Stop),
        }
    }

    /// Whether what is still queued must be dropped: the server asked for a close at
    /// once (slow consumer), or the shutdown's time for the queue is over.
    pub(super) fn drop_the_rest(&self) -> bool {
        match self.close.queued() {
            None => false,
            Some(Queued::Drop) => true,
            Some(Queued::SendBy(drain)) => Instant::now() >= before(drain, QUEUE_RESERVE),
        }
    }

    /// The close frame the server asked for (a close with no code if it asked none).
    pub(super) fn requested_close(&self) -> Next {
        Next::Close(self.close.requested().map(CloseReason::frame))
    }
}

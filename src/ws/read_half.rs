//! The reader's side of the socket (`ReadHalf`): reads go to tungstenite, charged
//! to the memory budget until their message is complete; writes go nowhere.

use std::io::{self, Read, Write};
use std::sync::Arc;

use tungstenite::error::Error as WsError;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use super::reader::{ReadEnd, classify};
use crossbeam_channel::Sender;

use crate::budget::{Budget, Category, RECLAIM_WAIT, Reservation};
use crate::hub::{Inspection, Outgoing};
use crate::lesson::{Dir, Observer, Watch};
use crate::net::socket::Socket;
use crate::protocol::close::CloseReason;
use crate::room::MESSAGE_OVERHEAD_BYTES;
use crate::ws::edges::FrameEdges;

/// Bytes read from the socket per `read` call. tungstenite's 128 KiB default is
/// allocated up front for every connection; 2 KiB keeps an idle connection under
/// 32 KiB of memory in all (see BENCHMARKS.md). A large frame still gets a buffer of
/// its own size, so big messages cost more system calls, not more copies.
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

/// The reader's side of the socket. Reads come from the socket; writes go nowhere,
/// because whatever tungstenite would write from inside `read()` (pong and close
/// replies) is sent by the writer thread instead.
///
/// Every byte read is charged to the memory budget until its message is complete
/// (a frame that is still arriving is memory too): then the message's bytes move to
/// the `messages` category ([`ReadHalf::take_message`]) and the rest is given back.
pub(super) struct ReadHalf {
    pub(super) socket: Arc<Socket>,
    /// Bytes read since the last complete message.
    pub(super) reading: Reservation,
    /// The budget could not take the bytes just read: the connection fails with 1013.
    pub(super) short: bool,
    /// Where the frames read so far begin and end (see `edges.rs`).
    pub(super) edges: FrameEdges,
    /// The settings a fresh context gets.
    pub(super) config: WebSocketConfig,
    /// Lesson mode: what watches the bytes read, and where its events go (the
    /// writer, as `inspect` frames; `dropped` counts those that did not fit).
    pub(super) watch: Option<Watching>,
}

/// What the reader needs to report what it reads (lesson mode): the connection's
/// watch, what watches the bytes, and the events waiting to go to the writer.
pub(super) struct Watching {
    pub(super) watch: Arc<Watch>,
    pub(super) observer: Option<Observer>,
    pub(super) events: Vec<String>,
    /// Events that did not fit the writer's queue, to tell the inspector.
    pub(super) dropped: u64,
}

impl Watching {
    /// Hands the waiting events to the writer for the inspector, those that fit its
    /// queue (the inspector then hears how many it missed). The reader calls this
    /// between messages: it holds no sender of the writer's queue itself, so the
    /// writer still ends when the reader lets go of it.
    pub(super) fn forward(&mut self, to_writer: &Sender<Outgoing>) {
        for event in self.events.drain(..) {
            if self.dropped > 0 {
                let missed = crate::lesson::dropped_json(self.dropped);
                if to_writer
                    .try_send(Outgoing::Inspect(Box::new(Inspection(missed))))
                    .is_ok()
                {
                    self.dropped = 0;
                }
            }
            if to_writer
                .try_send(Outgoing::Inspect(Box::new(Inspection(event))))
                .is_err()
            {
                self.dropped += 1;
            }
        }
    }
}

impl ReadHalf {
    /// The reader's side of `socket`, whose first bytes (`leftover`, sent right behind
    /// the handshake) are already read; its charges go to `budget`.
    pub(super) fn new(
        socket: &Arc<Socket>,
        budget: &Arc<Budget>,
        config: WebSocketConfig,
        leftover: &[u8],
    ) -> ReadHalf {
        let mut edges = FrameEdges::default();
        edges.saw(leftover);
        ReadHalf {
            socket: Arc::clone(socket),
            reading: budget.force(Category::Reading, 0),
            short: false,
            edges,
            config,
            watch: None,
        }
    }

    /// Counts what is read in the connection's figures, and reports it to its
    /// inspector or the console (lesson mode).
    pub(super) fn watched(mut self, watch: Option<&Arc<Watch>>) -> ReadHalf {
        self.watch = watch.map(|watch| Watching {
            watch: Arc::clone(watch),
            observer: Observer::of(Some(watch), Dir::In),
            events: Vec::new(),
            dropped: 0,
        });
        self
    }

    /// A pong came back: its round trip is noted, and the inspector hears the
    /// connection's figures (`queue`: the writer's queue, `to_writer`).
    pub(super) fn ponged(&mut self, to_writer: &Sender<Outgoing>) {
        let Some(watching) = &mut self.watch else {
            return;
        };
        let figures = &watching.watch.figures;
        figures.ponged();
        figures
            .queue
            .store(to_writer.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if watching.watch.inspect {
            watching.events.push(figures.event_json());
        }
    }

    /// Sends the writer what the inspector is to hear of the bytes read so far.
    pub(super) fn forward_inspections(&mut self, to_writer: &Sender<Outgoing>) {
        if let Some(watching) = self.watch.as_mut().filter(|w| !w.events.is_empty()) {
            watching.forward(to_writer);
        }
    }

    /// A complete message of `bytes` arrived: its charge, now a message's.
    pub(super) fn take_message(&mut self, bytes: usize) -> Reservation {
        let charge = self
            .reading
            .split_into(Category::Messages, bytes + MESSAGE_OVERHEAD_BYTES);
        self.reading.shrink_to(0);
        charge
    }

    /// A control frame arrived (or a message was dropped): nothing is still arriving.
    pub(super) fn message_done(&mut self) {
        self.reading.shrink_to(0);
    }
}

impl ReadHalf {
    /// A data message of `bytes` is complete: its charge. A large message leaves
    /// tungstenite holding a buffer of its size for good, so the connection gets a
    /// fresh context now, which is safe: no byte of the next frame has been read
    /// (see `edges.rs`).
    pub(super) fn take_data(&mut self, ctx: &mut WebSocketContext, bytes: usize) -> Reservation {
        if self.edges.at_edge_after_large() {
            *ctx = WebSocketContext::new(Role::Server, Some(self.config));
            self.edges.reset();
        }
        if let Some(watching) = &self.watch {
            let figures = &watching.watch.figures;
            figures
                .messages_in
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.take_message(bytes)
    }

    /// How the connection ends after a read error: close 1013 if the memory budget
    /// could not take what was read, else what the error means (`classify`).
    pub(super) fn failed(&mut self, error: WsError) -> ReadEnd {
        if !self.short {
            return classify(error);
        }
        self.message_done();
        ReadEnd::Fail(CloseReason::TryAgainLater)
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // tungstenite asks for at most READ_BUFFER_BYTES at a time, so the bytes read
        // before they are charged are few (part of the fixed cost per connection).
        // After a large frame's header, never past a frame's edge.
        let room = self.edges.limit(buf.len());
        let n = (&*self.socket).read(&mut buf[..room])?;
        self.edges.saw(&buf[..n]);
        if let Some(watching) = &mut self.watch {
            watching.watch.figures.read(n);
            if let Some(mut observer) = watching.observer.take() {
                let events = &mut watching.events;
                observer.saw(&buf[..n], &mut |event| events.push(event));
                watching.observer = Some(observer);
            }
        }
        if !self.reading.grow_within(n, RECLAIM_WAIT) {
            self.short = true;
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "memory budget exhausted",
            ));
        }
        Ok(n)
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len()) // discarded on purpose: the writer owns the outgoing direction
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

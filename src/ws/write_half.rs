//! The writer's side of the socket (`WriteHalf`): every write it makes ends by its
//! deadline — [`WRITE_TIMEOUT`] from the start of the message it is part of, or
//! earlier at shutdown.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use tungstenite::Message;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::WebSocketContext;

use crate::hub::{CloseSignal, Queued};
use crate::lesson::frames::{FrameInfo, PREVIEW_BYTES};
use crate::lesson::{self, ConnFigures, Dir, Observer, Watch, thread_id};
use crate::net::limit::WRITE_TIMEOUT;
use crate::net::socket::Socket;
use tungstenite::protocol::CloseFrame;

/// On plain TCP a write blocked on a peer that does not read waits in system calls of
/// at most this long, and looks between them whether a shutdown has brought its
/// deadline forward: a writer stuck when the shutdown starts still gives up in time.
/// (Only a stuck write wakes this way, so an idle connection costs nothing.)
pub(super) const WRITE_SLICE: Duration = Duration::from_millis(500);

/// At shutdown the writer sends what is queued until this long before the server's
/// drain deadline, and drops whatever is still left then. The rest of the time is the
/// close handshake's.
pub(super) const QUEUE_RESERVE: Duration = Duration::from_millis(500);

/// At shutdown the writer's close frame must be written by this long before the drain
/// deadline. What is left is for the peer to answer it and for the reader to leave
/// the hub, so that the connection has ended when the server stops waiting.
pub(super) const CLOSE_FRAME_RESERVE: Duration = Duration::from_millis(250);

/// Even past its deadline, the close frame gets one try this long (one system call
/// that hardly waits): it is small, and a peer with room for it learns why the
/// connection ends. A writer the CPU reached late still says goodbye.
pub(super) const CLOSE_FRAME_LAST_TRY: Duration = Duration::from_millis(1);

/// The writer's side of the socket: the only code in the server that writes frames.
/// Every write ends by its deadline: [`WRITE_TIMEOUT`] from the start of the message
/// it is part of ([`WriteHalf::begin`]), or earlier at shutdown (the step's share of
/// the drain deadline the close signal carries).
pub(super) struct WriteHalf {
    /// The connection's socket, shared with the reader.
    pub(super) socket: Arc<Socket>,
    /// The connection's figures (bytes and messages written, pings).
    pub(super) figures: Arc<ConnFigures>,
    /// Lesson mode: how the connection is watched, what watches the bytes written,
    /// and the events for its inspector still to send.
    pub(super) watch: Option<Arc<Watch>>,
    pub(super) observer: Option<Observer>,
    pub(super) inspections: Vec<String>,
    /// The server's close requests; at shutdown it carries the drain deadline.
    pub(super) close: Arc<CloseSignal>,
    /// The writer is at its close frame: at shutdown that step has a later deadline
    /// than the queue's.
    pub(super) closing: bool,
    /// Whether a write that timed out may simply be tried again, so that it can wait
    /// in slices ([`WRITE_SLICE`]): on plain TCP, where it has written nothing. Not on
    /// TLS, whose session may already hold the bytes of a write that timed out (trying
    /// again would send them twice): there one system call waits for all the time.
    pub(super) waits_in_slices: bool,
    /// The socket's write timeout as last set, so it is set only when it changes.
    pub(super) timeout: Option<Duration>,
    /// When the message (or control frame) being written began to be written.
    pub(super) began: Instant,
}

impl WriteHalf {
    pub(super) fn new(
        socket: Arc<Socket>,
        close: Arc<CloseSignal>,
        watch: Option<&Arc<Watch>>,
    ) -> WriteHalf {
        let waits_in_slices = match *socket {
            Socket::Plain(_) => true,
            #[cfg(feature = "tls")]
            Socket::Tls(_) => false,
        };
        let figures = watch.map_or_else(
            || Arc::new(ConnFigures::new(0, String::new(), String::new())),
            |w| Arc::clone(&w.figures),
        );
        WriteHalf {
            socket,
            figures,
            watch: watch.cloned(),
            observer: Observer::of(watch, Dir::Out),
            inspections: Vec::new(),
            close,
            closing: false,
            waits_in_slices,
            timeout: None,
            began: Instant::now(),
        }
    }

    /// A new message (or control frame) starts: every write for it, however many
    /// system calls the peer's pace takes, must end within [`WRITE_TIMEOUT`] of now.
    pub(super) fn begin(&mut self) {
        self.began = Instant::now();
    }

    /// When a write that started at `started` must have ended.
    pub(super) fn deadline(&self, started: Instant) -> Instant {
        let own = self.began + WRITE_TIMEOUT;
        match self.close.queued() {
            Some(Queued::SendBy(drain)) if self.closing => {
                let last_try = started + CLOSE_FRAME_LAST_TRY;
                own.min(before(drain, CLOSE_FRAME_RESERVE).max(last_try))
            }
            Some(Queued::SendBy(drain)) => own.min(before(drain, QUEUE_RESERVE)),
            _ => own,
        }
    }

    /// Runs one write to the socket (`op`) until its deadline, which it looks up again
    /// after each slice of waiting: a shutdown may have brought it forward meanwhile.
    /// Past the deadline: `TimedOut` (and the writer writes nothing more).
    pub(super) fn bounded<T>(
        &mut self,
        mut op: impl FnMut(&mut &Socket) -> io::Result<T>,
    ) -> io::Result<T> {
        let started = Instant::now();
        let mut now = started;
        loop {
            let left = self.deadline(started).saturating_duration_since(now);
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer took no data before the write's deadline",
                ));
            }
            let wait = if self.waits_in_slices {
                left.min(WRITE_SLICE)
            } else {
                left
            };
            self.set_timeout(wait)?;
            match op(&mut &*self.socket) {
                Err(e) if self.waits_in_slices && is_timeout(&e) => now = Instant::now(),
                result => return result,
            }
        }
    }

    pub(super) fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.timeout != Some(timeout) {
            self.socket.set_write_timeout(Some(timeout))?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }
}

impl Read for WriteHalf {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Ok(0) // the writer never reads; tungstenite's write path does not call this
    }
}

impl WriteHalf {
    /// The writer thread runs: its id is noted, and the inspector (or the console) is
    /// told of both threads and of the handshake.
    pub(super) fn started_writing(&mut self, ctx: &mut WebSocketContext) {
        self.figures
            .writer_tid
            .store(thread_id(), Ordering::Relaxed);
        let Some(watch) = self.watch.clone() else {
            return;
        };
        let reader = self.figures.reader_tid.load(Ordering::Relaxed);
        let writer = thread_id();
        watch.narrate(&format!(
            "reader thread {reader} and writer thread {writer} serve it"
        ));
        if watch.inspect {
            let handshake = std::mem::take(
                &mut *watch
                    .first_events
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            self.inspections.extend(handshake);
            self.inspections
                .push(lesson::thread_json("reader", reader, "started"));
            self.inspections
                .push(lesson::thread_json("writer", writer, "started"));
            // A failure here is the next write's failure too: the loop sees it there.
            let _ = self.send_inspections(ctx);
        }
    }

    /// Flushes what tungstenite holds, then sends the inspector the events about what
    /// was just written (as text frames, which the observer recognises and does not
    /// report again), and flushes those.
    pub(super) fn flush_all(&mut self, ctx: &mut WebSocketContext) -> Result<(), WsError> {
        ctx.flush(self)?;
        self.send_inspections(ctx)
    }

    /// Tells the inspector of the close frame about to be written: after it nothing
    /// may be sent (RFC 6455 §5.5.1), so it is the one frame announced beforehand.
    pub(super) fn announce_close(
        &mut self,
        ctx: &mut WebSocketContext,
        frame: Option<&CloseFrame>,
    ) {
        if !self.watch.as_ref().is_some_and(|w| w.inspect) {
            return;
        }
        let mut payload = Vec::new();
        if let Some(frame) = frame {
            payload.extend_from_slice(&u16::from(frame.code).to_be_bytes());
            payload.extend_from_slice(frame.reason.as_bytes());
        }
        let info = FrameInfo {
            fin: true,
            opcode: 8,
            len: payload.len() as u64,
            len_bits: 7,
            preview: payload.into_iter().take(PREVIEW_BYTES).collect(),
            ..FrameInfo::default()
        };
        self.inspections.push(lesson::frame_json(Dir::Out, &info));
        let _ = self.send_inspections(ctx); // if it fails, so does the close frame
    }

    /// Sends the inspector its waiting events, and flushes.
    fn send_inspections(&mut self, ctx: &mut WebSocketContext) -> Result<(), WsError> {
        if self.inspections.is_empty() {
            return Ok(());
        }
        for event in std::mem::take(&mut self.inspections) {
            ctx.write(self, Message::text(event))?;
        }
        ctx.flush(self)
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.bounded(|socket| socket.write(buf))?;
        self.figures.wrote(n);
        if let Some(observer) = &mut self.observer {
            let inspections = &mut self.inspections;
            observer.saw(&buf[..n], &mut |event| inspections.push(event));
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.bounded(|socket| socket.flush())
    }
}

/// A blocking socket call that ran out of time (`EAGAIN` on Unix, which writes nothing).
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `reserve` before `deadline` (or `deadline` itself, so close to the clock's origin).
pub(super) fn before(deadline: Instant, reserve: Duration) -> Instant {
    deadline.checked_sub(reserve).unwrap_or(deadline)
}

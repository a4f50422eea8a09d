//! A guarded HTTP listener: tiny_http, minus the ways it can silently stop serving.
//!
//! tiny_http is small and easy to read, and it has three weak spots a public server
//! cannot live with:
//!
//! 1. **No timeouts on accepted sockets** (tiny-http #15, #25). Each connection gets a
//!    thread that blocks reading the next request for as long as the client likes, so
//!    idle and half-open clients hold a thread and two descriptors each, forever.
//! 2. **An unbounded connection pool** (#221): one thread per open connection, with
//!    no ceiling, so (1) turns into thread and descriptor exhaustion.
//! 3. **Its accept loop ends at the first error** (#283). An `accept` failure (EMFILE
//!    when descriptors run out) makes the accept thread push the error to `recv()` and
//!    `break`; and if `accept` succeeds with the very last descriptor, cloning the new
//!    socket fails and the accept thread *panics*. Either way nobody accepts any more:
//!    the port stays open (our copy of the socket keeps it so), clients queue up and
//!    time out, and nothing says why.
//!
//! What this module does about each, without changing tiny_http:
//!
//! - We keep the listening socket ourselves and give tiny_http a `try_clone()` of it.
//!   A **supervisor** thread watches tiny_http: when its accept loop reports an error
//!   or its accept thread has died (its copy of the socket is gone from
//!   `/proc/self/fd`), it logs why and starts a fresh `tiny_http::Server` on a new
//!   clone, backing off while descriptors are short. No connection is lost meanwhile:
//!   the kernel keeps queueing them on the socket we still hold.
//! - Timeouts: Linux copies `SO_RCVTIMEO` and `SO_SNDTIMEO` from a listening socket to
//!   every socket it accepts, so setting them on *our* socket gives every tiny_http
//!   connection an idle timeout (tiny_http answers `408` and closes) and a write timeout
//!   (a client that stops reading cannot pin a worker). The same `SO_RCVTIMEO` makes an
//!   idle `accept` return `EAGAIN`, which ends tiny_http's accept loop too; the
//!   supervisor treats that as a routine *renewal* and starts the next tiny_http server
//!   at once. An idle listener therefore costs one cheap renewal per idle timeout.
//! - With every connection's idle time bounded, the pool is bounded by the request
//!   rate times the timeout instead of growing forever. A hard cap on connections needs
//!   a proxy in front (see `docs/`): nginx `limit_conn`, `client_header_timeout`,
//!   `keepalive_timeout`.
//!
//! Requests from every tiny_http server, current or renewed, arrive on one channel
//! that the worker threads read with [`HttpListener::recv`]; a renewed server's last
//! keep-alive connections are still served until they go quiet.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, select};
use tiny_http::Request;

/// How long an HTTP connection may sit without sending a byte of its next request
/// before tiny_http answers `408` and closes it. Longer than any request we hold open
/// on purpose (long polls), and the usual keep-alive time of browsers.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one write of a response may block on a client that does not read.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests waiting for a worker. tiny_http queues more behind them if needed.
pub const REQUEST_QUEUE: usize = 64;
/// How often the supervisor checks that tiny_http's accept thread is still alive
/// (a panicking accept thread reports nothing).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// First pause before restarting after an accept error; doubles up to
/// [`MAX_RESTART_BACKOFF`] while errors keep coming (e.g. descriptors stay exhausted).
pub const MIN_RESTART_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two restarts.
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(2);
/// Default [`Options::handler_timeout`]: comfortably above the longest long poll.
pub const LONGEST_HANDLER: Duration = Duration::from_secs(120);

/// Timeouts applied to every accepted HTTP connection.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Idle time before a connection is closed with `408` (`None`: never; then
    /// tiny_http's accept loop is never renewed either).
    pub idle_timeout: Option<Duration>,
    /// Longest a single write may block (`None`: forever).
    pub write_timeout: Option<Duration>,
    /// Longest a handler may hold a request before answering (long polls). A replaced
    /// tiny_http server keeps being served until it has delivered no request for its
    /// idle timeout plus this.
    pub handler_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            handler_timeout: LONGEST_HANDLER,
        }
    }
}

/// The HTTP listener: tiny_http under supervision. Worker threads call
/// [`recv`](Self::recv) until it returns `None` after [`stop`](Self::stop).
#[derive(Debug)]
pub struct HttpListener {
    requests: Receiver<Request>,
    stopped: Receiver<()>,
    state: Arc<State>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

/// What the supervisor and the request pumps share.
#[derive(Debug)]
struct State {
    addr: SocketAddr,
    stopping: AtomicBool,
    /// Dropped by `stop()`: every `select!` on `stopped` then wakes up.
    stop: Mutex<Option<Sender<()>>>,
    restarts: AtomicU64,
    renewals: AtomicU64,
}

/// What a request pump tells the supervisor.
enum Event {
    /// tiny_http's accept loop of generation `id` ended with this error.
    AcceptEnded { id: u64, error: io::Error },
}

impl HttpListener {
    /// Serves HTTP on `listener` (already bound) with these timeouts.
    ///
    /// # Errors
    /// When the socket cannot be configured or the first tiny_http server cannot start.
    pub fn start(listener: TcpListener, options: Options) -> io::Result<HttpListener> {
        let addr = listener.local_addr()?;
        set_inherited_timeouts(&listener, options)?;
        let (to_workers, requests) = crossbeam_channel::bounded(REQUEST_QUEUE);
        let (stop_tx, stopped) = crossbeam_channel::bounded(0);
        let (events_tx, events) = crossbeam_channel::unbounded();
        let state = Arc::new(State {
            addr,
            stopping: AtomicBool::new(false),
            stop: Mutex::new(Some(stop_tx)),
            restarts: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
        });
        let mut supervisor = Supervisor {
            identity: socket_identity(&listener),
            master: listener,
            options,
            to_workers,
            stopped: stopped.clone(),
            events_tx,
            state: Arc::clone(&state),
            next_id: 0,
            current: None,
            retired: Vec::new(),
        };
        // The first server starts here, so a failure is reported to the caller.
        supervisor.current = Some(supervisor.start_generation()?);
        let handle = thread::Builder::new()
            .name("http-supervisor".into())
            .spawn(move || supervisor.run(&events))?;
        Ok(HttpListener {
            requests,
            stopped,
            state,
            supervisor: Mutex::new(Some(handle)),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// The next request, blocking until one arrives; `None` once [`stop`](Self::stop)
    /// was called.
    pub fn recv(&self) -> Option<Request> {
        if self.state.stopping.load(Ordering::Acquire) {
            return None;
        }
        select! {
            recv(self.requests) -> request => request.ok(),
            recv(self.stopped) -> _ => None,
        }
    }

    /// Like [`recv`](Self::recv), but gives up after `timeout` (`Ok(None)`);
    /// `Err(())` once the listener is stopped.
    #[allow(clippy::result_unit_err)]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Request>, ()> {
        if self.state.stopping.load(Ordering::Acquire) {
            return Err(());
        }
        select! {
            recv(self.requests) -> request => request.map(Some).map_err(|_| ()),
            recv(self.stopped) -> _ => Err(()),
            default(timeout) => Ok(None),
        }
    }

    /// How many times tiny_http was restarted after a failure (not counting routine
    /// renewals after an idle timeout).
    pub fn restarts(&self) -> u64 {
        self.state.restarts.load(Ordering::Relaxed)
    }

    /// How many times tiny_http was renewed after its accept loop idled out.
    pub fn renewals(&self) -> u64 {
        self.state.renewals.load(Ordering::Relaxed)
    }

    /// Stops accepting and wakes every thread blocked in `recv`. Requests already
    /// waiting are dropped (tiny_http answers them `500`). Idempotent; returns once the
    /// supervisor has finished, which closes the listening socket.
    pub fn stop(&self) {
        self.state.stopping.store(true, Ordering::Release);
        self.state
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for HttpListener {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One tiny_http server on one clone of our socket, and the thread that forwards its
/// requests to the workers.
struct Generation {
    id: u64,
    server: Arc<tiny_http::Server>,
    /// The descriptor of the clone tiny_http's accept thread owns: while that thread
    /// lives, this descriptor is our listening socket.
    fd: i32,
    pump: JoinHandle<()>,
}

struct Supervisor {
    master: TcpListener,
    /// What `/proc/self/fd/N` shows for our socket (`socket:[inode]`), if readable.
    identity: Option<PathBuf>,
    options: Options,
    to_workers: Sender<Request>,
    stopped: Receiver<()>,
    events_tx: Sender<Event>,
    state: Arc<State>,
    next_id: u64,
    current: Option<Generation>,
    /// Replaced servers whose last connections may still send requests.
    retired: Vec<Generation>,
}

impl Supervisor {
    fn run(mut self, events: &Receiver<Event>) {
        let mut backoff = MIN_RESTART_BACKOFF;
        while !self.state.stopping.load(Ordering::Acquire) {
            self.retired.retain(|g| !g.pump.is_finished());
            let Some(current) = &self.current else {
                match self.start_generation() {
                    Ok(generation) => self.current = Some(generation),
                    Err(e) => {
                        log::error!("HTTP listener: cannot restart tiny_http ({e}); retrying");
                        self.pause(&mut backoff);
                    }
                }
                continue;
            };
            let (current_id, current_fd) = (current.id, current.fd);
            let started = Instant::now();
            let event = select! {
                recv(events) -> event => event.map_err(|_| RecvTimeoutError::Disconnected),
                recv(self.stopped) -> _ => break,
                default(WATCH_INTERVAL) => Err(RecvTimeoutError::Timeout),
            };
            match event {
                Ok(Event::AcceptEnded { id, error }) if id == current_id => {
                    self.retire_current();
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        // Routine: the idle timeout also bounds accept(). Renew at once.
                        self.state.renewals.fetch_add(1, Ordering::Relaxed);
                        log::debug!("HTTP listener: idle, renewing tiny_http's accept loop");
                        backoff = MIN_RESTART_BACKOFF;
                    } else {
                        self.state.restarts.fetch_add(1, Ordering::Relaxed);
                        log::error!(
                            "HTTP listener: tiny_http stopped accepting ({error}); restarting it"
                        );
                        self.pause(&mut backoff);
                    }
                }
                Ok(Event::AcceptEnded { .. }) => {} // an old generation: already replaced
                Err(RecvTimeoutError::Timeout) => {
                    if !self.accept_thread_alive(current_fd) {
                        self.state.restarts.fetch_add(1, Ordering::Relaxed);
                        log::error!(
                            "HTTP listener: tiny_http's accept thread died (a panic, e.g. out of \
                             descriptors); restarting it"
                        );
                        self.retire_current();
                        self.pause(&mut backoff);
                    } else if started.elapsed() >= WATCH_INTERVAL {
                        backoff = MIN_RESTART_BACKOFF; // healthy for a while
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Shutting down: wake every pump, then let the servers go. Dropping a
        // tiny_http::Server stops its accept thread; dropping `master` closes the port.
        let accepting = self.current.as_ref().map(|g| g.fd);
        let generations: Vec<Generation> = self
            .current
            .take()
            .into_iter()
            .chain(self.retired.drain(..))
            .collect();
        for generation in &generations {
            generation.server.unblock();
        }
        for generation in generations {
            let _ = generation.pump.join();
        }
        // The accept thread exits on its own after the drop above woke it; wait (briefly)
        // until it has let go of its copy, so the port is closed when `stop` returns.
        if let Some(fd) = accepting {
            let deadline = Instant::now() + Duration::from_secs(1);
            while self.accept_thread_alive(fd) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Sleeps for `backoff` (or until stop), then doubles it.
    fn pause(&self, backoff: &mut Duration) {
        let _ = self.stopped.recv_timeout(*backoff);
        *backoff = (*backoff * 2).min(MAX_RESTART_BACKOFF);
    }

    fn retire_current(&mut self) {
        if let Some(generation) = self.current.take() {
            self.retired.push(generation);
        }
    }

    /// Whether descriptor `fd` is still our listening socket, i.e. tiny_http's accept
    /// thread still holds it. Without `/proc` we cannot tell and assume it is.
    fn accept_thread_alive(&self, fd: i32) -> bool {
        match &self.identity {
            Some(identity) => std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|link| link == *identity),
            None => true,
        }
    }

    fn start_generation(&mut self) -> io::Result<Generation> {
        let id = self.next_id;
        self.next_id += 1;
        let clone = self.master.try_clone()?;
        let fd = clone.as_raw_fd();
        // tiny_http spawns its accept thread with `thread::spawn`, which panics when
        // no thread can be created.
        let server = catch_unwind(AssertUnwindSafe(|| {
            tiny_http::Server::from_listener(clone, None)
        }))
        .map_err(|_| io::Error::other("tiny_http panicked while starting"))?
        .map_err(io::Error::other)?;
        let server = Arc::new(server);
        let pump = {
            let server = Arc::clone(&server);
            let pump = Pump {
                id,
                to_workers: self.to_workers.clone(),
                stopped: self.stopped.clone(),
                events: self.events_tx.clone(),
                state: Arc::clone(&self.state),
                retire_after: self.options.idle_timeout.unwrap_or(Duration::ZERO)
                    + self.options.handler_timeout,
            };
            thread::Builder::new()
                .name(format!("http-pump-{id}"))
                .spawn(move || pump.run(&server))?
        };
        Ok(Generation {
            id,
            server,
            fd,
            pump,
        })
    }
}

/// Forwards one tiny_http server's requests to the workers.
struct Pump {
    id: u64,
    to_workers: Sender<Request>,
    stopped: Receiver<()>,
    events: Sender<Event>,
    state: Arc<State>,
    retire_after: Duration,
}

impl Pump {
    fn run(&self, server: &tiny_http::Server) {
        // While current: block until a request or the end of tiny_http's accept loop.
        loop {
            match server.recv() {
                Ok(request) => {
                    if !self.forward(request) {
                        return;
                    }
                }
                Err(error) => {
                    if self.state.stopping.load(Ordering::Acquire) {
                        return; // woken by unblock() at shutdown
                    }
                    let _ = self.events.send(Event::AcceptEnded { id: self.id, error });
                    break;
                }
            }
        }
        // Replaced: keep serving the connections this server already has until they
        // go quiet (the idle timeout closes them), then end.
        loop {
            match server.recv_timeout(self.retire_after) {
                Ok(Some(request)) => {
                    if !self.forward(request) {
                        return;
                    }
                }
                Ok(None) | Err(_) => return, // quiet for retire_after, or unblocked
            }
        }
    }

    /// Hands a request to a worker; false when the listener is stopping.
    fn forward(&self, request: Request) -> bool {
        select! {
            send(self.to_workers, request) -> sent => sent.is_ok(),
            recv(self.stopped) -> _ => false,
        }
    }
}

/// Sets `SO_RCVTIMEO` and `SO_SNDTIMEO` on the listening socket; Linux copies both to
/// every socket accepted from it. std has no setter on `TcpListener`, so we set them
/// through a `TcpStream` view of a duplicate descriptor of the same socket.
fn set_inherited_timeouts(listener: &TcpListener, options: Options) -> io::Result<()> {
    let view = TcpStream::from(OwnedFd::from(listener.try_clone()?));
    view.set_read_timeout(options.idle_timeout)?;
    view.set_write_timeout(options.write_timeout)?;
    Ok(())
}

fn socket_identity(listener: &TcpListener) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn serve(options: Options) -> (Arc<HttpListener>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let http = Arc::new(HttpListener::start(listener, options).unwrap());
        let worker = {
            let http = Arc::clone(&http);
            thread::spawn(move || {
                while let Some(request) = http.recv() {
                    let _ = request.respond(tiny_http::Response::from_string("ok"));
                }
            })
        };
        (http, worker)
    }

    fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn requests_reach_the_workers_and_stop_wakes_them() {
        let (http, worker) = serve(Options::default());
        assert!(get(http.local_addr()).ends_with("ok"));
        http.stop();
        worker.join().unwrap();
        assert!(
            TcpStream::connect(http.local_addr()).is_err(),
            "the port is closed"
        );
    }

    #[test]
    fn an_idle_listener_is_renewed_and_keeps_serving() {
        let options = Options {
            idle_timeout: Some(Duration::from_millis(100)),
            write_timeout: None,
            handler_timeout: Duration::from_millis(100),
        };
        let (http, _worker) = serve(options);
        let deadline = Instant::now() + Duration::from_secs(10);
        while http.renewals() < 2 {
            assert!(
                Instant::now() < deadline,
                "no renewal after the accept timeout"
            );
            thread::sleep(Duration::from_millis(20));
        }
        assert!(get(http.local_addr()).ends_with("ok"));
        assert_eq!(http.restarts(), 0, "renewals are not failures");
    }

    #[test]
    fn accepted_sockets_inherit_the_timeouts() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let options = Options {
            idle_timeout: Some(Duration::from_millis(1500)),
            write_timeout: Some(Duration::from_millis(2500)),
            ..Options::default()
        };
        set_inherited_timeouts(&listener, options).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(accepted.read_timeout().unwrap(), options.idle_timeout);
        assert_eq!(accepted.write_timeout().unwrap(), options.write_timeout);
    }
}

//! Counting open connections against `--max-connections`, and waiting for them to
//! finish at shutdown; bounding the requests in progress, the connections of one
//! client address, and the message rate of one connection.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Shutdown};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::net::socket::Socket;

/// Most requests in progress at once (each holds a thread and a socket until its
/// head, body and answer are done, all under deadlines). Far above what real clients
/// need, since a request takes a round trip or two; beyond it the oldest is cut off.
pub const MAX_REQUESTS_IN_PROGRESS: usize = 512;
/// Longest writing one message (a WebSocket message or control frame, an SSE
/// write) may take in all, however the peer
/// paces its reading (gorilla's `writeWait`, but for the whole message, not each
/// system call: a peer reading a trickle cannot hold a message for minutes). A 1 MiB
/// message needs a client that reads about 100 KB/s. After that the peer is gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Stack of each connection thread. Threads here parse frames and copy buffers that
/// live on the heap, so they need little stack; 128 KiB leaves a wide margin even in
/// unoptimized builds, and untouched stack pages cost no memory anyway.
pub const THREAD_STACK_BYTES: usize = 128 * 1024;

/// How many long-lived connections are open, with a ceiling. Each open connection
/// holds a [`Slot`]; dropping the slot frees it and wakes anyone waiting for zero.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: Mutex<usize>,
    changed: Condvar,
}

/// Proof that a connection was admitted. Frees its place when dropped.
#[derive(Debug)]
pub struct Slot(Arc<ConnectionLimit>);

impl ConnectionLimit {
    /// A limit of `max` open connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            max,
            open: Mutex::new(0),
            changed: Condvar::new(),
        })
    }

    /// Takes a place, or `None` when all `max` are in use (the caller answers 503).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if *open >= self.max {
            return None;
        }
        *open += 1;
        Some(Slot(Arc::clone(self)))
    }

    /// The ceiling.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no connection is open, at most `timeout`. True if all finished.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (open, _) = self
            .changed
            .wait_timeout_while(open, timeout, |open| *open > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *open == 0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(PoisonError::into_inner);
        *open -= 1;
        self.0.changed.notify_all();
    }
}

/// Requests in progress: accepted sockets whose request head, body or short answer
/// is not done yet (WebSocket handshakes among them). They do not count against
/// `--max-connections` (nothing is admitted until the request is checked), so they
/// get their own ceiling. A client that opens sockets and sends nothing (slowloris)
/// would otherwise hold a thread and a descriptor per socket for the whole deadline,
/// and enough of them would exhaust both.
///
/// When the ceiling is reached, the **oldest** request is cut off to make room for
/// the new one. A real client sends its request within a round trip, so
/// it is almost never the oldest; an attacker has to keep opening sockets faster than
/// we cut them to stay in the way, and even then only costs the ceiling's worth of
/// threads.
#[derive(Debug)]
pub struct RequestsInProgress {
    max: usize,
    queue: Mutex<Pending>,
    evicted: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    /// Oldest first.
    sockets: VecDeque<(u64, Arc<Socket>)>,
}

/// One request in progress. Leaves the registry when finished or dropped.
#[derive(Debug)]
pub struct RequestInProgress {
    id: u64,
    stream: Arc<Socket>,
    owner: Arc<RequestsInProgress>,
}

impl RequestsInProgress {
    /// A registry holding at most `max` requests in progress (at least one).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(RequestsInProgress {
            max: max.max(1),
            queue: Mutex::new(Pending::default()),
            evicted: AtomicU64::new(0),
        })
    }

    /// Registers a freshly accepted socket, cutting off the oldest request if
    /// the registry is full.
    pub fn admit(self: &Arc<Self>, stream: Socket) -> RequestInProgress {
        let stream = Arc::new(stream);
        let (id, oldest) = {
            let mut pending = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let oldest = if pending.sockets.len() >= self.max {
                pending.sockets.pop_front()
            } else {
                None
            };
            let id = pending.next_id;
            pending.next_id += 1;
            pending.sockets.push_back((id, Arc::clone(&stream)));
            (id, oldest)
        };
        if let Some((_, oldest)) = oldest {
            // Its thread's read fails at once and the thread ends (a TLS handshake too:
            // this shuts the socket down without touching the TLS session); the lock is
            // not held across this system call.
            self.evicted.fetch_add(1, Ordering::Relaxed);
            let _ = oldest.shutdown(Shutdown::Both);
            log::debug!("too many requests in progress: cut off the oldest");
        }
        RequestInProgress {
            id,
            stream,
            owner: Arc::clone(self),
        }
    }

    /// Requests in progress right now.
    pub fn len(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sockets
            .len()
    }

    /// Whether no request is in progress.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests cut off so far to make room for newer ones.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Cuts off every request in progress (at shutdown): each one's thread sees its
    /// socket end at once.
    pub fn cut_all(&self) {
        let sockets: Vec<_> = {
            let mut pending = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            pending.sockets.drain(..).collect()
        };
        for (_, socket) in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Removes `id`; true if it was still registered (not cut off).
    fn remove(&self, id: u64) -> bool {
        let mut pending = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.sockets.iter().position(|(i, _)| *i == id) {
            Some(at) => {
                pending.sockets.remove(at);
                true
            }
            None => false,
        }
    }
}

impl RequestInProgress {
    /// The socket, for the TLS handshake, reading the request and answering it.
    pub fn stream(&self) -> &Socket {
        &self.stream
    }

    /// The request became a long-lived connection (a WebSocket, an SSE stream, a
    /// waiting poll): it leaves the registry and hands back the socket, or `None` if
    /// it was cut off in the meantime (its socket is already shut down).
    pub fn finish(self) -> Option<Socket> {
        let registered = self.owner.remove(self.id);
        let stream = Arc::clone(&self.stream);
        drop(self); // drops our other reference; `remove` again finds nothing
        if !registered {
            return None;
        }
        Arc::try_unwrap(stream).ok()
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.owner.remove(self.id);
    }
}

/// Connections per client address (`--max-connections-per-ip`). Counted in the
/// accept loop before a thread is spent, so one address cannot take every slot,
/// thread or descriptor.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

/// One connection's place under its address's limit; given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerAddress {
            max,
            open: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        })
    }

    /// Takes a place for `ip`, or `None` (counted) when it already has `max`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        // An IPv4 client on an IPv6 socket (`::ffff:1.2.3.4`) is the same client.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            drop(open);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Connections refused so far for being over the limit.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections open from `ip` right now.
    #[cfg(test)]
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip); // the map holds only addresses with connections
            }
        }
    }
}

/// A token bucket: `per_second` tokens flow in each second, up to a burst of twice
/// that; each message takes one. A client that keeps sending faster runs dry.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket for `per_second` messages a second (bursts of twice that).
    pub fn per_second(per_second: u32) -> RateLimit {
        let per_second = f64::from(per_second.max(1));
        RateLimit {
            per_second,
            burst: 2.0 * per_second,
            tokens: 2.0 * per_second,
            last: Instant::now(),
        }
    }

    /// The configured rate.
    pub fn per_second_limit(&self) -> u64 {
        self.per_second as u64
    }

    /// Takes one token if there is one (refilling for the time since the last call).
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn slots_are_refused_past_the_limit_and_freed_on_drop() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let _b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        drop(a);
        assert_eq!(limit.open(), 1);
        assert!(limit.try_acquire().is_some());
    }

    fn socket_pair() -> (Socket, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (Socket::Plain(listener.accept().unwrap().0), client)
    }

    #[test]
    fn a_full_registry_cuts_off_the_oldest_request() {
        let pending = RequestsInProgress::new(2);
        let (a, mut a_client) = socket_pair();
        let (b, _b_client) = socket_pair();
        let (c, _c_client) = socket_pair();
        let first = pending.admit(a);
        let second = pending.admit(b);
        assert_eq!(pending.len(), 2);
        let third = pending.admit(c);
        assert_eq!((pending.len(), pending.evicted()), (2, 1));
        // The oldest socket was shut down: its client sees the end of the stream.
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut a_client, &mut buf).unwrap(), 0);
        assert!(first.finish().is_none(), "a cut-off request has no socket");
        assert!(second.finish().is_some());
        drop(third);
        assert!(pending.is_empty());
    }

    #[test]
    fn one_address_is_held_to_its_limit_and_others_are_not() {
        let limit = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limit.try_acquire(a).unwrap();
        let _second = limit.try_acquire(mapped).unwrap();
        assert!(
            limit.try_acquire(a).is_none(),
            "the mapped form is the same client"
        );
        assert_eq!(limit.refused(), 1);
        assert!(limit.try_acquire(b).is_some());
        drop(first);
        assert_eq!(limit.open_from(a), 1);
        assert!(limit.try_acquire(a).is_some());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut rate = RateLimit::per_second(10);
        let start = rate.last;
        let allowed = (0..100).filter(|_| rate.allow(start)).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
        assert!(!rate.allow(start + Duration::from_millis(50)));
        assert!(
            rate.allow(start + Duration::from_millis(150)),
            "refilled at 10/s"
        );
        let later = start + Duration::from_secs(100);
        let allowed = (0..100).filter(|_| rate.allow(later)).count();
        assert_eq!(allowed, 20, "never more than the burst");
    }

    #[test]
    fn wait_idle_returns_when_the_last_slot_is_dropped() {
        let limit = ConnectionLimit::new(1);
        let slot = limit.try_acquire().unwrap();
        assert!(!limit.wait_idle(Duration::from_millis(10)));
        let waiter = std::thread::spawn({
            let limit = Arc::clone(&limit);
            move || limit.wait_idle(Duration::from_secs(10))
        });
        drop(slot);
        assert!(waiter.join().unwrap());
    }
}

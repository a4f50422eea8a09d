//! Requests in progress: every connection whose request head, body or answer is still
//! under way holds a place in one registry, bounded by [`MAX_REQUESTS_IN_PROGRESS`].
//! When it is full the oldest is cut off; at shutdown all of them are.

use std::collections::VecDeque;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::net::socket::Socket;

/// Most requests in progress at once (each holds a thread and a socket until its
/// head, body and answer are done, all under deadlines). Far above what real clients
/// need, since a request takes a round trip or two; beyond it the oldest is cut off.
pub const MAX_REQUESTS_IN_PROGRESS: usize = 512;

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
    socket: Arc<Socket>,
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
    pub fn admit(self: &Arc<Self>, socket: Socket) -> RequestInProgress {
        let socket = Arc::new(socket);
        let (id, oldest) = {
            let mut pending = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let oldest = if pending.sockets.len() >= self.max {
                pending.sockets.pop_front()
            } else {
                None
            };
            let id = pending.next_id;
            pending.next_id += 1;
            pending.sockets.push_back((id, Arc::clone(&socket)));
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
            socket,
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
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The request became a long-lived connection (a WebSocket, an SSE stream, a
    /// waiting poll): it leaves the registry and hands back the socket, or `None` if
    /// it was cut off in the meantime (its socket is already shut down).
    pub fn finish(self) -> Option<Socket> {
        let registered = self.owner.remove(self.id);
        let socket = Arc::clone(&self.socket);
        drop(self); // drops our other reference; `remove` again finds nothing
        if !registered {
            return None;
        }
        Arc::try_unwrap(socket).ok()
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.owner.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

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
}

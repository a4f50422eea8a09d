//! TLS (`--features tls`): a TLS connection that a reader thread and a writer thread
//! can use at the same time. Loading the certificate and key is in `certificates.rs`.
//!
//! rustls is a *state machine*, not a socket: it turns bytes read from the network into
//! plaintext (`read_tls`, `process_new_packets`, `reader`) and plaintext into TLS
//! records to send (`writer`, `write_tls`). Doing the socket I/O ourselves lets one
//! connection be shared by two threads exactly like `&TcpStream` is:
//!
//! ```text
//!  reader thread                                   writer thread
//!  read(buf):                                      write(plaintext):
//!   1. plaintext already decrypted? return it        lock the session
//!   2. read raw bytes from the socket  ◀─ no lock     encrypt into TLS records
//!   3. lock: feed them to the session, decrypt       send every record to the socket
//!      send what the session wants to say          unlock
//!      (alerts, key updates); unlock
//! ```
//!
//! The reader never holds the lock while it waits for the network, so a quiet peer
//! never stops the writer; records are sent only with the lock held, so the records
//! of the two threads never interleave on the wire. Socket timeouts pass straight
//! through: a read that times out returns `WouldBlock`/`TimedOut`, and a record that
//! arrived only in part stays buffered in the session until the rest comes.
//!
//! Cost per connection: one rustls session (about 1 KiB when idle, growing to hold one
//! 16 KiB record while one is in flight) and a lock taken once per read or write.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rustls::{ServerConfig, ServerConnection};

/// Raw bytes read from the socket at a time. At most one TLS record's worth (16 KiB),
/// so that what one read decrypts always fits rustls's plaintext buffer (16 KiB); 8 KiB
/// keeps the buffer small on a connection thread's 128 KiB stack.
pub const TLS_READ_BYTES: usize = 8 * 1024;

/// One TLS connection over a TCP socket. `Read` and `Write` are implemented for
/// `&TlsSocket`, so one thread may read while another writes (see the module docs).
pub struct TlsSocket {
    socket: TcpStream,
    session: Mutex<ServerConnection>,
}

impl fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSocket")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl TlsSocket {
    /// Wraps a freshly accepted socket. No I/O yet: call [`handshake`](Self::handshake).
    ///
    /// # Errors
    /// When rustls cannot start a session with this configuration.
    pub fn new(socket: TcpStream, config: &Arc<ServerConfig>) -> io::Result<TlsSocket> {
        let session = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        Ok(TlsSocket {
            socket,
            session: Mutex::new(session),
        })
    }

    /// Performs the TLS handshake: reads the client's hello, sends our certificate,
    /// reads the client's finish, until the session is established or `deadline`
    /// passes. Each read waits at most until the deadline (the socket's read timeout
    /// is set for it); writes are bounded by the socket's write timeout. Data the
    /// client sent right behind its handshake stays buffered for the first `read`.
    ///
    /// # Errors
    /// `TimedOut` at the deadline, `UnexpectedEof` when the client hangs up, and
    /// `InvalidData` when it does not speak TLS or we share no protocol version or
    /// cipher (the client is sent an alert first).
    pub fn handshake(&self, deadline: Instant) -> io::Result<()> {
        // Only this thread uses the stream before the handshake is complete, so the
        // lock is held throughout. (A shutdown from elsewhere never takes the lock.)
        let mut session = self.lock();
        while session.is_handshaking() {
            send_records(&mut session, &self.socket)?;
            if !session.is_handshaking() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.socket.set_read_timeout(Some(left))?;
            if session.read_tls(&mut &self.socket)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            decrypt(&mut session, &self.socket)?;
        }
        // TLS 1.3 sends session tickets right after the handshake.
        send_records(&mut session, &self.socket)
    }

    /// The TCP socket underneath, for timeouts and addresses. Reading or writing it
    /// directly would corrupt the TLS stream.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Shuts the connection down. Closing the write side first sends TLS's own end
    /// marker (`close_notify`), so the peer can tell a complete stream from a cut one;
    /// closing both (used to cut off a connection from another thread) touches only the
    /// socket, so it never waits for the other threads.
    ///
    /// # Errors
    /// As [`TcpStream::shutdown`].
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how == Shutdown::Write {
            let mut session = self.lock();
            session.send_close_notify();
            let _ = send_records(&mut session, &self.socket);
        }
        self.socket.shutdown(how)
    }

    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Read for &TlsSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut raw = [0u8; TLS_READ_BYTES];
        loop {
            // 1. Plaintext decrypted by an earlier read comes first.
            match self.lock().reader().read(buf) {
                // n > 0: data; 0: the peer's close_notify, a clean end of stream.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {} // nothing buffered
                // The socket ended without close_notify: still the end of the stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // 2. Wait for the network without the lock, so the writer can go on
            //    writing. A timeout comes out as WouldBlock/TimedOut, as on a socket.
            let n = (&self.socket).read(&mut raw)?;
            // 3. Hand the bytes to the session (an empty slice tells it: end of stream).
            let mut session = self.lock();
            let mut pending = &raw[..n];
            loop {
                let fed = session.read_tls(&mut pending)?;
                decrypt(&mut session, &self.socket)?;
                if pending.is_empty() {
                    break;
                }
                if fed == 0 {
                    return Err(io::Error::other("TLS session would not take more input"));
                }
            }
        }
    }
}

impl Write for &TlsSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Encrypt and send under the lock: the records of one write go out whole,
        // never mixed with records sent by the other thread.
        let mut session = self.lock();
        let n = session.writer().write(buf)?;
        send_records(&mut session, &self.socket)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        send_records(&mut self.lock(), &self.socket)
    }
}

/// Processes the records fed to the session, then sends whatever it has to say (a
/// handshake reply, an alert, a key update). A protocol error becomes `InvalidData`,
/// after the alert that explains it to the peer has been sent.
fn decrypt(session: &mut ServerConnection, socket: &TcpStream) -> io::Result<()> {
    let processed = session.process_new_packets();
    let sent = send_records(session, socket);
    match processed {
        Ok(_) => sent,
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

/// Writes every TLS record the session has queued to the socket.
fn send_records(session: &mut ServerConnection, socket: &TcpStream) -> io::Result<()> {
    while session.wants_write() {
        session.write_tls(&mut &*socket)?;
    }
    Ok(())
}

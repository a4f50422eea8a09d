//! A connection's socket: plain TCP, or TLS on top of it (`--features tls`).
//!
//! Like `&TcpStream`, a `&Socket` implements `Read` and `Write`, so the reader thread
//! and the writer thread of one connection share one `Arc<Socket>`. The plain case is
//! a `TcpStream` and nothing more: no lock, no copy.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use crate::net::tls::TlsSocket;

/// A connection's socket.
#[derive(Debug)]
pub enum Socket {
    /// Plain TCP (`ws://`).
    Plain(TcpStream),
    /// TLS over TCP (`wss://`). Boxed: a TLS session is about a kilobyte, and a plain
    /// connection should not pay for it.
    #[cfg(feature = "tls")]
    Tls(Box<TlsSocket>),
}

impl Socket {
    /// The TCP socket underneath (for timeouts and addresses).
    fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(socket) => socket,
            #[cfg(feature = "tls")]
            Socket::Tls(tls) => tls.socket(),
        }
    }

    /// Completes the TLS handshake before `deadline`; nothing to do on plain TCP.
    ///
    /// # Errors
    /// From the TLS handshake (`tls::TlsSocket::handshake`): `TimedOut` at the
    /// deadline, `UnexpectedEof` when the client hangs up, `InvalidData` when it does not
    /// speak TLS we accept.
    pub fn handshake(&self, deadline: Instant) -> io::Result<()> {
        match self {
            Socket::Plain(_) => {
                let _ = deadline;
                Ok(())
            }
            #[cfg(feature = "tls")]
            Socket::Tls(tls) => tls.handshake(deadline),
        }
    }

    /// Sets the socket's read timeout (see [`TcpStream::set_read_timeout`]).
    ///
    /// # Errors
    /// As [`TcpStream::set_read_timeout`].
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    /// Sets the socket's write timeout (see [`TcpStream::set_write_timeout`]).
    ///
    /// # Errors
    /// As [`TcpStream::set_write_timeout`].
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(timeout)
    }

    /// Sends small writes at once (see [`TcpStream::set_nodelay`]).
    ///
    /// # Errors
    /// As [`TcpStream::set_nodelay`].
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.tcp().set_nodelay(nodelay)
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Our own address: which listener the client came in by.
    ///
    /// # Errors
    /// As [`TcpStream::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Shuts down one or both directions. On TLS, closing the write side sends
    /// `close_notify` first; closing both never waits for the other thread, so it can
    /// cut off a stalled connection from anywhere.
    ///
    /// # Errors
    /// As [`TcpStream::shutdown`].
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Socket::Plain(socket) => socket.shutdown(how),
            #[cfg(feature = "tls")]
            Socket::Tls(tls) => tls.shutdown(how),
        }
    }
}

/// Logs a client whose TLS handshake failed: plain HTTP sent to a TLS port, a client
/// that does not trust our certificate, or one that stalled. Routine on a public port,
/// so `info` for a client that spoke something else, `debug` for one that went quiet.
pub fn log_failed_handshake(listener: &str, peer: SocketAddr, e: &io::Error) {
    match e.kind() {
        io::ErrorKind::InvalidData => {
            log::info!("{listener} TLS handshake from {peer} failed: {e}");
        }
        _ => log::debug!("{listener} TLS handshake from {peer} abandoned: {e}"),
    }
}

impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(socket) => (&*socket).read(buf),
            #[cfg(feature = "tls")]
            Socket::Tls(tls) => (&**tls).read(buf),
        }
    }
}

impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(socket) => (&*socket).write(buf),
            #[cfg(feature = "tls")]
            Socket::Tls(tls) => (&**tls).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(socket) => (&*socket).flush(),
            #[cfg(feature = "tls")]
            Socket::Tls(tls) => (&**tls).flush(),
        }
    }
}

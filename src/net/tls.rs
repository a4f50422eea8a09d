//! TLS (`--features tls`): loading the certificate and key, and a TLS connection that
//! a reader thread and a writer thread can use at the same time.
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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Raw bytes read from the socket at a time. At most one TLS record's worth (16 KiB),
/// so that what one read decrypts always fits rustls's plaintext buffer (16 KiB); 8 KiB
/// keeps the buffer small on a connection thread's 128 KiB stack.
pub const TLS_READ_BYTES: usize = 8 * 1024;

/// Why the certificate or key could not be loaded. Never contains key material.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read (missing, no permission).
    Unreadable(PathBuf, io::Error),
    /// The certificate file holds no `CERTIFICATE` section (or a broken one).
    NoCertificate(PathBuf, String),
    /// The key file holds no private key (PKCS#8, PKCS#1 or SEC1) (or a broken one).
    NoKey(PathBuf, String),
    /// rustls refused the pair: the key does not match the certificate, or is of a
    /// kind it does not support.
    Rejected(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Unreadable(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            TlsError::NoCertificate(path, why) => write!(
                f,
                "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) found: {why}",
                path.display()
            ),
            TlsError::NoKey(path, why) => write!(
                f,
                "{}: no PEM private key (-----BEGIN PRIVATE KEY-----) found: {why}",
                path.display()
            ),
            TlsError::Rejected(why) => write!(f, "TLS certificate and key not usable: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
    }
}

/// Reads a certificate chain (leaf first, then intermediates) and its private key from
/// PEM files, and builds the server side of TLS 1.3 and 1.2 with rustls's `ring`
/// provider. Checks that the key belongs to the certificate.
///
/// # Errors
/// A `TlsError` naming the file and what is wrong with it.
pub fn load_server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rejected(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The certificate and key in use, and where they came from. [`Certificates::reload`]
/// reads the files again (the binary does on SIGHUP), so a renewed certificate is
/// served without a restart: every connection accepted afterwards gets the new one,
/// connections already open keep theirs.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Arc<ServerConfig>>,
}

impl Certificates {
    /// Loads the pair (see [`load_server_config`]).
    ///
    /// # Errors
    /// As [`load_server_config`].
    pub fn load(cert: &Path, key: &Path) -> Result<Certificates, TlsError> {
        Ok(Certificates {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Mutex::new(load_server_config(cert, key)?),
        })
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads both files again and uses them from the next connection on. A pair that
    /// does not load (a renewal half written, a wrong key) changes nothing.
    ///
    /// # Errors
    /// As [`load_server_config`]; the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load_server_config(&self.cert, &self.key)?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut certs = Vec::new();
    let sections = CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))?;
    for cert in sections {
        certs.push(cert.map_err(|e| TlsError::NoCertificate(path.into(), e.to_string()))?);
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(
            path.into(),
            "the file has none".into(),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::Io(_) => file_error(path, e),
        pem::Error::NoItemsFound => TlsError::NoKey(path.into(), "the file has none".into()),
        other => TlsError::NoKey(path.into(), other.to_string()),
    })
}

fn file_error(path: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(e) => TlsError::Unreadable(path.into(), e),
        other => TlsError::Unreadable(path.into(), io::Error::other(other.to_string())),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let missing = Path::new("/nonexistent/threadcast/cert.pem");
        let e = load_server_config(missing, missing).unwrap_err();
        assert!(matches!(e, TlsError::Unreadable(..)), "{e:?}");
        assert!(
            e.to_string().contains("/nonexistent/threadcast/cert.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_pem_sections_has_no_certificate_or_key() {
        let dir = std::env::temp_dir().join(format!("threadcast-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        assert!(matches!(
            read_certificates(&junk),
            Err(TlsError::NoCertificate(..))
        ));
        assert!(matches!(read_key(&junk), Err(TlsError::NoKey(..))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

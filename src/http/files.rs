//! Static files and the bundled page, served by tiny_http **behind** the door.
//!
//! tiny_http trusts its clients (it allocates whatever `Content-Length` claims, reads
//! heads without limit, has no deadlines), so no client ever talks to it. It listens
//! on a Unix socket in a private directory (mode 0700, so no other user of the
//! machine can reach it), and the door, having read and checked a client's head
//! itself, writes tiny_http a fresh, minimal head of its own:
//!
//! ```text
//! client ──"GET /app.js?v=2 HTTP/1.1 + 14 headers"──▶ door (checks, bounds, deadline)
//! door ──"GET /app.js HTTP/1.1\r\nHost: threadcast\r\nConnection: close\r\n\r\n"──▶ tiny_http
//! tiny_http ──the file──▶ door ──▶ client
//! ```
//!
//! Each file request gets a thread of its own for the answer (as every connection
//! does), so a client that reads slowly holds up nobody else; the door's deadline
//! ends the relay, which ends tiny_http's write too.

use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use tiny_http::{Header, Response};

use super::reply::write_all_by;
use crate::http::static_files::{Lookup, StaticFiles};
use crate::net::socket::Socket;
use crate::net::spare_threads::{self, Kind};

/// Bytes copied per read while relaying a file.
const RELAY_CHUNK: usize = 16 * 1024;

/// tiny_http on a private Unix socket, and the thread that hands its requests out.
#[derive(Debug)]
pub struct FileServer {
    files: Arc<StaticFiles>,
    /// The private directory holding the socket; removed on drop.
    dir: PathBuf,
    current: Mutex<Generation>,
}

/// One tiny_http server. Replaced if its accept loop ever dies (tiny_http's accept
/// thread ends at its first accept error, e.g. when descriptors run out).
struct Generation {
    number: u64,
    socket: PathBuf,
    server: Arc<tiny_http::Server>,
    dispatcher: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Starts tiny_http serving `public_dir` (or the bundled page).
    ///
    /// # Errors
    /// When the private directory or the socket cannot be created.
    pub fn start(public_dir: &Path) -> io::Result<FileServer> {
        let files = Arc::new(StaticFiles::new(public_dir));
        let dir = private_dir()?;
        let first = Generation::start(&dir, 0, &files)?;
        Ok(FileServer {
            files,
            dir,
            current: Mutex::new(first),
        })
    }

    /// Serves the file at `path` (no query) to `client`, by `deadline`. Returns the
    /// status tiny_http answered with (for the access log).
    ///
    /// # Errors
    /// When tiny_http cannot be reached or the client goes away or is too slow.
    pub fn serve(
        &self,
        client: &Socket,
        path: &str,
        head_only: bool,
        deadline: Instant,
    ) -> io::Result<u16> {
        let backend = match self.connect() {
            Ok(backend) => backend,
            Err(e) => {
                // tiny_http's accept loop has died: start a fresh one and try again.
                log::warn!("file server unreachable ({e}); restarting it");
                self.restart()?;
                self.connect()?
            }
        };
        let method = if head_only { "HEAD" } else { "GET" };
        // Only a path that httparse accepted reaches here (no spaces, no control
        // characters), so it cannot break out of the request line.
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: threadcast\r\nConnection: close\r\n\r\n");
        (&backend).write_all(request.as_bytes())?;
        relay(&backend, client, deadline)
    }

    fn connect(&self) -> io::Result<UnixStream> {
        let socket = self.lock().socket.clone();
        UnixStream::connect(socket)
    }

    fn restart(&self) -> io::Result<()> {
        let mut current = self.lock();
        let next = Generation::start(&self.dir, current.number + 1, &self.files)?;
        let old = std::mem::replace(&mut *current, next);
        drop(current);
        old.stop();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generation> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops tiny_http and removes the socket and its directory.
    pub fn stop(&self) {
        self.lock().stop_in_place();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("number", &self.number)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Generation {
    fn start(dir: &Path, number: u64, files: &Arc<StaticFiles>) -> io::Result<Generation> {
        let socket = dir.join(format!("files-{number}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map(Arc::new)
            .map_err(io::Error::other)?;
        let dispatcher = {
            let (server, files) = (Arc::clone(&server), Arc::clone(files));
            thread::Builder::new()
                .name("files".into())
                .spawn(move || dispatch(&server, &files))?
        };
        Ok(Generation {
            number,
            socket,
            server,
            dispatcher: Some(dispatcher),
        })
    }

    fn stop_in_place(&mut self) {
        self.server.unblock();
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    fn stop(mut self) {
        self.stop_in_place();
    }
}

/// Takes tiny_http's requests one by one and answers each on a thread of its own.
fn dispatch(server: &tiny_http::Server, files: &Arc<StaticFiles>) {
    for request in server.incoming_requests() {
        let files = Arc::clone(files);
        let spawned = spare_threads::run(Kind::Connection, "file".into(), move || {
            answer(request, &files)
        });
        if let Err(e) = spawned {
            // The request went down with the closure: tiny_http closes its socket,
            // and the door answers 503 for it.
            log::warn!("cannot start a thread for a file request: {e}");
        }
    }
}

/// Looks the file up and answers with it.
fn answer(request: tiny_http::Request, files: &StaticFiles) {
    let response = match files.lookup(request.url()) {
        Lookup::Found(found) => Response::new(
            200.into(),
            vec![content_type(found.content_type), nosniff()],
            found.body,
            Some(found.len),
            None,
        ),
        Lookup::NotFound => text(404, "not found"),
        Lookup::BadRequest => text(400, "bad path"),
    }
    // Send Content-Length, never chunks: the door relays bytes as they come.
    .with_chunked_threshold(usize::MAX);
    if let Err(e) = request.respond(response) {
        log::debug!("file answer not delivered: {e}");
    }
}

fn text(status: u16, message: &str) -> Response<Box<dyn Read + Send>> {
    let body = format!("{message}\n").into_bytes();
    let len = body.len();
    Response::new(
        status.into(),
        vec![content_type("text/plain; charset=utf-8"), nosniff()],
        Box::new(io::Cursor::new(body)) as Box<dyn Read + Send>,
        Some(len),
        None,
    )
}

fn content_type(value: &str) -> Header {
    Header::from_bytes("Content-Type", value).expect("a valid header")
}

fn nosniff() -> Header {
    Header::from_bytes("X-Content-Type-Options", "nosniff").expect("a valid header")
}

/// Copies tiny_http's answer to the client until tiny_http closes, by `deadline`.
/// Returns the answer's status code.
fn relay(backend: &UnixStream, client: &Socket, deadline: Instant) -> io::Result<u16> {
    let mut buf = vec![0u8; RELAY_CHUNK];
    let mut status = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        backend.set_read_timeout(Some(left))?;
        let n = (&*backend).read(&mut buf)?;
        if n == 0 {
            return status.ok_or_else(|| io::ErrorKind::UnexpectedEof.into());
        }
        // "HTTP/1.1 200 OK": the status is the second word of the first line.
        status = status.or_else(|| {
            std::str::from_utf8(buf.get(9..12)?)
                .ok()
                .and_then(|s| s.parse().ok())
        });
        write_all_by(client, &buf[..n], deadline)?;
    }
}

/// A new directory only this user can enter, under the system's temporary folder.
fn private_dir() -> io::Result<PathBuf> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(io::Error::other)?;
    let name = format!(
        "threadcast-{}-{}",
        std::process::id(),
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let dir = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// A connected pair: the server side as a [`Socket`], and the client's socket.
    fn pair() -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (Socket::Plain(listener.accept().unwrap().0), client)
    }

    fn fetch(files: &FileServer, path: &str) -> String {
        let (server_side, mut client) = pair();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        files.serve(&server_side, path, false, deadline).unwrap();
        drop(server_side);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn files_come_back_through_the_private_socket() {
        let files = FileServer::start(Path::new("/nonexistent-public-dir")).unwrap();
        let page = fetch(&files, "/");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("<html"), "the bundled page");
        assert!(fetch(&files, "/nope.js").starts_with("HTTP/1.1 404"));
        let mode = std::fs::metadata(&files.dir).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }

    #[test]
    fn a_file_server_that_stopped_accepting_is_started_again() {
        let files = FileServer::start(Path::new("/nonexistent-public-dir")).unwrap();
        // As if tiny_http's accept thread had died: nothing answers on the socket.
        let socket = files.lock().socket.clone();
        std::fs::remove_file(&socket).unwrap();
        assert!(fetch(&files, "/").starts_with("HTTP/1.1 200"));
        assert_ne!(files.lock().socket, socket, "a new generation took over");
    }

    #[test]
    fn the_private_directory_is_removed_at_stop() {
        let files = FileServer::start(Path::new("/nonexistent-public-dir")).unwrap();
        let dir = files.dir.clone();
        assert!(dir.is_dir());
        drop(files);
        assert!(!dir.exists());
    }
}

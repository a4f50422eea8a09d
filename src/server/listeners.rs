//! The listening sockets: binding them (with an error that names the flag), an accept
//! loop per listener on its own thread, and the address that wakes a loop at shutdown.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::config::Config;
use crate::context::Shared;
use crate::door::{self, Serves};
use crate::http::files::FileServer;

/// The server's listeners: the main one, and the `--ws` one for WebSockets only.
pub(super) struct Listeners {
    http: TcpListener,
    ws: Option<TcpListener>,
    /// The main listener's address (port 0 resolved).
    pub(super) http_addr: SocketAddr,
    /// Where WebSockets are served: the `--ws` listener's address, else `http_addr`.
    pub(super) ws_addr: SocketAddr,
}

impl Listeners {
    /// Binds `--http` and, if set, `--ws`.
    pub(super) fn bind(config: &Config) -> io::Result<Listeners> {
        let http = bind("--http", config.http_addr)?;
        let ws = config.ws_addr.map(|addr| bind("--ws", addr)).transpose()?;
        let http_addr = http.local_addr()?;
        let ws_addr = match &ws {
            Some(listener) => listener.local_addr()?,
            None => http_addr,
        };
        Ok(Listeners {
            http,
            ws,
            http_addr,
            ws_addr,
        })
    }

    /// Starts an accept loop for each listener; returns their addresses and threads.
    pub(super) fn open_doors(
        self,
        shared: &Arc<Shared>,
        files: &Arc<FileServer>,
    ) -> io::Result<Vec<(SocketAddr, JoinHandle<()>)>> {
        let mut accept = vec![spawn_door(self.http, shared, Serves::Everything, files)?];
        if let Some(listener) = self.ws {
            accept.push(spawn_door(listener, shared, Serves::WebSocketsOnly, files)?);
        }
        Ok(accept)
    }
}

/// Binds a listener; the error names the flag and the address.
fn bind(flag: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse {
            " (another program, or another threadcast, is using it; pick another port)"
        } else {
            ""
        };
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} ({flag}): {e}{hint}"),
        )
    })
}

/// Starts an accept loop on its own thread.
fn spawn_door(
    listener: TcpListener,
    shared: &Arc<Shared>,
    serves: Serves,
    files: &Arc<FileServer>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let (shared, files) = (Arc::clone(shared), Arc::clone(files));
    let thread = thread::Builder::new()
        .name("accept".into())
        .spawn(move || door::accept_loop(listener, shared, serves, files))?;
    Ok((addr, thread))
}

/// An address a browser on this machine can open: `0.0.0.0` and `::` become loopback.
pub(super) fn browsable(addr: SocketAddr) -> SocketAddr {
    wake_address(addr)
}

/// Where to connect to wake a listener: its own address, with an unspecified IP
/// (`0.0.0.0`, `::`) replaced by loopback.
pub(super) fn wake_address(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

//! The WebSocket side: a plain `std::net::TcpListener`, our own handshake, and a
//! reader and a writer thread per connection.

pub mod connection;
pub mod handshake;
pub mod listener;

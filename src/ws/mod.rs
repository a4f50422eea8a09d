//! The WebSocket side: our own handshake, then a reader and a writer thread per
//! connection. Connections arrive through the door ([`crate::door`]).

pub mod close;
pub mod connection;
pub mod edges;
pub mod handshake;
pub mod inbox;
pub mod read_half;
pub mod reader;
pub mod settings;
pub mod upgrade;
pub mod write_half;
pub mod writer;

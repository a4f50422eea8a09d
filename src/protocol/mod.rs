//! The protocol, as plain functions: no threads, no sockets, no hub.
//!
//! Everything here turns bytes and fields into other bytes and fields, so each rule
//! is tested on its own: the envelope a room message travels in ([`envelope`]) and the control
//! frames beside it ([`control`]), why a WebSocket is closed ([`close`]), the JSON they are written in ([`json`]), signed identities ([`jwt`]), who a message is from ([`person`]) and what they may do ([`rights`]), and the
//! parts of a URL the server reads — room names, query parameters, where a client
//! resumes ([`url`]). Read this layer first: every other one uses it.

pub mod close;
pub mod control;
pub mod envelope;
pub mod json;
pub mod jwt;
pub mod person;
pub mod rights;
pub mod url;

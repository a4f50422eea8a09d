//! The network layer under both transports: a connection's socket (plain TCP or
//! TLS), the limits on connections, requests, addresses and message rates, what the machine lets a
//! thread-per-connection server hold, and TLS loading. It knows nothing of rooms,
//! WebSocket frames or HTTP routes.

pub mod capacity;
#[cfg(feature = "tls")]
pub mod certificates;
pub mod limit;
pub mod one_shot;
pub mod per_address;
pub mod rate;
pub mod requests;
pub mod socket;
pub mod spare_threads;
#[cfg(feature = "tls")]
pub mod tls;

//! Loopback peers for Herald's tests and harnesses (a dev-dependency only: no
//! function links it). Every server binds 127.0.0.1 and stops when dropped.
//!
//! - [`receiver::Receiver`]: a webhook receiver that answers 204 and counts;
//! - [`hostile::Hostile`]: peers that accept connections and never finish the
//!   exchange (TLS tarpit, slow-drip HTTP answer, STOMP receipt flood), counting the
//!   connections they still hold;
//! - [`http::RequestReader`]: one HTTP/1.1 request read off a connection by hand
//!   (head and `Content-Length` body, bounded), for the peers that need the wire;
//! - [`proxy::RecordingProxy`]: a proxy in front of moto that hands each exchange
//!   (operation, status, both bodies) to a recorder;
//! - [`stomp::StompSink`]: a STOMP broker stand-in that keeps every `SEND` it is
//!   given and answers its receipt.

pub mod hostile;
pub mod http;
pub mod proxy;
pub mod receiver;
pub mod stomp;

/// The checkout whose `.run/` (the test broker's password and certificate) and
/// `.venv/` (moto) hold the local peers' state: `HERALD_CHECKOUT`, which
/// `infra/with-peers.sh` sets to its own, else the one this was built from. Read at
/// run time, so that a binary built by another checkout sharing the target dir reads
/// this checkout's broker password, not that one's.
pub fn checkout() -> String {
    std::env::var("HERALD_CHECKOUT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../..").to_owned())
}

//! Loopback peers for Herald's tests and harnesses (a dev-dependency only: no
//! function links it). Every server binds 127.0.0.1 and stops when dropped.
//!
//! - [`receiver::Receiver`]: a webhook receiver that answers 204 and counts;
//! - [`hostile::Hostile`]: peers that accept connections and never finish the
//!   exchange (TLS tarpit, slow-drip HTTP answer, STOMP receipt flood), counting the
//!   connections they still hold;
//! - [`stomp::StompSink`]: a STOMP broker stand-in that keeps every `SEND` it is
//!   given and answers its receipt.

pub mod hostile;
pub mod receiver;
pub mod stomp;

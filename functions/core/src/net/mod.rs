//! The network edge every target shares: the address guard (which addresses a
//! delivery may reach) and the HTTP client built on it.

pub mod client;
pub mod guard;

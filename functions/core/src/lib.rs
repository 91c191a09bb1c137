//! Herald's core: everything that is not Lambda wiring.
//!
//! - [`model`], [`catalog`], [`validate`], [`mask`]: integrations, the observable
//!   events, request validation and secret masking;
//! - [`ports`]: the traits handlers depend on; [`memory`] and [`aws`] implement them;
//! - [`integrations`]: the API's use cases; [`page`]: pagination;
//! - [`config`]: typed settings from the environment;
//! - [`access`]: which stores IAM callers may act for; [`jsonapi`]: error documents
//!   and JSON bodies, as every HTTP entry point answers them.

pub mod access;
pub mod alerts;
pub mod attempt;
pub mod aws;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod delivery;
pub mod error;
pub mod event_data;
pub mod fanout;
pub mod filter;
pub mod ingest;
pub mod integrations;
pub mod job;
pub mod json;
pub mod jsonapi;
pub mod mask;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod net;
pub mod page;
pub mod ports;
pub mod queue;
pub mod replay;
pub mod retry;
pub mod secrets;
pub mod signing;
pub mod sweep;
pub mod telemetry;
pub mod validate;
pub mod wiring;

pub use error::{Error, Result};

/// The allocator Herald's binaries run with (each `main` declares it as its
/// `#[global_allocator]`): mimalloc. The fan-out allocates for every delivery (the
/// parsed job, the body, its headers, the attempt's log item); with glibc's malloc,
/// allocating and freeing was about a fifth of the handler's CPU samples. `make bench`
/// measures the functions' code with it, and the raw loop beside it too.
///
/// Built with `no_thp`: mimalloc otherwise asks for transparent huge pages on its
/// arenas, which took the fan-out's idle RSS from 10 to 16 MB and its peak on a
/// 1,000-record batch from 20 to 33 MB (over the 30 MB target); without them, 10.5
/// and 22.5 MB.
pub use mimalloc::MiMalloc as Allocator;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

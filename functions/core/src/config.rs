//! Typed configuration from the environment. Each binary reads its settings once at
//! start and fails fast with the name of the variable that is wrong.

use crate::error::{Error, Result};

/// Which adapters back the ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In-process adapters: nothing to run, nothing kept across restarts.
    Memory,
    /// DynamoDB (and SQS) through the standard AWS environment; `AWS_ENDPOINT_URL`
    /// points it at moto locally.
    Aws,
}

impl Backend {
    /// `memory` or `aws`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Aws => "aws",
        }
    }
}

/// A non-empty environment variable, trimmed.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A variable that must be set.
pub fn required(name: &str) -> Result<String> {
    var(name).ok_or_else(|| Error::Config(format!("{name} must be set")))
}

/// `HERALD_BACKEND`: `memory` or `aws`, with a per-binary default.
pub fn backend(default: Backend) -> Result<Backend> {
    match var("HERALD_BACKEND").as_deref() {
        None => Ok(default),
        Some("memory") => Ok(Backend::Memory),
        Some("aws") => Ok(Backend::Aws),
        Some(other) => Err(Error::Config(format!(
            "HERALD_BACKEND must be \"memory\" or \"aws\", not {other:?}"
        ))),
    }
}

/// A boolean variable (`true`/`false`/`1`/`0`), or `default` when unset.
pub fn flag(name: &str, default: bool) -> Result<bool> {
    match var(name).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(Error::Config(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

/// A whole-number variable within `range`, or `default` when unset.
pub fn number(name: &str, default: usize, range: std::ops::RangeInclusive<usize>) -> Result<usize> {
    match var(name) {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(Error::Config(format!(
                "{name} must be a whole number from {} to {}, not {raw:?}",
                range.start(),
                range.end()
            ))),
        },
    }
}

//! The core's error type: infrastructure failures only. Expected outcomes
//! (validation failures, not found, limits) are values, not errors.

/// What went wrong underneath a request: a store or configuration failure.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// A backing service (DynamoDB, ...) failed or could not be reached.
    #[error("{service} call failed: {message}")]
    Backend {
        /// Which service.
        service: &'static str,
        /// What it said (never request data).
        message: String,
        /// Whether trying again may succeed (throttling, 5xx, network).
        retryable: bool,
    },
    /// A stored item could not be read back.
    #[error("stored item {key} is damaged: {reason}")]
    Corrupt {
        /// The item's key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The process configuration is wrong (missing or invalid environment variable).
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Backend {
                retryable: true,
                ..
            }
        )
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

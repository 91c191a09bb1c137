//! The sweeper function's handler: a scheduled event in (its content is not read),
//! [`herald_core::sweep::sweep`] of the rotations ended by now, what it did out.

use chrono::Utc;
use herald_core::ports::RetiredSecrets;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{json, Value};

/// Handles one scheduled invocation: `{"removed": n, "skipped": m}`. An error (the
/// table or KMS failing) fails the invocation; the next run sweeps again.
pub async fn handle(
    store: &dyn RetiredSecrets,
    _event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let swept = herald_core::sweep::sweep(store, Utc::now()).await?;
    Ok(json!({ "removed": swept.removed, "skipped": swept.skipped }))
}

//! The hello-world `lambda_runtime` function R_init is measured against: the
//! runtime's own example (a default tracing subscriber, an echo handler), built with
//! the same profile and toolchain as Herald's functions.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}

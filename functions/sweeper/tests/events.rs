//! The scheduled event in `events/` through the sweeper's handler.

use std::path::PathBuf;
use std::sync::Arc;

use herald_core::memory::MemoryIntegrationStore;
use herald_core::secrets::Vault;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

#[tokio::test]
async fn the_scheduled_event_runs_a_sweep_that_answers_what_it_did() {
    // GIVEN the schedule's event and a store with no rotation
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/sweeper-schedule.json");
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the event")).expect("JSON");
    let store = MemoryIntegrationStore::sealed(Arc::new(Vault::local().expect("vault")));

    // WHEN the handler gets it
    let answer = herald_sweeper::handle(&store, LambdaEvent::new(event, Context::default()))
        .await
        .expect("answered");

    // THEN it says it removed nothing and skipped nothing
    assert_eq!(answer, json!({"removed": 0, "skipped": 0}));
}

//! Any bytes as an internal-queue message body (`DeliveryJob::parse`).
//!
//! Invariants: it never panics; an accepted job is version 1, has a valid store, the
//! job id its event and integration derive and an attempt of 1 or more (a body
//! without one, written before retries were sent again, is attempt 1), and its body
//! (`to_body`) parses to exactly the same job.
#![no_main]

use herald_core::job::{job_id, legacy_job_id, DeliveryJob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let Ok(job) = DeliveryJob::parse(&body) else {
        return;
    };
    assert_eq!(job.v, 1);
    assert!(job.store().is_some(), "{job:?}");
    assert!(
        job.job_id == job_id(&job.event.id, job.integration_id, job.enqueued_at)
            || job.job_id == legacy_job_id(&job.event.id, job.integration_id),
        "{job:?}"
    );
    assert!(job.attempt >= 1, "{job:?}");
    let again = DeliveryJob::parse(&job.to_body()).expect("an accepted job's body is accepted");
    assert_eq!(again, job);
});

//! The fast subset of `make reliability`: every scenario at small size, asserting
//! what the table reports (lost = 0 and each scenario's own checks).

use herald_reliability::{count_panics, scenarios, Report, Size};

fn assert_passed(r: Report) {
    assert_eq!(
        r.lost, 0,
        "{}: lost {} of {}",
        r.scenario, r.lost, r.expected
    );
    assert!(r.expected > 0, "{}: nothing was expected", r.scenario);
    assert!(
        r.passed(),
        "{}: {:?} ({})",
        r.scenario,
        r.failures(),
        r.notes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_receiver_loses_nothing_and_duplicates_only_after_accepting() {
    count_panics();
    assert_passed(scenarios::flaky_receiver(&Size::FAST).await.expect("ran"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_less_than_the_budget_gets_everything_and_the_dlq_nothing() {
    let r = scenarios::receiver_down(&Size::FAST, false)
        .await
        .expect("ran");
    assert_eq!(r.dead_lettered, 0);
    assert_passed(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_past_the_budget_leaves_every_job_in_the_dlq() {
    let r = scenarios::receiver_down(&Size::FAST, true)
        .await
        .expect("ran");
    assert_eq!(r.dead_lettered, r.expected);
    assert_passed(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_does_not_hold_back_the_fast_ones_in_its_batches() {
    assert_passed(
        scenarios::slow_target_isolation(&Size::FAST)
            .await
            .expect("ran"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_the_internal_queue_rejects_are_resent_and_only_those() {
    assert_passed(
        scenarios::internal_queue_partial_failures(&Size::FAST)
            .await
            .expect("ran"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_a_customer_queue_throttles_are_made_again_and_only_those() {
    let r = scenarios::customer_queue_partial_failures(&Size::FAST)
        .await
        .expect("ran (moto must be running: infra/with-peers.sh)");
    assert_eq!(r.duplicates, 0, "{}", r.notes);
    assert_passed(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_jobs_are_isolated_and_their_valid_siblings_delivered_once() {
    count_panics();
    assert_passed(scenarios::poison_messages(&Size::FAST).await.expect("ran"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_posted_concurrently_makes_one_set_of_jobs() {
    assert_passed(
        scenarios::idempotent_ingest(&Size::FAST)
            .await
            .expect("ran"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrations_that_keep_failing_or_are_gone_are_disabled_and_say_why() {
    assert_passed(
        scenarios::health_and_auto_disable(&Size::FAST)
            .await
            .expect("ran"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_jobs_are_replayed_to_their_integration_and_no_other() {
    assert_passed(
        scenarios::dead_lettered_then_replayed(&Size::FAST)
            .await
            .expect("ran"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_endpoints_hold_no_connection_and_cost_the_healthy_store_nothing() {
    assert_passed(
        scenarios::hostile_endpoints(&Size::FAST)
            .await
            .expect("ran"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_jobs_waiting_for_retries_to_a_dead_endpoint_are_not_in_flight_and_all_reach_the_dlq(
) {
    let r = scenarios::dead_endpoint_in_flight(&Size::FAST, scenarios::QueueKind::Embedded)
        .await
        .expect("ran");
    assert_eq!(r.expected, 5_000);
    assert_eq!(r.dead_lettered, r.expected, "{}", r.notes);
    assert_passed(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqs_jobs_waiting_for_retries_to_a_dead_endpoint_are_not_in_flight_and_all_reach_the_dlq(
) {
    let r = scenarios::dead_endpoint_in_flight(&Size::FAST, scenarios::QueueKind::Moto)
        .await
        .expect("ran (moto must be running: infra/with-peers.sh)");
    assert_eq!(r.dead_lettered, r.expected, "{}", r.notes);
    assert_passed(r);
}

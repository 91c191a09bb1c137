//! The scenarios. Each builds its own pipeline and receiver, so they are independent
//! and run in any order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use herald_core::aws::local::{create_queues, moto_config};
use herald_core::aws::sqs::SqsJobQueue;
use herald_core::delivery::sqs::SqsDeliverer;
use herald_core::filter::{Filter, Listed};
use herald_core::ingest::EventStatus;
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::StoreId;
use herald_core::page::Page;
use herald_core::ports::{JobQueue, JobSource, OutgoingJob};
use uuid::Uuid;

use crate::receiver::{Behaviour, Fault, Receiver};
use crate::sqs_proxy::{self, SqsProxy};
use crate::{event, panics, wait_until, Pipeline, Report, Size};

type Pair = (String, String);

fn store(name: &str) -> StoreId {
    StoreId::parse(name).unwrap_or_else(|| unreachable!("a valid literal store id"))
}

/// Waits for every expected delivery to be accepted or dead-lettered and the queue
/// to drain, then counts.
async fn account(
    scenario: &str,
    size: &Size,
    pipeline: &Pipeline,
    receiver: &Receiver,
    expected: &HashSet<Pair>,
    sent_at: &HashMap<String, Instant>,
    limit: Duration,
) -> Report {
    let drained = wait_until(limit, || {
        if !pipeline.queue.is_empty() {
            return false;
        }
        let counts = receiver.counts();
        let dead = pipeline.dead_letters();
        expected
            .iter()
            .all(|p| counts.contains_key(p) || dead.contains(p))
    })
    .await;
    // Anything still in flight after the limit counts as lost.
    let accepted = receiver.accepted();
    let counts = receiver.counts();
    let dead = pipeline.dead_letters();
    let mut first: HashMap<Pair, Instant> = HashMap::new();
    for a in &accepted {
        let key = (a.event_id.clone(), a.integration_id.clone());
        let at = first.entry(key).or_insert(a.answered);
        if a.answered < *at {
            *at = a.answered;
        }
    }
    let budget = size.budget();
    let lost = expected
        .iter()
        .filter(|p| !counts.contains_key(*p) && !dead.contains(*p))
        .count();
    let duplicates = counts.values().map(|c| c.saturating_sub(1)).sum();
    let within_budget = expected
        .iter()
        .filter(|p| match (first.get(*p), sent_at.get(&p.0)) {
            (Some(at), Some(sent)) => at.saturating_duration_since(*sent) <= budget,
            _ => false,
        })
        .count();
    let unexpected = counts.keys().filter(|p| !expected.contains(*p)).count();
    Report {
        scenario: scenario.to_owned(),
        events: sent_at.len(),
        expected: expected.len(),
        lost,
        duplicates,
        within_budget,
        dead_lettered: pipeline.queue.dead_letters().len(),
        checks: vec![
            ("drained in time".into(), drained),
            (
                "nothing delivered that was not sent".into(),
                unexpected == 0,
            ),
        ],
        notes: String::new(),
    }
}

fn injected_note(r: &Receiver) -> String {
    let i = &r.injected;
    format!(
        "{} requests: {} × 503, {} hangs after accept, {} resets",
        i.requests.load(Ordering::Relaxed),
        i.unavailable.load(Ordering::Relaxed),
        i.hangs.load(Ordering::Relaxed),
        i.resets.load(Ordering::Relaxed)
    )
}

/// Sends `n` events named `prefix-i` to `store`; returns when each was sent. Events
/// arrive as a steady stream: a group of 1,000 is sent when fewer than four rounds
/// of the pollers' batches wait in the queue (a burst of 100,000 at once would
/// measure queueing, not delivery).
async fn send_events(
    pipeline: &Arc<Pipeline>,
    store: &StoreId,
    prefix: &str,
    n: usize,
) -> Result<HashMap<String, Instant>, String> {
    let mut sent_at = HashMap::new();
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let backlog = pipeline.poller_count * 10 * 4;
    for group in ids.chunks(1000) {
        wait_until(Duration::from_secs(120), || pipeline.queue.len() < backlog).await;
        let at = Instant::now();
        let events = group.iter().map(|id| event(id)).collect();
        let results = pipeline.send(store, events, 8).await;
        for r in &results {
            if !matches!(r.status, EventStatus::Accepted { .. }) {
                return Err(format!("event {:?} was not accepted: {:?}", r.id, r.status));
            }
        }
        for id in group {
            sent_at.insert(id.clone(), at);
        }
    }
    Ok(sent_at)
}

fn pairs(sent_at: &HashMap<String, Instant>, integrations: &[Uuid]) -> HashSet<Pair> {
    sent_at
        .keys()
        .flat_map(|e| integrations.iter().map(move |i| (e.clone(), i.to_string())))
        .collect()
}

/// The drain limit: the budget, plus time to push the events through.
fn limit(size: &Size, deliveries: usize) -> Duration {
    size.budget() * 2 + Duration::from_millis(deliveries as u64 * 2) + Duration::from_secs(30)
}

/// 1. A receiver that answers 10 % 503, hangs past the timeout after accepting on
///    2 %, and closes 1 % of connections without answering.
pub async fn flaky_receiver(size: &Size) -> Result<Report, String> {
    let hang = size.webhook_timeout + Duration::from_millis(300);
    let behaviour: Behaviour = Arc::new(move |_| match fastrand::u32(..1000) {
        0..=99 => Fault::Unavailable,
        100..=119 => Fault::HangAfterAccept(hang),
        120..=129 => Fault::Reset,
        _ => Fault::Accept,
    });
    let receiver = Receiver::start(behaviour)
        .await
        .map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::start(size).await?);
    let s = store("flaky");
    let id = pipeline.add_webhook(&s, receiver.url("/hook")).await?;
    let sent_at = send_events(&pipeline, &s, "flaky", size.flaky_events).await?;
    let expected = pairs(&sent_at, &[id]);
    let mut report = account(
        "flaky receiver (10% 503, 2% hang, 1% reset)",
        size,
        &pipeline,
        &receiver,
        &expected,
        &sent_at,
        limit(size, expected.len()),
    )
    .await;
    let hangs = receiver.injected.hangs.load(Ordering::Relaxed) as usize;
    report.checks.push((
        "duplicates ≤ post-accept faults".into(),
        report.duplicates <= hangs,
    ));
    report.notes = injected_note(&receiver);
    finish(pipeline).await;
    Ok(report)
}

/// 2. The receiver is down (503) for `window`, then answers again.
pub async fn receiver_down(size: &Size, longer_than_budget: bool) -> Result<Report, String> {
    // The schedule's attempts land at 0, d1, d1+d2, ...; a window shorter than the
    // sum of the delays ends before the last attempt; one longer than the budget
    // outlasts them all.
    let delays: Duration = herald_core::retry::RetryPolicy::scaled(size.retry_scale)
        .delays
        .iter()
        .sum();
    let window = if longer_than_budget {
        size.budget()
    } else {
        delays / 3
    };
    let started = Instant::now();
    let behaviour: Behaviour = Arc::new(move |_| {
        if started.elapsed() < window {
            Fault::Unavailable
        } else {
            Fault::Accept
        }
    });
    let receiver = Receiver::start(behaviour)
        .await
        .map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::start(size).await?);
    let s = store("down");
    let id = pipeline.add_webhook(&s, receiver.url("/hook")).await?;
    let sent_at = send_events(&pipeline, &s, "down", size.events).await?;
    let expected = pairs(&sent_at, &[id]);
    let name = if longer_than_budget {
        format!("receiver down {:.1}s (> budget)", window.as_secs_f64())
    } else {
        format!(
            "receiver down {:.1}s (< budget), then back",
            window.as_secs_f64()
        )
    };
    let mut report = account(
        &name,
        size,
        &pipeline,
        &receiver,
        &expected,
        &sent_at,
        limit(size, expected.len()) + window,
    )
    .await;
    if longer_than_budget {
        report.checks.push((
            "every job in the DLQ".into(),
            report.dead_lettered == expected.len(),
        ));
    } else {
        report
            .checks
            .push(("none in the DLQ".into(), report.dead_lettered == 0));
        report.checks.push((
            "all delivered".into(),
            receiver.counts().len() == expected.len(),
        ));
    }
    report.notes = injected_note(&receiver);
    finish(pipeline).await;
    Ok(report)
}

/// 2b + 7. The receiver is down past the whole retry budget: every job lands in the
///    DLQ. Then it is back, and the integration is replayed; another store's
///    integration, still down, keeps its dead jobs.
pub async fn dead_lettered_then_replayed(size: &Size) -> Result<Report, String> {
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = up.clone();
    let behaviour: Behaviour = Arc::new(move |r| {
        if r.path == "/hook" && flag.load(Ordering::SeqCst) {
            Fault::Accept
        } else {
            Fault::Unavailable
        }
    });
    let receiver = Receiver::start(behaviour)
        .await
        .map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::start(size).await?);
    let (s, other_store) = (store("replay"), store("replay-other"));
    let id = pipeline.add_webhook(&s, receiver.url("/hook")).await?;
    let other = pipeline
        .add_webhook(&other_store, receiver.url("/other"))
        .await?;
    let n = size.events / 2;
    let sent_at = send_events(&pipeline, &s, "replay", n).await?;
    let other_sent = send_events(&pipeline, &other_store, "replay-other", n / 10).await?;
    let dead_target = n + n / 10;
    let all_dead = wait_until(limit(size, dead_target), || {
        pipeline.queue.is_empty() && pipeline.queue.dead_letters().len() == dead_target
    })
    .await;
    let dead_before = pipeline.queue.dead_letters().len();
    up.store(true, Ordering::SeqCst);
    let dead_letters = pipeline
        .components
        .dead_letters
        .clone()
        .ok_or("the embedded backend replays from its DLQ")?;
    let replayed = herald_core::replay::redrive(&*dead_letters, &s, id, Duration::from_secs(20))
        .await
        .map_err(|e| e.to_string())?;
    let expected = pairs(&sent_at, &[id]);
    let mut report = account(
        "receiver down past the budget: DLQ, then replay",
        size,
        &pipeline,
        &receiver,
        &expected,
        &sent_at,
        limit(size, expected.len()),
    )
    .await;
    let other_dead = pipeline
        .dead_letters()
        .iter()
        .filter(|(_, i)| *i == other.to_string())
        .count();
    report.checks.push((
        "all jobs dead-lettered before the replay".into(),
        all_dead && dead_before == dead_target,
    ));
    report.checks.push((
        "replay moved exactly this integration's jobs".into(),
        replayed.moved == n && replayed.complete,
    ));
    report.checks.push((
        "all delivered after the replay, once".into(),
        receiver.counts().len() == n && report.duplicates == 0,
    ));
    report.checks.push((
        "the other store's dead jobs stay put".into(),
        other_dead == other_sent.len() && report.dead_lettered == other_sent.len(),
    ));
    report.notes = format!(
        "{dead_before} jobs dead-lettered; replay moved {} of {} scanned; {} × 503 before the receiver came back",
        replayed.moved,
        replayed.scanned,
        receiver.injected.unavailable.load(Ordering::Relaxed)
    );
    finish(pipeline).await;
    Ok(report)
}

/// 3. One integration whose receiver takes just under the timeout, beside nine fast
///    ones observing the same events (so in the same batches).
pub async fn slow_target_isolation(size: &Size) -> Result<Report, String> {
    let slow = size.webhook_timeout.mul_f64(0.7);
    let behaviour: Behaviour = Arc::new(move |r| {
        if r.path == "/slow" {
            Fault::AcceptAfter(slow)
        } else {
            Fault::Accept
        }
    });
    let receiver = Receiver::start(behaviour)
        .await
        .map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::start(size).await?);
    let s = store("isolation");
    let slow_id = pipeline.add_webhook(&s, receiver.url("/slow")).await?;
    let mut ids = vec![slow_id];
    for _ in 0..9 {
        ids.push(pipeline.add_webhook(&s, receiver.url("/fast")).await?);
    }
    let n = (size.events / 5).max(10);
    let sent_at = send_events(&pipeline, &s, "iso", n).await?;
    let expected = pairs(&sent_at, &ids);
    let mut report = account(
        "slow target beside nine fast ones",
        size,
        &pipeline,
        &receiver,
        &expected,
        &sent_at,
        limit(size, expected.len()) + slow * n as u32,
    )
    .await;
    // Fast deliveries of an event finish before its slow delivery answers: the slow
    // record does not hold its batch's other records back.
    let accepted = receiver.accepted();
    let slow_key = slow_id.to_string();
    let slow_done: HashMap<&str, Instant> = accepted
        .iter()
        .filter(|a| a.integration_id == slow_key)
        .map(|a| (a.event_id.as_str(), a.answered))
        .collect();
    let fast: Vec<_> = accepted
        .iter()
        .filter(|a| a.integration_id != slow_key)
        .collect();
    let held_back = fast
        .iter()
        .filter(|a| {
            slow_done
                .get(a.event_id.as_str())
                .is_some_and(|done| a.answered > *done)
        })
        .count();
    let mut fast_latency: Vec<Duration> = fast
        .iter()
        .filter_map(|a| {
            sent_at
                .get(&a.event_id)
                .map(|s| a.answered.saturating_duration_since(*s))
        })
        .collect();
    fast_latency.sort_unstable();
    let p99 = fast_latency
        .get(fast_latency.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    report.checks.push((
        "fast deliveries not behind the slow one".into(),
        held_back == 0,
    ));
    report.checks.push((
        "no batch failed".into(),
        report.dead_lettered == 0 && report.duplicates == 0,
    ));
    report.notes = format!(
        "slow answers after {} ms; fast deliveries answered after their event's slow one: {held_back}; fast p99 from ingest {} ms",
        slow.as_millis(),
        p99.as_millis()
    );
    finish(pipeline).await;
    Ok(report)
}

/// 5. The internal queue rejects some entries of a batch send (SQS's 200 with
///    `Failed[]`): ingest resends exactly those.
pub async fn internal_queue_partial_failures(size: &Size) -> Result<Report, String> {
    let receiver = Receiver::start(Arc::new(|_| Fault::Accept))
        .await
        .map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::start(size).await?);
    let s = store("partial");
    let id = pipeline.add_webhook(&s, receiver.url("/hook")).await?;
    let failing = size.events / 10;
    pipeline.queue.fail_next_sends(failing);
    let sent_at = send_events(&pipeline, &s, "partial", size.events).await?;
    let expected = pairs(&sent_at, &[id]);
    let mut report = account(
        "internal queue rejects some batch entries",
        size,
        &pipeline,
        &receiver,
        &expected,
        &sent_at,
        limit(size, expected.len()),
    )
    .await;
    report.checks.push((
        "only the failed entries resent".into(),
        report.duplicates == 0,
    ));
    report.notes = format!("{failing} entries rejected once by the queue");
    finish(pipeline).await;
    Ok(report)
}

/// Seed of the customer-queue scenario's choice of sends to reject (fixed, so a
/// failure can be rerun exactly).
const CUSTOMER_QUEUE_SEED: u64 = 0x5e4d_6e55_a6e5;

/// How many attempts the customer-SQS client's SDK makes per delivery attempt (the
/// standard retry mode's default, which `moto_config` and production both use).
const SDK_ATTEMPTS: u32 = 3;

/// 5. A customer queue (SQS in moto, behind [`SqsProxy`]) that throttles the sends
///    of a seeded ~10 % of the events: most once (the SDK's own retry sends them
///    again within the attempt), every fourth of them `SDK_ATTEMPTS` times in a row
///    (the attempt fails and Herald's schedule retries the job). Exactly the rejected
///    sends are made again, none twice, and nothing reaches the queue twice. Needs
///    moto (`infra/with-peers.sh`).
pub async fn customer_queue_partial_failures(size: &Size) -> Result<Report, String> {
    // Eight pollers at most: the queue behind the proxy is one moto process, and the
    // point is which sends are retried, not how many moto takes at once.
    let size = &Size {
        pollers: size.pollers.min(8),
        ..*size
    };
    let (moto_endpoint, moto_addr) = sqs_proxy::moto().await?;
    let sdk = moto_config(&moto_endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let name = format!("reliability-{}", Uuid::new_v4().simple());
    // A long visibility timeout: reading the queue back sees each message once.
    let (moto_url, _dlq) = create_queues(&sdk, &name, 6, 600)
        .await
        .map_err(|e| format!("creating the customer queue in moto: {e}"))?;
    // At most 1,000 events: moto takes SendMessage at 25 to 35 calls a second here
    // (one Python process, 16 calls at once through the proxy), so 2,000 events
    // (about 2,280 calls) need 65 to 90 s of moto alone, around the drain limit of
    // 70 s: the check then measured moto's pace, not whether the pipeline drains.
    let n = size.events.min(1000);
    let prefix = "customer-sqs";
    let mut rng = fastrand::Rng::with_seed(CUSTOMER_QUEUE_SEED);
    let chosen: Vec<String> = (0..n)
        .filter(|_| rng.u32(..10) == 0)
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    let plan: HashMap<String, u32> = chosen
        .iter()
        .enumerate()
        .map(|(k, e)| (e.clone(), if k % 4 == 3 { SDK_ATTEMPTS } else { 1 }))
        .collect();
    let persistent: HashSet<String> = plan
        .iter()
        .filter(|(_, r)| **r == SDK_ATTEMPTS)
        .map(|(e, _)| e.clone())
        .collect();
    let planned: usize = plan.values().map(|r| *r as usize).sum();
    // A chosen event's first sends are rejected as planned; later ones (and
    // everything else) go through.
    let pending = Arc::new(std::sync::Mutex::new(plan.clone()));
    let proxy = SqsProxy::start(
        moto_addr,
        Arc::new(move |event: &str| {
            let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get_mut(event) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    true
                }
                _ => false,
            }
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    let through_proxy = moto_config(&proxy.endpoint())
        .await
        .map_err(|e| e.to_string())?;
    let pipeline =
        Arc::new(Pipeline::start_with_customer_sqs(size, SqsDeliverer::new(through_proxy)).await?);
    let s = store("customer-queue");
    // The integration keeps a real-looking queue URL, as a customer's would.
    let id = pipeline
        .add_sqs(
            &s,
            &format!("https://sqs.us-east-1.amazonaws.com/123456789012/{name}"),
        )
        .await?;
    let sent_at = send_events(&pipeline, &s, prefix, n).await?;
    let drained = wait_until(limit(size, n), || {
        pipeline.queue.is_empty()
            && proxy.sends().iter().filter(|x| x.stored).count()
                + pipeline.queue.dead_letters().len()
                >= n
    })
    .await;

    // Read the queue back from moto directly.
    let reader = SqsJobQueue::from_sdk(&sdk, moto_url);
    let mut in_queue: HashMap<String, usize> = HashMap::new();
    let mut empty = 0;
    while empty < 2 {
        let batch = reader
            .receive(10, Duration::ZERO)
            .await
            .map_err(|e| format!("reading the customer queue back: {e}"))?;
        if batch.is_empty() {
            empty += 1;
        }
        for m in batch {
            let body: serde_json::Value = serde_json::from_str(&m.body).unwrap_or_default();
            *in_queue
                .entry(body["id"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
    }
    let dead = pipeline.dead_letters();
    let id_s = id.to_string();
    let lost = sent_at
        .keys()
        .filter(|e| !in_queue.contains_key(*e) && !dead.contains(&((*e).clone(), id_s.clone())))
        .count();
    let duplicates: usize = in_queue.values().map(|c| c.saturating_sub(1)).sum();
    let unexpected = in_queue
        .keys()
        .filter(|e| !sent_at.contains_key(*e))
        .count();
    let sends = proxy.sends();
    let per_event = proxy.sends_per_event();
    let rejected: HashSet<&str> = sends
        .iter()
        .filter(|x| x.rejected)
        .map(|x| x.event_id.as_str())
        .collect();
    let resent: HashSet<&str> = per_event
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(e, _)| e.as_str())
        .collect();
    let rejections = proxy.counts.rejected.load(Ordering::Relaxed) as usize;
    let send_requests = proxy.counts.sends.load(Ordering::Relaxed) as usize;
    let retried = send_requests.saturating_sub(per_event.len());
    // First stored send per event: the queue's acknowledgement the budget is about.
    let mut stored_at: HashMap<&str, Instant> = HashMap::new();
    for x in sends.iter().filter(|x| x.stored) {
        let at = stored_at.entry(x.event_id.as_str()).or_insert(x.answered);
        *at = (*at).min(x.answered);
    }
    let budget = size.budget();
    let within_budget = sent_at
        .iter()
        .filter(|(e, sent)| {
            stored_at
                .get(e.as_str())
                .is_some_and(|at| at.saturating_duration_since(**sent) <= budget)
        })
        .count();
    // Herald's own attempts (the SDK's in-call retries are not attempts of Herald's).
    let mut attempts = Vec::new();
    loop {
        let page = Page {
            limit: herald_core::page::MAX_LIMIT,
            offset: attempts.len(),
        };
        let Listed {
            items: batch,
            counted: total,
            ..
        } = pipeline
            .components
            .log
            .integration_logs(&s, id, &Filter::default(), page)
            .await
            .map_err(|e| e.to_string())?;
        let done = batch.is_empty() || attempts.len() + batch.len() >= total;
        attempts.extend(batch);
        if done {
            break;
        }
    }
    let failed: Vec<_> = attempts.iter().filter(|a| !a.succeeded).collect();
    let by_herald = attempts.len().saturating_sub(n);
    let throttled_detail = "the queue is throttling or unavailable (RequestThrottled)";
    let report = Report {
        scenario: "customer queue (SQS) throttles some sends".into(),
        events: n,
        expected: n,
        lost,
        duplicates,
        within_budget,
        dead_lettered: pipeline.queue.dead_letters().len(),
        checks: vec![
            ("drained in time".into(), drained),
            (
                "every planned rejection was made".into(),
                rejections > 0 && rejections == planned,
            ),
            (
                "retried sends = rejected sends".into(),
                retried == rejections,
            ),
            (
                "exactly the rejected events were sent again".into(),
                resent.len() == rejected.len() && resent.iter().all(|e| rejected.contains(e)),
            ),
            (
                "Herald retried exactly the attempts whose sends all failed".into(),
                by_herald == failed.len()
                    && persistent
                        .iter()
                        .all(|e| failed.iter().any(|a| &a.event_id == e))
                    && failed.iter().all(|a| {
                        plan.contains_key(&a.event_id)
                            && a.error_detail.as_deref() == Some(throttled_detail)
                    }),
            ),
            ("0 duplicates in the queue".into(), duplicates == 0),
            (
                "nothing in the queue that was not sent".into(),
                unexpected == 0,
            ),
            (
                "moto was reachable through the proxy".into(),
                proxy.counts.upstream_errors.load(Ordering::Relaxed) == 0,
            ),
        ],
        notes: format!(
            "{send_requests} SendMessage calls for {} events ({} of them throttled once, {} {SDK_ATTEMPTS} times): {rejections} answered RequestThrottled, {retried} resent ({} by the SDK within an attempt, {by_herald} as Herald retries of failed attempts); {} messages read back from moto; {} proxy errors",
            n,
            plan.len() - persistent.len(),
            persistent.len(),
            retried.saturating_sub(by_herald),
            in_queue.values().sum::<usize>(),
            proxy.counts.upstream_errors.load(Ordering::Relaxed)
        ),
    };
    finish(pipeline).await;
    Ok(report)
}

/// 6. Poison in the internal queue beside valid jobs.
pub async fn poison_messages(size: &Size) -> Result<Report, String> {
    let receiver = Receiver::start(Arc::new(|_| Fault::Accept))
        .await
        .map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::start(size).await?);
    let s = store("poison");
    let id = pipeline.add_webhook(&s, receiver.url("/hook")).await?;
    let panics_before = panics();
    let job = |event_id: &str, integration: Uuid| {
        DeliveryJob::new(
            &s,
            integration,
            Event {
                id: event_id.to_owned(),
                kind: "order.paid".into(),
                occurred_at: Utc::now(),
                payload: serde_json::json!({"data": {"id": event_id}}).into(),
            },
            Utc::now(),
        )
    };
    let mut bodies = Vec::new();
    let mut sent_at = HashMap::new();
    let valid = size.events / 2;
    for i in 0..valid {
        let event_id = format!("valid-{i}");
        bodies.push(job(&event_id, id).to_body());
        sent_at.insert(event_id, Instant::now());
    }
    let mut tampered: serde_json::Value =
        serde_json::from_str(&job("tampered", id).to_body()).unwrap_or_default();
    tampered["job_id"] = serde_json::json!(Uuid::new_v4().to_string());
    let mut wrong_version: serde_json::Value =
        serde_json::from_str(&job("v9", id).to_body()).unwrap_or_default();
    wrong_version["v"] = serde_json::json!(9);
    let poison = vec![
        "not json at all".to_owned(),
        "{}".to_owned(),
        "[]".to_owned(),
        "null".to_owned(),
        "{\"v\":1}".to_owned(),
        // Near the queue's 256 KiB message limit (the queue refuses more).
        format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(250 * 1024)),
        tampered.to_string(),
        wrong_version.to_string(),
        job("unknown-integration", Uuid::now_v7()).to_body(),
        "\u{0}\u{1}\u{2}".to_owned(),
    ];
    let poison_count = poison.len();
    bodies.extend(poison);
    fastrand::shuffle(&mut bodies);
    for (n, chunk) in bodies.chunks(10).enumerate() {
        let jobs: Vec<OutgoingJob> = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| OutgoingJob {
                entry_id: format!("{n}-{i}"),
                body: body.clone(),
                delay: Duration::ZERO,
            })
            .collect();
        let failures = pipeline
            .queue
            .send_batch(&jobs)
            .await
            .map_err(|e| e.to_string())?;
        if !failures.is_empty() {
            return Err(format!("the embedded queue refused {failures:?}"));
        }
    }
    let expected = pairs(&sent_at, &[id]);
    let mut report = account(
        "poison and malformed jobs beside valid ones",
        size,
        &pipeline,
        &receiver,
        &expected,
        &sent_at,
        limit(size, expected.len()),
    )
    .await;
    report
        .checks
        .push(("valid jobs delivered once".into(), report.duplicates == 0));
    report
        .checks
        .push(("0 panics".into(), panics() == panics_before));
    report.notes = format!(
        "{poison_count} poison messages: acknowledged with an error log or dead-lettered, never delivered"
    );
    finish(pipeline).await;
    Ok(report)
}

/// 13. The same event posted concurrently many times: one set of jobs.
pub async fn idempotent_ingest(size: &Size) -> Result<Report, String> {
    let receiver = Receiver::start(Arc::new(|_| Fault::Accept))
        .await
        .map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::start(size).await?);
    let s = store("idempotent");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(pipeline.add_webhook(&s, receiver.url("/hook")).await?);
    }
    let posts = size.same_event_posts;
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..posts {
        let (p, s) = (pipeline.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            p.ingest
                .ingest(&[event("same-event")], Some(&s), |i| format!("/data/{i}"))
                .await
        }));
    }
    let mut jobs = 0;
    let mut duplicates_reported = 0;
    for t in tasks {
        for r in t.await.map_err(|e| e.to_string())? {
            match r.status {
                EventStatus::Accepted { jobs: n } => jobs += n,
                EventStatus::Duplicate => duplicates_reported += 1,
                other => return Err(format!("unexpected status {other:?}")),
            }
        }
    }
    let sent_at = HashMap::from([("same-event".to_owned(), start)]);
    let expected = pairs(&sent_at, &ids);
    let mut report = account(
        "same event posted concurrently",
        size,
        &pipeline,
        &receiver,
        &expected,
        &sent_at,
        limit(size, expected.len()),
    )
    .await;
    report.events = posts;
    report
        .checks
        .push(("exactly one set of jobs".into(), jobs == ids.len()));
    report.checks.push((
        "every other post reported duplicate".into(),
        duplicates_reported == posts - 1,
    ));
    report.checks.push((
        "each integration delivered once".into(),
        report.duplicates == 0,
    ));
    report.notes = format!("{posts} concurrent posts, {jobs} jobs queued");
    finish(pipeline).await;
    Ok(report)
}

/// 8. Health and auto-disable: one webhook answers 410 Gone, another always 500.
pub async fn health_and_auto_disable(size: &Size) -> Result<Report, String> {
    let threshold = 3;
    let size = Size {
        auto_disable_after: threshold,
        ..*size
    };
    let behaviour: Behaviour = Arc::new(|r| {
        if r.path == "/gone" {
            Fault::Gone
        } else if r.path == "/broken" {
            Fault::Unavailable
        } else {
            Fault::Accept
        }
    });
    let receiver = Receiver::start(behaviour)
        .await
        .map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::start(&size).await?);
    let s = store("health");
    let gone = pipeline.add_webhook(&s, receiver.url("/gone")).await?;
    let broken = pipeline.add_webhook(&s, receiver.url("/broken")).await?;
    let fine = pipeline.add_webhook(&s, receiver.url("/fine")).await?;
    // Events one at a time, so each job's outcome is known before the next is queued.
    let n = 6;
    let mut sent_at = HashMap::new();
    let mut jobs_per_event = Vec::new();
    for i in 0..n {
        let id = format!("health-{i}");
        let results = pipeline.send(&s, vec![event(&id)], 1).await;
        let jobs = match results.first().map(|r| &r.status) {
            Some(EventStatus::Accepted { jobs }) => *jobs,
            other => return Err(format!("event {id}: {other:?}")),
        };
        jobs_per_event.push(jobs);
        sent_at.insert(id.clone(), Instant::now());
        // Wait until this event's jobs are settled (delivered, discarded or dead).
        wait_until(limit(&size, 3), || pipeline.queue.is_empty()).await;
    }
    let integrations = pipeline.components.integrations.clone();
    let get = |id: Uuid| {
        let (integrations, s) = (integrations.clone(), s.clone());
        async move { integrations.get(&s, id).await.ok().flatten() }
    };
    let (g, b, f) = (get(gone).await, get(broken).await, get(fine).await);
    let expected: HashSet<Pair> = sent_at
        .keys()
        .map(|e| (e.clone(), fine.to_string()))
        .collect();
    let mut report = account(
        "health and auto-disable (410 Gone; always 503)",
        &size,
        &pipeline,
        &receiver,
        &expected,
        &sent_at,
        limit(&size, expected.len()),
    )
    .await;
    let disabled_gone = g.as_ref().is_some_and(|i| {
        !i.enabled
            && i.health
                .disabled_reason
                .as_deref()
                .is_some_and(|r| r.contains("gone"))
    });
    let disabled_broken = b
        .as_ref()
        .is_some_and(|i| !i.enabled && i.health.consecutive_failures == threshold);
    let fine_healthy = f
        .as_ref()
        .is_some_and(|i| i.enabled && i.health.status(i.enabled) == "healthy");
    report.checks.push((
        "410 disables at once, with the reason".into(),
        disabled_gone,
    ));
    report.checks.push((
        format!("{threshold} failed jobs in a row disable"),
        disabled_broken,
    ));
    report
        .checks
        .push(("the healthy sibling stays enabled".into(), fine_healthy));
    report.checks.push((
        "disabled integrations get no new jobs".into(),
        jobs_per_event.last() == Some(&1),
    ));
    report.notes = format!(
        "jobs per event: {jobs_per_event:?}; {} failed jobs dead-lettered",
        report.dead_lettered
    );
    finish(pipeline).await;
    Ok(report)
}

/// 4. ActiveMQ stopped and restarted in the middle of STOMP deliveries. Needs the
///    broker of `infra/activemq.sh` (`make reliability` starts it).
pub async fn broker_restart(size: &Size) -> Result<Report, String> {
    // The checkout whose ActiveMQ script and broker password this uses.
    let root = herald_testkit::checkout();
    let password = std::fs::read_to_string(format!("{root}/.run/activemq/password"))
        .map_err(|_| "ActiveMQ is not set up: run infra/activemq.sh start".to_owned())?;
    let password = password.trim().to_owned();
    // A slower schedule: the broker takes seconds to come back, and the point is
    // that nothing is lost while it does, not that the budget is short.
    let size = Size {
        retry_scale: size.retry_scale.max(0.05),
        ..*size
    };
    let pipeline = Arc::new(Pipeline::start(&size).await?);
    let s = store("broker");
    let destination = format!("/queue/herald.reliability.{}", Uuid::new_v4().simple());
    let address = "127.0.0.1:61613";
    let id = pipeline
        .add_stomp(&s, &format!("stomp://{address}"), &destination, &password)
        .await?;
    let n = size.events / 2;
    let (base_instant, base_wall) = (Instant::now(), chrono::Utc::now());
    let sender = {
        let (p, s) = (pipeline.clone(), s.clone());
        tokio::spawn(async move { send_events(&p, &s, "broker", n).await })
    };
    // Restart once about a third of the jobs have gone out.
    wait_until(Duration::from_secs(60), || {
        let queued = pipeline.queue.len();
        queued > 0 && queued < n * 2 / 3
    })
    .await;
    let in_flight = pipeline.queue.len();
    let restarted = tokio::task::spawn_blocking(move || {
        std::process::Command::new(format!("{root}/infra/activemq.sh"))
            .arg("restart")
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    let sent_at = sender.await.map_err(|e| e.to_string())??;
    let drained = wait_until(limit(&size, n) + Duration::from_secs(60), || {
        pipeline.queue.is_empty()
    })
    .await;
    let frames = herald_core::delivery::stomp::drain(
        address,
        "herald",
        &password,
        &destination,
        Duration::from_secs(5),
        n * 3,
    )
    .await?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    // The broker stamps each message when it takes it (`timestamp`, ms): that is the
    // acknowledgement the budget is about.
    let mut first_taken: HashMap<String, i64> = HashMap::new();
    for f in &frames {
        let body: serde_json::Value = serde_json::from_slice(&f.body).unwrap_or_default();
        if let Some(e) = body["id"].as_str() {
            *counts.entry(e.to_owned()).or_insert(0) += 1;
            let taken = f
                .headers
                .iter()
                .find(|(k, _)| k == "timestamp")
                .and_then(|(_, v)| v.parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            let at = first_taken.entry(e.to_owned()).or_insert(taken);
            *at = (*at).min(taken);
        }
    }
    let budget_ms = size.budget().as_millis() as i64;
    let within_budget = sent_at
        .iter()
        .filter(|(e, sent)| {
            let sent_ms = (base_wall
                + chrono::Duration::from_std(sent.saturating_duration_since(base_instant))
                    .unwrap_or_default())
            .timestamp_millis();
            first_taken
                .get(*e)
                .is_some_and(|taken| taken - sent_ms <= budget_ms)
        })
        .count();
    let dead = pipeline.dead_letters();
    let id_s = id.to_string();
    let lost = sent_at
        .keys()
        .filter(|e| !counts.contains_key(*e) && !dead.contains(&((*e).clone(), id_s.clone())))
        .count();
    let duplicates: usize = counts.values().map(|c| c.saturating_sub(1)).sum();
    let report = Report {
        scenario: "ActiveMQ restarted mid-stream (STOMP)".into(),
        events: n,
        expected: n,
        lost,
        duplicates,
        within_budget,
        dead_lettered: pipeline.queue.dead_letters().len(),
        checks: vec![
            ("the broker restarted".into(), restarted),
            ("drained in time".into(), drained),
            (
                "duplicates ≤ the in-flight window".into(),
                duplicates <= size.pollers * 10,
            ),
        ],
        notes: format!(
            "restarted with {in_flight} jobs queued; {} messages read back for {} events",
            frames.len(),
            counts.len()
        ),
    };
    finish(pipeline).await;
    Ok(report)
}

/// 12. One store's endpoints are hostile: its webhook is a TLS tarpit (accepts, never
///     answers the handshake) and its STOMP broker answers CONNECTED and then floods
///     RECEIPTs for other sends. Another store's healthy webhook takes the same
///     stream. Every hostile attempt ends by its deadline and lets go of its
///     connection; the healthy store gets everything within the budget.
pub async fn hostile_endpoints(size: &Size) -> Result<Report, String> {
    use herald_testkit::hostile::{Behaviour as Peer, Hostile};
    let tarpit = Hostile::start(Peer::Tarpit).await;
    let flood = Hostile::start(Peer::StompReceiptFlood).await;
    let receiver = Receiver::start(Arc::new(|_| Fault::Accept))
        .await
        .map_err(|e| e.to_string())?;
    let pipeline = Arc::new(Pipeline::start(size).await?);
    let (bad, good) = (store("hostile"), store("healthy"));
    let bad_ids = vec![
        pipeline
            .add_webhook(&bad, format!("https://{}/hook", tarpit.addr))
            .await?,
        pipeline
            .add_stomp(
                &bad,
                &format!("stomp://{}", flood.addr),
                "/queue/orders",
                "a-reliability-broker-password",
            )
            .await?,
    ];
    let good_id = pipeline.add_webhook(&good, receiver.url("/hook")).await?;
    let n = (size.events / 10).max(10);
    let (p, s) = (pipeline.clone(), bad.clone());
    let hostile_sender = tokio::spawn(async move { send_events(&p, &s, "hostile", n).await });
    let healthy_sent = send_events(&pipeline, &good, "healthy", n).await?;
    let hostile_sent = hostile_sender.await.map_err(|e| e.to_string())??;
    let mut expected = pairs(&healthy_sent, &[good_id]);
    expected.extend(pairs(&hostile_sent, &bad_ids));
    let mut sent_at = healthy_sent.clone();
    sent_at.extend(hostile_sent);
    let mut report = account(
        "hostile endpoints beside a healthy store",
        size,
        &pipeline,
        &receiver,
        &expected,
        &sent_at,
        limit(size, expected.len()) + crate::STOMP_ATTEMPT * 2,
    )
    .await;
    // Every hostile job ended in the DLQ; what is left open at the peers is what
    // Herald leaked (its attempts are over).
    let dead = pipeline.dead_letters();
    let hostile_dead = expected
        .iter()
        .filter(|(_, i)| bad_ids.iter().any(|b| b.to_string() == *i))
        .filter(|p| dead.contains(*p))
        .count();
    let closed_tarpit = tarpit.all_closed_within(Duration::from_secs(10)).await;
    let closed_flood = flood.all_closed_within(Duration::from_secs(10)).await;
    let leaked = tarpit.open_now() + flood.open_now();
    let counts = receiver.counts();
    let budget = size.budget();
    let first: HashMap<String, Instant> = receiver
        .accepted()
        .into_iter()
        .filter(|a| a.integration_id == good_id.to_string())
        .fold(HashMap::new(), |mut m, a| {
            let at = m.entry(a.event_id.clone()).or_insert(a.answered);
            *at = (*at).min(a.answered);
            m
        });
    let mut latency: Vec<Duration> = healthy_sent
        .iter()
        .filter_map(|(e, sent)| first.get(e).map(|at| at.saturating_duration_since(*sent)))
        .collect();
    latency.sort_unstable();
    let healthy_in_budget = latency.len() == n && latency.iter().all(|l| *l <= budget);
    let p99 = latency
        .get(latency.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    report.checks.push((
        "the healthy store got every event within the budget".into(),
        healthy_in_budget && counts.len() == n,
    ));
    report
        .checks
        .push(("every hostile job in the DLQ".into(), hostile_dead == 2 * n));
    report.checks.push((
        "0 connections left open at the hostile peers".into(),
        closed_tarpit && closed_flood && leaked == 0,
    ));
    report.notes = format!(
        "TLS tarpit: {} connections accepted; receipt flood: {} connections; left open after the last attempt: {leaked}; healthy store p99 from ingest {} ms",
        tarpit.accepted.load(Ordering::SeqCst),
        flood.accepted.load(Ordering::SeqCst),
        p99.as_millis()
    );
    finish(pipeline).await;
    Ok(report)
}

async fn finish(pipeline: Arc<Pipeline>) {
    if let Ok(p) = Arc::try_unwrap(pipeline) {
        p.stop().await;
    }
}

/// Every scenario, in the table's order.
pub async fn all(size: &Size) -> Vec<Report> {
    selected(size, |_| true).await
}

/// A scenario's run, not started yet.
type Run<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Report, String>> + 'a>>;

/// The scenarios whose name `keep` accepts, in the table's order.
pub async fn selected(size: &Size, keep: impl Fn(&str) -> bool) -> Vec<Report> {
    let mut out = Vec::new();
    let runs: Vec<(&str, Run<'_>)> = vec![
        ("flaky receiver", Box::pin(flaky_receiver(size))),
        ("receiver down", Box::pin(receiver_down(size, false))),
        (
            "receiver down past budget",
            Box::pin(receiver_down(size, true)),
        ),
        (
            "dead-lettered, then replayed",
            Box::pin(dead_lettered_then_replayed(size)),
        ),
        ("slow target", Box::pin(slow_target_isolation(size))),
        ("broker restart", Box::pin(broker_restart(size))),
        (
            "partial queue failures",
            Box::pin(internal_queue_partial_failures(size)),
        ),
        (
            "customer queue partial failures",
            Box::pin(customer_queue_partial_failures(size)),
        ),
        ("poison", Box::pin(poison_messages(size))),
        ("health", Box::pin(health_and_auto_disable(size))),
        ("idempotent ingest", Box::pin(idempotent_ingest(size))),
        ("hostile endpoints", Box::pin(hostile_endpoints(size))),
        (
            "dead endpoint, embedded queue",
            Box::pin(dead_endpoint_in_flight(size, QueueKind::Embedded)),
        ),
        (
            "dead endpoint, SQS on moto",
            Box::pin(dead_endpoint_in_flight(size, QueueKind::Moto)),
        ),
    ];
    for (name, run) in runs {
        if !keep(name) {
            continue;
        }
        let run = run.await;
        out.push(run.unwrap_or_else(|e| Report {
            scenario: name.to_owned(),
            events: 0,
            expected: 0,
            lost: 0,
            duplicates: 0,
            within_budget: 0,
            dead_lettered: 0,
            checks: vec![(format!("ran: {e}"), false)],
            notes: String::new(),
        }));
    }
    out
}

/// Where the dead-endpoint scenario's internal queue lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// The embedded queue (SQS's semantics, in process): large runs.
    Embedded,
    /// SQS in moto, through the SQS adapter. Moto's ReceiveMessage scans the whole
    /// queue dozens of times per call (about 3 s at 3,000 messages here), so runs on
    /// it stay small.
    Moto,
}

/// The internal queue of the dead-endpoint scenario, and what it can be asked.
enum Probe {
    Embedded(Arc<herald_core::memory::MemoryQueue>),
    Moto {
        sqs: aws_sdk_sqs::Client,
        url: String,
        dlq: SqsJobQueue,
        dlq_url: String,
    },
}

impl Probe {
    /// Messages waiting (visible or delayed) and in flight (received, not yet
    /// deleted: SQS's `ApproximateNumberOfMessagesNotVisible`).
    async fn depth(&self) -> Result<(usize, usize), String> {
        match self {
            Self::Embedded(q) => {
                let in_flight = q.in_flight();
                Ok((q.len().saturating_sub(in_flight), in_flight))
            }
            Self::Moto { sqs, url, .. } => {
                let [visible, in_flight, delayed] = depth(sqs, url).await?;
                Ok((visible + delayed, in_flight))
            }
        }
    }

    /// Messages in the DLQ, visible or not.
    async fn dead_count(&self) -> Result<usize, String> {
        match self {
            Self::Embedded(q) => Ok(q.dead_letters().len()),
            Self::Moto { sqs, dlq_url, .. } => {
                let [visible, in_flight, _] = depth(sqs, dlq_url).await?;
                Ok(visible + in_flight)
            }
        }
    }

    /// The bodies in the DLQ, read back (bounded by `most`).
    async fn dead_bodies(&self, most: usize) -> Result<Vec<String>, String> {
        match self {
            Self::Embedded(q) => Ok(q.dead_letters()),
            Self::Moto { dlq, .. } => {
                let mut bodies = Vec::new();
                let mut empty = 0;
                while empty < 2 && bodies.len() < most {
                    let batch = dlq
                        .receive(10, Duration::ZERO)
                        .await
                        .map_err(|e| format!("reading the DLQ back: {e}"))?;
                    if batch.is_empty() {
                        empty += 1;
                    }
                    bodies.extend(batch.into_iter().map(|m| m.body));
                }
                Ok(bodies)
            }
        }
    }
}

/// A queue attribute's count (0 if absent).
fn attribute(
    out: &aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput,
    name: aws_sdk_sqs::types::QueueAttributeName,
) -> usize {
    out.attributes()
        .and_then(|a| a.get(&name))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The queue's visible, in-flight and delayed messages.
async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<[usize; 3], String> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| format!("GetQueueAttributes: {e}"))?;
    Ok([
        attribute(&out, A::ApproximateNumberOfMessages),
        attribute(&out, A::ApproximateNumberOfMessagesNotVisible),
        attribute(&out, A::ApproximateNumberOfMessagesDelayed),
    ])
}

/// 9. Every job of a store goes to an endpoint that is down (a closed loopback port:
///    connection refused). While the jobs wait for their retries, the internal
///    queue's in-flight count (`ApproximateNumberOfMessagesNotVisible`) stays within
///    what the fan-out pollers hold at once (batch size 10 × pollers), not the number
///    of waiting jobs; every job reaches the DLQ after its last attempt, with each
///    attempt in the log. `kind` picks the queue; [`QueueKind::Moto`] needs moto
///    (`infra/with-peers.sh`).
pub async fn dead_endpoint_in_flight(size: &Size, kind: QueueKind) -> Result<Report, String> {
    use herald_core::attempt::JobStatus;
    use herald_core::cache::IntegrationCache;
    use herald_core::delivery::webhook::WebhookDeliverer;
    use herald_core::delivery::TargetDeliverer;
    use herald_core::fanout::Fanout;
    use herald_core::ingest::{Ingest, IngestSettings};
    use herald_core::memory::{
        MemoryDeliveryLog, MemoryIdempotency, MemoryIntegrationStore, MemoryQueue,
    };
    use herald_core::model::{Integration, Target, WebhookConfig};
    use herald_core::net::guard::{AddressGuard, Cidr};
    use herald_core::ports::{DeliveryLog, IntegrationStore};
    use herald_core::retry::{RetryPolicy, MAX_RECEIVES};

    let (n, pollers) = match kind {
        QueueKind::Embedded => (size.dead_endpoint_jobs, size.pollers),
        // Few pollers: one moto process serves them all.
        QueueKind::Moto => (size.dead_endpoint_jobs_on_moto, size.pollers.min(4)),
    };
    let (queue, source, probe): (Arc<dyn JobQueue>, Arc<dyn JobSource>, Probe) = match kind {
        QueueKind::Embedded => {
            let q = Arc::new(MemoryQueue::new(Duration::from_secs(60), MAX_RECEIVES));
            (q.clone(), q.clone(), Probe::Embedded(q))
        }
        QueueKind::Moto => {
            let (endpoint, _) = sqs_proxy::moto().await?;
            let sdk = moto_config(&endpoint).await.map_err(|e| e.to_string())?;
            let name = format!("reliability-dead-{}", Uuid::new_v4().simple());
            let (url, dlq_url) = create_queues(&sdk, &name, MAX_RECEIVES, 60)
                .await
                .map_err(|e| format!("creating the queues in moto: {e}"))?;
            let q = Arc::new(
                SqsJobQueue::from_sdk(&sdk, url.clone()).with_dead_letter_queue(dlq_url.clone()),
            );
            let probe = Probe::Moto {
                sqs: aws_sdk_sqs::Client::new(&sdk),
                url,
                dlq: SqsJobQueue::from_sdk(&sdk, dlq_url.clone()),
                dlq_url,
            };
            (q.clone(), q, probe)
        }
    };

    // A port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let s = store("dead-endpoint");
    let now = Utc::now();
    let secret = crate::webhook_secret();
    crate::remember_secret(&secret);
    let integration = Integration {
        id: Uuid::now_v7(),
        store_id: s.clone(),
        name: "dead".into(),
        description: String::new(),
        enabled: true,
        observes: vec!["order.paid".into()],
        target: Target::Webhook(WebhookConfig {
            url: format!("http://{closed}/hook"),
            secret_key: Some(herald_core::model::Secret::new(secret)),
            retiring: None,
        }),
        created_at: now,
        updated_at: now,
        version: 1,
        health: Default::default(),
        delivery: Default::default(),
    };
    let integrations = Arc::new(MemoryIntegrationStore::new());
    integrations
        .insert(&integration, 10)
        .await
        .map_err(|e| e.to_string())?;
    let cache = Arc::new(IntegrationCache::new(integrations, Duration::from_secs(5)));
    let log = Arc::new(MemoryDeliveryLog::new(n * 8));
    let retry = RetryPolicy::scaled(size.retry_scale);
    let attempts = retry.max_attempts() as usize;
    let guard = AddressGuard::allowing(vec![Cidr::parse("127.0.0.0/8").ok_or("a loopback CIDR")?]);
    let webhook = WebhookDeliverer::new(guard, size.webhook_timeout)?;
    let fanout = Arc::new(
        Fanout::new(
            cache.clone(),
            Arc::new(TargetDeliverer::new(Arc::new(webhook))),
            log.clone(),
            queue.clone(),
            retry,
        )
        .with_auto_disable(0),
    );
    let ingest = Ingest::new(
        cache,
        Arc::new(MemoryIdempotency::new()),
        queue,
        IngestSettings::default(),
    );

    // The dev server's pollers (Lambda's event source mapping in AWS) and a watch on
    // the queue run while the events are sent.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let probe = Arc::new(probe);
    let most = Arc::new([
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ]);
    let watcher = tokio::spawn({
        let (probe, most, stopped) = (probe.clone(), most.clone(), stopped.clone());
        async move {
            while !*stopped.borrow() {
                if let Ok((waiting, in_flight)) = probe.depth().await {
                    most[0].fetch_max(in_flight, Ordering::SeqCst);
                    most[1].fetch_max(waiting, Ordering::SeqCst);
                    most[2].fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let consumers: Vec<_> = (0..pollers)
        .map(|_| {
            tokio::spawn(herald_core::fanout::poll(
                source.clone(),
                fanout.clone(),
                size.webhook_timeout + Duration::from_secs(15),
                stopped.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    let ids: Vec<String> = (0..n).map(|i| format!("dead-{i}")).collect();
    let mut not_accepted = 0;
    for chunk in ids.chunks(herald_core::ingest::MAX_EVENTS_PER_REQUEST) {
        let events: Vec<serde_json::Value> = chunk.iter().map(|id| event(id)).collect();
        let results = ingest
            .ingest(&events, Some(&s), |i| format!("/data/{i}"))
            .await;
        not_accepted += results
            .iter()
            .filter(|r| !matches!(r.status, EventStatus::Accepted { jobs: 1 }))
            .count();
    }

    // Until every job is in the DLQ and the queue is empty (bounded). Each job is
    // received, attempted and sent again (or dead-lettered) once an attempt: moto takes
    // about 30 such messages a second here (its receives wait up to a second for a
    // delayed message to show, its sends slow with the queue's depth), the embedded
    // queue thousands.
    let per_message = match kind {
        QueueKind::Embedded => Duration::from_millis(20) / attempts as u32,
        QueueKind::Moto => Duration::from_millis(60),
    };
    let limit = size.budget() * 2 + per_message * (n * attempts) as u32 + Duration::from_secs(30);
    let mut drained = false;
    while started.elapsed() < limit {
        let (waiting, in_flight) = probe.depth().await?;
        if waiting + in_flight == 0 && probe.dead_count().await? >= n {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    let _ = stop.send(true);
    for c in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(30), c).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), watcher).await;

    // The DLQ read back: each job once, after its last attempt.
    let bodies = probe.dead_bodies(n * 2).await?;
    let mut dead: HashMap<String, u32> = HashMap::new();
    for body in &bodies {
        if let Ok(job) = DeliveryJob::parse(body) {
            dead.insert(job.event.id, job.attempt);
        }
    }
    let dead_after_last = dead.values().filter(|a| **a as usize == attempts).count();

    // Every attempt logged: attempts 1 to 6 of each job, once each.
    let mut logged: HashMap<String, Vec<u32>> = HashMap::new();
    let mut offset = 0;
    loop {
        let page = Page {
            limit: herald_core::page::MAX_LIMIT,
            offset,
        };
        let Listed {
            items: batch,
            counted: total,
            ..
        } = log
            .integration_logs(&s, integration.id, &Filter::default(), page)
            .await
            .map_err(|e| e.to_string())?;
        offset += batch.len();
        let done = batch.is_empty() || offset >= total;
        for a in batch {
            logged.entry(a.event_id).or_default().push(a.attempt);
        }
        if done {
            break;
        }
    }
    let every_attempt: Vec<u32> = (1..=attempts as u32).collect();
    let fully_logged = ids
        .iter()
        .filter(|id| {
            logged.get(*id).is_some_and(|a| {
                // At least once: an attempt whose DLQ move or re-send timed out at
                // the client (but went through) is made again; the duplicates column
                // counts those.
                let mut a = a.clone();
                a.sort_unstable();
                a.dedup();
                a == every_attempt
            })
        })
        .count();
    let mut failed_jobs = 0;
    let mut offset = 0;
    loop {
        let page = Page {
            limit: herald_core::page::MAX_LIMIT,
            offset,
        };
        let Listed {
            items: batch,
            counted: total,
            ..
        } = log
            .integration_jobs(&s, integration.id, &Filter::default(), page)
            .await
            .map_err(|e| e.to_string())?;
        offset += batch.len();
        let done = batch.is_empty() || offset >= total;
        failed_jobs += batch
            .iter()
            .filter(|j| j.status == JobStatus::Failed && j.attempts as usize == attempts)
            .count();
        if done {
            break;
        }
    }

    let bound = pollers * 10;
    let most_in_flight = most[0].load(Ordering::SeqCst);
    let most_waiting = most[1].load(Ordering::SeqCst);
    let samples = most[2].load(Ordering::SeqCst);
    let lost = ids.iter().filter(|id| !dead.contains_key(*id)).count();
    let place = match kind {
        QueueKind::Embedded => "embedded queue",
        QueueKind::Moto => "SQS on moto",
    };
    Ok(Report {
        scenario: format!("endpoint down for every job ({place}): retries wait delayed, not in flight"),
        events: n,
        expected: n,
        lost,
        duplicates: bodies.len().saturating_sub(dead.len()),
        within_budget: 0,
        dead_lettered: dead.len(),
        checks: vec![
            ("every event accepted".into(), not_accepted == 0),
            ("drained in time".into(), drained),
            (
                format!("in flight ≤ {bound} (batch 10 × {pollers} pollers)"),
                samples > 0 && most_in_flight <= bound,
            ),
            ("more jobs waited than fit in flight".into(), most_waiting > bound),
            (
                format!("every job in the DLQ after attempt {attempts}"),
                dead_after_last == n,
            ),
            (
                format!("attempts 1 to {attempts} of every job logged"),
                fully_logged == n && failed_jobs == n,
            ),
        ],
        notes: format!(
            "{n} jobs × {attempts} attempts to a closed port in {:.0} s; in flight at most {most_in_flight} (bound {bound}) while up to {most_waiting} waited, over {samples} samples of the queue; {} DLQ messages",
            took.as_secs_f64(),
            bodies.len()
        ),
    })
}

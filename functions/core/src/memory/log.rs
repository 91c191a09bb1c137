//! The delivery log in memory, capped.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::lock;
use crate::attempt::{Attempt, JobRecord, LogEntry};
use crate::error::Result;
use crate::filter::{Filter, Listed, READ_BUDGET};
use crate::model::StoreId;
use crate::page::Page;
use crate::ports::DeliveryLog;

/// Attempts and jobs in memory; past a cap the oldest attempts, and the jobs updated
/// longest ago, are dropped, so a long-running dev server does not grow without bound.
pub struct MemoryDeliveryLog {
    pub(super) state: Mutex<Kept>,
    /// The archive: each kept job's body as first queued, dropped with its job.
    archive: Mutex<HashMap<Uuid, String>>,
    cap: usize,
}

/// What the log keeps: the attempts in the order they were recorded, and the jobs,
/// indexed by when each was last updated so that the ones updated longest ago go
/// first, one for each one over the cap, as records come in (no pass over them all).
#[derive(Default)]
pub(super) struct Kept {
    pub(super) attempts: VecDeque<Attempt>,
    pub(super) jobs: HashMap<Uuid, JobRecord>,
    by_update: BTreeSet<(DateTime<Utc>, Uuid)>,
}

impl Kept {
    /// Keeps `job`, in the place of its earlier record if any.
    fn keep(&mut self, job: JobRecord) {
        let key = (job.updated_at, job.job_id);
        if let Some(earlier) = self.jobs.insert(job.job_id, job) {
            self.by_update.remove(&(earlier.updated_at, earlier.job_id));
        }
        self.by_update.insert(key);
    }

    /// Drops the job updated longest ago: its id.
    fn drop_oldest_job(&mut self) -> Option<Uuid> {
        let (_, id) = self.by_update.pop_first()?;
        self.jobs.remove(&id);
        Some(id)
    }
}

impl Default for MemoryDeliveryLog {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl MemoryDeliveryLog {
    /// Keeps at most `cap` attempts, and at most `cap` jobs (the ones updated longest
    /// ago go first).
    pub fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(Kept::default()),
            archive: Mutex::new(HashMap::new()),
            cap,
        }
    }

    fn attempts_where(
        &self,
        keep: impl Fn(&Attempt) -> bool,
        filter: &Filter,
        page: Page,
    ) -> Listed<Attempt> {
        let state = lock(&self.state);
        let mut items: Vec<Attempt> = state
            .attempts
            .iter()
            .filter(|a| keep(a) && filter.in_range(a.created_at))
            .cloned()
            .collect();
        items.sort_unstable_by_key(|a| std::cmp::Reverse((a.created_at, a.id)));
        listed(
            items,
            |a| a.created_at,
            |a| filter.keeps_attempt(a),
            filter,
            page,
        )
    }
}

/// Attempts (or jobs) a filtered listing looks at, at most: as many as the
/// [`READ_BUDGET`]'s items of the DynamoDB log hold, so that both adapters answer
/// alike.
const SCAN_BUDGET: usize = READ_BUDGET * 100;

/// The page of `candidates` (newest first, in the filter's time range) that `keeps`,
/// counted as far as the DynamoDB log counts ([`Page::count_cap`]); a filtered listing
/// looks at [`SCAN_BUDGET`] candidates at most, and says where it stopped.
fn listed<T>(
    candidates: Vec<T>,
    time: impl Fn(&T) -> DateTime<Utc>,
    keeps: impl Fn(&T) -> bool,
    filter: &Filter,
    page: Page,
) -> Listed<T> {
    let cap = page.count_cap();
    let mut kept = Vec::new();
    let mut reached = None;
    for (seen, candidate) in candidates.into_iter().enumerate() {
        if kept.len() >= cap {
            break;
        }
        if seen >= SCAN_BUDGET && !filter.is_empty() {
            // Every candidate newer than this one was looked at.
            let at = time(&candidate) + Duration::nanoseconds(1);
            kept.retain(|k| time(k) >= at);
            reached = Some(at);
            break;
        }
        if keeps(&candidate) {
            kept.push(candidate);
        }
    }
    Listed {
        counted: kept.len(),
        items: page.slice(kept),
        reached,
    }
}

#[async_trait]
impl DeliveryLog for MemoryDeliveryLog {
    async fn record(&self, entries: &[LogEntry]) -> Result<()> {
        let mut state = lock(&self.state);
        state
            .attempts
            .extend(entries.iter().map(|e| e.attempt.clone()));
        while state.attempts.len() > self.cap {
            state.attempts.pop_front();
        }
        let mut archive = lock(&self.archive);
        for entry in entries {
            state.keep(entry.job());
            if let Some(body) = &entry.archive {
                archive.insert(entry.attempt.job_id, body.clone());
            }
        }
        while state.jobs.len() > self.cap {
            let Some(id) = state.drop_oldest_job() else {
                break;
            };
            archive.remove(&id);
        }
        Ok(())
    }

    async fn store_logs(
        &self,
        store: &StoreId,
        filter: &Filter,
        page: Page,
    ) -> Result<Listed<Attempt>> {
        Ok(self.attempts_where(|a| a.store_id == store.as_str(), filter, page))
    }

    async fn integration_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        filter: &Filter,
        page: Page,
    ) -> Result<Listed<Attempt>> {
        Ok(self.attempts_where(
            |a| a.store_id == store.as_str() && a.integration_id == integration,
            filter,
            page,
        ))
    }

    async fn integration_jobs(
        &self,
        store: &StoreId,
        integration: Uuid,
        filter: &Filter,
        page: Page,
    ) -> Result<Listed<JobRecord>> {
        let state = lock(&self.state);
        let mut jobs: Vec<JobRecord> = state
            .jobs
            .values()
            .filter(|j| j.store_id == store.as_str() && j.integration_id == integration)
            .filter(|j| filter.in_range(j.enqueued_at))
            .cloned()
            .collect();
        jobs.sort_by(|a, b| {
            b.enqueued_at
                .cmp(&a.enqueued_at)
                .then(b.job_id.cmp(&a.job_id))
        });
        Ok(listed(
            jobs,
            |j| j.enqueued_at,
            |j| filter.keeps_job(j),
            filter,
            page,
        ))
    }

    async fn archived(
        &self,
        store: &StoreId,
        integration: Uuid,
        jobs: &[Uuid],
    ) -> Result<Vec<String>> {
        let state = lock(&self.state);
        let archive = lock(&self.archive);
        Ok(jobs
            .iter()
            .filter(|id| {
                state.jobs.get(id).is_some_and(|j| {
                    j.store_id == store.as_str() && j.integration_id == integration
                })
            })
            .filter_map(|id| archive.get(id).cloned())
            .collect())
    }

    async fn job_logs(
        &self,
        store: &StoreId,
        integration: Uuid,
        job: Uuid,
        page: Page,
    ) -> Result<(Vec<Attempt>, usize)> {
        let all = self.attempts_where(
            |a| a.store_id == store.as_str() && a.integration_id == integration && a.job_id == job,
            &Filter::default(),
            page,
        );
        Ok((all.items, all.counted))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::attempt::JobStatus;
    use crate::filter::Subject;

    const I: Uuid = Uuid::from_u128(7);

    fn store() -> StoreId {
        StoreId::parse("s").expect("store")
    }

    /// Job `job`'s attempt made `ms` after the epoch, the job queued at `queued` ms.
    fn entry(job: u128, ms: i64, queued: i64, kind: &str, status: JobStatus) -> LogEntry {
        LogEntry {
            attempt: Attempt {
                id: Uuid::from_u128(u128::try_from(ms).expect("ms") << 64 | job),
                store_id: "s".into(),
                integration_id: I,
                job_id: Uuid::from_u128(job),
                event_id: format!("e{job}"),
                event_type: kind.into(),
                attempt: 1,
                succeeded: status == JobStatus::Delivered,
                status_code: None,
                body: String::new(),
                error_detail: None,
                processing_time: 0.1,
                created_at: Utc.timestamp_millis_opt(ms).unwrap(),
            },
            status,
            enqueued_at: Utc.timestamp_millis_opt(queued).unwrap(),
            replay_of: None,
            archive: None,
        }
    }

    fn logs(raw: &str) -> Filter {
        Filter::parse(raw, Subject::Logs).expect("filter")
    }

    #[tokio::test]
    async fn a_filtered_log_listing_keeps_the_attempts_every_part_keeps_newest_first() {
        let log = MemoryDeliveryLog::default();
        use JobStatus::{Delivered as Ok_, Retrying as No};
        log.record(&[
            entry(1, 1_000, 1_000, "order.paid", No),
            entry(2, 2_000, 2_000, "order.paid", Ok_),
            entry(3, 3_000, 3_000, "order.created", No),
            entry(4, 4_000, 4_000, "order.paid", No),
            entry(5, 5_000, 5_000, "order.paid", No),
        ])
        .await
        .expect("record");
        let jobs = |l: &Listed<Attempt>| {
            l.items
                .iter()
                .map(|a| a.job_id.as_u128())
                .collect::<Vec<_>>()
        };

        let failed = log
            .store_logs(&store(), &logs("eq(succeeded,false)"), Page::default())
            .await
            .expect("list");
        assert_eq!(
            (jobs(&failed), failed.counted, failed.reached),
            (vec![5, 4, 3, 1], 4, None)
        );

        let paid_failures_in_range = log
            .integration_logs(
                &store(),
                I,
                &logs("eq(succeeded,false):eq(triggered_by,order.paid):ge(created_at,1970-01-01T00:00:01Z):lt(created_at,1970-01-01T00:00:05Z)"),
                Page::default(),
            )
            .await
            .expect("list");
        assert_eq!(jobs(&paid_failures_in_range), vec![4, 1]);

        let after = log
            .store_logs(
                &store(),
                &logs("gt(created_at,1970-01-01T00:00:04Z)"),
                Page::default(),
            )
            .await
            .expect("list");
        assert_eq!(jobs(&after), vec![5]);
        let through = log
            .store_logs(
                &store(),
                &logs("le(created_at,1970-01-01T00:00:02Z)"),
                Page::default(),
            )
            .await
            .expect("list");
        assert_eq!(jobs(&through), vec![2, 1]);
    }

    #[tokio::test]
    async fn a_jobs_listing_filters_on_each_jobs_state_after_its_latest_attempt() {
        let log = MemoryDeliveryLog::default();
        // Job 1 failed and was then delivered; job 2 retried and then failed.
        log.record(&[
            entry(1, 1_000, 900, "order.paid", JobStatus::Failed),
            entry(2, 2_000, 1_900, "order.paid", JobStatus::Retrying),
            entry(3, 2_500, 2_400, "order.created", JobStatus::Failed),
        ])
        .await
        .expect("record");
        log.record(&[
            entry(1, 3_000, 900, "order.paid", JobStatus::Delivered),
            entry(2, 4_000, 1_900, "order.paid", JobStatus::Failed),
        ])
        .await
        .expect("record");
        let list = |raw: &'static str| {
            let log = &log;
            async move {
                let f = Filter::parse(raw, Subject::Jobs).expect("filter");
                let l = log
                    .integration_jobs(&store(), I, &f, Page::default())
                    .await
                    .expect("jobs");
                l.items
                    .iter()
                    .map(|j| j.job_id.as_u128())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(list("eq(status,failed)").await, vec![3, 2]);
        assert_eq!(
            list("eq(status,failed):eq(triggered_by,order.paid)").await,
            vec![2]
        );
        // A job's created_at is when it was queued.
        assert_eq!(
            list("lt(created_at,1970-01-01T00:00:01.900Z)").await,
            vec![1]
        );
        assert_eq!(
            list("ge(created_at,1970-01-01T00:00:01.900Z)").await,
            vec![3, 2]
        );
    }

    #[tokio::test]
    async fn a_filtered_listing_stops_at_its_budget_and_says_where_to_carry_on() {
        let log = MemoryDeliveryLog::default();
        // GIVEN one failure older than more successes than the budget looks at
        let mut entries = vec![entry(0, 1, 1, "order.paid", JobStatus::Retrying)];
        let n = i64::try_from(SCAN_BUDGET).expect("budget") + 10;
        entries.extend((1..=n).map(|ms| {
            entry(
                ms as u128,
                10 + ms,
                10 + ms,
                "order.paid",
                JobStatus::Delivered,
            )
        }));
        log.record(&entries).await.expect("record");
        // WHEN the failures are listed THEN none is found before the budget ends, and
        // the scan says it reached the newest attempt it did not look at
        let failures = logs("eq(succeeded,false)");
        let first = log
            .store_logs(&store(), &failures, Page::default())
            .await
            .expect("list");
        let unseen = Utc
            .timestamp_millis_opt(10 + n - i64::try_from(SCAN_BUDGET).expect("budget"))
            .unwrap();
        assert_eq!(
            (first.items.len(), first.counted, first.reached),
            (0, 0, Some(unseen + Duration::nanoseconds(1)))
        );
        // AND carrying on before that time finds the failure
        let next = log
            .store_logs(
                &store(),
                &failures.before(first.reached.expect("reached")),
                Page::default(),
            )
            .await
            .expect("list");
        assert_eq!(
            (
                next.items
                    .iter()
                    .map(|a| a.job_id.as_u128())
                    .collect::<Vec<_>>(),
                next.counted,
                next.reached
            ),
            (vec![0], 1, None)
        );
        // AND an unfiltered listing has no budget
        let all = log
            .store_logs(&store(), &Filter::default(), Page::default())
            .await
            .expect("list");
        assert_eq!((all.counted, all.reached), (200, None));
    }
}

//! The retry schedule: pure functions of the attempt number, the time since the job
//! was queued, the receiver's `Retry-After` and a random jitter.
//!
//! Attempt 1 is immediate; the next five follow after about 20 s, 1 min, 3 min, 6 min
//! and 8 min (each ±20 %), so most blips are retried within a minute and the sixth and
//! last attempt starts within 25 minutes of the first, leaving room for the attempts'
//! own duration inside the 30-minute delivery promise. After the last attempt the
//! fan-out moves the job to the DLQ.
//!
//! An integration's `delivery.retry_window_minutes` stretches the schedule to its
//! window ([`RetryPolicy::stretched_to`]): the same first five waits, then 15 min,
//! 30 min, 1 h, 2 h and 4 h waits (4 h repeated) while they fit before the window's
//! last five minutes, the time left going to the last wait; the job is dead-lettered
//! after the last attempt, near the window's end. Without it (30 minutes), the
//! schedule is the default above, unchanged.
//!
//! The attempt number travels in the job ([`crate::job::DeliveryJob::attempt`]): each
//! retry is a new message, delayed by its backoff, so the queue's receive count is
//! not the attempt number and its `maxReceiveCount` is not the schedule: it is
//! [`MAX_RECEIVES`], the receives one message (one attempt) may take.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// When to retry, as data.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay after attempt 1, 2, ...; its length + 1 is the number of attempts.
    pub delays: Vec<Duration>,
    /// No retry is scheduled later than this after the job was queued.
    pub last_attempt_by: Duration,
    /// Relative jitter (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            delays: [20, 60, 180, 360, 480].map(Duration::from_secs).to_vec(),
            last_attempt_by: Duration::from_secs(25 * 60),
            jitter: 0.2,
        }
    }
}

/// The delivery promise: every job is delivered or dead-lettered within this.
pub const DELIVERY_BUDGET: Duration = Duration::from_secs(30 * 60);

/// The internal queue's `maxReceiveCount`: how often one message may be received
/// before the queue moves it to the DLQ. A message carries one attempt and is
/// normally received once; it comes back when a receive did not finish (a crashed,
/// throttled or timed-out invocation, a record cut at the invocation's end, its
/// store's integrations unreadable) or could not send the job on. Those receives
/// repeat the attempt rather than use one up, and this is their slack: AWS advises
/// at least 5 for a Lambda event source
/// (<https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>).
pub const MAX_RECEIVES: u32 = 10;

/// The waits a longer window adds after the default five, in order; the last one
/// repeats.
const LONGER_WAITS: [Duration; 5] = [
    Duration::from_secs(15 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(4 * 3600),
];

/// Most waits a stretched schedule has (a day's window needs 13).
const MAX_WAITS: usize = 32;

impl RetryPolicy {
    /// This schedule stretched to a retry `window` (an integration's
    /// `delivery.retry_window_minutes`): itself when the window is the delivery
    /// budget or shorter; else its waits, then `LONGER_WAITS` while they fit, with
    /// the last attempt due by the window less the budget's last five minutes (the
    /// time left is added to the last wait). Durations follow this schedule's scale
    /// (a [`RetryPolicy::scaled`] one stretches scaled).
    pub fn stretched_to(&self, window: Duration) -> Cow<'_, Self> {
        if window <= DELIVERY_BUDGET {
            return Cow::Borrowed(self);
        }
        let default = Self::default();
        let scale = self.last_attempt_by.as_secs_f64() / default.last_attempt_by.as_secs_f64();
        let last_attempt_by = window
            .saturating_sub(DELIVERY_BUDGET - default.last_attempt_by)
            .mul_f64(scale);
        let mut delays = self.delays.clone();
        let mut total: Duration = delays.iter().sum();
        let longer = LONGER_WAITS
            .iter()
            .chain(std::iter::repeat(&LONGER_WAITS[LONGER_WAITS.len() - 1]));
        for wait in longer.map(|w| w.mul_f64(scale)) {
            if wait.is_zero() || delays.len() >= MAX_WAITS || total + wait > last_attempt_by {
                break;
            }
            delays.push(wait);
            total += wait;
        }
        let left = last_attempt_by.saturating_sub(total);
        match delays.last_mut() {
            Some(last) if left < *last => *last += left,
            _ => delays.push(left),
        }
        Cow::Owned(Self {
            delays,
            last_attempt_by,
            jitter: self.jitter,
        })
    }

    /// The default schedule with every duration multiplied by `factor` (tests and
    /// fault drills compress time this way; production uses 1).
    pub fn scaled(factor: f64) -> Self {
        let d = Self::default();
        Self {
            delays: d.delays.iter().map(|x| x.mul_f64(factor)).collect(),
            last_attempt_by: d.last_attempt_by.mul_f64(factor),
            jitter: d.jitter,
        }
    }

    /// Total attempts, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay before the next attempt after attempt `attempt` (1-based) failed, or
    /// `None` when it was the last. `elapsed` is the time since the job was queued;
    /// `retry_after` is the receiver's request; `random` is uniform in [0, 1).
    ///
    /// `Retry-After` can lengthen a delay, never shorten it, and never past the
    /// budget: no retry is scheduled after `last_attempt_by`, and what is left of the
    /// budget is shared among the attempts that are left.
    pub fn next_delay(
        &self,
        attempt: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        random: f64,
    ) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let base = *self.delays.get(index)?;
        let factor = 1.0 + self.jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        let jittered = base.mul_f64(factor);
        let wanted = retry_after.map_or(jittered, |r| r.max(jittered));
        // Spread what is left of the budget over the attempts that are left, so a long
        // Retry-After does not bunch the remaining attempts at the deadline.
        let retries_left = self.max_attempts().saturating_sub(attempt).max(1);
        let share = self.last_attempt_by.saturating_sub(elapsed) / retries_left;
        Some(wanted.min(share))
    }
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    let when = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    (when - now).to_std().ok().or(Some(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: f64 = 0.0;
    const MAX: f64 = 0.999_999;

    #[test]
    fn the_first_retry_comes_within_a_minute() {
        let p = RetryPolicy::default();
        let d = p.next_delay(1, Duration::ZERO, None, MAX).expect("retry");
        assert!(d <= Duration::from_secs(60), "{d:?}");
        assert!(d >= Duration::from_secs(16), "{d:?}");
    }

    #[test]
    fn there_are_six_attempts_and_none_after_the_last() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 6);
        assert!(p.next_delay(5, Duration::ZERO, None, 0.5).is_some());
        assert_eq!(p.next_delay(6, Duration::ZERO, None, 0.5), None);
        assert_eq!(p.next_delay(0, Duration::ZERO, None, 0.5), None);
    }

    #[test]
    fn the_last_attempt_starts_within_the_budget_whatever_the_jitter_and_retry_after() {
        let p = RetryPolicy::default();
        // Each attempt may itself take up to 35 s (webhook timeout plus overhead).
        let attempt_time = Duration::from_secs(35);
        for random in [MIN, 0.5, MAX] {
            for retry_after in [None, Some(Duration::from_secs(3600))] {
                let mut elapsed = Duration::ZERO;
                let mut attempt = 1;
                while let Some(d) =
                    p.next_delay(attempt, elapsed + attempt_time, retry_after, random)
                {
                    elapsed += attempt_time + d;
                    attempt += 1;
                }
                assert_eq!(attempt, 6);
                assert!(elapsed <= p.last_attempt_by + attempt_time, "{elapsed:?}");
                assert!(elapsed + attempt_time < DELIVERY_BUDGET, "{elapsed:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_delays_by_twenty_percent() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.next_delay(2, Duration::ZERO, None, 0.5),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            p.next_delay(2, Duration::ZERO, None, MIN),
            Some(Duration::from_secs(48))
        );
        let high = p.next_delay(2, Duration::ZERO, None, MAX).expect("retry");
        assert!(
            high > Duration::from_secs(71) && high <= Duration::from_secs(72),
            "{high:?}"
        );
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_a_delay() {
        let p = RetryPolicy::default();
        let long = p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(120)), 0.5);
        assert_eq!(long, Some(Duration::from_secs(120)));
        let short = p.next_delay(1, Duration::ZERO, Some(Duration::from_secs(1)), 0.5);
        assert_eq!(short, Some(Duration::from_secs(20)));
    }

    #[test]
    fn no_retry_is_scheduled_past_the_budget() {
        let p = RetryPolicy::default();
        // Attempt 4 of 6 at minute 23: two retries share the two minutes left.
        let d = p.next_delay(
            4,
            Duration::from_secs(23 * 60),
            Some(Duration::from_secs(3600)),
            0.5,
        );
        assert_eq!(d, Some(Duration::from_secs(60)));
        let d = p.next_delay(4, Duration::from_secs(40 * 60), None, 0.5);
        assert_eq!(d, Some(Duration::ZERO));
    }

    #[test]
    fn a_scaled_policy_compresses_every_duration() {
        let p = RetryPolicy::scaled(0.001);
        assert_eq!(
            p.next_delay(1, Duration::ZERO, None, 0.5),
            Some(Duration::from_millis(20))
        );
        assert_eq!(p.max_attempts(), 6);
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn a_thirty_minute_window_is_the_default_schedule_itself() {
        let p = RetryPolicy::default();
        assert!(matches!(p.stretched_to(minutes(30)), Cow::Borrowed(_)));
        assert_eq!(*p.stretched_to(minutes(30)), RetryPolicy::default());
        assert_eq!(*p.stretched_to(minutes(5)), RetryPolicy::default());
    }

    #[test]
    fn a_longer_window_keeps_the_first_retries_and_stretches_its_waits_to_the_window() {
        let p = RetryPolicy::default();
        let secs = |p: &RetryPolicy| p.delays.iter().map(|d| d.as_secs()).collect::<Vec<_>>();
        let hour = p.stretched_to(minutes(60));
        assert_eq!(secs(&hour), [20, 60, 180, 360, 480, 900, 1300]);
        assert_eq!(hour.last_attempt_by, minutes(55));
        let two = p.stretched_to(minutes(120));
        assert_eq!(secs(&two), [20, 60, 180, 360, 480, 900, 1800, 3100]);
        let day = p.stretched_to(minutes(1440));
        assert_eq!(
            secs(&day),
            [20, 60, 180, 360, 480, 900, 1800, 3600, 7200, 14400, 14400, 14400, 28300]
        );
        assert_eq!(day.last_attempt_by, minutes(1435));
        assert_eq!(day.max_attempts(), 14);
    }

    #[test]
    fn the_last_attempt_of_a_stretched_schedule_starts_within_its_window_whatever_the_jitter() {
        let attempt_time = Duration::from_secs(35);
        for window in [31, 45, 60, 120, 600, 1440] {
            let p = RetryPolicy::default()
                .stretched_to(minutes(window))
                .into_owned();
            for random in [MIN, 0.5, MAX] {
                for retry_after in [None, Some(Duration::from_secs(24 * 3600))] {
                    let mut elapsed = Duration::ZERO;
                    let mut attempt = 1;
                    while let Some(d) =
                        p.next_delay(attempt, elapsed + attempt_time, retry_after, random)
                    {
                        elapsed += attempt_time + d;
                        attempt += 1;
                    }
                    assert_eq!(attempt, p.max_attempts());
                    assert!(
                        elapsed + attempt_time < minutes(window),
                        "{window}: {elapsed:?}"
                    );
                }
            }
            // Without jitter or failures taking time, the last attempt is due five
            // minutes before the window ends.
            let mut nominal = p.clone();
            nominal.jitter = 0.0;
            let total: Duration = nominal.delays.iter().sum();
            assert_eq!(total, minutes(window - 5), "{window}");
        }
    }

    #[test]
    fn a_scaled_schedule_stretches_at_its_own_scale() {
        let p = RetryPolicy::scaled(0.001)
            .stretched_to(minutes(60))
            .into_owned();
        let mut expected = RetryPolicy::default()
            .stretched_to(minutes(60))
            .into_owned();
        expected.delays = expected.delays.iter().map(|d| d.mul_f64(0.001)).collect();
        expected.last_attempt_by = expected.last_attempt_by.mul_f64(0.001);
        assert_eq!(p.max_attempts(), expected.max_attempts());
        for (got, want) in p.delays.iter().zip(&expected.delays) {
            assert!(
                got.abs_diff(*want) < Duration::from_micros(10),
                "{got:?} {want:?}"
            );
        }
        assert!(p.last_attempt_by.abs_diff(expected.last_attempt_by) < Duration::from_micros(10));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T08:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 5 ", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 08:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}

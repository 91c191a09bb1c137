//! Filters on the delivery log's listings, in Elastic Path's syntax:
//! `eq(succeeded,false):ge(created_at,2026-01-01T00:00:00Z)`, each part an operator
//! on a field and a value, the parts joined by `:` (and all of them must hold).
//!
//! | field | listing | operators | value |
//! |---|---|---|---|
//! | `succeeded` | logs | `eq` | `true` or `false` |
//! | `status` | jobs | `eq` | a job status ([`JobStatus`]) |
//! | `triggered_by` | logs, jobs | `eq` | an event key of the catalog |
//! | `created_at` | logs, jobs | `ge`, `gt`, `le`, `lt` | an RFC 3339 time |
//!
//! A job's `created_at` is when it was queued. Times become key conditions in the
//! DynamoDB log; the other fields are matched on what it reads, within a read budget
//! ([`READ_BUDGET`]): a listing that spends it answers what it found, and where its
//! scan stopped ([`Listed::reached`]), so that the next request carries on from there.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::attempt::{Attempt, JobRecord, JobStatus};

/// The most items (a DynamoDB item holds a page of up to a hundred attempts) one
/// filtered listing reads; past it, the listing answers what it found so far.
pub const READ_BUDGET: usize = 200;

/// Which listing a filter is for: the fields each allows differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Attempts (`/logs`).
    Logs,
    /// Jobs (`/jobs`).
    Jobs,
}

/// What a listing keeps: every condition set must hold. The default keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `eq(succeeded,…)`: attempts that were (or were not) delivered.
    pub succeeded: Option<bool>,
    /// `eq(status,…)`: jobs in this state.
    pub status: Option<JobStatus>,
    /// `eq(triggered_by,…)`: of this event key.
    pub triggered_by: Option<String>,
    /// Created at or after this time (`ge`; `gt` is kept as the next nanosecond).
    pub since: Option<DateTime<Utc>>,
    /// Created before this time (`lt`; `le` is kept as the next nanosecond).
    pub until: Option<DateTime<Utc>>,
}

/// A filter that does not parse: the part at fault, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct FilterError {
    /// What is wrong, naming the part.
    pub detail: String,
}

fn error(part: &str, why: impl std::fmt::Display) -> FilterError {
    FilterError {
        detail: format!("`{part}`: {why}"),
    }
}

impl Filter {
    /// Parses a `filter` parameter for `subject`'s listing.
    pub fn parse(raw: &str, subject: Subject) -> Result<Self, FilterError> {
        let mut filter = Filter::default();
        let mut rest = raw;
        loop {
            // A part ends at its `)`: values hold no `)` but may hold `:` (times).
            let end = rest.find(')').map_or(rest.len(), |i| i + 1);
            let (part, after) = rest.split_at(end);
            filter.add(part, subject)?;
            match after.strip_prefix(':') {
                Some(next) => rest = next,
                None if after.is_empty() => return Ok(filter),
                None => return Err(error(after, "parts are joined by `:`")),
            }
        }
    }

    /// Adds one part, `op(field,value)`.
    fn add(&mut self, part: &str, subject: Subject) -> Result<(), FilterError> {
        let shape = "expected `operator(field,value)`";
        let (op, args) = part
            .strip_suffix(')')
            .and_then(|p| p.split_once('('))
            .ok_or_else(|| error(part, shape))?;
        let (field, value) = args.split_once(',').ok_or_else(|| error(part, shape))?;
        let equality = |set: bool| -> Result<(), FilterError> {
            if op != "eq" {
                return Err(error(part, format!("`{field}` takes only `eq`")));
            }
            if set {
                return Err(error(part, format!("`{field}` is already filtered")));
            }
            Ok(())
        };
        match (field, subject) {
            ("succeeded", Subject::Logs) => {
                equality(self.succeeded.is_some())?;
                self.succeeded = Some(match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(error(part, "`succeeded` is `true` or `false`")),
                });
            }
            ("status", Subject::Jobs) => {
                equality(self.status.is_some())?;
                self.status = Some(JobStatus::parse(value).ok_or_else(|| {
                    error(
                        part,
                        "`status` is one of delivered, retrying, failed, discarded",
                    )
                })?);
            }
            ("triggered_by", _) => {
                equality(self.triggered_by.is_some())?;
                if !crate::catalog::is_observable(value) {
                    return Err(error(part, "not an event key"));
                }
                self.triggered_by = Some(value.to_owned());
            }
            ("created_at", _) => {
                let t = DateTime::parse_from_rfc3339(value)
                    .map_err(|_| error(part, "`created_at` takes an RFC 3339 time"))?
                    .with_timezone(&Utc);
                let next = t + Duration::nanoseconds(1);
                match op {
                    "ge" => self.since = self.since.max(Some(t)),
                    "gt" => self.since = self.since.max(Some(next)),
                    "lt" => self.until = Some(self.until.map_or(t, |u| u.min(t))),
                    "le" => self.until = Some(self.until.map_or(next, |u| u.min(next))),
                    _ => return Err(error(part, "`created_at` takes `ge`, `gt`, `le` or `lt`")),
                }
            }
            _ => {
                let fields = match subject {
                    Subject::Logs => "succeeded, triggered_by, created_at",
                    Subject::Jobs => "status, triggered_by, created_at",
                };
                return Err(error(
                    part,
                    format!("unknown field `{field}`: this listing filters on {fields}"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the filter keeps everything.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether `t` is in the filter's time range.
    pub fn in_range(&self, t: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    /// Whether an attempt is kept.
    pub fn keeps_attempt(&self, a: &Attempt) -> bool {
        self.succeeded.is_none_or(|s| a.succeeded == s)
            && self
                .triggered_by
                .as_ref()
                .is_none_or(|k| &a.event_type == k)
            && self.in_range(a.created_at)
    }

    /// Whether a job (as it stands after its latest attempt) is kept.
    pub fn keeps_job(&self, j: &JobRecord) -> bool {
        self.status.is_none_or(|s| j.status == s)
            && self
                .triggered_by
                .as_ref()
                .is_none_or(|k| &j.event_type == k)
            && self.in_range(j.enqueued_at)
    }

    /// The filter that carries on a scan that stopped at `reached`: the same, and
    /// created before it.
    pub fn before(&self, reached: DateTime<Utc>) -> Self {
        Filter {
            until: Some(self.until.map_or(reached, |u| u.min(reached))),
            ..self.clone()
        }
    }

    /// The filter in Elastic Path's syntax (`None` when empty), as links carry it:
    /// its characters need no escaping in a query.
    pub fn to_param(&self) -> Option<String> {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let parts: Vec<String> = [
            self.succeeded.map(|s| format!("eq(succeeded,{s})")),
            self.status.map(|s| format!("eq(status,{})", s.as_str())),
            self.triggered_by
                .as_ref()
                .map(|k| format!("eq(triggered_by,{k})")),
            self.since
                .as_ref()
                .map(|t| format!("ge(created_at,{})", time(t))),
            self.until
                .as_ref()
                .map(|t| format!("lt(created_at,{})", time(t))),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(":"))
    }
}

/// A page of a listing: its items, how many were counted (up to the page's
/// [`count_cap`](crate::page::Page::count_cap)), and, when a filtered listing spent
/// its [`READ_BUDGET`] first, the time its scan reached: the items counted are the
/// filter's newer than that; older ones were not looked at.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// How many the listing counted.
    pub counted: usize,
    /// Where a scan cut short by the budget stopped: everything at or after it was
    /// looked at, nothing before it.
    pub reached: Option<DateTime<Utc>>,
}

impl<T> Default for Listed<T> {
    /// Nothing found.
    fn default() -> Self {
        Self {
            items: Vec::new(),
            counted: 0,
            reached: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn logs(raw: &str) -> Result<Filter, FilterError> {
        Filter::parse(raw, Subject::Logs)
    }

    fn jobs(raw: &str) -> Result<Filter, FilterError> {
        Filter::parse(raw, Subject::Jobs)
    }

    #[test]
    fn each_equality_is_read_into_its_field() {
        assert_eq!(
            logs("eq(succeeded,false)").map(|f| f.succeeded),
            Ok(Some(false))
        );
        assert_eq!(
            logs("eq(succeeded,true)").map(|f| f.succeeded),
            Ok(Some(true))
        );
        assert_eq!(
            jobs("eq(status,failed)").map(|f| f.status),
            Ok(Some(JobStatus::Failed))
        );
        assert_eq!(
            logs("eq(triggered_by,order.paid)").map(|f| f.triggered_by),
            Ok(Some("order.paid".to_owned()))
        );
    }

    #[test]
    fn each_time_operator_bounds_the_range_from_its_side() {
        let t = at("2026-03-01T10:00:00Z");
        let next = t + Duration::nanoseconds(1);
        let range = |raw: &str| logs(raw).map(|f| (f.since, f.until));
        assert_eq!(
            range("ge(created_at,2026-03-01T10:00:00Z)"),
            Ok((Some(t), None))
        );
        assert_eq!(
            range("gt(created_at,2026-03-01T10:00:00Z)"),
            Ok((Some(next), None))
        );
        assert_eq!(
            range("lt(created_at,2026-03-01T10:00:00Z)"),
            Ok((None, Some(t)))
        );
        assert_eq!(
            range("le(created_at,2026-03-01T12:00:00+02:00)"),
            Ok((None, Some(next)))
        );
    }

    #[test]
    fn parts_joined_by_colons_all_hold_and_the_tighter_bound_wins() {
        let f = logs(
            "eq(succeeded,false):eq(triggered_by,order.paid):ge(created_at,2026-03-01T00:00:00Z):lt(created_at,2026-03-02T00:00:00Z):lt(created_at,2026-03-01T12:00:00Z)",
        )
        .expect("parses");
        assert_eq!(
            f,
            Filter {
                succeeded: Some(false),
                status: None,
                triggered_by: Some("order.paid".to_owned()),
                since: Some(at("2026-03-01T00:00:00Z")),
                until: Some(at("2026-03-01T12:00:00Z")),
            }
        );
        assert_eq!(
            jobs("eq(status,retrying):eq(triggered_by,order.created)")
                .map(|f| (f.status, f.triggered_by)),
            Ok((Some(JobStatus::Retrying), Some("order.created".to_owned())))
        );
    }

    #[test]
    fn every_bad_part_is_refused_naming_it() {
        for (subject, raw, detail) in [
            (Subject::Logs, "eq(colour,red)", "`eq(colour,red)`: unknown field `colour`: this listing filters on succeeded, triggered_by, created_at"),
            (Subject::Logs, "eq(status,failed)", "`eq(status,failed)`: unknown field `status`: this listing filters on succeeded, triggered_by, created_at"),
            (Subject::Jobs, "eq(succeeded,true)", "`eq(succeeded,true)`: unknown field `succeeded`: this listing filters on status, triggered_by, created_at"),
            (Subject::Logs, "like(succeeded,true)", "`like(succeeded,true)`: `succeeded` takes only `eq`"),
            (Subject::Logs, "ne(created_at,2026-03-01T00:00:00Z)", "`ne(created_at,2026-03-01T00:00:00Z)`: `created_at` takes `ge`, `gt`, `le` or `lt`"),
            (Subject::Logs, "eq(succeeded,maybe)", "`eq(succeeded,maybe)`: `succeeded` is `true` or `false`"),
            (Subject::Jobs, "eq(status,lost)", "`eq(status,lost)`: `status` is one of delivered, retrying, failed, discarded"),
            (Subject::Logs, "eq(triggered_by,order.eaten)", "`eq(triggered_by,order.eaten)`: not an event key"),
            (Subject::Logs, "ge(created_at,yesterday)", "`ge(created_at,yesterday)`: `created_at` takes an RFC 3339 time"),
            (Subject::Logs, "eq(succeeded,true):eq(succeeded,false)", "`eq(succeeded,false)`: `succeeded` is already filtered"),
            (Subject::Logs, "eq(succeeded)", "`eq(succeeded)`: expected `operator(field,value)`"),
            (Subject::Logs, "succeeded=false", "`succeeded=false`: expected `operator(field,value)`"),
            (Subject::Logs, "", "``: expected `operator(field,value)`"),
            (Subject::Logs, "eq(succeeded,true):", "``: expected `operator(field,value)`"),
            (Subject::Logs, "eq(succeeded,true)x", "`x`: parts are joined by `:`"),
        ] {
            assert_eq!(
                Filter::parse(raw, subject),
                Err(FilterError {
                    detail: detail.to_owned()
                }),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_filter_written_back_parses_to_itself() {
        let f = logs("eq(succeeded,false):gt(created_at,2026-03-01T00:00:00.5Z):le(created_at,2026-03-02T00:00:00Z)")
            .expect("parses");
        let param = f.to_param().expect("not empty");
        assert_eq!(
            param,
            "eq(succeeded,false):ge(created_at,2026-03-01T00:00:00.500000001Z):lt(created_at,2026-03-02T00:00:00.000000001Z)"
        );
        assert_eq!(logs(&param), Ok(f));
        assert_eq!(Filter::default().to_param(), None);
    }

    #[test]
    fn carrying_on_before_a_time_keeps_the_earlier_end() {
        let f = logs("lt(created_at,2026-03-02T00:00:00Z)").expect("parses");
        assert_eq!(
            f.before(at("2026-03-01T00:00:00Z")).until,
            Some(at("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            f.before(at("2026-03-03T00:00:00Z")).until,
            Some(at("2026-03-02T00:00:00Z"))
        );
    }
}

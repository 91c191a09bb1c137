//! CloudWatch Embedded Metric Format (EMF) records for deliveries: one JSON log line
//! per (target type, outcome) per batch, which CloudWatch turns into metrics without
//! any API call from the function.
//! See <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.

use std::collections::BTreeMap;

use crate::json::json_string;

/// The metrics namespace.
pub const NAMESPACE: &str = "Herald";

/// Metric: delivery attempts (count), per target type and outcome.
pub const ATTEMPTS: &str = "Attempts";

/// Metric: milliseconds from the event's time to the target's acknowledgement, one
/// value per delivered attempt.
pub const DELIVERY_LAG: &str = "DeliveryLag";

/// Dimension: the stack the records come from (`HERALD_STACK_NAME`), so that the
/// stacks of one account and region stay apart.
pub const STACK: &str = "Stack";

/// Dimension: the target type (`webhook`, `aws_sqs`, `stomp`, `unknown`).
pub const TARGET_TYPE: &str = "TargetType";

/// Dimension: the attempt's outcome (`delivered`, `retrying`, `failed`, `discarded`).
pub const OUTCOME: &str = "Outcome";

/// Every metric the records carry: what dashboards and alarms may name.
pub const METRICS: [&str; 2] = [ATTEMPTS, DELIVERY_LAG];

/// The one dimension set of every record, in order ([`STACK`] left out only by a
/// process that knows no stack: the dev server, the bench).
pub const DIMENSIONS: [&str; 3] = [STACK, TARGET_TYPE, OUTCOME];

/// One delivery attempt, as the metrics see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `webhook`, `aws_sqs`, `stomp` (or `unknown` when the integration was gone).
    pub target: &'static str,
    /// `delivered`, `retrying`, `failed`, `discarded`.
    pub outcome: &'static str,
    /// Milliseconds from the event's time to the target's acknowledgement (delivered only).
    pub lag_ms: Option<f64>,
}

/// The EMF records of a batch, one JSON line each: `Attempts` (count) for every
/// (target, outcome), and `DeliveryLag` (milliseconds, one value per delivery) where
/// something was delivered, each with the dimension `Stack` when `stack` is given.
/// Written straight as text (no JSON tree is built).
pub fn lines(stack: Option<&str>, samples: &[Sample], timestamp_ms: i64) -> Vec<u8> {
    use std::io::Write;
    let mut groups: BTreeMap<(&str, &str), (usize, Vec<f64>)> = BTreeMap::new();
    for s in samples {
        let group = groups.entry((s.target, s.outcome)).or_default();
        group.0 += 1;
        group.1.extend(s.lag_ms);
    }
    let mut out = Vec::with_capacity(320 * groups.len() + 24 * samples.len());
    for ((target, outcome), (attempts, lags)) in groups {
        out.push(b'{');
        if let Some(stack) = stack {
            let _ = write!(out, "\"{STACK}\":");
            json_string(&mut out, stack);
            out.push(b',');
        }
        let _ = write!(out, "\"{TARGET_TYPE}\":");
        json_string(&mut out, target);
        let _ = write!(out, ",\"{OUTCOME}\":");
        json_string(&mut out, outcome);
        let _ = write!(out, ",\"{ATTEMPTS}\":{attempts}");
        if !lags.is_empty() {
            let _ = write!(out, ",\"{DELIVERY_LAG}\":[");
            for (k, lag) in lags.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut out, lag);
            }
            out.push(b']');
        }
        let _ = write!(
            out,
            ",\"_aws\":{{\"Timestamp\":{timestamp_ms},\"CloudWatchMetrics\":[{{\"Namespace\":\"{NAMESPACE}\",\"Dimensions\":[["
        );
        if stack.is_some() {
            let _ = write!(out, "\"{STACK}\",");
        }
        let _ = write!(
            out,
            "\"{TARGET_TYPE}\",\"{OUTCOME}\"]],\"Metrics\":[{{\"Name\":\"{ATTEMPTS}\",\"Unit\":\"Count\"}}"
        );
        if !lags.is_empty() {
            let _ = write!(
                out,
                ",{{\"Name\":\"{DELIVERY_LAG}\",\"Unit\":\"Milliseconds\"}}"
            );
        }
        out.extend_from_slice(b"]}]}}\n");
    }
    out
}

/// Where EMF records go: stdout in Lambda, where the runtime sends them to CloudWatch,
/// or another writer (the bench's pipe).
#[derive(Clone)]
pub enum MetricsOut {
    /// The process's stdout.
    Stdout,
    /// Another writer, shared.
    Writer(std::sync::Arc<std::sync::Mutex<dyn std::io::Write + Send>>),
}

/// Writes a batch's EMF records ([`lines`]) to `out` in one write.
///
/// They go to stdout as they are, without a `level` key: Lambda counts such a line as
/// INFO, so the template never sets the functions' `ApplicationLogLevel` above INFO
/// (see <https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>).
pub fn emit(out: &MetricsOut, stack: Option<&str>, samples: &[Sample], timestamp_ms: i64) {
    use std::io::Write;
    let lines = lines(stack, samples, timestamp_ms);
    let _ = match out {
        MetricsOut::Stdout => std::io::stdout().lock().write_all(&lines),
        MetricsOut::Writer(w) => w
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&lines),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A batch's records, read back from their lines.
    fn records(stack: Option<&str>, samples: &[Sample], timestamp_ms: i64) -> Vec<Value> {
        let text = String::from_utf8(lines(stack, samples, timestamp_ms)).expect("UTF-8");
        assert!(text.is_empty() || text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    #[test]
    fn a_batchs_records_are_one_json_line_each_written_at_once() {
        let samples = [
            Sample {
                target: "webhook",
                outcome: "delivered",
                lag_ms: Some(5.0),
            },
            Sample {
                target: "stomp",
                outcome: "retrying",
                lag_ms: None,
            },
        ];
        let r = records(Some("herald"), &samples, 1_795_330_800_000);
        let out = crate::testkit::Captured::default();
        let writer = std::sync::Arc::new(std::sync::Mutex::new(out.clone()));
        emit(
            &MetricsOut::Writer(writer),
            Some("herald"),
            &samples,
            1_795_330_800_000,
        );
        assert_eq!(out.writes(), 1, "one write for the batch");
        let text = out.text();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines, r);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn records_follow_the_embedded_metric_format() {
        let samples = [
            Sample {
                target: "webhook",
                outcome: "delivered",
                lag_ms: Some(120.0),
            },
            Sample {
                target: "webhook",
                outcome: "delivered",
                lag_ms: Some(80.5),
            },
            Sample {
                target: "webhook",
                outcome: "retrying",
                lag_ms: None,
            },
            Sample {
                target: "stomp",
                outcome: "delivered",
                lag_ms: Some(30.0),
            },
        ];
        let r = records(Some("herald-prod"), &samples, 1_795_330_800_000);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[1],
            json!({
                "Stack": "herald-prod", "TargetType": "webhook", "Outcome": "delivered", "Attempts": 2, "DeliveryLag": [120.0, 80.5],
                "_aws": {"Timestamp": 1_795_330_800_000_i64, "CloudWatchMetrics": [{
                    "Namespace": "Herald", "Dimensions": [["Stack", "TargetType", "Outcome"]],
                    "Metrics": [{"Name": "Attempts", "Unit": "Count"}, {"Name": "DeliveryLag", "Unit": "Milliseconds"}]}]}
            })
        );
        let retrying = &r[2];
        assert_eq!(retrying["Outcome"], "retrying");
        assert!(retrying.get("DeliveryLag").is_none());
        assert_eq!(
            retrying["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "Attempts", "Unit": "Count"}])
        );
        // Every metric named in the directive has a value of that name at the root.
        for record in &r {
            for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .expect("metrics")
            {
                let name = m["Name"].as_str().expect("name");
                assert!(!record[name].is_null(), "{name} missing in {record}");
            }
            for d in record["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
                .as_array()
                .expect("dims")
            {
                assert!(record[d.as_str().expect("dim")].is_string());
            }
        }
    }

    #[test]
    fn an_empty_batch_has_no_records() {
        assert!(records(Some("herald"), &[], 0).is_empty());
    }

    #[test]
    fn every_record_names_its_stack_so_that_two_stacks_of_an_account_stay_apart() {
        let samples = [
            Sample {
                target: "aws_sqs",
                outcome: "failed",
                lag_ms: None,
            },
            Sample {
                target: "webhook",
                outcome: "delivered",
                lag_ms: Some(1.0),
            },
        ];
        for record in records(Some("shop \"eu\""), &samples, 0) {
            assert_eq!(record["Stack"], "shop \"eu\"");
            assert_eq!(
                record["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                json!([DIMENSIONS])
            );
        }
    }

    #[test]
    fn a_process_that_knows_no_stack_leaves_the_dimension_out() {
        let samples = [Sample {
            target: "stomp",
            outcome: "retrying",
            lag_ms: None,
        }];
        let r = records(None, &samples, 0);
        assert!(r[0].get(STACK).is_none());
        assert_eq!(
            r[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[TARGET_TYPE, OUTCOME]])
        );
    }
}

//! CloudWatch Embedded Metric Format (EMF) records for deliveries: one JSON log line
//! per (target type, outcome) per batch, which CloudWatch turns into metrics without
//! any API call from the function.
//! See <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.

use std::collections::BTreeMap;

use crate::delivery::envelope::json_string;

/// The metrics namespace.
pub const NAMESPACE: &str = "Herald";

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
/// something was delivered. Written straight as text (no JSON tree is built).
pub fn lines(samples: &[Sample], timestamp_ms: i64) -> Vec<u8> {
    use std::io::Write;
    let mut groups: BTreeMap<(&str, &str), (usize, Vec<f64>)> = BTreeMap::new();
    for s in samples {
        let group = groups.entry((s.target, s.outcome)).or_default();
        group.0 += 1;
        group.1.extend(s.lag_ms);
    }
    let mut out = Vec::with_capacity(320 * groups.len() + 24 * samples.len());
    for ((target, outcome), (attempts, lags)) in groups {
        out.extend_from_slice(b"{\"TargetType\":");
        json_string(&mut out, target);
        out.extend_from_slice(b",\"Outcome\":");
        json_string(&mut out, outcome);
        let _ = write!(out, ",\"Attempts\":{attempts}");
        if !lags.is_empty() {
            out.extend_from_slice(b",\"DeliveryLag\":[");
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
            ",\"_aws\":{{\"Timestamp\":{timestamp_ms},\"CloudWatchMetrics\":[{{\"Namespace\":\"{NAMESPACE}\",\"Dimensions\":[[\"TargetType\",\"Outcome\"]],\"Metrics\":[{{\"Name\":\"Attempts\",\"Unit\":\"Count\"}}"
        );
        if !lags.is_empty() {
            out.extend_from_slice(b",{\"Name\":\"DeliveryLag\",\"Unit\":\"Milliseconds\"}");
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
pub fn emit(out: &MetricsOut, samples: &[Sample], timestamp_ms: i64) {
    use std::io::Write;
    let lines = lines(samples, timestamp_ms);
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
    fn records(samples: &[Sample], timestamp_ms: i64) -> Vec<Value> {
        let text = String::from_utf8(lines(samples, timestamp_ms)).expect("UTF-8");
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
        let r = records(&samples, 1_795_330_800_000);
        let out = crate::testkit::Captured::default();
        let writer = std::sync::Arc::new(std::sync::Mutex::new(out.clone()));
        emit(&MetricsOut::Writer(writer), &samples, 1_795_330_800_000);
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
        let r = records(&samples, 1_795_330_800_000);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[1],
            json!({
                "TargetType": "webhook", "Outcome": "delivered", "Attempts": 2, "DeliveryLag": [120.0, 80.5],
                "_aws": {"Timestamp": 1_795_330_800_000_i64, "CloudWatchMetrics": [{
                    "Namespace": "Herald", "Dimensions": [["TargetType", "Outcome"]],
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
        assert!(records(&[], 0).is_empty());
    }
}

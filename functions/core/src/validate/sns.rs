//! An `aws_sns` integration's configuration: the topic ARN (a FIFO topic's name ends
//! in `.fifo`), its region and the credentials (as SQS's).

use super::aws::{parse_auth, parse_region, resource_arn, same_region, AUTH_FIELDS};
use super::*;
use crate::model::SnsConfig;

pub(super) fn parse(c: &mut Config<'_>) -> Option<SnsConfig> {
    let mut fields = vec!["topic_arn", "region"];
    fields.extend_from_slice(AUTH_FIELDS);
    c.only(IntegrationType::AwsSns, &fields);
    let region = parse_region(c);
    let arn = c.required_str("topic_arn", 1024).and_then(|arn| {
        if topic_region(&arn).is_some() {
            Some(arn)
        } else {
            c.error(
                "topic_arn",
                "must be an SNS topic ARN: arn:aws:sns:<region>:<account-id>:<topic-name>",
            );
            None
        }
    });
    let region = same_region(
        c,
        region,
        arn.as_deref().and_then(topic_region),
        "topic ARN",
    );
    let auth = parse_auth(c);
    Some(SnsConfig {
        topic_arn: arn?,
        region: region?,
        auth: auth?,
    })
}

/// The region of a topic ARN, `None` when `arn` is not one. The topic name is 1 to
/// 256 of `[A-Za-z0-9_-]`, a FIFO topic's with `.fifo` at the end (within the 256).
fn topic_region(arn: &str) -> Option<&str> {
    let (region, name) = resource_arn(arn, "sns")?;
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    let ok = !base.is_empty()
        && name.len() <= 256
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(region)
}

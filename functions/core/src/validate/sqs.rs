//! An `aws_sqs` integration's configuration: the queue URL, its region, and either
//! static keys or a role to assume with Herald's external id.

use super::aws::{is_region, parse_auth, parse_region, AUTH_FIELDS};
use super::*;

pub(super) fn parse(c: &mut Config<'_>) -> Option<SqsConfig> {
    c.only(
        IntegrationType::AwsSqs,
        &["url", "region"]
            .into_iter()
            .chain(AUTH_FIELDS.iter().copied())
            .collect::<Vec<_>>(),
    );
    let region = parse_region(c);
    let url = c
        .required_str("url", MAX_URL)
        .and_then(|raw| match sqs_url_region(&raw) {
            Err(detail) => {
                c.error("url", detail);
                None
            }
            Ok(Some(url_region)) if region.as_deref().is_some_and(|r| r != url_region) => {
                c.error(
                    "region",
                    format!("does not match the queue URL's region ({url_region})"),
                );
                None
            }
            Ok(_) => Some(raw),
        });

    let auth = parse_auth(c);
    Some(SqsConfig {
        url: url?,
        region: region?,
        auth: auth?,
    })
}

/// Checks an SQS queue URL and returns the region named in its host, if any.
///
/// Accepted: `https://sqs.<region>.amazonaws.com[.cn]/<account>/<queue>`, the legacy
/// `https://<region>.queue.amazonaws.com/...` and `https://queue.amazonaws.com/...`.
/// The account is digits (Elastic Path's own example has nine); the queue name is
/// 1 to 80 of `[A-Za-z0-9_-]`, optionally ending in `.fifo`.
pub fn sqs_url_region(raw: &str) -> Result<Option<String>, String> {
    const SHAPE: &str =
        "must be an SQS queue URL: https://sqs.<region>.amazonaws.com/<account-id>/<queue-name>";
    let url = Url::parse(raw).map_err(|_| SHAPE.to_owned())?;
    if url.scheme() != "https" || url.query().is_some() || !url.username().is_empty() {
        return Err(SHAPE.into());
    }
    let host = url.host_str().unwrap_or_default();
    let region = if let Some(rest) = host.strip_prefix("sqs.") {
        let region = rest
            .strip_suffix(".amazonaws.com")
            .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
            .ok_or_else(|| SHAPE.to_owned())?;
        Some(region.to_owned())
    } else if host == "queue.amazonaws.com" {
        None
    } else if let Some(region) = host.strip_suffix(".queue.amazonaws.com") {
        Some(region.to_owned())
    } else {
        return Err(SHAPE.into());
    };
    if let Some(r) = &region {
        if !is_region(r) {
            return Err(SHAPE.into());
        }
    }
    let segments: Vec<&str> = url.path().trim_start_matches('/').split('/').collect();
    let [account, queue] = segments.as_slice() else {
        return Err(SHAPE.into());
    };
    let account_ok =
        !account.is_empty() && account.len() <= 12 && account.bytes().all(|b| b.is_ascii_digit());
    let base = queue.strip_suffix(".fifo").unwrap_or(queue);
    let queue_ok = !base.is_empty()
        && queue.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if account_ok && queue_ok {
        Ok(region)
    } else {
        Err(SHAPE.into())
    }
}

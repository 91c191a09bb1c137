//! An `aws_sqs` integration's configuration: the queue URL, its region, and either
//! static keys or a role to assume with Herald's external id.

use super::*;

pub(super) fn parse(c: &mut Config<'_>) -> Option<SqsConfig> {
    c.only(
        IntegrationType::AwsSqs,
        &[
            "url",
            "region",
            "aws_access_key_id",
            "aws_secret_access_key",
            "role_arn",
            "external_id",
        ],
    );
    let region = c.required_str("region", 32).and_then(|r| {
        if is_region(&r) {
            Some(r)
        } else {
            c.error(
                "region",
                format!("{} is not an AWS region name (e.g. eu-west-1)", quoted(&r)),
            );
            None
        }
    });
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

    let keys = c.present("aws_access_key_id") || c.present("aws_secret_access_key");
    let role = c.present("role_arn") || c.present("external_id");
    let auth = match (keys, role) {
        (true, true) => {
            c.error(
                "role_arn",
                "give either aws_access_key_id + aws_secret_access_key, or role_arn (with Herald's external_id), not both (set the other pair to null to remove it)",
            );
            None
        }
        (false, false) => {
            c.error(
                "aws_access_key_id",
                "is required, with aws_secret_access_key (or use role_arn for keyless access)",
            );
            None
        }
        (true, false) => {
            let id = c.required_str("aws_access_key_id", 128).and_then(|id| {
                let ok = id.len() >= 16
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                if ok {
                    Some(id)
                } else {
                    c.error(
                        "aws_access_key_id",
                        "is not an AWS access key id (16 to 128 characters, A-Z and 0-9)",
                    );
                    None
                }
            });
            let secret = c.required_str("aws_secret_access_key", 128);
            match (id, secret) {
                (Some(id), Some(secret)) => Some(SqsAuth::Keys {
                    access_key_id: Secret::new(id),
                    secret_access_key: Secret::new(secret),
                }),
                _ => None,
            }
        }
        (false, true) => {
            let arn = c.required_str("role_arn", 2048).and_then(|arn| {
                if is_role_arn(&arn) {
                    Some(arn)
                } else {
                    c.error(
                        "role_arn",
                        "is not an IAM role ARN (arn:aws:iam::123456789012:role/name)",
                    );
                    None
                }
            });
            // Herald issues the external id (see `Integrations`): it may be left out,
            // which reads as empty here; a value sent must be well formed.
            let external_id =
                c.optional_str("external_id", 1224)
                    .map_or(Some(String::new()), |x| {
                        let ok = x.len() >= 2
                            && x.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/-_".contains(&b));
                        if ok {
                            Some(x)
                        } else {
                            c.error(
                                "external_id",
                                "must be 2 to 1224 characters from A-Z a-z 0-9 and +=,.@:/-_",
                            );
                            None
                        }
                    });
            match (arn, external_id) {
                (Some(role_arn), Some(external_id)) => Some(SqsAuth::AssumeRole {
                    role_arn,
                    external_id,
                }),
                _ => None,
            }
        }
    };
    Some(SqsConfig {
        url: url?,
        region: region?,
        auth: auth?,
    })
}

/// `eu-west-1`, `us-gov-west-1`, `cn-north-1`, `ap-southeast-2`: two letters, one or
/// more lowercase words, a number.
pub fn is_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|n| (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
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

pub(super) fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_lit, partition, service, region, account, resource] = parts.as_slice() else {
        return false;
    };
    *arn_lit == "arn"
        && matches!(*partition, "aws" | "aws-cn" | "aws-us-gov")
        && *service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix("role/").is_some_and(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        })
}

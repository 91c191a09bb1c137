//! What the targets in the store owner's AWS account (`aws_sqs`, `aws_eventbridge`,
//! `aws_sns`) share: the region, the credentials (static keys, or a role to assume
//! with Herald's external id) and the shape of a resource ARN.

use super::*;

/// The credential fields, the same for every AWS target.
pub(super) const AUTH_FIELDS: &[&str] = &[
    "aws_access_key_id",
    "aws_secret_access_key",
    "role_arn",
    "external_id",
];

/// The `region` field: required, an AWS region name.
pub(super) fn parse_region(c: &mut Config<'_>) -> Option<String> {
    c.required_str("region", 32).and_then(|r| {
        if is_region(&r) {
            Some(r)
        } else {
            c.error(
                "region",
                format!("{} is not an AWS region name (e.g. eu-west-1)", quoted(&r)),
            );
            None
        }
    })
}

/// The credentials: `aws_access_key_id` + `aws_secret_access_key`, or `role_arn`
/// (with the `external_id` Herald issues), exactly one of the two.
pub(super) fn parse_auth(c: &mut Config<'_>) -> Option<SqsAuth> {
    let keys = c.present("aws_access_key_id") || c.present("aws_secret_access_key");
    let role = c.present("role_arn") || c.present("external_id");
    match (keys, role) {
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
    }
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

/// A resource ARN of `service` in the shape `arn:<partition>:<service>:<region>:<account>:<resource>`:
/// its region and resource, or `None` when it is not one (the region must be a
/// region name, the account 12 digits).
pub(super) fn resource_arn<'a>(arn: &'a str, service: &str) -> Option<(&'a str, &'a str)> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_lit, partition, svc, region, account, resource] = parts.as_slice() else {
        return None;
    };
    let ok = *arn_lit == "arn"
        && matches!(*partition, "aws" | "aws-cn" | "aws-us-gov")
        && *svc == service
        && is_region(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit());
    ok.then_some((*region, *resource))
}

/// Checks that `region` is the region named in the resource's ARN (`what`: "event
/// bus ARN"); the error points at `region`.
pub(super) fn same_region(
    c: &mut Config<'_>,
    region: Option<String>,
    arn_region: Option<&str>,
    what: &str,
) -> Option<String> {
    match (region, arn_region) {
        (Some(r), Some(a)) if r != a => {
            c.error(
                "region",
                format!("does not match the {what}'s region ({a})"),
            );
            None
        }
        (region, _) => region,
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

//! Who may act for a store when API Gateway authorizes a call with IAM (SigV4).
//!
//! With IAM authorization any principal allowed `execute-api:Invoke` reaches the
//! functions, and the caller names its store in `X-Store-Id`. [`StoreAccess`] maps
//! caller principals (the request's IAM identity ARN, API Gateway's
//! `requestContext.authorizer.iam.userArn`) to the stores each may act for. Empty, it
//! restricts nothing: every IAM caller may name every store (a deployment whose only
//! IAM callers are trusted backends).
//!
//! The text form (`HERALD_IAM_STORE_ACCESS`, the template's `IamStoreAccess`) is a
//! `;`-separated list of `<caller ARN pattern>=<store pattern>|<store pattern>...`,
//! e.g. `arn:aws:sts::123456789012:assumed-role/backoffice-*/*=store-1|store-2;
//! arn:aws:sts::123456789012:assumed-role/commerce-backend/*=*`. In a pattern `*`
//! matches any run of characters (none included), every other character itself
//! (case-sensitive). A caller may act for a store when any entry whose ARN pattern
//! matches it lists a pattern matching the store.
//!
//! An assumed role calls as `arn:aws:sts::<account>:assumed-role/<role>/<session>`,
//! not as the role's `arn:aws:iam::` ARN: write patterns for what API Gateway reports
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-arns>).

use std::sync::Arc;

use http::{HeaderMap, StatusCode};

use crate::error::{Error, Result};
use crate::jsonapi::{Errors, Source};
use crate::model::StoreId;

/// The environment variable holding the mapping.
pub const ENV: &str = "HERALD_IAM_STORE_ACCESS";

/// The header that names the store for trusted callers (dev server, IAM-signed calls).
pub const STORE_HEADER: &str = "x-store-id";

/// Longest caller ARN pattern accepted (an ARN is at most 2,048 characters).
const MAX_ARN_PATTERN: usize = 2048;

/// A text pattern in which `*` matches any run of characters.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern(String);

impl Pattern {
    /// Whether `text` matches the whole pattern.
    fn matches(&self, text: &str) -> bool {
        let (p, t) = (self.0.as_bytes(), text.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        // Where the last `*` was, and where in the text it started matching.
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && p[pi] == t[ti] {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                // Let the last `*` take one more character and try again after it.
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

/// One entry of the mapping: callers matching `caller` may act for `stores`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    caller: Pattern,
    stores: Vec<Pattern>,
}

/// Which stores IAM callers may act for. Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreAccess {
    rules: Arc<[Rule]>,
}

/// Whether a caller may act for a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It may.
    Allowed,
    /// A mapping is set and the request carries no IAM identity.
    NoIdentity,
    /// A mapping is set and no entry for this caller lists the store.
    NotMapped,
}

impl StoreAccess {
    /// Parses the text form (see the module docs); empty or blank restricts nothing.
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let mut rules = Vec::new();
        for (n, entry) in raw.split(';').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let at = |detail: String| format!("entry {} ({entry:?}): {detail}", n + 1);
            // Store patterns never hold `=`; a role or session name may.
            let Some((caller, stores)) = entry.rsplit_once('=') else {
                return Err(at(
                    "must be <caller ARN pattern>=<store pattern>|<store pattern>...".into(),
                ));
            };
            let caller = caller.trim();
            if !caller.starts_with("arn:") {
                return Err(at(format!(
                    "the caller pattern {caller:?} must be an ARN pattern starting with arn: (arn:* for every caller)"
                )));
            }
            if caller.len() > MAX_ARN_PATTERN
                || !caller.bytes().all(|b| b.is_ascii_graphic() && b != b'|')
            {
                return Err(at(format!(
                    "the caller pattern must be at most {MAX_ARN_PATTERN} printable characters without spaces or |"
                )));
            }
            let stores = stores
                .split('|')
                .map(|s| {
                    let s = s.trim();
                    let valid = !s.is_empty()
                        && s.len() <= StoreId::MAX_LEN
                        && (StoreId::parse(&s.replace('*', "x")).is_some());
                    if valid {
                        Ok(Pattern(s.to_owned()))
                    } else {
                        Err(at(format!(
                            "the store pattern {s:?} must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ - and *"
                        )))
                    }
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            rules.push(Rule {
                caller: Pattern(caller.to_owned()),
                stores,
            });
        }
        Ok(Self {
            rules: rules.into(),
        })
    }

    /// Reads [`ENV`]; unset or empty restricts nothing. A malformed value fails
    /// start-up with what is wrong.
    pub fn from_env() -> Result<Self> {
        match crate::config::var(ENV) {
            None => Ok(Self::default()),
            Some(raw) => Self::parse(&raw).map_err(|e| Error::Config(format!("{ENV}: {e}"))),
        }
    }

    /// Whether a mapping is set (without one, every IAM caller may act for every store).
    pub fn is_restricted(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether `caller` (the request's IAM identity ARN, if any) may act for `store`.
    pub fn decide(&self, caller: Option<&str>, store: &StoreId) -> Decision {
        if !self.is_restricted() {
            return Decision::Allowed;
        }
        let Some(caller) = caller else {
            return Decision::NoIdentity;
        };
        let allowed = self
            .rules
            .iter()
            .filter(|r| r.caller.matches(caller))
            .any(|r| r.stores.iter().any(|s| s.matches(store.as_str())));
        if allowed {
            Decision::Allowed
        } else {
            Decision::NotMapped
        }
    }
}

/// The `X-Store-Id` header: `None` when absent, 400 when it is not a store id.
pub fn store_header(headers: &HeaderMap) -> std::result::Result<Option<StoreId>, Errors> {
    let Some(raw) = headers.get(STORE_HEADER) else {
        return Ok(None);
    };
    raw.to_str()
        .ok()
        .and_then(StoreId::parse)
        .map(Some)
        .ok_or_else(|| {
            Errors::new(
                StatusCode::BAD_REQUEST,
                "X-Store-Id must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ -",
                Some(Source::Header("X-Store-Id".into())),
            )
        })
}

/// The store an IAM-authorized request acts for: the one `X-Store-Id` names (400 when
/// absent or malformed), if `access` lets `caller` act for it (403 otherwise).
pub fn iam_store(
    headers: &HeaderMap,
    caller: Option<&str>,
    access: &StoreAccess,
) -> std::result::Result<StoreId, Errors> {
    let store = store_header(headers)?.ok_or_else(|| {
        Errors::new(
            StatusCode::BAD_REQUEST,
            "X-Store-Id is required: name the store this call acts for",
            Some(Source::Header("X-Store-Id".into())),
        )
    })?;
    let refused = |detail: &str| {
        Errors::new(
            StatusCode::FORBIDDEN,
            detail,
            Some(Source::Header("X-Store-Id".into())),
        )
    };
    match access.decide(caller, &store) {
        Decision::Allowed => Ok(store),
        Decision::NoIdentity => Err(refused(
            "the request carries no IAM identity, so it may act for no store",
        )),
        Decision::NotMapped => {
            tracing::warn!(caller, store = %store, "caller not mapped to the store it names");
            Err(refused(
                "this caller may not act for the store X-Store-Id names",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFFICE: &str = "arn:aws:sts::123456789012:assumed-role/backoffice-eu/alice";
    const COMMERCE: &str = "arn:aws:sts::123456789012:assumed-role/commerce-backend/orders";

    fn store(s: &str) -> StoreId {
        StoreId::parse(s).expect("store")
    }

    fn access(raw: &str) -> StoreAccess {
        StoreAccess::parse(raw).expect("mapping")
    }

    #[test]
    fn an_empty_mapping_lets_every_caller_act_for_every_store() {
        for raw in ["", "  ", ";"] {
            let a = access(raw);
            assert!(!a.is_restricted(), "{raw:?}");
            assert_eq!(a.decide(Some(COMMERCE), &store("s1")), Decision::Allowed);
            assert_eq!(a.decide(None, &store("s1")), Decision::Allowed);
        }
    }

    #[test]
    fn an_exact_caller_may_act_for_its_exact_store_only() {
        let a = access(&format!("{COMMERCE}=s1"));
        assert_eq!(a.decide(Some(COMMERCE), &store("s1")), Decision::Allowed);
        assert_eq!(a.decide(Some(COMMERCE), &store("s2")), Decision::NotMapped);
        assert_eq!(a.decide(Some(COMMERCE), &store("s1x")), Decision::NotMapped);
        assert_eq!(
            a.decide(Some(BACKOFFICE), &store("s1")),
            Decision::NotMapped
        );
    }

    #[test]
    fn a_wildcard_caller_pattern_matches_any_run_of_characters() {
        let a = access("arn:aws:sts::123456789012:assumed-role/backoffice-*/*=s1");
        assert_eq!(a.decide(Some(BACKOFFICE), &store("s1")), Decision::Allowed);
        assert_eq!(
            a.decide(
                Some("arn:aws:sts::123456789012:assumed-role/backoffice-/x"),
                &store("s1")
            ),
            Decision::Allowed
        );
        assert_eq!(
            a.decide(
                Some("arn:aws:sts::123456789012:assumed-role/backoffice-eu"),
                &store("s1")
            ),
            Decision::NotMapped
        );
        assert_eq!(
            a.decide(
                Some("arn:aws:sts::999999999999:assumed-role/backoffice-eu/alice"),
                &store("s1")
            ),
            Decision::NotMapped
        );
        assert_eq!(a.decide(Some(COMMERCE), &store("s1")), Decision::NotMapped);
    }

    #[test]
    fn a_caller_may_act_for_each_of_several_stores_and_store_patterns() {
        let a = access(&format!("{BACKOFFICE}=s1|s2|eu-*"));
        for s in ["s1", "s2", "eu-", "eu-paris"] {
            assert_eq!(
                a.decide(Some(BACKOFFICE), &store(s)),
                Decision::Allowed,
                "{s}"
            );
        }
        for s in ["s3", "s", "us-paris", "xeu-paris"] {
            assert_eq!(
                a.decide(Some(BACKOFFICE), &store(s)),
                Decision::NotMapped,
                "{s}"
            );
        }
    }

    #[test]
    fn a_store_star_lets_the_caller_act_for_every_store_and_entries_add_up() {
        let a = access(&format!(
            " {COMMERCE} = * ;\n{BACKOFFICE}=s1; arn:aws:sts::*:assumed-role/backoffice-eu/*=s2"
        ));
        assert_eq!(
            a.decide(Some(COMMERCE), &store("any.store")),
            Decision::Allowed
        );
        assert_eq!(a.decide(Some(BACKOFFICE), &store("s1")), Decision::Allowed);
        assert_eq!(a.decide(Some(BACKOFFICE), &store("s2")), Decision::Allowed);
        assert_eq!(
            a.decide(Some(BACKOFFICE), &store("s3")),
            Decision::NotMapped
        );
    }

    #[test]
    fn no_identity_is_refused_once_a_mapping_is_set() {
        let a = access("arn:*=*");
        assert_eq!(a.decide(None, &store("s1")), Decision::NoIdentity);
        assert_eq!(a.decide(Some(COMMERCE), &store("s1")), Decision::Allowed);
    }

    #[test]
    fn an_equals_sign_in_a_role_or_session_name_belongs_to_the_caller_pattern() {
        let caller = "arn:aws:sts::123456789012:assumed-role/team=eu/a=b";
        let a = access(&format!("{caller}=s1"));
        assert_eq!(a.decide(Some(caller), &store("s1")), Decision::Allowed);
    }

    #[test]
    fn matching_is_case_sensitive_and_stars_match_only_what_they_must() {
        let a = access("arn:aws:sts::1:assumed-role/*-admin/*=s1");
        let ok = "arn:aws:sts::1:assumed-role/ops-admin-admin/x";
        assert_eq!(a.decide(Some(ok), &store("s1")), Decision::Allowed);
        assert_eq!(
            a.decide(
                Some("arn:aws:sts::1:assumed-role/OPS-ADMIN/x"),
                &store("s1")
            ),
            Decision::NotMapped
        );
        assert_eq!(
            a.decide(Some("arn:aws:sts::1:assumed-role/ops-admin"), &store("s1")),
            Decision::NotMapped
        );
        assert_eq!(
            a.decide(
                Some("arn:aws:sts::1:assumed-role/ops-admin/x"),
                &store("S1")
            ),
            Decision::NotMapped
        );
    }

    #[test]
    fn a_malformed_mapping_is_refused_with_the_entry_and_what_is_wrong() {
        for (raw, expected) in [
            (
                "arn:aws:iam::1:role/x",
                "entry 1 (\"arn:aws:iam::1:role/x\"): must be <caller ARN pattern>=<store pattern>|<store pattern>...",
            ),
            (
                "arn:*=s1;role/x=s1",
                "entry 2 (\"role/x=s1\"): the caller pattern \"role/x\" must be an ARN pattern starting with arn: (arn:* for every caller)",
            ),
            (
                "arn:*=s1|",
                "entry 1 (\"arn:*=s1|\"): the store pattern \"\" must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ - and *",
            ),
            (
                "arn:*=s 1",
                "entry 1 (\"arn:*=s 1\"): the store pattern \"s 1\" must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ - and *",
            ),
            (
                "arn:a b=s1",
                "entry 1 (\"arn:a b=s1\"): the caller pattern must be at most 2048 printable characters without spaces or |",
            ),
        ] {
            assert_eq!(StoreAccess::parse(raw), Err(expected.to_owned()), "{raw:?}");
        }
    }

    fn headers(store: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(s) = store {
            h.insert(STORE_HEADER, s.parse().expect("header"));
        }
        h
    }

    #[test]
    fn an_iam_request_acts_for_its_header_store_when_its_caller_may() {
        let a = access(&format!("{COMMERCE}=s1"));
        assert_eq!(
            iam_store(&headers(Some("s1")), Some(COMMERCE), &a).map_err(|e| e.status()),
            Ok(store("s1"))
        );
        for (h, caller, status) in [
            (Some("s2"), Some(COMMERCE), 403),
            (Some("s1"), None, 403),
            (None, Some(COMMERCE), 400),
            (Some("bad store"), Some(COMMERCE), 400),
        ] {
            let err = iam_store(&headers(h), caller, &a).expect_err("refused");
            assert_eq!(err.status().as_u16(), status, "{h:?} {caller:?}");
            assert_eq!(
                err.to_document()["errors"][0]["source"]["header"],
                "X-Store-Id"
            );
        }
    }
}

//! Masking of secrets in API responses.
//!
//! Elastic Path shows a secret as `*` for every character but the last four
//! (`****************PSYQ`). Herald does the same, with one guard the contract does
//! not spell out: a secret of eight characters or fewer is masked whole, because
//! showing four of them would give away half of it.

/// Secrets this long or shorter are masked entirely.
pub const FULLY_MASKED_UP_TO: usize = 8;

/// How many trailing characters stay visible in a longer secret.
pub const VISIBLE_SUFFIX: usize = 4;

/// Masks a secret: `*` for every character (not byte) but the last four, or all of
/// them when the secret has [`FULLY_MASKED_UP_TO`] characters or fewer.
pub fn mask(secret: &str) -> String {
    let count = secret.chars().count();
    if count <= FULLY_MASKED_UP_TO {
        return "*".repeat(count);
    }
    let hidden = count - VISIBLE_SUFFIX;
    let mut out = "*".repeat(hidden);
    out.extend(secret.chars().skip(hidden));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_matches_the_elastic_path_examples() {
        assert_eq!(mask("ASIAJLVYNHUWCPKOPSYQ"), "****************PSYQ");
        assert_eq!(
            mask("mgJteE7dZgSLC2eo2vKsAUWRSnchrWzCRnoDpUSJ"),
            "************************************pUSJ"
        );
        assert_eq!(mask("*******d123"), "*******d123");
    }

    #[test]
    fn short_secrets_are_masked_whole() {
        assert_eq!(mask(""), "");
        assert_eq!(mask("abc"), "***");
        assert_eq!(mask("12345678"), "********");
        assert_eq!(mask("123456789"), "*****6789");
    }

    #[test]
    fn masking_counts_characters_not_bytes() {
        assert_eq!(mask("ééééééééééé"), "*******éééé");
    }
}

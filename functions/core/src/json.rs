//! JSON written straight to bytes where building a tree would cost more than the
//! document: strings escaped by serde_json's own escaper (why not a hand-written one:
//! `docs/decisions/0003-json-escaper.md`).

use serde::Serialize;

/// Writes `s` as a JSON string, as serde_json writes it (`\"`, `\\`,
/// `\b \t \n \f \r`, other control characters as `\u00xx`; everything else as
/// it is).
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    // Writing a string into a Vec cannot fail.
    let _ = s.serialize(&mut serde_json::Serializer::new(&mut *out));
}

/// Writes `s` as [`json_string`] does, without the quotes: for a string value written
/// in parts.
pub fn json_escaped(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len());
    let _ = s.serialize(&mut serde_json::Serializer::with_formatter(
        &mut *out, Unquoted,
    ));
}

/// serde_json's compact formatter without a string's quotes.
struct Unquoted;

impl serde_json::ser::Formatter for Unquoted {
    fn begin_string<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        Ok(())
    }

    fn end_string<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_byte_is_escaped_as_serde_json_escapes_it() {
        // Each escape after and before plain runs of many lengths.
        let specials = [
            "\"", "\\", "\u{0}", "\u{8}", "\t", "\n", "\u{c}", "\r", "\u{1f}", "\u{7f}", "é", "☃",
            "😀",
        ];
        for special in specials {
            for before in 0..17 {
                for after in [0, 1, 7, 8, 9] {
                    let s = format!("{}{special}{}", "a".repeat(before), "b".repeat(after));
                    let mut out = Vec::new();
                    json_string(&mut out, &s);
                    assert_eq!(
                        String::from_utf8(out).expect("utf-8"),
                        serde_json::to_string(&s).expect("json"),
                        "{s:?}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn any_string_is_written_as_serde_json_writes_it(s in any::<String>(), ascii in "[ -~\t\n\r\u{0}-\u{1f}\u{7f}]{0,64}", sparse in "[a-zé]{0,150}[\"\\\\\u{0}-\u{1f}]?[a-z]{0,150}") {
            // sparse: long plain runs around at most one byte to escape, anywhere
            // in or across the blocks skipped at once.
            for s in [s, ascii, sparse] {
                let mut out = Vec::new();
                super::json_string(&mut out, &s);
                prop_assert_eq!(String::from_utf8(out).expect("utf-8"), serde_json::to_string(&s).expect("json"));
                // Written in two parts between quotes, it is the same string.
                let half = s.char_indices().nth(s.chars().count() / 2).map_or(s.len(), |(i, _)| i);
                let mut parts = b"\"".to_vec();
                super::json_escaped(&mut parts, &s[..half]);
                super::json_escaped(&mut parts, &s[half..]);
                parts.push(b'"');
                prop_assert_eq!(String::from_utf8(parts).expect("utf-8"), serde_json::to_string(&s).expect("json"));
            }
        }
    }
}

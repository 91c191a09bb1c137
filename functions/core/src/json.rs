//! JSON written straight to bytes where building a tree would cost more than the
//! document: strings escaped byte for byte as serde_json escapes them.

/// Whether a byte must be escaped in a JSON string.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The bytes of `word` (eight, little-endian) that must be escaped, each as its
/// high bit: a byte below 0x20, a '"' or a '\\'. Zero when there is none.
fn escapes_in(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    control | zero_in(word ^ (ONES * u64::from(b'"'))) | zero_in(word ^ (ONES * u64::from(b'\\')))
}

/// Whether none of `block`'s bytes (a multiple of eight) must be escaped.
fn plain(block: &[u8]) -> bool {
    block
        .chunks_exact(8)
        .map(|c| {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            escapes_in(u64::from_le_bytes(word))
        })
        .fold(0, |acc, e| acc | e)
        == 0
}

/// Writes `s` as a JSON string, byte for byte as serde_json writes it (`\"`, `\\`,
/// `\b \t \n \f \r`, other control characters as `\u00xx`; everything else as
/// it is). Skips plain bytes 32, then 8, at a time: a payload is mostly bytes that
/// need no escape.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    json_escaped(out, s);
    out.push(b'"');
}

/// Writes `s` as [`json_string`] does, without the quotes: for a string value written
/// in parts.
pub fn json_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i..i + 32).is_some_and(plain) {
            i += 32;
            continue;
        }
        if bytes.get(i..i + 8).is_some_and(plain) {
            i += 8;
            continue;
        }
        let b = bytes[i];
        if !needs_escape(b) {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_byte_is_escaped_as_serde_json_escapes_it() {
        // Each escape at every offset of the eight-byte scan, and runs longer than it.
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
            }
        }
    }
}

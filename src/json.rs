//! A compact JSON writer for `serde_json::Value`, byte for byte the output of
//! `serde_json::to_vec`, that escapes strings several times faster.
//!
//! serde_json looks at a string one byte at a time; this writer skips eight bytes at a
//! time while none of them needs an escape (a quote, a backslash or a control
//! character), which is the common case for text. It matters for large arguments and
//! results: on this machine serde_json encodes a 1 MiB string in about 640 µs
//! (`docs/performance.md`). Numbers are still written by serde_json.

use serde_json::{Map, Value};

/// What follows the backslash for each byte that needs one; 0: written as it is.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes in `word` may need an escape. Never misses one; may
/// report one where there is none only when a real one is in the same word.
fn may_need_escape(word: u64) -> bool {
    // A zero byte of x shows as a high bit of (x - ONES) & !x; likewise a byte below
    // 0x20 of `word` as one of (word - 0x20 * ONES) & !word.
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let found =
        control | (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash);
    found & HIGHS != 0
}

/// Appends `s` as a JSON string.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !may_need_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let byte = bytes[i];
        let escape = ESCAPE[usize::from(byte)];
        if escape != 0 {
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'\\');
            out.push(escape);
            if escape == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `value` in compact form.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Writing a number into a Vec cannot fail.
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => write_array(out, items),
        Value::Object(map) => write_object(out, map),
    }
}

/// Appends `map` as a JSON object, in the map's order (sorted by key).
pub(crate) fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, item);
    }
    out.push(b'}');
}

/// Appends `items` as a JSON array.
pub(crate) fn write_array(out: &mut Vec<u8>, items: &[Value]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(out, item);
    }
    out.push(b']');
}

/// `value` in compact form.
pub(crate) fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same_as_serde(value: &Value) {
        assert_eq!(
            String::from_utf8(to_vec(value)).unwrap(),
            serde_json::to_string(value).unwrap(),
            "{value:?}"
        );
    }

    #[test]
    fn every_byte_is_written_as_serde_json_writes_it() {
        for b in 0u8..=127 {
            let one = char::from(b).to_string();
            same_as_serde(&json!(one));
            // At every position of a word and around word boundaries.
            for at in 0..20 {
                let mut s = "x".repeat(at);
                s.push(char::from(b));
                s.push_str("yyyyyyyyy");
                same_as_serde(&json!(s));
            }
        }
        for s in [
            "",
            "é",
            "日本語\"\\\n",
            "\u{7f}\u{80}\u{ffff}\u{10ffff}",
            "😀\t😀",
        ] {
            same_as_serde(&json!(s));
        }
    }

    #[test]
    fn values_of_every_kind_are_written_as_serde_json_writes_them() {
        same_as_serde(&json!(null));
        same_as_serde(&json!([
            true,
            false,
            0,
            -1,
            u64::MAX,
            i64::MIN,
            1.5,
            -0.0,
            1e300
        ]));
        same_as_serde(&json!(1.0));
        same_as_serde(&json!(0.1));
        same_as_serde(&json!({}));
        same_as_serde(&json!([]));
        same_as_serde(&json!({"b": [1, {"a\n": null}], "a": "x", "": [[], {}]}));
    }

    #[test]
    fn random_text_is_written_as_serde_json_writes_it() {
        let alphabet: Vec<char> = "ab\"\\\n\u{1}\u{1f} é€😀".chars().collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5_000 {
            let len = rng.usize(0..64);
            let s: String = (0..len)
                .map(|_| {
                    // Mostly plain text, so that the eight-byte skip is taken.
                    if rng.u8(..) < 200 {
                        'a'
                    } else {
                        alphabet[rng.usize(..alphabet.len())]
                    }
                })
                .collect();
            same_as_serde(&json!([s, {"k": s}]));
        }
    }
}

//! A tiny append-only JSON writer for the answers on the hot path.
//!
//! Answers are fixed templates with a few holes (id, timestamp, model, token
//! counts). Filling the holes into one pre-sized buffer is cheaper than
//! building a `serde_json::Value` per request, and cannot fail.

use bytes::Bytes;

/// A growing JSON document; the caller writes well-formed pieces in order.
#[derive(Debug, Default)]
pub(crate) struct JsonBuf(Vec<u8>);

impl JsonBuf {
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Appends text that is already JSON (or SSE framing).
    pub fn raw(&mut self, text: &str) -> &mut Self {
        self.0.extend_from_slice(text.as_bytes());
        self
    }

    /// Appends bytes that are already JSON.
    pub fn raw_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends an unsigned number.
    pub fn num(&mut self, n: u64) -> &mut Self {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self
    }

    /// Appends `text` as a quoted JSON string.
    pub fn string(&mut self, text: &str) -> &mut Self {
        self.0.push(b'"');
        escape_into(&mut self.0, text);
        self.0.push(b'"');
        self
    }

    pub fn into_bytes(self) -> Bytes {
        Bytes::from(self.0)
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

/// Appends the JSON escape of `text` (without quotes). Only ASCII bytes are
/// ever replaced, so valid UTF-8 stays valid.
pub(crate) fn escape_into(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(bytes.get(clean_from..i).unwrap_or_default());
        if short == 0 {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
        clean_from = i + 1;
    }
    out.extend_from_slice(bytes.get(clean_from..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_through_serde_json() {
        for text in [
            "plain",
            "",
            "quote \" back \\ slash",
            "tab\tnew\nline\r",
            "\u{1}\u{1f}\u{7f}",
            "héllo ✓ 🎉",
        ] {
            let mut buf = JsonBuf::default();
            buf.string(text);
            let bytes = buf.into_vec();
            let back: String = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn pieces_compose_a_document() {
        let mut buf = JsonBuf::with_capacity(8);
        buf.raw("{\"n\":")
            .num(u64::MAX)
            .raw(",\"s\":")
            .string("x")
            .raw_bytes(b"}");
        let v: serde_json::Value = serde_json::from_slice(&buf.into_bytes()).unwrap();
        assert_eq!(v, serde_json::json!({"n": u64::MAX, "s": "x"}));
    }
}

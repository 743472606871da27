//! Token usage from the end of a relayed body, without parsing it: the `usage` object comes
//! last in a chat completion (JSON) and in the final chunk of a stream (SSE), so the gateway keeps
//! the body's last few KiB and looks for the last `"usage"` there.

/// Tokens of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

/// How much of a body's end is kept for [`parse`].
pub const TAIL_BYTES: usize = 4096;

/// The usage in `tail` (the end of a body), if it has one with a total.
pub fn parse(tail: &[u8]) -> Option<Usage> {
    let at = rfind(tail, b"\"usage\"")?;
    let usage = &tail[at..];
    let total = number_after(usage, b"\"total_tokens\"")?;
    Some(Usage {
        prompt: number_after(usage, b"\"prompt_tokens\"").unwrap_or(0),
        completion: number_after(usage, b"\"completion_tokens\"").unwrap_or(0),
        total,
    })
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &text[at..];
    let start = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b':' | b'\n' | b'\r' | b'\t'))?;
    let digits: Vec<u8> = rest[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_and_sse_usage() {
        let json = br#"{"choices":[{"message":{"content":"usage is a word"}}],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        assert_eq!(
            parse(json),
            Some(Usage {
                prompt: 12,
                completion: 30,
                total: 42
            })
        );
        let sse = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\": 3, \"completion_tokens\": 4, \"total_tokens\": 7}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            parse(sse),
            Some(Usage {
                prompt: 3,
                completion: 4,
                total: 7
            })
        );
    }

    #[test]
    fn no_usage_means_none() {
        assert_eq!(parse(b"data: {\"usage\":null}\n\n"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"{\"total_tokens\":5}"), None);
    }
}

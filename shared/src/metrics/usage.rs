//! Token usage from the end of a relayed body, without parsing it: the `usage` object comes
//! last in a chat completion (JSON) and in the final chunk of a stream (SSE), so the gateway keeps
//! the body's last few KiB and looks for the last `"usage"` there.

use memchr::memmem::FinderRev;
use serde::Deserialize;
use std::sync::LazyLock;

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
    /// The fields read; others (the `*_details` objects) are skipped.
    #[derive(Deserialize)]
    struct Counts {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        completion_tokens: u64,
        total_tokens: u64,
    }
    const KEY: &[u8] = b"\"usage\"";
    static LAST_KEY: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(KEY));
    let after = &tail[LAST_KEY.rfind(tail)? + KEY.len()..];
    let object = after.trim_ascii_start().strip_prefix(b":")?;
    // Reads one JSON value and stops there, whatever follows it.
    let counts: Counts = serde_json::Deserializer::from_slice(object)
        .into_iter()
        .next()?
        .ok()?;
    Some(Usage {
        prompt: counts.prompt_tokens,
        completion: counts.completion_tokens,
        total: counts.total_tokens,
    })
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
    fn details_objects_are_skipped() {
        let json = br#"{"usage":{"completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":0},"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":0},"total_tokens":14}}"#;
        assert_eq!(
            parse(json),
            Some(Usage {
                prompt: 9,
                completion: 5,
                total: 14
            })
        );
    }

    #[test]
    fn numbers_too_long_or_missing_are_not_usage() {
        assert_eq!(
            parse(b"{\"usage\":{\"total_tokens\":99999999999999999999999}}"),
            None
        );
        assert_eq!(parse(b"{\"usage\":{\"total_tokens\":\"x\"}}"), None);
    }

    #[test]
    fn no_usage_means_none() {
        assert_eq!(parse(b"data: {\"usage\":null}\n\n"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"{\"total_tokens\":5}"), None);
    }
}

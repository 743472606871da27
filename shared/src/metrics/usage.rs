//! What the end of a relayed body says, without parsing it: the `usage` object comes last in a
//! chat completion (JSON) and in the final chunk of a stream (SSE), so the gateway keeps the
//! body's last few KiB and looks for the last `"usage"` there. The same tail tells a content
//! filter (an error whose `code` is `content_filter`, or a choice whose `finish_reason` is), the
//! model that answered and whether a stream reached its `[DONE]`.

use memchr::memmem::{Finder, FinderRev};
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
    // A backend's numbers are capped: no answer has 4 billion tokens, and a huge one would
    // overflow the stored sums and stop every later flush.
    let cap = |n: u64| n.min(MAX_TOKENS);
    Some(Usage {
        prompt: cap(counts.prompt_tokens),
        completion: cap(counts.completion_tokens),
        total: cap(counts.total_tokens),
    })
}

/// The most tokens one answer is counted with.
const MAX_TOKENS: u64 = u32::MAX as u64;

/// Whether `tail` holds a member `"key"` whose value is the string `value` (whitespace around
/// the colon allowed; `value` must need no escapes).
fn has_member(tail: &[u8], key: &Finder<'_>, value: &[u8]) -> bool {
    key.find_iter(tail)
        .any(|at| string_value(&tail[at + key.needle().len()..]).is_some_and(|(v, _)| v == value))
}

/// The raw (still escaped) string after a member's key, and whether it was complete: `rest`
/// begins just after the key's closing quote.
fn string_value(rest: &[u8]) -> Option<(&[u8], bool)> {
    let rest = rest.trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'"', b'\\', &rest[i..]) {
        let at = i + off;
        if rest[at] == b'"' {
            return Some((&rest[..at], true));
        }
        i = at + 2;
        if i > rest.len() {
            break;
        }
    }
    Some((rest, false))
}

/// An error answer for a content filter (Azure's 400: `"code":"content_filter"`).
pub fn is_content_filter_error(tail: &[u8]) -> bool {
    static CODE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"code\""));
    has_member(tail, &CODE, b"content_filter")
}

/// A success whose output the content filter stopped (`"finish_reason":"content_filter"`, in a
/// completion or a stream's last chunks, for any choice).
pub fn is_filtered_output(tail: &[u8]) -> bool {
    static FINISH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
    // Every answer is checked and almost none is filtered: one search for the quoted value
    // (Azure's `content_filter_results` does not match it) rules out nearly all of them.
    static VALUE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content_filter\""));
    VALUE.find(tail).is_some() && has_member(tail, &FINISH, b"content_filter")
}

/// The last non-empty `"model"` the body names (the model that answered), if the tail has one.
pub fn model(tail: &[u8]) -> Option<String> {
    static MODEL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"model\""));
    let found: Vec<usize> = MODEL.find_iter(tail).collect();
    found.into_iter().rev().find_map(|at| {
        let (v, complete) = string_value(&tail[at + MODEL.needle().len()..])?;
        (complete && !v.is_empty() && v.len() <= 200)
            .then(|| String::from_utf8_lossy(v).into_owned())
    })
}

/// Whether an event stream's tail ends with its `data: [DONE]` event.
pub fn ends_with_done(tail: &[u8]) -> bool {
    tail.trim_ascii_end().ends_with(b"data: [DONE]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_filters_are_told_by_their_code_or_finish_reason() {
        let azure = br#"{"error":{"message":"filtered","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#;
        assert!(is_content_filter_error(azure));
        assert!(is_content_filter_error(
            b"{\"error\": {\"code\" : \"content_filter\"}}"
        ));
        let other = br#"{"error":{"message":"Unrecognized request argument supplied: foo","type":"invalid_request_error","param":null,"code":null}}"#;
        assert!(!is_content_filter_error(other));
        assert!(!is_content_filter_error(
            br#"{"error":{"code":"invalid_value","message":"\"code\":\"content_filter\""}}"#
        ));
        let json = br#"{"choices":[{"finish_reason":"content_filter","index":0,"message":{"content":""}}],"usage":{"total_tokens":3}}"#;
        assert!(is_filtered_output(json));
        let sse = b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"content_filter\"}]}\n\ndata: [DONE]\n\n";
        assert!(is_filtered_output(sse));
        assert!(!is_filtered_output(
            br#"{"choices":[{"finish_reason":"stop"}],"content_filter_results":{}}"#
        ));
    }

    #[test]
    fn the_model_and_the_done_event_come_from_the_tail() {
        let sse = b"data: {\"model\":\"\",\"choices\":[]}\n\ndata: {\"model\":\"gpt-4o-2024-08-06\",\"choices\":[]}\n\ndata: {\"model\": \"\"}\n\ndata: [DONE]\n\n";
        assert_eq!(model(sse).as_deref(), Some("gpt-4o-2024-08-06"));
        assert!(ends_with_done(sse));
        assert!(!ends_with_done(b"data: {\"choices\":[]}\n\n"));
        assert_eq!(model(b"{\"model\":\"gpt-4"), None);
    }

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

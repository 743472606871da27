//! Tokens of streams that end without a usage chunk (older api-versions, some simulators and
//! models ignore `stream_options`; a client that goes away never gets one): the gateway counts
//! them itself with the model's tokenizer (`tiktoken-rs`, chosen by model name, `cl100k_base`
//! when the name is unknown), and they are reported apart, as estimates.
//!
//! **While relaying** ([`DeltaText`]): only the text of the content deltas is kept — the string
//! values of `"content"`, `"text"` (legacy completions), `"arguments"` (tool calls) and
//! `"refusal"` members — found with `memchr` (no JSON parse of the events), copied as they are
//! (still escaped), at most [`TEXT_LIMIT`] bytes; past it only their length is counted, and the
//! count is extrapolated. The request body is kept as the handler read it (a refcounted `Bytes`,
//! no copy).
//!
//! **At the end**, only when no usage came: the count runs on the blocking pool, never on the
//! relay: the tokenizer is loaded there the first time it is needed (once; its tables are
//! embedded in the binary, nothing is downloaded). A stream whose usage arrived costs the scan
//! and nothing else.

use crate::metrics::EndpointMetrics;
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

/// The most delta text (escaped JSON) kept per stream.
pub const TEXT_LIMIT: usize = 16 * 1024;

/// The keys whose string values are output text.
const KEYS: [&[u8]; 4] = [b"content", b"text", b"arguments", b"refusal"];
/// The most bytes a key with its quotes and whitespace before the colon takes.
const CARRY: usize = 16;

/// Where the scan stands, carried from one piece to the next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Looking for a key's colon.
    #[default]
    Outside,
    /// Just past the colon of an output key: whitespace, then a string (or another value).
    AfterColon,
    /// Within an output string; `escaped` when the last byte seen was its backslash.
    InValue { escaped: bool },
}

/// The text of a stream's content deltas (see the module doc).
#[derive(Debug, Default)]
pub struct DeltaText {
    /// The escaped string values, concatenated, at most [`TEXT_LIMIT`] bytes.
    kept: Vec<u8>,
    /// Bytes of output strings seen in all.
    seen: u64,
    scan: Scan,
    /// The previous piece's last bytes, for a key split across pieces.
    carry: [u8; CARRY],
    carry_len: usize,
}

impl DeltaText {
    /// Take one piece of the body as it is relayed.
    pub fn feed(&mut self, piece: &[u8]) {
        let mut pos = 0;
        while pos < piece.len() {
            match self.scan {
                Scan::InValue { escaped } => pos = self.in_value(piece, pos, escaped),
                Scan::AfterColon => {
                    match piece[pos..].iter().position(|b| !b.is_ascii_whitespace()) {
                        None => pos = piece.len(),
                        Some(off) => {
                            pos += off;
                            if piece[pos] == b'"' {
                                self.scan = Scan::InValue { escaped: false };
                                pos += 1;
                            } else {
                                self.scan = Scan::Outside;
                            }
                        }
                    }
                }
                Scan::Outside => match memchr::memchr(b':', &piece[pos..]) {
                    None => pos = piece.len(),
                    Some(off) => {
                        let colon = pos + off;
                        if self.key_before(piece, colon) {
                            self.scan = Scan::AfterColon;
                        }
                        pos = colon + 1;
                    }
                },
            }
        }
        self.keep_carry(piece);
    }

    /// Copy an output string's bytes from `pos` up to its closing quote (or the piece's end);
    /// returns where the scan goes on.
    fn in_value(&mut self, piece: &[u8], pos: usize, escaped: bool) -> usize {
        let mut i = pos;
        if escaped {
            // The escaped byte is part of the value whatever it is.
            i += 1;
        }
        loop {
            match memchr::memchr2(b'"', b'\\', &piece[i.min(piece.len())..]) {
                None => {
                    self.keep(&piece[pos..]);
                    self.scan = Scan::InValue { escaped: false };
                    return piece.len();
                }
                Some(off) => {
                    let at = i + off;
                    if piece[at] == b'\\' {
                        if at + 1 >= piece.len() {
                            self.keep(&piece[pos..]);
                            self.scan = Scan::InValue { escaped: true };
                            return piece.len();
                        }
                        i = at + 2;
                        continue;
                    }
                    self.keep(&piece[pos..at]);
                    self.scan = Scan::Outside;
                    return at + 1;
                }
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            // The role event's `"content":""`: nothing to keep, nothing to allocate yet.
            return;
        }
        self.seen += bytes.len() as u64;
        let room = TEXT_LIMIT.saturating_sub(self.kept.len());
        if room > 0 {
            if self.kept.is_empty() {
                self.kept.reserve(256.min(TEXT_LIMIT));
            }
            self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// Whether the bytes before the colon at `colon` (this piece's, after the previous piece's
    /// carried end) close one of [`KEYS`]: `"content"`, maybe with whitespace before the colon.
    fn key_before(&self, piece: &[u8], colon: usize) -> bool {
        if colon >= CARRY {
            return ends_with_key(&piece[..colon]);
        }
        // Near the piece's start: the key may have begun in the previous piece.
        let mut window = [0u8; 2 * CARRY];
        let own = &piece[..colon];
        let carried = &self.carry[..self.carry_len];
        window[..carried.len()].copy_from_slice(carried);
        window[carried.len()..carried.len() + own.len()].copy_from_slice(own);
        ends_with_key(&window[..carried.len() + own.len()])
    }

    fn keep_carry(&mut self, piece: &[u8]) {
        if piece.len() >= CARRY {
            self.carry.copy_from_slice(&piece[piece.len() - CARRY..]);
            self.carry_len = CARRY;
        } else {
            let keep = (CARRY - piece.len()).min(self.carry_len);
            self.carry
                .copy_within(self.carry_len - keep..self.carry_len, 0);
            self.carry[keep..keep + piece.len()].copy_from_slice(piece);
            self.carry_len = keep + piece.len();
        }
    }

    /// The text kept, unescaped.
    fn text(&self) -> String {
        let mut quoted = Vec::with_capacity(self.kept.len() + 2);
        // A value cut at the limit may end within an escape: drop a few bytes until it parses.
        for cut in 0..=12.min(self.kept.len()) {
            quoted.clear();
            quoted.push(b'"');
            quoted.extend_from_slice(&self.kept[..self.kept.len() - cut]);
            quoted.push(b'"');
            if let Ok(text) = serde_json::from_slice::<String>(&quoted) {
                return text;
            }
        }
        String::from_utf8_lossy(&self.kept).into_owned()
    }

    /// Completion tokens: those of the text kept, extrapolated to all that was seen.
    fn tokens(&self, bpe: &CoreBPE) -> u64 {
        if self.seen == 0 {
            return 0;
        }
        let counted = bpe.count_ordinary(&self.text()) as u64;
        let kept = self.kept.len() as u64;
        if kept == 0 || self.seen <= kept {
            return counted;
        }
        (counted as f64 * self.seen as f64 / kept as f64).round() as u64
    }
}

/// The tokenizer for `model` (`cl100k_base` when the name is unknown). Loads it on first use:
/// call off the request path.
pub fn tokenizer(model: Option<&str>) -> &'static CoreBPE {
    let which = model
        .and_then(get_tokenizer)
        .unwrap_or(Tokenizer::Cl100kBase);
    match which {
        Tokenizer::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Tokenizer::O200kHarmony => tiktoken_rs::o200k_harmony_singleton(),
        Tokenizer::P50kBase => tiktoken_rs::p50k_base_singleton(),
        Tokenizer::P50kEdit => tiktoken_rs::p50k_edit_singleton(),
        Tokenizer::R50kBase | Tokenizer::Gpt2 => tiktoken_rs::r50k_base_singleton(),
        Tokenizer::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
    }
}

/// Tokens of `text` for `model`.
pub fn count_text(model: Option<&str>, text: &str) -> u64 {
    tokenizer(model).count_ordinary(text) as u64
}

/// Prompt tokens of a request body: a chat body's messages counted as OpenAI's cookbook does
/// (3 per message, its role, content and name, 1 more with a name, tool calls' names and
/// arguments, 3 to prime the reply), or a legacy completion's `prompt`. Images and audio are not
/// counted. 0 for a body that is neither.
pub fn prompt_tokens(model: Option<&str>, body: &[u8]) -> u64 {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let bpe = tokenizer(model);
    let count = |v: &Value| v.as_str().map_or(0, |s| bpe.count_ordinary(s) as u64);
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        let mut tokens = 3;
        for m in messages {
            tokens += 3 + count(&m["role"]);
            tokens += match &m["content"] {
                Value::Array(parts) => parts.iter().map(|p| count(&p["text"])).sum(),
                other => count(other),
            };
            if m.get("name").is_some() {
                tokens += 1 + count(&m["name"]);
            }
            for call in m["tool_calls"].as_array().into_iter().flatten() {
                tokens +=
                    1 + count(&call["function"]["name"]) + count(&call["function"]["arguments"]);
            }
        }
        return tokens;
    }
    match &body["prompt"] {
        Value::Array(prompts) => prompts.iter().map(count).sum(),
        other => count(other),
    }
}

/// Whether `before` ends with a quoted key of [`KEYS`] (and maybe whitespace). Most colons of
/// an event end other keys: their last letter turns them away first.
fn ends_with_key(before: &[u8]) -> bool {
    let Some(quoted) = before.trim_ascii_end().strip_suffix(b"\"") else {
        return false;
    };
    if !matches!(quoted.last(), Some(b't' | b's' | b'l')) {
        return false;
    }
    KEYS.iter().any(|key| {
        quoted
            .strip_suffix(*key)
            .is_some_and(|rest| rest.ends_with(b"\""))
    })
}

/// What a stream that ended without usage leaves to count.
#[derive(Debug)]
pub struct Job {
    pub text: DeltaText,
    pub request: Bytes,
    /// The model that answered (from the body's tail), else the one the request named.
    pub model: Option<String>,
}

impl Job {
    /// (prompt, completion) tokens.
    pub fn count(&self) -> (u64, u64) {
        let model = self.model.clone().or_else(|| request_model(&self.request));
        let model = model.as_deref();
        let completion = self.text.tokens(tokenizer(model));
        (prompt_tokens(model, &self.request), completion)
    }
}

fn request_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Model {
        model: Option<String>,
    }
    serde_json::from_slice::<Model>(body).ok()?.model
}

/// Count `job` on the blocking pool and add it to `metrics`; `done` runs once it is added.
/// Without a runtime (one shutting down) it is counted here.
pub fn spawn(job: Job, metrics: Arc<EndpointMetrics>, done: impl FnOnce() + Send + 'static) {
    let run = move || {
        let (prompt, completion) = job.count();
        metrics.estimated(prompt, completion);
        done();
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(run);
        }
        Err(_) => run(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(pieces: &[&[u8]]) -> DeltaText {
        let mut t = DeltaText::default();
        for p in pieces {
            t.feed(p);
        }
        t
    }

    const STREAM: &str = concat!(
        "data: {\"id\":\"\",\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \\\"wor\"},\"content_filter_results\":{\"hate\":{\"filtered\":false}}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\": {\"content\": \"ld\\\"\\n\\u00e9\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn keeps_the_delta_text_however_the_stream_is_cut() {
        let whole = collect(&[STREAM.as_bytes()]);
        assert_eq!(whole.text(), "Hello \"world\"\né{\"a\":1}");
        for size in 1..40 {
            let pieces: Vec<&[u8]> = STREAM.as_bytes().chunks(size).collect();
            let t = collect(&pieces);
            assert_eq!(t.text(), whole.text(), "pieces of {size}");
            assert_eq!(t.seen, whole.seen);
        }
    }

    #[test]
    fn other_members_and_non_strings_are_not_text() {
        let t = collect(&[
            br#"{"content_filter_results":{"x":"y"},"reasoning_content":"no","model":"m","content":null,"text":"yes"}"#,
        ]);
        assert_eq!(t.text(), "yes");
    }

    #[test]
    fn past_the_limit_only_the_length_counts_and_the_count_is_extrapolated() {
        let word = "data: {\"choices\":[{\"delta\":{\"content\":\"token \"}}]}\n\n";
        let mut t = DeltaText::default();
        for _ in 0..10_000 {
            t.feed(word.as_bytes());
        }
        assert_eq!(t.kept.len(), TEXT_LIMIT);
        assert_eq!(t.seen, 60_000);
        let tokens = t.tokens(tokenizer(None));
        assert!((9_500..=10_500).contains(&tokens), "{tokens}");
    }

    #[test]
    fn prompt_tokens_follow_the_cookbook() {
        let bpe = tokenizer(Some("gpt-4o"));
        let body = br#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","name":"ann","content":[{"type":"text","text":"Hello there"}]}]}"#;
        let expected = 3
            + (3 + bpe.count_ordinary("system") + bpe.count_ordinary("Be brief."))
            + (3 + bpe.count_ordinary("user") + bpe.count_ordinary("Hello there"))
            + (1 + bpe.count_ordinary("ann"));
        assert_eq!(prompt_tokens(Some("gpt-4o"), body), expected as u64);
        assert_eq!(
            prompt_tokens(None, br#"{"prompt":["one two","three"]}"#),
            count_text(None, "one two") + count_text(None, "three")
        );
        assert_eq!(prompt_tokens(None, b"not json"), 0);
    }

    #[test]
    fn a_job_uses_the_answering_model_else_the_requested_one() {
        let job = Job {
            text: collect(&[STREAM.as_bytes()]),
            request: Bytes::from_static(
                br#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#,
            ),
            model: None,
        };
        let (prompt, completion) = job.count();
        assert_eq!(prompt, prompt_tokens(Some("gpt-4"), &job.request));
        assert_eq!(
            completion,
            count_text(Some("gpt-4"), "Hello \"world\"\né{\"a\":1}")
        );
    }
}

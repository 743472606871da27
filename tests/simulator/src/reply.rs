//! The simulated model's answer: its text, and the JSON that carries it.
//!
//! The reply is deterministic and names the simulator, so a test that runs
//! several backends can tell which one answered. It only depends on the
//! simulator's name and the behaviour, so it is built (and JSON-escaped) once
//! per behaviour change; a request only fills in the id, timestamp, model
//! and token counts around it.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::json::{JsonBuf, escape_into};

/// Words in the reply when `completion_tokens` is not set.
pub(crate) const DEFAULT_REPLY_WORDS: u32 = 16;

/// Longest reply text generated, in words; `usage` still reports the
/// configured `completion_tokens` beyond it.
pub(crate) const MAX_REPLY_WORDS: u32 = 65_536;

/// Model name used when neither the request nor the path names one.
pub(crate) const DEFAULT_MODEL: &str = "simulated-model";

const FILLER: [&str; 12] = [
    "this",
    "is",
    "a",
    "deterministic",
    "answer",
    "from",
    "the",
    "simulated",
    "backend",
    "for",
    "gateway",
    "tests",
];

/// The reply text with its word boundaries, ready to be served whole or in chunks.
#[derive(Debug)]
pub(crate) struct Reply {
    text: String,
    /// Byte offset of each word's start, plus `text.len()` at the end.
    word_starts: Vec<u32>,
    /// `text` as a quoted JSON string.
    content_json: String,
    /// What `usage.completion_tokens` reports.
    pub completion_tokens: u64,
}

impl Reply {
    /// `Simulated reply from <name>: this is a ...`, padded with filler words
    /// to `completion_tokens` words (at least the greeting, at most
    /// [`MAX_REPLY_WORDS`]).
    pub fn new(name: &str, completion_tokens: Option<u32>) -> Self {
        let mut text = format!("Simulated reply from {name}:");
        let greeting_words = text.split_whitespace().count();
        let target = usize::try_from(
            completion_tokens
                .unwrap_or(DEFAULT_REPLY_WORDS)
                .min(MAX_REPLY_WORDS),
        )
        .unwrap_or(0);
        for word in FILLER
            .iter()
            .cycle()
            .take(target.saturating_sub(greeting_words))
        {
            text.push(' ');
            text.push_str(word);
        }
        let word_starts = word_starts(&text);
        let words = u64::try_from(word_starts.len().saturating_sub(1)).unwrap_or(u64::MAX);
        let mut content = Vec::with_capacity(text.len() + 2);
        content.push(b'"');
        escape_into(&mut content, &text);
        content.push(b'"');
        Self {
            content_json: String::from_utf8(content).unwrap_or_else(|_| "\"\"".to_owned()),
            completion_tokens: completion_tokens.map_or(words, u64::from),
            text,
            word_starts,
        }
    }

    #[cfg(test)]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The `index`th of `parts` consecutive slices of the reply, split on
    /// word boundaries; concatenated in order they give the whole text.
    pub fn part(&self, index: u32, parts: u32) -> &str {
        if parts == 0 || index >= parts {
            return "";
        }
        let words = self.word_starts.len().saturating_sub(1) as u64;
        let bound = |i: u64| {
            let word = usize::try_from(i * words / u64::from(parts)).unwrap_or(usize::MAX);
            self.word_starts
                .get(word)
                .map_or(self.text.len(), |&at| at as usize)
        };
        let (from, to) = (bound(u64::from(index)), bound(u64::from(index) + 1));
        self.text.get(from..to).unwrap_or_default()
    }
}

/// Offsets where words start (the first is always 0, so no byte is lost),
/// then the text's length.
fn word_starts(text: &str) -> Vec<u32> {
    let mut starts = vec![0];
    let mut previous_was_space = false;
    for (at, c) in text.char_indices() {
        let space = c.is_whitespace();
        if previous_was_space && !space && at > 0 {
            starts.push(u32::try_from(at).unwrap_or(u32::MAX));
        }
        previous_was_space = space;
    }
    starts.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
    starts
}

/// Token counts of one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

impl Usage {
    pub fn total(self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    /// Writes `{"prompt_tokens":..,"completion_tokens":..,"total_tokens":..}`.
    pub fn write(self, buf: &mut JsonBuf) {
        buf.raw(r#"{"prompt_tokens":"#)
            .num(self.prompt)
            .raw(r#","completion_tokens":"#)
            .num(self.completion)
            .raw(r#","total_tokens":"#)
            .num(self.total())
            .raw("}");
    }
}

/// Seconds since the Unix epoch, for `created`.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Identity of one answer, shared by a JSON answer and all events of a stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Envelope<'a> {
    /// 32 hex digits, unique per request.
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
}

impl Envelope<'_> {
    /// Writes `{"id":"<prefix><id>","object":<object>,"created":..,"model":..,"choices":[`.
    pub fn open(&self, buf: &mut JsonBuf, id_prefix: &str, object: &str) {
        buf.raw(r#"{"id":""#)
            .raw(id_prefix)
            .raw(self.id)
            .raw(r#"","object":""#)
            .raw(object)
            .raw(r#"","created":"#)
            .num(self.created)
            .raw(r#","model":"#)
            .string(self.model)
            .raw(r#","choices":["#);
    }
}

/// A complete `chat.completion` object.
pub(crate) fn chat_completion(envelope: &Envelope<'_>, reply: &Reply, usage: Usage) -> Bytes {
    let mut buf = JsonBuf::with_capacity(320 + envelope.model.len() + reply.content_json.len());
    envelope.open(&mut buf, "chatcmpl-", "chat.completion");
    buf.raw(r#"{"index":0,"message":{"role":"assistant","content":"#)
        .raw(&reply.content_json)
        .raw(r#","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":"#);
    usage.write(&mut buf);
    buf.raw("}");
    buf.into_bytes()
}

/// A complete legacy `text_completion` object.
pub(crate) fn text_completion(envelope: &Envelope<'_>, reply: &Reply, usage: Usage) -> Bytes {
    let mut buf = JsonBuf::with_capacity(300 + envelope.model.len() + reply.content_json.len());
    envelope.open(&mut buf, "cmpl-", "text_completion");
    buf.raw(r#"{"text":"#)
        .raw(&reply.content_json)
        .raw(r#","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":"#);
    usage.write(&mut buf);
    buf.raw("}");
    buf.into_bytes()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const ENVELOPE: Envelope<'static> = Envelope {
        id: "0123456789abcdef0123456789abcdef",
        created: 1_700_000_000,
        model: "gpt-\"4\"",
    };

    #[test]
    fn reply_names_the_simulator_and_has_the_requested_length() {
        let r = Reply::new("east", None);
        assert!(r.text().starts_with("Simulated reply from east: this is"));
        assert_eq!(
            r.text().split_whitespace().count(),
            DEFAULT_REPLY_WORDS as usize
        );
        assert_eq!(r.completion_tokens, u64::from(DEFAULT_REPLY_WORDS));

        let r = Reply::new("east", Some(100));
        assert_eq!(
            (r.text().split_whitespace().count(), r.completion_tokens),
            (100, 100)
        );

        // Usage reports what was asked even when the text cannot shrink or grow that far.
        let r = Reply::new("east", Some(1));
        assert_eq!(
            (r.text(), r.completion_tokens),
            ("Simulated reply from east:", 1)
        );
        let r = Reply::new("x", Some(u32::MAX));
        assert_eq!(
            r.text().split_whitespace().count(),
            MAX_REPLY_WORDS as usize
        );
        assert_eq!(r.completion_tokens, u64::from(u32::MAX));
    }

    #[test]
    fn parts_reassemble_the_text_for_any_split() {
        let r = Reply::new("näme with  spaces", Some(23));
        for parts in [1, 2, 5, 7, 23, 40] {
            let joined: String = (0..parts).map(|i| r.part(i, parts)).collect();
            assert_eq!(joined, r.text(), "parts = {parts}");
        }
        assert_eq!(r.part(0, 0), "");
        assert_eq!(r.part(9, 3), "");
        assert!(!r.part(0, 5).is_empty());
    }

    #[test]
    fn chat_completion_is_a_valid_openai_object() {
        let r = Reply::new("sim", None);
        let usage = Usage {
            prompt: 7,
            completion: r.completion_tokens,
        };
        let v: Value = serde_json::from_slice(&chat_completion(&ENVELOPE, &r, usage)).unwrap();
        assert_eq!(v["id"], "chatcmpl-0123456789abcdef0123456789abcdef");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["created"], 1_700_000_000);
        assert_eq!(v["model"], "gpt-\"4\"");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], r.text());
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["prompt_tokens"], 7);
        assert_eq!(v["usage"]["total_tokens"], 7 + r.completion_tokens);
    }

    #[test]
    fn text_completion_is_a_valid_openai_object() {
        let r = Reply::new("sim\n\"quoted\"", Some(5));
        let usage = Usage {
            prompt: 1,
            completion: 5,
        };
        let v: Value = serde_json::from_slice(&text_completion(&ENVELOPE, &r, usage)).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(v["choices"][0]["text"], r.text());
        assert_eq!(v["usage"]["completion_tokens"], 5);
    }
}

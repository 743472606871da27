//! Counting tokens of streams whose client did not ask for usage: the gateway asks the backend
//! for the final usage chunk (`stream_options.include_usage`) and takes that chunk out of the
//! stream before it reaches the client, who never asked for it.

use bytes::{Bytes, BytesMut};
use memchr::memmem::{self, Finder};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use std::sync::LazyLock;

/// The request body with `stream_options.include_usage` set, other stream options kept.
/// `None` when the body is not a JSON object (already rejected before this point).
pub fn request_usage(body: &[u8]) -> Option<Bytes> {
    append_usage_option(body).or_else(|| rewrite_with_usage_option(body))
}

/// The common case in time proportional to a copy, not a parse: a JSON object that has no
/// `stream_options` gets the member appended before its closing brace. `None` when that does
/// not apply (stream options present, or a key that might spell them with escapes).
fn append_usage_option(body: &[u8]) -> Option<Bytes> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true}"#;
    if OPTIONS_OR_ESCAPE.iter().any(|f| f.find(body).is_some()) {
        return None;
    }
    let object = body.trim_ascii();
    let inner = object.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let mut out = Vec::with_capacity(object.len() + MEMBER.len() + 1);
    out.extend_from_slice(&object[..object.len() - 1]);
    if !inner.trim_ascii().is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(MEMBER);
    out.push(b'}');
    Some(Bytes::from(out))
}

/// Any other JSON object: parsed, given the option, written out again.
fn rewrite_with_usage_option(body: &[u8]) -> Option<Bytes> {
    let mut root: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let options = root
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Value::Object(options) = options {
        options.insert("include_usage".into(), Value::Bool(true));
    }
    serde_json::to_vec(&root).ok().map(Bytes::from)
}

/// Removes the usage-only event from a server-sent event stream, passing everything else on as
/// soon as an event is complete.
#[derive(Debug, Default)]
pub struct UsageStripper {
    pending: BytesMut,
}

impl UsageStripper {
    /// Take one piece of the upstream stream; returns what can go to the client now.
    pub fn feed(&mut self, chunk: &Bytes) -> Bytes {
        if self.pending.is_empty() && chunk.ends_with(b"\n\n") && !mentions_usage(chunk) {
            return chunk.clone();
        }
        self.pending.extend_from_slice(chunk);
        let Some(end) = last_event_end(&self.pending) else {
            return Bytes::new();
        };
        let complete = self.pending.split_to(end).freeze();
        if !mentions_usage(&complete) {
            return complete;
        }
        let mut out = BytesMut::with_capacity(complete.len());
        for event in complete.split_inclusive_events() {
            if !is_usage_only(event) {
                out.extend_from_slice(event);
            }
        }
        out.freeze()
    }

    /// Whatever is left when the stream ends (an unterminated last event).
    pub fn finish(&mut self) -> Bytes {
        self.pending.split().freeze()
    }
}

/// Searchers built once: building one costs more than searching a whole event with it, and
/// the usage check runs on every event of every stream.
static USAGE_OBJECT: LazyLock<[Finder<'static>; 2]> =
    LazyLock::new(|| [Finder::new(b"\"usage\":{"), Finder::new(b"\"usage\": {")]);
static OPTIONS_OR_ESCAPE: LazyLock<[Finder<'static>; 2]> =
    LazyLock::new(|| [Finder::new(b"\"stream_options\""), Finder::new(b"\\u")]);

fn mentions_usage(bytes: &[u8]) -> bool {
    USAGE_OBJECT.iter().any(|f| f.find(bytes).is_some())
}

/// The end (exclusive) of the last complete event: just past its blank line.
fn last_event_end(bytes: &[u8]) -> Option<usize> {
    memmem::rfind(bytes, b"\n\n").map(|i| i + 2)
}

trait Events {
    fn split_inclusive_events(&self) -> Vec<&[u8]>;
}

impl Events for Bytes {
    /// Complete events, each with its terminating blank line.
    fn split_inclusive_events(&self) -> Vec<&[u8]> {
        let mut events = Vec::new();
        let mut start = 0;
        let bytes: &[u8] = self;
        while let Some(i) = memmem::find(&bytes[start..], b"\n\n") {
            events.push(&bytes[start..start + i + 2]);
            start += i + 2;
        }
        if start < bytes.len() {
            events.push(&bytes[start..]);
        }
        events
    }
}

/// An event whose data is a chunk with no choices and a usage object.
fn is_usage_only(event: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<IgnoredAny>,
        usage: Option<IgnoredAny>,
    }
    let text = String::from_utf8_lossy(event);
    let data: String = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    match serde_json::from_str::<Chunk>(&data) {
        Ok(chunk) => chunk.choices.is_empty() && chunk.usage.is_some(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n";
    const CONTENT: &str =
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(pieces: &[&str]) -> String {
        let mut s = UsageStripper::default();
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(&s.feed(&Bytes::copy_from_slice(p.as_bytes())));
        }
        out.extend_from_slice(&s.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn drops_only_the_usage_event() {
        assert_eq!(run(&[CONTENT, USAGE, DONE]), format!("{CONTENT}{DONE}"));
        let all = format!("{CONTENT}{USAGE}{DONE}");
        assert_eq!(run(&[&all]), format!("{CONTENT}{DONE}"));
    }

    #[test]
    fn events_split_across_pieces_are_reassembled() {
        let all = format!("{CONTENT}{USAGE}{DONE}");
        let pieces: Vec<String> = all
            .as_bytes()
            .chunks(7)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        assert_eq!(run(&refs), format!("{CONTENT}{DONE}"));
    }

    #[test]
    fn passes_through_without_copying_when_no_usage() {
        let mut s = UsageStripper::default();
        let piece = Bytes::from_static(CONTENT.as_bytes());
        let out = s.feed(&piece);
        assert_eq!(out.as_ptr(), piece.as_ptr());
    }

    #[test]
    fn appends_usage_option_to_a_body_without_stream_options() {
        for body in [
            &br#"{"stream":true,"messages":[{"role":"user","content":"}"}]}"#[..],
            br#"  {"stream":true}
            "#,
            b"{}",
        ] {
            let out = request_usage(body).unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            let before: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], true);
            for (key, value) in before.as_object().unwrap() {
                assert_eq!(&v[key], value, "{key} kept");
            }
        }
        assert_eq!(request_usage(b"[true]"), None);
    }

    #[test]
    fn injects_usage_keeping_other_options() {
        let body =
            request_usage(br#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#)
                .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["include_obfuscation"], false);
        let body = request_usage(br#"{"stream":true,"stream_options":null}"#).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }
}

//! Reading the parts of a request body the simulator cares about.
//!
//! The simulator needs only a summary of a chat or completion request — the
//! model, the stream flags, a word count for `usage`, and whether the prompt
//! asks for the content filter — so message contents are measured while
//! they are parsed instead of being collected: reading a request allocates
//! nothing unless a string needs unescaping. Embedding requests keep their
//! input texts, borrowed from the body when possible.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A word that makes a prompt trip the simulated content filter.
pub const CONTENT_FILTER_TRIGGER: &str = "trigger-content-filter";

/// Most inputs one embeddings request may carry (OpenAI's limit).
pub(crate) const MAX_EMBEDDING_INPUTS: usize = 2048;

/// Largest `dimensions` an embeddings request may ask for.
pub(crate) const MAX_DIMENSIONS: u64 = 4096;

/// Vector size when a request does not ask for one (ada-002's).
pub(crate) const DEFAULT_DIMENSIONS: usize = 1536;

/// Token overhead the simulator charges per chat message.
pub(crate) const TOKENS_PER_MESSAGE: u64 = 3;

/// Counts whitespace-separated words: the simulator's token estimate.
pub(crate) fn count_words(text: &str) -> u64 {
    u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX)
}

/// A JSON string, borrowed from the body when it holds no escapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor(PhantomData))
    }
}

/// What the simulator needs to know about a piece of prompt text.
///
/// Deserialises from any JSON: strings are measured, numbers (token ids)
/// count one word each, arrays add up their items, objects add up their
/// `text` members (chat content parts), and everything else counts nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TextStats {
    pub words: u64,
    pub flagged: bool,
}

impl TextStats {
    pub fn of(text: &str) -> Self {
        Self {
            words: count_words(text),
            flagged: text.contains(CONTENT_FILTER_TRIGGER),
        }
    }

    fn add(&mut self, other: Self) {
        self.words = self.words.saturating_add(other.words);
        self.flagged |= other.flagged;
    }
}

impl<'de> Deserialize<'de> for TextStats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextStatsVisitor)
    }
}

struct TextStatsVisitor;

impl<'de> Visitor<'de> for TextStatsVisitor {
    type Value = TextStats;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("prompt text")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<TextStats, E> {
        Ok(TextStats::of(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextStats, E> {
        Ok(TextStats::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextStats, E> {
        Ok(TextStats {
            words: 1,
            flagged: false,
        })
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextStats, E> {
        Ok(TextStats {
            words: 1,
            flagged: false,
        })
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextStats, E> {
        Ok(TextStats {
            words: 1,
            flagged: false,
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<TextStats, E> {
        Ok(TextStats::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<TextStats, E> {
        Ok(TextStats::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<TextStats, D::Error> {
        TextStats::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextStats, A::Error> {
        let mut total = TextStats::default();
        while let Some(item) = seq.next_element::<TextStats>()? {
            total.add(item);
        }
        Ok(total)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextStats, A::Error> {
        let mut total = TextStats::default();
        while let Some(key) = map.next_key::<PartKey>()? {
            match key {
                PartKey::Text => total.add(map.next_value::<TextStats>()?),
                PartKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(total)
    }
}

/// A key of a chat content part: only `text` matters.
enum PartKey {
    Text,
    Other,
}

impl<'de> Deserialize<'de> for PartKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = PartKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PartKey, E> {
                Ok(if v == "text" {
                    PartKey::Text
                } else {
                    PartKey::Other
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// The `messages` array of a chat request, summarised.
#[derive(Clone, Copy, Debug, Default)]
struct Messages {
    count: u64,
    text: TextStats,
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessagesVisitor;
        impl<'de> Visitor<'de> for MessagesVisitor {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let mut all = Messages::default();
                while let Some(message) = seq.next_element::<Message>()? {
                    all.count += 1;
                    all.text.add(message.content);
                }
                Ok(all)
            }
        }
        deserializer.deserialize_seq(MessagesVisitor)
    }
}

#[derive(serde::Deserialize)]
struct Message {
    #[serde(default)]
    content: TextStats,
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(serde::Deserialize)]
struct ChatBody<'a> {
    #[serde(borrow)]
    model: Option<Text<'a>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    messages: Option<Messages>,
}

#[derive(serde::Deserialize)]
struct CompletionBody<'a> {
    #[serde(borrow)]
    model: Option<Text<'a>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    prompt: Option<TextStats>,
}

/// A chat or completion request, as far as the simulator cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Generation<'a> {
    pub model: Option<Cow<'a, str>>,
    pub stream: bool,
    pub include_usage: bool,
    pub prompt_tokens: u64,
    /// The prompt contains [`CONTENT_FILTER_TRIGGER`].
    pub flagged: bool,
}

fn unreadable(e: &serde_json::Error) -> String {
    format!("We could not parse the JSON body of your request. ({e})")
}

fn include_usage(options: Option<StreamOptions>) -> bool {
    options.and_then(|o| o.include_usage).unwrap_or(false)
}

/// Reads a `chat/completions` body.
pub(crate) fn chat(body: &[u8]) -> Result<Generation<'_>, String> {
    let parsed: ChatBody<'_> = serde_json::from_slice(body).map_err(|e| unreadable(&e))?;
    let messages = parsed
        .messages
        .ok_or_else(|| "'messages' is a required property".to_owned())?;
    Ok(Generation {
        model: parsed.model.map(|m| m.0),
        stream: parsed.stream.unwrap_or(false),
        include_usage: include_usage(parsed.stream_options),
        prompt_tokens: messages
            .text
            .words
            .saturating_add(messages.count.saturating_mul(TOKENS_PER_MESSAGE)),
        flagged: messages.text.flagged,
    })
}

/// Reads a legacy `completions` body.
pub(crate) fn completion(body: &[u8]) -> Result<Generation<'_>, String> {
    let parsed: CompletionBody<'_> = serde_json::from_slice(body).map_err(|e| unreadable(&e))?;
    let prompt = parsed.prompt.unwrap_or_default();
    Ok(Generation {
        model: parsed.model.map(|m| m.0),
        stream: parsed.stream.unwrap_or(false),
        include_usage: include_usage(parsed.stream_options),
        prompt_tokens: prompt.words,
        flagged: prompt.flagged,
    })
}

/// An embeddings request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EmbeddingRequest<'a> {
    pub model: Option<Cow<'a, str>>,
    pub inputs: Vec<Cow<'a, str>>,
    pub dimensions: usize,
    pub base64: bool,
}

#[derive(serde::Deserialize)]
struct EmbeddingBody<'a> {
    #[serde(borrow)]
    model: Option<Text<'a>>,
    #[serde(borrow)]
    input: Option<Inputs<'a>>,
    dimensions: Option<u64>,
    #[serde(borrow)]
    encoding_format: Option<Text<'a>>,
}

/// The `input` of an embeddings request: a string, an array of strings, an
/// array of token ids (one input) or an array of token-id arrays. Token ids
/// are embedded as the text of their numbers.
struct Inputs<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Inputs<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputsVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for InputsVisitor<'a> {
            type Value = Inputs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array of strings or an array of token ids")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Inputs(vec![Cow::Borrowed(v)]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Inputs(vec![Cow::Owned(v.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut texts = Vec::new();
                let mut tokens: Option<String> = None;
                while let Some(item) = seq.next_element::<InputItem<'a>>()? {
                    if texts.len() >= MAX_EMBEDDING_INPUTS {
                        return Err(de::Error::custom(format!(
                            "at most {MAX_EMBEDDING_INPUTS} inputs are allowed"
                        )));
                    }
                    match item {
                        InputItem::Text(text) if tokens.is_none() => texts.push(text),
                        InputItem::Token(id) if texts.is_empty() => {
                            let joined = tokens.get_or_insert_with(String::new);
                            if !joined.is_empty() {
                                joined.push(' ');
                            }
                            joined.push_str(itoa::Buffer::new().format(id));
                        }
                        _ => {
                            return Err(de::Error::custom(
                                "input mixes token ids with other items",
                            ));
                        }
                    }
                }
                if let Some(joined) = tokens {
                    texts.push(Cow::Owned(joined));
                }
                Ok(Inputs(texts))
            }
        }
        deserializer.deserialize_any(InputsVisitor(PhantomData))
    }
}

/// One item of an `input` array.
enum InputItem<'a> {
    Text(Cow<'a, str>),
    Token(u64),
}

impl<'de: 'a, 'a> Deserialize<'de> for InputItem<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ItemVisitor<'a> {
            type Value = InputItem<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token id or an array of token ids")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(InputItem::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(InputItem::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(InputItem::Token(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut joined = String::new();
                while let Some(id) = seq.next_element::<u64>()? {
                    if !joined.is_empty() {
                        joined.push(' ');
                    }
                    joined.push_str(itoa::Buffer::new().format(id));
                }
                Ok(InputItem::Text(Cow::Owned(joined)))
            }
        }
        deserializer.deserialize_any(ItemVisitor(PhantomData))
    }
}

/// Reads an `embeddings` body.
pub(crate) fn embeddings(body: &[u8]) -> Result<EmbeddingRequest<'_>, String> {
    let parsed: EmbeddingBody<'_> = serde_json::from_slice(body).map_err(|e| unreadable(&e))?;
    let inputs = parsed
        .input
        .ok_or_else(|| "'input' is a required property".to_owned())?
        .0;
    if inputs.is_empty() {
        return Err("'input' must not be empty".to_owned());
    }
    let dimensions = match parsed.dimensions {
        None => DEFAULT_DIMENSIONS,
        Some(d @ 1..=MAX_DIMENSIONS) => usize::try_from(d).unwrap_or(DEFAULT_DIMENSIONS),
        Some(d) => {
            return Err(format!(
                "'dimensions' must be within 1..={MAX_DIMENSIONS}, got {d}"
            ));
        }
    };
    let base64 = match parsed.encoding_format.as_ref().map(|f| f.0.as_ref()) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(format!(
                "'encoding_format' must be 'float' or 'base64', got {other:?}"
            ));
        }
    };
    Ok(EmbeddingRequest {
        model: parsed.model.map(|m| m.0),
        inputs,
        dimensions,
        base64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_summary() {
        let g = chat(
            br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},
                "messages":[{"role":"system","content":"be brief"},
                            {"role":"user","content":[{"type":"text","text":"hello there world"},
                                                      {"type":"image_url","image_url":{"url":"data:x"}}]},
                            {"role":"assistant","content":null,"tool_calls":[]}],
                "temperature":0.2}"#,
        )
        .unwrap();
        assert_eq!(g.model.as_deref(), Some("gpt-4o"));
        assert!(g.stream && g.include_usage && !g.flagged);
        assert_eq!(g.prompt_tokens, 2 + 3 + 3 * TOKENS_PER_MESSAGE);
        assert!(matches!(g.model, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn chat_defaults_and_errors() {
        let g = chat(br#"{"messages":[],"stream_options":null}"#).unwrap();
        assert_eq!(
            (g.model, g.stream, g.include_usage, g.prompt_tokens),
            (None, false, false, 0)
        );
        assert!(chat(br#"{"model":"x"}"#).unwrap_err().contains("messages"));
        assert!(chat(b"{").is_err());
        assert!(chat(br#"{"messages":{}}"#).is_err());
        assert!(chat(br#"{"messages":[],"stream":"yes"}"#).is_err());
    }

    #[test]
    fn escaped_model_names_are_unescaped() {
        let g = chat(br#"{"model":"a\"b","messages":[]}"#).unwrap();
        assert_eq!(g.model.as_deref(), Some("a\"b"));
    }

    #[test]
    fn content_filter_trigger_is_found_anywhere_in_the_messages() {
        let g = chat(br#"{"messages":[{"role":"user","content":"hi"},{"role":"user","content":[{"type":"text","text":"please trigger-content-filter now"}]}]}"#).unwrap();
        assert!(g.flagged);
        let g =
            chat(br#"{"messages":[{"role":"user","content":"trigger content filter"}]}"#).unwrap();
        assert!(!g.flagged);
    }

    #[test]
    fn completion_prompts_of_every_shape() {
        assert_eq!(
            completion(br#"{"prompt":"one two three"}"#)
                .unwrap()
                .prompt_tokens,
            3
        );
        assert_eq!(
            completion(br#"{"prompt":["one two","three"]}"#)
                .unwrap()
                .prompt_tokens,
            3
        );
        assert_eq!(
            completion(br#"{"prompt":[1,2,3,4]}"#)
                .unwrap()
                .prompt_tokens,
            4
        );
        assert_eq!(
            completion(br#"{"prompt":[[1,2],[3]]}"#)
                .unwrap()
                .prompt_tokens,
            3
        );
        assert_eq!(completion(br#"{}"#).unwrap().prompt_tokens, 0);
        assert!(
            completion(br#"{"prompt":"trigger-content-filter"}"#)
                .unwrap()
                .flagged
        );
    }

    #[test]
    fn embedding_inputs_of_every_shape() {
        let r = embeddings(br#"{"input":"hello world","model":"e"}"#).unwrap();
        assert_eq!(
            (r.inputs.len(), r.dimensions, r.base64),
            (1, DEFAULT_DIMENSIONS, false)
        );
        let r = embeddings(br#"{"input":["a","b\n"],"dimensions":8,"encoding_format":"base64"}"#)
            .unwrap();
        assert_eq!(
            r.inputs,
            vec![Cow::Borrowed("a"), Cow::Owned("b\n".to_owned())]
        );
        assert_eq!((r.dimensions, r.base64), (8, true));
        assert_eq!(
            embeddings(br#"{"input":[5,6]}"#).unwrap().inputs,
            vec![Cow::<str>::Owned("5 6".into())]
        );
        assert_eq!(
            embeddings(br#"{"input":[[5],[6,7]]}"#)
                .unwrap()
                .inputs
                .len(),
            2
        );
    }

    #[test]
    fn embedding_errors() {
        for bad in [
            &br#"{}"#[..],
            br#"{"input":[]}"#,
            br#"{"input":"x","dimensions":0}"#,
            br#"{"input":"x","dimensions":100000}"#,
            br#"{"input":"x","encoding_format":"hex"}"#,
            br#"{"input":["x",1]}"#,
            br#"{"input":[1,"x"]}"#,
            br#"{"input":{"a":1}}"#,
            br#"{"input":[-1]}"#,
        ] {
            assert!(embeddings(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many = format!(
            "{{\"input\":[{}]}}",
            vec!["\"x\""; MAX_EMBEDDING_INPUTS + 1].join(",")
        );
        assert!(embeddings(many.as_bytes()).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "{{\"prompt\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(completion(deep.as_bytes()).is_err());
    }
}

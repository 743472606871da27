//! Setting a request body's top-level `model` for an endpoint that names its model.
//!
//! Azure's v1 surface and Foundry endpoints read the deployment from the body's `model`, which a
//! client of the gateway sets to the application id (or to anything). An endpoint that names its
//! `model` gets it in the body instead. Most bodies are rewritten by splicing: one pass over the
//! JSON finds the top-level `model` member's value (string contents are skipped with `memchr`),
//! and the new value is copied in its place, or inserted as the first member. Only bodies the
//! scan cannot judge safely (a key spelled with escapes, a repeated `model`) are parsed and
//! written out again.

use bytes::Bytes;
use serde_json::{Map, Value};

/// `body` with its top-level `model` set to `model`, or `None` when `body` is not a JSON
/// object (it is then sent as it came).
pub fn set_model(body: &[u8], model: &str) -> Option<Bytes> {
    let value = Value::String(model.to_owned()).to_string();
    match scan(body) {
        Some(Member::Found(start, end)) => {
            let mut out = Vec::with_capacity(body.len() - (end - start) + value.len());
            out.extend_from_slice(&body[..start]);
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(&body[end..]);
            Some(out.into())
        }
        Some(Member::Absent { open, empty }) => {
            let mut out = Vec::with_capacity(body.len() + value.len() + 10);
            out.extend_from_slice(&body[..open]);
            out.extend_from_slice(b"\"model\":");
            out.extend_from_slice(value.as_bytes());
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(&body[open..]);
            Some(out.into())
        }
        None => {
            let mut root: Map<String, Value> = serde_json::from_slice(body).ok()?;
            root.insert("model".into(), Value::String(model.to_owned()));
            serde_json::to_vec(&root).ok().map(Bytes::from)
        }
    }
}

/// Where the top-level `model` is.
#[derive(Debug, PartialEq, Eq)]
enum Member {
    /// Its value spans `body[start..end]`.
    Found(usize, usize),
    /// There is none; members start at `open` (just past the `{`), and there are none if `empty`.
    Absent { open: usize, empty: bool },
}

/// One pass over a JSON object's top level. `None` when the body is not a well-formed object
/// the scan is sure about (the caller then parses it).
fn scan(body: &[u8]) -> Option<Member> {
    let mut at = skip_space(body, 0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    let open = at;
    let mut found = None;
    let mut empty = true;
    loop {
        at = skip_space(body, at);
        if body.get(at) == Some(&b'}') && empty {
            break;
        }
        if body.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(body, at)?;
        let key = &body[at + 1..key_end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        at = skip_space(body, key_end);
        if body.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_space(body, at + 1);
        let end = value_end(body, start)?;
        if key == b"model" {
            if found.is_some() {
                return None;
            }
            found = Some((start, end));
        }
        empty = false;
        at = skip_space(body, end);
        match body.get(at) {
            Some(b',') => at += 1,
            Some(b'}') => break,
            _ => return None,
        }
    }
    if skip_space(body, at + 1) != body.len() {
        return None;
    }
    Some(match found {
        Some((start, end)) => Member::Found(start, end),
        None => Member::Absent { open, empty },
    })
}

fn skip_space(body: &[u8], mut at: usize) -> usize {
    while body
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// Just past the string that opens at `body[at]` (a `"`).
fn string_end(body: &[u8], at: usize) -> Option<usize> {
    let mut from = at + 1;
    loop {
        let found = from + memchr::memchr2(b'"', b'\\', body.get(from..)?)?;
        if body[found] == b'"' {
            return Some(found + 1);
        }
        from = found + 2;
    }
}

/// Just past the value that starts at `body[at]`.
fn value_end(body: &[u8], at: usize) -> Option<usize> {
    match body.get(at)? {
        b'"' => string_end(body, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match body.get(i)? {
                    b'"' => {
                        i = string_end(body, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len = body[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))?;
            (len > 0).then_some(at + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(body: &str, model: &str) -> Value {
        let out = set_model(body.as_bytes(), model).expect("a JSON object");
        serde_json::from_slice(&out).expect("still JSON")
    }

    #[test]
    fn an_existing_model_is_replaced_in_place() {
        let body = r#"{"messages":[{"role":"user","content":"a \"model\": {x}"}],"model":"chatbot","stream":true}"#;
        let out = set_model(body.as_bytes(), "gpt-4o-mini").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"messages":[{"role":"user","content":"a \"model\": {x}"}],"model":"gpt-4o-mini","stream":true}"#
        );
        assert_eq!(
            set(r#" { "model" : null , "n": 1 } "#, "m"),
            json!({"model": "m", "n": 1})
        );
        assert_eq!(
            set(r#"{"model":{"a":[1,"}"]}}"#, "m"),
            json!({"model": "m"})
        );
        assert_eq!(
            set(r#"{"x":[1,2,{"model":"inner"}],"model":7}"#, "m"),
            json!({"x": [1, 2, {"model": "inner"}], "model": "m"})
        );
    }

    #[test]
    fn a_missing_model_is_inserted_first() {
        let out = set_model(br#"{"input":"hi"}"#, "text-embedding-3-small").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"text-embedding-3-small","input":"hi"}"#
        );
        assert_eq!(set("{}", "m"), json!({"model": "m"}));
        assert_eq!(set(" { \n } ", "m"), json!({"model": "m"}));
        // Only the top level counts.
        assert_eq!(
            set(r#"{"tools":[{"model":"x"}],"n":true}"#, "m"),
            json!({"model": "m", "tools": [{"model": "x"}], "n": true})
        );
    }

    #[test]
    fn model_names_are_json_escaped() {
        assert_eq!(
            set(r#"{"model":"a"}"#, "we\"ird\\"),
            json!({"model": "we\"ird\\"})
        );
    }

    #[test]
    fn doubtful_bodies_are_parsed_instead() {
        assert_eq!(scan(br#"{"mod\u0065l":"x"}"#), None);
        assert_eq!(
            set(r#"{"mod\u0065l":"x","n":1}"#, "m"),
            json!({"model": "m", "n": 1})
        );
        assert_eq!(scan(br#"{"model":"a","model":"b"}"#), None);
        assert_eq!(
            set(r#"{"model":"a","model":"b"}"#, "m"),
            json!({"model": "m"})
        );
    }

    #[test]
    fn non_objects_are_left_alone() {
        for body in [
            "",
            "[]",
            "\"model\"",
            "{\"model\":",
            "{\"a\":1} x",
            "not json",
        ] {
            assert_eq!(set_model(body.as_bytes(), "m"), None, "{body:?}");
        }
    }

    #[test]
    fn the_scan_agrees_with_a_parser_on_nested_strings() {
        let body = json!({
            "messages": [{"role": "user", "content": "}]\\\"{["}],
            "model": "x",
            "temperature": 0.5,
            "stop": ["\n"],
        })
        .to_string();
        let Some(Member::Found(start, end)) = scan(body.as_bytes()) else {
            panic!("model not found in {body}");
        };
        assert_eq!(&body[start..end], "\"x\"");
    }
}

//! Deterministic embeddings whose geometry loosely follows meaning.
//!
//! A semantic cache in front of the gateway compares embeddings by cosine
//! similarity, so random vectors would not do: the simulator hashes
//! features of the text into a vector (a "hashing trick" bag of words).
//! Each lower-cased word, and each pair of neighbouring words, adds ±weight
//! to a few coordinates picked by a fixed 64-bit hash (FNV-1a, then
//! SplitMix64); the sum is scaled to unit length. Identical texts give
//! identical vectors, texts sharing most words point the same way, and
//! unrelated texts are nearly orthogonal.

use bytes::Bytes;

use crate::json::JsonBuf;
use crate::reply::Usage;
use crate::request::{EmbeddingRequest, count_words};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Coordinates each feature touches.
const SLOTS_PER_FEATURE: usize = 4;
const WORD_WEIGHT: f32 = 1.0;
const BIGRAM_WEIGHT: f32 = 0.5;

/// Calls `f` with the hash of each lower-cased alphanumeric word of `text`.
fn for_each_word(text: &str, mut f: impl FnMut(u64)) {
    let mut hash = FNV_OFFSET;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            for lower in c.to_lowercase() {
                let mut utf8 = [0; 4];
                for &byte in lower.encode_utf8(&mut utf8).as_bytes() {
                    hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
                }
            }
            in_word = true;
        } else if in_word {
            f(hash);
            hash = FNV_OFFSET;
            in_word = false;
        }
    }
    if in_word {
        f(hash);
    }
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Adds `±weight` to the coordinates `feature` hashes to.
fn scatter(vector: &mut [f32], feature: u64, weight: f32) {
    let dims = vector.len() as u64;
    if dims == 0 {
        return;
    }
    let mut state = feature;
    for _ in 0..SLOTS_PER_FEATURE {
        state = splitmix64(state);
        let index = usize::try_from(state % dims).unwrap_or(0);
        let signed = if state >> 63 == 0 { weight } else { -weight };
        if let Some(x) = vector.get_mut(index) {
            *x += signed;
        }
    }
}

/// Writes the unit-length embedding of `text` with `dims` coordinates into `out`.
pub(crate) fn embed_into(text: &str, dims: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(dims, 0.0);
    let mut previous = None;
    for_each_word(text, |word| {
        scatter(out, word, WORD_WEIGHT);
        if let Some(before) = previous {
            scatter(
                out,
                splitmix64(before).rotate_left(21) ^ word,
                BIGRAM_WEIGHT,
            );
        }
        previous = Some(word);
    });
    if previous.is_none() {
        // No words at all: still a deterministic unit vector.
        scatter(out, FNV_OFFSET, WORD_WEIGHT);
    }
    let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The embedding of `text` with `dims` coordinates.
pub fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dims);
    embed_into(text, dims, &mut out);
    out
}

/// Cosine similarity of two vectors (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norms =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norms > 0.0 { dot / norms } else { 0.0 }
}

/// Appends the standard (padded) base64 encoding of `bytes`.
fn base64_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol = |sextet: u32| ALPHABET[(sextet & 63) as usize];
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let triple = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        out.push(symbol(triple >> 18));
        out.push(symbol(triple >> 12));
        out.push(if chunk.len() > 1 {
            symbol(triple >> 6)
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            symbol(triple)
        } else {
            b'='
        });
    }
}

/// The `embeddings` answer for `request`, and the tokens it used.
pub(crate) fn response(
    request: &EmbeddingRequest<'_>,
    model: &str,
) -> Result<(Bytes, Usage), String> {
    let per_vector = if request.base64 {
        request.dimensions * 4 * 4 / 3 + 8
    } else {
        request.dimensions * 12
    };
    let mut buf =
        JsonBuf::with_capacity(128 + model.len() + request.inputs.len() * (per_vector + 48));
    buf.raw(r#"{"object":"list","data":["#);
    let mut vector = Vec::with_capacity(request.dimensions);
    let mut scratch = Vec::new();
    let mut tokens = 0u64;
    for (index, text) in request.inputs.iter().enumerate() {
        tokens = tokens.saturating_add(count_words(text));
        embed_into(text, request.dimensions, &mut vector);
        if index > 0 {
            buf.raw(",");
        }
        buf.raw(r#"{"object":"embedding","index":"#)
            .num(index as u64)
            .raw(r#","embedding":"#);
        scratch.clear();
        if request.base64 {
            let raw: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            scratch.push(b'"');
            base64_into(&mut scratch, &raw);
            scratch.push(b'"');
        } else {
            serde_json::to_writer(&mut scratch, &vector).map_err(|e| e.to_string())?;
        }
        buf.raw_bytes(&scratch).raw("}");
    }
    let usage = Usage {
        prompt: tokens,
        completion: 0,
    };
    buf.raw(r#"],"model":"#)
        .string(model)
        .raw(r#","usage":{"prompt_tokens":"#)
        .num(tokens)
        .raw(r#","total_tokens":"#)
        .num(tokens)
        .raw("}}");
    Ok((buf.into_bytes(), usage))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::Value;

    use super::*;

    const D: usize = 1536;

    #[test]
    fn identical_texts_give_identical_unit_vectors() {
        let a = embed("The quick brown fox", D);
        assert_eq!(a, embed("The quick brown fox", D));
        assert_eq!(
            a,
            embed("the QUICK, brown fox!", D),
            "case and punctuation do not matter"
        );
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(embed("", D), embed("  ...  ", D));
        assert!((cosine(&embed("", D), &embed("", D)) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn similar_texts_are_close_and_unrelated_ones_are_not() {
        let a = embed("the quick brown fox jumps over the lazy dog", D);
        let b = embed("the quick brown fox jumped over the lazy dog", D);
        let c = embed("quarterly revenue grew in every region except europe", D);
        let similar = cosine(&a, &b);
        let unrelated = cosine(&a, &c);
        assert!(similar > 0.8, "similar texts: {similar}");
        assert!(unrelated.abs() < 0.2, "unrelated texts: {unrelated}");
        // Word order matters a little (bigrams), but not much.
        let shuffled = embed("over the lazy dog the quick brown fox jumps", D);
        let reordered = cosine(&a, &shuffled);
        assert!(
            reordered > 0.7 && reordered < 0.999,
            "reordered: {reordered}"
        );
    }

    #[test]
    fn any_dimension_works() {
        for dims in [1, 2, 3, 256, 3072] {
            let v = embed("hello world", dims);
            assert_eq!(v.len(), dims);
            assert!(v.iter().all(|x| x.is_finite()));
        }
        assert!(embed("x", 0).is_empty());
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        let encode = |bytes: &[u8]| {
            let mut out = Vec::new();
            base64_into(&mut out, bytes);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn response_shape_and_usage() {
        let request = EmbeddingRequest {
            model: None,
            inputs: vec![Cow::Borrowed("hello world"), Cow::Borrowed("bye")],
            dimensions: 8,
            base64: false,
        };
        let (body, usage) = response(&request, "emb").unwrap();
        assert_eq!(usage.prompt, 3);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "emb");
        assert_eq!(
            v["usage"],
            serde_json::json!({"prompt_tokens": 3, "total_tokens": 3})
        );
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][0]["object"], "embedding");
        let got: Vec<f32> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(got, embed("hello world", 8));

        let b64 = EmbeddingRequest {
            base64: true,
            ..request
        };
        let (body, _) = response(&b64, "emb").unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        // 8 floats = 32 bytes = 44 base64 characters.
        assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 44);
    }
}

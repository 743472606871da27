//! Unit tests of [`super`] (`usage_chunk`).

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

// Line ends, and the (line end, blank line's line end) pairs that end an event. A CR then
// an LF is one line end (a CRLF), so (CR, LF) is not among them.
const LF: &str = "\n";
const CR: &str = "\r";
const CRLF: &str = "\r\n";
const ENDINGS: [(&str, &str); 8] = [
    (LF, LF),
    (LF, CR),
    (LF, CRLF),
    (CR, CR),
    (CR, CRLF),
    (CRLF, LF),
    (CRLF, CR),
    (CRLF, CRLF),
];

/// The lines of the test stream's events; the one at `USAGE_AT` is the usage event.
const EVENTS: [&[&str]; 6] = [
    &[": keep-alive"],
    &["data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}],\"usage\":null}"],
    &[
        "id: 2",
        "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}",
    ],
    &["data: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}"],
    &[
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}",
    ],
    &["data: [DONE]"],
];
const USAGE_AT: usize = 4;

/// One event: its lines each ended by `eol`, then the blank line's `blank`.
fn event(lines: &[&str], (eol, blank): (&str, &str)) -> String {
    let mut out: String = lines.iter().map(|l| format!("{l}{eol}")).collect();
    out.push_str(blank);
    out
}

/// The test stream with event `i` framed by `ending(i)`, and the same without its usage
/// event.
fn stream(ending: impl Fn(usize) -> (&'static str, &'static str)) -> (Vec<u8>, Vec<u8>) {
    let (mut all, mut kept) = (String::new(), String::new());
    for (i, lines) in EVENTS.iter().enumerate() {
        let e = event(lines, ending(i));
        all.push_str(&e);
        if i != USAGE_AT {
            kept.push_str(&e);
        }
    }
    (all.into_bytes(), kept.into_bytes())
}

/// Every framing: uniform LF, CRLF and CR, and mixtures giving each event (the usage
/// event among them) each pair of line ends in turn.
fn framings() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, e) in [("LF", (LF, LF)), ("CRLF", (CRLF, CRLF)), ("CR", (CR, CR))] {
        let (all, kept) = stream(|_| e);
        out.push((name.to_string(), all, kept));
    }
    for shift in 0..ENDINGS.len() {
        let (all, kept) = stream(|i| ENDINGS[(i + shift) % ENDINGS.len()]);
        out.push((format!("mixed {shift}"), all, kept));
    }
    out
}

/// What the client gets for `pieces`, checking the bound after every piece.
fn strip<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut s = UsageStripper::default();
    let mut out = Vec::new();
    for p in pieces {
        out.extend_from_slice(&s.feed(&Bytes::copy_from_slice(p)));
        assert!(s.held() <= HELD_LIMIT);
    }
    out.extend_from_slice(&s.finish());
    out
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

#[test]
fn every_framing_split_in_two_at_every_byte_loses_only_the_usage_event() {
    for (name, all, kept) in framings() {
        for at in 0..=all.len() {
            let (a, b) = all.split_at(at);
            let out = strip([a, b]);
            assert!(out == kept, "{name}, split at {at}: {}", show(&out));
        }
    }
}

#[test]
fn every_framing_one_byte_per_piece_loses_only_the_usage_event() {
    for (name, all, kept) in framings() {
        let out = strip(all.chunks(1));
        assert!(out == kept, "{name}: {}", show(&out));
    }
}

#[test]
fn every_framing_split_in_three_loses_only_the_usage_event() {
    for (name, all, kept) in framings() {
        for at in 0..=all.len() {
            for len in [1, 2, 3] {
                let end = (at + len).min(all.len());
                let out = strip([&all[..at], &all[at..end], &all[end..]]);
                assert!(out == kept, "{name}, split at {at}+{len}: {}", show(&out));
            }
        }
    }
}

#[test]
fn complete_events_in_any_framing_pass_without_copying() {
    for (eol, blank) in ENDINGS {
        let mut s = UsageStripper::default();
        let first = Bytes::from(event(EVENTS[1], (eol, blank)));
        assert_eq!(s.feed(&first).as_ptr(), first.as_ptr(), "{eol:?} {blank:?}");
        let second = Bytes::from(event(EVENTS[2], (eol, blank)) + &event(EVENTS[3], (eol, blank)));
        assert_eq!(
            s.feed(&second).as_ptr(),
            second.as_ptr(),
            "{eol:?} {blank:?}"
        );
    }
}

#[test]
fn an_endless_line_passes_through_holding_at_most_the_bound() {
    const PIECE: usize = 8 * 1024;
    let mut line = b"data: ".to_vec();
    line.resize(20 * 1024 * 1024, b'x');
    let line = Bytes::from(line);
    let mut s = UsageStripper::default();
    let mut out = Vec::with_capacity(line.len());
    for start in (0..line.len()).step_by(PIECE) {
        let piece = line.slice(start..(start + PIECE).min(line.len()));
        let given = s.feed(&piece);
        assert!(s.held() <= HELD_LIMIT, "held {} at {start}", s.held());
        if start > HELD_LIMIT {
            assert_eq!(given.len(), piece.len(), "passed through at {start}");
        }
        out.extend_from_slice(&given);
    }
    out.extend_from_slice(&s.finish());
    assert!(out == line, "the line reaches the client unchanged");
}

#[test]
fn after_an_oversized_event_the_usage_event_is_still_dropped() {
    let big = format!("data: {}", "y".repeat(HELD_LIMIT + 5000));
    for (name, e) in [("LF", (LF, LF)), ("CRLF", (CRLF, CRLF)), ("CR", (CR, CR))] {
        let (rest, rest_kept) = stream(|_| e);
        let mut all = event(&[&big], e).into_bytes();
        let mut kept = all.clone();
        all.extend_from_slice(&rest);
        kept.extend_from_slice(&rest_kept);
        for size in [1, 7, 4096, HELD_LIMIT, HELD_LIMIT + 5003, all.len()] {
            let out = strip(all.chunks(size));
            assert!(
                out == kept,
                "{name}, pieces of {size}: {}",
                show(&out[out.len().saturating_sub(400)..])
            );
        }
        // Split just after the held bytes would pass the bound, and at its blank line.
        for at in [
            HELD_LIMIT - 1,
            HELD_LIMIT,
            HELD_LIMIT + 1,
            big.len(),
            big.len() + 1,
            big.len() + 2,
        ] {
            let (a, b) = all.split_at(at);
            assert!(strip([a, b]) == kept, "{name}, split at {at}");
        }
    }
}

#[test]
fn a_json_answer_passes_through_as_it_comes() {
    let answer = "\n  {\"id\":\"c\",\n\n\"choices\":[],\n\n\"usage\":{\"total_tokens\":3}}";
    let mut s = UsageStripper::default();
    let mut out = Vec::new();
    for piece in answer.as_bytes().chunks(5) {
        let given = s.feed(&Bytes::copy_from_slice(piece));
        assert_eq!(s.held(), 0);
        out.extend_from_slice(&given);
    }
    out.extend_from_slice(&s.finish());
    assert_eq!(out, answer.as_bytes());
}

#[test]
fn a_usage_event_over_two_data_lines_is_dropped() {
    let usage =
        "data: {\"id\":\"c\",\"choices\":[],\r\ndata: \"usage\":{\"total_tokens\":3}}\r\n\r\n";
    let all = format!("{CONTENT}{usage}{DONE}");
    assert_eq!(run(&[&all]), format!("{CONTENT}{DONE}"));
}

#[test]
fn an_unterminated_usage_event_at_the_end_is_not_passed_on() {
    assert_eq!(run(&[CONTENT, USAGE.trim_end()]), CONTENT);
    let cut = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{}}]}";
    assert_eq!(run(&[CONTENT, cut]), format!("{CONTENT}{cut}"));
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
    let body = request_usage(br#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#)
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["stream_options"]["include_obfuscation"], false);
    let body = request_usage(br#"{"stream":true,"stream_options":null}"#).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
}

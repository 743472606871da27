//! Counting tokens of streams whose client did not ask for usage: the gateway asks the backend
//! for the final usage chunk (`stream_options.include_usage`) and takes that chunk out of the
//! stream before it reaches the client, who never asked for it.
//!
//! **Framing.** The stream is server-sent events as the WHATWG spec frames them: a line ends
//! with CRLF, LF or CR, and an event ends at a blank line, so `\n\n`, `\r\r`, `\r\n\r\n` and
//! any mixture (`\r\n\n`, `\n\r\n`, ...) end one. [`UsageStripper`] scans with a small line
//! state (start of line, just after a CR, within a line) that carries over between pieces, so
//! a line end split across pieces (a CR last in one, its LF first in the next) is one line end.
//! An event ends just past the line end of its blank line, both bytes of a CRLF; when that CR
//! is the last byte seen, an LF first in the next piece is given the fate of that event. Events
//! reach the client with their bytes unchanged; only the usage-only event (a `data:` chunk with
//! `"choices":[]` and a `usage` object) is dropped, whole.
//!
//! **Cost.** Every byte is scanned once: an incomplete event is held with the scan's state, and
//! the next piece is scanned from where it stopped, never the held bytes again. The common piece
//! (complete events, none mentioning usage) goes out as itself, without a copy: only its trailing
//! line ends are looked at, plus one search for the usage key.
//!
//! **Bound.** At most [`HELD_LIMIT`] (64 KiB) of an incomplete event is held. An event that
//! grows past it cannot be the usage event (a few hundred bytes): what is held goes out and the
//! rest of the event passes through as it arrives until its blank line, after which events are
//! held and checked again. So an endless line costs no memory, keeps reaching the client, and
//! the relay keeps writing, which is how a client that went away is noticed. A body whose first
//! non-blank byte is `{` or `[` is not an event stream (a JSON answer to a stream request): it
//! passes through whole, whatever its content type says.

use bytes::{Bytes, BytesMut};
use memchr::memchr2;
use memchr::memmem::Finder;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use std::ops::Range;
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

/// The most the stripper holds of an event that is not complete yet. A usage event is a few
/// hundred bytes, so an event that grows past this is one the client gets: what is held goes
/// out and the rest of that event passes through as it arrives.
pub const HELD_LIMIT: usize = 64 * 1024;

/// Removes the usage-only event from a server-sent event stream, passing everything else on as
/// soon as an event is complete (see the module documentation for the framing and the bound).
#[derive(Debug, Default)]
pub struct UsageStripper {
    /// The current event's bytes so far, when it began in an earlier piece (at most
    /// [`HELD_LIMIT`]); empty otherwise. Already scanned: only new bytes are looked at.
    pending: BytesMut,
    /// Where the scan stands within its line.
    line: Line,
    mode: Mode,
    /// The last event ended with a CR that was the last byte seen: an LF first in the next
    /// piece completes that CRLF and goes (or is dropped) with that event.
    open_cr: Option<Fate>,
    /// The body's first non-blank byte has been seen (and the mode chosen from it).
    sniffed: bool,
}

/// The scan's position within a line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line: the last byte ended one with an LF (or nothing came yet).
    #[default]
    Start,
    /// At the start of a line that a CR ended: an LF now is the second byte of that CRLF.
    AfterCr,
    /// Within a line that has content.
    Middle,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Events are held until complete and checked.
    #[default]
    Events,
    /// The current event outgrew [`HELD_LIMIT`]: bytes pass through until it ends.
    Oversized,
    /// The body is not an event stream (it began with `{` or `[`): everything passes through.
    NotEvents,
}

/// What became of a complete event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Kept,
    Dropped,
}

impl UsageStripper {
    /// Take one piece of the upstream stream; returns what can go to the client now. Each call
    /// costs time in proportion to the piece: only its own bytes are scanned.
    pub fn feed(&mut self, chunk: &Bytes) -> Bytes {
        if chunk.is_empty() {
            return Bytes::new();
        }
        if !self.sniffed {
            self.sniff(chunk);
        }
        if self.mode == Mode::NotEvents {
            return self.pass_all(chunk);
        }
        let mut out = Out::new(chunk);
        let mut pos = 0;
        if let Some(fate) = self.open_cr.take()
            && chunk[0] == b'\n'
        {
            self.line = Line::Start;
            pos = 1;
            if fate == Fate::Kept {
                out.take(0..1);
            }
        }
        // The common case: complete events, none of them mentioning usage, go as they came.
        let mut usage_ahead = None;
        if self.mode == Mode::Events && self.pending.is_empty() {
            let rest = &chunk[pos..];
            if ends_after_blank_line(rest) {
                if !mentions_usage(rest) {
                    self.line = match chunk.ends_with(b"\r") {
                        true => Line::AfterCr,
                        false => Line::Start,
                    };
                    self.ended(Fate::Kept);
                    out.take(pos..chunk.len());
                    return out.finish();
                }
                usage_ahead = Some(true);
            }
        }
        if self.mode == Mode::Oversized {
            let Some(end) = self.next_event_end(chunk, pos) else {
                out.take(pos..chunk.len());
                return out.finish();
            };
            out.take(pos..end);
            self.mode = Mode::Events;
            self.ended(Fate::Kept);
            pos = end;
        }
        if !self.pending.is_empty() {
            let end = self.next_event_end(chunk, pos);
            let taken = end.unwrap_or(chunk.len());
            if self.pending.len() + (taken - pos) > HELD_LIMIT {
                // Too long to be the usage event: what is held goes, the rest passes through.
                out.held(self.pending.split().freeze());
                out.take(pos..taken);
                match end {
                    Some(_) => self.ended(Fate::Kept),
                    None => self.mode = Mode::Oversized,
                }
            } else {
                self.pending.extend_from_slice(&chunk[pos..taken]);
                if end.is_some() {
                    let event = self.pending.split().freeze();
                    let fate = fate_of(&event, true);
                    self.ended(fate);
                    if fate == Fate::Kept {
                        out.held(event);
                    }
                }
            }
            if end.is_none() {
                return out.finish();
            }
            pos = taken;
        }
        let usage_ahead = usage_ahead.unwrap_or_else(|| mentions_usage(&chunk[pos..]));
        while let Some(end) = self.next_event_end(chunk, pos) {
            let fate = fate_of(&chunk[pos..end], usage_ahead);
            self.ended(fate);
            if fate == Fate::Kept {
                out.take(pos..end);
            }
            pos = end;
        }
        if chunk.len() - pos > HELD_LIMIT {
            out.take(pos..chunk.len());
            self.mode = Mode::Oversized;
        } else {
            self.pending.extend_from_slice(&chunk[pos..]);
        }
        out.finish()
    }

    /// Whatever is left when the stream ends: an unterminated last event (which a client
    /// discards, and is not passed on if it is the usage event).
    pub fn finish(&mut self) -> Bytes {
        let rest = self.pending.split().freeze();
        *self = Self::default();
        match fate_of(&rest, true) {
            Fate::Kept => rest,
            Fate::Dropped => Bytes::new(),
        }
    }

    /// Bytes held back from the client right now (never more than [`HELD_LIMIT`]).
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Decide from the body's first non-blank byte whether it is an event stream at all. A
    /// JSON answer to a stream request (a whole completion, an error) begins with `{` or `[`,
    /// which no event stream does (its lines begin with a field name or `:`).
    fn sniff(&mut self, chunk: &[u8]) {
        if let Some(&first) = chunk.iter().find(|b| !b.is_ascii_whitespace()) {
            self.sniffed = true;
            if first == b'{' || first == b'[' {
                self.mode = Mode::NotEvents;
            }
        }
    }

    /// The piece whole, after anything still held (only blank lines can be held here).
    fn pass_all(&mut self, chunk: &Bytes) -> Bytes {
        if self.pending.is_empty() {
            return chunk.clone();
        }
        let mut out = BytesMut::with_capacity(self.pending.len() + chunk.len());
        out.extend_from_slice(&self.pending.split());
        out.extend_from_slice(chunk);
        out.freeze()
    }

    /// An event ended at the scan's position: if on a CR with nothing after it yet, an LF
    /// first in the next piece belongs to this event.
    fn ended(&mut self, fate: Fate) {
        if self.line == Line::AfterCr {
            self.open_cr = Some(fate);
        }
    }

    /// Scan `bytes` from `from` for the end of the current event (exclusive: just past the
    /// blank line's line end, both bytes of a CRLF). Only CR and LF bytes are looked at, each
    /// once; the line state carries over from the bytes scanned before, in earlier pieces.
    fn next_event_end(&mut self, bytes: &[u8], from: usize) -> Option<usize> {
        let mut i = from;
        while let Some(found) = memchr2(b'\r', b'\n', &bytes[i..]) {
            let at = i + found;
            if found > 0 {
                self.line = Line::Middle;
            }
            i = at + 1;
            let cr = bytes[at] == b'\r';
            match (self.line, cr) {
                // The LF of a CRLF: no new line end.
                (Line::AfterCr, false) => self.line = Line::Start,
                (Line::Middle, true) => self.line = Line::AfterCr,
                (Line::Middle, false) => self.line = Line::Start,
                // A line end at the start of a line: the blank line that ends the event.
                (Line::Start | Line::AfterCr, _) => {
                    self.line = Line::Start;
                    if cr {
                        match bytes.get(i) {
                            Some(b'\n') => i += 1,
                            Some(_) => {}
                            None => self.line = Line::AfterCr,
                        }
                    }
                    return Some(i);
                }
            }
        }
        if i < bytes.len() {
            self.line = Line::Middle;
        }
        None
    }
}

/// What one piece gives the client: one range of the piece (no copy, the common case), one
/// held event, or several parts joined into a new buffer.
struct Out<'a> {
    chunk: &'a Bytes,
    kept: Parts,
}

enum Parts {
    Nothing,
    Range(Range<usize>),
    Held(Bytes),
    Joined(BytesMut),
}

impl<'a> Out<'a> {
    fn new(chunk: &'a Bytes) -> Self {
        Self {
            chunk,
            kept: Parts::Nothing,
        }
    }

    /// Add `range` of the piece.
    fn take(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        self.kept = match std::mem::replace(&mut self.kept, Parts::Nothing) {
            Parts::Nothing => Parts::Range(range),
            Parts::Range(r) if r.end == range.start => Parts::Range(r.start..range.end),
            other => {
                let mut joined = self.joined(other);
                joined.extend_from_slice(&self.chunk[range]);
                Parts::Joined(joined)
            }
        };
    }

    /// Add an event held from earlier pieces.
    fn held(&mut self, event: Bytes) {
        self.kept = match std::mem::replace(&mut self.kept, Parts::Nothing) {
            Parts::Nothing => Parts::Held(event),
            other => {
                let mut joined = self.joined(other);
                joined.extend_from_slice(&event);
                Parts::Joined(joined)
            }
        };
    }

    /// What is kept so far as a buffer with room for the rest of the piece.
    fn joined(&self, kept: Parts) -> BytesMut {
        let start_with = |part: &[u8]| {
            let mut joined = BytesMut::with_capacity(part.len() + self.chunk.len());
            joined.extend_from_slice(part);
            joined
        };
        match kept {
            Parts::Nothing => start_with(&[]),
            Parts::Range(r) => start_with(&self.chunk[r]),
            Parts::Held(event) => start_with(&event),
            Parts::Joined(joined) => joined,
        }
    }

    fn finish(self) -> Bytes {
        match self.kept {
            Parts::Nothing => Bytes::new(),
            Parts::Range(r) => self.chunk.slice(r),
            Parts::Held(b) => b,
            Parts::Joined(joined) => joined.freeze(),
        }
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

/// Whether a complete event goes to the client. `may_mention_usage` false skips the search
/// (the bytes around the event were searched already).
fn fate_of(event: &[u8], may_mention_usage: bool) -> Fate {
    match may_mention_usage && mentions_usage(event) && is_usage_only(event) {
        true => Fate::Dropped,
        false => Fate::Kept,
    }
}

/// Whether `bytes`, beginning at an event's start, ends just past a blank line: its last byte
/// with content is followed by at least two line ends (a CRLF counts once), so every event in
/// it is complete. Looks only at the trailing line ends.
fn ends_after_blank_line(bytes: &[u8]) -> bool {
    let Some(last) = bytes.iter().rposition(|&b| b != b'\r' && b != b'\n') else {
        return false;
    };
    let mut line_ends = 0;
    let mut after_cr = false;
    for &b in &bytes[last + 1..] {
        if b == b'\r' || !after_cr {
            line_ends += 1;
        }
        after_cr = b == b'\r';
    }
    line_ends >= 2
}

/// An event whose data is a chunk with no choices and a usage object. Its lines may end with
/// CRLF, LF or CR; the values of its `data` fields are joined with LF, as a client does.
fn is_usage_only(event: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<IgnoredAny>,
        usage: Option<IgnoredAny>,
    }
    let mut data = Vec::with_capacity(event.len());
    let mut first = true;
    for line in event.split(|&b| b == b'\r' || b == b'\n') {
        if let Some(value) = line.strip_prefix(b"data:") {
            if !first {
                data.push(b'\n');
            }
            first = false;
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    match serde_json::from_slice::<Chunk>(&data) {
        Ok(chunk) => chunk.choices.is_empty() && chunk.usage.is_some(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;

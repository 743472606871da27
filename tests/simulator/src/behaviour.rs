//! What the simulator does with the next request.
//!
//! A test (in-process through [`crate::Simulator::set_behaviour`], or a script
//! through `PUT /_sim/behaviour`) describes the backend it wants to face — a
//! throttled one, a broken one, a slow streamer — as one [`Behaviour`] value.
//! Every field has a default, so `{}` is a healthy, instant backend and a test
//! only spells out what it changes.

use serde::{Deserialize, Serialize};

/// Longest delay accepted for `first_byte_ms` and `chunk_interval_ms` (one day):
/// longer ones are surely typos, and clamping keeps deadline arithmetic safe.
pub const MAX_DELAY_MS: u64 = 86_400_000;

/// How the simulator answers a model request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Answer normally (subject to `throttle_every` and the budgets).
    #[default]
    Ok,
    /// Answer 429 with the configured retry-after header(s).
    Throttle,
    /// Answer `status` with an Azure-shaped error body.
    Error,
    /// Read the request, then close the connection without a response byte.
    Drop,
    /// Stream `chunks_before_drop` events, then abort the connection
    /// (non-stream requests are dropped like [`Mode::Drop`]).
    DropMidStream,
    /// Never answer: hold the request until the client goes away.
    Hang,
}

/// Which retry-after header(s) a 429 carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfterHeader {
    /// `retry-after-ms: N`.
    Ms,
    /// `x-ms-retry-after-ms: N`.
    XMs,
    /// `retry-after: ceil(N / 1000)`.
    Seconds,
    /// `retry-after: <HTTP-date of now + N>`.
    Date,
    /// The three numeric headers, as Azure OpenAI sends them.
    #[default]
    All,
    /// No retry-after header at all.
    None,
}

/// The simulated backend's behaviour. Every field is optional in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// How requests are answered.
    pub mode: Mode,
    /// HTTP status used by [`Mode::Error`] (400–599).
    pub status: u16,
    /// Retry hint, in milliseconds, of `throttle` answers and scheduled 429s.
    pub retry_after_ms: u64,
    /// Which header(s) carry the retry hint.
    pub retry_after_header: RetryAfterHeader,
    /// Apply a non-ok `mode` to the next N model requests only, then answer ok.
    pub fail_next: Option<u32>,
    /// In ok mode, answer every Nth model request with a 429.
    pub throttle_every: Option<u32>,
    /// Requests allowed per 60 s window.
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) allowed per 60 s window.
    pub tpm: Option<u32>,
    /// Delay before the response head of a successful answer.
    pub first_byte_ms: u64,
    /// Delay between two SSE events.
    pub chunk_interval_ms: u64,
    /// Number of content events in a stream.
    pub chunks: u32,
    /// SSE events sent before [`Mode::DropMidStream`] aborts the connection.
    pub chunks_before_drop: u32,
    /// Content-type of streaming answers (default `text/event-stream`).
    pub sse_content_type: Option<String>,
    /// Fixed completion size reported in `usage` (and length of the reply).
    pub completion_tokens: Option<u32>,
    /// End streams without the usage event even when the request asks for it
    /// (`stream_options.include_usage`), as older api-versions and some
    /// models do.
    pub omit_usage: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            mode: Mode::Ok,
            status: 500,
            retry_after_ms: 1000,
            retry_after_header: RetryAfterHeader::All,
            fail_next: None,
            throttle_every: None,
            rpm: None,
            tpm: None,
            first_byte_ms: 0,
            chunk_interval_ms: 0,
            chunks: 5,
            chunks_before_drop: 2,
            sse_content_type: None,
            completion_tokens: None,
            omit_usage: false,
        }
    }
}

impl Behaviour {
    /// The default behaviour with another mode.
    pub fn with_mode(mode: Mode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// Parses a JSON document and checks it, for the control endpoint and the CLI.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let behaviour: Self = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        behaviour.validate()?;
        Ok(behaviour)
    }

    /// Rejects values that cannot be honoured, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if !(400..=599).contains(&self.status) {
            return Err(format!(
                "status must be within 400..=599, got {}",
                self.status
            ));
        }
        if self.throttle_every == Some(0) {
            return Err("throttle_every must be at least 1".to_owned());
        }
        for (field, value) in [
            ("first_byte_ms", self.first_byte_ms),
            ("chunk_interval_ms", self.chunk_interval_ms),
        ] {
            if value > MAX_DELAY_MS {
                return Err(format!(
                    "{field} must be at most {MAX_DELAY_MS}, got {value}"
                ));
            }
        }
        if let Some(ct) = &self.sse_content_type
            && (ct.is_empty() || http::HeaderValue::from_str(ct).is_err())
        {
            return Err(format!(
                "sse_content_type is not a valid header value: {ct:?}"
            ));
        }
        Ok(())
    }

    /// A copy that is safe to run: what [`Behaviour::validate`] would reject is
    /// replaced by its default, so the library API never has to fail.
    pub(crate) fn sanitised(mut self) -> Self {
        let defaults = Self::default();
        if !(400..=599).contains(&self.status) {
            self.status = defaults.status;
        }
        if self.throttle_every == Some(0) {
            self.throttle_every = None;
        }
        self.first_byte_ms = self.first_byte_ms.min(MAX_DELAY_MS);
        self.chunk_interval_ms = self.chunk_interval_ms.min(MAX_DELAY_MS);
        if self
            .sse_content_type
            .as_deref()
            .is_some_and(|ct| ct.is_empty() || http::HeaderValue::from_str(ct).is_err())
        {
            self.sse_content_type = None;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_the_default() {
        assert_eq!(Behaviour::from_json(b"{}").unwrap(), Behaviour::default());
    }

    #[test]
    fn field_names_and_enum_spellings() {
        let b = Behaviour::from_json(
            br#"{"mode":"drop_mid_stream","retry_after_header":"x_ms","fail_next":2,
                "throttle_every":3,"rpm":10,"tpm":1000,"first_byte_ms":5,
                "chunk_interval_ms":7,"chunks":9,"chunks_before_drop":1,
                "sse_content_type":"application/json","completion_tokens":4,
                "status":503,"retry_after_ms":250}"#,
        )
        .unwrap();
        assert_eq!(b.mode, Mode::DropMidStream);
        assert_eq!(b.retry_after_header, RetryAfterHeader::XMs);
        assert_eq!((b.fail_next, b.throttle_every), (Some(2), Some(3)));
        assert_eq!(
            (b.rpm, b.tpm, b.completion_tokens),
            (Some(10), Some(1000), Some(4))
        );
        assert_eq!((b.status, b.retry_after_ms), (503, 250));
        let round = serde_json::to_vec(&b).unwrap();
        assert_eq!(Behaviour::from_json(&round).unwrap(), b);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(Behaviour::from_json(br#"{"mood":"ok"}"#).is_err());
        assert!(Behaviour::from_json(br#"{"mode":"sideways"}"#).is_err());
        assert!(Behaviour::from_json(br#"{"status":200}"#).is_err());
        assert!(Behaviour::from_json(br#"{"throttle_every":0}"#).is_err());
        assert!(Behaviour::from_json(br#"{"sse_content_type":"a\nb"}"#).is_err());
        assert!(Behaviour::from_json(br#"{"chunk_interval_ms":99999999999}"#).is_err());
        assert!(Behaviour::from_json(b"not json").is_err());
    }

    #[test]
    fn sanitised_repairs_what_validate_rejects() {
        let b = Behaviour {
            status: 42,
            throttle_every: Some(0),
            first_byte_ms: u64::MAX,
            sse_content_type: Some(String::new()),
            ..Behaviour::default()
        }
        .sanitised();
        assert!(b.validate().is_ok());
        assert_eq!(b.status, 500);
        assert_eq!(b.throttle_every, None);
    }
}

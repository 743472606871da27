//! The retry hints a 429 carries, in each dialect a backend may speak.
//!
//! Azure OpenAI sends `retry-after-ms`, `x-ms-retry-after-ms` and
//! `retry-after` (seconds) together; other backends send only one, or an
//! HTTP-date, or nothing. The gateway must parse all of them, so the
//! simulator can emit each one alone.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::behaviour::RetryAfterHeader;

const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const X_MS_RETRY_AFTER_MS: HeaderName = HeaderName::from_static("x-ms-retry-after-ms");

/// Farthest future an HTTP-date hint points to (a year): the date formatter
/// only handles years up to 9999.
const MAX_DATE_OFFSET: Duration = Duration::from_secs(365 * 24 * 3600);

/// Whole seconds covering `ms`, as `retry-after` wants them.
pub(crate) fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Adds the retry hint for `ms` milliseconds in the `kind` dialect.
pub(crate) fn insert(headers: &mut HeaderMap, kind: RetryAfterHeader, ms: u64) {
    let millis = || HeaderValue::from(ms);
    let secs = || HeaderValue::from(seconds(ms));
    match kind {
        RetryAfterHeader::Ms => {
            headers.insert(RETRY_AFTER_MS, millis());
        }
        RetryAfterHeader::XMs => {
            headers.insert(X_MS_RETRY_AFTER_MS, millis());
        }
        RetryAfterHeader::Seconds => {
            headers.insert(RETRY_AFTER, secs());
        }
        RetryAfterHeader::Date => {
            let offset = Duration::from_millis(ms).min(MAX_DATE_OFFSET);
            let now = SystemTime::now();
            let when = now.checked_add(offset).unwrap_or(now);
            if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(when)) {
                headers.insert(RETRY_AFTER, value);
            }
        }
        RetryAfterHeader::All => {
            headers.insert(RETRY_AFTER_MS, millis());
            headers.insert(X_MS_RETRY_AFTER_MS, millis());
            headers.insert(RETRY_AFTER, secs());
        }
        RetryAfterHeader::None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(kind: RetryAfterHeader, ms: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        insert(&mut headers, kind, ms);
        headers
    }

    #[test]
    fn numeric_dialects() {
        let h = render(RetryAfterHeader::Ms, 1500);
        assert_eq!(
            (h.len(), h["retry-after-ms"].to_str().unwrap()),
            (1, "1500")
        );
        let h = render(RetryAfterHeader::XMs, 1500);
        assert_eq!(
            (h.len(), h["x-ms-retry-after-ms"].to_str().unwrap()),
            (1, "1500")
        );
        let h = render(RetryAfterHeader::Seconds, 1500);
        assert_eq!((h.len(), h["retry-after"].to_str().unwrap()), (1, "2"));
        let h = render(RetryAfterHeader::All, 1000);
        assert_eq!(h.len(), 3);
        assert_eq!(h["retry-after"], "1");
        assert!(render(RetryAfterHeader::None, 1000).is_empty());
    }

    #[test]
    fn date_dialect_points_to_the_future_even_for_absurd_hints() {
        for ms in [0, 5_000, u64::MAX] {
            let h = render(RetryAfterHeader::Date, ms);
            let date = httpdate::parse_http_date(h["retry-after"].to_str().unwrap()).unwrap();
            assert!(date + Duration::from_secs(2) >= SystemTime::now());
        }
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(
            (seconds(0), seconds(1), seconds(1000), seconds(1001)),
            (0, 1, 1, 2)
        );
    }
}

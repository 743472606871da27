//! How long a backend asked us to wait: Azure OpenAI sends `retry-after-ms`,
//! `x-ms-retry-after-ms` and `retry-after` (seconds or an HTTP date), in that order of precision.

use http::HeaderMap;
use std::time::{Duration, SystemTime};

/// The wait a 429 (or 503) response asks for, if it names one.
///
/// 1. `retry-after-ms` (milliseconds), the most precise;
/// 2. `x-ms-retry-after-ms` (milliseconds);
/// 3. `retry-after` as whole or fractional seconds;
/// 4. `retry-after` as an HTTP date, measured from `now` (a date in the past means no wait).
pub fn parse_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let millis = |name: &str| {
        text(name)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_micros((ms * 1000.0) as u64))
    };
    if let Some(wait) = millis("retry-after-ms").or_else(|| millis("x-ms-retry-after-ms")) {
        return Some(wait);
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn prefers_milliseconds_headers_in_order() {
        let now = SystemTime::now();
        let h = headers(&[
            ("retry-after", "9"),
            ("x-ms-retry-after-ms", "2500"),
            ("retry-after-ms", "1200"),
        ]);
        assert_eq!(parse_wait(&h, now), Some(Duration::from_millis(1200)));
        let h = headers(&[("retry-after", "9"), ("x-ms-retry-after-ms", "2500")]);
        assert_eq!(parse_wait(&h, now), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_wait(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_wait(&headers(&[("retry-after", "0.5")]), now),
            Some(Duration::from_millis(500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_wait(&headers(&[("retry-after", &later)]), now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            parse_wait(&headers(&[("retry-after", &earlier)]), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn ignores_garbage() {
        let now = SystemTime::now();
        assert_eq!(parse_wait(&HeaderMap::new(), now), None);
        assert_eq!(parse_wait(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(parse_wait(&headers(&[("retry-after", "-3")]), now), None);
        assert_eq!(
            parse_wait(
                &headers(&[("retry-after-ms", "NaN"), ("retry-after", "2")]),
                now
            ),
            Some(Duration::from_secs(2))
        );
    }
}

//! `x-request-id` on every response: the client's own id when it sent a usable one, otherwise a
//! new `req_<uuid>`. Handlers read it from the request's extensions.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;

pub const HEADER: &str = "x-request-id";

/// The request's id, as a ready-to-send header value.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Middleware: settle the id before the handler runs and stamp it on whatever answers.
pub async fn stamp(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .filter(|v| is_usable(v.as_bytes()))
        .cloned()
        .unwrap_or_else(fresh);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    response.headers_mut().insert(HEADER, id);
    response
}

fn is_usable(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

fn fresh() -> HeaderValue {
    let mut buf = [0u8; 4 + uuid::fmt::Simple::LENGTH];
    buf[..4].copy_from_slice(b"req_");
    uuid::Uuid::new_v4().simple().encode_lower(&mut buf[4..]);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_prefixed_and_unique() {
        let (a, b) = (fresh(), fresh());
        assert!(a.to_str().unwrap().starts_with("req_"));
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);
    }

    #[test]
    fn only_short_visible_ids_are_adopted() {
        assert!(is_usable(b"abc-123"));
        assert!(!is_usable(b""));
        assert!(!is_usable(b"has space"));
        assert!(!is_usable(&[b'a'; 129]));
    }
}

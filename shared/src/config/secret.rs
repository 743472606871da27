//! A backend key that never prints: `Debug` shows `***`, and the header value is marked sensitive
//! so that HTTP tracing layers redact it too.

use http::HeaderValue;
use std::fmt;

/// An API key, held as the ready-to-send header value.
#[derive(Clone)]
pub struct Secret(HeaderValue);

impl Secret {
    /// Wrap a key. `None` when the key cannot be sent as a header (control characters).
    pub fn new(key: &str) -> Option<Self> {
        let mut value = HeaderValue::from_str(key).ok()?;
        value.set_sensitive(true);
        Some(Self(value))
    }

    /// The value to send as the `api-key` header.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

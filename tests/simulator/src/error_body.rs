//! Error bodies shaped like the real services' ones.
//!
//! The gateway maps, forwards or retries on upstream errors, and its tests
//! need the exact shapes it meets in production: Azure's `{"error":{"code",
//! "message"}}`, OpenAI's `{"error":{"message","type","param","code"}}` and
//! Azure's content-filter answer. Fixed bodies are `'static` bytes.

use bytes::Bytes;
use http::StatusCode;

use crate::json::JsonBuf;

/// Azure's answer to a missing or wrong api key.
pub(crate) const UNAUTHORIZED: &str = r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#;

/// The answer for paths the simulator does not serve.
pub(crate) const NOT_FOUND: &str = r#"{"error":{"code":"404","message":"Resource not found"}}"#;

/// The answer for request bodies over the size limit.
pub(crate) const PAYLOAD_TOO_LARGE: &str =
    r#"{"error":{"code":"413","message":"The request body is too large for the simulator."}}"#;

/// Azure's answer when the prompt trips the content filter.
pub(crate) const CONTENT_FILTER: &str = concat!(
    r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "#,
    r#"Please modify your prompt and retry.","type":null,"param":"prompt","code":"content_filter","status":400,"#,
    r#""innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"#,
    r#""hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false},"#,
    r#""self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"#,
    r#""violence":{"filtered":true,"severity":"medium"}}}}}"#
);

/// An Azure-shaped `{"error":{"code","message"}}` body.
pub(crate) fn azure(code: &str, message: &str) -> Bytes {
    let mut buf = JsonBuf::with_capacity(48 + code.len() + message.len());
    buf.raw(r#"{"error":{"code":"#)
        .string(code)
        .raw(r#","message":"#)
        .string(message)
        .raw("}}");
    buf.into_bytes()
}

/// An OpenAI-shaped `invalid_request_error`, for requests the simulator cannot read.
pub(crate) fn invalid_request(message: &str) -> Bytes {
    let mut buf = JsonBuf::with_capacity(96 + message.len());
    buf.raw(r#"{"error":{"message":"#)
        .string(message)
        .raw(r#","type":"invalid_request_error","param":null,"code":null}}"#);
    buf.into_bytes()
}

/// Azure's 429 body for a hint of `seconds`.
pub(crate) fn too_many_requests(seconds: u64) -> Bytes {
    let unit = if seconds == 1 { "second" } else { "seconds" };
    azure(
        "429",
        &format!(
            "Requests to the simulated deployment have exceeded the rate limit of the simulator. \
             Please retry after {seconds} {unit}."
        ),
    )
}

/// Azure's body for an error status, as sent in `error` mode.
pub(crate) fn for_status(status: StatusCode) -> Bytes {
    let code = match status.as_u16() {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        408 => "Timeout",
        409 => "Conflict",
        429 => "429",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => status.as_str(),
    };
    let reason = status.canonical_reason().unwrap_or("Error");
    azure(
        code,
        &format!(
            "The simulated backend failed with {} {reason}.",
            status.as_u16()
        ),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn fixed_bodies_are_valid_json_of_the_expected_shape() {
        assert_eq!(parse(UNAUTHORIZED.as_bytes())["error"]["code"], "401");
        assert_eq!(parse(NOT_FOUND.as_bytes())["error"]["code"], "404");
        assert_eq!(parse(PAYLOAD_TOO_LARGE.as_bytes())["error"]["code"], "413");
    }

    #[test]
    fn content_filter_body_matches_azure() {
        let v = parse(CONTENT_FILTER.as_bytes());
        let e = &v["error"];
        assert_eq!(
            (&e["code"], &e["param"], &e["type"], &e["status"]),
            (
                &json!("content_filter"),
                &json!("prompt"),
                &Value::Null,
                &json!(400)
            )
        );
        assert_eq!(e["innererror"]["code"], "ResponsibleAIPolicyViolation");
        let r = &e["innererror"]["content_filter_result"];
        assert_eq!(
            r["violence"],
            json!({"filtered": true, "severity": "medium"})
        );
        assert_eq!(
            r["jailbreak"],
            json!({"filtered": false, "detected": false})
        );
        for k in ["hate", "self_harm", "sexual"] {
            assert_eq!(r[k], json!({"filtered": false, "severity": "safe"}));
        }
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("The response was filtered")
        );
    }

    #[test]
    fn built_bodies_escape_their_text() {
        let v = parse(&invalid_request("bad \"json\"\n"));
        assert_eq!(v["error"]["message"], "bad \"json\"\n");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(parse(&too_many_requests(3))["error"]["code"], "429");
        let v = parse(&for_status(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(v["error"]["code"], "ServiceUnavailable");
        assert_eq!(
            parse(&for_status(StatusCode::from_u16(418).unwrap()))["error"]["code"],
            "418"
        );
    }
}

//! The HTTP layer's one error type, and the one place any error becomes a response: an
//! OpenAI-shaped body (`{"error":{"message","type","param","code"}}`), the right status and,
//! for 429, `retry-after`.

use crate::config::ConfigError;
use crate::forward::ForwardError;
use crate::upstream::Failure;
use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// Everything a request can fail with before or instead of a backend's answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("AI application '{0}' is not configured on this gateway")]
    UnknownApp(String),
    #[error("AI application '{app}' has no endpoint '{endpoint}'")]
    UnknownEndpoint { app: String, endpoint: String },
    #[error("AI application '{0}' is inactive (isActive is false)")]
    InactiveApp(String),
    #[error("the gateway does not serve the operation '{0}'; it serves {ops}", ops = crate::upstream::Operation::list())]
    UnknownOperation(String),
    #[error("AI application '{app}' serves {serves}, not {asked}")]
    OperationNotServed {
        app: String,
        serves: crate::upstream::Operation,
        asked: crate::upstream::Operation,
    },
    #[error(
        "requests to /openai/v1/... name their AI application in the JSON body's \"model\" field; send other bodies (multipart audio) to /openai/deployments/{{appId}}/..."
    )]
    ModelRequired,
    #[error("the request path is not valid: {0}")]
    BadPath(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("the request body is not a valid JSON object: {0}")]
    InvalidJson(String),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("a valid gateway key is required: send it as 'Authorization: Bearer <key>'")]
    Unauthorized,
    #[error("admin routes that change state are disabled: API_GATEWAY_KEY is not set")]
    AdminDisabled,
    #[error("the configuration was not applied: {0}")]
    InvalidConfig(#[from] ConfigError),
    #[error("the shared store is unavailable: {0}")]
    StoreUnavailable(String),
}

impl ApiError {
    /// The HTTP status for each error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. }
            | ApiError::UnknownApp(_)
            | ApiError::UnknownEndpoint { .. }
            | ApiError::UnknownOperation(_)
            | ApiError::OperationNotServed { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InactiveApp(_)
            | ApiError::BadPath(_)
            | ApiError::BodyRead(_)
            | ApiError::InvalidJson(_)
            | ApiError::ModelRequired
            | ApiError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Forward(ForwardError::AllBusy { .. }) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forward(ForwardError::AllFailed { failures }) => {
                if !failures.is_empty() && failures.iter().all(|(_, f)| *f == Failure::Timeout) {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                }
            }
        }
    }

    /// The `error.code` field: a stable, low-cardinality name (also used as a metrics label).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnknownApp(_) => "application_not_found",
            ApiError::UnknownEndpoint { .. } => "endpoint_not_found",
            ApiError::InactiveApp(_) => "application_inactive",
            ApiError::UnknownOperation(_) => "operation_not_found",
            ApiError::OperationNotServed { .. } => "operation_not_served",
            ApiError::ModelRequired => "model_required",
            ApiError::BadPath(_) => "invalid_path",
            ApiError::BodyTooLarge { .. } => "request_too_large",
            ApiError::BodyRead(_) => "invalid_body",
            ApiError::InvalidJson(_) => "invalid_json",
            // Azure OpenAI's own 429 body says "429"; clients match on it.
            ApiError::Forward(ForwardError::AllBusy { .. }) => "429",
            ApiError::Forward(ForwardError::AllFailed { .. }) => "backend_unavailable",
            ApiError::Unauthorized => "unauthorized",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::InvalidConfig(_) => "invalid_configuration",
            ApiError::StoreUnavailable(_) => "store_unavailable",
        }
    }

    fn kind(&self) -> &'static str {
        match self.status_code().as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut body = json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": null,
                "code": self.code(),
            }
        });
        if let ApiError::InvalidConfig(e) = &self {
            // Every problem, each with the JSON path of the bad field.
            body["error"]["details"] = e
                .problems()
                .into_iter()
                .map(|p| json!({"path": p.path, "message": p.message}))
                .collect();
        }
        if let ApiError::Forward(ForwardError::AllFailed { failures }) = &self {
            // Endpoints by id, failures in the fixed vocabulary: never an address.
            body["error"]["details"] = failures
                .iter()
                .map(|(id, f)| json!({"endpoint": &**id, "failure": f.to_string()}))
                .collect();
        }
        let mut response = (status, Json(body)).into_response();
        if let ApiError::Forward(ForwardError::AllBusy { retry_after_secs }) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

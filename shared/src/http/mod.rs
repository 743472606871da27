//! The axum apps every host serves. [`router_app`] is the router function: inference routes,
//! `instanceinfo` and `healthz` under `/api/v1/{env}/apirouter` (and the Node gateway's newer
//! `/aigateway` spelling), plus the Azure OpenAI SDK paths. Unknown paths and wrong methods get
//! OpenAI-shaped errors too.

mod error;
mod inference;
mod info;
pub mod request_id;

pub use error::ApiError;

use crate::state::Gateway;
use axum::Router;
use axum::extract::Request;
use axum::routing::{get, post};
use std::sync::Arc;

/// The router function's app.
pub fn router_app(gateway: Arc<Gateway>) -> Router {
    let env = &gateway.settings.env_name;
    let scoped = Router::new()
        .route("/lb/{app_id}", post(inference::handle))
        .route("/lb/{app_id}/{*operation}", post(inference::handle))
        .route(
            "/lb/openai/deployments/{app_id}/{*operation}",
            post(inference::handle),
        )
        .route(
            "/lb/deployments/{app_id}/{*operation}",
            post(inference::handle),
        )
        .route("/instanceinfo", get(info::instance_info))
        .route("/healthz", get(info::healthz));
    Router::new()
        .nest(&format!("/api/v1/{env}/apirouter"), scoped.clone())
        .nest(&format!("/api/v1/{env}/aigateway"), scoped)
        .route(
            "/openai/deployments/{app_id}/{*operation}",
            post(inference::handle),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(request_id::stamp))
        .with_state(gateway)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

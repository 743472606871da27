//! The axum apps every host serves: [`router_app`] (inference routes under
//! `/api/v1/{env}/apirouter` — and the Node gateway's newer `/aigateway` spelling — plus the Azure
//! OpenAI SDK paths), [`admin_app`] (metrics and reconfiguration) and [`gateway_app`] (both).
//! Each also serves `instanceinfo` and `healthz`. Unknown paths and wrong methods get
//! OpenAI-shaped errors too.

mod admin;
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

/// Which routes an app serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parts {
    Router,
    Admin,
    All,
}

/// The router function's app: inference, `instanceinfo`, `healthz`.
pub fn router_app(gateway: Arc<Gateway>) -> Router {
    app(gateway, Parts::Router)
}

/// The admin function's app: metrics (JSON under the prefix, Prometheus at `/metrics`),
/// `reconfig`, `instanceinfo`, `healthz`.
pub fn admin_app(gateway: Arc<Gateway>) -> Router {
    app(gateway, Parts::Admin)
}

/// Both, for the all-in-one gateway.
pub fn gateway_app(gateway: Arc<Gateway>) -> Router {
    app(gateway, Parts::All)
}

fn app(gateway: Arc<Gateway>, parts: Parts) -> Router {
    let env = &gateway.settings.env_name;
    let mut router = Router::new();
    // Every prefixed route is registered under its full path rather than with `nest`, which
    // would rewrite each request's URI on its way in.
    for prefix in [
        format!("/api/v1/{env}/apirouter"),
        format!("/api/v1/{env}/aigateway"),
    ] {
        router = router
            .route(&format!("{prefix}/instanceinfo"), get(info::instance_info))
            .route(&format!("{prefix}/healthz"), get(info::healthz));
        if parts != Parts::Admin {
            for path in [
                "/lb/{app_id}",
                "/lb/{app_id}/{*operation}",
                "/lb/openai/deployments/{app_id}/{*operation}",
                "/lb/deployments/{app_id}/{*operation}",
            ] {
                router = router.route(&format!("{prefix}{path}"), post(inference::handle));
            }
            router = router.route(
                &format!("{prefix}/lb/openai/v1/{{*operation}}"),
                post(inference::handle_v1),
            );
        }
        if parts != Parts::Router {
            router = router
                .route(&format!("{prefix}/metrics"), get(admin::metrics))
                .route(
                    &format!("{prefix}/metrics/{{app_id}}"),
                    get(admin::app_metrics),
                )
                .route(&format!("{prefix}/reconfig"), post(admin::reconfig))
                .route(
                    &format!("{prefix}/circuits/{{app_id}}/{{endpoint_id}}/close"),
                    post(admin::close_circuit),
                );
        }
    }
    if parts != Parts::Admin {
        router = router
            .route(
                "/openai/deployments/{app_id}/{*operation}",
                post(inference::handle),
            )
            .route("/openai/v1/{*operation}", post(inference::handle_v1));
    }
    if parts != Parts::Router {
        router = router.route("/metrics", get(admin::prometheus));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(request_id::StampLayer)
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

//! Control endpoints, for processes that cannot call the library API.
//!
//! Benchmarks and the README demo run the simulator as a separate process;
//! they read its counters, change its behaviour and reset it over HTTP.
//! These endpoints need no api key and are not counted in the stats.

use http::StatusCode;
use http::request::Parts;
use http_body::Body;
use serde::Serialize;

use crate::behaviour::Behaviour;
use crate::body::SimBody;
use crate::error_body;
use crate::incoming::{self, MAX_CONTROL_BODY_BYTES, ReadError};
use crate::respond::{self, RequestId};
use crate::routes::Route;
use crate::shared::Shared;

/// Serves a control route (any other route gets a 404).
pub(crate) async fn handle<B>(
    shared: &Shared,
    route: Route<'_>,
    parts: &Parts,
    body: B,
) -> http::Response<SimBody>
where
    B: Body<Data = bytes::Bytes> + Unpin,
{
    let active = shared.active.load_full();
    let mut response = match route {
        Route::Stats => to_json(&shared.counters.snapshot()),
        Route::Requests => to_json(&shared.seen.snapshot()),
        Route::GetBehaviour => to_json(&active.current_behaviour()),
        Route::SetBehaviour => {
            match incoming::read(body, &parts.headers, MAX_CONTROL_BODY_BYTES).await {
                Ok(json) => match Behaviour::from_json(&json) {
                    Ok(behaviour) => {
                        shared.set_behaviour(behaviour);
                        respond::empty(StatusCode::NO_CONTENT)
                    }
                    Err(message) => respond::json(
                        StatusCode::BAD_REQUEST,
                        error_body::azure("400", &format!("invalid behaviour: {message}")),
                    ),
                },
                Err(ReadError::TooLarge) => {
                    respond::json(StatusCode::PAYLOAD_TOO_LARGE, error_body::PAYLOAD_TOO_LARGE)
                }
                Err(ReadError::Broken) => respond::json(
                    StatusCode::BAD_REQUEST,
                    error_body::azure("400", "the request body was cut short"),
                ),
            }
        }
        Route::Reset => {
            shared.counters.reset();
            shared.seen.clear();
            respond::empty(StatusCode::NO_CONTENT)
        }
        Route::Health => respond::text(StatusCode::OK, "ok\n"),
        Route::Model { .. } | Route::NotFound => {
            respond::json(StatusCode::NOT_FOUND, error_body::NOT_FOUND)
        }
    };
    respond::stamp(&mut response, shared, &active, &RequestId::new());
    response
}

fn to_json(value: &impl Serialize) -> http::Response<SimBody> {
    match serde_json::to_vec(value) {
        Ok(json) => respond::json(StatusCode::OK, bytes::Bytes::from(json)),
        Err(e) => respond::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_body::azure("InternalServerError", &e.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::SimOptions;
    use crate::behaviour::Mode;
    use crate::stats::Stats;

    async fn call(
        shared: &Shared,
        method: Method,
        path: &str,
        body: &'static str,
    ) -> (StatusCode, bytes::Bytes) {
        let (parts, ()) = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .body(())
            .unwrap()
            .into_parts();
        let route = crate::routes::route(&method, path);
        let response = handle(
            shared,
            route,
            &parts,
            Full::new(bytes::Bytes::from_static(body.as_bytes())),
        )
        .await;
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn behaviour_can_be_set_read_and_rejected() {
        let shared = Shared::new(&SimOptions::default());
        let (status, _) = call(
            &shared,
            Method::PUT,
            "/_sim/behaviour",
            r#"{"mode":"throttle"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(shared.active.load().behaviour.mode, Mode::Throttle);
        let (status, json) = call(&shared, Method::GET, "/_sim/behaviour", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_slice::<Behaviour>(&json).unwrap().mode,
            Mode::Throttle
        );

        let (status, json) = call(
            &shared,
            Method::PUT,
            "/_sim/behaviour",
            r#"{"mode":"bogus"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid behaviour")
        );
        assert_eq!(
            shared.active.load().behaviour.mode,
            Mode::Throttle,
            "a rejected change changes nothing"
        );
    }

    #[tokio::test]
    async fn stats_reset_and_health() {
        let shared = Shared::new(&SimOptions::default());
        crate::stats::bump(&shared.counters.requests);
        let (_, json) = call(&shared, Method::GET, "/_sim/stats", "").await;
        assert_eq!(serde_json::from_slice::<Stats>(&json).unwrap().requests, 1);
        assert_eq!(
            call(&shared, Method::POST, "/_sim/reset", "").await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(shared.counters.snapshot(), Stats::default());
        assert_eq!(
            call(&shared, Method::GET, "/healthz", "").await,
            (StatusCode::OK, bytes::Bytes::from_static(b"ok\n"))
        );
    }
}

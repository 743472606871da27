//! Which endpoint a request is for.
//!
//! The gateway reaches backends by Azure deployment paths and by the
//! OpenAI-style paths (`/v1/...`, `/openai/v1/...`, bare); the simulator
//! serves them all, plus its control endpoints. Matching is plain string
//! work on the path, with no allocation.

use http::Method;

/// The model APIs the simulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Completions,
    Embeddings,
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// A model call; `deployment` is set on Azure deployment paths.
    Model {
        api: Api,
        deployment: Option<&'a str>,
    },
    /// `GET /_sim/stats`.
    Stats,
    /// `GET /_sim/requests`: the last model requests received.
    Requests,
    /// `GET /_sim/behaviour`.
    GetBehaviour,
    /// `PUT` or `POST /_sim/behaviour`.
    SetBehaviour,
    /// `POST /_sim/reset`.
    Reset,
    /// `GET /healthz`.
    Health,
    /// Anything else.
    NotFound,
}

fn api(tail: &str) -> Option<Api> {
    match tail {
        "chat/completions" => Some(Api::Chat),
        "completions" => Some(Api::Completions),
        "embeddings" => Some(Api::Embeddings),
        _ => None,
    }
}

/// Routes `method` + `path` (the query string is not part of `path`).
pub(crate) fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let path = match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    };
    match (method, path) {
        (&Method::GET, "/_sim/stats") => return Route::Stats,
        (&Method::GET, "/_sim/requests") => return Route::Requests,
        (&Method::GET, "/_sim/behaviour") => return Route::GetBehaviour,
        (&Method::PUT | &Method::POST, "/_sim/behaviour") => return Route::SetBehaviour,
        (&Method::POST, "/_sim/reset") => return Route::Reset,
        (&Method::GET | &Method::HEAD, "/healthz") => return Route::Health,
        _ => {}
    }
    if method != Method::POST {
        return Route::NotFound;
    }
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        return match rest.split_once('/') {
            Some((deployment, tail)) if !deployment.is_empty() => {
                api(tail).map_or(Route::NotFound, |api| Route::Model {
                    api,
                    deployment: Some(deployment),
                })
            }
            _ => Route::NotFound,
        };
    }
    let tail = path
        .strip_prefix("/openai/v1/")
        .or_else(|| path.strip_prefix("/v1/"))
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path);
    api(tail).map_or(Route::NotFound, |api| Route::Model {
        api,
        deployment: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &str) -> Route<'_> {
        route(&Method::POST, path)
    }

    #[test]
    fn azure_deployment_paths() {
        assert_eq!(
            post("/openai/deployments/gpt4/chat/completions"),
            Route::Model {
                api: Api::Chat,
                deployment: Some("gpt4")
            }
        );
        assert_eq!(
            post("/openai/deployments/d/completions"),
            Route::Model {
                api: Api::Completions,
                deployment: Some("d")
            }
        );
        assert_eq!(
            post("/openai/deployments/emb/embeddings/"),
            Route::Model {
                api: Api::Embeddings,
                deployment: Some("emb")
            }
        );
        assert_eq!(
            post("/openai/deployments//chat/completions"),
            Route::NotFound
        );
        assert_eq!(post("/openai/deployments/d"), Route::NotFound);
        assert_eq!(post("/openai/deployments/d/images"), Route::NotFound);
    }

    #[test]
    fn openai_paths() {
        for prefix in ["/v1/", "/openai/v1/", "/"] {
            let chat = format!("{prefix}chat/completions");
            assert_eq!(
                post(&chat),
                Route::Model {
                    api: Api::Chat,
                    deployment: None
                }
            );
            let emb = format!("{prefix}embeddings");
            assert_eq!(
                post(&emb),
                Route::Model {
                    api: Api::Embeddings,
                    deployment: None
                }
            );
            let cmp = format!("{prefix}completions");
            assert_eq!(
                post(&cmp),
                Route::Model {
                    api: Api::Completions,
                    deployment: None
                }
            );
        }
        assert_eq!(post("/v2/chat/completions"), Route::NotFound);
        assert_eq!(post("/v1/models"), Route::NotFound);
        assert_eq!(post("/"), Route::NotFound);
        assert_eq!(post(""), Route::NotFound);
        assert_eq!(route(&Method::GET, "/v1/chat/completions"), Route::NotFound);
    }

    #[test]
    fn control_paths() {
        assert_eq!(route(&Method::GET, "/_sim/stats"), Route::Stats);
        assert_eq!(route(&Method::GET, "/_sim/requests"), Route::Requests);
        assert_eq!(route(&Method::GET, "/_sim/behaviour"), Route::GetBehaviour);
        assert_eq!(route(&Method::PUT, "/_sim/behaviour"), Route::SetBehaviour);
        assert_eq!(route(&Method::POST, "/_sim/behaviour"), Route::SetBehaviour);
        assert_eq!(route(&Method::POST, "/_sim/reset"), Route::Reset);
        assert_eq!(route(&Method::GET, "/healthz"), Route::Health);
        assert_eq!(route(&Method::DELETE, "/_sim/stats"), Route::NotFound);
    }
}

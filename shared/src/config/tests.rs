use super::*;
use serde_json::json;

fn env() -> [(&'static str, &'static str); 1] {
    [("PTU_KEY", "secret-from-env")]
}

fn check(value: serde_json::Value) -> Result<GatewayConfig, ConfigError> {
    validate(value, &env())
}

fn problems(value: serde_json::Value) -> Vec<String> {
    check(value)
        .unwrap_err()
        .problems()
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn node_gateway_file_loads_unchanged() {
    let cfg = check(json!({
        "serverId": "gw-1", "serverType": "single-domain",
        "applications": [{
            "appId": "chat", "description": "A chatbot", "appType": "azure_oai", "isActive": true,
            "cacheSettings": {"useCache": false, "searchType": "CS", "searchDistance": 0.95,
                              "searchContent": {"term": "messages", "includeRoles": "user"},
                              "entryExpiry": "2 minutes"},
            "memorySettings": {"useMemory": false, "msgCount": 5, "entryExpiry": "5 minutes"},
            "endpoints": [
                {"uri": "https://a.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-02-01", "apikey": "k1", "rpm": 10},
                {"uri": "https://b.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-02-01", "apiKey": "env:PTU_KEY", "id": "payg-east",
                 "healthPolicy": {"maxCallsBeforeUnhealthy": 1}}
            ]
        }]
    }))
    .unwrap();
    let app = cfg.application("chat").unwrap();
    assert_eq!(app.strategy, Strategy::Priority);
    let default = &*app.endpoints[0].id;
    assert!(
        default.starts_with("ep-") && default.len() == 11,
        "default id from the URI: {default}"
    );
    assert_eq!(app.endpoints[0].rpm, Some(10));
    assert_eq!(&*app.endpoints[1].id, "payg-east");
    assert_eq!(app.endpoints[1].key.header_value(), "secret-from-env");
    assert_eq!(format!("{:?}", app.endpoints[1].key), "***");
    assert!(
        !format!("{cfg:?}").contains("secret-from-env"),
        "keys never print"
    );
    assert_eq!(
        cfg.unused,
        vec!["serverType", "applications[0].endpoints[1].healthPolicy"]
    );
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let p = problems(json!({
        "applications": [
            {"appId": "a", "appType": "azure_oai", "endpoints": [
                {"uri": "not a url", "apikey": "k", "rpm": 0},
                {"uri": "ftp://x/y", "apikey": "env:MISSING", "timeouts": {"idleMs": -1}},
                {"uri": "https://ok/", "apikey": "k", "rmp": 5}
            ]},
            {"appId": "a", "appType": "azure_search", "endpoints": []},
            {"appId": "b", "appType": "azure_oai", "endpointRouterType": "TokenAware", "endpoints": [{"uri": "https://x/"}]},
            {"appId": "c", "appType": "azure_oai", "colour": "blue", "endpoints": []},
            "not an object"
        ]
    }));
    let expect = [
        "applications[0].endpoints[0].uri: not a valid URL",
        "applications[0].endpoints[0].rpm: must be a whole number above 0",
        "applications[0].endpoints[1].uri: must be an absolute http",
        "applications[0].endpoints[1].apikey: environment variable 'MISSING' is not set",
        "applications[0].endpoints[1].timeouts.idleMs: must be from 1",
        "applications[0].endpoints[2].rmp: unknown field `rmp`",
        "applications[1].appId: duplicate appId 'a'",
        "applications[1].appType: appType 'azure_search' is not supported by this gateway yet",
        "applications[1].endpoints: at least one endpoint is required",
        "applications[2].endpointRouterType: endpointRouterType 'TokenAware' is not supported",
        "applications[2].endpoints[0].apikey: an API key is required",
        "applications[3].colour: unknown field `colour`",
        "applications[4]: expected a JSON object, found a string",
    ];
    for e in expect {
        assert!(
            p.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {p:#?}"
        );
    }
    assert_eq!(p.len(), expect.len(), "{p:#?}");
}

#[test]
fn top_level_shape_errors_are_located() {
    assert_eq!(
        problems(json!({"apps": []}))[0],
        "apps: unknown field `apps`, expected one of `serverId`, `serverType`, `applications`, `budgetConfig`, `mcpServerConfig`"
    );
    let root = problems(json!([]));
    assert!(
        root[0] == "$: expected a JSON object, found an array",
        "{root:?}"
    );
    assert_eq!(
        problems(json!({"applications": []})),
        vec!["applications: at least one application is required"]
    );
    let e = parse(b"{ \"applications\": [ }", &env()).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { line: 1, .. }), "{e}");
}

#[test]
fn duplicate_endpoint_ids_and_bad_weights_are_rejected() {
    let p = problems(
        json!({"applications": [{"appId": "a", "appType": "azure_oai",
        "endpointRouterType": "WeightedRandom", "endpoints": [
            {"uri": "https://x/", "apikey": "k", "id": "same", "weight": 0},
            {"uri": "https://y/", "apikey": "k", "id": "same"}
        ]}]}),
    );
    assert!(
        p.contains(
            &"applications[0].endpoints[0].weight: must be a whole number from 1 to 100"
                .to_string()
        ),
        "{p:?}"
    );
    assert!(
        p.contains(&"applications[0].endpoints[1].id: duplicate endpoint id 'same'".to_string()),
        "{p:?}"
    );
}

#[test]
fn timeouts_and_strategies_are_typed() {
    let cfg = check(
        json!({"applications": [{"appId": "a", "appType": "azure_oai",
        "endpointRouterType": "LeastActiveConnections", "isActive": false,
        "endpoints": [{"uri": "http://127.0.0.1:9/", "apikey": "k",
                       "timeouts": {"connectMs": 250, "responseMs": 1000, "idleMs": 2000}}]}]}),
    )
    .unwrap();
    let app = &cfg.applications[0];
    assert!(!app.active);
    assert_eq!(app.strategy, Strategy::LeastActiveConnections);
    let t = app.endpoints[0].timeouts;
    assert_eq!(
        (
            t.connect.as_millis(),
            t.response.as_millis(),
            t.idle.as_millis()
        ),
        (250, 1000, 2000)
    );
}

#[test]
fn default_ids_follow_the_uri_not_the_position() {
    let a =
        "https://a.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-02-01";
    let b =
        "https://b.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-02-01";
    let ids = |uris: &[&str]| -> Vec<String> {
        let endpoints: Vec<_> = uris
            .iter()
            .map(|u| json!({"uri": u, "apikey": "k"}))
            .collect();
        let cfg = check(json!({"applications": [{"appId": "x", "appType": "azure_oai", "endpoints": endpoints}]})).unwrap();
        cfg.applications[0]
            .endpoints
            .iter()
            .map(|e| e.id.to_string())
            .collect()
    };
    let first = ids(&[a, b]);
    let reordered = ids(&[b, a]);
    assert_eq!(first[0], reordered[1]);
    assert_eq!(first[1], reordered[0]);
    assert_ne!(first[0], first[1]);
    // The query (api-version, a code) and credentials do not take part; the port does.
    let same_place = ids(&[
        "https://user:pw@A.openai.azure.com:443/openai/deployments/gpt/chat/completions?code=zzz",
    ]);
    assert_eq!(same_place[0], first[0]);
    let other_port =
        ids(&["https://a.openai.azure.com:8443/openai/deployments/gpt/chat/completions"]);
    assert_ne!(other_port[0], first[0]);
}

#[test]
fn two_endpoints_at_one_place_need_explicit_ids() {
    let uri = "https://a.openai.azure.com/openai/deployments/gpt/chat/completions";
    let p = problems(
        json!({"applications": [{"appId": "x", "appType": "azure_oai", "endpoints": [
            {"uri": uri, "apikey": "k1"},
            {"uri": format!("{uri}?api-version=2024-10-21"), "apikey": "k2"}
        ]}]}),
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("applications[0].endpoints[1].id:"),
        "{p:?}"
    );
    assert!(p[0].contains("explicit"), "{p:?}");
    let ok = check(
        json!({"applications": [{"appId": "x", "appType": "azure_oai", "endpoints": [
            {"uri": uri, "apikey": "k1", "id": "one"},
            {"uri": uri, "apikey": "k2", "id": "two"}
        ]}]}),
    );
    assert!(ok.is_ok());
}

/// Which kind of target each endpoint URI is, and the rules on mixing them.
mod targets {
    use super::*;
    use crate::upstream::{Operation, Target};
    use serde_json::json;

    fn endpoints(endpoints: Value) -> Result<GatewayConfig, Vec<String>> {
        let env: [(&str, &str); 0] = [];
        validate(
            json!({"applications": [{"appId": "a", "appType": "azure_oai", "endpoints": endpoints}]}),
            &env,
        )
        .map_err(|e| e.problems().iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn each_uri_is_classified_once() {
        let cfg = endpoints(json!([
            {"uri": "https://r/openai/deployments/gpt-4o", "apikey": "k", "id": "base"},
            {"uri": "https://r/openai/v1", "apikey": "k", "model": "gpt-4o-mini", "id": "v1"}
        ]))
        .unwrap();
        let eps = &cfg.applications[0].endpoints;
        assert_eq!(eps[0].target, Target::Deployment { api_version: false });
        assert_eq!(eps[0].model, None);
        assert_eq!(eps[1].target, Target::V1);
        assert_eq!(eps[1].model.as_deref(), Some("gpt-4o-mini"));
        assert!(cfg.unused.is_empty(), "model is used now: {:?}", cfg.unused);
        let cfg = endpoints(
            json!([{"uri": "https://r/openai/deployments/e/embeddings?api-version=2024-10-21",
                                     "apikey": "k", "model": "text-embedding-3-small"}]),
        )
        .unwrap();
        assert_eq!(
            cfg.applications[0].endpoints[0].target,
            Target::Fixed {
                operation: Some(Operation::Embeddings)
            }
        );
    }

    #[test]
    fn a_v1_endpoint_names_its_model() {
        let p = endpoints(json!([{"uri": "https://r/openai/v1/", "apikey": "k"}])).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("applications[0].endpoints[0].model: an endpoint on the v1 surface"),
            "{p:?}"
        );
        for bad in [json!(""), json!("  "), json!("a\nb")] {
            let p = endpoints(json!([{"uri": "https://r/openai/v1", "apikey": "k", "model": bad}]))
                .unwrap_err();
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(
                p[0].contains(".model: must be a model or deployment name"),
                "{p:?}"
            );
        }
        let p =
            endpoints(json!([{"uri": "https://r/x/chat/completions", "apikey": "k", "model": 4}]))
                .unwrap_err();
        assert!(
            p[0].starts_with("applications[0].endpoints[0].model:"),
            "{p:?}"
        );
    }

    #[test]
    fn one_application_does_not_mix_bases_and_fixed_uris() {
        let p = endpoints(json!([
            {"uri": "https://r/openai/deployments/gpt/chat/completions?api-version=2024-10-21", "apikey": "k"},
            {"uri": "https://s/openai/deployments/gpt", "apikey": "k"}
        ]))
        .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("applications[0].endpoints[1].uri: this uri ends at a deployment"),
            "{p:?}"
        );
        assert!(
            p[0].contains("endpoints[0]'s names its operation (chat/completions)"),
            "{p:?}"
        );
        // Fixed URIs naming different operations load as they did on the Node gateway.
        assert!(
            endpoints(json!([
                {"uri": "https://r/openai/deployments/gpt/chat/completions", "apikey": "k"},
                {"uri": "https://r/openai/deployments/gpt/completions", "apikey": "k"}
            ]))
            .is_ok()
        );
        // A deployment base and a v1 base both take the operation from the client.
        assert!(
            endpoints(json!([
                {"uri": "https://r/openai/deployments/gpt", "apikey": "k"},
                {"uri": "https://s/openai/v1", "apikey": "k", "model": "gpt"}
            ]))
            .is_ok()
        );
    }
}

#[test]
fn the_gateways_own_secrets_are_never_endpoint_keys() {
    for name in [
        "API_GATEWAY_KEY",
        "DATABASE_URL",
        "API_GATEWAY_DATABASE_URL",
    ] {
        let p = problems(
            json!({"applications": [{"appId": "a", "appType": "azure_oai", "endpoints": [
                {"uri": "https://attacker.example/v1/chat/completions", "apikey": format!("env:{name}"), "id": "x"}
            ]}]}),
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("gateway's own secrets"), "{p:?}");
    }
}

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
    assert_eq!(&*app.endpoints[0].id, "ep0");
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

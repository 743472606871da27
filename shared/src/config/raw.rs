//! The configuration file exactly as users write it: the Node gateway's shape plus our additions.
//!
//! Stage one of two. These types only describe the JSON; nothing here judges whether values make
//! sense (that is [`super::validate`]). Unknown fields are rejected so that a typo is reported
//! instead of silently ignored. Fields the Node gateway accepts but this gateway does not act on
//! yet are still accepted (as raw JSON) so that an existing file keeps loading unchanged.

use serde::Deserialize;
use serde_json::Value;

/// The top level of the file. Applications are kept as raw JSON here and deserialised one by one,
/// so that a problem in one application does not hide the problems in the others.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawGatewayConfig {
    pub server_id: Option<String>,
    pub server_type: Option<String>,
    pub applications: Vec<Value>,
    /// Node gateway field, accepted and not used.
    pub budget_config: Option<Value>,
    /// Node gateway field (inert there too), accepted and not used.
    pub mcp_server_config: Option<Value>,
}

/// One AI application. Endpoints stay raw for the same reason as applications.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawApplication {
    pub app_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub app_type: String,
    pub is_active: Option<bool>,
    pub endpoint_router_type: Option<String>,
    pub endpoints: Vec<Value>,
    pub cache_settings: Option<Value>,
    pub memory_settings: Option<Value>,
    // Node gateway fields accepted for compatibility; later issues give some of them meaning.
    #[serde(rename = "exposeA2AEndpoint")]
    pub expose_a2a_endpoint: Option<Value>,
    pub search_ai_app: Option<Value>,
    pub personalization_settings: Option<Value>,
    pub budget_settings: Option<Value>,
    pub normalizer_settings: Option<Value>,
    pub mcp_server_settings: Option<Value>,
    pub adaptive_router_settings: Option<Value>,
}

/// One backend deployment of an application.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawEndpoint {
    pub uri: String,
    #[serde(alias = "apiKey")]
    pub apikey: Option<String>,
    pub id: Option<String>,
    pub rpm: Option<i64>,
    pub weight: Option<i64>,
    pub timeouts: Option<RawTimeouts>,
    /// The model name the body's `model` is set to upstream (the Node gateway's field, given
    /// this meaning: v1 and Foundry endpoints read the deployment from the body).
    pub model: Option<String>,
    // Node gateway router and policy fields, accepted for compatibility and not used yet.
    pub payload_threshold: Option<Value>,
    pub task: Option<Value>,
    pub days: Option<Value>,
    pub start_hour: Option<Value>,
    pub end_hour: Option<Value>,
    pub quality_tier: Option<Value>,
    pub budget: Option<Value>,
    pub health_policy: Option<Value>,
    pub normalization_policy: Option<Value>,
}

impl RawGatewayConfig {
    /// Fields present in the file that this gateway accepts but does not act on.
    pub fn unused_fields(&self) -> Vec<&'static str> {
        present(&[
            ("serverType", self.server_type.is_some()),
            ("budgetConfig", self.budget_config.is_some()),
            ("mcpServerConfig", self.mcp_server_config.is_some()),
        ])
    }
}

impl RawApplication {
    /// Fields present in the application that this gateway accepts but does not act on yet.
    pub fn unused_fields(&self) -> Vec<&'static str> {
        present(&[
            ("exposeA2AEndpoint", self.expose_a2a_endpoint.is_some()),
            ("searchAiApp", self.search_ai_app.is_some()),
            (
                "personalizationSettings",
                self.personalization_settings.is_some(),
            ),
            ("budgetSettings", self.budget_settings.is_some()),
            ("normalizerSettings", self.normalizer_settings.is_some()),
            ("mcpServerSettings", self.mcp_server_settings.is_some()),
            (
                "adaptiveRouterSettings",
                self.adaptive_router_settings.is_some(),
            ),
        ])
    }
}

impl RawEndpoint {
    /// Fields present in the endpoint that this gateway accepts but does not act on yet.
    pub fn unused_fields(&self) -> Vec<&'static str> {
        present(&[
            ("payloadThreshold", self.payload_threshold.is_some()),
            ("task", self.task.is_some()),
            ("days", self.days.is_some()),
            ("startHour", self.start_hour.is_some()),
            ("endHour", self.end_hour.is_some()),
            ("qualityTier", self.quality_tier.is_some()),
            ("budget", self.budget.is_some()),
            ("healthPolicy", self.health_policy.is_some()),
            ("normalizationPolicy", self.normalization_policy.is_some()),
        ])
    }
}

fn present(fields: &[(&'static str, bool)]) -> Vec<&'static str> {
    fields.iter().filter(|(_, p)| *p).map(|(n, _)| *n).collect()
}

/// Our addition: per-endpoint timeouts in milliseconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTimeouts {
    /// TCP (and TLS) connection set-up.
    pub connect_ms: Option<i64>,
    /// From sending the request to the backend's response headers.
    pub response_ms: Option<i64>,
    /// Longest silence between two pieces of a response body (a stalled stream).
    pub idle_ms: Option<i64>,
}

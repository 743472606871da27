//! The AI services gateway's core: everything the function binaries run.
//!
//! A request's path, top-down: [`http`] (parse, identify) → [`state`] (one configuration
//! snapshot) → [`routing`] (order the endpoints) → [`throttle`] (skip open circuits, admit under
//! RPM limits) → [`upstream`] (call, classify, relay) — with [`forward`] tying routing, throttling
//! and upstream calls into failover. See ARCHITECTURE.md.

pub mod config;
pub mod env;
pub mod forward;
pub mod http;
pub mod metrics;
pub mod routing;
pub mod server;
pub mod serverless;
pub mod settings;
pub mod start;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod upstream;

pub use config::GatewayConfig;
pub use env::{Env, ProcessEnv};
pub use http::{admin_app, gateway_app, router_app};
pub use settings::Settings;
pub use state::Gateway;

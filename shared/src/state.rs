//! The gateway's live state: one configuration snapshot, swapped whole, over state that
//! survives reloads.
//!
//! A request takes one [`Snapshot`] at its start and uses only that, so it sees either the old
//! configuration and everything derived from it, or the new one, never a mix. Endpoint throttle
//! state and HTTP clients live outside the swap in registries, and each new snapshot is wired to
//! the same objects for the endpoints it still names.

use crate::config::{Application, GatewayConfig};
use crate::settings::Settings;
use crate::throttle::{EndpointThrottle, ThrottleRegistry};
use crate::upstream::ClientCache;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Everything derived from one configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<GatewayConfig>,
    apps: HashMap<Arc<str>, Arc<AppRoute>>,
}

impl Snapshot {
    /// The routing table of one application.
    pub fn app(&self, app_id: &str) -> Option<&Arc<AppRoute>> {
        self.apps.get(app_id)
    }
}

/// One application with its endpoints wired to their live state.
#[derive(Debug)]
pub struct AppRoute {
    pub app: Arc<Application>,
    /// Parallel to `app.endpoints`.
    pub endpoints: Vec<RoutedEndpoint>,
}

/// An endpoint's live state and the client that calls it.
#[derive(Debug)]
pub struct RoutedEndpoint {
    pub throttle: Arc<EndpointThrottle>,
    pub client: reqwest::Client,
}

/// Why a snapshot could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot build an HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

/// The gateway: settings, the live snapshot and the registries behind it.
#[derive(Debug)]
pub struct Gateway {
    pub settings: Settings,
    pub started: Instant,
    pub started_at: std::time::SystemTime,
    live: ArcSwap<Snapshot>,
    throttles: ThrottleRegistry,
    clients: ClientCache,
}

impl Gateway {
    /// A gateway serving `config`.
    pub fn new(settings: Settings, config: GatewayConfig) -> Result<Arc<Self>, BuildError> {
        let throttles = ThrottleRegistry::default();
        let clients = ClientCache::default();
        let snapshot = build(Arc::new(config), &throttles, &clients)?;
        Ok(Arc::new(Self {
            settings,
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            live: ArcSwap::from_pointee(snapshot),
            throttles,
            clients,
        }))
    }

    /// The snapshot a request uses from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Swap in a new (already validated) configuration. Requests in flight finish on the old
    /// snapshot; endpoint state of endpoints that still exist carries over.
    pub fn reload(&self, config: GatewayConfig) -> Result<(), BuildError> {
        let snapshot = build(Arc::new(config), &self.throttles, &self.clients)?;
        let keep = |app: &str, ep: &str| {
            snapshot
                .app(app)
                .is_some_and(|r| r.app.endpoints.iter().any(|e| &*e.id == ep))
        };
        self.throttles.retain(keep);
        self.live.store(Arc::new(snapshot));
        Ok(())
    }
}

fn build(
    config: Arc<GatewayConfig>,
    throttles: &ThrottleRegistry,
    clients: &ClientCache,
) -> Result<Snapshot, BuildError> {
    let mut apps = HashMap::with_capacity(config.applications.len());
    for app in &config.applications {
        let endpoints = app
            .endpoints
            .iter()
            .map(|ep| {
                Ok(RoutedEndpoint {
                    throttle: throttles.resolve(&app.id, &ep.id, ep.rpm),
                    client: clients.get(ep.timeouts.connect)?,
                })
            })
            .collect::<Result<Vec<_>, reqwest::Error>>()?;
        let route = AppRoute {
            app: app.clone(),
            endpoints,
        };
        apps.insert(app.id.clone(), Arc::new(route));
    }
    Ok(Snapshot { config, apps })
}

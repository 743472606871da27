//! The gateway's live state: one configuration snapshot, swapped whole, over state that
//! survives reloads.
//!
//! A request takes one [`Snapshot`] at its start and uses only that, so it sees either the old
//! configuration and everything derived from it, or the new one, never a mix. Endpoint throttle
//! state, metric counters and HTTP clients live outside the swap in registries, and each new
//! snapshot is wired to the same objects for the endpoints it still names. The shared store and
//! the background tasks that talk to it also live outside.

use crate::config::{Application, GatewayConfig};
use crate::metrics::{self, EndpointMetrics, MetricsRegistry};
use crate::settings::Settings;
use crate::store::SharedStore;
use crate::throttle::{self, EndpointThrottle, Shared, ThrottleRegistry};
use crate::upstream::ClientCache;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Everything derived from one configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<GatewayConfig>,
    /// The stored configuration version this snapshot was built from (0: the start-up file).
    /// Kept inside the snapshot so that the version reported and the configuration served can
    /// never disagree, and a snapshot only ever replaces an older one.
    pub version: i64,
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

/// An endpoint's live state, its counters and the client that calls it.
#[derive(Debug)]
pub struct RoutedEndpoint {
    pub throttle: Arc<EndpointThrottle>,
    pub metrics: Arc<EndpointMetrics>,
    pub client: reqwest::Client,
}

/// How often each instance looks for a newer stored configuration.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// The config watch task: [`Gateway::follow_config`] every second until stopped.
async fn config_watch(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CONFIG_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = gateway.follow_config().await {
                    gateway.shared.report_failure(&e);
                }
            }
            () = crate::throttle::sync::stopped(&mut stop) => break,
        }
    }
}

/// Why a new configuration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Build(#[from] BuildError),
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
    pub shared: Arc<Shared>,
    /// This instance's own cost per request (outside backend calls).
    pub overhead: crate::metrics::overhead::Overhead,
    live: ArcSwap<Snapshot>,
    /// The newest stored configuration version seen (applied, or found invalid here).
    seen_version: AtomicI64,
    throttles: Arc<ThrottleRegistry>,
    metrics: Arc<MetricsRegistry>,
    clients: ClientCache,
}

impl Gateway {
    /// A gateway serving `config`, sharing state through `store`.
    pub fn new(
        settings: Settings,
        config: GatewayConfig,
        store: Arc<dyn SharedStore>,
    ) -> Result<Arc<Self>, BuildError> {
        let throttles = Arc::new(ThrottleRegistry::default());
        let metrics = Arc::new(MetricsRegistry::default());
        let clients = ClientCache::default();
        let snapshot = build(Arc::new(config), 0, &throttles, &metrics, &clients)?;
        let shared = Arc::new(Shared::new(
            store,
            settings.instance_id(),
            settings.max_retry_after,
        ));
        Ok(Arc::new(Self {
            settings,
            started: Instant::now(),
            started_at: std::time::SystemTime::now(),
            shared,
            overhead: Default::default(),
            live: ArcSwap::from_pointee(snapshot),
            seen_version: AtomicI64::new(0),
            throttles,
            metrics,
            clients,
        }))
    }

    /// The snapshot a request uses from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Swap in a new (already validated) configuration as the next local version (a test and
    /// tooling entry point; reconfiguration goes through [`Gateway::apply_config`]).
    pub fn reload(&self, config: GatewayConfig) -> Result<(), BuildError> {
        let version = self.config_version();
        self.install(config, version).map(|_| ())
    }

    /// Swap in `config` as stored version `version`, unless the live snapshot already comes
    /// from a newer version (two reconfigurations racing on one instance: the newest wins, in
    /// whatever order they finish). Requests in flight finish on the old snapshot; endpoint
    /// state of endpoints that still exist carries over. Returns whether it was swapped in.
    fn install(&self, config: GatewayConfig, version: i64) -> Result<bool, BuildError> {
        let snapshot = Arc::new(build(
            Arc::new(config),
            version,
            &self.throttles,
            &self.metrics,
            &self.clients,
        )?);
        let mut installed = false;
        self.live.rcu(|current| {
            installed = current.version <= version;
            if installed {
                snapshot.clone()
            } else {
                current.clone()
            }
        });
        if installed {
            let live = self.snapshot();
            let keep = |app: &str, ep: &str| {
                live.app(app)
                    .is_some_and(|r| r.app.endpoints.iter().any(|e| &*e.id == ep))
            };
            self.throttles.retain(keep);
            self.metrics.retain(keep);
        }
        Ok(installed)
    }

    /// Store a validated configuration as a new version and swap it in here; the other
    /// instances pick it up from the store ([`Gateway::follow_config`]).
    pub async fn apply_config(
        &self,
        raw: serde_json::Value,
        config: GatewayConfig,
    ) -> Result<i64, ApplyError> {
        let version = tokio::time::timeout(
            Duration::from_secs(5),
            self.shared
                .store
                .save_config(&raw, self.shared.instance.as_ref()),
        )
        .await
        .map_err(|_| ApplyError::Store(crate::store::StoreError::Timeout))??;
        self.seen_version.fetch_max(version, Ordering::AcqRel);
        self.install(config, version)?;
        Ok(version)
    }

    /// The stored configuration version the live snapshot came from (0: the start-up file).
    pub fn config_version(&self) -> i64 {
        self.live.load().version
    }

    /// If the store holds a newer configuration than the live one, validate it here and swap
    /// it in. A version that does not validate on this instance (an `env:` key missing here,
    /// say) is logged once and skipped, and the running configuration stays.
    pub async fn follow_config(&self) -> Result<bool, crate::store::StoreError> {
        let Some(latest) = self.shared.store.latest_config_version().await? else {
            return Ok(false);
        };
        if latest <= self.seen_version.load(Ordering::Acquire) {
            return Ok(false);
        }
        let Some((version, raw)) = self.shared.store.latest_config().await? else {
            return Ok(false);
        };
        self.seen_version.fetch_max(version, Ordering::AcqRel);
        match crate::config::validate(raw, &crate::env::ProcessEnv) {
            Ok(config) => match self.install(config, version) {
                Ok(installed) => {
                    if installed {
                        tracing::info!(version, "configuration version applied");
                    }
                    Ok(installed)
                }
                Err(e) => {
                    tracing::error!(version, error = %e, "configuration version could not be applied");
                    Ok(false)
                }
            },
            Err(e) => {
                tracing::error!(version, error = %e, "stored configuration version is invalid here; keeping the running one");
                Ok(false)
            }
        }
    }

    /// Bring this instance in step with the shared store once (what the sync task does on
    /// every tick). Returns whether the store answered.
    pub async fn sync_now(&self) -> bool {
        self.shared.sync_once(&self.throttles).await
    }

    /// Write this instance's counters to the store now (what the flusher does periodically).
    pub async fn flush_metrics(&self) -> bool {
        let window = self.settings.metrics_windows().start_of(throttle::now_ms());
        self.metrics.flush(&self.shared, window).await
    }

    /// Start the background tasks (state sync, metrics flusher). Stop them with
    /// [`Background::stop`], which also flushes what is left.
    pub fn start_background(self: &Arc<Self>) -> Background {
        let (stop, stopped) = watch::channel(false);
        let stopped_config = stopped.clone();
        let sync = tokio::spawn(throttle::sync::run(
            self.shared.clone(),
            self.throttles.clone(),
            self.settings.sync_interval,
            stopped.clone(),
        ));
        let flusher = tokio::spawn(metrics::run(
            self.metrics.clone(),
            self.shared.clone(),
            self.settings.metrics_windows(),
            self.settings.metrics_flush,
            stopped,
        ));
        let watch = tokio::spawn(config_watch(self.clone(), stopped_config));
        Background {
            stop,
            tasks: vec![
                ("state sync", sync),
                ("metrics flusher", flusher),
                ("config watch", watch),
            ],
        }
    }
}

/// The running background tasks of one gateway.
#[derive(Debug)]
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Background {
    /// Ask every task to finish its last round, and wait (bounded) for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "background task failed"),
                Err(_) => tracing::warn!(task = name, "background task did not stop in time"),
            }
        }
    }
}

fn build(
    config: Arc<GatewayConfig>,
    version: i64,
    throttles: &ThrottleRegistry,
    metrics: &MetricsRegistry,
    clients: &ClientCache,
) -> Result<Snapshot, BuildError> {
    let mut apps = HashMap::with_capacity(config.applications.len());
    for app in &config.applications {
        let endpoints = app
            .endpoints
            .iter()
            .map(|ep| {
                let throttle = throttles.resolve(&app.id, &ep.id, ep.rpm);
                Ok(RoutedEndpoint {
                    metrics: metrics.resolve(&throttle.key),
                    throttle,
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
    Ok(Snapshot {
        config,
        version,
        apps,
    })
}

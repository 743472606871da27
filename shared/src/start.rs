//! Start-up shared by every binary: settings, logging, configuration, the gateway state, and the
//! address to listen on. Binaries stay a few lines long.

use crate::config::{self, ConfigError};
use crate::env::Env;
use crate::settings::{Settings, SettingsError};
use crate::state::{BuildError, Gateway};
use crate::store::{MemoryStore, PostgresStore, SharedStore, StoreError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Why the process cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid setting {0}")]
    Settings(#[from] SettingsError),
    #[error(
        "no configuration file: set API_GATEWAY_CONFIG_FILE or pass --config FILE (or run the demo: cargo run -p gateway --bin demo)"
    )]
    NoConfig,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The shared store the settings ask for: PostgreSQL when a database URL is set (schema applied
/// on first contact; a database that is down only degrades to the local view), memory otherwise.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn SharedStore>, StoreError> {
    let Some(url) = &settings.database_url else {
        return Ok(Arc::new(MemoryStore::new()));
    };
    let store = PostgresStore::connect_lazy(&url.0)?;
    match tokio::time::timeout(std::time::Duration::from_secs(5), store.migrate()).await {
        Ok(Ok(())) => tracing::info!("shared state in PostgreSQL (schema up to date)"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "PostgreSQL unavailable at start-up: running on local state until it answers")
        }
        Err(_) => tracing::warn!(
            "PostgreSQL did not answer at start-up: running on local state until it does"
        ),
    }
    Ok(Arc::new(store))
}

/// Read settings and configuration, set up logging, open the shared store and build the gateway.
pub async fn boot(env: &dyn Env, args: &[String]) -> Result<Arc<Gateway>, StartError> {
    let settings = Settings::load(env, args)?;
    crate::telemetry::init(&settings.log_level, settings.log_format, env);
    let path = settings.config_file.clone().ok_or(StartError::NoConfig)?;
    let config = config::load_file(&path, env)?;
    for field in &config.unused {
        tracing::warn!(field = %field, "configuration field accepted for compatibility but not used");
    }
    tracing::info!(
        config = %path.display(),
        applications = config.applications.len(),
        "configuration loaded"
    );
    let store = open_store(&settings).await?;
    Ok(Gateway::new(settings, config, store)?)
}

/// Where to listen: the port an Azure Functions host hands a custom handler (always on
/// loopback), else the configured host and port.
pub fn listen_addr(settings: &Settings, env: &dyn Env) -> Result<SocketAddr, SettingsError> {
    match env.var("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Some(port) => {
            let port = port.trim().parse::<u16>().map_err(|_| SettingsError {
                name: "FUNCTIONS_CUSTOMHANDLER_PORT".into(),
                message: format!("'{port}' is not a port number"),
            })?;
            Ok(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port))
        }
        None => Ok(SocketAddr::new(settings.host, settings.port)),
    }
}

/// Serve `gateway` through `app` on a plain listener (or the Functions host's port) until SIGTERM
/// or Ctrl-C, then drain requests in flight and stop the background tasks (a last state sync and
/// metrics flush). The soft open-files limit is raised to the hard limit first, and clients are
/// held to the settings' header, body and keep-alive timeouts (see [`crate::server`]). `name`
/// prefixes messages. Returns the process exit code.
pub async fn serve_until_signal(
    name: &str,
    gateway: &Arc<Gateway>,
    app: axum::Router,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let settings = &gateway.settings;
    let addr = match listen_addr(settings, &crate::env::ProcessEnv) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    crate::server::raise_open_files_limit();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("{name}: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(%addr, prefix = %settings.prefix(), "{name} listening");
    let background = gateway.start_background();
    let shutdown = crate::server::shutdown_signal();
    let options = crate::server::ServeOptions::from_settings(settings);
    let served = crate::server::serve(listener, app, options, shutdown).await;
    background.stop().await;
    crate::telemetry::shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: server failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// [`boot`] from the process's own environment and arguments; on failure the message is
/// printed (prefixed with `name`) and the exit code to return is given back.
pub async fn boot_process(name: &str) -> Result<Arc<Gateway>, std::process::ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    boot(&crate::env::ProcessEnv, &args).await.map_err(|e| {
        eprintln!("{name}: {e}");
        std::process::ExitCode::from(2)
    })
}

/// `gateway migrate [--check]`: apply the schema migrations to `DATABASE_URL` and exit (the
/// shared state's are also applied at start-up; this is for deployment pipelines). The pgvector
/// features' migrations are applied too; a server without the extension only gets a warning
/// saying what to change, since those features are then off, not broken. With `--check` nothing
/// is applied: exit 0 when both schemas are up to date, 1 listing what is pending.
pub async fn migrate_command(env: &dyn Env, args: &[String]) -> std::process::ExitCode {
    use std::process::ExitCode;
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => {
            eprintln!("migrate: unexpected arguments {args:?} (usage: gateway migrate [--check])");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::load(env, &[]) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("migrate: invalid setting {e}");
            return ExitCode::from(2);
        }
    };
    let Some(url) = settings.database_url else {
        eprintln!("migrate: DATABASE_URL is not set");
        return ExitCode::from(2);
    };
    let store = match PostgresStore::connect_lazy(&url.0) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("migrate: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        return match store.pending_migrations().await {
            Ok(pending) if pending.is_empty() => {
                println!("migrate: schema up to date");
                ExitCode::SUCCESS
            }
            Ok(pending) => {
                for p in &pending {
                    println!(
                        "migrate: pending {} {} ({})",
                        p.schema, p.version, p.description
                    );
                }
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("migrate: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Err(e) = store.migrate().await {
        eprintln!("migrate: {e}");
        return ExitCode::from(1);
    }
    match store.migrate_vector().await {
        Ok(()) => println!("migrate: schema up to date (pgvector features included)"),
        Err(e @ StoreError::VectorUnavailable(_)) => {
            println!("migrate: shared state schema up to date");
            eprintln!("migrate: warning: {e}");
        }
        Err(e) => {
            eprintln!("migrate: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

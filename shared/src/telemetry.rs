//! Logging and tracing set-up: `tracing` to stderr, filtered by `API_GATEWAY_LOG_LEVEL` (a level
//! or a full filter directive such as `info,aigw_core=debug`), as text (coloured only when stderr
//! is a terminal, so files and pipes never get escape codes) or, with `API_GATEWAY_LOG_FORMAT=json`,
//! one JSON object per line for hosts' log collectors; and — when the standard
//! OpenTelemetry variables ask for it — the same spans exported as traces over OTLP/HTTP.
//!
//! Traces are on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The exporter reads the
//! other `OTEL_*` variables itself (headers, timeout, `OTEL_SERVICE_NAME`, batch settings) and
//! sends from its own thread, so a slow collector never delays a request.

use crate::env::Env;
use crate::settings::LogFormat;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether the environment asks for OTLP traces.
pub fn traces_wanted(env: &dyn Env) -> bool {
    let set = |name: &str| env.var(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = env
        .var("OTEL_SDK_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env
            .var("OTEL_TRACES_EXPORTER")
            .is_some_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Install the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(level: &str, format: LogFormat, env: &dyn Env) {
    use std::io::IsTerminal;
    let filter = || EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter())
            .boxed(),
    };
    let otel = traces_wanted(env).then(|| otlp_layer(env)).flatten();
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
}

fn otlp_layer<S>(env: &dyn Env) -> Option<impl Layer<S>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("OTLP trace exporter not started: {e}");
            return None;
        }
    };
    let service = env
        .var("OTEL_SERVICE_NAME")
        .unwrap_or_else(|| "aigw".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let tracer = provider.tracer("aigw");
    let _ = PROVIDER.set(provider);
    // Spans are exported at info level and above, whatever the log level.
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(EnvFilter::new("info")),
    )
}

/// Send the spans still buffered (at shutdown).
pub fn shutdown() {
    if let Some(Err(e)) = PROVIDER.get().map(SdkTracerProvider::shutdown) {
        eprintln!("OTLP trace exporter shutdown: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_follow_the_standard_variables() {
        assert!(!traces_wanted(&[]));
        assert!(traces_wanted(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318"
        )]));
        assert!(traces_wanted(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )]));
        assert!(!traces_wanted(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true")
        ]));
        assert!(!traces_wanted(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none")
        ]));
        assert!(!traces_wanted(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]));
    }
}

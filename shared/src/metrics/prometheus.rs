//! `GET /metrics`: the Prometheus text format (0.0.4, what scrapers read by default), written by
//! `prometheus-client` from one custom collector over the stored sums.
//!
//! Counters (`aigw_requests_total`, `aigw_tokens_total`, `aigw_gateway_responses_total`) and the
//! latency and time-to-first-token histograms come from the stored totals, summed over every
//! instance: they only grow (a pruned window does not lower them), and an admin process that
//! carries no traffic reports the fleet's. Gauges (circuit, RPM budget, store) and the gateway's
//! own overhead are this instance's view.
//!
//! `prometheus-client` appends `_total` to counter names itself, so the counters are described
//! without it and come out with exactly their names; histogram bounds are written as Go does
//! (`le="25"`, `le="+Inf"`), sums as floats (`_sum 1234.0`).

use crate::state::Gateway;
use crate::store::{BUCKET_BOUNDS_MS, Counters, EndpointKey, GATEWAY_ENDPOINT, Histogram};
use crate::throttle::now_ms;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The content type of the text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Stored totals by endpoint.
pub type Totals = BTreeMap<EndpointKey, Counters>;

/// One configured endpoint's series.
#[derive(Debug)]
struct EndpointSeries {
    app: Arc<str>,
    endpoint: Arc<str>,
    uri: Arc<str>,
    totals: Counters,
    circuit_open: bool,
    rpm_remaining: Option<u32>,
}

/// Everything one scrape writes, taken before encoding (a collector owns its data).
#[derive(Debug)]
struct Scrape {
    endpoints: Vec<EndpointSeries>,
    /// Per configured application, its totals of the gateway's own answers.
    apps: Vec<(Arc<str>, Counters)>,
    overhead: super::overhead::OverheadSnapshot,
    store: &'static str,
    store_up: bool,
}

/// The Prometheus text for `gateway`, from the stored `totals`.
pub fn render(gateway: &Gateway, totals: &Totals) -> String {
    let snapshot = gateway.snapshot();
    let now = now_ms();
    let mut endpoints = Vec::new();
    let mut apps = Vec::new();
    for app in &snapshot.config.applications {
        let Some(route) = snapshot.app(&app.id) else {
            continue;
        };
        for (ep, live) in app.endpoints.iter().zip(&route.endpoints) {
            endpoints.push(EndpointSeries {
                app: app.id.clone(),
                endpoint: ep.id.clone(),
                uri: ep.display_uri.clone(),
                totals: totals.get(&live.throttle.key).copied().unwrap_or_default(),
                circuit_open: live.throttle.circuit.wait_ms(now).is_some(),
                rpm_remaining: live.throttle.rpm().map(|l| l.remaining(now)),
            });
        }
        let key = EndpointKey::new(&app.id, GATEWAY_ENDPOINT);
        apps.push((
            app.id.clone(),
            totals.get(&key).copied().unwrap_or_default(),
        ));
    }
    let scrape = Scrape {
        endpoints,
        apps,
        overhead: gateway.overhead.snapshot(),
        store: gateway.shared.store.kind(),
        store_up: gateway.shared.is_up(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail; a collector error would leave what was written.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

type Labels<'a> = [(&'static str, &'a str); 2];

impl EndpointSeries {
    fn labels(&self) -> Labels<'_> {
        [("app", &*self.app), ("endpoint", &*self.endpoint)]
    }
}

/// A histogram of stored buckets (counts per bucket, not cumulative).
fn histogram(
    mut encoder: MetricEncoder<'_>,
    bounds: &[u64],
    buckets: &[u64],
    sum: u64,
) -> Result<(), std::fmt::Error> {
    let pairs: Vec<(f64, u64)> = buckets
        .iter()
        .enumerate()
        .map(|(i, n)| (bounds.get(i).map_or(f64::INFINITY, |b| *b as f64), *n))
        .collect();
    let count = buckets.iter().sum();
    encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        sum as f64, count, &pairs, None,
    )
}

impl Scrape {
    fn counters(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut requests = encoder.encode_descriptor(
            "aigw_requests",
            "Calls to backend endpoints by outcome, since the endpoint was configured, over every instance.",
            None,
            MetricType::Counter,
        )?;
        for s in &self.endpoints {
            let c = &s.totals;
            for (outcome, n) in [
                ("success", c.succeeded()),
                ("failed", c.failed),
                ("throttled", c.throttled),
                ("filtered", c.filtered),
                ("client_cancelled", c.cancelled),
            ] {
                let labels = (s.labels(), [("outcome", outcome)]);
                ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
            }
        }
        let mut tokens = encoder.encode_descriptor(
            "aigw_tokens",
            "Tokens reported by backends (source=\"usage\") or counted by the gateway for streams without usage (source=\"estimate\").",
            None,
            MetricType::Counter,
        )?;
        for s in &self.endpoints {
            let c = &s.totals;
            let estimated = c.estimated_prompt_tokens + c.estimated_completion_tokens;
            for (kind, source, n) in [
                ("prompt", "usage", c.prompt_tokens),
                ("completion", "usage", c.completion_tokens),
                ("total", "usage", c.total_tokens),
                ("prompt", "estimate", c.estimated_prompt_tokens),
                ("completion", "estimate", c.estimated_completion_tokens),
                ("total", "estimate", estimated),
            ] {
                let labels = (s.labels(), [("kind", kind), ("source", source)]);
                ConstCounter::new(n).encode(tokens.encode_family(&labels)?)?;
            }
        }
        for (name, help, pick) in [
            (
                "aigw_request_duration_ms",
                "Time from sending a request to the end of the answer.",
                0,
            ),
            (
                "aigw_time_to_first_token_ms",
                "Time from sending a streamed request to its first piece.",
                1,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for s in &self.endpoints {
                let c = &s.totals;
                let (h, sum): (&Histogram, u64) = match pick {
                    0 => (&c.latency, c.latency_ms_sum),
                    _ => (&c.ttft, c.ttft_ms_sum),
                };
                let labels = s.labels();
                histogram(family.encode_family(&labels)?, &BUCKET_BOUNDS_MS, &h.0, sum)?;
            }
        }
        Ok(())
    }

    fn gauges(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut circuit = encoder.encode_descriptor(
            "aigw_circuit_open",
            "1 while the endpoint is kept off after a 429.",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.endpoints {
            let labels = s.labels();
            ConstGauge::new(u32::from(s.circuit_open)).encode(circuit.encode_family(&labels)?)?;
        }
        let mut rpm = encoder.encode_descriptor(
            "aigw_rpm_remaining",
            "Requests left in the endpoint's RPM window on this instance.",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.endpoints {
            if let Some(remaining) = s.rpm_remaining {
                let labels = s.labels();
                ConstGauge::new(remaining).encode(rpm.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut info = encoder.encode_descriptor(
            "aigw_endpoint_info",
            "Configured endpoints: where each one points (query values and credentials hidden).",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.endpoints {
            let labels = [
                ("app", &*s.app),
                ("endpoint", &*s.endpoint),
                ("uri", &*s.uri),
            ];
            ConstGauge::new(1u32).encode(info.encode_family(&labels)?)?;
        }
        self.counters(&mut encoder)?;
        self.gauges(&mut encoder)?;
        let mut answers = encoder.encode_descriptor(
            "aigw_gateway_responses",
            "The gateway's own answers to an application's clients: 429 (every endpoint busy), 502 and 504 (none answered), other 4xx.",
            None,
            MetricType::Counter,
        )?;
        for (app, c) in &self.apps {
            for (status, n) in [
                ("429", c.gateway_429),
                ("502", c.gateway_502),
                ("504", c.gateway_504),
                ("4xx", c.gateway_4xx),
            ] {
                let labels = [("app", &**app), ("status", status)];
                ConstCounter::new(n).encode(answers.encode_family(&labels)?)?;
            }
        }
        let overhead = encoder.encode_descriptor(
            "aigw_gateway_overhead_us",
            "Time this instance spent on a request outside backend calls, in microseconds.",
            None,
            MetricType::Histogram,
        )?;
        histogram(
            overhead,
            &super::overhead::BOUNDS_US,
            &self.overhead.buckets,
            self.overhead.sum_us,
        )?;
        let mut store = encoder.encode_descriptor(
            "aigw_store_up",
            "1 while the shared store answers.",
            None,
            MetricType::Gauge,
        )?;
        let labels = [("store", self.store)];
        ConstGauge::new(u32::from(self.store_up)).encode(store.encode_family(&labels)?)?;
        Ok(())
    }
}

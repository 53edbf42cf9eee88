//! OpenTelemetry traces of messages through the broker.
//!
//! A message that carries W3C trace context (a `traceparent` header) gets
//! broker-side spans in its trace — receive, enqueue, deliver, settle,
//! dead-letter, expiry ([`spans`]) — as `tracing` spans on the
//! [`TARGET`] target, which `tracing-opentelemetry` turns into OpenTelemetry
//! spans and the SDK's batch processor exports over OTLP/HTTP.
//!
//! Tracing is off unless an OTLP endpoint is configured, and then the
//! message path pays one relaxed load per step ([`enabled`]) for messages
//! that are not traced, plus a byte search of the properties for
//! `traceparent`. Messages without context start a trace of their own only
//! at the configured ratio (default none); such a message gets a
//! `traceparent` header naming the broker's receive span, so its later
//! spans — and its consumer — join that trace.

pub mod spans;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use serde::Deserialize;

/// OTLP export of message spans; the standard `OTEL_*` variables win over
/// these keys (`Settings::resolve` reads both).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTelemetryConfig {
    /// Base URL of an OTLP/HTTP receiver; empty: not set.
    pub endpoint: String,
    /// The full traces URL; empty: not set.
    pub traces_endpoint: String,
    pub protocol: String,
    pub service_name: String,
    pub sampler: String,
    pub sampler_arg: f64,
    pub bsp_schedule_delay_ms: u64,
    pub bsp_max_queue_size: usize,
    pub bsp_max_export_batch_size: usize,
    pub bsp_export_timeout_ms: u64,
}

/// The `tracing` target of message spans: exported, never logged.
pub const TARGET: &str = "warren::otel";

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The share of messages without trace context that start a trace, as the
/// bits of an `f64` in 0..=1.
static ROOT_RATIO: AtomicU64 = AtomicU64::new(0);

/// Whether message spans are recorded (an exporter is installed).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether a message without trace context starts a trace.
fn sample_root() -> bool {
    let ratio = f64::from_bits(ROOT_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
}

/// Export settings, from the `OTEL_*` variables over `[opentelemetry]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The traces URL, or the base URL `/v1/traces` is appended to.
    pub endpoint: Endpoint,
    pub protocol: Protocol,
    pub service_name: String,
    /// The share of messages without context that start a trace.
    pub root_ratio: f64,
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub export_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A full traces URL.
    Traces(String),
    /// A base URL.
    Base(String),
}

impl Endpoint {
    pub fn traces_url(&self) -> String {
        match self {
            Endpoint::Traces(url) => url.clone(),
            Endpoint::Base(url) => format!("{}/v1/traces", url.trim_end_matches('/')),
        }
    }
}

impl Settings {
    /// The settings `config` and `env` ask for; `Ok(None)` when no endpoint
    /// is set (or the SDK is disabled), `Err` with a sentence when a value
    /// cannot be used.
    pub fn resolve(
        config: &OpenTelemetryConfig,
        env: &HashMap<String, String>,
    ) -> Result<Option<Settings>, String> {
        let var = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let endpoint = if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Endpoint::Traces(url.to_string())
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Endpoint::Base(url.to_string())
        } else if let Some(url) = non_empty(&config.traces_endpoint) {
            Endpoint::Traces(url)
        } else if let Some(url) = non_empty(&config.endpoint) {
            Endpoint::Base(url)
        } else {
            return Ok(None);
        };
        let protocol_name = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or(config.protocol.as_str());
        let protocol = match protocol_name {
            "http/protobuf" => Protocol::HttpBinary,
            "http/json" => Protocol::HttpJson,
            other => {
                return Err(format!(
                    "OTLP protocol '{other}' is not supported: use http/protobuf or http/json"
                ));
            }
        };
        let service_name = var("OTEL_SERVICE_NAME")
            .map(str::to_string)
            .unwrap_or_else(|| config.service_name.clone());
        let sampler = var("OTEL_TRACES_SAMPLER").unwrap_or(config.sampler.as_str());
        let arg = match var("OTEL_TRACES_SAMPLER_ARG") {
            Some(text) => text
                .parse::<f64>()
                .map_err(|_| format!("OTEL_TRACES_SAMPLER_ARG '{text}' is not a number"))?,
            None => config.sampler_arg,
        };
        let root_ratio = root_ratio(sampler, arg)?;
        let millis = |name: &str, default: u64| -> Result<Duration, String> {
            Ok(Duration::from_millis(number(var(name), name, default)?))
        };
        Ok(Some(Settings {
            endpoint,
            protocol,
            service_name,
            root_ratio,
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", config.bsp_schedule_delay_ms)?,
            max_queue_size: number(
                var("OTEL_BSP_MAX_QUEUE_SIZE"),
                "OTEL_BSP_MAX_QUEUE_SIZE",
                config.bsp_max_queue_size,
            )?,
            max_export_batch_size: number(
                var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                config.bsp_max_export_batch_size,
            )?,
            export_timeout: millis("OTEL_BSP_EXPORT_TIMEOUT", config.bsp_export_timeout_ms)?,
        }))
    }
}

fn number<T: std::str::FromStr>(text: Option<&str>, name: &str, default: T) -> Result<T, String> {
    match text {
        None => Ok(default),
        Some(t) => t
            .parse()
            .map_err(|_| format!("{name} '{t}' is not a whole number")),
    }
}

/// The share of context-less messages the sampler names start a trace.
/// A sampled `traceparent` is always followed (the `parentbased_` forms);
/// the plain forms are taken as their `parentbased_` twins.
fn root_ratio(sampler: &str, arg: f64) -> Result<f64, String> {
    match sampler.strip_prefix("parentbased_").unwrap_or(sampler) {
        "always_off" => Ok(0.0),
        "always_on" => Ok(1.0),
        "traceidratio" if (0.0..=1.0).contains(&arg) => Ok(arg),
        "traceidratio" => Err(format!("sampler ratio {arg} is not between 0 and 1")),
        other => Err(format!(
            "trace sampler '{other}' is not supported: use parentbased_always_off, \
             parentbased_traceidratio or parentbased_always_on"
        )),
    }
}

/// The installed exporter: flushes what is batched when shut down.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Export what is batched and stop (at broker shutdown).
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("OpenTelemetry export did not finish: {e}");
        }
    }
}

/// Build the OTLP exporter and the `tracing` layer feeding it, and switch
/// message spans on.
pub fn install<S>(settings: &Settings) -> Result<(impl Layer<S> + use<S>, Exporter), String>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let url = settings.endpoint.traces_url();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(settings.protocol)
        .with_endpoint(url.clone())
        .with_timeout(settings.export_timeout)
        .build()
        .map_err(|e| format!("cannot export spans to {url}: {e}"))?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(settings.schedule_delay)
        .with_max_queue_size(settings.max_queue_size)
        .with_max_export_batch_size(settings.max_export_batch_size.min(settings.max_queue_size))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // Warren decides which context-less messages start a trace
        // (`sample_root`); a span it creates is one it wants.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            Resource::builder_empty()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("warren");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() == TARGET
        }));
    ROOT_RATIO.store(settings.root_ratio.to_bits(), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((layer, Exporter { provider }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped config.toml's values.
    fn config() -> OpenTelemetryConfig {
        OpenTelemetryConfig {
            endpoint: String::new(),
            traces_endpoint: String::new(),
            protocol: "http/protobuf".into(),
            service_name: "warren".into(),
            sampler: "parentbased_always_off".into(),
            sampler_arg: 1.0,
            bsp_schedule_delay_ms: 5000,
            bsp_max_queue_size: 2048,
            bsp_max_export_batch_size: 512,
            bsp_export_timeout_ms: 30000,
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(Settings::resolve(&config(), &env(&[])), Ok(None));
        let disabled = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(Settings::resolve(&config(), &disabled), Ok(None));
    }

    #[test]
    fn variables_win_over_the_file() {
        let mut c = config();
        c.endpoint = "http://file:4318".into();
        let s = Settings::resolve(&c, &env(&[]))
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no settings"));
        assert_eq!(s.endpoint.traces_url(), "http://file:4318/v1/traces");
        assert_eq!(s.root_ratio, 0.0);
        let vars = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            ("OTEL_SERVICE_NAME", "edge"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]);
        let s = Settings::resolve(&c, &vars)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no settings"));
        assert_eq!(s.endpoint.traces_url(), "http://env:4318/v1/traces");
        assert_eq!(s.root_ratio, 0.01);
        assert_eq!(s.service_name, "edge");
        assert_eq!(s.schedule_delay, Duration::from_millis(100));
        let traces = env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x")]);
        let s = Settings::resolve(&c, &traces).ok().flatten();
        assert_eq!(
            s.map(|s| s.endpoint.traces_url()),
            Some("http://t:1/x".into())
        );
    }

    #[test]
    fn unusable_values_are_refused_with_a_reason() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let grpc = env(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert!(Settings::resolve(&config(), &grpc).is_err_and(|e| e.contains("'grpc'")));
        let ratio = env(&[
            base,
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]);
        assert!(Settings::resolve(&config(), &ratio).is_err());
        let jaeger = env(&[base, ("OTEL_TRACES_SAMPLER", "jaeger_remote")]);
        assert!(Settings::resolve(&config(), &jaeger).is_err());
    }
}

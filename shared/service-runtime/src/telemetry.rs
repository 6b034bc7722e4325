//! Logging and tracing with `tracing`: human-readable or JSON lines filtered by
//! `RUST_LOG`, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OpenTelemetry spans exported
//! over OTLP (gRPC), named by `OTEL_SERVICE_NAME` (default: the service's name). Unset, no
//! exporter is built and nothing is sent.
//!
//! A trace crosses the services through the W3C `traceparent`: incoming calls are read by
//! [`server_span`], outgoing calls carry [`inject`], and events store it in their metadata
//! ([`current_traceparent`]) so the saga that starts from an event continues the trace of
//! the call that wrote it ([`set_parent`]).

use std::collections::HashMap;

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Text, coloured when it goes to a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Keeps the span exporter running; dropping it flushes the spans not yet sent.
#[must_use = "dropping it stops the span exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("flushing the last spans failed: {err}");
        }
    }
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
}

/// The OTLP exporter's tracer provider, if `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
fn otlp_provider(service: &'static str) -> Option<SdkTracerProvider> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
    if endpoint.is_empty() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: cannot export spans: {err}");
            return None;
        }
    };
    Some(provider(
        std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned()),
        |builder| builder.with_batch_exporter(exporter),
    ))
}

/// A tracer provider named `service`, with the exporter `export` adds.
pub fn provider(
    service: String,
    export: impl FnOnce(
        opentelemetry_sdk::trace::TracerProviderBuilder,
    ) -> opentelemetry_sdk::trace::TracerProviderBuilder,
) -> SdkTracerProvider {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    export(SdkTracerProvider::builder().with_resource(resource)).build()
}

/// Installs the global subscriber: logs, and spans when OTLP export is configured.
/// `RUST_LOG` overrides the default level (`info`). Calling it twice is harmless.
pub fn init(format: LogFormat, service: &'static str) -> Telemetry {
    let provider = otlp_provider(service);
    install(format, service, provider.clone());
    if provider.is_some() {
        tracing::info!(service, "exporting traces over OTLP");
    }
    Telemetry { provider }
}

/// Installs logs (to the test harness's capture when `for_tests`) and spans to
/// `provider`'s exporter. Returns false when a subscriber was already installed.
fn install(format: LogFormat, service: &'static str, provider: Option<SdkTracerProvider>) -> bool {
    install_layers(
        match format {
            LogFormat::Human => fmt::layer()
                .with_target(true)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .boxed(),
            LogFormat::Json => fmt::layer().json().flatten_event(true).boxed(),
        },
        service,
        provider,
    )
}

fn install_layers(
    logs: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>,
    service: &'static str,
    provider: Option<SdkTracerProvider>,
) -> bool {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let spans = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(EnvFilter::new("info"))
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter()))
        .with(spans)
        .try_init()
        .is_ok()
}

/// For tests that run services in-process: plain text through the test harness's capture,
/// so a passing test prints nothing and a failing one shows what its services logged.
pub fn init_for_tests() {
    init_for_tests_with(None);
}

/// [`init_for_tests`], exporting spans to `provider` (a test's in-memory exporter).
pub fn init_for_tests_with(provider: Option<SdkTracerProvider>) -> bool {
    install_layers(
        fmt::layer().with_test_writer().with_ansi(false).boxed(),
        "tests",
        provider,
    )
}

/// Reads the W3C trace context from gRPC/HTTP headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the W3C trace context into tonic request metadata.
struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The span of one incoming call, a child of the caller's trace when the call carries a
/// `traceparent`. Its `trace_id` field puts the trace id on every log line logged in it.
pub fn server_span(service: &'static str, request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let span = tracing::info_span!(
        "grpc",
        otel.name = %path,
        otel.kind = "server",
        service,
        rpc.method = %path,
        trace_id = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// Adds the current span's trace context to an outgoing call.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut Metadata(metadata));
}

/// The current span's `traceparent`, to store with what it writes; `None` when no trace
/// is being recorded.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace a stored `traceparent` names.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

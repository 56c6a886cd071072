//! Optional OpenTelemetry export (`--otlp-endpoint`, off by default): every counter and gauge
//! of `/metrics` as OTLP metrics (counters as cumulative monotonic sums), and one trace per
//! batch — `wafstream.batch` from the moment the core takes a batch off the bus until every
//! output of it is acknowledged downstream (or, in `ingress`, until the broker acknowledged
//! every frame), with a child span `wafstream.map` for mapping — sent over OTLP/HTTP
//! (protobuf, `POST <endpoint>/v1/metrics` and `/v1/traces`) every `--otlp-interval-ms`.
//!
//! When export is off nothing is recorded: [`BatchSpan::start`] returns `None` and the hot
//! paths carry an empty `Option`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as pt;
use prost::Message;

/// Settings of the exporter.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of an OTLP/HTTP receiver (`http://collector:4318`).
    pub endpoint: String,
    pub interval: Duration,
    /// `service.name` of the resource (`wafstream-<role>`).
    pub service: String,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Most finished spans kept between two exports; beyond, new ones are counted and dropped.
const MAX_SPANS: usize = 20_000;

#[derive(Default)]
struct Spans {
    done: Mutex<Vec<pt::Span>>,
    dropped: AtomicU64,
    exported: AtomicU64,
    export_failures: AtomicU64,
}

fn spans() -> &'static Arc<Spans> {
    static S: OnceLock<Arc<Spans>> = OnceLock::new();
    S.get_or_init(|| Arc::new(Spans::default()))
}

impl crate::telemetry::Source for Spans {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        out.counters(&[
            (
                "wafstream_otlp_spans_exported_total",
                "Batch spans sent to the OTLP endpoint.",
                &self.exported,
            ),
            (
                "wafstream_otlp_spans_dropped_total",
                "Batch spans dropped because too many waited for export.",
                &self.dropped,
            ),
            (
                "wafstream_otlp_export_failures_total",
                "OTLP export requests that failed (the metrics are sent again next time; spans are lost).",
                &self.export_failures,
            ),
        ]);
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let r = crate::bus::next_occurrence().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    out
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// One batch's trace, ended when the last holder lets go (every output acknowledged).
pub struct BatchSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    stage: &'static str,
    start: u64,
    mapped: AtomicU64,
    frames: u64,
}

impl BatchSpan {
    /// A span for a batch of `frames` taken now, when export is on.
    pub fn start(stage: &'static str, frames: usize) -> Option<Arc<BatchSpan>> {
        if !ENABLED.load(Ordering::Relaxed) {
            return None;
        }
        Some(Arc::new(BatchSpan {
            trace_id: random_bytes(),
            span_id: random_bytes(),
            stage,
            start: now_ns(),
            mapped: AtomicU64::new(0),
            frames: frames as u64,
        }))
    }

    /// Mapping of the batch is over (ends the `wafstream.map` child span).
    pub fn mapped(&self) {
        self.mapped.store(now_ns(), Ordering::Relaxed);
    }
}

impl Drop for BatchSpan {
    fn drop(&mut self) {
        let end = now_ns();
        let attrs = vec![
            kv("wafstream.stage", any_value::Value::StringValue(self.stage.into())),
            kv("wafstream.frames", any_value::Value::IntValue(self.frames as i64)),
        ];
        let mut out = vec![pt::Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            name: "wafstream.batch".into(),
            kind: pt::span::SpanKind::Internal as i32,
            start_time_unix_nano: self.start,
            end_time_unix_nano: end,
            attributes: attrs,
            ..Default::default()
        }];
        let mapped = self.mapped.load(Ordering::Relaxed);
        if mapped > 0 {
            out.push(pt::Span {
                trace_id: self.trace_id.to_vec(),
                span_id: random_bytes::<8>().to_vec(),
                parent_span_id: self.span_id.to_vec(),
                name: "wafstream.map".into(),
                kind: pt::span::SpanKind::Internal as i32,
                start_time_unix_nano: self.start,
                end_time_unix_nano: mapped,
                ..Default::default()
            });
        }
        let s = spans();
        let mut done = s.done.lock().unwrap_or_else(|p| p.into_inner());
        if done.len() + out.len() > MAX_SPANS {
            s.dropped.fetch_add(out.len() as u64, Ordering::Relaxed);
        } else {
            done.extend(out);
        }
    }
}

/// A frame's acknowledgement, wrapped so the batch's span ends once every frame of it is
/// settled (or given up).
struct Traced {
    inner: crate::bus::Token,
    _span: Arc<BatchSpan>,
}

impl crate::bus::Progress for Traced {
    fn done(&self, _pos: u64) {
        self.inner.clone().settle();
    }
}

/// When export is on: a span for `batch`, which its frames' acknowledgements keep open until
/// the last is settled. The returned handle marks the end of mapping ([`BatchSpan::mapped`]).
pub fn trace_batch(stage: &'static str, batch: &mut [crate::bus::RawFrame]) -> Option<Arc<BatchSpan>> {
    let span = BatchSpan::start(stage, batch.len())?;
    for f in batch.iter_mut() {
        let inner = std::mem::take(&mut f.token);
        f.token = crate::bus::Token::new(
            Arc::new(Traced {
                inner,
                _span: span.clone(),
            }),
            0,
        );
    }
    Some(span)
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", any_value::Value::StringValue(service.into())),
            kv(
                "service.version",
                any_value::Value::StringValue(env!("CARGO_PKG_VERSION").into()),
            ),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "wafstream".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// The process's metric families as one OTLP request.
fn metrics_request(service: &str, start: u64) -> ExportMetricsServiceRequest {
    use prometheus::proto::MetricType;
    let now = now_ns();
    let mut metrics = Vec::new();
    for mf in crate::telemetry::global().families() {
        let points = |value: &dyn Fn(&prometheus::proto::Metric) -> f64| -> Vec<pm::NumberDataPoint> {
            mf.get_metric()
                .iter()
                .map(|m| pm::NumberDataPoint {
                    attributes: labels(m),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    value: Some(pm::number_data_point::Value::AsInt(value(m) as i64)),
                    ..Default::default()
                })
                .collect()
        };
        let data = match mf.get_field_type() {
            MetricType::COUNTER => pm::metric::Data::Sum(pm::Sum {
                data_points: points(&|m| m.get_counter().get_value()),
                aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            MetricType::GAUGE => pm::metric::Data::Gauge(pm::Gauge {
                data_points: points(&|m| m.get_gauge().get_value()),
            }),
            MetricType::HISTOGRAM => pm::metric::Data::Histogram(pm::Histogram {
                data_points: mf.get_metric().iter().map(|m| histogram_point(m, start, now)).collect(),
                aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
            }),
            _ => continue,
        };
        metrics.push(pm::Metric {
            name: mf.name().to_string(),
            description: mf.help().to_string(),
            data: Some(data),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![pm::ResourceMetrics {
            resource: Some(resource(service)),
            scope_metrics: vec![pm::ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A series' labels as OTLP attributes.
fn labels(m: &prometheus::proto::Metric) -> Vec<KeyValue> {
    m.get_label()
        .iter()
        .map(|l| kv(l.name(), any_value::Value::StringValue(l.value().into())))
        .collect()
}

/// A Prometheus histogram (cumulative buckets) as an OTLP data point (a count per bucket, the
/// last one above every bound).
fn histogram_point(m: &prometheus::proto::Metric, start: u64, now: u64) -> pm::HistogramDataPoint {
    let h = m.get_histogram();
    let mut explicit_bounds = Vec::new();
    let mut bucket_counts = Vec::new();
    let mut below = 0;
    for b in h.get_bucket() {
        if b.upper_bound().is_finite() {
            explicit_bounds.push(b.upper_bound());
            bucket_counts.push(b.cumulative_count().saturating_sub(below));
            below = b.cumulative_count();
        }
    }
    bucket_counts.push(h.get_sample_count().saturating_sub(below));
    pm::HistogramDataPoint {
        attributes: labels(m),
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: h.get_sample_count(),
        sum: Some(h.get_sample_sum()),
        bucket_counts,
        explicit_bounds,
        ..Default::default()
    }
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), String> {
    let r = client
        .post(url)
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {}", r.status()))
    }
}

/// Turn recording on and export every `interval` until the process ends (a last export is
/// made by [`flush`]).
pub fn start(cfg: Config) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let base = cfg.endpoint.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        anyhow::bail!("--otlp-endpoint {base:?}: expected an http:// or https:// URL (OTLP/HTTP)");
    }
    let client = crate::sink::elasticsearch::client(None)?;
    ENABLED.store(true, Ordering::Relaxed);
    crate::telemetry::global().register("otlp", spans().clone());
    let exporter = Exporter {
        client,
        base,
        service: cfg.service,
        start: now_ns(),
    };
    let _ = EXPORTER.set(exporter.clone());
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.interval.max(Duration::from_millis(100)));
        // A slow or unreachable endpoint must not make exports run back to back afterwards.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            exporter.export().await;
        }
    }))
}

#[derive(Clone)]
struct Exporter {
    client: reqwest::Client,
    base: String,
    service: String,
    start: u64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

impl Exporter {
    async fn export(&self) {
        let s = spans();
        let metrics = metrics_request(&self.service, self.start).encode_to_vec();
        if let Err(e) = post(&self.client, &format!("{}/v1/metrics", self.base), metrics).await {
            s.export_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "OTLP metrics export failed");
        }
        let batch: Vec<pt::Span> = std::mem::take(&mut *s.done.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![pt::ResourceSpans {
                resource: Some(resource(&self.service)),
                scope_spans: vec![pt::ScopeSpans {
                    scope: Some(scope()),
                    spans: batch,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        match post(&self.client, &format!("{}/v1/traces", self.base), req.encode_to_vec()).await {
            Ok(()) => {
                s.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                s.export_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, spans = n, "OTLP trace export failed");
            }
        }
    }
}

/// A last export at shutdown (what the final drain counted and traced).
pub async fn flush() {
    if let Some(e) = EXPORTER.get() {
        e.export().await;
    }
}

//! Runtime counters in Prometheus text format on `GET /metrics` (`--metrics-addr`), plus
//! `GET /healthz`. The counters live where the work happens (ingress, mapper, sinks); this
//! module reads them when scraped, so the hot paths only pay for relaxed atomic additions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::ecs::Dataset;

/// Process-wide counters of the mapper (every mapper in the process adds to them).
#[derive(Debug, Default)]
pub struct Mapping {
    pub securesphere: AtomicU64,
    pub cloud_waf: AtomicU64,
    pub dead_letters: AtomicU64,
    pub invalid_utf8: AtomicU64,
    pub field_errors: AtomicU64,
}

impl Mapping {
    pub fn document(&self, d: Dataset) {
        match d {
            Dataset::SecureSphere => &self.securesphere,
            Dataset::CloudWaf => &self.cloud_waf,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of the Kafka worker's consume loop.
#[derive(Debug, Default)]
pub struct Worker {
    pub consumed: AtomicU64,
    pub offsets_stored: AtomicU64,
    pub drained_on_revoke: AtomicU64,
    /// Outputs handed to the sinks and not yet acknowledged.
    pub inflight: AtomicU64,
}

/// Every source of counters of this process. Sources that are not running stay unset and are
/// left out of the scrape.
#[derive(Default)]
pub struct Registry {
    pub mapping: Mapping,
    pub worker: Worker,
    ingress: OnceLock<Arc<crate::ingress::Stats>>,
    producer: OnceLock<Arc<crate::kafka::producer::ProducerStats>>,
    elasticsearch: OnceLock<Arc<crate::sink::elasticsearch::Stats>>,
    worker_running: OnceLock<()>,
}

static GLOBAL: OnceLock<Registry> = OnceLock::new();

/// The process's registry.
pub fn global() -> &'static Registry {
    GLOBAL.get_or_init(Registry::default)
}

impl Registry {
    pub fn set_ingress(&self, s: Arc<crate::ingress::Stats>) {
        let _ = self.ingress.set(s);
    }
    pub fn set_producer(&self, s: Arc<crate::kafka::producer::ProducerStats>) {
        let _ = self.producer.set(s);
    }
    pub fn set_elasticsearch(&self, s: Arc<crate::sink::elasticsearch::Stats>) {
        let _ = self.elasticsearch.set(s);
    }
    pub fn set_worker_running(&self) {
        let _ = self.worker_running.set(());
    }

    /// The scrape, in Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut f: Vec<MetricFamily> = Vec::new();
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let m = &self.mapping;
        f.extend(counter_vec(
            "wafstream_documents_total",
            "Events mapped to ECS documents, by dataset.",
            "dataset",
            &[
                (Dataset::SecureSphere.name(), r(&m.securesphere)),
                (Dataset::CloudWaf.name(), r(&m.cloud_waf)),
            ],
        ));
        counters(
            &mut f,
            &[
                (
                    "wafstream_dead_letters_total",
                    "Frames that could not be mapped (sent to the dead-letter output with their bytes and reason).",
                    &m.dead_letters,
                ),
                (
                    "wafstream_invalid_utf8_total",
                    "Frames that were not valid UTF-8 (mapped after lossy conversion).",
                    &m.invalid_utf8,
                ),
                (
                    "wafstream_field_errors_total",
                    "Documents with at least one field that did not convert (kept in error.message).",
                    &m.field_errors,
                ),
            ],
        );
        if let Some(s) = self.ingress.get() {
            counters(
                &mut f,
                &[
                    (
                        "wafstream_ingress_frames_total",
                        "Frames received on every input.",
                        &s.frames,
                    ),
                    (
                        "wafstream_ingress_truncated_total",
                        "Frames longer than max_message_bytes (cut and dead-lettered).",
                        &s.truncated,
                    ),
                    (
                        "wafstream_ingress_udp_dropped_total",
                        "UDP datagrams dropped because the bus was full.",
                        &s.udp_dropped,
                    ),
                    (
                        "wafstream_ingress_connections_total",
                        "TCP and TLS connections accepted.",
                        &s.connections,
                    ),
                    (
                        "wafstream_ingress_framing_errors_total",
                        "Connections closed on a framing error.",
                        &s.framing_errors,
                    ),
                    (
                        "wafstream_ingress_idle_closed_total",
                        "Connections closed after the idle timeout.",
                        &s.idle_closed,
                    ),
                    (
                        "wafstream_ingress_tls_handshake_failures_total",
                        "TLS handshakes that failed or timed out.",
                        &s.tls_handshake_failures,
                    ),
                ],
            );
        }
        if let Some(p) = self.producer.get() {
            counters(
                &mut f,
                &[
                    (
                        "wafstream_raw_produced_total",
                        "Raw frames acknowledged by Kafka.",
                        &p.sent,
                    ),
                    (
                        "wafstream_raw_produce_failures_total",
                        "Raw frames Kafka refused for good.",
                        &p.failed,
                    ),
                ],
            );
        }
        if self.worker_running.get().is_some() {
            let w = &self.worker;
            counters(
                &mut f,
                &[
                    ("wafstream_worker_consumed_total", "Raw records consumed.", &w.consumed),
                    (
                        "wafstream_worker_offsets_stored_total",
                        "Offsets stored for commit after their output was acknowledged.",
                        &w.offsets_stored,
                    ),
                    (
                        "wafstream_worker_drained_on_revoke_total",
                        "Outputs settled by the rebalance callback before partitions moved.",
                        &w.drained_on_revoke,
                    ),
                ],
            );
            f.extend(gauge(
                "wafstream_worker_inflight",
                "Outputs awaiting acknowledgement.",
                r(&w.inflight),
            ));
        }
        if let Some(s) = self.elasticsearch.get() {
            counters(
                &mut f,
                &[
                    (
                        "wafstream_es_written_total",
                        "Documents created in Elasticsearch.",
                        &s.written,
                    ),
                    (
                        "wafstream_es_already_written_total",
                        "Documents that were already there (409 on create).",
                        &s.already_written,
                    ),
                    (
                        "wafstream_es_rejected_total",
                        "Documents refused for good (dead-lettered).",
                        &s.rejected,
                    ),
                    (
                        "wafstream_es_retried_total",
                        "Documents sent again after a per-item 429/5xx.",
                        &s.retried,
                    ),
                    (
                        "wafstream_es_retried_requests_total",
                        "Bulk requests sent again.",
                        &s.retried_requests,
                    ),
                    (
                        "wafstream_es_failed_total",
                        "Documents given up on after every attempt.",
                        &s.failed,
                    ),
                    ("wafstream_es_bulk_requests_total", "Bulk requests sent.", &s.requests),
                    (
                        "wafstream_es_bulk_latency_microseconds_total",
                        "Sum of bulk round trips.",
                        &s.latency_us_sum,
                    ),
                ],
            );
            f.extend(gauge(
                "wafstream_es_inflight_bytes",
                "Bytes of documents accepted and not yet in a final state.",
                r(&s.inflight_bytes),
            ));
        }
        let mut out = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&f, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One counter family per (name, help, source) row, read now.
fn counters(f: &mut Vec<MetricFamily>, rows: &[(&str, &str, &AtomicU64)]) {
    for (name, help, v) in rows {
        f.extend(counter(name, help, v.load(Ordering::Relaxed)));
    }
}

fn counter(name: &str, help: &str, v: u64) -> Vec<MetricFamily> {
    match IntCounter::new(name, help) {
        Ok(c) => {
            c.inc_by(v);
            c.collect()
        }
        Err(_) => Vec::new(),
    }
}

fn gauge(name: &str, help: &str, v: u64) -> Vec<MetricFamily> {
    match IntGauge::new(name, help) {
        Ok(g) => {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g.collect()
        }
        Err(_) => Vec::new(),
    }
}

fn counter_vec(name: &str, help: &str, label: &str, values: &[(&str, u64)]) -> Vec<MetricFamily> {
    match IntCounterVec::new(Opts::new(name, help), &[label]) {
        Ok(c) => {
            for (l, v) in values {
                c.with_label_values(&[*l]).inc_by(*v);
            }
            c.collect()
        }
        Err(_) => Vec::new(),
    }
}

/// Serve `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head (bounded in size and time); the body, if any, is ignored.
            let head = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        return true;
                    }
                }
                false
            })
            .await;
            if !matches!(head, Ok(true)) {
                return;
            }
            let line = buf[..n].split(|&b| b == b'\r').next().unwrap_or_default();
            let mut parts = line.split(|&b| b == b' ');
            let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            let path = path.split(|&b| b == b'?').next().unwrap_or_default();
            let (status, ctype, body) = match (method, path) {
                (b"GET", b"/metrics") => ("200 OK", prometheus::TEXT_FORMAT, global().render()),
                (b"GET", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
                (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "method not allowed\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Bind `addr` (`off`/empty: no endpoint) and serve on the current runtime; returns the bound
/// address.
pub async fn start(addr: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if addr.is_empty() || addr.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let a: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| anyhow::anyhow!("--metrics-addr {addr:?}: expected ip:port or `off`"))?;
    let listener = TcpListener::bind(a)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr {a}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener));
    Ok(Some(bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_reads_the_counters() {
        let r = Registry::default();
        r.mapping.document(Dataset::CloudWaf);
        r.mapping.document(Dataset::CloudWaf);
        r.mapping.dead_letters.fetch_add(3, Ordering::Relaxed);
        let text = r.render();
        assert!(
            text.contains("wafstream_documents_total{dataset=\"imperva_cloud_waf.event\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("wafstream_documents_total{dataset=\"imperva.securesphere\"} 0"),
            "{text}"
        );
        assert!(text.contains("wafstream_dead_letters_total 3"), "{text}");
        assert!(text.contains("# TYPE wafstream_dead_letters_total counter"), "{text}");
        // Sources that are not running are left out.
        assert!(!text.contains("wafstream_es_"), "{text}");
        assert!(!text.contains("wafstream_worker_"), "{text}");
        let es = Arc::new(crate::sink::elasticsearch::Stats::default());
        es.written.fetch_add(7, Ordering::Relaxed);
        r.set_elasticsearch(es);
        assert!(r.render().contains("wafstream_es_written_total 7"));
    }
}

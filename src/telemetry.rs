//! Runtime counters in Prometheus text format on `GET /metrics` (`--metrics-addr`), liveness on
//! `GET /healthz` and readiness on `GET /readyz`. The counters live where the work happens
//! (ingress, mapper, sinks), which register them here as [`Source`]s; this module reads them
//! when scraped, so the hot paths only pay for relaxed atomic additions, and it imports no
//! component. Readiness is the conjunction of named conditions the components own (listening,
//! partitions assigned, the search engine reachable).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Something that has counters: it adds its metric families to a scrape. Each component
/// implements this for its own counters and registers itself, so this module imports none of
/// them.
pub trait Source: Send + Sync {
    fn collect(&self, out: &mut Metrics);
}

/// The metric families of one scrape.
#[derive(Default)]
pub struct Metrics(Vec<MetricFamily>);

impl Metrics {
    /// One counter per (name, help, value) row, read now.
    pub fn counters(&mut self, rows: &[(&str, &str, &AtomicU64)]) {
        for (name, help, v) in rows {
            self.counter(name, help, v.load(Ordering::Relaxed));
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.0.extend(counter(name, help, v));
    }

    pub fn gauge(&mut self, name: &str, help: &str, v: u64) {
        self.0.extend(gauge(name, help, v));
    }

    /// One counter family with several labels: `(label values in `labels` order, value)`.
    pub fn counter_labels(&mut self, name: &str, help: &str, labels: &[&str], values: &[(Vec<String>, u64)]) {
        if let Ok(c) = IntCounterVec::new(Opts::new(name, help), labels) {
            for (l, v) in values {
                let l: Vec<&str> = l.iter().map(String::as_str).collect();
                c.with_label_values(&l).inc_by(*v);
            }
            self.0.extend(c.collect());
        }
    }

    /// A histogram, as it stands now.
    pub fn histogram(&mut self, h: &prometheus::Histogram) {
        self.0.extend(h.collect());
    }

    /// One counter family with one label.
    pub fn counter_vec(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.0.extend(counter_vec(name, help, label, values));
    }
}

/// Every source of counters of this process and every readiness condition. Sources that are
/// not running are not registered and are left out of the scrape.
#[derive(Default)]
pub struct Registry {
    sources: Mutex<Vec<(&'static str, Arc<dyn Source>)>>,
    ready: Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
}

static GLOBAL: OnceLock<Registry> = OnceLock::new();

/// The process's registry.
pub fn global() -> &'static Registry {
    GLOBAL.get_or_init(Registry::default)
}

impl Registry {
    /// Add a source under `name` (a second registration under the same name replaces it).
    pub fn register(&self, name: &'static str, source: Arc<dyn Source>) {
        if let Ok(mut s) = self.sources.lock() {
            s.retain(|(n, _)| *n != name);
            s.push((name, source));
        }
    }

    /// A readiness condition: `/readyz` answers 200 only while every condition is true. The
    /// condition starts false; the component owning it sets it.
    pub fn readiness(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut r) = self.ready.lock() {
            r.retain(|(n, _)| *n != name);
            r.push((name, flag.clone()));
        }
        flag
    }

    /// `Ok` when every readiness condition holds, else the names of those that do not.
    pub fn ready(&self) -> Result<(), Vec<&'static str>> {
        let not: Vec<&'static str> = self
            .ready
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(_, f)| !f.load(Ordering::Relaxed))
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default();
        if not.is_empty() { Ok(()) } else { Err(not) }
    }

    /// The scrape, in Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.families(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Every metric family of every registered source, read now (the scrape, and the OTLP
    /// export).
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut m = Metrics::default();
        let sources: Vec<Arc<dyn Source>> = self
            .sources
            .lock()
            .map(|s| s.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default();
        for s in sources {
            s.collect(&mut m);
        }
        m.0
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
    // A scrape endpoint needs few connections: more wait in the backlog.
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _permit = permit;
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
                (b"GET", b"/readyz") => match global().ready() {
                    Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
                    Err(not) => (
                        "503 Service Unavailable",
                        "text/plain",
                        format!("not ready: {}\n", not.join(", ")),
                    ),
                },
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

    struct Two(AtomicU64);

    impl Source for Two {
        fn collect(&self, out: &mut Metrics) {
            out.counters(&[("wafstream_test_total", "A test counter.", &self.0)]);
            out.counter_vec(
                "wafstream_test_by_kind_total",
                "By kind.",
                "kind",
                &[("a", 1), ("b", 0)],
            );
        }
    }

    #[test]
    fn render_reads_the_registered_sources() {
        let r = Registry::default();
        assert_eq!(r.render(), "", "nothing registered, nothing scraped");
        let src = Arc::new(Two(AtomicU64::new(2)));
        r.register("two", src.clone());
        src.0.fetch_add(5, Ordering::Relaxed);
        let text = r.render();
        assert!(text.contains("# TYPE wafstream_test_total counter"), "{text}");
        assert!(text.contains("wafstream_test_total 7"), "{text}");
        assert!(text.contains("wafstream_test_by_kind_total{kind=\"b\"} 0"), "{text}");
        r.register("two", Arc::new(Two(AtomicU64::new(1))));
        assert!(
            r.render().contains("wafstream_test_total 1"),
            "a second registration replaces the first"
        );
    }

    #[test]
    fn ready_only_when_every_condition_holds() {
        let r = Registry::default();
        assert_eq!(r.ready(), Ok(()));
        let listening = r.readiness("listening");
        let es = r.readiness("elasticsearch");
        assert_eq!(r.ready(), Err(vec!["listening", "elasticsearch"]));
        listening.store(true, Ordering::Relaxed);
        assert_eq!(r.ready(), Err(vec!["elasticsearch"]));
        es.store(true, Ordering::Relaxed);
        assert_eq!(r.ready(), Ok(()));
        es.store(false, Ordering::Relaxed);
        assert_eq!(r.ready(), Err(vec!["elasticsearch"]));
    }
}

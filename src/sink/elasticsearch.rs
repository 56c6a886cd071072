//! Elasticsearch output: documents batched into `_bulk` requests of `create` actions into the
//! data stream `logs-<dataset>-<namespace>`, with the document's deterministic `_id`.
//!
//! Per item: 200/201 written, 409 already written (a redelivery: success), 429 and 5xx retried
//! alone with exponential backoff and jitter, anything else refused for good and handed back as
//! [`Delivery::Rejected`] with Elasticsearch's error type and reason (the caller dead-letters it
//! with its content). A whole request that fails (connection refused, timeout, 401/403, 429,
//! 5xx) is retried as a whole. Batches are bounded by documents, bytes and time; bodies are
//! gzip-compressed; a few requests run at once; a full batch queue makes `send` wait
//! (backpressure up to the sources).
//!
//! Nothing is discarded while Elasticsearch is away: retries go on, with backoff capped at
//! [`Config::backoff_max`], for as long as it takes — the outage is logged when it starts, every
//! 30 s while it lasts and when it ends, and shown as `wafstream_es_unavailable` — unless
//! [`Config::give_up_after`] is set, after which the acknowledgement fails (the pipeline then
//! stops without settling anything after it).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Ack, Delivery, Output, Sink, SinkError};

/// Credentials.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    /// `Authorization: ApiKey <base64 id:key>`.
    ApiKey(String),
    Bearer(String),
}

/// Settings of the Elasticsearch sink.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URLs; requests go to the first, and move on to the next when one fails.
    pub hosts: Vec<String>,
    pub auth: Auth,
    /// Data stream namespace (`logs-<dataset>-<namespace>`).
    pub namespace: String,
    pub max_batch_docs: usize,
    pub max_batch_bytes: usize,
    /// A batch is sent at the latest this long after its first document.
    pub flush_interval: Duration,
    pub max_inflight_requests: usize,
    pub request_timeout: Duration,
    /// How long a document (or a whole request) may keep failing before its acknowledgement
    /// fails; `None` (the default) retries for as long as it takes.
    pub give_up_after: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub gzip: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hosts: vec!["http://127.0.0.1:9200".into()],
            auth: Auth::None,
            namespace: "default".into(),
            max_batch_docs: 1000,
            max_batch_bytes: 5 << 20,
            flush_interval: Duration::from_millis(500),
            max_inflight_requests: 4,
            request_timeout: Duration::from_secs(60),
            give_up_after: None,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            gzip: true,
        }
    }
}

/// An HTTP client for Elasticsearch: rustls with the ring provider, the platform's roots plus
/// an optional extra CA bundle (PEM).
pub fn client(extra_ca: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    client_with(extra_ca, None)
}

/// [`client`] with a client certificate and key (PEM files) for mutual TLS.
pub fn client_with(
    extra_ca: Option<&std::path::Path>,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a bundled provider; install ring once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .tcp_keepalive(Duration::from_secs(60));
    if let Some(ca) = extra_ca {
        let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("reading CA {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).map_err(|e| anyhow::anyhow!("reading {}: {e}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).map_err(|e| anyhow::anyhow!("reading {}: {e}", key.display()))?);
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

/// The data stream a dataset's documents go to; dead letters get their own.
pub fn data_stream(dataset: Option<crate::ecs::Dataset>, namespace: &str) -> String {
    match dataset {
        Some(d) => format!("logs-{}-{namespace}", d.name()),
        None => format!("logs-wafstream.dead_letter-{namespace}"),
    }
}

struct Item {
    index: String,
    id: String,
    body: Vec<u8>,
    attempts: u32,
    /// When its first retriable failure happened (for `give_up_after`).
    failing_since: Option<Instant>,
    ack: oneshot::Sender<Result<Delivery, String>>,
}

/// Counters of the sink (read by telemetry and the worker's exit report).
#[derive(Debug, Default)]
pub struct Stats {
    /// Documents created.
    pub written: AtomicU64,
    /// Documents that were already there (409 on `create`: a redelivery).
    pub already_written: AtomicU64,
    /// Documents refused for good (handed back for dead-lettering).
    pub rejected: AtomicU64,
    /// Documents sent again after a per-item 429/5xx.
    pub retried: AtomicU64,
    /// Whole bulk requests sent again (connection errors, timeouts, 429/5xx).
    pub retried_requests: AtomicU64,
    /// Documents given up on after every attempt.
    pub failed: AtomicU64,
    pub requests: AtomicU64,
    /// Sum and maximum of bulk round trips, in microseconds.
    pub latency_us_sum: AtomicU64,
    pub latency_us_max: AtomicU64,
    /// Bytes of documents accepted by `send` and not yet in a final state.
    pub inflight_bytes: AtomicU64,
    /// 1 while bulk requests fail as a whole (Elasticsearch unreachable or refusing them).
    pub unavailable: AtomicU64,
    /// Outages begun, and their total length in milliseconds (counted when each ends).
    pub outages: AtomicU64,
    pub outage_ms: AtomicU64,
    outage: std::sync::Mutex<Option<Outage>>,
}

/// The outage under way: when it began and when it was last logged.
#[derive(Debug)]
struct Outage {
    since: Instant,
    logged: Instant,
}

impl Stats {
    /// A whole bulk request failed and will be retried.
    fn failing(&self, why: &str) {
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let held_bytes = self.inflight_bytes.load(Ordering::Relaxed);
        match o.as_mut() {
            None => {
                *o = Some(Outage {
                    since: now,
                    logged: now,
                });
                self.unavailable.store(1, Ordering::Relaxed);
                self.outages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    reason = %why,
                    held_bytes,
                    "elasticsearch unavailable: documents are held and retried until it answers (intake pauses once the buffers are full); nothing is dropped"
                );
            }
            Some(out) if now.duration_since(out.logged) >= Duration::from_secs(30) => {
                out.logged = now;
                tracing::warn!(
                    reason = %why,
                    held_bytes,
                    seconds = now.duration_since(out.since).as_secs(),
                    "elasticsearch still unavailable"
                );
            }
            Some(_) => {}
        }
    }

    /// A bulk request was answered: any outage is over.
    fn answered(&self) {
        if self.unavailable.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut o = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(out) = o.take() {
            let took = out.since.elapsed();
            self.unavailable.store(0, Ordering::Relaxed);
            self.outage_ms.fetch_add(took.as_millis() as u64, Ordering::Relaxed);
            tracing::info!(
                seconds = took.as_secs_f64(),
                "elasticsearch available again after {:.1} s; sending what was held",
                took.as_secs_f64()
            );
        }
    }
}

impl Stats {
    pub fn report(&self) -> String {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let reqs = r(&self.requests).max(1);
        format!(
            "elasticsearch: {} written, {} already there, {} refused, {} retried, {} failed; {} bulk requests ({} retried), latency avg {:.1} ms max {:.1} ms; {} outage(s), {:.1} s unavailable",
            r(&self.written),
            r(&self.already_written),
            r(&self.rejected),
            r(&self.retried),
            r(&self.failed),
            r(&self.requests),
            r(&self.retried_requests),
            r(&self.latency_us_sum) as f64 / reqs as f64 / 1000.0,
            r(&self.latency_us_max) as f64 / 1000.0,
            r(&self.outages),
            r(&self.outage_ms) as f64 / 1000.0,
        )
    }
}

impl crate::telemetry::Source for Stats {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        out.counters(&[
            (
                "wafstream_es_written_total",
                "Documents created in Elasticsearch.",
                &self.written,
            ),
            (
                "wafstream_es_already_written_total",
                "Documents that were already there (409 on create).",
                &self.already_written,
            ),
            (
                "wafstream_es_rejected_total",
                "Documents refused for good (dead-lettered).",
                &self.rejected,
            ),
            (
                "wafstream_es_retried_total",
                "Documents sent again after a per-item 429/5xx.",
                &self.retried,
            ),
            (
                "wafstream_es_retried_requests_total",
                "Bulk requests sent again.",
                &self.retried_requests,
            ),
            (
                "wafstream_es_failed_total",
                "Documents given up on (only with a give-up time set).",
                &self.failed,
            ),
            (
                "wafstream_es_outages_total",
                "Times bulk requests began to fail as a whole (Elasticsearch unreachable or refusing).",
                &self.outages,
            ),
            (
                "wafstream_es_outage_milliseconds_total",
                "Length of the outages that ended.",
                &self.outage_ms,
            ),
            (
                "wafstream_es_bulk_requests_total",
                "Bulk requests sent.",
                &self.requests,
            ),
            (
                "wafstream_es_bulk_latency_microseconds_total",
                "Sum of bulk round trips.",
                &self.latency_us_sum,
            ),
        ]);
        out.gauge(
            "wafstream_es_inflight_bytes",
            "Bytes of documents accepted and not yet in a final state.",
            self.inflight_bytes.load(Ordering::Relaxed),
        );
        out.gauge(
            "wafstream_es_unavailable",
            "1 while bulk requests fail as a whole and documents are held for retry.",
            self.unavailable.load(Ordering::Relaxed),
        );
    }
}

/// Keep the readiness condition `elasticsearch` true while one of the hosts answers HTTP at
/// all (any status: credentials are the bulk requests' business), checked every few seconds.
async fn probe(hosts: Vec<String>, client: reqwest::Client) {
    let ready = crate::telemetry::global().readiness("elasticsearch");
    loop {
        let mut ok = false;
        for h in &hosts {
            let r = client.get(h.as_str()).timeout(Duration::from_secs(3)).send().await;
            if r.is_ok() {
                ok = true;
                break;
            }
        }
        ready.store(ok, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(if ok { 5 } else { 1 })).await;
    }
}

pub struct ElasticsearchSink {
    tx: mpsc::Sender<Item>,
    namespace: String,
    stats: Arc<Stats>,
}

impl ElasticsearchSink {
    /// Start the batching task (on the current Tokio runtime) and return the sink.
    pub fn start(cfg: Config, client: reqwest::Client) -> Self {
        let (tx, rx) = mpsc::channel(cfg.max_batch_docs.max(1) * 4);
        let namespace = cfg.namespace.clone();
        let stats = Arc::new(Stats::default());
        crate::telemetry::global().register("elasticsearch", stats.clone());
        tokio::spawn(probe(cfg.hosts.clone(), client.clone()));
        tokio::spawn(batcher(cfg, client, rx, tx.clone(), stats.clone()));
        ElasticsearchSink { tx, namespace, stats }
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
}

impl Sink for ElasticsearchSink {
    async fn send(&self, out: Output<'_>) -> Result<Ack, SinkError> {
        let (ack, rx) = oneshot::channel();
        self.stats
            .inflight_bytes
            .fetch_add(out.body.len() as u64, Ordering::Relaxed);
        let item = Item {
            index: data_stream(out.dataset, &self.namespace),
            id: out.id.to_string(),
            body: out.body.to_vec(),
            attempts: 0,
            failing_since: None,
            ack,
        };
        self.tx
            .send(item)
            .await
            .map_err(|_| SinkError::Stopped("elasticsearch".into()))?;
        Ok(Ack::later(async move {
            match rx.await {
                Ok(r) => r.map_err(SinkError::GaveUp),
                Err(_) => Err(SinkError::Stopped("elasticsearch".into())),
            }
        }))
    }

    /// Every acknowledgement resolves only once its item reached a final state, so once they
    /// have all resolved nothing is left buffered.
    fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

async fn batcher(
    cfg: Config,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<Item>,
    retry: mpsc::Sender<Item>,
    stats: Arc<Stats>,
) {
    let cfg = Arc::new(cfg);
    let permits = Arc::new(Semaphore::new(cfg.max_inflight_requests.max(1)));
    let retry = retry.downgrade();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut bytes = batch[0].body.len();
        let deadline = tokio::time::Instant::now() + cfg.flush_interval;
        while batch.len() < cfg.max_batch_docs && bytes < cfg.max_batch_bytes {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => {
                    bytes += item.body.len();
                    batch.push(item);
                }
                _ => break,
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (cfg, client, retry, stats) = (cfg.clone(), client.clone(), retry.clone(), stats.clone());
        tokio::spawn(async move {
            send_batch(&cfg, &client, batch, retry, &stats).await;
            drop(permit);
        });
    }
}

/// `create` action lines and documents, NDJSON.
fn bulk_body(batch: &[Item]) -> Vec<u8> {
    let mut b = Vec::with_capacity(batch.iter().map(|i| i.body.len() + 96).sum());
    for i in batch {
        b.extend_from_slice(b"{\"create\":{\"_index\":");
        crate::ecs::doc::write_str(&mut b, &i.index);
        b.extend_from_slice(b",\"_id\":");
        crate::ecs::doc::write_str(&mut b, &i.id);
        b.extend_from_slice(b"}}\n");
        b.extend_from_slice(&i.body);
        b.push(b'\n');
    }
    b
}

/// Exponential backoff with full jitter, capped.
fn backoff(cfg: &Config, attempt: u32) -> Duration {
    let exp = cfg
        .backoff_base
        .saturating_mul(1u32 << attempt.min(16))
        .min(cfg.backoff_max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let frac = f64::from(nanos % 1000) / 1000.0;
    exp.mul_f64(0.5 + frac / 2.0)
}

#[derive(serde::Deserialize)]
struct BulkResponse {
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(serde::Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<BulkError>,
}

#[derive(serde::Deserialize)]
struct BulkError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: String,
}

enum Outcome {
    /// Whole request failed in a way worth retrying.
    Retry(String),
    /// Whole request refused (bad credentials, malformed request): every item fails.
    Fatal(String),
    Items(Vec<BulkItem>),
}

async fn request(cfg: &Config, client: &reqwest::Client, host: &str, body: &[u8], docs: usize) -> Outcome {
    // `pipeline=_none`: the documents are final. Where an Elastic integration's templates give
    // the data stream a default ingest pipeline (one that expects a raw line), it is not run
    // again; a `final_pipeline` still is.
    let url = format!("{}/_bulk?pipeline=_none", host.trim_end_matches('/'));
    let mut req = client
        .post(&url)
        .timeout(cfg.request_timeout)
        .header("content-type", "application/x-ndjson")
        .header("accept", "application/json");
    req = match &cfg.auth {
        Auth::None => req,
        Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
        Auth::ApiKey(k) => req.header("authorization", format!("ApiKey {k}")),
        Auth::Bearer(t) => req.bearer_auth(t),
    };
    if cfg.gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
        if gz.write_all(body).is_err() {
            return Outcome::Fatal("gzip failed".into());
        }
        match gz.finish() {
            Ok(z) => req = req.header("content-encoding", "gzip").body(z),
            Err(e) => return Outcome::Fatal(format!("gzip failed: {e}")),
        }
    } else {
        req = req.body(body.to_vec());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(format!("{url}: {e}")),
    };
    let status = resp.status().as_u16();
    let text = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Retry(format!("{url}: reading response: {e}")),
    };
    // Overload and server errors pass; so may credentials or privileges an operator fixes
    // (401/403) — retrying keeps the documents meanwhile, and the outage log says why.
    if matches!(status, 401 | 403 | 408 | 429) || status >= 500 {
        return Outcome::Retry(format!(
            "{url}: HTTP {status}: {}",
            String::from_utf8_lossy(&text[..text.len().min(200)])
        ));
    }
    if !(200..300).contains(&status) {
        return Outcome::Fatal(format!(
            "{url}: HTTP {status}: {}",
            String::from_utf8_lossy(&text[..text.len().min(300)])
        ));
    }
    match serde_json::from_slice::<BulkResponse>(&text) {
        Ok(r) if r.items.len() == docs => {
            Outcome::Items(r.items.into_iter().filter_map(|m| m.into_values().next()).collect())
        }
        Ok(r) => Outcome::Retry(format!(
            "{url}: {} items in response for {docs} documents",
            r.items.len()
        )),
        Err(e) => Outcome::Retry(format!("{url}: unreadable bulk response: {e}")),
    }
}

async fn send_batch(
    cfg: &Config,
    client: &reqwest::Client,
    mut batch: Vec<Item>,
    retry: mpsc::WeakSender<Item>,
    stats: &Stats,
) {
    let body = bulk_body(&batch);
    let mut attempt = 0u32;
    let mut failing_since: Option<Instant> = None;
    let settle = |item: &Item| {
        stats
            .inflight_bytes
            .fetch_sub(item.body.len() as u64, Ordering::Relaxed);
    };
    let items = loop {
        let host = &cfg.hosts[attempt as usize % cfg.hosts.len().max(1)];
        let t0 = Instant::now();
        let outcome = request(cfg, client, host, &body, batch.len()).await;
        let us = t0.elapsed().as_micros() as u64;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.latency_us_sum.fetch_add(us, Ordering::Relaxed);
        stats.latency_us_max.fetch_max(us, Ordering::Relaxed);
        match outcome {
            Outcome::Items(items) => {
                stats.answered();
                break items;
            }
            Outcome::Fatal(why) => {
                for i in batch {
                    settle(&i);
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = i.ack.send(Err(why.clone()));
                }
                return;
            }
            Outcome::Retry(why) => {
                attempt += 1;
                let since = *failing_since.get_or_insert_with(Instant::now);
                if cfg.give_up_after.is_some_and(|g| since.elapsed() >= g) {
                    for i in batch {
                        settle(&i);
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        let _ = i.ack.send(Err(format!(
                            "gave up after {attempt} attempts in {:.0} s: {why}",
                            since.elapsed().as_secs_f64()
                        )));
                    }
                    return;
                }
                stats.retried_requests.fetch_add(1, Ordering::Relaxed);
                stats.failing(&why);
                tracing::debug!(reason = %why, attempt, "elasticsearch bulk request failed; retrying");
                tokio::time::sleep(backoff(cfg, attempt)).await;
            }
        }
    };
    for (mut item, result) in batch.drain(..).zip(items) {
        match result.status {
            200 | 201 | 409 => {
                settle(&item);
                let counter = if result.status == 409 {
                    &stats.already_written
                } else {
                    &stats.written
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = item.ack.send(Ok(Delivery::Accepted));
            }
            429 | 500..=599 => {
                item.attempts += 1;
                let since = *item.failing_since.get_or_insert_with(Instant::now);
                if cfg.give_up_after.is_some_and(|g| since.elapsed() >= g) {
                    settle(&item);
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = item
                        .ack
                        .send(Err(format!("HTTP {} after {} attempts", result.status, item.attempts)));
                    continue;
                }
                stats.retried.fetch_add(1, Ordering::Relaxed);
                // Retry this document alone, after a while, through the batching queue.
                let delay = backoff(cfg, item.attempts);
                let retry = retry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    match retry.upgrade() {
                        Some(tx) => {
                            if let Err(e) = tx.send(item).await {
                                let _ = e.0.ack.send(Err("elasticsearch sink stopped".into()));
                            }
                        }
                        None => {
                            let _ = item.ack.send(Err("elasticsearch sink stopped".into()));
                        }
                    }
                });
            }
            status => {
                let (kind, reason) = result.error.map(|e| (e.kind, e.reason)).unwrap_or_default();
                let reason = format!("elasticsearch refused the document (HTTP {status}): {kind}: {reason}");
                settle(&item);
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                let body = std::mem::take(&mut item.body);
                let _ = item.ack.send(Ok(Delivery::Rejected { reason, body }));
            }
        }
    }
}

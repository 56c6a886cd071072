//! The parser worker: the Kafka source (the raw topic, read in a consumer group) wired to the
//! pipeline core and the Kafka / Elasticsearch sinks. A frame's offset is stored only once its
//! output is acknowledged, in order per partition (at-least-once; the deterministic `_id`
//! makes redelivery harmless downstream); auto-commit then commits the stored offsets.
//!
//! The consumer is polled on its own thread, so a partition revocation can wait there for the
//! pipeline to settle what it already took (the core keeps running on the runtime's threads)
//! and commit it before the partitions move to another worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;

use super::output::{KafkaSink, Topics};
use super::{
    ClientSettings, H_INPUT, H_OFFSET, H_PEER, H_RECEIVED, H_SOURCE, H_SOURCETYPE, H_TIME, H_TRUNCATED, H_TZ, H_W3C,
};
use crate::bus::{self, Progress, RawFrame, Token};
use crate::ecs::Options;
use crate::parse::W3cFields;
use crate::pipeline;
use crate::sink::Sink;

/// Topics and limits of a worker.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: ClientSettings,
    pub group: String,
    pub raw_topic: String,
    pub topic_securesphere: String,
    pub topic_cloud_waf: String,
    pub topic_siem: String,
    pub dlq_topic: String,
    /// Outputs in flight before the worker waits for acknowledgements.
    pub max_inflight: usize,
    /// Mapping threads.
    pub threads: usize,
    /// Stop (drain, commit, exit) once no record arrived for this long after the last one; for
    /// backfills and benchmarks.
    pub exit_when_idle: Option<Duration>,
    /// How long a stop waits for outputs in flight before giving up on them (not committed).
    pub drain_timeout: Duration,
    /// How long an output may stay undelivered before the worker stops; `None` waits.
    pub give_up_after: Option<Duration>,
}

/// What a worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Summary {
    pub consumed: u64,
    pub documents: u64,
    pub dead_letters: u64,
    /// Documents processors dropped (their offsets stored like any other).
    pub dropped: u64,
    pub offsets_stored: u64,
    /// Outputs settled while a revocation waited, before partitions were handed over.
    pub drained_on_revoke: u64,
    /// Seconds records were flowing (gaps over a second between two records not counted).
    pub active_secs: f64,
}

impl Summary {
    /// Records per second while there was work.
    pub fn rate(&self) -> f64 {
        if self.active_secs > 0.0 {
            self.consumed as f64 / self.active_secs
        } else {
            0.0
        }
    }
}

/// How long a revocation waits for in-flight outputs before letting the partitions go (what is
/// still unacknowledged then is redelivered to the new owner: a repeat, never a loss).
const REVOKE_DRAIN: Duration = Duration::from_secs(10);

/// The worker's counters, shared by the source, the partition lanes and the rebalance
/// callback, and read by the metrics endpoint.
#[derive(Default)]
struct Counts {
    consumed: AtomicU64,
    /// Frames taken and not yet settled.
    unsettled: AtomicI64,
    stored: AtomicU64,
    drained: AtomicU64,
    /// Times consumption paused because outputs were not being acknowledged.
    pauses: AtomicU64,
    /// The drain at shutdown was given up: a revocation (while closing) waits for nothing.
    abandoned: AtomicBool,
    /// Records of the assigned raw-topic partitions not consumed yet (librdkafka's statistics,
    /// every `statistics.interval.ms`); -1 until known.
    lag: AtomicI64,
}

impl crate::telemetry::Source for Counts {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        out.counters(&[
            (
                "wafstream_worker_consumed_total",
                "Raw records consumed.",
                &self.consumed,
            ),
            (
                "wafstream_worker_offsets_stored_total",
                "Offsets stored for commit after their output was acknowledged.",
                &self.stored,
            ),
            (
                "wafstream_worker_drained_on_revoke_total",
                "Outputs settled while a revocation waited, before partitions moved.",
                &self.drained,
            ),
            (
                "wafstream_worker_pauses_total",
                "Times consumption paused (partitions paused, polling on) because outputs were not acknowledged.",
                &self.pauses,
            ),
        ]);
        let lag = self.lag.load(Ordering::Relaxed);
        if lag >= 0 {
            out.gauge(
                "wafstream_worker_consumer_lag",
                "Records of this worker's raw-topic partitions not consumed yet (high watermark minus position, from librdkafka's statistics every 5 s).",
                lag as u64,
            );
        }
        out.gauge(
            "wafstream_worker_inflight",
            "Records taken and not yet acknowledged downstream.",
            self.unsettled.load(Ordering::Relaxed).max(0) as u64,
        );
    }
}

/// Consumer context that drains in-flight work when partitions are revoked: frames already
/// taken are settled by the pipeline (which runs on other threads) while this, the consumer's
/// thread, waits; then the stored offsets are committed and the partitions move on.
struct DrainOnRevoke {
    counts: Arc<Counts>,
    /// Readiness: partitions are assigned to this worker.
    assigned: Arc<AtomicBool>,
}

impl ClientContext for DrainOnRevoke {
    /// The consumer lag of the assigned partitions, summed (partitions whose lag librdkafka
    /// does not know yet count as 0).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag > 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.counts.lag.store(lag, Ordering::Relaxed);
    }
}

impl ConsumerContext for DrainOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Revoke(_)) {
            return;
        }
        self.assigned.store(false, Ordering::Relaxed);
        let before = self.counts.unsettled.load(Ordering::Acquire);
        let deadline = Instant::now() + REVOKE_DRAIN;
        while self.counts.unsettled.load(Ordering::Acquire) > 0
            && !self.counts.abandoned.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = self.counts.unsettled.load(Ordering::Acquire).max(0);
        let drained = (before - after).max(0) as u64;
        self.counts.drained.fetch_add(drained, Ordering::Relaxed);
        commit(consumer, "commit before revocation");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions assigned");
            self.assigned.store(tpl.count() > 0, Ordering::Relaxed);
        }
    }
}

type Consumer_ = BaseConsumer<DrainOnRevoke>;

/// Commit the stored offsets; nothing new to commit (`NoOffset`) is not an error.
fn commit(consumer: &Consumer_, what: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "{what}"),
    }
}

/// One partition's acknowledgements: settling a frame stores its offset.
struct PartitionLane {
    consumer: Arc<Consumer_>,
    topic: String,
    partition: i32,
    counts: Arc<Counts>,
}

impl Progress for PartitionLane {
    fn done(&self, offset: u64) {
        self.counts.unsettled.fetch_sub(1, Ordering::AcqRel);
        // After a rebalance the partition may be gone; its new owner redelivers the frame.
        if self
            .consumer
            .store_offset(&self.topic, self.partition, offset as i64)
            .is_ok()
        {
            self.counts.stored.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Documents to Elasticsearch instead of the dataset topics (dead letters stay on Kafka).
pub struct ToElasticsearch {
    pub config: crate::sink::elasticsearch::Config,
    pub client: reqwest::Client,
}

/// Consume until `shutdown`, then drain, commit and flush. Documents go to the dataset topics,
/// or to Elasticsearch when `es` is given; dead letters go to the DLQ topic.
pub async fn run(
    cfg: Config,
    opts: Options,
    es: Option<ToElasticsearch>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let kafka = KafkaSink::new(
        &cfg.settings,
        Topics {
            securesphere: cfg.topic_securesphere.clone(),
            cloud_waf: cfg.topic_cloud_waf.clone(),
            siem: cfg.topic_siem.clone(),
            dlq: cfg.dlq_topic.clone(),
        },
        cfg.give_up_after,
    )?;
    match es {
        None => run_with(cfg, opts, &kafka, shutdown).await,
        Some(es) => {
            let docs = crate::sink::elasticsearch::ElasticsearchSink::start(es.config, es.client);
            let stats = docs.stats();
            let sink = crate::sink::Routed { docs, dead: kafka };
            let r = run_with(cfg, opts, &sink, shutdown).await;
            tracing::info!("{}", stats.report());
            r
        }
    }
}

async fn run_with<S: Sink>(
    cfg: Config,
    opts: Options,
    sink: &S,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let counts = Arc::new(Counts {
        lag: AtomicI64::new(-1),
        ..Counts::default()
    });
    crate::telemetry::global().register("worker", counts.clone());
    let assigned = crate::telemetry::global().readiness("partitions assigned");
    let consumer: Consumer_ = cfg
        .settings
        .config(&[
            ("group.id", cfg.group.as_str()),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            // For the consumer-lag gauge.
            ("statistics.interval.ms", "5000"),
            // librdkafka waits `fetch.queue.backoff.ms` (1 s by default) before fetching again
            // once its prefetch queue is over its thresholds; a worker drains that queue in
            // well under a second, so it then starved: 66 k events/s → 121 k with 10 ms here
            // (bench/README.md). A 16 MiB prefetch queue (instead of 64) is then enough to
            // keep the mapping busy and keeps the worker within its memory budget.
            ("fetch.queue.backoff.ms", "10"),
            ("queued.max.messages.kbytes", "16384"),
        ])
        .create_with_context(DrainOnRevoke {
            counts: counts.clone(),
            assigned,
        })?;
    consumer.subscribe(&[cfg.raw_topic.as_str()])?;
    let consumer = Arc::new(consumer);
    // Frames waiting for the core: a few batches are enough to keep the mapping threads busy
    // (the consumer's own fetch queue holds more); outputs awaiting acknowledgement are bounded
    // by `max_inflight` in the core.
    let (tx, rx) = bus::channel(8 * bus::BATCH);
    let stop = Arc::new(AtomicBool::new(false));
    let source = {
        let (consumer, counts, stop) = (consumer.clone(), counts.clone(), stop.clone());
        let (topic, idle) = (cfg.raw_topic.clone(), cfg.exit_when_idle);
        std::thread::Builder::new()
            .name("wafstream-consume".into())
            .spawn(move || consume(consumer, topic, counts, tx, stop, idle))?
    };
    let settings = pipeline::Settings {
        threads: cfg.threads.max(1),
        max_inflight: cfg.max_inflight.max(1),
        ..pipeline::Settings::default()
    };
    let core = pipeline::run(rx, opts, settings, sink);
    let drain = pipeline::Drain {
        timeout: cfg.drain_timeout,
        interrupt: crate::embedded::signal,
    };
    let (done, ()) = pipeline::until(shutdown, core, || async { stop.store(true, Ordering::Relaxed) }, drain).await;
    let (consumed, active_secs) = tokio::task::spawn_blocking(move || source.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))?;
    let done = match done {
        Ok(d) => d?,
        Err(a) => {
            counts.abandoned.store(true, Ordering::Release);
            // Only what was acknowledged has its offset stored: commit that, leave the rest to
            // be redelivered.
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
            anyhow::bail!(
                "stopped before every output was delivered: {a}; offsets were committed only up to what was delivered, the rest is consumed again at the next start"
            );
        }
    };
    let stored = counts.stored.load(Ordering::Relaxed);
    if stored > 0 {
        commit(&consumer, "final commit");
    }
    Ok(Summary {
        consumed,
        documents: done.documents,
        dead_letters: done.dead_letters,
        dropped: done.dropped,
        offsets_stored: stored,
        drained_on_revoke: counts.drained.load(Ordering::Relaxed),
        active_secs,
    })
}

/// The last value of a header, kept so frames of the same sender/file share one allocation.
#[derive(Default)]
struct Recent {
    peer: Option<Arc<str>>,
    source: Option<Arc<str>>,
    tz: Option<Arc<str>>,
    sourcetype: Option<Arc<str>>,
    w3c: Option<(String, Arc<W3cFields>)>,
}

fn shared(slot: &mut Option<Arc<str>>, v: Option<&str>) -> Option<Arc<str>> {
    let v = v?;
    match slot {
        Some(s) if &**s == v => Some(s.clone()),
        _ => {
            let s: Arc<str> = v.into();
            *slot = Some(s.clone());
            Some(s)
        }
    }
}

/// Input kinds as ingress writes them (the frame keeps a static name).
fn input_kind(v: Option<&str>) -> &'static str {
    match v {
        Some("tcp") => "tcp",
        Some("tls") => "tls",
        Some("udp") => "udp",
        Some("file") => "file",
        Some("pull") => "pull",
        Some("s3") => "s3",
        Some("hec") => "hec",
        Some("stdin") => "stdin",
        _ => "kafka",
    }
}

/// The raw-topic headers of one record, read in one pass over them (the first of a repeated
/// header counts; a value that is not UTF-8 is left out).
#[derive(Default)]
struct RawHeaders<'h> {
    received: Option<&'h str>,
    input: Option<&'h str>,
    peer: Option<&'h str>,
    truncated: Option<&'h str>,
    source: Option<&'h str>,
    offset: Option<&'h str>,
    tz: Option<&'h str>,
    w3c: Option<&'h str>,
    sourcetype: Option<&'h str>,
    time: Option<&'h str>,
}

impl<'h> RawHeaders<'h> {
    fn of(h: Option<&'h rdkafka::message::BorrowedHeaders>) -> Self {
        use rdkafka::message::Headers;
        let mut r = RawHeaders::default();
        let Some(h) = h else { return r };
        for i in 0..h.count() {
            let x = h.get(i);
            let slot = match x.key {
                H_RECEIVED => &mut r.received,
                H_INPUT => &mut r.input,
                H_PEER => &mut r.peer,
                H_TRUNCATED => &mut r.truncated,
                H_SOURCE => &mut r.source,
                H_OFFSET => &mut r.offset,
                H_TZ => &mut r.tz,
                H_W3C => &mut r.w3c,
                H_SOURCETYPE => &mut r.sourcetype,
                H_TIME => &mut r.time,
                _ => continue,
            };
            if slot.is_none() {
                *slot = x.value.and_then(|v| std::str::from_utf8(v).ok());
            }
        }
        r
    }
}

/// A raw record and its headers → a frame (the raw-topic contract, read side).
fn frame(m: &BorrowedMessage<'_>, recent: &mut Recent, token: Token) -> RawFrame {
    let h = RawHeaders::of(m.headers());
    let w3c = h.w3c.and_then(|names| match &recent.w3c {
        Some((n, cols)) if n == names => Some(cols.clone()),
        _ => {
            let cols = Arc::new(W3cFields::from_directive(names)?);
            recent.w3c = Some((names.to_string(), cols.clone()));
            Some(cols)
        }
    });
    let offset = h.offset.and_then(|v| v.parse().ok());
    let source = shared(&mut recent.source, h.source);
    // Frames without a file position are told apart by their place in the raw topic, which a
    // redelivery keeps.
    let occurrence =
        (offset.is_none() || source.is_none()).then(|| ((m.partition() as u64) << 48) ^ (m.offset() as u64));
    RawFrame {
        bytes: bytes::Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        received_ms: h.received.and_then(|v| v.parse().ok()).unwrap_or_else(bus::now_ms),
        input: input_kind(h.input),
        peer: shared(&mut recent.peer, h.peer),
        truncated_from: h.truncated.and_then(|v| v.parse().ok()),
        source,
        offset,
        occurrence,
        tz: shared(&mut recent.tz, h.tz),
        w3c,
        sourcetype: shared(&mut recent.sourcetype, h.sourcetype),
        time_ms: h.time.and_then(|v| v.parse().ok()),
        token,
        ..RawFrame::default()
    }
}

/// Turns consumed records into frames with their acknowledgement tokens.
struct Intake {
    consumer: Arc<Consumer_>,
    topic: String,
    counts: Arc<Counts>,
    lanes: HashMap<i32, Arc<dyn Progress>>,
    recent: Recent,
}

impl Intake {
    fn take(&mut self, m: &BorrowedMessage<'_>) -> RawFrame {
        self.counts.consumed.fetch_add(1, Ordering::Relaxed);
        let partition = m.partition();
        let lane = self
            .lanes
            .entry(partition)
            .or_insert_with(|| {
                Arc::new(PartitionLane {
                    consumer: self.consumer.clone(),
                    topic: self.topic.clone(),
                    partition,
                    counts: self.counts.clone(),
                })
            })
            .clone();
        self.counts.unsettled.fetch_add(1, Ordering::AcqRel);
        frame(m, &mut self.recent, Token::new(lane, m.offset() as u64))
    }
}

/// A poll result worth acting on: records, or an error worth a log line (a commit with nothing
/// new to commit is not one).
fn polled<'c>(r: Option<KafkaResult<BorrowedMessage<'c>>>) -> Option<BorrowedMessage<'c>> {
    match r {
        Some(Ok(m)) => Some(m),
        Some(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) | None => None,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "consume");
            None
        }
    }
}

/// How long a full bus is waited for before the partitions are paused (well under
/// `max.poll.interval.ms`, well over a batch's mapping time).
const PAUSE_AFTER: Duration = Duration::from_millis(250);

/// Hand what is batched to the core. While the core has no room (outputs are not being
/// acknowledged: Elasticsearch or the brokers are away), the assigned partitions are paused
/// and the consumer keeps polling, as it must to stay in its group (`max.poll.interval.ms`);
/// a record that still arrives (a partition assigned meanwhile) joins the next batch.
fn hand_over(tx: &mut bus::Batcher, intake: &mut Intake) -> Result<(), bus::Closed> {
    let consumer = intake.consumer.clone();
    let mut paused = false;
    let mut late = Vec::new();
    let full_since = Instant::now();
    let r = tx.flush_waiting(|| {
        // A full bus under load frees a slot within a batch's mapping time: wait for it
        // without touching the consumer (pausing drops what librdkafka has fetched, and a
        // poll of paused partitions waits its whole timeout). Only when no room comes for a
        // while (outputs not acknowledged) are the partitions paused, polling on.
        if !paused && full_since.elapsed() < PAUSE_AFTER {
            std::thread::sleep(Duration::from_micros(200));
            return;
        }
        if !paused {
            paused = true;
            intake.counts.pauses.fetch_add(1, Ordering::Relaxed);
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.pause(&a);
            }
        }
        if let Some(m) = polled(consumer.poll(Duration::from_millis(10))) {
            late.push(intake.take(&m));
        }
    });
    if paused {
        if let Ok(a) = consumer.assignment() {
            let _ = consumer.resume(&a);
        }
    }
    for f in late {
        tx.hold(f);
    }
    r
}

/// Poll the consumer and hand frames to the pipeline until `stop`, the idle limit, or the
/// pipeline is gone. Returns the records consumed and the seconds there was work (gaps between
/// records longer than a second do not count).
fn consume(
    consumer: Arc<Consumer_>,
    topic: String,
    counts: Arc<Counts>,
    tx: bus::Sender,
    stop: Arc<AtomicBool>,
    exit_when_idle: Option<Duration>,
) -> (u64, f64) {
    let mut intake = Intake {
        consumer: consumer.clone(),
        topic,
        counts,
        lanes: HashMap::new(),
        recent: Recent::default(),
    };
    let (mut consumed, mut busy, mut last) = (0u64, Duration::ZERO, None::<Instant>);
    let mut tx = bus::Batcher::new(tx);
    while !stop.load(Ordering::Relaxed) {
        if let (Some(idle), Some(l)) = (exit_when_idle, last) {
            if l.elapsed() >= idle {
                break;
            }
        }
        // Records already fetched are taken without waiting; the batch goes out before a poll
        // that may wait.
        let m = match polled(consumer.poll(Duration::ZERO)) {
            Some(m) => Some(m),
            None => {
                if tx.pending() > 0 {
                    let t = Instant::now();
                    if hand_over(&mut tx, &mut intake).is_err() {
                        break;
                    }
                    // Time spent waiting for room is work (the core is busy), not idleness.
                    busy += t.elapsed();
                    last = last.map(|_| Instant::now());
                }
                polled(consumer.poll(Duration::from_millis(100)))
            }
        };
        let Some(m) = m else { continue };
        let now = Instant::now();
        if let Some(l) = last {
            busy += now.duration_since(l).min(Duration::from_secs(1));
        }
        last = Some(now);
        consumed += 1;
        let f = intake.take(&m);
        drop(m);
        tx.hold(f);
        if tx.pending() >= bus::BATCH {
            let t = Instant::now();
            if hand_over(&mut tx, &mut intake).is_err() {
                break;
            }
            busy += t.elapsed();
            last = Some(Instant::now());
        }
    }
    let _ = hand_over(&mut tx, &mut intake);
    (consumed, busy.as_secs_f64())
}

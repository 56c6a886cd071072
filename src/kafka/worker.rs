//! The parser worker: consumes the raw topic in a consumer group, maps each frame, produces the
//! document to its dataset's topic (or the dead-letter record to the DLQ topic), and stores a
//! frame's offset only after its output is acknowledged (at-least-once; the deterministic `_id`
//! makes redelivery harmless downstream).
//!
//! Outputs are produced without waiting for each acknowledgement; a FIFO of pending deliveries
//! is settled from the front, so an offset is never stored past an unacknowledged frame.
//! Auto-commit then commits the stored offsets.

use std::collections::VecDeque;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use rdkafka::Message;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};

use super::{ClientSettings, H_INPUT, H_OFFSET, H_PEER, H_RECEIVED, H_SOURCE, H_TRUNCATED, H_TZ, header};
use crate::ecs::{FrameMeta, Mapper, Options};
use crate::sink::kafka::{KafkaSink, Topics};
use crate::sink::{Ack, Delivery, Output, Sink};

/// Topics and limits of a worker.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: ClientSettings,
    pub group: String,
    pub raw_topic: String,
    pub topic_securesphere: String,
    pub topic_cloud_waf: String,
    pub dlq_topic: String,
    /// Outputs in flight before the worker waits for acknowledgements.
    pub max_inflight: usize,
    /// Stop (drain, commit, exit) once no record arrived for this long after the last one; for
    /// backfills and benchmarks.
    pub exit_when_idle: Option<Duration>,
}

/// What a worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Summary {
    pub consumed: u64,
    pub documents: u64,
    pub dead_letters: u64,
    pub offsets_stored: u64,
    /// Outputs settled by the rebalance callback before partitions were handed over.
    pub drained_on_revoke: u64,
    /// Seconds from the first record consumed to the last output acknowledged.
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

struct Pending {
    partition: i32,
    offset: i64,
    ack: Ack,
}

/// Outputs not yet acknowledged, shared with the rebalance callback.
type Queue = Arc<Mutex<VecDeque<Pending>>>;

/// How long a revocation waits for in-flight outputs before letting the partitions go (what is
/// still unacknowledged then is redelivered to the new owner: a repeat, never a loss).
const REVOKE_DRAIN: Duration = Duration::from_secs(10);

/// How long the consume loop waits for a record before settling acknowledged outputs anyway.
const SETTLE_TICK: Duration = Duration::from_millis(50);

/// Consumer context that drains in-flight work when partitions are revoked: outputs already
/// handed to the sink are awaited, their offsets stored and committed, before the partitions
/// move to another worker, so a rebalance repeats nothing that was finished.
struct DrainOnRevoke {
    pending: Queue,
    raw_topic: String,
    drained: Arc<AtomicU64>,
}

impl ClientContext for DrainOnRevoke {}

impl ConsumerContext for DrainOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Revoke(_)) {
            return;
        }
        let Ok(mut q) = self.pending.lock() else { return };
        // Acknowledgements arrive from the producer's own thread, so they complete while this
        // (the consumer's) thread waits here; a retry that needs the runtime's timer does not,
        // and is left to redelivery once the deadline passes.
        let deadline = Instant::now() + REVOKE_DRAIN;
        while let Some(front) = q.front_mut() {
            match (&mut front.ack).now_or_never() {
                Some(Ok(Delivery::Accepted)) => {
                    if let Some(p) = q.pop_front() {
                        let _ = consumer.store_offset(&self.raw_topic, p.partition, p.offset);
                        self.drained.fetch_add(1, Ordering::Relaxed);
                        crate::telemetry::global()
                            .worker
                            .drained_on_revoke
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(_) => break,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                None => break,
            }
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            eprintln!("wafstream: commit before revocation: {e}");
        }
    }
}

/// Settle the front of the queue (waiting for it, or only if already done): store its offset
/// once its output is acknowledged. A refused output is fatal: its offset is never stored, so
/// the frame is redelivered after a restart. The lock is never held across an await (the
/// rebalance callback only runs inside `recv`, on this same thread).
/// Where rejected documents go: a mapper to write the dead-letter record, a sink to store it.
struct DeadLetters<'a, S: Sink> {
    mapper: &'a Mapper,
    sink: &'a S,
}

async fn settle_front<S: Sink>(
    pending: &Queue,
    consumer: &StreamConsumer<DrainOnRevoke>,
    raw_topic: &str,
    s: &mut Summary,
    wait: bool,
    dlq: &DeadLetters<'_, S>,
) -> anyhow::Result<bool> {
    let taken = {
        let mut q = pending.lock().map_err(|_| anyhow::anyhow!("pending queue poisoned"))?;
        match q.front_mut() {
            None => return Ok(false),
            Some(front) if !wait => match (&mut front.ack).now_or_never() {
                None => return Ok(false),
                Some(r) => q.pop_front().map(|p| (p, Some(r))),
            },
            Some(_) => q.pop_front().map(|p| (p, None)),
        }
    };
    let Some((mut p, ready)) = taken else { return Ok(false) };
    let result = match ready {
        Some(r) => r,
        None => (&mut p.ack).await,
    };
    match result {
        Err(e) => anyhow::bail!("output for {raw_topic}/{}@{} refused: {e}", p.partition, p.offset),
        // Refused for good by the destination: the document goes to the dead-letter output
        // with the reason, and only then is the frame done.
        Ok(Delivery::Rejected { reason, body }) => {
            let mut dead = Vec::with_capacity(body.len() + 256);
            let meta = FrameMeta {
                received_ms: crate::bus::now_ms(),
                input: "sink",
                ..FrameMeta::default()
            };
            let m = dlq.mapper.dead_letter(&body, &meta, &reason, &mut dead);
            let out = Output {
                dataset: None,
                id: &m.id,
                body: &dead,
                error: Some(&reason),
            };
            let ack = dlq.sink.send(out).await.map_err(|e| anyhow::anyhow!(e))?;
            match ack.await {
                Ok(Delivery::Accepted) => s.dead_letters += 1,
                other => anyhow::bail!(
                    "dead letter for {raw_topic}/{}@{} not stored: {other:?}",
                    p.partition,
                    p.offset
                ),
            }
        }
        Ok(Delivery::Accepted) => {}
    }
    // After a rebalance the partition may be gone; its new owner redelivers the frame.
    if consumer.store_offset(raw_topic, p.partition, p.offset).is_ok() {
        s.offsets_stored += 1;
        crate::telemetry::global()
            .worker
            .offsets_stored
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(true)
}

fn queue_len(q: &Queue) -> usize {
    q.lock().map(|q| q.len()).unwrap_or(0)
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
            dlq: cfg.dlq_topic.clone(),
        },
    )?;
    match es {
        None => run_with(cfg, opts, kafka, shutdown).await,
        Some(es) => {
            let docs = crate::sink::elasticsearch::ElasticsearchSink::start(es.config, es.client);
            let stats = docs.stats();
            let r = run_with(cfg, opts, crate::sink::Routed { docs, dead: kafka }, shutdown).await;
            eprintln!("wafstream: {}", stats.report());
            r
        }
    }
}

async fn run_with<S: Sink>(
    cfg: Config,
    opts: Options,
    sink: S,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let pending: Queue = Arc::new(Mutex::new(VecDeque::new()));
    let drained = Arc::new(AtomicU64::new(0));
    let context = DrainOnRevoke {
        pending: pending.clone(),
        raw_topic: cfg.raw_topic.clone(),
        drained: drained.clone(),
    };
    let consumer: StreamConsumer<DrainOnRevoke> = cfg
        .settings
        .config(&[
            ("group.id", cfg.group.as_str()),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ])
        .create_with_context(context)?;
    consumer.subscribe(&[cfg.raw_topic.as_str()])?;
    let mapper = Mapper::new(opts);
    let dlq = DeadLetters {
        mapper: &mapper,
        sink: &sink,
    };
    let mut s = Summary::default();
    let tel = &crate::telemetry::global().worker;
    crate::telemetry::global().set_worker_running();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut first: Option<std::time::Instant> = None;
    let mut last = std::time::Instant::now();
    let idle = cfg.exit_when_idle.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    loop {
        let in_flight = queue_len(&pending) > 0;
        // The idle clock starts with the first record (joining the group takes a while).
        let idle_left = match first {
            Some(_) => idle.saturating_sub(last.elapsed()),
            None => Duration::MAX / 4,
        };
        let msg = tokio::select! {
            _ = &mut shutdown => break,
            // No record for a moment while outputs are in flight: settle what is acknowledged,
            // so offsets are stored (and auto-committed) when traffic pauses, not only when
            // the next record comes.
            _ = tokio::time::sleep(SETTLE_TICK), if in_flight => {
                while settle_front(&pending, &consumer, &cfg.raw_topic, &mut s, false, &dlq).await? {}
                tel.inflight.store(queue_len(&pending) as u64, Ordering::Relaxed);
                continue;
            }
            m = tokio::time::timeout(idle_left, consumer.recv()) => match m {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        last = std::time::Instant::now();
        first.get_or_insert(last);
        let m = match msg {
            Ok(m) => m,
            Err(e) => {
                eprintln!("wafstream: consume: {e}");
                continue;
            }
        };
        s.consumed += 1;
        tel.consumed.fetch_add(1, Ordering::Relaxed);
        let headers = m.headers();
        let received_ms = header(headers, H_RECEIVED)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(crate::bus::now_ms);
        let input = header(headers, H_INPUT).unwrap_or("kafka").to_string();
        let peer = header(headers, H_PEER).map(str::to_string);
        let truncated = header(headers, H_TRUNCATED).and_then(|v| v.parse::<usize>().ok());
        let payload = m.payload().unwrap_or_default();
        let source = header(headers, H_SOURCE).map(str::to_string);
        let line_offset = header(headers, H_OFFSET).and_then(|v| v.parse::<u64>().ok());
        let tz = header(headers, H_TZ).map(str::to_string);
        let meta = FrameMeta {
            received_ms,
            input: &input,
            source: source.as_deref(),
            peer: peer.as_deref(),
            offset: line_offset,
            tz: tz.as_deref(),
        };
        buf.clear();
        let mapped = match truncated {
            Some(len) => {
                let reason = format!(
                    "message of {len} bytes exceeds max_message_bytes {}; cut",
                    payload.len()
                );
                mapper.dead_letter(payload, &meta, &reason, &mut buf)
            }
            None => mapper.map(payload, &meta, None, &mut buf),
        };
        if mapped.is_dead() {
            s.dead_letters += 1;
        } else {
            s.documents += 1;
        }
        let out = Output {
            dataset: mapped.dataset,
            id: &mapped.id,
            body: &buf,
            error: mapped.error.as_deref(),
        };
        let ack = sink.send(out).await.map_err(|e| anyhow::anyhow!(e))?;
        if let Ok(mut q) = pending.lock() {
            q.push_back(Pending {
                partition: m.partition(),
                offset: m.offset(),
                ack,
            });
        }
        drop(m);
        while settle_front(&pending, &consumer, &cfg.raw_topic, &mut s, false, &dlq).await? {}
        while queue_len(&pending) >= cfg.max_inflight.max(1) {
            settle_front(&pending, &consumer, &cfg.raw_topic, &mut s, true, &dlq).await?;
        }
        tel.inflight.store(queue_len(&pending) as u64, Ordering::Relaxed);
    }
    // Drain: every output acknowledged and its offset stored, then a synchronous commit.
    while queue_len(&pending) > 0 {
        settle_front(&pending, &consumer, &cfg.raw_topic, &mut s, true, &dlq).await?;
    }
    tel.inflight.store(0, Ordering::Relaxed);
    if let Some(f) = first {
        let idle_tail = if cfg.exit_when_idle.is_some() {
            idle
        } else {
            Duration::ZERO
        };
        s.active_secs = f.elapsed().saturating_sub(idle_tail).as_secs_f64();
    }
    if s.offsets_stored > 0 {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            eprintln!("wafstream: final commit: {e}");
        }
    }
    sink.flush().map_err(|e| anyhow::anyhow!(e))?;
    s.drained_on_revoke = drained.load(Ordering::Relaxed);
    Ok(s)
}

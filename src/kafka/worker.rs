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

use futures_util::FutureExt;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};

use super::{ClientSettings, H_INPUT, H_OFFSET, H_PEER, H_RECEIVED, H_SOURCE, H_TRUNCATED, H_TZ, header};
use crate::ecs::{FrameMeta, Mapper, Options};
use crate::sink::kafka::{KafkaSink, Topics};
use crate::sink::{Ack, Output, Sink};

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

/// Settle the front of the queue (waiting for it, or only if already done): store its offset
/// once its output is acknowledged. A refused output is fatal: its offset is never stored, so
/// the frame is redelivered after a restart.
async fn settle_front(
    pending: &mut VecDeque<Pending>,
    consumer: &StreamConsumer,
    raw_topic: &str,
    s: &mut Summary,
    wait: bool,
) -> anyhow::Result<bool> {
    let Some(front) = pending.front_mut() else {
        return Ok(false);
    };
    let result = if wait {
        (&mut front.ack).await
    } else {
        match (&mut front.ack).now_or_never() {
            Some(r) => r,
            None => return Ok(false),
        }
    };
    let p = pending
        .pop_front()
        .ok_or_else(|| anyhow::anyhow!("pending queue empty"))?;
    if let Err(e) = result {
        anyhow::bail!("output for {raw_topic}/{}@{} refused: {e}", p.partition, p.offset);
    }
    // After a rebalance the partition may be gone; its new owner redelivers the frame.
    if consumer.store_offset(raw_topic, p.partition, p.offset).is_ok() {
        s.offsets_stored += 1;
    }
    Ok(true)
}

/// Consume until `shutdown`, then drain, commit and flush.
pub async fn run(
    cfg: Config,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Summary> {
    let consumer: StreamConsumer = cfg
        .settings
        .config(&[
            ("group.id", cfg.group.as_str()),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ])
        .create()?;
    consumer.subscribe(&[cfg.raw_topic.as_str()])?;
    let sink = KafkaSink::new(
        &cfg.settings,
        Topics {
            securesphere: cfg.topic_securesphere.clone(),
            cloud_waf: cfg.topic_cloud_waf.clone(),
            dlq: cfg.dlq_topic.clone(),
        },
    )?;
    let mapper = Mapper::new(opts);
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut s = Summary::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut first: Option<std::time::Instant> = None;
    let idle = cfg.exit_when_idle.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    loop {
        let msg = tokio::select! {
            _ = &mut shutdown => break,
            // The idle clock starts with the first record (joining the group takes a while).
            m = tokio::time::timeout(if first.is_some() { idle } else { Duration::MAX / 4 }, consumer.recv()) => match m {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        first.get_or_insert_with(std::time::Instant::now);
        let m = match msg {
            Ok(m) => m,
            Err(e) => {
                eprintln!("wafstream: consume: {e}");
                continue;
            }
        };
        s.consumed += 1;
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
        pending.push_back(Pending {
            partition: m.partition(),
            offset: m.offset(),
            ack,
        });
        drop(m);
        while settle_front(&mut pending, &consumer, &cfg.raw_topic, &mut s, false).await? {}
        while pending.len() >= cfg.max_inflight.max(1) {
            settle_front(&mut pending, &consumer, &cfg.raw_topic, &mut s, true).await?;
        }
    }
    // Drain: every output acknowledged and its offset stored, then a synchronous commit.
    while !pending.is_empty() {
        settle_front(&mut pending, &consumer, &cfg.raw_topic, &mut s, true).await?;
    }
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
    Ok(s)
}

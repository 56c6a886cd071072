//! Ingress side: frames from the bus to the raw topic. Idempotent, `acks=all`, compressed,
//! batched. A full producer queue means "wait" (the bus fills, TCP stops reading), never drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::VecDeque;

use futures_util::FutureExt;
use futures_util::future::Either;
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{ClientSettings, raw_headers};
use crate::bus::{Receiver, Token};

/// What the producer did.
#[derive(Debug, Default)]
pub struct ProducerStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    /// Deliveries that failed in a way waiting can cure and were produced again.
    pub retried: AtomicU64,
}

impl crate::telemetry::Source for ProducerStats {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        out.counters(&[
            (
                "wafstream_raw_produced_total",
                "Raw frames acknowledged by Kafka.",
                &self.sent,
            ),
            (
                "wafstream_raw_produce_failures_total",
                "Raw frames Kafka refused for good.",
                &self.failed,
            ),
            (
                "wafstream_raw_produce_retries_total",
                "Raw frame deliveries that failed (broker unreachable, timed out) and were produced again.",
                &self.retried,
            ),
        ]);
    }
}

/// Keep the readiness condition `kafka` true while the brokers answer a metadata request for
/// `topic` (checked every few seconds on a thread of its own).
pub fn watch_brokers(producer: FutureProducer, topic: String) {
    let ready = crate::telemetry::global().readiness("kafka");
    let _ = std::thread::Builder::new()
        .name("wafstream-kafka-probe".into())
        .spawn(move || {
            loop {
                let ok = producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(3))
                    .is_ok_and(|m| {
                        m.topics()
                            .iter()
                            .any(|t| t.error().is_none() && !t.partitions().is_empty())
                    });
                ready.store(ok, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(if ok { 5 } else { 1 }));
            }
        });
}

pub fn raw_producer(settings: &ClientSettings) -> anyhow::Result<FutureProducer> {
    Ok(settings
        .config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.type", "lz4"),
            ("linger.ms", "5"),
            ("batch.size", "1000000"),
            // At most 32 MiB of frames queued for the brokers (librdkafka allows 100,000 messages
            // up to 1 GiB): ~0.2 s at full speed, and the ingress within its memory budget. A
            // full queue is waited for, as when the brokers are away.
            ("queue.buffering.max.kbytes", "32768"),
            // Never expire a frame the ingress accepted: an outage stops intake instead.
            ("message.timeout.ms", "0"),
        ])
        .create()?)
}

/// Drain the bus into `topic` until every bus sender is gone, then flush. Each frame's token
/// is settled, in arrival order, once the broker acknowledged it, so file checkpoints only
/// advance over what Kafka holds.
pub async fn publish(
    mut rx: Receiver,
    producer: FutureProducer,
    topic: String,
    tz: Option<String>,
    stats: Arc<ProducerStats>,
) -> anyhow::Result<()> {
    let mut inflight: VecDeque<(Flight, Token)> = VecDeque::new();
    loop {
        // Deliveries are settled as they complete, also while no frame comes in.
        let batch = tokio::select! {
            biased;
            r = front(&mut inflight), if !inflight.is_empty() => {
                settle_front(&producer, &topic, &stats, &mut inflight, r).await?;
                continue;
            }
            f = rx.recv() => match f {
                Some(mut f) => {
                    // Receive → every frame acknowledged by the broker (OTLP on only).
                    let _ = crate::otlp::trace_batch("publish", &mut f);
                    f
                }
                None => break,
            },
        };
        for frame in batch {
            let mut headers = Some(raw_headers(&frame, tz.as_deref()));
            loop {
                // No key: librdkafka's sticky partitioner fills one partition's batch, then
                // moves to another at random, so even one long-lived connection spreads over
                // every partition (a key from the sender would pin it to one).
                let mut rec: FutureRecord<'_, (), [u8]> = FutureRecord::to(&topic).payload(&frame.bytes[..]);
                rec.headers = headers.take();
                match producer.send_result(rec) {
                    Ok(delivery) => {
                        inflight.push_back((Either::Left(delivery), frame.token.clone()));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                        // The headers come back with the refused record, for the next try.
                        headers = rec.headers;
                        // Backpressure: settle the oldest delivery (or wait a moment), then retry.
                        match tokio::time::timeout(Duration::from_millis(50), front(&mut inflight)).await {
                            Ok(r) => settle_front(&producer, &topic, &stats, &mut inflight, r).await?,
                            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((e, _)) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        anyhow::bail!("producing to {topic} failed: {e}");
                    }
                }
            }
        }
        // Settle finished deliveries without waiting.
        while let Some(r) = inflight.front_mut().and_then(|(d, _)| d.now_or_never()) {
            settle_front(&producer, &topic, &stats, &mut inflight, r).await?;
        }
    }
    while !inflight.is_empty() {
        let r = front(&mut inflight).await;
        settle_front(&producer, &topic, &stats, &mut inflight, r).await?;
    }
    // Dropping a producer purges its queue: flush explicitly.
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

type Settled = Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures_channel::oneshot::Canceled>;

/// A delivery in flight, or its verdict once known but not yet settled (frames are settled in
/// order, so a verdict can wait behind an older delivery).
type Flight = Either<DeliveryFuture, std::future::Ready<Settled>>;

async fn front(q: &mut VecDeque<(Flight, Token)>) -> Settled {
    match q.front_mut() {
        Some((d, _)) => d.await,
        None => std::future::pending().await,
    }
}

/// The oldest delivery's verdict: an acknowledged frame is settled. A delivery that failed in
/// a way waiting can cure (the broker unreachable past `message.timeout.ms`, a leader moving)
/// is produced again in its place, so a frame the ingress accepted is never given up while the
/// process lives; intake stops meanwhile (the queue fills, the bus fills, TCP stops reading).
/// A refusal that cannot change (record too large, not authorised) stops the ingress with an
/// error, and no checkpoint moves past it.
async fn settle_front(
    producer: &FutureProducer,
    topic: &str,
    stats: &ProducerStats,
    inflight: &mut VecDeque<(Flight, Token)>,
    r: Settled,
) -> anyhow::Result<()> {
    let Some((_, token)) = inflight.pop_front() else {
        return Ok(());
    };
    let (e, msg) = match r {
        Ok(Ok(_)) => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            token.settle();
            return Ok(());
        }
        Ok(Err(failed)) => failed,
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            anyhow::bail!("a raw frame's delivery to {topic} was canceled");
        }
    };
    if !retriable(&e) {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        anyhow::bail!("a raw frame was refused by {topic}: {e}");
    }
    if stats.retried.fetch_add(1, Ordering::Relaxed) % 10_000 == 0 {
        tracing::warn!(%topic, error = %e, "raw frames not delivered yet; producing them again");
    }
    let again = produce_again(producer, topic, &msg, stats).await?;
    inflight.push_front((Either::Left(again), token));
    // The deliveries behind it have mostly failed the same way: produce them all again now,
    // in place, instead of one round trip at a time once they reach the front.
    for (flight, _) in inflight.iter_mut().skip(1) {
        let Either::Left(d) = flight else { continue };
        match d.now_or_never() {
            None => {}
            Some(Ok(Err((e, msg)))) if retriable(&e) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                *flight = Either::Left(produce_again(producer, topic, &msg, stats).await?);
            }
            Some(verdict) => *flight = Either::Right(std::future::ready(verdict)),
        }
    }
    Ok(())
}

/// Produce a failed record again (same payload, key and headers), waiting while the queue is full.
async fn produce_again(
    producer: &FutureProducer,
    topic: &str,
    msg: &rdkafka::message::OwnedMessage,
    stats: &ProducerStats,
) -> anyhow::Result<DeliveryFuture> {
    loop {
        let mut rec = FutureRecord::to(topic).payload(msg.payload().unwrap_or_default());
        if let Some(k) = msg.key() {
            rec = rec.key(k);
        }
        if let Some(h) = msg.headers() {
            rec = rec.headers(h.clone());
        }
        match producer.send_result(rec) {
            Ok(d) => return Ok(d),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err((e, _)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                anyhow::bail!("producing to {topic} again failed: {e}");
            }
        }
    }
}

/// Whether a failed delivery may succeed later.
pub(crate) fn retriable(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    !matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidRecord
        )
    )
}

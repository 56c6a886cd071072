//! Ingress side: frames from the bus to the raw topic. Idempotent, `acks=all`, compressed,
//! batched. A full producer queue means "wait" (the bus fills, TCP stops reading), never drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::VecDeque;

use futures_util::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{ClientSettings, raw_headers};
use crate::bus::{Receiver, Token};

/// What the producer did.
#[derive(Debug, Default)]
pub struct ProducerStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
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
            ("message.timeout.ms", "300000"),
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
    let mut inflight: VecDeque<(DeliveryFuture, Token)> = VecDeque::new();
    loop {
        // Deliveries are settled as they complete, also while no frame comes in.
        let batch = tokio::select! {
            biased;
            r = front(&mut inflight), if !inflight.is_empty() => {
                if let Some((_, token)) = inflight.pop_front() {
                    count(&stats, r, token, &topic)?;
                }
                continue;
            }
            f = rx.recv() => match f {
                Some(f) => f,
                None => break,
            },
        };
        for frame in batch {
            let headers = raw_headers(&frame, tz.as_deref());
            let key = frame.peer.as_deref().unwrap_or_default();
            loop {
                let rec = FutureRecord::to(&topic)
                    .payload(&frame.bytes[..])
                    .key(key.as_bytes())
                    .headers(headers.clone());
                match producer.send_result(rec) {
                    Ok(delivery) => {
                        inflight.push_back((delivery, frame.token.clone()));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // Backpressure: settle the oldest delivery (or wait a moment), then retry.
                        match tokio::time::timeout(Duration::from_millis(50), front(&mut inflight)).await {
                            Ok(r) => {
                                if let Some((_, token)) = inflight.pop_front() {
                                    count(&stats, r, token, &topic)?;
                                }
                            }
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
            if let Some((_, token)) = inflight.pop_front() {
                count(&stats, r, token, &topic)?;
            }
        }
    }
    while !inflight.is_empty() {
        let r = front(&mut inflight).await;
        if let Some((_, token)) = inflight.pop_front() {
            count(&stats, r, token, &topic)?;
        }
    }
    // Dropping a producer purges its queue: flush explicitly.
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

type Settled = Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures_channel::oneshot::Canceled>;

async fn front(q: &mut VecDeque<(DeliveryFuture, Token)>) -> Settled {
    match q.front_mut() {
        Some((d, _)) => d.await,
        None => std::future::pending().await,
    }
}

/// A delivery's verdict: an acknowledged frame is settled. A failed one (after the producer's
/// own retries for `message.timeout.ms`) stops the ingress with an error, so no checkpoint
/// moves past it: its file is read again from there after a restart.
fn count(stats: &ProducerStats, r: Settled, token: Token, topic: &str) -> anyhow::Result<()> {
    match r {
        Ok(Ok(_)) => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            token.settle();
            Ok(())
        }
        Ok(Err((e, _))) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            anyhow::bail!("a raw frame was not delivered to {topic}: {e}")
        }
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            anyhow::bail!("a raw frame's delivery to {topic} was canceled")
        }
    }
}

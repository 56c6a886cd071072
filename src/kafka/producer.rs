//! Ingress side: frames from the bus to the raw topic. Idempotent, `acks=all`, compressed,
//! batched. A full producer queue means "wait" (the bus fills, TCP stops reading), never drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{ClientSettings, raw_headers};
use crate::bus::Receiver;

/// What the producer did.
#[derive(Debug, Default)]
pub struct ProducerStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
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

/// Drain the bus into `topic` until every bus sender is gone, then flush.
pub async fn publish(
    mut rx: Receiver,
    producer: FutureProducer,
    topic: String,
    tz: Option<String>,
    stats: Arc<ProducerStats>,
) -> anyhow::Result<()> {
    let mut inflight = FuturesUnordered::new();
    loop {
        // Deliveries are counted as they complete, also while no frame comes in.
        let frame = tokio::select! {
            biased;
            Some(r) = inflight.next(), if !inflight.is_empty() => {
                count(&stats, r);
                continue;
            }
            f = rx.recv() => match f {
                Some(f) => f,
                None => break,
            },
        };
        let headers = raw_headers(&frame, tz.as_deref());
        let key = frame.peer.clone().unwrap_or_default();
        loop {
            let rec = FutureRecord::to(&topic)
                .payload(&frame.bytes[..])
                .key(key.as_bytes())
                .headers(headers.clone());
            match producer.send_result(rec) {
                Ok(delivery) => {
                    inflight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Backpressure: settle some deliveries (or wait a moment), then retry.
                    match tokio::time::timeout(Duration::from_millis(50), inflight.next()).await {
                        Ok(Some(r)) => count(&stats, r),
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("wafstream: produce to {topic} failed: {e}");
                    break;
                }
            }
        }
        // Settle finished deliveries without waiting.
        while let Some(Some(r)) = futures_util::FutureExt::now_or_never(inflight.next()) {
            count(&stats, r);
        }
    }
    while let Some(r) = inflight.next().await {
        count(&stats, r);
    }
    // Dropping a producer purges its queue: flush explicitly.
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

type Settled = Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures_channel::oneshot::Canceled>;

fn count(stats: &ProducerStats, r: Settled) {
    match r {
        Ok(Ok(_)) => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err((e, _))) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("wafstream: delivery failed: {e}");
        }
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

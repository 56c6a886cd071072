//! Kafka output: documents to the topic of their dataset (key = document id), dead letters to
//! the DLQ topic. Idempotent producer, `acks=all`; a failed delivery is re-sent a few times
//! before the acknowledgement fails.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{ClientSettings, H_DATASET, H_ERROR, H_ID};
use crate::ecs::Dataset;
use crate::sink::{Ack, Delivery, Output, Sink, SinkError};

const MAX_ATTEMPTS: u32 = 5;

/// Topics of the Kafka sink.
#[derive(Debug, Clone)]
pub struct Topics {
    pub securesphere: String,
    pub cloud_waf: String,
    pub dlq: String,
}

pub struct KafkaSink {
    producer: FutureProducer,
    topics: Topics,
}

impl KafkaSink {
    pub fn new(settings: &ClientSettings, topics: Topics) -> anyhow::Result<Self> {
        let producer = settings
            .config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("compression.type", "lz4"),
                ("linger.ms", "5"),
                ("message.timeout.ms", "120000"),
            ])
            .create()?;
        Ok(KafkaSink { producer, topics })
    }
}

/// Enqueue a record, waiting while the producer queue is full.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: &OwnedHeaders,
) -> Result<DeliveryFuture, SinkError> {
    loop {
        let rec = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers.clone());
        match producer.send_result(rec) {
            Ok(d) => return Ok(d),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(SinkError::Fatal(format!("producing to {topic}: {e}"))),
        }
    }
}

impl Sink for KafkaSink {
    async fn send(&self, out: Output<'_>) -> Result<Ack, SinkError> {
        let topic = match out.dataset {
            Some(Dataset::SecureSphere) => self.topics.securesphere.clone(),
            Some(Dataset::CloudWaf) => self.topics.cloud_waf.clone(),
            None => self.topics.dlq.clone(),
        };
        let mut headers = OwnedHeaders::new().insert(Header {
            key: H_ID,
            value: Some(out.id.as_bytes()),
        });
        if let Some(ds) = out.dataset {
            headers = headers.insert(Header {
                key: H_DATASET,
                value: Some(ds.name().as_bytes()),
            });
        }
        if let Some(e) = out.error {
            headers = headers.insert(Header {
                key: H_ERROR,
                value: Some(e.as_bytes()),
            });
        }
        let key = out.id.as_bytes().to_vec();
        let body = out.body.to_vec();
        let first = enqueue(&self.producer, &topic, &key, &body, &headers).await?;
        let producer = self.producer.clone();
        Ok(Ack::later(async move {
            let mut delivery = first;
            let mut attempt = 1;
            loop {
                let why = match delivery.await {
                    Ok(Ok(_)) => return Ok(Delivery::Accepted),
                    Ok(Err((e, _))) => e.to_string(),
                    Err(_) => "delivery canceled".to_string(),
                };
                if attempt >= MAX_ATTEMPTS {
                    return Err(SinkError::GaveUp(format!(
                        "{topic}: not acknowledged after {MAX_ATTEMPTS} attempts: {why}"
                    )));
                }
                tracing::warn!(%topic, reason = %why, attempt, "retrying output");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
                delivery = enqueue(&producer, &topic, &key, &body, &headers).await?;
            }
        }))
    }

    fn flush(&self) -> Result<(), SinkError> {
        // Dropping a producer purges its queue: flush explicitly.
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| SinkError::GaveUp(format!("flushing the producer: {e}")))
    }
}

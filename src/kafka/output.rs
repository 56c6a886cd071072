//! Kafka output: documents to the topic of their dataset (key = document id), dead letters to
//! the DLQ topic. Idempotent producer, `acks=all`. A record is never given up on by default: the
//! producer has no message timeout (a broker outage stops consumption instead), and a delivery
//! that fails anyway is produced again; only with a give-up time set does its acknowledgement
//! fail once that long has passed (the worker then stops, committing nothing after it).

use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{ClientSettings, H_DATASET, H_ERROR, H_ID};
use crate::ecs::Dataset;
use crate::sink::{Ack, Delivery, Output, Sink, SinkError};

/// Topics of the Kafka sink.
#[derive(Debug, Clone)]
pub struct Topics {
    pub securesphere: String,
    pub cloud_waf: String,
    pub siem: String,
    pub dlq: String,
}

pub struct KafkaSink {
    producer: FutureProducer,
    topics: Topics,
    give_up_after: Option<Duration>,
}

impl KafkaSink {
    /// `give_up_after`: how long a record may stay undelivered before its acknowledgement
    /// fails; `None` waits for as long as it takes.
    pub fn new(settings: &ClientSettings, topics: Topics, give_up_after: Option<Duration>) -> anyhow::Result<Self> {
        let timeout = give_up_after.map_or(0, |d| d.as_millis().clamp(1, i32::MAX as u128) as u64);
        let producer = settings
            .config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("compression.type", "lz4"),
                ("linger.ms", "5"),
                ("message.timeout.ms", &timeout.to_string()),
            ])
            .create()?;
        Ok(KafkaSink {
            producer,
            topics,
            give_up_after,
        })
    }
}

/// Enqueue a record, waiting while the producer queue is full (the headers come back with a
/// refused record, so they are built once).
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    mut headers: Option<OwnedHeaders>,
) -> Result<DeliveryFuture, SinkError> {
    loop {
        let mut rec = FutureRecord::to(topic).key(key).payload(payload);
        rec.headers = headers.take();
        match producer.send_result(rec) {
            Ok(d) => return Ok(d),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                headers = rec.headers;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(SinkError::Fatal(format!("producing to {topic}: {e}"))),
        }
    }
}

impl Sink for KafkaSink {
    async fn send(&self, out: Output<'_>) -> Result<Ack, SinkError> {
        let topic = match out.dataset {
            Some(Dataset::SecureSphere) => &self.topics.securesphere,
            Some(Dataset::CloudWaf) => &self.topics.cloud_waf,
            Some(Dataset::Siem) => &self.topics.siem,
            None => &self.topics.dlq,
        };
        let mut headers = OwnedHeaders::new_with_capacity(3).insert(Header {
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
        // librdkafka copies key and payload; a failed delivery hands its copy back, and that
        // is what is produced again, so nothing is kept here per record.
        let first = enqueue(&self.producer, topic, out.id.as_bytes(), out.body, Some(headers)).await?;
        let producer = self.producer.clone();
        let give_up_after = self.give_up_after;
        Ok(Ack::later(async move {
            let mut delivery = first;
            let mut attempt = 1u32;
            let since = std::time::Instant::now();
            loop {
                let (why, msg) = match delivery.await {
                    Ok(Ok(_)) => return Ok(Delivery::Accepted),
                    Ok(Err((e, msg))) if !super::producer::retriable(&e) => {
                        return Err(SinkError::Fatal(format!("{}: refused: {e}", msg.topic())));
                    }
                    Ok(Err((e, msg))) => (e.to_string(), msg),
                    // The producer dropped the delivery report without a verdict (it is gone):
                    // nothing is left to produce again; the frame stays unsettled.
                    Err(_) => {
                        return Err(SinkError::Fatal(
                            "output delivery canceled: the producer is gone".into(),
                        ));
                    }
                };
                let topic = msg.topic();
                if give_up_after.is_some_and(|g| since.elapsed() >= g) {
                    return Err(SinkError::GaveUp(format!(
                        "{topic}: not acknowledged after {attempt} attempts in {:.0} s: {why}",
                        since.elapsed().as_secs_f64()
                    )));
                }
                tracing::warn!(%topic, reason = %why, attempt, "output not acknowledged; producing it again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(50)))).await;
                attempt += 1;
                let (key, payload) = (msg.key().unwrap_or_default(), msg.payload().unwrap_or_default());
                delivery = enqueue(&producer, topic, key, payload, msg.headers().cloned()).await?;
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

//! Output sinks behind one small interface: a worker hands each mapped frame's output to a
//! [`Sink`] and gets back a future that resolves once the output is durably accepted (or
//! definitively refused). The worker stores the frame's offset only after that. Retries of
//! transient failures are the sink's business.
//!
//! - [`kafka::KafkaSink`]: documents to per-dataset topics, dead letters to the DLQ topic.
//! - [`elasticsearch::ElasticsearchSink`]: `_bulk` `create` into data streams, per-item retries.

pub mod elasticsearch;
pub mod es_setup;
pub mod kafka;

use std::future::Future;
use std::pin::Pin;

use crate::ecs::Dataset;

/// One output: an ECS document (`dataset` set) or a dead-letter record (`dataset` `None`).
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub dataset: Option<Dataset>,
    /// Deterministic document id.
    pub id: &'a str,
    /// The JSON document.
    pub body: &'a [u8],
    /// Why it is a dead letter.
    pub error: Option<&'a str>,
}

/// What finally became of an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Stored (or already there: a redelivered document with the same id).
    Accepted,
    /// Refused for good by the destination (e.g. a mapping conflict); the output must go to
    /// the dead-letter output instead, with this reason.
    Rejected { reason: String, body: Vec<u8> },
}

/// Resolves with the output's final state; `Err` when the sink gave up retrying.
pub type Ack = Pin<Box<dyn Future<Output = Result<Delivery, String>> + Send>>;

pub trait Sink {
    /// Hand over an output. May wait (backpressure) before returning the acknowledgement.
    fn send(&self, out: Output<'_>) -> impl Future<Output = Result<Ack, String>>;
    /// Push out anything buffered; called on shutdown after every `Ack` resolved.
    fn flush(&self) -> Result<(), String>;
}

/// Documents to one sink, dead-letter records to another (e.g. Elasticsearch and a Kafka DLQ
/// topic).
pub struct Routed<D, L> {
    pub docs: D,
    pub dead: L,
}

impl<D: Sink, L: Sink> Sink for Routed<D, L> {
    async fn send(&self, out: Output<'_>) -> Result<Ack, String> {
        if out.dataset.is_some() {
            self.docs.send(out).await
        } else {
            self.dead.send(out).await
        }
    }

    fn flush(&self) -> Result<(), String> {
        self.docs.flush()?;
        self.dead.flush()
    }
}

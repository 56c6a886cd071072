//! Output sinks behind one small interface: a worker hands each mapped frame's output to a
//! [`Sink`] and gets back a future that resolves once the output is durably accepted (or
//! definitively refused). The worker stores the frame's offset only after that. Retries of
//! transient failures are the sink's business.
//!
//! - [`kafka::KafkaSink`]: documents to per-dataset topics, dead letters to the DLQ topic.

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

/// Resolves when the output is accepted; `Err` when the sink gave up on it.
pub type Ack = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

pub trait Sink {
    /// Hand over an output. May wait (backpressure) before returning the acknowledgement.
    fn send(&self, out: Output<'_>) -> impl Future<Output = Result<Ack, String>>;
    /// Push out anything buffered; called on shutdown after every `Ack` resolved.
    fn flush(&self) -> Result<(), String>;
}

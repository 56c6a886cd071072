//! Output sinks behind one small interface: the pipeline core ([`crate::pipeline`]) hands each
//! mapped frame's output to a [`Sink`] and gets back an [`Ack`] that resolves once the output is
//! durably accepted (or definitively refused); only then is the frame's token settled (offset
//! stored, checkpoint advanced). Retries of transient failures are the sink's business; a sink
//! that gives up says so with a [`SinkError`] whose variant tells whether waiting can help.
//!
//! - [`WriterSink`]: NDJSON to stdout or a file.
//! - [`crate::kafka::output::KafkaSink`]: documents to per-dataset topics, dead letters to the DLQ topic.
//! - [`elasticsearch::ElasticsearchSink`]: `_bulk` `create` into data streams, per-item retries.

pub mod elasticsearch;
pub mod es_setup;

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

/// Why a sink could not deliver. The variant decides whether trying again later can help.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination kept failing (unreachable, overloaded) past the retry budget. The frame
    /// is not settled, so its source reads it again after a restart.
    #[error("{0}")]
    GaveUp(String),
    /// The sink was stopped before the output was delivered.
    #[error("sink stopped: {0}")]
    Stopped(String),
    /// Writing a local output (stdout, file) failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// Refused in a way that will not change by waiting (configuration, protocol).
    #[error("{0}")]
    Fatal(String),
}

impl SinkError {
    /// Whether the same output may succeed later (after a restart or a wait).
    pub fn is_retriable(&self) -> bool {
        matches!(self, SinkError::GaveUp(_) | SinkError::Stopped(_))
    }
}

/// Resolves with an output's final state. Local sinks answer at once ([`Ack::ready`]); remote
/// ones later ([`Ack::later`]).
pub enum Ack {
    Ready(Option<Result<Delivery, SinkError>>),
    Later(Pin<Box<dyn Future<Output = Result<Delivery, SinkError>> + Send>>),
}

impl Ack {
    pub fn ready(r: Result<Delivery, SinkError>) -> Ack {
        Ack::Ready(Some(r))
    }

    pub fn later(f: impl Future<Output = Result<Delivery, SinkError>> + Send + 'static) -> Ack {
        Ack::Later(Box::pin(f))
    }

    /// The verdict, if it is already known (without waiting).
    pub fn try_take(&mut self) -> Option<Result<Delivery, SinkError>> {
        use futures_util::FutureExt;
        match self {
            Ack::Ready(r) => r.take(),
            Ack::Later(f) => f.as_mut().now_or_never(),
        }
    }
}

impl Future for Ack {
    type Output = Result<Delivery, SinkError>;
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Ack::Ready(r) => std::task::Poll::Ready(
                r.take()
                    .unwrap_or_else(|| Err(SinkError::Fatal("acknowledgement taken twice".into()))),
            ),
            Ack::Later(f) => f.as_mut().poll(cx),
        }
    }
}

pub trait Sink {
    /// Hand over an output. May wait (backpressure) before returning the acknowledgement.
    fn send(&self, out: Output<'_>) -> impl Future<Output = Result<Ack, SinkError>>;
    /// Push out anything buffered; called on shutdown after every `Ack` resolved.
    fn flush(&self) -> Result<(), SinkError>;
    /// Push buffered outputs through to the operating system, so that the `Accepted`
    /// acknowledgements given so far hold if this process is killed. The core calls it after
    /// each batch, before it settles the batch's frames.
    fn write_through(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Documents to one sink, dead-letter records to another (e.g. Elasticsearch and a Kafka DLQ
/// topic).
pub struct Routed<D, L> {
    pub docs: D,
    pub dead: L,
}

impl<D: Sink, L: Sink> Sink for Routed<D, L> {
    async fn send(&self, out: Output<'_>) -> Result<Ack, SinkError> {
        if out.dataset.is_some() {
            self.docs.send(out).await
        } else {
            self.dead.send(out).await
        }
    }

    fn flush(&self) -> Result<(), SinkError> {
        self.docs.flush()?;
        self.dead.flush()
    }

    fn write_through(&self) -> Result<(), SinkError> {
        self.docs.write_through()?;
        self.dead.write_through()
    }
}

/// Open an NDJSON output file for appending: what earlier runs wrote stays. A last line cut
/// short by a crash (no newline) is removed first — its document was never acknowledged, so it
/// is written again whole — and the next document starts on a line of its own.
pub fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len == 0 || !f.metadata()?.is_file() {
        return Ok(f);
    }
    // Walk back from the end to the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    let keep = loop {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            break start + i as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    if keep < len {
        tracing::warn!(
            file = %path.display(),
            bytes = len - keep,
            "removing a last line cut short (a crash while writing); its document is written again"
        );
        f.set_len(keep)?;
    }
    Ok(f)
}

/// NDJSON to a writer (stdout or a file), one line per output; dead letters to their own
/// writer when one is given, else in line with the documents. Accepted once written to the
/// buffer; [`Sink::write_through`] hands the buffer to the operating system before the core
/// settles the frames.
pub struct WriterSink {
    docs: std::sync::Mutex<Box<dyn std::io::Write + Send>>,
    dead: Option<std::sync::Mutex<Box<dyn std::io::Write + Send>>>,
}

impl WriterSink {
    pub fn new(docs: Box<dyn std::io::Write + Send>, dead: Option<Box<dyn std::io::Write + Send>>) -> Self {
        WriterSink {
            docs: std::sync::Mutex::new(docs),
            dead: dead.map(std::sync::Mutex::new),
        }
    }

    fn write(&self, dead: bool, body: &[u8]) -> std::io::Result<()> {
        let w = match (&self.dead, dead) {
            (Some(d), true) => d,
            _ => &self.docs,
        };
        let mut w = w.lock().map_err(|_| std::io::Error::other("output lock poisoned"))?;
        w.write_all(body)?;
        w.write_all(b"\n")
    }

    fn flush_all(&self) -> std::io::Result<()> {
        for w in std::iter::once(&self.docs).chain(self.dead.as_ref()) {
            w.lock()
                .map_err(|_| std::io::Error::other("output lock poisoned"))?
                .flush()?;
        }
        Ok(())
    }
}

impl Sink for WriterSink {
    async fn send(&self, out: Output<'_>) -> Result<Ack, SinkError> {
        self.write(out.dataset.is_none(), out.body)?;
        Ok(Ack::ready(Ok(Delivery::Accepted)))
    }

    fn flush(&self) -> Result<(), SinkError> {
        Ok(self.flush_all()?)
    }

    fn write_through(&self) -> Result<(), SinkError> {
        Ok(self.flush_all()?)
    }
}

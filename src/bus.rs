//! Frames on their way from a source to the pipeline core: the bytes as received, what
//! parsing needs and cannot be recovered later (receive time, peer, input kind, source name and
//! line, time zone, W3C columns), and an acknowledgement [`Token`] the core settles once the
//! frame's output has a final verdict. The channel is bounded, so a slow core slows the sources
//! down instead of growing memory.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::parse::W3cFields;

/// One frame as received, plus what cannot be recovered later.
#[derive(Clone)]
pub struct RawFrame {
    pub bytes: Bytes,
    /// Receive time, epoch ms.
    pub received_ms: i64,
    /// `tcp`, `tls`, `udp`, `file`, `stdin`, `kafka`, ...
    pub input: &'static str,
    /// Sender `ip:port`.
    pub peer: Option<Arc<str>>,
    /// Set when the frame was longer than the limit and cut: its full length.
    pub truncated_from: Option<usize>,
    /// The limit a cut frame ran into, as the user sets it (for the dead-letter reason).
    pub limit_name: &'static str,
    /// File path, object key or pull file name.
    pub source: Option<Arc<str>>,
    /// Byte offset (tailed line files) or line number (whole Imperva files) in the source.
    pub offset: Option<u64>,
    /// Time zone of the sender's device clock, when the receiving side knows it.
    pub tz: Option<Arc<str>>,
    /// Columns of a W3C line (from its file's header or `#Fields:` directive).
    pub w3c: Option<Arc<W3cFields>>,
    /// Where this occurrence came from, when the source has no file position: the raw-topic
    /// partition and offset (worker), or the receive order (live sockets in `run`). Mixed into
    /// the document id, so two identical events are two documents while a redelivery of one is
    /// still the same document.
    pub occurrence: Option<u64>,
    /// Set when the source already knows the frame cannot be mapped (e.g. an Imperva file
    /// that does not open): the frame goes to the dead-letter output with this reason.
    pub refused: Option<Arc<str>>,
    /// The sender's name for the kind of event (HEC `sourcetype`).
    pub sourcetype: Option<Arc<str>>,
    /// The event's time as its sender stated it (HEC `time`), epoch ms.
    pub time_ms: Option<i64>,
    /// Settled by the core once the frame's output is accepted downstream.
    pub token: Token,
}

impl Default for RawFrame {
    fn default() -> Self {
        RawFrame {
            bytes: Bytes::new(),
            received_ms: 0,
            input: "",
            peer: None,
            truncated_from: None,
            limit_name: "max_message_bytes",
            source: None,
            offset: None,
            tz: None,
            w3c: None,
            occurrence: None,
            refused: None,
            sourcetype: None,
            time_ms: None,
            token: Token::none(),
        }
    }
}

impl std::fmt::Debug for RawFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawFrame")
            .field("len", &self.bytes.len())
            .field("input", &self.input)
            .field("source", &self.source)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl RawFrame {
    /// Why the frame cannot be mapped, when the source already knows.
    pub fn refusal(&self) -> Option<String> {
        if let Some(r) = &self.refused {
            return Some(r.to_string());
        }
        self.truncated_from.map(|len| {
            format!(
                "message of {len} bytes exceeds {} {}; cut",
                self.limit_name,
                self.bytes.len()
            )
        })
    }
}

/// Where a source keeps its progress: told, in order, each position whose frame is done.
pub trait Progress: Send + Sync {
    /// Every frame up to and including `pos` has been delivered (or dead-lettered) for good.
    fn done(&self, pos: u64);
}

/// A frame's acknowledgement: the source's progress and the frame's position in it. Sources
/// without progress to keep (sockets, stdin) send [`Token::none`].
#[derive(Clone, Default)]
pub struct Token(Option<(Arc<dyn Progress>, u64)>);

impl Token {
    pub fn none() -> Token {
        Token(None)
    }

    pub fn new(progress: Arc<dyn Progress>, pos: u64) -> Token {
        Token(Some((progress, pos)))
    }

    /// The frame is done: advance its source's progress.
    pub fn settle(self) {
        if let Some((p, pos)) = self.0 {
            p.done(pos);
        }
    }
}

/// Frames travel in batches: one channel operation (and at most one wake-up of the core) per
/// batch instead of per frame. A source batches what it has at hand — the frames of one read, of
/// one poll — and sends it before it waits for more, so batching adds no latency.
pub type Batch = Vec<RawFrame>;
pub type Sender = mpsc::Sender<Batch>;
pub type Receiver = mpsc::Receiver<Batch>;

/// Most frames a source puts in one batch.
pub const BATCH: usize = 256;

/// A bounded bus holding about `capacity` frames: `capacity / BATCH` batches (at least 4).
/// Under load batches are full, so the bound holds; a trickle of one-frame batches holds less.
pub fn channel(capacity: usize) -> (Sender, Receiver) {
    mpsc::channel((capacity / BATCH).max(4))
}

/// Collects a source's frames into batches of up to [`BATCH`].
pub struct Batcher {
    tx: Sender,
    buf: Batch,
}

/// The core is gone (shutting down).
#[derive(Debug)]
pub struct Closed;

impl Batcher {
    pub fn new(tx: Sender) -> Self {
        Batcher {
            tx,
            buf: Vec::with_capacity(BATCH),
        }
    }

    /// Add a frame; a full batch is sent (waiting for room: backpressure).
    pub async fn push(&mut self, f: RawFrame) -> Result<(), Closed> {
        self.buf.push(f);
        if self.buf.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Send what is batched (call before waiting for more input).
    pub async fn flush(&mut self) -> Result<(), Closed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH));
        self.tx.send(b).await.map_err(|_| Closed)
    }

    /// [`Batcher::push`] from a thread outside the runtime.
    pub fn push_blocking(&mut self, f: RawFrame) -> Result<(), Closed> {
        self.buf.push(f);
        if self.buf.len() >= BATCH {
            self.flush_blocking()?;
        }
        Ok(())
    }

    /// Add a frame without sending anything (see [`Batcher::pending`]).
    pub fn hold(&mut self, f: RawFrame) {
        self.buf.push(f);
    }

    /// Frames batched and not yet sent.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// [`Batcher::flush_blocking`] for a source that must keep doing something while the core
    /// has no room (a Kafka consumer keeps polling to stay in its group): `wait` is called
    /// between attempts for as long as the channel is full.
    pub fn flush_waiting(&mut self, mut wait: impl FnMut()) -> Result<(), Closed> {
        use tokio::sync::mpsc::error::TrySendError;
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut b = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH));
        loop {
            match self.tx.try_send(b) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Err(Closed),
                Err(TrySendError::Full(back)) => {
                    b = back;
                    wait();
                }
            }
        }
    }

    /// [`Batcher::flush`] from a thread outside the runtime.
    pub fn flush_blocking(&mut self) -> Result<(), Closed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH));
        self.tx.blocking_send(b).map_err(|_| Closed)
    }
}

/// A receive-order occurrence key, unique within this process and (by its start time) across
/// restarts: for frames from live senders, which are never redelivered.
pub fn next_occurrence() -> u64 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: OnceLock<u64> = OnceLock::new();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    xxhash_rust::xxh3::xxh3_64(&[start.to_le_bytes(), seq.to_le_bytes()].concat())
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

//! The in-memory bus of the embedded `run` mode: raw frames with the facts the raw-topic
//! contract carries (receive time, peer, input kind), in a bounded channel so a slow worker
//! slows the ingress down instead of growing memory.

use bytes::Bytes;
use tokio::sync::mpsc;

/// One frame as received, plus what cannot be recovered later.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub bytes: Bytes,
    /// Receive time, epoch ms.
    pub received_ms: i64,
    /// `tcp`, `tls`, `udp` or `file`.
    pub input: &'static str,
    /// Sender `ip:port`.
    pub peer: Option<String>,
    /// Set when the frame was longer than the limit and cut: its full length.
    pub truncated_from: Option<usize>,
    /// File path, for file inputs.
    pub source: Option<std::sync::Arc<str>>,
    /// Byte offset of the line in its file, for file inputs.
    pub offset: Option<u64>,
}

pub type Sender = mpsc::Sender<RawFrame>;
pub type Receiver = mpsc::Receiver<RawFrame>;

/// A bounded bus of `capacity` frames.
pub fn channel(capacity: usize) -> (Sender, Receiver) {
    mpsc::channel(capacity.max(1))
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

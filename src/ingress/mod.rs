//! Ingress: syslog over TCP and TLS (newline or octet-counted, detected per connection), UDP
//! (one datagram, one frame) and files ([`files`]: glob, tail, rotation, checkpoints). It only cuts frames and hands them to the bus; no parsing here.
//!
//! Caps: message size (cut and flagged, never silently dropped), concurrent connections (a
//! semaphore; further clients wait in the listen backlog), idle connections (closed). A full
//! bus makes TCP stop reading (backpressure to the sender); UDP cannot wait, so a datagram that
//! finds the bus full is dropped and counted.

pub mod files;
pub mod framing;
pub mod hec;
pub mod imperva_file;
pub mod lines;
pub mod pull;
pub mod s3;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, watch};

use crate::bus::{Batcher, RawFrame, Sender, now_ms};
use framing::{Framer, Mode};

/// Ingress limits (defaults match what SecureSphere users configure).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// At shutdown, how long open connections keep being read (until their sender closes).
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 50 * 1024,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            drain: Duration::from_secs(15),
        }
    }
}

/// Progress a collector saves once more after the pipeline has drained (what was settled
/// during the drain).
pub trait Saver: Send + Sync {
    fn save(&self) -> Result<(), files::CheckpointError>;
}

/// A source that cannot go on (credentials refused): the process stops as on SIGTERM, drains,
/// and exits non-zero with this reason.
#[derive(Default)]
pub struct Fatal {
    reason: std::sync::Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Fatal {
    /// Record the first reason and wake [`Fatal::wait`].
    pub fn set(&self, reason: String) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            tracing::error!(%reason, "stopping");
            *r = Some(reason);
            self.notify.notify_one();
        }
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Resolves once a reason is set.
    pub async fn wait(&self) {
        loop {
            if self.reason().is_some() {
                return;
            }
            self.notify.notified().await;
        }
    }
}

/// Counters the ingress keeps.
#[derive(Debug, Default)]
pub struct Stats {
    pub frames: AtomicU64,
    pub truncated: AtomicU64,
    pub udp_dropped: AtomicU64,
    pub connections: AtomicU64,
    pub framing_errors: AtomicU64,
    pub idle_closed: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    /// Connections closed at the connection limit to make room for a new one (the longest idle).
    pub evicted: AtomicU64,
    /// New connections refused at the limit (no connection could make room).
    pub refused: AtomicU64,
    /// Connections still open when the shutdown drain ended (closed by us).
    pub drain_closed: AtomicU64,
    /// Connections whose sender closed in the middle of an octet-counted message.
    pub cut_frames: AtomicU64,
    /// Whole Imperva (or gzip) files read.
    pub whole_files: AtomicU64,
    /// Whole files whose body did not match the header's checksum (events kept).
    pub checksum_mismatches: AtomicU64,
}

impl crate::telemetry::Source for Stats {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        out.counters(&[
            (
                "wafstream_ingress_frames_total",
                "Frames received on every input.",
                &self.frames,
            ),
            (
                "wafstream_ingress_truncated_total",
                "Frames longer than max_message_bytes (cut and dead-lettered).",
                &self.truncated,
            ),
            (
                "wafstream_ingress_udp_dropped_total",
                "UDP datagrams dropped because the bus was full.",
                &self.udp_dropped,
            ),
            (
                "wafstream_ingress_connections_total",
                "TCP and TLS connections accepted.",
                &self.connections,
            ),
            (
                "wafstream_ingress_framing_errors_total",
                "Connections closed on a framing error.",
                &self.framing_errors,
            ),
            (
                "wafstream_ingress_idle_closed_total",
                "Connections closed after the idle timeout.",
                &self.idle_closed,
            ),
            (
                "wafstream_ingress_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
                &self.tls_handshake_failures,
            ),
            (
                "wafstream_ingress_evicted_total",
                "Connections closed at the connection limit to admit a new one (the one idle the longest).",
                &self.evicted,
            ),
            (
                "wafstream_ingress_refused_total",
                "New connections refused at the connection limit.",
                &self.refused,
            ),
            (
                "wafstream_ingress_drain_closed_total",
                "Connections still open when the shutdown drain ended (closed by wafstream).",
                &self.drain_closed,
            ),
            (
                "wafstream_ingress_cut_frames_total",
                "Octet-counted messages cut short by the sender closing (dead-lettered with what arrived).",
                &self.cut_frames,
            ),
            (
                "wafstream_ingress_whole_files_total",
                "Whole Imperva (or gzip) files read.",
                &self.whole_files,
            ),
            (
                "wafstream_ingress_checksum_mismatches_total",
                "Whole files whose body did not match the header's checksum (events kept).",
                &self.checksum_mismatches,
            ),
        ]);
    }
}

/// One open connection, as the accept loop sees it.
pub struct Conn {
    id: u64,
    /// Milliseconds since the listener started, at the connection's last read.
    last: AtomicU64,
    started: tokio::time::Instant,
    evict: tokio::sync::Notify,
}

impl Conn {
    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// The open connections of a listener, to find the one idle the longest.
#[derive(Clone, Default)]
struct Conns(Arc<std::sync::Mutex<(u64, Vec<Arc<Conn>>)>>);

impl Conns {
    fn add(&self, started: tokio::time::Instant) -> Arc<Conn> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let c = Arc::new(Conn {
            id: g.0,
            last: AtomicU64::new(started.elapsed().as_millis() as u64),
            started,
            evict: tokio::sync::Notify::new(),
        });
        g.1.push(c.clone());
        c
    }

    fn remove(&self, c: &Conn) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.1.retain(|x| x.id != c.id);
    }

    /// Ask the connection idle the longest to close (counted; logged at most once a minute).
    fn evict_longest_idle(&self, stats: &Stats, newcomer: SocketAddr) {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = g.1.iter().min_by_key(|c| c.last.load(Ordering::Relaxed)) else {
            return;
        };
        c.evict.notify_one();
        let n = stats.evicted.fetch_add(1, Ordering::Relaxed);
        static LAST_LOG: AtomicU64 = AtomicU64::new(0);
        let now = c.started.elapsed().as_secs();
        if n == 0 || now >= LAST_LOG.load(Ordering::Relaxed) + 60 {
            LAST_LOG.store(now, Ordering::Relaxed);
            tracing::warn!(%newcomer, evicted_so_far = n + 1, "connection limit reached: closing the connection idle the longest");
        }
    }
}

/// Accept TCP connections until `shutdown` turns true; each connection is framed and forwarded.
pub async fn serve_tcp(
    listener: TcpListener,
    bus: Sender,
    limits: Limits,
    stats: Arc<Stats>,
    shutdown: watch::Receiver<bool>,
) {
    serve(listener, None, bus, limits, stats, shutdown).await
}

/// As [`serve_tcp`], with a TLS handshake (capped by `handshake_timeout`) first.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    bus: Sender,
    limits: Limits,
    stats: Arc<Stats>,
    shutdown: watch::Receiver<bool>,
) {
    serve(
        listener,
        Some((acceptor, handshake_timeout)),
        bus,
        limits,
        stats,
        shutdown,
    )
    .await
}

async fn serve(
    listener: TcpListener,
    tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
    bus: Sender,
    limits: Limits,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let conns = Conns::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut accept_errors = 0u32;
    let started = tokio::time::Instant::now();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    accept_errors = 0;
                    x
                }
                Err(e) => {
                    // E.g. EMFILE: retrying at once would spin; back off, growing to 1 s.
                    accept_errors = (accept_errors + 1).min(10);
                    if accept_errors == 1 {
                        tracing::warn!(error = %e, "accept failed; backing off");
                    }
                    tokio::time::sleep(Duration::from_millis(10 << accept_errors.min(6))).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // At the limit, the connection idle the longest makes room (a slow trickle of idle
        // connections must not lock every new sender out).
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                conns.evict_longest_idle(&stats, peer);
                match tokio::time::timeout(Duration::from_secs(5), permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, "connection limit reached and no connection could make room; refused");
                        continue;
                    }
                }
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let conn = conns.add(started);
        let (bus, limits, stats, sd, tls, conns) = (
            bus.clone(),
            limits.clone(),
            stats.clone(),
            shutdown.clone(),
            tls.clone(),
            conns.clone(),
        );
        tasks.spawn(async move {
            let c = conn.clone();
            match tls {
                None => connection(stream, "tcp", peer, bus, limits, stats, sd, c).await,
                Some((acceptor, timeout)) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => connection(s, "tls", peer, bus, limits, stats, sd, c).await,
                    Ok(Err(e)) => {
                        stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, "TLS handshake timed out");
                    }
                },
            }
            conns.remove(&conn);
            drop(permit);
        });
    }
    // Stop accepting; let open connections finish what they already received.
    while tasks.join_next().await.is_some() {}
}

#[allow(clippy::too_many_arguments)]
async fn connection<S: AsyncRead + Unpin>(
    mut stream: S,
    input: &'static str,
    peer: SocketAddr,
    bus: Sender,
    limits: Limits,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
    conn: Arc<Conn>,
) {
    let mut framer = Framer::new(Mode::Auto, limits.max_message_bytes);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let peer_s: Arc<str> = peer.to_string().into();
    // Every frame of this connection: its bytes, and the length it had when it was cut.
    let frame_of = |f: framing::Frame| RawFrame {
        bytes: f.bytes,
        received_ms: now_ms(),
        input,
        peer: Some(peer_s.clone()),
        occurrence: Some(crate::bus::next_occurrence()),
        truncated_from: f.truncated.then_some(f.original_len),
        ..RawFrame::default()
    };
    let mut bus = Batcher::new(bus);
    // At shutdown the connection keeps being read until its sender closes or the drain ends:
    // what a sender wrote before it saw the shutdown is not lost.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let wait = match drain_until {
            Some(d) => d
                .saturating_duration_since(tokio::time::Instant::now())
                .min(limits.idle_timeout),
            None => limits.idle_timeout,
        };
        let read = tokio::select! {
            r = tokio::time::timeout(wait, stream.read_buf(&mut buf)) => r,
            _ = shutdown.changed(), if drain_until.is_none() => {
                drain_until = Some(tokio::time::Instant::now() + limits.drain);
                continue;
            }
            // Closed to make room for a new sender: what it sent is kept, as at any close.
            _ = conn.evict.notified() => Ok(Ok(0)),
        };
        conn.touch();
        let eof = match read {
            Err(_) if drain_until.is_some() => {
                stats.drain_closed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "shutdown: connection still open at the end of the drain; closing it");
                true
            }
            Err(_) => {
                stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(Ok(0)) => true,
            Ok(Ok(_)) => false,
            Ok(Err(_)) => true,
        };
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(f)) => {
                    if f.truncated {
                        stats.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.frames.fetch_add(1, Ordering::Relaxed);
                    let frame = frame_of(f);
                    // Waiting here is the backpressure: we stop reading this socket.
                    if bus.push(frame).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    stats.framing_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %e, "framing error; closing the connection");
                    let _ = bus.flush().await;
                    return;
                }
            }
        }
        // Everything this read gave goes out before the next read waits.
        if bus.flush().await.is_err() {
            return;
        }
        if eof {
            // What the sender left: a last message without its newline, or a message cut short.
            let frame = match framer.finish(&mut buf) {
                None => None,
                Some(Ok(f)) => {
                    if f.truncated {
                        stats.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(frame_of(f))
                }
                Some(Err(p)) => {
                    stats.cut_frames.fetch_add(1, Ordering::Relaxed);
                    let reason = format!(
                        "octet-counted message announced {} bytes; the connection closed after {}",
                        p.declared,
                        p.bytes.len()
                    );
                    tracing::warn!(%peer, "{reason}");
                    let len = p.bytes.len();
                    Some(RawFrame {
                        refused: Some(reason.into()),
                        ..frame_of(framing::Frame {
                            bytes: p.bytes,
                            truncated: false,
                            original_len: len,
                        })
                    })
                }
            };
            if let Some(f) = frame {
                stats.frames.fetch_add(1, Ordering::Relaxed);
                let _ = bus.push(f).await;
            }
            let _ = bus.flush().await;
            return;
        }
    }
}

/// Receive UDP datagrams until `shutdown`; one datagram is one frame. UDP cannot wait, so
/// datagrams go to a queue of their own (`queue`, see [`udp_queue`]) that a TCP burst filling
/// the shared bus does not fill; what arrives while that queue is full is dropped and counted.
/// Datagrams that are already waiting in the socket are taken together, as one batch.
pub async fn serve_udp(
    socket: UdpSocket,
    queue: Sender,
    limits: Limits,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let first = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let mut batch = vec![udp_frame(&buf, first, &limits, &stats)];
        while batch.len() < crate::bus::BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok(got) => batch.push(udp_frame(&buf, got, &limits, &stats)),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        if queue.try_send(batch).is_err() {
            stats.udp_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn udp_frame(buf: &[u8], (n, peer): (usize, SocketAddr), limits: &Limits, stats: &Stats) -> RawFrame {
    let mut end = n;
    while end > 0 && matches!(buf[end - 1], b'\n' | b'\r' | 0) {
        end -= 1;
    }
    let cut = end > limits.max_message_bytes;
    let keep = end.min(limits.max_message_bytes);
    stats.frames.fetch_add(1, Ordering::Relaxed);
    if cut {
        stats.truncated.fetch_add(1, Ordering::Relaxed);
    }
    RawFrame {
        bytes: bytes::Bytes::copy_from_slice(&buf[..keep]),
        received_ms: now_ms(),
        input: "udp",
        peer: Some(peer.to_string().into()),
        truncated_from: cut.then_some(end),
        occurrence: Some(crate::bus::next_occurrence()),
        ..RawFrame::default()
    }
}

/// UDP's own queue (`capacity` batches) and the task that moves its batches onto the bus,
/// waiting for room there; the task ends when the UDP listener is gone.
pub fn udp_queue(bus: Sender, capacity: usize) -> (Sender, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::bus::Batch>(capacity.max(1));
    let forward = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if bus.send(b).await.is_err() {
                return;
            }
        }
    });
    (tx, forward)
}

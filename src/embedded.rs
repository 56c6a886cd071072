//! The embedded pipeline (`wafstream run`): ingress and a parser worker in one process, joined
//! by the in-memory bus, writing NDJSON. No Kafka needed.
//!
//! Shutdown is ordered: stop accepting → connections finish → the bus drains → outputs flush.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::bus::{self, Receiver};
use crate::ecs::{FrameMeta, Mapper, Options};
use crate::ingress::{self, Limits, Stats};

/// Where documents and dead letters go.
pub struct Outputs {
    pub docs: Box<dyn Write + Send>,
    /// `None`: dead letters go to `docs`, in order.
    pub dlq: Option<Box<dyn Write + Send>>,
}

/// What a finished run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub documents: u64,
    pub dead_letters: u64,
}

/// The worker: frames from the bus → documents, until every sender is gone.
pub fn work(mut rx: Receiver, opts: Options, mut out: Outputs) -> io::Result<Summary> {
    let mapper = Mapper::new(opts);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut s = Summary::default();
    while let Some(frame) = rx.blocking_recv() {
        let meta = FrameMeta {
            received_ms: frame.received_ms,
            input: frame.input,
            source: frame.source.as_deref(),
            peer: frame.peer.as_deref(),
            offset: frame.offset,
            tz: None,
        };
        buf.clear();
        let dead = match frame.truncated_from {
            Some(len) => {
                let reason = format!(
                    "message of {len} bytes exceeds max_message_bytes {}; cut",
                    frame.bytes.len()
                );
                mapper.dead_letter(&frame.bytes, &meta, &reason, &mut buf);
                true
            }
            None => mapper.map(&frame.bytes, &meta, None, &mut buf).is_dead(),
        };
        buf.push(b'\n');
        if dead {
            s.dead_letters += 1;
            match out.dlq.as_mut() {
                Some(d) => d.write_all(&buf)?,
                None => out.docs.write_all(&buf)?,
            }
        } else {
            s.documents += 1;
            out.docs.write_all(&buf)?;
        }
        // Flush when the bus is momentarily empty: low latency when idle, batching when busy.
        if rx.is_empty() {
            out.docs.flush()?;
            if let Some(d) = out.dlq.as_mut() {
                d.flush()?;
            }
        }
    }
    out.docs.flush()?;
    if let Some(d) = out.dlq.as_mut() {
        d.flush()?;
    }
    Ok(s)
}

/// Listening addresses and sizes for [`run`].
#[derive(Clone)]
pub struct Config {
    pub tcp: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    /// Address, acceptor and handshake timeout of the TLS listener.
    pub tls: Option<(SocketAddr, tokio_rustls::TlsAcceptor, std::time::Duration)>,
    /// Files to follow.
    pub files: Option<ingress::files::Config>,
    pub limits: Limits,
    pub bus_capacity: usize,
}

/// Start the listeners feeding a new bus, hand the bus's receiving end to `consume`, run until
/// `shutdown`, then stop the listeners (closing the bus) and return what `consume` returned.
pub async fn listen<T>(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
    on_listen: impl Fn(&str, SocketAddr),
    consume: impl FnOnce(Receiver) -> T,
) -> anyhow::Result<(Arc<Stats>, T)> {
    let (tx, rx) = bus::channel(cfg.bus_capacity);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let mut tasks = Vec::new();
    if let Some(addr) = cfg.tcp {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding tcp {addr}: {e}"))?;
        on_listen("tcp", l.local_addr()?);
        tasks.push(tokio::spawn(ingress::serve_tcp(
            l,
            tx.clone(),
            cfg.limits.clone(),
            stats.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some((addr, acceptor, hs)) = cfg.tls.clone() {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding tls {addr}: {e}"))?;
        on_listen("tls", l.local_addr()?);
        tasks.push(tokio::spawn(ingress::serve_tls(
            l,
            acceptor,
            hs,
            tx.clone(),
            cfg.limits.clone(),
            stats.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(addr) = cfg.udp {
        let s = UdpSocket::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding udp {addr}: {e}"))?;
        on_listen("udp", s.local_addr()?);
        tasks.push(tokio::spawn(ingress::serve_udp(
            s,
            tx.clone(),
            cfg.limits.clone(),
            stats.clone(),
            stop_rx.clone(),
        )));
    }
    let files_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let files = match cfg.files.clone() {
        Some(fc) => {
            let (tx, stats, stop) = (tx.clone(), stats.clone(), files_stop.clone());
            Some(
                std::thread::Builder::new()
                    .name("wafstream-files".into())
                    .spawn(move || ingress::files::run(fc, tx, stats, stop))?,
            )
        }
        None => None,
    };
    drop(tx);
    let consumer = consume(rx);
    shutdown.await;
    let _ = stop_tx.send(true);
    files_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(h) = files {
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    Ok((stats, consumer))
}

/// Run until `shutdown` resolves, then drain and return the counts. `on_listen` is told the
/// bound addresses (port 0 picks a free one).
pub async fn run(
    cfg: Config,
    opts: Options,
    outputs: Outputs,
    shutdown: impl std::future::Future<Output = ()>,
    on_listen: impl Fn(&str, SocketAddr),
) -> anyhow::Result<(Summary, Arc<Stats>)> {
    let (stats, worker) = listen(cfg, shutdown, on_listen, |rx| {
        std::thread::Builder::new()
            .name("wafstream-worker".into())
            .spawn(move || work(rx, opts, outputs))
    })
    .await?;
    let summary = worker?
        .join()
        .map_err(|_| anyhow::anyhow!("worker thread panicked"))??;
    Ok((summary, stats))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One line for the operator at exit.
pub fn report(summary: &Summary, stats: &Stats) -> String {
    format!(
        "wafstream: {} documents, {} dead-lettered; {} frames ({} cut at the size limit), {} UDP datagrams dropped on a full bus, {} TCP/TLS connections, {} framing errors, {} TLS handshake failures",
        summary.documents,
        summary.dead_letters,
        stats.frames.load(Ordering::Relaxed),
        stats.truncated.load(Ordering::Relaxed),
        stats.udp_dropped.load(Ordering::Relaxed),
        stats.connections.load(Ordering::Relaxed),
        stats.framing_errors.load(Ordering::Relaxed),
        stats.tls_handshake_failures.load(Ordering::Relaxed),
    )
}

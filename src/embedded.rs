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
    /// Documents to Elasticsearch instead of `docs` (the sink runs on the given runtime).
    pub es: Option<(crate::sink::elasticsearch::ElasticsearchSink, tokio::runtime::Handle)>,
}

/// A document waiting for Elasticsearch's verdict (a refusal hands the document back).
struct Waiting {
    ack: crate::sink::Ack,
}

/// Most documents waiting for Elasticsearch before the worker waits for them.
const ES_WINDOW: usize = 10_000;

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
    let mut waiting: std::collections::VecDeque<Waiting> = std::collections::VecDeque::new();
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
        let mapped = match frame.truncated_from {
            Some(len) => {
                let reason = format!(
                    "message of {len} bytes exceeds max_message_bytes {}; cut",
                    frame.bytes.len()
                );
                mapper.dead_letter(&frame.bytes, &meta, &reason, &mut buf)
            }
            None => mapper.map(&frame.bytes, &meta, None, &mut buf),
        };
        let dead = mapped.is_dead();
        if let (false, Some((sink, rt))) = (dead, out.es.as_ref()) {
            use crate::sink::Sink;
            let o = crate::sink::Output {
                dataset: mapped.dataset,
                id: &mapped.id,
                body: &buf,
                error: None,
            };
            match rt.block_on(sink.send(o)) {
                Ok(ack) => waiting.push_back(Waiting { ack }),
                Err(e) => return Err(io::Error::other(e)),
            }
            s.documents += 1;
            let full = waiting.len() >= ES_WINDOW;
            settle(&mut waiting, &mapper, &mut out, &mut s, full)?;
        } else {
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
        }
        // Flush when the bus is momentarily empty: low latency when idle, batching when busy.
        // Elasticsearch verdicts still pending are awaited first, so refusals show promptly.
        while rx.is_empty() && !waiting.is_empty() {
            settle(&mut waiting, &mapper, &mut out, &mut s, true)?;
        }
        if rx.is_empty() {
            out.docs.flush()?;
            if let Some(d) = out.dlq.as_mut() {
                d.flush()?;
            }
        }
    }
    while !waiting.is_empty() {
        settle(&mut waiting, &mapper, &mut out, &mut s, true)?;
    }
    out.docs.flush()?;
    if let Some(d) = out.dlq.as_mut() {
        d.flush()?;
    }
    Ok(s)
}

/// Settle Elasticsearch acknowledgements from the front: finished ones, or (with `wait`) the
/// oldest. A refused document, or one Elasticsearch never took, becomes a dead letter.
fn settle(
    waiting: &mut std::collections::VecDeque<Waiting>,
    mapper: &Mapper,
    out: &mut Outputs,
    s: &mut Summary,
    mut wait: bool,
) -> io::Result<()> {
    use futures_util::FutureExt;
    while let Some(front) = waiting.front_mut() {
        let result = if wait {
            let Some((_, rt)) = out.es.as_ref() else { return Ok(()) };
            rt.block_on(&mut front.ack)
        } else {
            match (&mut front.ack).now_or_never() {
                Some(r) => r,
                None => return Ok(()),
            }
        };
        waiting.pop_front();
        wait = false;
        let (reason, body) = match result {
            Ok(crate::sink::Delivery::Accepted) => continue,
            Ok(crate::sink::Delivery::Rejected { reason, body }) => (reason, body),
            Err(e) => (format!("elasticsearch did not take the document: {e}"), Vec::new()),
        };
        s.documents -= 1;
        s.dead_letters += 1;
        let meta = FrameMeta {
            received_ms: crate::bus::now_ms(),
            input: "sink",
            ..FrameMeta::default()
        };
        let mut dead = Vec::with_capacity(body.len() + 256);
        mapper.dead_letter(&body, &meta, &reason, &mut dead);
        dead.push(b'\n');
        match out.dlq.as_mut() {
            Some(d) => d.write_all(&dead)?,
            None => out.docs.write_all(&dead)?,
        }
    }
    Ok(())
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
    crate::telemetry::global().set_ingress(stats.clone());
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

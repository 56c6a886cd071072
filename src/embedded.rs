//! The sources of `run` and `ingress` (syslog TCP/UDP/TLS listeners and file inputs) feeding
//! one bus, and the embedded pipeline (`wafstream run`): those sources → the pipeline core →
//! a sink, in one process. No Kafka needed.
//!
//! Shutdown is ordered: stop accepting → connections finish → the bus drains → every output
//! is acknowledged → the file checkpoint is saved a last time → outputs flush.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::bus::{self, Receiver};
use crate::ecs::Options;
use crate::ingress::{self, Limits, Stats};
use crate::pipeline::{self, Summary};
use crate::sink::Sink;

/// Listening addresses and sizes of the sources.
#[derive(Clone)]
pub struct Config {
    pub tcp: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    /// Address, acceptor and handshake timeout of the TLS listener.
    pub tls: Option<(SocketAddr, tokio_rustls::TlsAcceptor, std::time::Duration)>,
    /// Files to follow.
    pub files: Option<ingress::files::Config>,
    /// Cloud WAF log API accounts to collect from.
    pub pull: Option<ingress::pull::Config>,
    /// S3 bucket (Imperva's push to a bucket) to collect from.
    pub s3: Option<ingress::s3::Config>,
    /// The Splunk-HEC-compatible push receiver.
    pub hec: Option<ingress::hec::Config>,
    pub limits: Limits,
    pub bus_capacity: usize,
}

/// Running sources; [`Sources::stop`] ends them.
pub struct Sources {
    pub stats: Arc<Stats>,
    stop_tx: watch::Sender<bool>,
    files_stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    files: Option<std::thread::JoinHandle<ingress::files::FinalSave>>,
    /// Collectors' progress, saved again after the drain.
    savers: Vec<Arc<dyn ingress::Saver>>,
    /// Set by a source that cannot go on: the process stops and exits non-zero.
    pub fatal: Arc<ingress::Fatal>,
    listening: Arc<AtomicBool>,
}

/// Progress to save once the pipeline has settled what the sources sent.
pub struct Saved {
    files: Option<ingress::files::FinalSave>,
    savers: Vec<Arc<dyn ingress::Saver>>,
}

impl Saved {
    pub fn save(&self) -> Result<(), ingress::files::CheckpointError> {
        if let Some(f) = &self.files {
            f.save()?;
        }
        for s in &self.savers {
            s.save()?;
        }
        Ok(())
    }
}

impl Sources {
    /// Stop accepting and reading, let open connections hand over what they received, and
    /// return the file progress to save once the pipeline has settled it.
    pub async fn stop(self) -> Saved {
        // Not ready any more: a load balancer stops sending new connections here.
        self.listening.store(false, Ordering::Relaxed);
        let _ = self.stop_tx.send(true);
        self.files_stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let files = match self.files {
            Some(h) => tokio::task::spawn_blocking(move || h.join().ok()).await.ok().flatten(),
            None => None,
        };
        Saved {
            files,
            savers: self.savers,
        }
    }
}

/// Bind the listeners and start the file reader, all feeding a new bus. A checkpoint that
/// cannot be read is an error here, before anything is read.
pub async fn start(cfg: Config, on_listen: impl Fn(&str, SocketAddr)) -> anyhow::Result<(Sources, Receiver)> {
    let (tx, rx) = bus::channel(cfg.bus_capacity);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    crate::telemetry::global().register("ingress", stats.clone());
    let listening = crate::telemetry::global().readiness("listening");
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
        // Its own queue, a quarter of the bus's frames in batches of any size.
        let (queue, forward) = ingress::udp_queue(tx.clone(), (cfg.bus_capacity / 4).max(1024));
        tasks.push(forward);
        tasks.push(tokio::spawn(ingress::serve_udp(
            s,
            queue,
            cfg.limits.clone(),
            stats.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(hc) = cfg.hec.clone() {
        let l = TcpListener::bind(hc.addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding hec {}: {e}", hc.addr))?;
        on_listen("hec", l.local_addr()?);
        let hec_stats = Arc::new(ingress::hec::Stats::default());
        crate::telemetry::global().register("hec", hec_stats.clone());
        tasks.push(tokio::spawn(ingress::hec::serve(
            l,
            hc,
            tx.clone(),
            hec_stats,
            stats.clone(),
            stop_rx.clone(),
        )));
    }
    let files_stop = Arc::new(AtomicBool::new(false));
    let files = match cfg.files.clone() {
        Some(fc) => {
            let cps = ingress::files::load(fc.checkpoint.as_deref())?;
            let (tx, stats, stop) = (tx.clone(), stats.clone(), files_stop.clone());
            Some(
                std::thread::Builder::new()
                    .name("wafstream-files".into())
                    .spawn(move || ingress::files::run(fc, cps, tx, stats, stop))?,
            )
        }
        None => None,
    };
    let fatal = Arc::new(ingress::Fatal::default());
    let mut savers: Vec<Arc<dyn ingress::Saver>> = Vec::new();
    if let Some(pc) = cfg.pull.clone() {
        let (progress, t) = ingress::pull::start(pc, tx.clone(), stats.clone(), stop_rx.clone(), fatal.clone())?;
        savers.push(progress);
        tasks.extend(t);
    }
    if let Some(sc) = cfg.s3.clone() {
        let (progress, t) = ingress::s3::start(sc, tx.clone(), stats.clone(), stop_rx.clone(), fatal.clone())?;
        savers.push(progress);
        tasks.extend(t);
    }
    listening.store(true, Ordering::Relaxed);
    Ok((
        Sources {
            stats,
            stop_tx,
            files_stop,
            tasks,
            files,
            savers,
            fatal,
            listening,
        },
        rx,
    ))
}

/// Run `consume` over the bus until `shutdown` (or until `consume` ends on its own, e.g. with
/// an error), then stop the sources, let `consume` drain, and save the file checkpoint.
pub async fn drive<T>(
    sources: Sources,
    shutdown: impl std::future::Future<Output = ()>,
    consume: impl std::future::Future<Output = T>,
    drain_timeout: std::time::Duration,
) -> anyhow::Result<T> {
    let drain = pipeline::Drain {
        timeout: drain_timeout,
        interrupt: signal,
    };
    let fatal = sources.fatal.clone();
    let shutdown = async {
        tokio::select! {
            _ = shutdown => {}
            _ = fatal.wait() => {}
        }
    };
    let (out, saved) = pipeline::until(shutdown, consume, || sources.stop(), drain).await;
    // What was acknowledged is saved even when the drain was cut short.
    saved.save()?;
    let out = out.map_err(|a| {
        anyhow::anyhow!(
            "stopped before every output was delivered: {a}. Frames from files were not checkpointed past what was delivered and are read again at the next start; frames taken from network senders and not delivered are lost"
        )
    })?;
    match fatal.reason() {
        Some(why) => Err(anyhow::anyhow!("{why}")),
        None => Ok(out),
    }
}

/// Run until `shutdown` resolves, then drain and return the counts. `on_listen` is told the
/// bound addresses (port 0 picks a free one).
pub async fn run<S: Sink>(
    cfg: Config,
    opts: Options,
    settings: pipeline::Settings,
    sink: &S,
    shutdown: impl std::future::Future<Output = ()>,
    drain_timeout: std::time::Duration,
    on_listen: impl Fn(&str, SocketAddr),
) -> anyhow::Result<(Summary, Arc<Stats>)> {
    let (sources, rx) = start(cfg, on_listen).await?;
    let stats = sources.stats.clone();
    let summary = drive(
        sources,
        shutdown,
        pipeline::run(rx, opts, settings, sink),
        drain_timeout,
    )
    .await??;
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

/// `", N dropped by processors"` when any were.
pub fn dropped(n: u64) -> String {
    if n > 0 {
        format!(", {n} dropped by processors")
    } else {
        String::new()
    }
}

/// One line for the operator at exit.
pub fn report(summary: &Summary, stats: &Stats) -> String {
    format!(
        "wafstream: {} documents, {} dead-lettered{}; {} frames ({} cut at the size limit), {} UDP datagrams dropped on a full queue, {} TCP/TLS connections ({} closed at the limit to admit a new one, {} refused, {} still open at the end of the drain), {} framing errors ({} messages cut short by the sender), {} TLS handshake failures, {} whole files read ({} with a checksum mismatch)",
        summary.documents,
        summary.dead_letters,
        dropped(summary.dropped),
        stats.frames.load(Ordering::Relaxed),
        stats.truncated.load(Ordering::Relaxed),
        stats.udp_dropped.load(Ordering::Relaxed),
        stats.connections.load(Ordering::Relaxed),
        stats.evicted.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.drain_closed.load(Ordering::Relaxed),
        stats.framing_errors.load(Ordering::Relaxed),
        stats.cut_frames.load(Ordering::Relaxed),
        stats.tls_handshake_failures.load(Ordering::Relaxed),
        stats.whole_files.load(Ordering::Relaxed),
        stats.checksum_mismatches.load(Ordering::Relaxed),
    )
}

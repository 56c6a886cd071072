//! `wafstream run`: the embedded pipeline (see [`crate::embedded`]).

use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{IngressArgs, ListenArgs, RunArgs, WorkerArgs};
use crate::embedded::{self, Config};
use crate::ingress::Limits;
use crate::kafka::{self, ClientSettings};
use crate::sink::WriterSink;

fn addr(s: &str, what: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .with_context(|| format!("--listen-{what} {s:?}: expected ip:port or `off`"))
}

/// Listener settings; open connections get most of the drain timeout to finish at shutdown,
/// the rest is for delivering what they sent.
/// The pull connector's settings, when `--pull-url` is given.
fn pull_config(p: &super::PullArgs, l: &ListenArgs) -> anyhow::Result<Option<crate::ingress::pull::Config>> {
    if p.pull_urls.is_empty() {
        return Ok(None);
    }
    let n = p.pull_urls.len();
    if !p.pull_api_ids.is_empty() && p.pull_api_ids.len() != n {
        anyhow::bail!(
            "--pull-api-id: {} given for {n} --pull-url (one per account, in the same order)",
            p.pull_api_ids.len()
        );
    }
    let mut keys = p.pull_api_keys.clone();
    if !p.pull_api_key_files.is_empty() {
        if !keys.is_empty() {
            anyhow::bail!("give --pull-api-key or --pull-api-key-file, not both");
        }
        for f in &p.pull_api_key_files {
            let k =
                std::fs::read_to_string(f).with_context(|| format!("reading --pull-api-key-file {}", f.display()))?;
            keys.push(k.trim().to_string());
        }
    }
    if keys.len() != p.pull_api_ids.len() {
        anyhow::bail!(
            "--pull-api-id and --pull-api-key (or --pull-api-key-file): one of each per --pull-url ({} ids, {} keys for {n} URLs)",
            p.pull_api_ids.len(),
            keys.len()
        );
    }
    let accounts = p
        .pull_urls
        .iter()
        .enumerate()
        .map(|(i, url)| crate::ingress::pull::Account {
            url: url.clone(),
            auth: p.pull_api_ids.get(i).map(|id| (id.clone(), keys[i].clone())),
        })
        .collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder().tcp_keepalive(Duration::from_secs(60));
    if let Some(proxy) = &p.pull_proxy {
        b = b.proxy(reqwest::Proxy::all(proxy).with_context(|| format!("--pull-proxy {proxy:?}"))?);
    }
    if let Some(ca) = &p.pull_ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading --pull-ca {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            b = b.add_root_certificate(cert);
        }
    }
    Ok(Some(crate::ingress::pull::Config {
        accounts,
        state: p.pull_state.clone(),
        interval: Duration::from_millis(p.pull_interval_ms.max(10)),
        parallel: p.pull_parallel.max(1),
        missing_retries: p.pull_missing_retries,
        keys_dir: l.keys_dir.clone(),
        max_decompressed_bytes: l.max_decompressed_bytes,
        max_message_bytes: l.max_message_bytes,
        client: b.build()?,
        request_timeout: Duration::from_millis(p.pull_request_timeout_ms.max(1)),
    }))
}

/// The S3 input's settings, when `--s3-bucket` is given.
fn s3_config(a: &super::S3Args, l: &ListenArgs) -> anyhow::Result<Option<crate::ingress::s3::Config>> {
    let Some(bucket) = a.s3_bucket.clone().filter(|b| !b.is_empty()) else {
        let set = [
            &a.s3_endpoint,
            &a.s3_access_key_id,
            &a.s3_secret_access_key,
            &a.s3_region,
        ]
        .iter()
        .any(|o| o.is_some())
            || a.s3_state.is_some()
            || !a.s3_prefix.is_empty();
        if set {
            anyhow::bail!("--s3-* settings are given without --s3-bucket");
        }
        return Ok(None);
    };
    let credentials = match (&a.s3_access_key_id, &a.s3_secret_access_key) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        (None, None) => None,
        _ => anyhow::bail!("--s3-access-key-id and --s3-secret-access-key go together"),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Some(crate::ingress::s3::Config {
        bucket,
        prefix: a.s3_prefix.clone(),
        region: a.s3_region.clone(),
        endpoint: a.s3_endpoint.clone(),
        credentials,
        state: a.s3_state.clone(),
        interval: Duration::from_millis(a.s3_interval_ms.max(10)),
        parallel: a.s3_parallel.max(1),
        request_timeout: Duration::from_millis(a.s3_request_timeout_ms.max(1)),
        keys_dir: l.keys_dir.clone(),
        max_decompressed_bytes: l.max_decompressed_bytes,
        max_message_bytes: l.max_message_bytes,
    }))
}

/// The HEC receiver's settings, with its tokens read from flags, variables and files.
fn hec_config(
    h: &super::HecArgs,
    l: &ListenArgs,
    drain: Duration,
) -> anyhow::Result<Option<crate::ingress::hec::Config>> {
    use crate::ingress::hec::HecToken;
    let Some(a) = addr(&h.listen_hec, "hec")? else {
        return Ok(None);
    };
    let mut tokens = Vec::new();
    for spec in h.hec_tokens.iter().filter(|s| !s.trim().is_empty()) {
        tokens.push(HecToken::parse(spec, tokens.len() + 1)?);
    }
    for f in &h.hec_token_files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading --hec-token-file {}", f.display()))?;
        let mut t = HecToken::parse(text.trim(), tokens.len() + 1)
            .with_context(|| format!("--hec-token-file {}", f.display()))?;
        // A bare token (not `name=token`) is named after its file.
        if t.secret == text.trim() {
            t.name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(t.name);
        }
        tokens.push(t);
    }
    if tokens.is_empty() {
        anyhow::bail!("--listen-hec needs at least one --hec-token or --hec-token-file");
    }
    let mut names = std::collections::HashSet::new();
    for t in &tokens {
        if !names.insert(t.name.as_str()) {
            anyhow::bail!("HEC token name {:?} is given twice", t.name);
        }
    }
    let tls = if h.hec_tls {
        let (Some(cert), Some(key)) = (&l.tls_cert, &l.tls_key) else {
            anyhow::bail!("--hec-tls needs --tls-cert and --tls-key");
        };
        let acceptor = crate::ingress::tls::acceptor(cert, key, l.tls_client_ca.as_deref())?;
        Some((acceptor, Duration::from_millis(l.tls_handshake_timeout_ms.max(1))))
    } else {
        None
    };
    Ok(Some(crate::ingress::hec::Config {
        addr: a,
        tls,
        tokens,
        max_body_bytes: h.hec_max_body_bytes,
        max_events: h.hec_max_events,
        max_requests: h.hec_max_requests,
        ack_timeout: Duration::from_millis(h.hec_ack_timeout_ms.max(1)),
        max_message_bytes: l.max_message_bytes,
        drain,
        header_timeout: Duration::from_millis(l.idle_timeout_ms.clamp(1, 60_000)),
    }))
}

fn listen_config(
    l: &ListenArgs,
    p: &super::PullArgs,
    s3: &super::S3Args,
    hec: &super::HecArgs,
    drain_timeout_ms: u64,
) -> anyhow::Result<Config> {
    let tls = match addr(&l.listen_tls, "tls")? {
        None => None,
        Some(a) => {
            let (Some(cert), Some(key)) = (&l.tls_cert, &l.tls_key) else {
                anyhow::bail!("--listen-tls needs --tls-cert and --tls-key");
            };
            let acceptor = crate::ingress::tls::acceptor(cert, key, l.tls_client_ca.as_deref())?;
            Some((a, acceptor, Duration::from_millis(l.tls_handshake_timeout_ms.max(1))))
        }
    };
    let exclude = l
        .file_excludes
        .iter()
        .filter(|g| !g.is_empty())
        .map(|g| glob::Pattern::new(g).with_context(|| format!("--file-exclude {g:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let done = match (l.file_done, &l.file_done_dir) {
        (super::FileDone::Keep, _) => crate::ingress::files::DoneAction::Keep,
        (super::FileDone::Delete, _) => crate::ingress::files::DoneAction::Delete,
        (super::FileDone::Move, Some(d)) if d.is_dir() => crate::ingress::files::DoneAction::Move(d.clone()),
        (super::FileDone::Move, Some(d)) => anyhow::bail!("--file-done-dir {}: no such directory", d.display()),
        (super::FileDone::Move, None) => anyhow::bail!("--file-done move needs --file-done-dir"),
    };
    let files = (!l.files.is_empty()).then(|| crate::ingress::files::Config {
        globs: l.files.clone(),
        checkpoint: l.checkpoint.clone(),
        poll: Duration::from_millis(l.file_poll_ms.max(10)),
        max_message_bytes: l.max_message_bytes,
        keys_dir: l.keys_dir.clone(),
        max_decompressed_bytes: l.max_decompressed_bytes,
        exclude,
        done,
    });
    let cfg = Config {
        tcp: addr(&l.listen_tcp, "tcp")?,
        udp: addr(&l.listen_udp, "udp")?,
        tls,
        files,
        pull: pull_config(p, l)?,
        s3: s3_config(s3, l)?,
        hec: hec_config(hec, l, drain_timeout(drain_timeout_ms).mul_f64(0.6))?,
        limits: Limits {
            max_message_bytes: l.max_message_bytes,
            max_connections: l.max_connections,
            idle_timeout: Duration::from_millis(l.idle_timeout_ms.max(1)),
            drain: drain_timeout(drain_timeout_ms).mul_f64(0.6),
        },
        bus_capacity: l.bus_capacity,
    };
    if cfg.tcp.is_none()
        && cfg.udp.is_none()
        && cfg.tls.is_none()
        && cfg.files.is_none()
        && cfg.pull.is_none()
        && cfg.s3.is_none()
        && cfg.hec.is_none()
    {
        anyhow::bail!(
            "nothing to read: --listen-tcp, --listen-udp, --listen-tls and --listen-hec are off and no --file, --pull-url or --s3-bucket is given"
        );
    }
    Ok(cfg)
}

fn drain_timeout(ms: u64) -> Duration {
    Duration::from_millis(ms.max(1))
}

fn announce(kind: &str, a: SocketAddr) {
    tracing::info!(kind, addr = %a, "listening on {kind} {a}")
}

/// Start the `/metrics` endpoint on `rt` when `--metrics-addr` asks for one, and the OTLP
/// export when `--otlp-endpoint` does. Keep the returned guard until the role is done: its drop
/// makes the last export.
fn metrics(args: &super::TelemetryArgs, rt: &tokio::runtime::Runtime, role: &str) -> anyhow::Result<LastExport> {
    if let Some(a) = rt.block_on(crate::telemetry::start(&args.metrics_addr))? {
        announce("metrics", a);
    }
    let Some(endpoint) = args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
        return Ok(LastExport(None));
    };
    let _guard = rt.enter();
    crate::otlp::start(crate::otlp::Config {
        endpoint: endpoint.to_string(),
        interval: Duration::from_millis(args.otlp_interval_ms.max(100)),
        service: format!("wafstream-{role}"),
    })?;
    tracing::info!(endpoint, "exporting metrics and traces over OTLP");
    Ok(LastExport(Some(rt.handle().clone())))
}

/// Makes a last OTLP export when dropped (what the drain counted and traced).
struct LastExport(Option<tokio::runtime::Handle>);

impl Drop for LastExport {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), crate::otlp::flush()).await;
            });
        }
    }
}

pub(super) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let opts = args.mapping.options()?;
    let procs = opts.processors.clone();
    let cfg = listen_config(
        &args.listen,
        &args.pull,
        &args.s3,
        &args.hec,
        args.drain.drain_timeout_ms,
    )?;
    let docs: Box<dyn Write + Send> = if args.output == "-" {
        Box::new(BufWriter::with_capacity(1 << 16, io::stdout()))
    } else {
        Box::new(BufWriter::new(
            crate::sink::open_append(std::path::Path::new(&args.output))
                .with_context(|| format!("opening {}", args.output))?,
        ))
    };
    let dlq: Option<Box<dyn Write + Send>> = match &args.dlq {
        Some(p) => Some(Box::new(BufWriter::new(
            crate::sink::open_append(p).with_context(|| format!("opening {}", p.display()))?,
        ))),
        None => None,
    };
    let settings = crate::pipeline::Settings {
        threads: args.threads.unwrap_or_else(crate::pipeline::default_threads).max(1),
        ..crate::pipeline::Settings::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _last_export = metrics(&args.telemetry, &rt, "run")?;
    let writer = WriterSink::new(docs, dlq);
    let (summary, stats) = if args.es.conn.urls.is_empty() {
        rt.block_on(embedded::run(
            cfg,
            opts,
            settings,
            &writer,
            embedded::signal(),
            drain_timeout(args.drain.drain_timeout_ms),
            announce,
        ))?
    } else {
        let client = es_client(&args.es.conn)?;
        es_setup_at_start(&args.es, &client, &rt)?;
        let config = es_config(&args.es, &opts.namespace, args.delivery.give_up_after());
        let es = {
            let _guard = rt.enter();
            crate::sink::elasticsearch::ElasticsearchSink::start(config, client)
        };
        let es_stats = es.stats();
        // Documents to Elasticsearch; dead letters (and documents it refuses) to the output.
        let sink = crate::sink::Routed { docs: es, dead: writer };
        let r = rt.block_on(embedded::run(
            cfg,
            opts,
            settings,
            &sink,
            embedded::signal(),
            drain_timeout(args.drain.drain_timeout_ms),
            announce,
        ));
        tracing::info!("{}", es_stats.report());
        r?
    };
    tracing::info!("{}", embedded::report(&summary, &stats));
    report_processors(procs.as_deref());
    Ok(ExitCode::SUCCESS)
}

/// `wafstream ingress`: sources → raw topic (no mapping). File checkpoints advance only over
/// frames the broker acknowledged.
pub(super) fn ingress(args: IngressArgs) -> anyhow::Result<ExitCode> {
    let cfg = listen_config(
        &args.listen,
        &args.pull,
        &args.s3,
        &args.hec,
        args.drain.drain_timeout_ms,
    )?;
    if let Some(tz) = &args.tz {
        if crate::parse::time::Zone::parse(tz).is_none() {
            anyhow::bail!("--tz {tz:?}: not an IANA zone or ±HHMM offset");
        }
    }
    let settings = ClientSettings::new(&args.kafka.brokers, &args.kafka.properties)?;
    let producer = kafka::producer::raw_producer(&settings)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _last_export = metrics(&args.telemetry, &rt, "ingress")?;
    let (stats, pstats) = rt.block_on(async move {
        let pstats = std::sync::Arc::new(kafka::producer::ProducerStats::default());
        crate::telemetry::global().register("producer", pstats.clone());
        kafka::producer::watch_brokers(producer.clone(), args.kafka.raw_topic.clone());
        let (sources, rx) = embedded::start(cfg, announce).await?;
        let stats = sources.stats.clone();
        let publish = kafka::producer::publish(
            rx,
            producer,
            args.kafka.raw_topic.clone(),
            args.tz.clone(),
            pstats.clone(),
        );
        embedded::drive(
            sources,
            embedded::signal(),
            publish,
            drain_timeout(args.drain.drain_timeout_ms),
        )
        .await??;
        anyhow::Ok((stats, pstats))
    })?;
    tracing::info!(
        "wafstream: {} frames published, {} failed; {} cut at the size limit, {} UDP datagrams dropped on a full bus",
        pstats.sent.load(std::sync::atomic::Ordering::Relaxed),
        pstats.failed.load(std::sync::atomic::Ordering::Relaxed),
        stats.truncated.load(std::sync::atomic::Ordering::Relaxed),
        stats.udp_dropped.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(ExitCode::SUCCESS)
}

/// `wafstream worker`: raw topic → ECS topics / DLQ topic.
pub(super) fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let opts = args.mapping.options()?;
    let procs = opts.processors.clone();
    let settings = ClientSettings::new(&args.kafka.brokers, &args.kafka.properties)?;
    let cfg = kafka::worker::Config {
        settings,
        group: args.group,
        raw_topic: args.kafka.raw_topic,
        topic_securesphere: args.topic_securesphere,
        topic_cloud_waf: args.topic_cloud_waf,
        topic_siem: args.topic_siem,
        dlq_topic: args.dlq_topic,
        max_inflight: args.max_inflight,
        threads: args.threads.unwrap_or_else(crate::pipeline::default_threads).max(1),
        exit_when_idle: args.exit_when_idle_ms.map(Duration::from_millis),
        drain_timeout: drain_timeout(args.drain.drain_timeout_ms),
        give_up_after: args.delivery.give_up_after(),
    };
    let es = if args.es.conn.urls.is_empty() {
        None
    } else {
        Some(kafka::worker::ToElasticsearch {
            config: es_config(&args.es, &opts.namespace, args.delivery.give_up_after()),
            client: es_client(&args.es.conn)?,
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _last_export = metrics(&args.telemetry, &rt, "worker")?;
    if let Some(es) = &es {
        es_setup_at_start(&args.es, &es.client, &rt)?;
    }
    let s = rt.block_on(kafka::worker::run(cfg, opts, es, embedded::signal()))?;
    tracing::info!(
        "wafstream: worker consumed {}, {} documents, {} dead-lettered{}, {} offsets stored ({} settled on partition revocation){}",
        s.consumed,
        s.documents,
        s.dead_letters,
        crate::embedded::dropped(s.dropped),
        s.offsets_stored,
        s.drained_on_revoke,
        // A rate over less than a second of records says nothing.
        if s.active_secs >= 1.0 {
            format!(
                "; {:.0} events/s over {:.1} s while records flowed",
                s.rate(),
                s.active_secs
            )
        } else {
            String::new()
        }
    );
    report_processors(procs.as_deref());
    Ok(ExitCode::SUCCESS)
}

/// The processors' counters, one log line each, at exit.
fn report_processors(p: Option<&crate::ecs::processors::ProcessorSet>) {
    for line in p.iter().flat_map(|p| p.report()) {
        tracing::info!("wafstream: {line}");
    }
}

fn es_auth(a: &super::EsArgs) -> crate::sink::elasticsearch::Auth {
    use crate::sink::elasticsearch::Auth;
    match (&a.api_key, &a.user, &a.bearer) {
        (Some(k), _, _) => Auth::ApiKey(k.clone()),
        (None, Some(u), _) => Auth::Basic {
            user: u.clone(),
            password: a.password.clone().unwrap_or_default(),
        },
        (None, None, Some(t)) => Auth::Bearer(t.clone()),
        _ => Auth::None,
    }
}

fn es_config(
    a: &super::EsOutputArgs,
    namespace: &str,
    give_up_after: Option<Duration>,
) -> crate::sink::elasticsearch::Config {
    crate::sink::elasticsearch::Config {
        hosts: a.conn.urls.clone(),
        auth: es_auth(&a.conn),
        namespace: namespace.to_string(),
        max_batch_docs: a.max_batch_docs.max(1),
        flush_interval: Duration::from_millis(a.flush_interval_ms.max(1)),
        max_inflight_requests: a.max_inflight_requests.max(1),
        request_timeout: Duration::from_millis(a.request_timeout_ms.max(1)),
        backoff_max: Duration::from_millis(a.backoff_max_ms.max(1)),
        give_up_after,
        ..crate::sink::elasticsearch::Config::default()
    }
}

/// `wafstream es-setup`.
pub(super) fn es_setup(args: super::EsArgs) -> anyhow::Result<ExitCode> {
    if args.urls.is_empty() {
        anyhow::bail!("--es-url is required");
    }
    let client = es_client(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let done = rt.block_on(crate::sink::es_setup::install(
        &client,
        &args.urls,
        &es_auth(&args),
        &setup_options(&args),
    ))?;
    for d in done {
        tracing::info!("installed {d}");
    }
    Ok(ExitCode::SUCCESS)
}

fn setup_options(a: &super::EsArgs) -> crate::sink::es_setup::Options {
    crate::sink::es_setup::Options {
        force: a.setup_force,
        retention: (!a.retention.eq_ignore_ascii_case("off")).then(|| a.retention.clone()),
    }
}

fn es_client(a: &super::EsArgs) -> anyhow::Result<reqwest::Client> {
    let identity = match (&a.client_cert, &a.client_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    crate::sink::elasticsearch::client_with(a.ca.as_deref(), identity)
}

/// With `--es-setup`, install the templates before the first document.
fn es_setup_at_start(
    a: &super::EsOutputArgs,
    client: &reqwest::Client,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    if a.setup && !a.conn.urls.is_empty() {
        for d in rt.block_on(crate::sink::es_setup::install(
            client,
            &a.conn.urls,
            &es_auth(&a.conn),
            &setup_options(&a.conn),
        ))? {
            tracing::info!("installed {d}");
        }
    }
    Ok(())
}

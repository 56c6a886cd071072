//! A Splunk HTTP Event Collector (HEC) compatible receiver, so Imperva's SIEM log
//! configuration (destination type Splunk) and other HEC senders can push to wafstream.
//!
//! Endpoints: `POST /services/collector[/event[/1.0]]` (concatenated JSON envelopes, each
//! `event` one frame), `POST /services/collector/raw[/1.0]` (one frame per line),
//! `GET /services/collector/health[/1.0]`, `POST /services/collector/ack[/1.0]`. Authentication
//! by `Authorization: Splunk <token>` or Basic with the token as password; gzip bodies.
//!
//! A request is admitted whole or not at all: its frames go to the bus in one reservation, or
//! the sender is told `503 Server is busy` and retries. Every frame carries a token counting
//! toward the request's acknowledgement, which the core settles once the frame's output is
//! accepted downstream (in `ingress`: by the broker with `acks=all`). Without a request
//! channel the response waits for that; with one (`X-Splunk-Request-Channel`), the response
//! carries an `ackId` whose status `/services/collector/ack` reports (HEC indexer
//! acknowledgement).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::bus::{self, Progress, RawFrame, Sender, Token};

/// One accepted token: a name for metrics and logs (the secret is never shown).
#[derive(Clone)]
pub struct HecToken {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for HecToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HecToken({}, ****)", self.name)
    }
}

impl HecToken {
    /// `name=secret`, or a bare secret named `token<n>` (n counted from 1). A name is letters,
    /// digits, `-`, `_` and `.`; a secret that ends in `=` (base64 padding) is taken whole.
    pub fn parse(spec: &str, n: usize) -> anyhow::Result<HecToken> {
        let spec = spec.trim();
        let named = spec.split_once('=').filter(|(name, secret)| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !secret.is_empty()
                && !secret.starts_with('=')
                && !spec.ends_with('=')
        });
        let (name, secret) = match named {
            Some((name, secret)) => (name.trim().to_string(), secret.trim().to_string()),
            None => (format!("token{n}"), spec.to_string()),
        };
        if secret.is_empty() {
            anyhow::bail!("HEC token {name:?} is empty");
        }
        Ok(HecToken { name, secret })
    }
}

/// Settings of the HEC listener.
#[derive(Clone)]
pub struct Config {
    pub addr: SocketAddr,
    /// Serve HTTPS with this acceptor (the TLS listener's certificate and client CA).
    pub tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
    pub tokens: Vec<HecToken>,
    /// Largest request body, before and after gzip decoding.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_events: usize,
    /// Requests handled at once; more are answered `503 Server is busy`.
    pub max_requests: usize,
    /// How long a request without a channel waits for its acknowledgement before it is
    /// answered `503` (its events may still be delivered: the sender's retry can duplicate).
    pub ack_timeout: Duration,
    /// Longest event; a longer one is cut and dead-lettered.
    pub max_message_bytes: usize,
    /// How long connections may finish their requests at shutdown.
    pub drain: Duration,
    /// How long a connection may take to send a request's headers.
    pub header_timeout: Duration,
}

/// A sender-chosen label value, cut to 128 bytes (at a character boundary).
pub fn label_text(s: &str) -> &str {
    if s.len() <= 128 {
        return s;
    }
    let mut end = 128;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Most (token, sourcetype) pairs counted apart.
pub const MAX_SOURCETYPES: usize = 256;

/// Label values and counts of one metric family.
type Rows = Vec<(Vec<String>, u64)>;

/// Counters by token, sourcetype and refusal reason.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    requests: BTreeMap<String, u64>,
    /// (token, sourcetype) → (events, bytes).
    events: BTreeMap<(String, String), (u64, u64)>,
    /// (token, reason) → refusals.
    refused: BTreeMap<(String, &'static str), u64>,
    /// token → (acknowledged requests, total milliseconds from admission to acknowledgement).
    acked: BTreeMap<String, (u64, u64)>,
}

impl Stats {
    fn with(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// `sourcetype` as a label value: senders choose it, so past [`MAX_SOURCETYPES`] distinct
    /// values new ones are counted as `_other` (the series count stays bounded).
    fn sourcetype_label(c: &Counts, token: &str, st: &str) -> String {
        let st = label_text(st);
        let key = (token.to_string(), st.to_string());
        if c.events.contains_key(&key) || c.events.len() < MAX_SOURCETYPES {
            st.to_string()
        } else {
            "_other".to_string()
        }
    }

    fn refused(&self, token: &str, reason: &'static str) {
        self.with(|c| *c.refused.entry((token.to_string(), reason)).or_default() += 1);
    }
}

impl crate::telemetry::Source for Stats {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let requests: Rows = c.requests.iter().map(|(t, n)| (vec![t.clone()], *n)).collect();
        let events: Rows = c
            .events
            .iter()
            .map(|((t, s), (n, _))| (vec![t.clone(), s.clone()], *n))
            .collect();
        let bytes: Rows = c
            .events
            .iter()
            .map(|((t, s), (_, b))| (vec![t.clone(), s.clone()], *b))
            .collect();
        let refused: Rows = c
            .refused
            .iter()
            .map(|((t, r), n)| (vec![t.clone(), r.to_string()], *n))
            .collect();
        let acked: Rows = c.acked.iter().map(|(t, (n, _))| (vec![t.clone()], *n)).collect();
        let ack_ms: Rows = c.acked.iter().map(|(t, (_, ms))| (vec![t.clone()], *ms)).collect();
        drop(c);
        let families: [(&str, &str, &[&str], Rows); 6] = [
            (
                "wafstream_hec_requests_total",
                "HEC requests authenticated, by token name.",
                &["token"],
                requests,
            ),
            (
                "wafstream_hec_events_total",
                "HEC events admitted, by token name and sourcetype.",
                &["token", "sourcetype"],
                events,
            ),
            (
                "wafstream_hec_event_bytes_total",
                "Bytes of HEC events admitted, by token name and sourcetype.",
                &["token", "sourcetype"],
                bytes,
            ),
            (
                "wafstream_hec_refused_total",
                "HEC requests answered with an error, by token name (empty when unknown) and reason.",
                &["token", "reason"],
                refused,
            ),
            (
                "wafstream_hec_acked_requests_total",
                "HEC requests whose every event was accepted downstream, by token name.",
                &["token"],
                acked,
            ),
            (
                "wafstream_hec_ack_milliseconds_total",
                "Milliseconds from admission to acknowledgement, summed over acknowledged HEC requests, by token name.",
                &["token"],
                ack_ms,
            ),
        ];
        for (name, help, labels, values) in families {
            if !values.is_empty() {
                out.counter_labels(name, help, labels, &values);
            }
        }
    }
}

/// A request's acknowledgement: done once every frame was settled; dropped unsettled (the
/// pipeline stopped) it reports failure.
struct RequestAck {
    left: AtomicUsize,
    tx: Mutex<Option<oneshot::Sender<bool>>>,
}

impl RequestAck {
    fn finish(&self, ok: bool) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(ok);
        }
    }
}

impl Progress for RequestAck {
    fn done(&self, _pos: u64) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish(true);
        }
    }
}

impl Drop for RequestAck {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// Indexer-acknowledgement status of a channel's requests.
struct Channel {
    next: u64,
    /// ackId → acknowledged. Failed requests stay `false` until the channel expires.
    status: BTreeMap<u64, bool>,
    last_used: Instant,
}

/// Channels unused for this long are forgotten.
const CHANNEL_IDLE: Duration = Duration::from_secs(600);
/// Most channels kept (a sender making up a channel per request cannot grow memory for ever).
const MAX_CHANNELS: usize = 10_000;
/// Most pending acknowledgements per channel.
const MAX_ACKS_PER_CHANNEL: usize = 100_000;

struct Shared {
    cfg: Config,
    bus: Sender,
    stats: Arc<Stats>,
    ingress: Arc<super::Stats>,
    requests: Arc<Semaphore>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    r
}

/// A HEC error answer: HTTP status, HEC code, text, and the reason counted in metrics.
struct Refusal {
    status: StatusCode,
    code: Option<u32>,
    text: String,
    reason: &'static str,
    event: Option<usize>,
}

impl Refusal {
    fn new(status: StatusCode, code: u32, text: &str, reason: &'static str) -> Refusal {
        Refusal {
            status,
            code: Some(code),
            text: text.to_string(),
            reason,
            event: None,
        }
    }

    /// An answer outside HEC's numbered codes (Splunk answers these with the HTTP status
    /// alone).
    fn plain(status: StatusCode, text: String, reason: &'static str) -> Refusal {
        Refusal {
            status,
            code: None,
            text,
            reason,
            event: None,
        }
    }

    fn at(mut self, event: usize) -> Refusal {
        self.event = Some(event);
        self
    }

    fn busy() -> Refusal {
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, 9, "Server is busy", "server_busy")
    }

    fn reply(self, stats: &Stats, token: &str) -> Reply {
        stats.refused(token, self.reason);
        let mut body = serde_json::json!({ "text": self.text });
        if let Some(c) = self.code {
            body["code"] = c.into();
        }
        if let Some(n) = self.event {
            body["invalid-event-number"] = n.into();
        }
        let mut r = reply(self.status, body);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        r
    }
}

/// Serve HEC on `listener` until `shutdown`, then let open requests finish (up to the drain
/// time).
pub async fn serve(
    listener: TcpListener,
    cfg: Config,
    bus: Sender,
    stats: Arc<Stats>,
    ingress: Arc<super::Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        requests: Arc::new(Semaphore::new(cfg.max_requests.max(1))),
        cfg,
        bus,
        stats,
        ingress,
        channels: Arc::new(Mutex::new(HashMap::new())),
    });
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HEC accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // Reap finished connections.
        while tasks.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        shared.ingress.connections.fetch_add(1, Ordering::Relaxed);
        let (shared, stop) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move {
            match shared.cfg.tls.clone() {
                None => connection(stream, peer, shared, stop).await,
                Some((acceptor, hs)) => match tokio::time::timeout(hs, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection(tls, peer, shared, stop).await,
                    Ok(Err(e)) => {
                        shared.ingress.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, error = %e, "HEC TLS handshake failed");
                    }
                    Err(_) => {
                        shared.ingress.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, "HEC TLS handshake timed out");
                    }
                },
            }
        });
    }
    drop(listener);
    let drain = shared.cfg.drain;
    if tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        shared
            .ingress
            .drain_closed
            .fetch_add(tasks.len() as u64, Ordering::Relaxed);
        tasks.abort_all();
    }
}

/// One HTTP/1.1 connection; at shutdown it finishes the request in progress and closes.
async fn connection<IO>(io: IO, peer: SocketAddr, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let shared = shared.clone();
        hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(&shared, peer, req).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.cfg.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HEC connection ended");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Event,
    Raw,
    Ack,
    Health,
}

fn endpoint(method: &Method, path: &str) -> Result<Endpoint, Refusal> {
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix("/1.0").unwrap_or(path);
    let e = match path {
        "/services/collector" | "/services/collector/event" => Endpoint::Event,
        "/services/collector/raw" => Endpoint::Raw,
        "/services/collector/ack" => Endpoint::Ack,
        "/services/collector/health" => Endpoint::Health,
        _ => {
            return Err(Refusal {
                status: StatusCode::NOT_FOUND,
                code: Some(404),
                text: "The requested URL was not found on this server.".into(),
                reason: "not_found",
                event: None,
            });
        }
    };
    let allowed = match e {
        Endpoint::Health => method == Method::GET || method == Method::HEAD,
        _ => method == Method::POST,
    };
    if !allowed {
        return Err(Refusal::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here"),
            "method_not_allowed",
        ));
    }
    Ok(e)
}

/// The name of the token the request presents.
fn authenticate<'c>(cfg: &'c Config, headers: &HeaderMap) -> Result<&'c str, Refusal> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            2,
            "Token is required",
            "token_required",
        ));
    };
    let invalid_auth = || {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            3,
            "Invalid authorization",
            "invalid_authorization",
        )
    };
    let value = value.to_str().map_err(|_| invalid_auth())?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or_else(invalid_auth)?;
    let secret = if scheme.eq_ignore_ascii_case("splunk") {
        rest.trim().to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| invalid_auth())?;
        let text = String::from_utf8(raw).map_err(|_| invalid_auth())?;
        // `user:token`; the user name is not checked.
        text.split_once(':')
            .map(|(_, p)| p.to_string())
            .ok_or_else(invalid_auth)?
    } else {
        return Err(invalid_auth());
    };
    cfg.tokens
        .iter()
        .find(|t| constant_time_eq(t.secret.as_bytes(), secret.as_bytes()))
        .map(|t| t.name.as_str())
        .ok_or_else(|| Refusal::new(StatusCode::FORBIDDEN, 4, "Invalid token", "invalid_token"))
}

/// Compare without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `key=value` pairs of the query string (percent-decoded).
fn query(uri: &hyper::Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Some((percent_decode(k)?, percent_decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn handle(sh: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Reply {
    let endpoint = match endpoint(req.method(), req.uri().path()) {
        Ok(e) => e,
        Err(r) => return r.reply(&sh.stats, ""),
    };
    if endpoint == Endpoint::Health {
        // Unhealthy while the bus has no room: a load balancer sends elsewhere.
        return if sh.bus.capacity() == 0 {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"text": "HEC is unhealthy, queues are full", "code": 18}),
            )
        } else {
            reply(
                StatusCode::OK,
                serde_json::json!({"text": "HEC is healthy", "code": 17}),
            )
        };
    }
    let token = match authenticate(&sh.cfg, req.headers()) {
        Ok(t) => t.to_string(),
        Err(r) => return r.reply(&sh.stats, ""),
    };
    sh.stats.with(|c| *c.requests.entry(token.clone()).or_default() += 1);
    match serve_request(sh, peer, &token, endpoint, req).await {
        Ok(r) => r,
        Err(r) => r.reply(&sh.stats, &token),
    }
}

async fn serve_request(
    sh: &Shared,
    peer: SocketAddr,
    token: &str,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Reply, Refusal> {
    let q = query(req.uri());
    let channel = req
        .headers()
        .get("x-splunk-request-channel")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.get("channel").cloned());
    if let Some(c) = &channel {
        if !valid_channel(c) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                11,
                "Invalid data channel",
                "invalid_channel",
            ));
        }
    }
    let Ok(_permit) = sh.requests.clone().try_acquire_owned() else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            9,
            "Server is busy",
            "too_many_requests",
        ));
    };
    let gzip = req
        .headers()
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    // A body that trickles in must not hold a request slot for ever.
    let body = match tokio::time::timeout(sh.cfg.header_timeout, read_body(sh, req)).await {
        Ok(b) => b?,
        Err(_) => {
            return Err(Refusal::plain(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time".into(),
                "body_timeout",
            ));
        }
    };
    if endpoint == Endpoint::Ack {
        let body = if gzip {
            gunzip(&body, sh.cfg.max_body_bytes)?
        } else {
            body
        };
        let Some(c) = channel else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                10,
                "Data channel is missing",
                "channel_missing",
            ));
        };
        return ack_status(sh, &c, &body);
    }
    // Inflating and parsing up to the body limit is CPU work: off the async workers.
    let max_body = sh.cfg.max_body_bytes;
    let events = tokio::task::spawn_blocking(move || {
        let body = if gzip { gunzip(&body, max_body)? } else { body };
        match endpoint {
            Endpoint::Raw => Ok(raw_events(&body, &q)),
            _ => envelopes(&body),
        }
    })
    .await
    .map_err(|_| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            8,
            "Internal server error",
            "internal_error",
        )
    })??;
    if events.is_empty() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, 5, "No data", "no_data"));
    }
    if events.len() > sh.cfg.max_events {
        return Err(Refusal::plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} events in one request (maximum is {})",
                events.len(),
                sh.cfg.max_events
            ),
            "too_many_events",
        ));
    }
    let (tx, rx) = oneshot::channel();
    let ack = Arc::new(RequestAck {
        left: AtomicUsize::new(events.len()),
        tx: Mutex::new(Some(tx)),
    });
    let received_ms = bus::now_ms();
    let peer: Arc<str> = peer.to_string().into();
    let mut by_type: BTreeMap<Option<Arc<str>>, (u64, u64)> = BTreeMap::new();
    let max = sh.cfg.max_message_bytes;
    let mut frames: Vec<RawFrame> = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        let len = e.bytes.len();
        let c = by_type.entry(e.sourcetype.clone()).or_default();
        c.0 += 1;
        c.1 += len as u64;
        let (bytes, truncated_from) = if len > max {
            (e.bytes.slice(..max), Some(len))
        } else {
            (e.bytes, None)
        };
        if truncated_from.is_some() {
            sh.ingress.truncated.fetch_add(1, Ordering::Relaxed);
        }
        frames.push(RawFrame {
            bytes,
            received_ms,
            input: "hec",
            peer: Some(peer.clone()),
            truncated_from,
            limit_name: "max_message_bytes",
            source: e.source,
            sourcetype: e.sourcetype,
            time_ms: e.time_ms,
            occurrence: Some(bus::next_occurrence()),
            token: Token::new(ack.clone(), i as u64),
            ..RawFrame::default()
        });
    }
    drop(ack);
    // With a channel, the ackId is taken before anything is admitted: a channel that cannot
    // keep one more refuses the request whole.
    let ack_id = match &channel {
        Some(c) => Some(reserve_ack(sh, c).ok_or_else(Refusal::busy)?),
        None => None,
    };
    let n = frames.len();
    if let Err(r) = admit(sh, frames).await {
        if let (Some(c), Some(id)) = (&channel, ack_id) {
            if let Some(ch) = sh.channels.lock().unwrap_or_else(|p| p.into_inner()).get_mut(c) {
                ch.status.remove(&id);
            }
        }
        return Err(r);
    }
    let admitted = Instant::now();
    sh.ingress.frames.fetch_add(n as u64, Ordering::Relaxed);
    sh.stats.with(|c| {
        for (st, (events, bytes)) in &by_type {
            let label = Stats::sourcetype_label(c, token, st.as_deref().unwrap_or(""));
            let e = c.events.entry((token.to_string(), label)).or_default();
            e.0 += events;
            e.1 += bytes;
        }
    });
    let record = {
        let stats = sh.stats.clone();
        let token = token.to_string();
        move |ok: bool| {
            if ok {
                let ms = admitted.elapsed().as_millis() as u64;
                stats.with(|c| {
                    let a = c.acked.entry(token).or_default();
                    a.0 += 1;
                    a.1 += ms;
                });
            }
        }
    };
    if let (Some(c), Some(id)) = (channel, ack_id) {
        let shared_channels = sh.channels.clone();
        tokio::spawn(async move {
            let ok = rx.await.unwrap_or(false);
            record(ok);
            if ok {
                if let Some(ch) = shared_channels.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&c) {
                    if let Some(s) = ch.status.get_mut(&id) {
                        *s = true;
                    }
                }
            }
        });
        return Ok(reply(
            StatusCode::OK,
            serde_json::json!({"text": "Success", "code": 0, "ackId": id}),
        ));
    }
    match tokio::time::timeout(sh.cfg.ack_timeout, rx).await {
        Ok(Ok(true)) => {
            record(true);
            Ok(reply(StatusCode::OK, serde_json::json!({"text": "Success", "code": 0})))
        }
        Ok(_) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            8,
            "Internal server error",
            "delivery_failed",
        )),
        Err(_) => Err(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: Some(9),
            text: "Server is busy".into(),
            reason: "ack_timeout",
            event: None,
        }),
    }
}

/// A new ackId on channel `c`, or `None` when no more can be kept. A channel's ids start at a
/// number drawn at random, so an id polled on another replica, or after a restart or the
/// channel's expiry, does not name another request. At the per-channel limit, ids acknowledged
/// and never asked about are forgotten, oldest first.
fn reserve_ack(sh: &Shared, c: &str) -> Option<u64> {
    let mut chans = sh.channels.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if !chans.contains_key(c) {
        chans.retain(|_, ch| now.duration_since(ch.last_used) < CHANNEL_IDLE);
        if chans.len() >= MAX_CHANNELS {
            return None;
        }
    }
    let ch = chans.entry(c.to_string()).or_insert_with(|| Channel {
        // Below 2^52: exact as a JSON number in every client.
        next: bus::next_occurrence() >> 12,
        status: BTreeMap::new(),
        last_used: now,
    });
    ch.last_used = now;
    if ch.status.len() >= MAX_ACKS_PER_CHANNEL {
        let done: Vec<u64> = ch
            .status
            .iter()
            .filter(|(_, ok)| **ok)
            .map(|(id, _)| *id)
            .take(MAX_ACKS_PER_CHANNEL / 10)
            .collect();
        if done.is_empty() {
            return None;
        }
        for id in done {
            ch.status.remove(&id);
        }
    }
    let id = ch.next;
    ch.next += 1;
    ch.status.insert(id, false);
    Some(id)
}

fn valid_channel(c: &str) -> bool {
    !c.is_empty() && c.len() <= 128 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Put every frame of a request on the bus, or none: the room for all is reserved first,
/// waiting up to a second for it.
async fn admit(sh: &Shared, mut frames: Vec<RawFrame>) -> Result<(), Refusal> {
    // Batches of any size are fine; a request takes at most a quarter of the bus's slots.
    let slots = sh.bus.max_capacity();
    let want = frames.len().div_ceil(bus::BATCH).clamp(1, (slots / 4).max(1));
    let per = frames.len().div_ceil(want);
    let permits = match tokio::time::timeout(Duration::from_secs(1), sh.bus.reserve_many(want)).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) | Err(_) => return Err(Refusal::busy()),
    };
    let mut batches = Vec::with_capacity(want);
    while !frames.is_empty() {
        let rest = frames.split_off(per.min(frames.len()));
        batches.push(std::mem::replace(&mut frames, rest));
    }
    for (permit, batch) in permits.zip(batches) {
        permit.send(batch);
    }
    Ok(())
}

async fn read_body(sh: &Shared, req: Request<Incoming>) -> Result<Bytes, Refusal> {
    let max = sh.cfg.max_body_bytes;
    let too_large = |len: String| {
        Refusal::plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Content-Length of {len} too large (maximum is {max})"),
            "body_too_large",
        )
    };
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_large(len.to_string()));
        }
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large("more than that".into())),
        Err(e) => Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            code: Some(6),
            text: format!("Invalid data format: {e}"),
            reason: "body_unreadable",
            event: None,
        }),
    }
}

fn gunzip(body: &[u8], max: usize) -> Result<Bytes, Refusal> {
    let mut out = Vec::with_capacity(body.len() * 4);
    let mut d = flate2::read::MultiGzDecoder::new(body).take(max as u64 + 1);
    if let Err(e) = d.read_to_end(&mut out) {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            code: Some(6),
            text: format!("Invalid data format: gzip: {e}"),
            reason: "invalid_gzip",
            event: None,
        });
    }
    if out.len() > max {
        return Err(Refusal::plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decoded body larger than {max} bytes"),
            "body_too_large",
        ));
    }
    Ok(out.into())
}

/// One event of a request, with its context.
struct Event {
    bytes: Bytes,
    source: Option<Arc<str>>,
    sourcetype: Option<Arc<str>>,
    time_ms: Option<i64>,
}

/// The HEC event envelope.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(default)]
    time: Option<serde_json::Value>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    sourcetype: Option<String>,
    // Accepted and not used: `host`, `index`, `fields`.
}

/// HEC `time`: epoch seconds, a number or a string, with an optional fraction.
fn epoch_ms(v: &serde_json::Value) -> Option<i64> {
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).round() as i64)
}

/// Every envelope of an `/event` body, all checked before any is admitted.
fn envelopes(body: &[u8]) -> Result<Vec<Event>, Refusal> {
    let mut out = Vec::new();
    let mut last: Option<Arc<str>> = None;
    let mut last_source: Option<(String, Arc<str>)> = None;
    let stream = serde_json::Deserializer::from_slice(body).into_iter::<&RawValue>();
    for (i, item) in stream.enumerate() {
        let invalid = || Refusal::new(StatusCode::BAD_REQUEST, 6, "Invalid data format", "invalid_data_format").at(i);
        let item = item.map_err(|_| invalid())?;
        // An envelope is an object (serde would also take an array for the struct).
        if !item.get().starts_with('{') {
            return Err(invalid());
        }
        let env: Envelope<'_> = serde_json::from_str(item.get()).map_err(|_| invalid())?;
        let Some(ev) = env.event else {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, 12, "Event field is required", "event_missing").at(i));
        };
        let text = ev.get();
        let bytes = if text.starts_with('"') {
            let s: String = serde_json::from_str(text).map_err(|_| invalid())?;
            if s.trim().is_empty() {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    13,
                    "Event field cannot be blank",
                    "event_blank",
                )
                .at(i));
            }
            Bytes::from(s)
        } else if text == "null" {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, 12, "Event field is required", "event_missing").at(i));
        } else {
            // An object (or other JSON value), kept compact on one line.
            let v: serde_json::Value = serde_json::from_str(text).map_err(|_| invalid())?;
            Bytes::from(v.to_string())
        };
        // Senders repeat the same sourcetype and source: share one allocation.
        let sourcetype = env.sourcetype.map(|s| match &last {
            Some(st) if **st == *s => st.clone(),
            _ => {
                let st: Arc<str> = s.into();
                last = Some(st.clone());
                st
            }
        });
        let source = env.source.map(|s| match &last_source {
            Some((k, v)) if *k == s => v.clone(),
            _ => {
                let v: Arc<str> = s.as_str().into();
                last_source = Some((s, v.clone()));
                v
            }
        });
        out.push(Event {
            bytes,
            source,
            sourcetype,
            time_ms: env.time.as_ref().and_then(epoch_ms),
        });
    }
    Ok(out)
}

/// A `/raw` body: one event per line (empty lines skipped), with `sourcetype`/`source` from
/// the query string.
fn raw_events(body: &Bytes, q: &HashMap<String, String>) -> Vec<Event> {
    let sourcetype: Option<Arc<str>> = q.get("sourcetype").map(|s| s.as_str().into());
    let source: Option<Arc<str>> = q.get("source").map(|s| s.as_str().into());
    let mut out = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len())) {
        let mut line = body.slice(start..end);
        start = end + 1;
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(Event {
            bytes: line,
            source: source.clone(),
            sourcetype: sourcetype.clone(),
            time_ms: None,
        });
    }
    out
}

/// `/services/collector/ack`: `{"acks":[ids]}` → `{"acks":{"id":bool}}`. An acknowledged id
/// is reported once, then forgotten (as Splunk does).
fn ack_status(sh: &Shared, channel: &str, body: &[u8]) -> Result<Reply, Refusal> {
    #[derive(Deserialize)]
    struct Query {
        acks: Vec<u64>,
    }
    let q: Query = serde_json::from_slice(body)
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, 6, "Invalid data format", "invalid_data_format"))?;
    let mut chans = sh.channels.lock().unwrap_or_else(|p| p.into_inner());
    let mut acks = serde_json::Map::new();
    let ch = chans.get_mut(channel);
    match ch {
        Some(ch) => {
            ch.last_used = Instant::now();
            for id in q.acks {
                let done = ch.status.get(&id) == Some(&true);
                if done {
                    ch.status.remove(&id);
                }
                acks.insert(id.to_string(), done.into());
            }
        }
        None => {
            for id in q.acks {
                acks.insert(id.to_string(), false.into());
            }
        }
    }
    Ok(reply(StatusCode::OK, serde_json::json!({ "acks": acks })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_keep_context_and_refuse_with_the_event_number() {
        let body = br#"{"event":"CEF:0|a","sourcetype":"imperva:cef","time":1700000000.5}
{"event":{"b":1, "c":[1,2]},"source":"s","time":"1700000001"}"#;
        let ev = envelopes(body).ok().expect("valid");
        assert_eq!(ev.len(), 2);
        assert_eq!(&ev[0].bytes[..], b"CEF:0|a");
        assert_eq!(ev[0].sourcetype.as_deref(), Some("imperva:cef"));
        assert_eq!(ev[0].time_ms, Some(1_700_000_000_500));
        assert_eq!(&ev[1].bytes[..], br#"{"b":1,"c":[1,2]}"#);
        assert_eq!(ev[1].source.as_deref(), Some("s"));
        assert_eq!(ev[1].time_ms, Some(1_700_000_001_000));
        let bad = |b: &[u8]| envelopes(b).err().map(|r| (r.code, r.event));
        assert_eq!(bad(br#"{"event":"a"}{"event":"#), Some((Some(6), Some(1))));
        assert_eq!(bad(br#"{"event":"a"} {"time":1}"#), Some((Some(12), Some(1))));
        assert_eq!(bad(br#"{"event":"  "}"#), Some((Some(13), Some(0))));
        assert_eq!(bad(br#"[1]"#), Some((Some(6), Some(0))));
    }

    #[test]
    fn raw_lines_and_query_context() {
        let q = query(
            &"/services/collector/raw?sourcetype=imperva%3Acef&source=a+b"
                .parse()
                .unwrap(),
        );
        let ev = raw_events(&Bytes::from_static(b"one\r\n\n  \ntwo"), &q);
        assert_eq!(ev.len(), 2);
        assert_eq!(&ev[0].bytes[..], b"one");
        assert_eq!(&ev[1].bytes[..], b"two");
        assert_eq!(ev[1].sourcetype.as_deref(), Some("imperva:cef"));
        assert_eq!(ev[1].source.as_deref(), Some("a b"));
    }

    #[test]
    fn tokens_parse_with_and_without_names() {
        let t = HecToken::parse("imperva=abc-123", 1).unwrap();
        assert_eq!((t.name.as_str(), t.secret.as_str()), ("imperva", "abc-123"));
        let t = HecToken::parse("abc", 2).unwrap();
        assert_eq!((t.name.as_str(), t.secret.as_str()), ("token2", "abc"));
        // Base64 padding is part of the secret, not a name separator.
        let t = HecToken::parse("c2VjcmV0==", 3).unwrap();
        assert_eq!((t.name.as_str(), t.secret.as_str()), ("token3", "c2VjcmV0=="));
        let t = HecToken::parse("gw=c2VjcmV0", 4).unwrap();
        assert_eq!((t.name.as_str(), t.secret.as_str()), ("gw", "c2VjcmV0"));
        assert!(!format!("{t:?}").contains("abc"));
    }
}

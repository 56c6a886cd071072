//! S3 input: the files Imperva's Cloud WAF pushes to a bucket (`bucket/prefix`), on AWS or any
//! S3-compatible store (`endpoint`), through the `object_store` crate (SigV4, path-style
//! requests when an endpoint is given).
//!
//! The prefix is listed every `interval`; each object listed that is neither done nor on its way
//! is downloaded whole (a few at a time, `parallel`), oldest first, decoded as every whole
//! Imperva file is ([`super::imperva_file`]: header, encryption with `--keys-dir`, zlib/gzip,
//! checksum) and sent one frame per line, named by the object key and the line's offset, so
//! document ids are stable across re-reads. An object is done once every one of its lines has
//! been acknowledged downstream. The done keys are saved atomically in the state file, pruned of
//! the keys no longer listed (deleted, e.g. by a lifecycle rule), so a restart downloads nothing
//! that was done; an object sent but not wholly acknowledged when the process stopped is read
//! again.
//!
//! Credentials: the access key id and secret given, else the AWS chain as `object_store` has it
//! (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, web identity, container
//! credentials, then the instance metadata service); no `~/.aws` profiles. Other `AWS_*`
//! variables it knows (`AWS_REGION`, `AWS_ENDPOINT`, ...) apply where no flag is given.
//!
//! Answers: access denied, refused credentials, a missing bucket and any other 4xx on the
//! listing stop the process with the reason; 5xx, 429, timeouts and connection errors are
//! retried with backoff for as long as it takes (counted, logged). An object whose private key
//! is missing or wrong is not marked done: it is read again at each poll (logged) until the key
//! is there. An object deleted between its listing and its download is skipped.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig, StaticCredentialProvider};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Fatal;
use super::files::{CheckpointError, load_state, save_state};
use super::imperva_file::{self, Origin, WholeFile};
use crate::bus::{Batcher, Sender, now_ms};
use crate::container::{self, KeyStore};

/// What to collect and how.
#[derive(Clone)]
pub struct Config {
    pub bucket: String,
    /// Folder the files are pushed to (`""`: the whole bucket). A folder, not the start of a
    /// name: `logs` lists `logs/...`.
    pub prefix: String,
    /// Region requests are signed for; `None`: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// S3-compatible endpoint (`http://` allowed); `None`: AWS (or `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Access key id and secret; `None`: the AWS credential chain.
    pub credentials: Option<(String, String)>,
    /// Done keys; `None` keeps them in memory only.
    pub state: Option<PathBuf>,
    /// Time between two listings.
    pub interval: Duration,
    /// Objects downloaded at once.
    pub parallel: usize,
    /// A request that has not answered after this long is retried.
    pub request_timeout: Duration,
    pub keys_dir: Option<PathBuf>,
    pub max_decompressed_bytes: usize,
    pub max_message_bytes: usize,
}

/// Progress, as saved.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Keys whose every line was acknowledged, among those still listed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub done: BTreeSet<String>,
    /// Last-modified time (epoch ms) of the newest object done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_modified_ms: Option<i64>,
}

/// Counters of the S3 input.
#[derive(Debug, Default)]
pub struct Stats {
    pub listed: AtomicU64,
    pub fetched: AtomicU64,
    pub done: AtomicU64,
    pub bytes: AtomicU64,
    pub lines: AtomicU64,
    pub retries: AtomicU64,
    pub key_errors: AtomicU64,
    /// Objects listed and not done, at the last listing.
    pub pending: AtomicU64,
    /// Last-modified time of the newest object done (epoch ms; 0: none yet).
    pub newest_modified_ms: AtomicU64,
}

impl crate::telemetry::Source for Stats {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        out.counters(&[
            (
                "wafstream_s3_objects_listed_total",
                "Objects seen under the prefix (per listing).",
                &self.listed,
            ),
            (
                "wafstream_s3_objects_fetched_total",
                "Objects downloaded.",
                &self.fetched,
            ),
            (
                "wafstream_s3_objects_done_total",
                "Objects whose every line was acknowledged downstream.",
                &self.done,
            ),
            ("wafstream_s3_bytes_total", "Bytes downloaded.", &self.bytes),
            ("wafstream_s3_lines_total", "Lines sent from objects.", &self.lines),
            (
                "wafstream_s3_retries_total",
                "Requests retried (5xx, 429, timeouts, connection errors).",
                &self.retries,
            ),
            (
                "wafstream_s3_key_errors_total",
                "Objects not read for a missing or wrong private key.",
                &self.key_errors,
            ),
        ]);
        out.gauge(
            "wafstream_s3_pending_objects",
            "Objects listed and not done yet, at the last listing.",
            self.pending.load(Ordering::Relaxed),
        );
        let newest = self.newest_modified_ms.load(Ordering::Relaxed);
        if newest > 0 {
            let lag = (now_ms() - newest as i64).max(0) as u64 / 1000;
            out.gauge(
                "wafstream_s3_lag_seconds",
                "Age of the newest object done (now minus its last-modified time).",
                lag,
            );
        }
    }
}

/// The shared progress: updated as objects complete (on the pipeline's threads), saved after
/// each listing and once more after the drain.
pub struct Progress {
    path: Option<PathBuf>,
    state: Mutex<State>,
    /// Objects downloaded and sent whose lines are not all acknowledged yet.
    inflight: Mutex<HashSet<String>>,
}

impl Progress {
    fn saved(&self) -> Result<(), CheckpointError> {
        match &self.path {
            Some(p) => {
                let s = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
                save_state(p, &s)
            }
            None => Ok(()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn inflight(&self, key: &str) -> bool {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner()).contains(key)
    }

    fn set_inflight(&self, key: &str, on: bool) {
        let mut s = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            s.insert(key.to_string());
        } else {
            s.remove(key);
        }
    }

    fn finish(&self, key: &str, modified_ms: i64) {
        self.set_inflight(key, false);
        self.with(|s| {
            s.done.insert(key.to_string());
            s.newest_modified_ms = Some(s.newest_modified_ms.map_or(modified_ms, |n| n.max(modified_ms)));
        });
    }
}

impl super::Saver for Progress {
    fn save(&self) -> Result<(), CheckpointError> {
        self.saved()
    }
}

/// The client for `cfg` (no request is made yet).
fn store(cfg: &Config) -> anyhow::Result<AmazonS3> {
    use object_store::ClientConfigKey as C;
    use object_store::aws::AmazonS3ConfigKey as K;
    // A few quick retries inside the client (a connection reset mid-body); longer outages are
    // retried here, counted and logged.
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(30),
    };
    // Client settings go through `with_config`, which keeps those from the environment.
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&cfg.bucket)
        .with_retry(retry)
        .with_config(K::Client(C::Timeout), format!("{}ms", cfg.request_timeout.as_millis()))
        .with_config(K::Client(C::ConnectTimeout), "10s");
    if let Some(r) = &cfg.region {
        b = b.with_region(r);
    }
    if let Some(e) = &cfg.endpoint {
        b = b
            .with_endpoint(e)
            .with_virtual_hosted_style_request(false)
            .with_config(K::Client(C::AllowHttp), e.starts_with("http://").to_string());
    }
    if let Some((id, secret)) = &cfg.credentials {
        // Given keys replace the whole chain (an `AWS_SESSION_TOKEN` would not match them).
        b = b.with_credentials(Arc::new(StaticCredentialProvider::new(AwsCredential {
            key_id: id.clone(),
            secret_key: secret.clone(),
            token: None,
        })));
    }
    b.build().with_context(|| format!("S3 bucket {:?}", cfg.bucket))
}

/// Everything a listing and its downloads share.
struct Ctx {
    cfg: Config,
    store: AmazonS3,
    prefix: Option<Key>,
    keys: KeyStore,
    progress: Arc<Progress>,
    bus: Sender,
    stats: Arc<super::Stats>,
    s3stats: Arc<Stats>,
}

/// Build the client, load the progress (an unreadable state file is an error now) and start the
/// listing task.
pub fn start(
    cfg: Config,
    bus: Sender,
    stats: Arc<super::Stats>,
    stop: watch::Receiver<bool>,
    fatal: Arc<Fatal>,
) -> anyhow::Result<(Arc<Progress>, Vec<tokio::task::JoinHandle<()>>)> {
    let store = store(&cfg)?;
    let state: State = load_state(cfg.state.as_deref())?;
    let s3stats = Arc::new(Stats::default());
    if let Some(t) = state.newest_modified_ms {
        s3stats.newest_modified_ms.store(t.max(0) as u64, Ordering::Relaxed);
    }
    crate::telemetry::global().register("s3", s3stats.clone());
    let progress = Arc::new(Progress {
        path: cfg.state.clone(),
        state: Mutex::new(state),
        inflight: Mutex::default(),
    });
    let prefix = cfg.prefix.trim_matches('/');
    let ctx = Arc::new(Ctx {
        prefix: (!prefix.is_empty()).then(|| Key::from(prefix)),
        keys: KeyStore::new(cfg.keys_dir.clone().unwrap_or_else(|| PathBuf::from("keys"))),
        store,
        cfg,
        progress: progress.clone(),
        bus,
        stats,
        s3stats,
    });
    Ok((progress, vec![tokio::spawn(bucket_loop(ctx, stop, fatal))]))
}

/// What a failed request calls for.
#[derive(Debug, PartialEq)]
enum Failure {
    /// Will not pass by itself (credentials, permissions, no such bucket): stop.
    Fatal(String),
    /// The object is gone (deleted after the listing).
    Gone,
    /// Retry later.
    Transient(String),
}

/// An error with its causes, `: `-separated, each once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// The HTTP status in `object_store`'s text ("... status code: 400 Bad Request ...").
fn status_in(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

/// S3's error code in an XML error body (`<Code>AccessDenied</Code>`).
fn s3_code(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("<Code>")?;
    rest.split_once("</Code>").map(|(c, _)| c)
}

fn classify(e: &object_store::Error, bucket: &str, listing: bool) -> Failure {
    use object_store::Error as E;
    let text = chain(e);
    let code = s3_code(&text).map(|c| format!(" ({c})")).unwrap_or_default();
    let denied = || {
        Failure::Fatal(format!(
            "S3 bucket {bucket}: access denied or credentials refused{code}: check --s3-access-key-id and \
--s3-secret-access-key (or the AWS credential chain), --s3-region and the bucket policy (s3:ListBucket, \
s3:GetObject). {text}"
        ))
    };
    let no_bucket = || {
        Failure::Fatal(format!(
            "S3 bucket {bucket}: no such bucket{code}: check --s3-bucket, --s3-region and --s3-endpoint. {text}"
        ))
    };
    match e {
        E::NotFound { .. } if listing => no_bucket(),
        E::NotFound { .. } => Failure::Gone,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => denied(),
        _ => match status_in(&text) {
            Some(401 | 403) => denied(),
            Some(404) if listing => no_bucket(),
            Some(404) => Failure::Gone,
            Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                if matches!(
                    s3_code(&text),
                    Some(
                        "InvalidAccessKeyId"
                            | "SignatureDoesNotMatch"
                            | "AccessDenied"
                            | "ExpiredToken"
                            | "InvalidToken"
                    )
                ) {
                    denied()
                } else {
                    Failure::Fatal(format!(
                        "S3 bucket {bucket}: request refused with HTTP {s}{code}. {text}"
                    ))
                }
            }
            _ if text.contains("incorrectly configured region") => Failure::Fatal(format!(
                "S3 bucket {bucket}: redirected elsewhere: set --s3-region to the bucket's region. {text}"
            )),
            _ => Failure::Transient(text),
        },
    }
}

/// Wait `d`, or less if the process is stopping; false when it is.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// 1 s, 2 s, 4 s, ... up to a minute.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(7))).min(Duration::from_secs(60))
}

/// Every object under the prefix.
async fn list(ctx: &Ctx) -> Result<Vec<ObjectMeta>, object_store::Error> {
    let mut stream = ctx.store.list(ctx.prefix.as_ref());
    let mut out = Vec::new();
    while let Some(r) = stream.next().await {
        match r {
            Ok(m) => out.push(m),
            // A key object_store cannot represent (empty or `.` segments): not an Imperva file.
            Err(e @ object_store::Error::InvalidPath { .. }) => {
                tracing::warn!(bucket = %ctx.cfg.bucket, error = %e, "S3 key skipped")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// What became of one listed object this poll.
enum Outcome {
    Sent,
    Gone,
    KeyError(String),
    Fatal(String),
    Stopped,
}

async fn bucket_loop(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>, fatal: Arc<Fatal>) {
    let bucket = ctx.cfg.bucket.clone();
    let mut failures = 0u32;
    loop {
        let listed = match tokio::select! {
            r = list(&ctx) => r,
            _ = stop.changed() => return,
        } {
            Ok(l) => {
                failures = 0;
                l
            }
            Err(e) => match classify(&e, &bucket, true) {
                Failure::Fatal(why) => return fatal.set(why),
                Failure::Gone | Failure::Transient(_) => {
                    failures += 1;
                    ctx.s3stats.retries.fetch_add(1, Ordering::Relaxed);
                    let d = backoff(failures);
                    tracing::warn!(%bucket, error = %chain(&e), attempt = failures, wait_ms = d.as_millis() as u64, "S3 listing failed; retrying");
                    if !pause(d, &mut stop).await {
                        return;
                    }
                    continue;
                }
            },
        };
        ctx.s3stats.listed.fetch_add(listed.len() as u64, Ordering::Relaxed);
        let names: HashSet<&str> = listed.iter().map(|m| m.location.as_ref()).collect();
        let mut todo: Vec<&ObjectMeta> = ctx.progress.with(|s| {
            s.done.retain(|k| names.contains(k.as_str()));
            listed
                .iter()
                .filter(|m| !s.done.contains(m.location.as_ref()))
                .collect()
        });
        ctx.s3stats.pending.store(todo.len() as u64, Ordering::Relaxed);
        todo.sort_by(|a, b| (a.last_modified, &a.location).cmp(&(b.last_modified, &b.location)));
        // Bounded parallelism over the objects not done and not already on their way.
        let sem = Arc::new(tokio::sync::Semaphore::new(ctx.cfg.parallel.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for meta in todo.into_iter().filter(|m| !ctx.progress.inflight(m.location.as_ref())) {
            if meta.size == 0 {
                // A folder marker or an empty upload: nothing to read or acknowledge.
                ctx.progress
                    .finish(meta.location.as_ref(), meta.last_modified.timestamp_millis());
                continue;
            }
            let permit = tokio::select! {
                p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.changed() => break,
            };
            let (ctx, meta, mut stop) = (ctx.clone(), meta.clone(), stop.clone());
            set.spawn(async move {
                let out = fetch(&ctx, &meta, &mut stop).await;
                drop(permit);
                (meta.location.to_string(), out)
            });
        }
        while let Some(r) = set.join_next().await {
            let Ok((key, out)) = r else { continue };
            match out {
                Outcome::Sent | Outcome::Stopped => {}
                Outcome::Gone => {
                    tracing::info!(%bucket, %key, "S3 object deleted before it was read; skipped");
                }
                Outcome::KeyError(why) => {
                    ctx.s3stats.key_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%bucket, %key, reason = %why, "cannot decrypt: object left not done, read again at the next poll (put its private key under --keys-dir)");
                }
                Outcome::Fatal(why) => {
                    fatal.set(why);
                    return;
                }
            }
        }
        if let Err(e) = ctx.progress.saved() {
            tracing::error!(error = %e, "cannot save the S3 state");
        }
        if !pause(ctx.cfg.interval, &mut stop).await {
            return;
        }
    }
}

/// Download one object, send its lines, and mark it done once they are all acknowledged.
async fn fetch(ctx: &Arc<Ctx>, meta: &ObjectMeta, stop: &mut watch::Receiver<bool>) -> Outcome {
    let key = meta.location.to_string();
    let mut attempt = 0u32;
    let bytes = loop {
        let got = tokio::select! {
            r = async { ctx.store.get(&meta.location).await?.bytes().await } => r,
            _ = stop.changed() => return Outcome::Stopped,
        };
        match got {
            Ok(b) => break b,
            Err(e) => match classify(&e, &ctx.cfg.bucket, false) {
                Failure::Gone => return Outcome::Gone,
                Failure::Fatal(why) => return Outcome::Fatal(why),
                Failure::Transient(why) => {
                    attempt += 1;
                    ctx.s3stats.retries.fetch_add(1, Ordering::Relaxed);
                    let d = backoff(attempt);
                    tracing::warn!(bucket = %ctx.cfg.bucket, %key, reason = %why, attempt, wait_ms = d.as_millis() as u64, "S3 download failed; retrying");
                    if !pause(d, stop).await {
                        return Outcome::Stopped;
                    }
                }
            },
        }
    };
    ctx.s3stats.fetched.fetch_add(1, Ordering::Relaxed);
    ctx.s3stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let modified_ms = meta.last_modified.timestamp_millis();
    ctx.progress.set_inflight(&key, true);
    let whole = {
        let (ctx, key) = (ctx.clone(), key.clone());
        WholeFile::new(move || {
            ctx.progress.finish(&key, modified_ms);
            ctx.s3stats.done.fetch_add(1, Ordering::Relaxed);
            ctx.s3stats
                .newest_modified_ms
                .fetch_max(modified_ms.max(0) as u64, Ordering::Relaxed);
            tracing::info!(bucket = %ctx.cfg.bucket, %key, "S3 object done: every line acknowledged");
        })
    };
    let origin = Origin {
        input: "s3",
        source: Some(key.as_str().into()),
        received_ms: now_ms(),
        skip_through: 0,
        progress: Some(whole.clone()),
        max_line_bytes: ctx.cfg.max_message_bytes,
        limit_name: "max_message_bytes",
        hold_on_key_error: true,
    };
    let limits = container::Limits {
        max_decompressed_bytes: ctx.cfg.max_decompressed_bytes,
    };
    let ctx2 = ctx.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut tx = Batcher::new(ctx2.bus.clone());
        let mut open = true;
        let read = imperva_file::frames(bytes.to_vec(), &ctx2.keys, limits, &origin, |f| {
            ctx2.stats.frames.fetch_add(1, Ordering::Relaxed);
            ctx2.s3stats.lines.fetch_add(1, Ordering::Relaxed);
            if f.truncated_from.is_some() {
                ctx2.stats.truncated.fetch_add(1, Ordering::Relaxed);
            }
            open = tx.push_blocking(f).is_ok();
            open
        });
        (read, open && tx.flush_blocking().is_ok())
    })
    .await;
    let (read, open) = match read {
        Ok(r) => r,
        Err(e) => {
            ctx.progress.set_inflight(&key, false);
            return Outcome::Fatal(format!("decoding S3 object {key}: {e}"));
        }
    };
    if let Some(why) = read.key_error {
        ctx.progress.set_inflight(&key, false);
        return Outcome::KeyError(why);
    }
    ctx.stats.whole_files.fetch_add(1, Ordering::Relaxed);
    if read.checksum_mismatch {
        ctx.stats.checksum_mismatches.fetch_add(1, Ordering::Relaxed);
    }
    if !open {
        // The pipeline is gone (stopping): the object stays not done.
        return Outcome::Stopped;
    }
    whole.sent(read.last);
    Outcome::Sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_s3_code_come_from_object_store_text() {
        let t = "Generic S3 error: Error performing list request: Server returned non-2xx status code: 400 Bad Request: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code></Error>";
        assert_eq!(status_in(t), Some(400));
        assert_eq!(s3_code(t), Some("SignatureDoesNotMatch"));
        assert_eq!(status_in("connection refused"), None);
        assert_eq!(s3_code("no xml"), None);
    }

    #[test]
    fn state_is_small_json() {
        let mut s = State::default();
        assert_eq!(serde_json::to_string(&s).unwrap(), "{}");
        s.done.insert("logs/1_2.log".into());
        s.newest_modified_ms = Some(5);
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"done":["logs/1_2.log"],"newest_modified_ms":5}"#);
        assert_eq!(serde_json::from_str::<State>(&j).unwrap(), s);
    }
}

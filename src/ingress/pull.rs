//! Cloud WAF pull connector: Imperva's log integration API (`GET <base>/logs.index`, then
//! `GET <base>/<name>` for each file listed, Basic auth `API_ID:API_KEY`), one task per account.
//!
//! Files are fetched a few at a time (`parallel`), decoded as every whole Imperva file is
//! ([`super::imperva_file`]: header, encryption with `--keys-dir`, zlib/gzip, checksum) and sent
//! one frame per line, named by the file and the line's offset, so document ids are stable
//! across re-reads. A file is done once every one of its lines has been acknowledged
//! downstream; progress per account is the highest file done with none pending below it plus
//! the set done above it, saved atomically to the state file, so a restart downloads nothing
//! that was done.
//!
//! Answers: 404 on the index means nothing yet; 404 on a listed file means not ready (or
//! expired): it is asked for again at the next polls and, after `missing_retries` of them,
//! recorded as a gap (metric and log naming it) so later files are not held up; 401/403 stop the
//! process with the reason; 429, 5xx, timeouts and refused connections are retried with backoff
//! (honouring `Retry-After`) for as long as it takes. A file whose private key is missing or
//! wrong is not marked done: it is read again at each poll (logged), until the key is there.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Fatal;
use super::files::{CheckpointError, load_state, save_state};
use super::imperva_file::{self, Origin, WholeFile};
use crate::bus::{Batcher, Sender, now_ms};
use crate::container::{self, KeyStore};

/// One account (one log repository).
#[derive(Debug, Clone)]
pub struct Account {
    /// Base URL; the index is `<url>/logs.index`.
    pub url: String,
    /// API id and key (Basic auth).
    pub auth: Option<(String, String)>,
}

/// What to collect and how.
#[derive(Clone)]
pub struct Config {
    pub accounts: Vec<Account>,
    /// Progress file; `None` keeps it in memory only.
    pub state: Option<PathBuf>,
    /// Time between two reads of the index.
    pub interval: Duration,
    /// Files downloaded at once per account.
    pub parallel: usize,
    /// Polls a listed file may answer 404 before it is recorded as a gap.
    pub missing_retries: u32,
    pub keys_dir: Option<PathBuf>,
    pub max_decompressed_bytes: usize,
    pub max_message_bytes: usize,
    /// HTTP client (proxy, extra CA) and the timeout of one request.
    pub client: reqwest::Client,
    pub request_timeout: Duration,
}

/// Progress of every account, as saved.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Account URL → its progress.
    pub accounts: BTreeMap<String, AccountState>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountState {
    /// Every listed file up to this one is done (or a gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upto: Option<String>,
    /// Files done above `upto`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub done: BTreeSet<String>,
    /// Files that never came (404 past the retries), most recent last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
    /// `endTime` (epoch ms) of the newest file done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_end_ms: Option<i64>,
    /// The index as last read (sorted), to advance `upto` as files complete.
    #[serde(skip)]
    listed: Vec<String>,
}

/// Sort key of a file name: `<a>_<b>.log` by its numbers, anything else after, by name.
fn order(name: &str) -> (u64, u64, String) {
    let stem = name.strip_suffix(".log").unwrap_or(name);
    match stem
        .split_once('_')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
    {
        Some((a, b)) => (a, b, String::new()),
        None => (u64::MAX, u64::MAX, name.to_string()),
    }
}

impl AccountState {
    fn is_done(&self, name: &str) -> bool {
        self.upto.as_deref().is_some_and(|u| order(name) <= order(u))
            || self.done.contains(name)
            || self.gaps.iter().any(|g| g == name)
    }

    /// Move `upto` over the files of the index (sorted) that are done or gaps, from the oldest.
    fn advance(&mut self) {
        let listed = std::mem::take(&mut self.listed);
        for name in &listed {
            if !self.is_done(name) {
                break;
            }
            if self.upto.as_deref().is_none_or(|u| order(name) > order(u)) {
                self.upto = Some(name.clone());
            }
        }
        if let Some(u) = self.upto.clone() {
            self.done.retain(|n| order(n) > order(&u));
        }
        let extra = self.gaps.len().saturating_sub(1000);
        self.gaps.drain(..extra);
        self.listed = listed;
    }
}

/// Counters of the pull connector.
#[derive(Debug, Default)]
pub struct Stats {
    pub listed: AtomicU64,
    pub fetched: AtomicU64,
    pub done: AtomicU64,
    pub bytes: AtomicU64,
    pub lines: AtomicU64,
    pub gaps: AtomicU64,
    pub retries: AtomicU64,
    pub key_errors: AtomicU64,
    /// Files listed and not done (all accounts).
    pub pending: AtomicU64,
    /// 1 while the oldest file of an index is still pending: the next to expire (48 h).
    pub behind: AtomicU64,
    /// Newest `endTime` done, over all accounts (epoch ms; 0: none yet).
    pub newest_end_ms: AtomicU64,
}

impl crate::telemetry::Source for Stats {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        out.counters(&[
            (
                "wafstream_pull_files_listed_total",
                "Files seen in the accounts' indexes (per poll).",
                &self.listed,
            ),
            ("wafstream_pull_files_fetched_total", "Files downloaded.", &self.fetched),
            (
                "wafstream_pull_files_done_total",
                "Files whose every line was acknowledged downstream.",
                &self.done,
            ),
            ("wafstream_pull_bytes_total", "Bytes downloaded.", &self.bytes),
            (
                "wafstream_pull_lines_total",
                "Lines sent from pulled files.",
                &self.lines,
            ),
            (
                "wafstream_pull_gaps_total",
                "Listed files that never came (recorded as gaps).",
                &self.gaps,
            ),
            (
                "wafstream_pull_retries_total",
                "Requests retried (429, 5xx, timeouts, connection errors).",
                &self.retries,
            ),
            (
                "wafstream_pull_key_errors_total",
                "Files not read for a missing or wrong private key.",
                &self.key_errors,
            ),
        ]);
        out.gauge(
            "wafstream_pull_pending_files",
            "Files listed and not done yet.",
            self.pending.load(Ordering::Relaxed),
        );
        out.gauge(
            "wafstream_pull_behind",
            "1 while the oldest file of an index is still pending (the next to expire).",
            self.behind.load(Ordering::Relaxed),
        );
        let newest = self.newest_end_ms.load(Ordering::Relaxed);
        if newest > 0 {
            let lag = (now_ms() - newest as i64).max(0) as u64 / 1000;
            out.gauge(
                "wafstream_pull_lag_seconds",
                "Age of the newest file done (now minus its endTime).",
                lag,
            );
        }
    }
}

/// The shared progress: updated as files complete (on the pipeline's threads), saved by the
/// account tasks and once more after the drain.
pub struct Progress {
    path: Option<PathBuf>,
    state: Mutex<State>,
    /// Files downloaded and sent whose lines are not all acknowledged yet, per account.
    inflight: Mutex<HashMap<String, HashSet<String>>>,
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

    fn with<T>(&self, account: &str, f: impl FnOnce(&mut AccountState) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(s.accounts.entry(account.to_string()).or_default())
    }

    fn inflight(&self, account: &str, name: &str) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .is_some_and(|s| s.contains(name))
    }

    fn set_inflight(&self, account: &str, name: &str, on: bool) {
        let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.entry(account.to_string()).or_default();
        if on {
            s.insert(name.to_string());
        } else {
            s.remove(name);
        }
    }
}

impl super::Saver for Progress {
    fn save(&self) -> Result<(), CheckpointError> {
        self.saved()
    }
}

/// Load the progress (an unreadable state file is an error now) and start one task per account.
pub fn start(
    cfg: Config,
    bus: Sender,
    stats: Arc<super::Stats>,
    stop: watch::Receiver<bool>,
    fatal: Arc<Fatal>,
) -> Result<(Arc<Progress>, Vec<tokio::task::JoinHandle<()>>), CheckpointError> {
    let state: State = load_state(cfg.state.as_deref())?;
    let pstats = Arc::new(Stats::default());
    for a in state.accounts.values() {
        if let Some(t) = a.newest_end_ms {
            pstats.newest_end_ms.fetch_max(t.max(0) as u64, Ordering::Relaxed);
        }
    }
    crate::telemetry::global().register("pull", pstats.clone());
    let progress = Arc::new(Progress {
        path: cfg.state.clone(),
        state: Mutex::new(state),
        inflight: Mutex::default(),
    });
    let cfg = Arc::new(cfg);
    let keys = Arc::new(KeyStore::new(
        cfg.keys_dir.clone().unwrap_or_else(|| PathBuf::from("keys")),
    ));
    let tasks = cfg
        .accounts
        .iter()
        .map(|a| {
            let acct = Arc::new(a.clone());
            tokio::spawn(account_loop(
                acct,
                cfg.clone(),
                keys.clone(),
                progress.clone(),
                bus.clone(),
                stats.clone(),
                pstats.clone(),
                stop.clone(),
                fatal.clone(),
            ))
        })
        .collect();
    Ok((progress, tasks))
}

/// How a request ended.
enum Got {
    Body(bytes::Bytes),
    NotFound,
    /// 401/403 or another answer that will not change by itself.
    Fatal(String),
    Stopped,
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

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s.min(3600)))
}

/// GET with retries for everything that may pass (429, 5xx, timeouts, connection errors).
async fn get(cfg: &Config, acct: &Account, url: &str, pstats: &Stats, stop: &mut watch::Receiver<bool>) -> Got {
    let mut attempt = 0u32;
    loop {
        let mut req = cfg.client.get(url).timeout(cfg.request_timeout);
        if let Some((id, key)) = &acct.auth {
            req = req.basic_auth(id, Some(key));
        }
        let why;
        let mut wait = None;
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match status {
                    200..=299 => match resp.bytes().await {
                        Ok(b) => return Got::Body(b),
                        Err(e) => why = format!("reading the body: {e}"),
                    },
                    404 => return Got::NotFound,
                    401 | 403 => {
                        return Got::Fatal(format!(
                            "{url}: HTTP {status}: the log API refused the API id/key (check --pull-api-id and --pull-api-key)"
                        ));
                    }
                    408 | 429 | 500..=599 => {
                        wait = retry_after(&resp);
                        why = format!("HTTP {status}");
                    }
                    _ => return Got::Fatal(format!("{url}: HTTP {status}: unexpected answer from the log API")),
                }
            }
            Err(e) => why = e.to_string(),
        }
        attempt += 1;
        pstats.retries.fetch_add(1, Ordering::Relaxed);
        let backoff = Duration::from_millis(500u64.saturating_mul(1 << attempt.min(7))).min(Duration::from_secs(60));
        let d = wait.unwrap_or(backoff);
        tracing::warn!(url, reason = %why, attempt, wait_ms = d.as_millis() as u64, "log API request failed; retrying");
        if !pause(d, stop).await {
            return Got::Stopped;
        }
    }
}

/// `endTime` from a file's plain header, when there is one.
fn end_time(bytes: &[u8]) -> Option<i64> {
    let head = &bytes[..bytes.len().min(4096)];
    let end = memchr::memmem::find(head, b"|==|")?;
    std::str::from_utf8(&head[..end])
        .ok()?
        .lines()
        .find_map(|l| l.trim().strip_prefix("endTime:").and_then(|v| v.trim().parse().ok()))
}

/// What became of one listed file this poll.
enum Outcome {
    Sent,
    Missing,
    KeyError(String),
    Fatal(String),
    Stopped,
}

#[allow(clippy::too_many_arguments)]
async fn account_loop(
    acct: Arc<Account>,
    cfg: Arc<Config>,
    keys: Arc<KeyStore>,
    progress: Arc<Progress>,
    bus: Sender,
    stats: Arc<super::Stats>,
    pstats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    fatal: Arc<Fatal>,
) {
    let base = acct.url.trim_end_matches('/').to_string();
    let account = acct.url.clone();
    let mut missing: HashMap<String, u32> = HashMap::new();
    let mut last_behind_warning: Option<Instant> = None;
    let mut pending_here = 0u64;
    loop {
        let listed: Vec<String> = match get(&cfg, &acct, &format!("{base}/logs.index"), &pstats, &mut stop).await {
            Got::Body(b) => {
                let mut names: Vec<String> = String::from_utf8_lossy(&b)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                names.sort_by_key(|n| order(n));
                names.dedup();
                names
            }
            Got::NotFound => Vec::new(),
            Got::Fatal(why) => return fatal.set(why),
            Got::Stopped => return,
        };
        pstats.listed.fetch_add(listed.len() as u64, Ordering::Relaxed);
        let todo: Vec<String> = progress.with(&account, |s| {
            s.listed = listed.clone();
            s.advance();
            listed.iter().filter(|n| !s.is_done(n)).cloned().collect()
        });
        let pending_now = todo.len() as u64;
        pstats.pending.fetch_add(pending_now, Ordering::Relaxed);
        pstats.pending.fetch_sub(pending_here, Ordering::Relaxed);
        pending_here = pending_now;
        let behind = listed.len() > 1 && listed.first().is_some_and(|n| todo.first() == Some(n));
        pstats.behind.store(u64::from(behind), Ordering::Relaxed);
        if behind && last_behind_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(300)) {
            last_behind_warning = Some(Instant::now());
            tracing::warn!(
                account = %account,
                oldest = %listed[0],
                pending = todo.len(),
                "falling behind the log API's retention: the oldest listed file is not done yet and is the next Imperva deletes (48 h); add parallelism (--pull-parallel) or workers"
            );
        }
        // Bounded parallelism over the files not done and not already on their way.
        let sem = Arc::new(tokio::sync::Semaphore::new(cfg.parallel.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for name in todo.into_iter().filter(|n| !progress.inflight(&account, n)) {
            let permit = tokio::select! {
                p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.changed() => break,
            };
            let (cfg, acct, keys, progress, bus, stats, pstats) = (
                cfg.clone(),
                acct.clone(),
                keys.clone(),
                progress.clone(),
                bus.clone(),
                stats.clone(),
                pstats.clone(),
            );
            let mut stop = stop.clone();
            set.spawn(async move {
                let out = fetch(&cfg, &acct, &name, &keys, &progress, bus, &stats, &pstats, &mut stop).await;
                drop(permit);
                (name, out)
            });
        }
        while let Some(r) = set.join_next().await {
            let Ok((name, out)) = r else { continue };
            match out {
                Outcome::Sent => {
                    missing.remove(&name);
                }
                Outcome::Missing => {
                    let n = missing.entry(name.clone()).or_default();
                    *n += 1;
                    if *n > cfg.missing_retries {
                        missing.remove(&name);
                        pstats.gaps.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(account = %account, file = %name, polls = cfg.missing_retries + 1, "listed file never came (404): recorded as a gap");
                        progress.with(&account, |s| {
                            s.gaps.push(name.clone());
                            s.advance();
                        });
                    } else {
                        tracing::info!(account = %account, file = %name, attempt = *n, "listed file not ready (404); asking again at the next poll");
                    }
                }
                Outcome::KeyError(why) => {
                    pstats.key_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(account = %account, file = %name, reason = %why, "cannot decrypt: file left not done, read again at the next poll (put its private key under --keys-dir)");
                }
                Outcome::Fatal(why) => {
                    fatal.set(why);
                    return;
                }
                Outcome::Stopped => {}
            }
        }
        progress.with(&account, |s| s.advance());
        if let Err(e) = progress.saved() {
            tracing::error!(error = %e, "cannot save the pull state");
        }
        if !pause(cfg.interval, &mut stop).await {
            return;
        }
    }
}

/// Download one file, send its lines, and mark it done once they are all acknowledged.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    cfg: &Config,
    acct: &Account,
    name: &str,
    keys: &Arc<KeyStore>,
    progress: &Arc<Progress>,
    bus: Sender,
    stats: &Arc<super::Stats>,
    pstats: &Arc<Stats>,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let base = acct.url.trim_end_matches('/');
    let bytes = match get(cfg, acct, &format!("{base}/{name}"), pstats, stop).await {
        Got::Body(b) => b,
        Got::NotFound => return Outcome::Missing,
        Got::Fatal(why) => return Outcome::Fatal(why),
        Got::Stopped => return Outcome::Stopped,
    };
    pstats.fetched.fetch_add(1, Ordering::Relaxed);
    pstats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let end_ms = end_time(&bytes);
    let account = acct.url.clone();
    progress.set_inflight(&account, name, true);
    let whole = {
        let (progress, pstats, account, name) = (progress.clone(), pstats.clone(), account.clone(), name.to_string());
        WholeFile::new(move || {
            progress.set_inflight(&account, &name, false);
            progress.with(&account, |s| {
                s.done.insert(name.clone());
                s.advance();
                if let Some(t) = end_ms {
                    s.newest_end_ms = Some(s.newest_end_ms.map_or(t, |n| n.max(t)));
                    pstats.newest_end_ms.fetch_max(t.max(0) as u64, Ordering::Relaxed);
                }
            });
            pstats.done.fetch_add(1, Ordering::Relaxed);
            tracing::info!(account = %account, file = %name, "file done: every line acknowledged");
        })
    };
    let origin = Origin {
        input: "pull",
        source: Some(name.into()),
        received_ms: now_ms(),
        skip_through: 0,
        progress: Some(whole.clone()),
        max_line_bytes: cfg.max_message_bytes,
        limit_name: "max_message_bytes",
        hold_on_key_error: true,
    };
    let limits = container::Limits {
        max_decompressed_bytes: cfg.max_decompressed_bytes,
    };
    let (keys, stats2, pstats2) = (keys.clone(), stats.clone(), pstats.clone());
    let read = tokio::task::spawn_blocking(move || {
        let mut tx = Batcher::new(bus);
        let mut open = true;
        let read = imperva_file::frames(bytes.to_vec(), &keys, limits, &origin, |f| {
            stats2.frames.fetch_add(1, Ordering::Relaxed);
            pstats2.lines.fetch_add(1, Ordering::Relaxed);
            if f.truncated_from.is_some() {
                stats2.truncated.fetch_add(1, Ordering::Relaxed);
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
            progress.set_inflight(&account, name, false);
            return Outcome::Fatal(format!("decoding {name}: {e}"));
        }
    };
    if let Some(why) = read.key_error {
        progress.set_inflight(&account, name, false);
        return Outcome::KeyError(why);
    }
    stats.whole_files.fetch_add(1, Ordering::Relaxed);
    if read.checksum_mismatch {
        stats.checksum_mismatches.fetch_add(1, Ordering::Relaxed);
    }
    if !open {
        // The pipeline is gone (stopping): the file stays not done.
        return Outcome::Stopped;
    }
    whole.sent(read.last);
    Outcome::Sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_the_highest_file_with_nothing_pending_below_plus_the_set_above() {
        let listed: Vec<String> = ["7_9.log", "7_10.log", "7_11.log", "7_12.log"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut s = AccountState {
            listed,
            ..AccountState::default()
        };
        s.done.insert("7_10.log".into());
        s.done.insert("7_12.log".into());
        s.advance();
        assert_eq!(s.upto, None, "7_9 is pending");
        s.done.insert("7_9.log".into());
        s.advance();
        assert_eq!(s.upto.as_deref(), Some("7_10.log"), "numeric order, not text order");
        assert_eq!(s.done.iter().collect::<Vec<_>>(), ["7_12.log"]);
        s.gaps.push("7_11.log".into());
        s.advance();
        assert_eq!(s.upto.as_deref(), Some("7_12.log"));
        assert!(s.done.is_empty());
        assert!(s.is_done("7_3.log") && !s.is_done("7_13.log"));
    }

    #[test]
    fn end_time_comes_from_the_plain_header() {
        let f = b"accountId:1\nendTime:1700000000123\nformat:CEF\n|==|\nbody";
        assert_eq!(end_time(f), Some(1_700_000_000_123));
        assert_eq!(end_time(b"no header"), None);
    }
}

//! File inputs, filestream-style: glob patterns polled for new files and new lines. Files are
//! followed by identity (device + inode), so a rotated (renamed) file is read to its end while
//! the new one starts from its beginning; a file that shrank was truncated and is read again
//! from the start.
//!
//! Two kinds of file:
//! - **line files** are tailed: only complete lines are sent; a last line still being written
//!   waits for its newline; lines longer than the limit are cut and flagged.
//! - **whole files** — Imperva log files (header + `|==|` + a possibly encrypted, compressed
//!   body) and gzip-compressed line files (`.gz` rotations) — are read once, when their size
//!   stayed the same for one poll, and decoded by [`super::imperva_file`].
//!
//! Progress is what the pipeline acknowledged, not what was read: each frame carries a token
//! whose settling advances its file's position. The checkpoint file holds those positions and
//! is written atomically and durably (temporary file, fsync, rename, fsync of the directory).
//! A checkpoint that cannot be read stops the process with a clear error instead of silently
//! starting over.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Stats;
use super::imperva_file::{self, Origin};
use super::lines::{Columns, LineCutter};
use crate::bus::{Batcher, Progress, RawFrame, Sender, Token, now_ms};
use crate::container::{self, KeyStore};

/// What to read and where to keep progress.
#[derive(Debug, Clone)]
pub struct Config {
    pub globs: Vec<String>,
    /// Checkpoint file; `None` keeps progress in memory only.
    pub checkpoint: Option<PathBuf>,
    pub poll: Duration,
    pub max_message_bytes: usize,
    /// Private keys of encrypted Imperva files (`<DIR>/<keyId>/Private.key`).
    pub keys_dir: Option<PathBuf>,
    /// Largest body a compressed file may inflate to.
    pub max_decompressed_bytes: usize,
    /// Files whose name (or path) matches one of these are not read: files still being
    /// uploaded under a temporary name, renamed into place when complete.
    pub exclude: Vec<glob::Pattern>,
    /// What becomes of a whole file once every line of it is acknowledged.
    pub done: DoneAction,
}

/// What becomes of a whole file once every line of it is acknowledged (landing directories).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DoneAction {
    /// Left where it is (remembered as done in the checkpoint).
    #[default]
    Keep,
    Delete,
    /// Moved into this directory.
    Move(PathBuf),
}

impl Config {
    fn excluded(&self, path: &Path) -> bool {
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        self.exclude.iter().any(|p| p.matches(&name) || p.matches_path(path))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "checkpoint {path} cannot be used: {reason}. Nothing was read. To start over from the beginning of every file, move the checkpoint aside (or delete it) and start again"
    )]
    Unreadable { path: PathBuf, reason: String },
    #[error("checkpoint {path} cannot be written: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Checkpoints {
    /// `dev:inode` → progress.
    files: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Entry {
    path: String,
    /// Line files: the byte offset up to which every line is delivered. Whole files: the
    /// number of the last line delivered.
    offset: u64,
    /// A whole (Imperva or gzip) file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    whole: bool,
    /// A whole file all of whose lines are delivered: not read again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    done: bool,
}

/// Read the checkpoint: missing is a fresh start; anything unreadable is an error, and so is a
/// folder where it cannot be written (found now, not in the save loop).
pub fn load(path: Option<&Path>) -> Result<Checkpoints, CheckpointError> {
    load_state(path)
}

/// Read a JSON state file (checkpoints, collectors' progress) as [`load`] does.
pub fn load_state<T: serde::de::DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, CheckpointError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let tmp = path.with_extension("tmp");
    if let Err(e) = File::create(&tmp).and_then(|_| std::fs::remove_file(&tmp)) {
        return Err(CheckpointError::Write {
            path: path.into(),
            source: e,
        });
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) => {
            return Err(CheckpointError::Unreadable {
                path: path.into(),
                reason: e.to_string(),
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Unreadable {
        path: path.into(),
        reason: format!("not a wafstream checkpoint ({e})"),
    })
}

fn save(path: &Path, cps: &Checkpoints) -> Result<(), CheckpointError> {
    save_state(path, cps)
}

/// Write a JSON state file atomically and durably: a crash leaves the old one or the new one,
/// never half.
pub fn save_state<T: Serialize>(path: &Path, state: &T) -> Result<(), CheckpointError> {
    use std::io::Write;
    let err = |source| CheckpointError::Write {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(&body).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

/// One file's delivered position, advanced by the pipeline as it settles the file's frames.
#[derive(Default)]
struct Lane {
    acked: AtomicU64,
}

impl Progress for Lane {
    fn done(&self, pos: u64) {
        self.acked.fetch_max(pos, Ordering::AcqRel);
    }
}

enum Kind {
    Tail {
        file: File,
        /// Next byte to read.
        read_to: u64,
        cutter: LineCutter,
        cols: Columns,
    },
    Whole {
        /// Size at the previous poll: read once it stops changing.
        size_seen: Option<u64>,
        /// Lines delivered before a restart.
        skip_through: u64,
        /// Number of the last frame, once read.
        last: Option<u64>,
    },
}

struct Tracked {
    kind: Kind,
    path: Arc<str>,
    lane: Arc<Lane>,
    /// The done action was carried out (or failed and was logged).
    finished: bool,
    unseen_polls: u32,
}

impl Tracked {
    fn entry(&self) -> Entry {
        let acked = self.lane.acked.load(Ordering::Acquire);
        match &self.kind {
            Kind::Tail { .. } => Entry {
                path: self.path.to_string(),
                offset: acked,
                whole: false,
                done: false,
            },
            Kind::Whole { skip_through, last, .. } => {
                let acked = acked.max(*skip_through);
                Entry {
                    path: self.path.to_string(),
                    offset: acked,
                    whole: true,
                    done: last.is_some_and(|l| acked >= l),
                }
            }
        }
    }
}

/// Read at most this much per file per poll, so one busy file cannot starve the others.
const READ: usize = 1 << 20;
const READS_PER_POLL: usize = 16;
/// Polls a file may stay unmatched (rotated away) before its handle is closed.
const KEEP_UNMATCHED_POLLS: u32 = 5;

fn identity(md: &std::fs::Metadata) -> String {
    format!("{}:{}", md.dev(), md.ino())
}

/// Follow the files until `stop` is set. Returns the progress to save once the pipeline has
/// settled what was sent.
pub fn run(cfg: Config, cps: Checkpoints, bus: Sender, stats: Arc<Stats>, stop: Arc<AtomicBool>) -> FinalSave {
    let keys = KeyStore::new(cfg.keys_dir.clone().unwrap_or_else(|| PathBuf::from("keys")));
    let mut bus = Batcher::new(bus);
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut buf = vec![0u8; READ];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        discover(&cfg, &mut tracked, &cps);
        let mut open = true;
        for t in tracked.values_mut() {
            let ok = match &mut t.kind {
                Kind::Tail { .. } => read_tail(t, &cfg, &mut bus, &stats, &mut buf),
                Kind::Whole { .. } => read_whole(t, &cfg, &keys, &mut bus, &stats),
            };
            if !ok {
                open = false;
                break;
            }
        }
        if cfg.done != DoneAction::Keep {
            for t in tracked.values_mut() {
                finish(t, &cfg.done);
            }
        }
        tracked.retain(|_, t| t.unseen_polls <= KEEP_UNMATCHED_POLLS);
        if let Some(p) = &cfg.checkpoint {
            if let Err(e) = save(p, &snapshot(&tracked)) {
                tracing::error!(error = %e, "cannot save the file checkpoint");
            }
        }
        if stopping || !open || stop.load(Ordering::Relaxed) {
            return FinalSave {
                path: cfg.checkpoint,
                tracked,
            };
        }
        let mut slept = Duration::ZERO;
        while slept < cfg.poll && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            slept += Duration::from_millis(20);
        }
    }
}

/// Delete or move a whole file whose every line is acknowledged.
fn finish(t: &mut Tracked, action: &DoneAction) {
    if t.finished || !matches!(t.kind, Kind::Whole { .. }) || !t.entry().done {
        return;
    }
    t.finished = true;
    let path = Path::new(&*t.path);
    let r = match action {
        DoneAction::Keep => return,
        DoneAction::Delete => std::fs::remove_file(path),
        DoneAction::Move(dir) => {
            let to = dir.join(path.file_name().unwrap_or_default());
            std::fs::rename(path, &to).or_else(|_| std::fs::copy(path, &to).and_then(|_| std::fs::remove_file(path)))
        }
    };
    match r {
        Ok(()) => tracing::info!(file = %t.path, action = ?action, "whole file done: every line acknowledged"),
        Err(e) => tracing::warn!(file = %t.path, error = %e, "whole file done, but it could not be removed or moved"),
    }
}

/// The files followed when the source stopped; [`FinalSave::save`] writes their acknowledged
/// positions once the pipeline has drained.
pub struct FinalSave {
    path: Option<PathBuf>,
    tracked: HashMap<String, Tracked>,
}

impl FinalSave {
    pub fn save(&self) -> Result<(), CheckpointError> {
        match &self.path {
            Some(p) => save(p, &snapshot(&self.tracked)),
            None => Ok(()),
        }
    }
}

/// Files no longer followed (rotated away or deleted) are forgotten: an inode number can be
/// reused by a new file, which must then start from its beginning.
fn snapshot(tracked: &HashMap<String, Tracked>) -> Checkpoints {
    Checkpoints {
        files: tracked.iter().map(|(id, t)| (id.clone(), t.entry())).collect(),
    }
}

fn discover(cfg: &Config, tracked: &mut HashMap<String, Tracked>, cps: &Checkpoints) {
    for t in tracked.values_mut() {
        t.unseen_polls += 1;
    }
    for pattern in &cfg.globs {
        let Ok(paths) = glob::glob(pattern) else {
            continue;
        };
        for path in paths.flatten() {
            if cfg.excluded(&path) {
                continue;
            }
            let Ok(md) = std::fs::metadata(&path) else { continue };
            if !md.is_file() {
                continue;
            }
            let id = identity(&md);
            let shown: Arc<str> = path.to_string_lossy().into();
            if let Some(t) = tracked.get_mut(&id) {
                t.unseen_polls = 0;
                t.path = shown;
                continue;
            }
            // An empty file says nothing about its kind yet; look again at the next poll.
            if md.len() == 0 {
                continue;
            }
            let Ok(mut file) = File::open(&path) else { continue };
            let mut head = vec![0u8; 64 * 1024];
            let n = read_full(&mut file, &mut head).unwrap_or(0);
            head.truncate(n);
            let saved = cps.files.get(&id);
            let lane = Arc::new(Lane::default());
            let kind = if container::looks_like_container(&head) {
                let skip_through = saved.filter(|e| e.whole).map(|e| e.offset).unwrap_or(0);
                let done = saved.is_some_and(|e| e.whole && e.done);
                lane.acked.store(skip_through, Ordering::Relaxed);
                Kind::Whole {
                    size_seen: None,
                    skip_through,
                    last: done.then_some(skip_through),
                }
            } else {
                // Resume where the checkpoint says, unless the file is now shorter (truncated).
                let offset = saved
                    .filter(|e| !e.whole)
                    .map(|e| e.offset)
                    .filter(|o| *o <= md.len())
                    .unwrap_or(0);
                lane.acked.store(offset, Ordering::Relaxed);
                let cols = if offset > 0 && head.first() == Some(&b'#') {
                    columns_before(&mut file, offset, cfg.max_message_bytes)
                } else {
                    Columns::default()
                };
                Kind::Tail {
                    file,
                    read_to: offset,
                    cutter: LineCutter::new(offset, cfg.max_message_bytes),
                    cols,
                }
            };
            tracked.insert(
                id,
                Tracked {
                    kind,
                    path: shown,
                    lane,
                    finished: false,
                    unseen_polls: 0,
                },
            );
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The W3C columns in force at `offset` (the last `#Fields:` directive before it), for a line
/// file resumed from a checkpoint.
fn columns_before(file: &mut File, offset: u64, cap: usize) -> Columns {
    let mut cols = Columns::default();
    if file.seek(SeekFrom::Start(0)).is_err() {
        return cols;
    }
    let mut cutter = LineCutter::new(0, cap);
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    while at < offset {
        let want = buf.len().min((offset - at) as usize);
        let n = match file.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        at += n as u64;
        cutter.feed(&buf[..n]);
        while let Some(l) = cutter.next_line(at >= offset) {
            cols.directive(&l.bytes);
        }
    }
    cols
}

/// Send the complete lines written since the last poll. Returns false when the bus is closed.
fn read_tail(t: &mut Tracked, cfg: &Config, bus: &mut Batcher, stats: &Stats, buf: &mut [u8]) -> bool {
    let Kind::Tail {
        file,
        read_to,
        cutter,
        cols,
    } = &mut t.kind
    else {
        return true;
    };
    // A file shorter than what we read was truncated: start again, with a fresh position.
    if let Ok(md) = file.metadata() {
        if md.len() < *read_to {
            *read_to = 0;
            *cutter = LineCutter::new(0, cfg.max_message_bytes);
            *cols = Columns::default();
            t.lane = Arc::new(Lane::default());
        }
    }
    if file.seek(SeekFrom::Start(*read_to)).is_err() {
        return true;
    }
    let progress: Arc<dyn Progress> = t.lane.clone();
    for _ in 0..READS_PER_POLL {
        let n = match read_full(file, buf) {
            Ok(n) => n,
            Err(_) => return true,
        };
        *read_to += n as u64;
        cutter.feed(&buf[..n]);
        while let Some(line) = cutter.next_line(false) {
            if cols.directive(&line.bytes) {
                continue;
            }
            stats.frames.fetch_add(1, Ordering::Relaxed);
            if line.truncated_from.is_some() {
                stats.truncated.fetch_add(1, Ordering::Relaxed);
            }
            let frame = RawFrame {
                bytes: line.bytes,
                received_ms: now_ms(),
                input: "file",
                source: Some(t.path.clone()),
                offset: Some(line.offset),
                truncated_from: line.truncated_from,
                w3c: cols.current(),
                token: Token::new(progress.clone(), line.end),
                ..RawFrame::default()
            };
            // Waiting here is the backpressure when the bus is full.
            if bus.push_blocking(frame).is_err() {
                return false;
            }
        }
        if n < buf.len() {
            break;
        }
    }
    bus.flush_blocking().is_ok()
}

/// Read a whole file once its size held still for a poll. Returns false when the bus is closed.
fn read_whole(t: &mut Tracked, cfg: &Config, keys: &KeyStore, bus: &mut Batcher, stats: &Stats) -> bool {
    let Kind::Whole {
        size_seen,
        skip_through,
        last,
    } = &mut t.kind
    else {
        return true;
    };
    if last.is_some() {
        return true;
    }
    let Ok(md) = std::fs::metadata(&*t.path) else {
        return true;
    };
    if *size_seen != Some(md.len()) {
        *size_seen = Some(md.len());
        return true;
    }
    let bytes = match std::fs::read(&*t.path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(file = %t.path, error = %e, "cannot read; trying again at the next poll");
            return true;
        }
    };
    let origin = Origin {
        input: "file",
        source: Some(t.path.clone()),
        received_ms: now_ms(),
        skip_through: *skip_through,
        progress: Some(t.lane.clone()),
        max_line_bytes: cfg.max_message_bytes,
        limit_name: "max_message_bytes",
        hold_on_key_error: false,
    };
    let limits = container::Limits {
        max_decompressed_bytes: cfg.max_decompressed_bytes,
    };
    let mut open = true;
    let read = imperva_file::frames(bytes, keys, limits, &origin, |f| {
        stats.frames.fetch_add(1, Ordering::Relaxed);
        if f.truncated_from.is_some() {
            stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        open = bus.push_blocking(f).is_ok();
        open
    });
    open = open && bus.flush_blocking().is_ok();
    if read.checksum_mismatch {
        stats.checksum_mismatches.fetch_add(1, Ordering::Relaxed);
    }
    stats.whole_files.fetch_add(1, Ordering::Relaxed);
    *last = Some(read.last);
    tracing::info!(file = %t.path, lines = read.last, "read whole file");
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        std::fs::write(&p, b"{\"files\": {\"1:2\": {\"path\": \"a\", \"off").unwrap();
        let e = load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("move the checkpoint aside"), "{e}");
        assert!(load(Some(&dir.path().join("missing.json"))).unwrap().files.is_empty());
    }

    #[test]
    fn checkpoint_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        let mut cps = Checkpoints::default();
        cps.files.insert(
            "1:2".into(),
            Entry {
                path: "x.log".into(),
                offset: 42,
                whole: false,
                done: false,
            },
        );
        save(&p, &cps).unwrap();
        assert_eq!(load(Some(&p)).unwrap(), cps);
        assert!(!dir.path().join("cp.tmp").exists());
    }
}

//! File inputs, filestream-style: glob patterns polled for new files and new lines; files are
//! followed by identity (device + inode), so a rotated (renamed) file is read to its end while
//! the new one starts from its beginning; a file that shrank was truncated and is read again
//! from the start. Progress is kept in a checkpoint file (written atomically) so a restart
//! resumes where it stopped instead of re-reading everything.
//!
//! Only complete lines are sent; a last line still being written waits for its newline. Lines
//! longer than the limit are cut and flagged, like network frames.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Stats;
use crate::bus::{RawFrame, Sender, now_ms};

/// What to read and where to keep progress.
#[derive(Debug, Clone)]
pub struct Config {
    pub globs: Vec<String>,
    /// Checkpoint file; `None` keeps progress in memory only.
    pub checkpoint: Option<PathBuf>,
    pub poll: Duration,
    pub max_message_bytes: usize,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Checkpoints {
    /// `dev:inode` → progress.
    files: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Entry {
    path: String,
    offset: u64,
}

struct Tracked {
    file: File,
    path: Arc<str>,
    /// Next byte to read: just after the last complete line sent.
    offset: u64,
    unseen_polls: u32,
}

/// Read at most this much per file per poll, so one busy file cannot starve the others.
const CHUNK: usize = 4 << 20;
/// Polls a file may stay unmatched (rotated away) before its handle is closed.
const KEEP_UNMATCHED_POLLS: u32 = 5;

fn identity(md: &std::fs::Metadata) -> String {
    format!("{}:{}", md.dev(), md.ino())
}

fn load(path: Option<&Path>) -> Checkpoints {
    path.and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(path: &Path, cps: &Checkpoints) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(cps).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

/// Poll until `stop` is set, then read what is there one last time and save the checkpoint.
pub fn run(cfg: Config, bus: Sender, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut cps = load(cfg.checkpoint.as_deref());
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        discover(&cfg, &mut tracked, &cps);
        let mut open = true;
        for (id, t) in tracked.iter_mut() {
            if !read_new(t, &cfg, &bus, &stats, &mut buf) {
                open = false;
            }
            cps.files.insert(
                id.clone(),
                Entry {
                    path: t.path.to_string(),
                    offset: t.offset,
                },
            );
        }
        tracked.retain(|_, t| t.unseen_polls <= KEEP_UNMATCHED_POLLS);
        // Forget files no longer followed (rotated away or deleted): an inode number can be
        // reused by a new file, which must then start from its beginning.
        cps.files.retain(|id, _| tracked.contains_key(id));
        if let Some(p) = &cfg.checkpoint {
            if let Err(e) = save(p, &cps) {
                eprintln!("wafstream: cannot save checkpoint {}: {e}", p.display());
            }
        }
        if stopping || !open {
            return;
        }
        let mut slept = Duration::ZERO;
        while slept < cfg.poll && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            slept += Duration::from_millis(20);
        }
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
            let Ok(mut file) = File::open(&path) else { continue };
            // Resume where the checkpoint says, unless the file is now shorter (truncated).
            let offset = cps
                .files
                .get(&id)
                .map(|e| e.offset)
                .filter(|o| *o <= md.len())
                .unwrap_or(0);
            if file.seek(SeekFrom::Start(offset)).is_err() {
                continue;
            }
            tracked.insert(
                id,
                Tracked {
                    file,
                    path: shown,
                    offset,
                    unseen_polls: 0,
                },
            );
        }
    }
}

/// Send the complete lines written since the last poll. Returns false when the bus is closed.
fn read_new(t: &mut Tracked, cfg: &Config, bus: &Sender, stats: &Stats, buf: &mut [u8]) -> bool {
    // A file shorter than what we read was truncated: start again.
    if let Ok(md) = t.file.metadata() {
        if md.len() < t.offset {
            t.offset = 0;
        }
    }
    // Catch up in chunks, up to a bound per poll so other files get their turn.
    for _ in 0..16 {
        match read_chunk(t, cfg, bus, stats, buf) {
            None => return false,
            Some(true) => continue,
            Some(false) => break,
        }
    }
    true
}

/// Read one chunk from the current offset. `None`: the bus is closed; `Some(more)`: whether a
/// full chunk was read (there may be more right away).
fn read_chunk(t: &mut Tracked, cfg: &Config, bus: &Sender, stats: &Stats, buf: &mut [u8]) -> Option<bool> {
    if t.file.seek(SeekFrom::Start(t.offset)).is_err() {
        return Some(false);
    }
    let mut filled = 0;
    while filled < buf.len() {
        match t.file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => break,
        }
    }
    let data = &buf[..filled];
    let mut start = 0;
    while let Some(nl) = memchr::memchr(b'\n', &data[start..]) {
        let mut line = &data[start..start + nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let line_offset = t.offset + start as u64;
        start += nl + 1;
        if line.is_empty() {
            continue;
        }
        let cut = line.len() > cfg.max_message_bytes;
        let keep = &line[..line.len().min(cfg.max_message_bytes)];
        stats.frames.fetch_add(1, Ordering::Relaxed);
        if cut {
            stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let frame = RawFrame {
            bytes: bytes::Bytes::copy_from_slice(keep),
            received_ms: now_ms(),
            input: "file",
            peer: None,
            truncated_from: cut.then_some(line.len()),
            source: Some(t.path.clone()),
            offset: Some(line_offset),
        };
        // Waiting here is the backpressure when the bus is full.
        if bus.blocking_send(frame).is_err() {
            return None;
        }
    }
    // A line longer than a whole chunk without a newline: cut it rather than wait forever.
    if start == 0 && filled == buf.len() {
        start = filled;
        stats.truncated.fetch_add(1, Ordering::Relaxed);
        let frame = RawFrame {
            bytes: bytes::Bytes::copy_from_slice(&data[..cfg.max_message_bytes.min(filled)]),
            received_ms: now_ms(),
            input: "file",
            peer: None,
            truncated_from: Some(filled),
            source: Some(t.path.clone()),
            offset: Some(t.offset),
        };
        if bus.blocking_send(frame).is_err() {
            return None;
        }
    }
    t.offset += start as u64;
    Some(filled == buf.len() && start > 0)
}

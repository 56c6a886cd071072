//! Whole Imperva log files (header + `|==|` + body, the body possibly encrypted and
//! zlib/gzip-compressed) and gzip line files, read once into frames: one frame per body line
//! (`offset`: the line's byte offset in the decoded body; its acknowledgement position: its
//! number, from 1, directive lines counted), with the W3C columns
//! of the header or of the body's `#Fields:` directives. A file that cannot be opened becomes
//! one refused frame (a dead letter naming the reason).

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::lines::Columns;
use crate::bus::{Progress, RawFrame, Token};
use crate::container::{self, Checksum, KeyStore, Limits};

/// Where the frames of one file come from and where their acknowledgements go.
pub struct Origin {
    pub input: &'static str,
    pub source: Option<Arc<str>>,
    pub received_ms: i64,
    /// Lines up to this number were delivered before (a restart): not sent again.
    pub skip_through: u64,
    pub progress: Option<Arc<dyn Progress>>,
    /// Longest line; longer ones are cut and flagged.
    pub max_line_bytes: usize,
    pub limit_name: &'static str,
    /// A file whose key is missing or wrong is not sent anywhere but reported in
    /// [`Read::key_error`], so that it can be read again once the key is there (collectors);
    /// otherwise it is a dead letter like any file that does not open.
    pub hold_on_key_error: bool,
}

/// What reading a file found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Read {
    /// Number of the last frame sent (0: none): the file is done once this one is settled.
    pub last: u64,
    pub checksum_mismatch: bool,
    /// The file did not open and went to the dead-letter output whole.
    pub refused: bool,
    /// With [`Origin::hold_on_key_error`]: the file's key is missing or wrong, nothing was sent.
    pub key_error: Option<String>,
}

/// Why a file whose key is missing or wrong did not open (with [`Origin::hold_on_key_error`]).
pub fn key_error(e: &container::ContainerError) -> bool {
    use container::ContainerError as E;
    matches!(
        e,
        E::MissingKey { .. } | E::BadKey { .. } | E::RsaDecrypt | E::AesKeyLength(_)
    )
}

/// Decode `bytes` and hand each line to `emit` (which returns false when the receiver is gone).
pub fn frames(
    bytes: Vec<u8>,
    keys: &KeyStore,
    limits: Limits,
    origin: &Origin,
    mut emit: impl FnMut(RawFrame) -> bool,
) -> Read {
    let token = |pos: u64| match &origin.progress {
        Some(p) => Token::new(p.clone(), pos),
        None => Token::none(),
    };
    let opened = match container::open(&bytes, keys, limits) {
        Ok(o) => o,
        Err(e) if origin.hold_on_key_error && key_error(&e) => {
            return Read {
                key_error: Some(e.to_string()),
                ..Read::default()
            };
        }
        Err(e) => {
            let name = origin.source.as_deref().unwrap_or("-");
            tracing::warn!(file = name, error = %e, "Imperva log file does not open; sent to the dead-letter output");
            if origin.skip_through >= 1 {
                return Read {
                    last: 1,
                    refused: true,
                    ..Read::default()
                };
            }
            emit(RawFrame {
                bytes: Bytes::from(bytes),
                received_ms: origin.received_ms,
                input: origin.input,
                source: origin.source.clone(),
                refused: Some(format!("container: {e}").into()),
                token: token(1),
                ..RawFrame::default()
            });
            return Read {
                last: 1,
                refused: true,
                ..Read::default()
            };
        }
    };
    let checksum_mismatch = matches!(opened.checksum, Checksum::Mismatch { .. });
    if let Checksum::Mismatch { expected, actual } = &opened.checksum {
        tracing::warn!(
            file = origin.source.as_deref().unwrap_or("-"),
            header = %expected,
            body_md5 = %actual,
            "checksum mismatch; events kept"
        );
    }
    let mut cols = Columns::new(opened.w3c.clone());
    let body = Bytes::from(opened.body);
    let mut last = 0;
    for (i, line) in container::body_lines(&body).enumerate() {
        let pos = i as u64 + 1;
        if cols.directive(line) {
            continue;
        }
        if pos <= origin.skip_through {
            last = pos;
            continue;
        }
        let full = line.len();
        let cut = full > origin.max_line_bytes;
        let mut bytes = body.slice_ref(line);
        if cut {
            bytes.truncate(origin.max_line_bytes);
        }
        last = pos;
        // log.offset is where the line starts in the decoded body, as for line files.
        let at = line.as_ptr() as usize - body.as_ptr() as usize;
        let sent = emit(RawFrame {
            bytes,
            received_ms: origin.received_ms,
            input: origin.input,
            source: origin.source.clone(),
            offset: Some(at as u64),
            truncated_from: cut.then_some(full),
            limit_name: origin.limit_name,
            w3c: cols.current(),
            token: token(pos),
            ..RawFrame::default()
        });
        if !sent {
            break;
        }
    }
    Read {
        last,
        checksum_mismatch,
        ..Read::default()
    }
}

/// The acknowledgements of one whole file: `complete` runs once, when every frame sent for the
/// file has been settled (the pipeline settles in arrival order, so the file is done when its
/// last frame is). Collectors mark a file done with it.
pub struct WholeFile {
    /// (number of the last frame once all are sent, highest settled, completed)
    state: Mutex<(Option<u64>, u64, bool)>,
    complete: Box<dyn Fn() + Send + Sync>,
}

impl WholeFile {
    pub fn new(complete: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(WholeFile {
            state: Mutex::new((None, 0, false)),
            complete: Box::new(complete),
        })
    }

    /// Every frame of the file is sent; the last was number `last` (0: the file had none).
    pub fn sent(&self, last: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = Some(last);
        self.check(s);
    }

    fn check(&self, mut s: std::sync::MutexGuard<'_, (Option<u64>, u64, bool)>) {
        if !s.2 && s.0.is_some_and(|last| s.1 >= last) {
            s.2 = true;
            drop(s);
            (self.complete)();
        }
    }
}

impl Progress for WholeFile {
    fn done(&self, pos: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.1 = s.1.max(pos);
        self.check(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_whole_file_completes_once_when_its_last_frame_settles() {
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let w = WholeFile::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
        });
        w.done(1);
        w.done(2);
        assert_eq!(fired.load(Ordering::SeqCst), 0, "not every frame is sent yet");
        w.sent(3);
        assert_eq!(fired.load(Ordering::SeqCst), 0);
        w.done(3);
        w.done(3);
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        // Settled before `sent` is known, and a file with no frame.
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let w = WholeFile::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
        });
        w.done(2);
        w.sent(2);
        let f = fired.clone();
        WholeFile::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
        })
        .sent(0);
        assert_eq!(fired.load(Ordering::SeqCst), 2);
    }
}

//! Whole Imperva log files (header + `|==|` + body, the body possibly encrypted and
//! zlib/gzip-compressed) and gzip line files, read once into frames: one frame per body line
//! (`offset`: the line's byte offset in the decoded body; its acknowledgement position: its
//! number, from 1, directive lines counted), with the W3C columns
//! of the header or of the body's `#Fields:` directives. A file that cannot be opened becomes
//! one refused frame (a dead letter naming the reason).

use std::sync::Arc;

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
}

/// What reading a file found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Number of the last frame sent (0: none): the file is done once this one is settled.
    pub last: u64,
    pub checksum_mismatch: bool,
    /// The file did not open and went to the dead-letter output whole.
    pub refused: bool,
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
        refused: false,
    }
}

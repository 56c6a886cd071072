//! Cutting a byte stream into lines, the way every line source needs it: `\n` ends a line (a
//! `\r` before it is dropped), empty lines are skipped, a line longer than the cap is cut to the
//! cap and reported with its real length once its end is found, and W3C directive lines
//! (`#Fields:` ...) are not events but set the columns of the lines after them.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::parse::{W3cFields, w3c};

/// One line cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line without its terminator (cut to the cap when longer).
    pub bytes: Bytes,
    /// Offset of the line's first byte in the stream.
    pub offset: u64,
    /// Offset just past the line's terminator: where the next line starts.
    pub end: u64,
    /// Set when the line was longer than the cap: its full length.
    pub truncated_from: Option<usize>,
}

/// An over-long line whose end has not been seen yet.
struct Cutting {
    head: Bytes,
    offset: u64,
    seen: usize,
}

/// Accumulates bytes and hands out complete lines.
pub struct LineCutter {
    pending: BytesMut,
    /// Stream offset of `pending[0]`.
    offset: u64,
    cap: usize,
    cutting: Option<Cutting>,
}

impl LineCutter {
    /// A cutter for a stream whose next byte is at `offset`, with lines capped at `cap` bytes.
    pub fn new(offset: u64, cap: usize) -> Self {
        LineCutter {
            pending: BytesMut::with_capacity(64 * 1024),
            offset,
            cap: cap.max(1),
            cutting: None,
        }
    }

    /// Offset of the first byte not yet handed out as (part of) a line.
    pub fn consumed(&self) -> u64 {
        self.offset
    }

    /// Add bytes read from the stream.
    pub fn feed(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// The next complete line, if any. With `eof`, a last line without its terminator counts.
    pub fn next_line(&mut self, eof: bool) -> Option<Line> {
        loop {
            let nl = memchr::memchr(b'\n', &self.pending);
            if let Some(c) = &mut self.cutting {
                match nl {
                    Some(i) => {
                        let _ = self.pending.split_to(i + 1);
                        let full = c.seen + i;
                        self.offset += i as u64 + 1;
                        let c = self.cutting.take()?;
                        return Some(Line {
                            bytes: c.head,
                            offset: c.offset,
                            end: self.offset,
                            truncated_from: Some(full),
                        });
                    }
                    None => {
                        c.seen += self.pending.len();
                        self.offset += self.pending.len() as u64;
                        self.pending.clear();
                        if eof {
                            let c = self.cutting.take()?;
                            return Some(Line {
                                bytes: c.head,
                                offset: c.offset,
                                end: self.offset,
                                truncated_from: Some(c.seen),
                            });
                        }
                        return None;
                    }
                }
            }
            let (take, body_len) = match nl {
                Some(i) => (i + 1, i),
                None if self.pending.len() > self.cap => {
                    // No end in sight within the cap: keep the head, count the rest.
                    let start = self.offset;
                    let head = self.pending.split_to(self.cap).freeze();
                    let seen = self.cap + self.pending.len();
                    self.offset += seen as u64;
                    self.pending.clear();
                    self.cutting = Some(Cutting {
                        head,
                        offset: start,
                        seen,
                    });
                    continue;
                }
                None if eof && !self.pending.is_empty() => (self.pending.len(), self.pending.len()),
                None => return None,
            };
            let start = self.offset;
            let mut body = &self.pending[..body_len];
            if body.last() == Some(&b'\r') {
                body = &body[..body.len() - 1];
            }
            // Each line gets its own bytes: a frame then never holds a whole read buffer alive
            // across threads, and this buffer is reused in place.
            let mut line = Bytes::copy_from_slice(body);
            self.pending.advance(take);
            self.offset += take as u64;
            if line.is_empty() {
                continue;
            }
            let full = line.len();
            let truncated_from = (full > self.cap).then(|| {
                line.truncate(self.cap);
                full
            });
            return Some(Line {
                bytes: line,
                offset: start,
                end: self.offset,
                truncated_from,
            });
        }
    }
}

/// The W3C columns of a stream: set by its file's header or a `#Fields:` directive line.
#[derive(Default, Clone)]
pub struct Columns(pub Option<Arc<W3cFields>>);

impl Columns {
    pub fn new(cols: Option<W3cFields>) -> Self {
        Columns(cols.map(Arc::new))
    }

    /// Whether `line` is a W3C directive (not an event); a `#Fields:` one sets the columns.
    pub fn directive(&mut self, line: &[u8]) -> bool {
        if line.first() != Some(&b'#') {
            return false;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return false;
        };
        if !w3c::is_directive(text) {
            return false;
        }
        if text.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("#fields:")) {
            self.0 = W3cFields::from_directive(text).map(Arc::new);
        }
        true
    }

    pub fn current(&self) -> Option<Arc<W3cFields>> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[&[u8]], cap: usize) -> Vec<(String, u64, u64, Option<usize>)> {
        let mut c = LineCutter::new(0, cap);
        let mut out = Vec::new();
        for (i, chunk) in input.iter().enumerate() {
            c.feed(chunk);
            let eof = i + 1 == input.len();
            while let Some(l) = c.next_line(eof) {
                out.push((
                    String::from_utf8(l.bytes.to_vec()).unwrap(),
                    l.offset,
                    l.end,
                    l.truncated_from,
                ));
            }
        }
        out
    }

    #[test]
    fn lines_offsets_and_cuts_across_chunks() {
        let got = all(&[b"short\r\nthis line ", b"is long\n\nok\nlast-without-newline"], 10);
        assert_eq!(
            got,
            vec![
                ("short".to_string(), 0, 7, None),
                ("this line ".to_string(), 7, 25, Some(17)),
                ("ok".to_string(), 26, 29, None),
                ("last-witho".to_string(), 29, 49, Some(20)),
            ]
        );
    }

    #[test]
    fn a_line_longer_than_everything_buffered_reports_its_real_length() {
        let long = vec![b'x'; 5000];
        let got = all(&[&long[..2000], &long[2000..], b"\nnext\n"], 100);
        assert_eq!(got[0].3, Some(5000));
        assert_eq!(got[0].0.len(), 100);
        assert_eq!((got[0].1, got[0].2), (0, 5001));
        assert_eq!(got[1], ("next".to_string(), 5001, 5006, None));
    }

    #[test]
    fn without_eof_a_partial_line_waits() {
        let mut c = LineCutter::new(100, 1000);
        c.feed(b"a\nbc");
        assert_eq!(c.next_line(false).map(|l| l.end), Some(102));
        assert_eq!(c.next_line(false), None);
        assert_eq!(c.consumed(), 102);
        c.feed(b"d\n");
        let l = c.next_line(false).unwrap();
        assert_eq!((&l.bytes[..], l.offset, l.end), (&b"bcd"[..], 102, 106));
    }

    #[test]
    fn fields_directive_sets_columns_and_is_not_an_event() {
        let mut cols = Columns::default();
        assert!(!cols.directive(b"CEF:0|x"));
        assert!(cols.directive(b"#Version: 1.0"));
        assert!(cols.current().is_none());
        assert!(cols.directive(b"#Fields: date time cs-ip"));
        assert_eq!(cols.current().unwrap().names, vec!["date", "time", "cs-ip"]);
    }
}

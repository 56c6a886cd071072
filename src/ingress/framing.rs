//! Cutting a syslog byte stream into frames: newline-delimited, or RFC 6587 octet counting
//! (`LEN SP MSG`), detected per connection from its first byte. Pure and synchronous: it works
//! on a buffer the connection fills, and "need more bytes" is `Ok(None)`.
//!
//! Frames longer than the limit are never dropped silently: they are cut at the limit and
//! flagged `truncated` (the rest of the oversized message is discarded and counted).

use bytes::{Buf, Bytes, BytesMut};

/// How a connection frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decide from the first bytes: `LEN SP` means octet counting, anything else newlines.
    Auto,
    Newline,
    OctetCounting,
}

/// One message as received, without its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Bytes,
    /// The message was longer than the limit and was cut to it.
    pub truncated: bool,
    /// The message's full length when it was cut.
    pub original_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("octet-counting length {0:?} is not a number")]
    BadLength(String),
}

/// Per-connection framer state.
#[derive(Debug)]
pub struct Framer {
    mode: Mode,
    max_frame_bytes: usize,
    /// Bytes of an oversized message still to skip (octet counting), or `Some` while skipping to
    /// the next newline.
    skip: Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    None,
    Bytes(usize),
    ToNewline,
}

impl Framer {
    pub fn new(mode: Mode, max_frame_bytes: usize) -> Self {
        Framer {
            mode,
            max_frame_bytes: max_frame_bytes.max(1),
            skip: Skip::None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Take the next frame out of `buf`, or `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.skip {
                Skip::Bytes(n) => {
                    let k = n.min(buf.len());
                    buf.advance(k);
                    if k < n {
                        self.skip = Skip::Bytes(n - k);
                        return Ok(None);
                    }
                    self.skip = Skip::None;
                }
                Skip::ToNewline => match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.skip = Skip::None;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
                Skip::None => {}
            }
            if buf.is_empty() {
                return Ok(None);
            }
            if self.mode == Mode::Auto {
                // Octet counting starts `[1-9][0-9]* SP`; anything else (a PRI, `CEF:`, a W3C
                // line starting with a date) is newline framing.
                let digits = buf.iter().take(11).take_while(|b| b.is_ascii_digit()).count();
                self.mode = match buf.get(digits) {
                    Some(b' ') if digits > 0 && buf[0] != b'0' => Mode::OctetCounting,
                    None if digits == buf.len() && digits < 11 => return Ok(None),
                    _ => Mode::Newline,
                };
            }
            let frame = match self.mode {
                Mode::OctetCounting => self.octet(buf)?,
                _ => self.newline(buf),
            };
            match frame {
                // Skip empty lines between messages.
                Some(f) if f.bytes.is_empty() && !f.truncated => continue,
                other => return Ok(other),
            }
        }
    }

    fn newline(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let limit = self.max_frame_bytes;
        match memchr::memchr(b'\n', buf) {
            Some(i) if i <= limit => {
                let mut line = buf.split_to(i + 1);
                line.truncate(i);
                if line.last() == Some(&b'\r') {
                    line.truncate(i - 1);
                }
                let n = line.len();
                Some(Frame {
                    bytes: line.freeze(),
                    truncated: false,
                    original_len: n,
                })
            }
            Some(i) => {
                let cut = buf.split_to(limit).freeze();
                buf.advance(i + 1 - limit);
                Some(Frame {
                    bytes: cut,
                    truncated: true,
                    original_len: i,
                })
            }
            None if buf.len() > limit => {
                let cut = buf.split_to(limit).freeze();
                let seen = limit + buf.len();
                buf.clear();
                self.skip = Skip::ToNewline;
                Some(Frame {
                    bytes: cut,
                    truncated: true,
                    original_len: seen,
                })
            }
            None => None,
        }
    }

    fn octet(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(sp) = buf.iter().take(12).position(|b| *b == b' ') else {
            if buf.len() >= 12 || buf.iter().any(|b| !b.is_ascii_digit()) {
                let shown = String::from_utf8_lossy(&buf[..buf.len().min(12)]).into_owned();
                return Err(FrameError::BadLength(shown));
            }
            return Ok(None);
        };
        let digits = &buf[..sp];
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| FrameError::BadLength(String::from_utf8_lossy(digits).into_owned()))?;
        let limit = self.max_frame_bytes;
        if len <= limit {
            if buf.len() < sp + 1 + len {
                return Ok(None);
            }
            buf.advance(sp + 1);
            let msg = buf.split_to(len).freeze();
            return Ok(Some(Frame {
                bytes: msg,
                truncated: false,
                original_len: len,
            }));
        }
        // Oversized: emit the first `limit` bytes once they are here, skip the rest.
        if buf.len() < sp + 1 + limit {
            return Ok(None);
        }
        buf.advance(sp + 1);
        let cut = buf.split_to(limit).freeze();
        self.skip = Skip::Bytes(len - limit);
        Ok(Some(Frame {
            bytes: cut,
            truncated: true,
            original_len: len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framer: &mut Framer, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut buf = BytesMut::new();
        let mut out = vec![];
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(f) = framer.decode(&mut buf).expect("frame") {
                out.push((String::from_utf8_lossy(&f.bytes).into_owned(), f.truncated));
            }
        }
        out
    }

    #[test]
    fn newline_frames_across_chunks_with_crlf_and_blank_lines() {
        let mut f = Framer::new(Mode::Auto, 100);
        let got = all(&mut f, &[b"<14>CEF:0|a", b"|b\r\n\n<14>CEF:0|c\n<14>par", b"tial"]);
        assert_eq!(
            got,
            vec![("<14>CEF:0|a|b".into(), false), ("<14>CEF:0|c".into(), false)]
        );
        assert_eq!(f.mode(), Mode::Newline);
    }

    #[test]
    fn octet_counting_detected_and_split() {
        let mut f = Framer::new(Mode::Auto, 100);
        let got = all(&mut f, &[b"12 <14>CEF:0|a", b"b14 <14>CEF:0\nx|y", b"z"]);
        assert_eq!(
            got,
            vec![("<14>CEF:0|ab".into(), false), ("<14>CEF:0\nx|yz".into(), false)]
        );
        assert_eq!(f.mode(), Mode::OctetCounting);
    }

    #[test]
    fn oversized_newline_frame_is_cut_and_flagged_then_next_frame_is_whole() {
        let mut f = Framer::new(Mode::Newline, 5);
        let got = all(&mut f, &[b"0123456789", b"abc\nok\n"]);
        assert_eq!(got, vec![("01234".into(), true), ("ok".into(), false)]);
        let mut f = Framer::new(Mode::Newline, 5);
        let got = all(&mut f, &[b"0123456789\nok\n"]);
        assert_eq!(got, vec![("01234".into(), true), ("ok".into(), false)]);
    }

    #[test]
    fn oversized_octet_frame_is_cut_and_rest_skipped() {
        let mut f = Framer::new(Mode::OctetCounting, 4);
        let got = all(&mut f, &[b"10 0123", b"456789", b"2 ok"]);
        assert_eq!(got, vec![("0123".into(), true), ("ok".into(), false)]);
    }

    #[test]
    fn lines_starting_with_digits_are_newline_framed() {
        let mut f = Framer::new(Mode::Auto, 100);
        let got = all(&mut f, &[b"2024", b"-01-20 10:00:00 1.2.3.4 GET /\n"]);
        assert_eq!(got, vec![("2024-01-20 10:00:00 1.2.3.4 GET /".into(), false)]);
        assert_eq!(f.mode(), Mode::Newline);
    }

    #[test]
    fn bad_octet_length_is_an_error() {
        let mut f = Framer::new(Mode::OctetCounting, 100);
        let mut buf = BytesMut::from(&b"12x4 hello"[..]);
        assert!(f.decode(&mut buf).is_err());
    }
}

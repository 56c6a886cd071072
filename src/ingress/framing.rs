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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Skip {
    None,
    Bytes(usize),
    /// An over-long line: its first bytes (sent once its end is found, with its real length)
    /// and how many bytes of it have been seen.
    ToNewline {
        head: Bytes,
        seen: usize,
    },
}

/// What the sender left in the buffer when it closed, when it is not a whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// The bytes of the message that did arrive.
    pub bytes: Bytes,
    /// The length the octet count announced.
    pub declared: usize,
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
                Skip::ToNewline { ref mut seen, .. } => match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        let full = *seen + i;
                        buf.advance(i + 1);
                        if let Skip::ToNewline { head, .. } = std::mem::replace(&mut self.skip, Skip::None) {
                            return Ok(Some(Frame {
                                bytes: head,
                                truncated: true,
                                original_len: full,
                            }));
                        }
                    }
                    None => {
                        *seen += buf.len();
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

    /// The sender closed: what is left in `buf` is a last message without its newline, an
    /// over-long line cut by the close, or (octet counting) a message shorter than announced.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Result<Frame, Partial>> {
        if let Skip::ToNewline { head, seen } = std::mem::replace(&mut self.skip, Skip::None) {
            buf.clear();
            return Some(Ok(Frame {
                bytes: head,
                truncated: true,
                original_len: seen,
            }));
        }
        if buf.is_empty() {
            return None;
        }
        let rest = buf.split().freeze();
        if self.mode != Mode::OctetCounting {
            let n = rest.len();
            return Some(Ok(Frame {
                bytes: rest,
                truncated: false,
                original_len: n,
            }));
        }
        // `LEN SP` and fewer than LEN bytes (or only part of the count).
        let sp = rest.iter().position(|b| *b == b' ');
        let declared = sp
            .and_then(|i| std::str::from_utf8(&rest[..i]).ok())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        let body = match sp {
            Some(i) => rest.slice(i + 1..),
            None => rest,
        };
        Some(Err(Partial { bytes: body, declared }))
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
                // Sent once its end is found, with its real length.
                let head = buf.split_to(limit).freeze();
                let seen = limit + buf.len();
                buf.clear();
                self.skip = Skip::ToNewline { head, seen };
                None
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

    #[test]
    fn an_over_long_line_reports_its_real_length_once_its_end_arrives() {
        let mut f = Framer::new(Mode::Newline, 100);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for _ in 0..16 {
            buf.extend_from_slice(&[b'x'; 65_536]);
            while let Some(fr) = f.decode(&mut buf).unwrap() {
                got.push(fr);
            }
        }
        assert!(got.is_empty(), "nothing until the line ends");
        buf.extend_from_slice(b"\nnext\n");
        while let Some(fr) = f.decode(&mut buf).unwrap() {
            got.push(fr);
        }
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].truncated, got[0].original_len, got[0].bytes.len()),
            (true, 1 << 20, 100)
        );
        assert_eq!(&got[1].bytes[..], b"next");
    }

    #[test]
    fn what_the_sender_leaves_at_close_is_kept() {
        // Octet counting cut short by the close: the bytes that arrived and the announced length.
        let mut f = Framer::new(Mode::Auto, 1000);
        let mut buf = BytesMut::from(&b"5 hello500 <14>CEF:0|cut"[..]);
        assert_eq!(&f.decode(&mut buf).unwrap().unwrap().bytes[..], b"hello");
        assert_eq!(f.decode(&mut buf).unwrap(), None);
        let p = f.finish(&mut buf).unwrap().unwrap_err();
        assert_eq!((p.declared, &p.bytes[..]), (500, &b"<14>CEF:0|cut"[..]));
        assert_eq!(f.finish(&mut buf), None);
        // Newline framing: a last line without its newline is a message.
        let mut f = Framer::new(Mode::Newline, 1000);
        let mut buf = BytesMut::from(&b"a\nlast"[..]);
        assert_eq!(&f.decode(&mut buf).unwrap().unwrap().bytes[..], b"a");
        assert_eq!(f.decode(&mut buf).unwrap(), None);
        assert_eq!(&f.finish(&mut buf).unwrap().unwrap().bytes[..], b"last");
        // An over-long line cut by the close.
        let mut f = Framer::new(Mode::Newline, 4);
        let mut buf = BytesMut::from(&b"abcdefgh"[..]);
        assert_eq!(f.decode(&mut buf).unwrap(), None);
        let fr = f.finish(&mut buf).unwrap().unwrap();
        assert_eq!((fr.truncated, fr.original_len, &fr.bytes[..]), (true, 8, &b"abcd"[..]));
    }
}

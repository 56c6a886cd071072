//! `wafstream parse`: files or stdin in, ECS NDJSON out, one document per event, in order.
//!
//! Plain line files are streamed with a per-line cap; whole Imperva containers (detected by
//! their header or compression magic) are read into memory, opened, then mapped line by line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

use anyhow::Context;

use super::ParseArgs;
use crate::container::{self, Checksum, KeyStore, Limits};
use crate::ecs::{FrameMeta, Mapper};
use crate::parse::W3cFields;
use crate::parse::w3c;

struct Sinks<'a> {
    out: BufWriter<Box<dyn Write + 'a>>,
    dlq: Option<BufWriter<File>>,
    buf: Vec<u8>,
    dead: u64,
    docs: u64,
}

impl Sinks<'_> {
    fn emit(&mut self, dead: bool) -> io::Result<()> {
        self.buf.push(b'\n');
        if dead {
            self.dead += 1;
            if let Some(d) = self.dlq.as_mut() {
                d.write_all(&self.buf)?;
                self.buf.clear();
                return Ok(());
            }
        } else {
            self.docs += 1;
        }
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

pub(super) fn run(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let opts = args.mapping.options()?;
    let mapper = Mapper::new(opts);
    let keys = match &args.keys_dir {
        Some(d) => KeyStore::new(d),
        None => KeyStore::new("keys"),
    };
    let limits = Limits {
        max_decompressed_bytes: args.max_decompressed_bytes,
    };
    let stdout = io::stdout();
    let dlq = match &args.dlq {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut sinks = Sinks {
        out: BufWriter::with_capacity(1 << 16, Box::new(stdout.lock())),
        dlq,
        buf: Vec::with_capacity(4096),
        dead: 0,
        docs: 0,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let files = if args.files.is_empty() {
        vec!["-".to_string()]
    } else {
        args.files.clone()
    };
    let mut checksum_mismatches = 0u64;
    for name in &files {
        let reader: Box<dyn Read> = if name == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(name).with_context(|| format!("opening {name}"))?)
        };
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let head = reader.fill_buf().with_context(|| format!("reading {name}"))?.to_vec();
        let (input, source) = if name == "-" {
            ("stdin", None)
        } else {
            ("file", Some(name.as_str()))
        };
        if container::looks_like_container(&head) {
            let mut bytes = Vec::new();
            reader
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading {name}"))?;
            match container::open(&bytes, &keys, limits) {
                Ok(opened) => {
                    if let Checksum::Mismatch { expected, actual } = &opened.checksum {
                        checksum_mismatches += 1;
                        eprintln!(
                            "wafstream: warning: {name}: checksum mismatch (header {expected}, body MD5 {actual}); events kept"
                        );
                    }
                    let mut cols = opened.w3c.clone();
                    for (i, line) in opened.lines().enumerate() {
                        let meta = FrameMeta {
                            received_ms: now,
                            input,
                            source,
                            peer: None,
                            offset: Some(i as u64 + 1),
                            tz: None,
                        };
                        map_line(&mapper, line, &meta, &mut cols, &mut sinks)?;
                    }
                }
                Err(e) => {
                    let meta = FrameMeta {
                        received_ms: now,
                        input,
                        source,
                        peer: None,
                        offset: None,
                        tz: None,
                    };
                    mapper.dead_letter(&bytes, &meta, &format!("container: {e}"), &mut sinks.buf);
                    sinks.emit(true)?;
                }
            }
            continue;
        }
        let mut cols: Option<W3cFields> = None;
        let mut line = Vec::with_capacity(4096);
        let mut line_no = 0u64;
        loop {
            line.clear();
            let (n, cut) = read_capped_line(&mut reader, &mut line, args.max_line_bytes)
                .with_context(|| format!("reading {name}"))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let meta = FrameMeta {
                received_ms: now,
                input,
                source,
                peer: None,
                offset: Some(line_no),
                tz: None,
            };
            if cut {
                let reason = format!(
                    "line of {n} bytes exceeds --max-line-bytes {}; record holds its first bytes",
                    args.max_line_bytes
                );
                mapper.dead_letter(&line, &meta, &reason, &mut sinks.buf);
                sinks.emit(true)?;
                continue;
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if line.is_empty() {
                continue;
            }
            map_line(&mapper, &line, &meta, &mut cols, &mut sinks)?;
        }
    }
    sinks.out.flush()?;
    if let Some(d) = sinks.dlq.as_mut() {
        d.flush()?;
    }
    eprintln!(
        "wafstream: {} documents, {} dead-lettered{}",
        sinks.docs,
        sinks.dead,
        if checksum_mismatches > 0 {
            format!(", {checksum_mismatches} file(s) with a checksum mismatch")
        } else {
            String::new()
        }
    );
    Ok(if sinks.dead > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Map one line; W3C `#Fields:` directives update the columns and are not events.
fn map_line(
    mapper: &Mapper,
    line: &[u8],
    meta: &FrameMeta<'_>,
    cols: &mut Option<W3cFields>,
    sinks: &mut Sinks<'_>,
) -> io::Result<()> {
    if line.first() == Some(&b'#') {
        if let Ok(text) = std::str::from_utf8(line) {
            if w3c::is_directive(text) {
                if text.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("#fields:")) {
                    *cols = W3cFields::from_directive(text);
                }
                return Ok(());
            }
        }
    }
    let m = mapper.map(line, meta, cols.as_ref(), &mut sinks.buf);
    sinks.emit(m.is_dead())
}

/// Read one line of at most `cap` bytes into `buf`. Returns (bytes in the line, was it cut);
/// a cut line's remainder is consumed and discarded so the next read starts a new line.
fn read_capped_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, cap: usize) -> io::Result<(usize, bool)> {
    let mut total = 0usize;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            if total > cap {
                buf.truncate(cap);
                return Ok((total, true));
            }
            return Ok((total, false));
        }
        let (chunk, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..=i], true),
            None => (avail, false),
        };
        let room = (cap + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        total += used;
        r.consume(used);
        if done {
            let body = total - 1;
            if body > cap {
                buf.truncate(cap);
                return Ok((total, true));
            }
            return Ok((total, false));
        }
        if total > cap + 1 {
            buf.truncate(cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_lines() {
        let data = b"short\nthis line is long\nok\nlast-without-newline";
        let mut r = BufReader::with_capacity(4, &data[..]);
        let mut buf = vec![];
        let mut out = vec![];
        loop {
            buf.clear();
            let (n, cut) = read_capped_line(&mut r, &mut buf, 10).unwrap();
            if n == 0 {
                break;
            }
            out.push((String::from_utf8(buf.clone()).unwrap(), cut));
        }
        assert_eq!(
            out,
            vec![
                ("short\n".to_string(), false),
                ("this line ".to_string(), true),
                ("ok\n".to_string(), false),
                ("last-witho".to_string(), true),
            ]
        );
    }
}

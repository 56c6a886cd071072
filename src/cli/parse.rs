//! `wafstream parse`: files or stdin in, ECS NDJSON out, one document per event, in order — the
//! one-shot wiring of the pipeline core: a reader thread (line files streamed with a per-line
//! cap; whole Imperva files and gzip files decoded by [`crate::ingress::imperva_file`]) → the
//! core → stdout (dead letters to `--dlq` or in line).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

use super::ParseArgs;
use crate::bus::{self, RawFrame};
use crate::container::{self, KeyStore, Limits};
use crate::ingress::imperva_file::{self, Origin};
use crate::ingress::lines::{Columns, LineCutter};
use crate::pipeline;
use crate::sink::WriterSink;

pub(super) fn run(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let opts = args.mapping.options()?;
    let dlq: Option<Box<dyn Write + Send>> = match &args.dlq {
        Some(p) => Some(Box::new(BufWriter::with_capacity(
            1 << 16,
            crate::sink::open_append(p).with_context(|| format!("opening {}", p.display()))?,
        ))),
        None => None,
    };
    let files = if args.files.is_empty() {
        vec!["-".to_string()]
    } else {
        args.files.clone()
    };
    // Open every file first, so a missing one is a usage error before any output.
    let mut readers: Vec<(String, Box<dyn Read + Send>)> = Vec::with_capacity(files.len());
    for name in &files {
        let r: Box<dyn Read + Send> = if name == "-" {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(name).with_context(|| format!("opening {name}"))?)
        };
        readers.push((name.clone(), r));
    }
    let sink = WriterSink::new(Box::new(BufWriter::with_capacity(1 << 20, io::stdout())), dlq);
    let settings = pipeline::Settings {
        threads: args.threads.unwrap_or_else(pipeline::default_threads).max(1),
        ..pipeline::Settings::default()
    };
    let (tx, rx) = bus::channel(16 * bus::BATCH);
    let mismatches = Arc::new(AtomicU64::new(0));
    let reader = {
        let mismatches = mismatches.clone();
        let keys = KeyStore::new(args.keys_dir.clone().unwrap_or_else(|| "keys".into()));
        let limits = Limits {
            max_decompressed_bytes: args.max_decompressed_bytes,
        };
        let cap = args.max_line_bytes;
        std::thread::Builder::new()
            .name("wafstream-read".into())
            .spawn(move || -> anyhow::Result<()> {
                let now = bus::now_ms();
                let mut tx = bus::Batcher::new(tx);
                for (name, r) in readers {
                    let read = read_one(&name, r, &keys, limits, cap, now, &mut tx)
                        .with_context(|| format!("reading {name}"))?;
                    if read.checksum_mismatch {
                        mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })?
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let procs = opts.processors.clone();
    let summary = rt.block_on(pipeline::run(rx, opts, settings, &sink));
    let read = reader.join().map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
    let summary = summary?;
    read?;
    let mismatches = mismatches.load(Ordering::Relaxed);
    eprintln!(
        "wafstream: {} documents, {} dead-lettered{}{}",
        summary.documents,
        summary.dead_letters,
        crate::embedded::dropped(summary.dropped),
        if mismatches > 0 {
            format!(", {mismatches} file(s) with a checksum mismatch")
        } else {
            String::new()
        }
    );
    for line in procs.iter().flat_map(|p| p.report()) {
        eprintln!("wafstream: {line}");
    }
    Ok(if summary.dead_letters > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Frames of one input: a whole Imperva (or gzip) file, or a stream of lines.
fn read_one(
    name: &str,
    r: Box<dyn Read + Send>,
    keys: &KeyStore,
    limits: Limits,
    cap: usize,
    now: i64,
    tx: &mut bus::Batcher,
) -> io::Result<imperva_file::Read> {
    let (input, source): (&'static str, Option<Arc<str>>) = if name == "-" {
        ("stdin", None)
    } else {
        ("file", Some(name.into()))
    };
    let mut reader = BufReader::with_capacity(1 << 16, r);
    let head = reader.fill_buf()?;
    if container::looks_like_container(head) {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        let origin = Origin {
            input,
            source,
            received_ms: now,
            skip_through: 0,
            progress: None,
            max_line_bytes: cap,
            limit_name: "--max-line-bytes",
            hold_on_key_error: false,
        };
        let read = imperva_file::frames(bytes, keys, limits, &origin, |f| tx.push_blocking(f).is_ok());
        let _ = tx.flush_blocking();
        return Ok(read);
    }
    let mut cutter = LineCutter::new(0, cap);
    let mut cols = Columns::default();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        cutter.feed(&buf[..n]);
        while let Some(line) = cutter.next_line(n == 0) {
            if cols.directive(&line.bytes) {
                continue;
            }
            let frame = RawFrame {
                bytes: line.bytes,
                received_ms: now,
                input,
                source: source.clone(),
                offset: Some(line.offset),
                truncated_from: line.truncated_from,
                limit_name: "--max-line-bytes",
                w3c: cols.current(),
                ..RawFrame::default()
            };
            if tx.push_blocking(frame).is_err() {
                return Ok(imperva_file::Read::default());
            }
        }
        if n == 0 {
            let _ = tx.flush_blocking();
            return Ok(imperva_file::Read::default());
        }
    }
}

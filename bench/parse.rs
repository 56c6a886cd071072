//! Parser and mapper throughput on a deterministic, realistic corpus (`wafstream::generate`):
//! Cloud WAF lines of ~1 KB and SecureSphere lines of ~0.5 KB, escapes and JSON included.
//!
//! `cargo bench --bench parse` — reports events/s (`*/events`) and MB/s (`*/bytes`) for
//! parse-only and parse + ECS JSON, per dataset. Before measuring, every corpus is mapped once
//! and the counts asserted, so a fast path that silently drops or dead-letters fails here.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wafstream::ecs::{FrameMeta, Mapper, Options};
use wafstream::generate::{self, Kind};
use wafstream::parse;

// The same allocator as the `wafstream` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LINES: u64 = 10_000;

fn corpus(kind: Kind) -> Vec<String> {
    let mut s = String::new();
    generate::lines(kind, LINES, 7, &mut s);
    s.lines().map(str::to_string).collect()
}

/// Map the whole corpus once; every line must give a document, none a dead letter.
fn check(lines: &[String], mapper: &Mapper) {
    let meta = FrameMeta {
        received_ms: 1_700_000_000_000,
        input: "bench",
        ..FrameMeta::default()
    };
    let mut buf = Vec::with_capacity(8192);
    let mut docs = 0;
    for l in lines {
        buf.clear();
        let m = mapper.map(l.as_bytes(), &meta, None, &mut buf);
        assert!(!m.is_dead(), "dead letter in corpus: {:?}", m.error);
        assert!(buf.len() > l.len() / 2, "suspiciously small document");
        docs += 1;
    }
    assert_eq!(docs, lines.len());
}

fn bench(c: &mut Criterion) {
    for (label, kind) in [("cloud_waf", Kind::CloudWaf), ("securesphere", Kind::SecureSphere)] {
        let lines = corpus(kind);
        let bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
        let mapper = Mapper::new(Options::default());
        check(&lines, &mapper);
        let parsed = lines
            .iter()
            .filter(|l| parse::parse_event(l, None).is_ok_and(|r| r.fields.len() > 10))
            .count();
        assert_eq!(parsed, lines.len(), "parse-only must see every line's fields");
        eprintln!(
            "{label}: {} lines, {:.0} bytes/line",
            lines.len(),
            bytes as f64 / lines.len() as f64
        );

        for (unit, tp) in [
            ("events", Throughput::Elements(lines.len() as u64)),
            ("bytes", Throughput::Bytes(bytes)),
        ] {
            let mut g = c.benchmark_group(format!("{label}/{unit}"));
            g.throughput(tp);
            g.sample_size(20);
            g.measurement_time(Duration::from_secs(6));
            g.bench_function("parse_only", |b| {
                b.iter(|| {
                    let mut n = 0usize;
                    for l in &lines {
                        let r = parse::parse_event(black_box(l), None).expect("parses");
                        n += r.index().pos(parse::Key::Src).map_or(0, |_| 1) + r.fields.len();
                    }
                    black_box(n)
                })
            });
            let meta = FrameMeta {
                received_ms: 1_700_000_000_000,
                input: "bench",
                ..FrameMeta::default()
            };
            // Room for a whole pass, so the measurement does not include growing the buffer.
            let mut buf = Vec::with_capacity(lines.len() * 4096);
            g.bench_function("parse_ecs_json", |b| {
                b.iter(|| {
                    buf.clear();
                    for l in &lines {
                        let m = mapper.map(black_box(l.as_bytes()), &meta, None, &mut buf);
                        buf.push(b'\n');
                        black_box(&m);
                    }
                    black_box(buf.len())
                })
            });
            // As the worker and `wafstream run` do it: each document into one reused buffer,
            // handed on (here: its length summed) before the next.
            let mut doc = Vec::with_capacity(8192);
            g.bench_function("parse_ecs_json_per_event", |b| {
                b.iter(|| {
                    let mut total = 0usize;
                    for l in &lines {
                        doc.clear();
                        let m = mapper.map(black_box(l.as_bytes()), &meta, None, &mut doc);
                        total += black_box(&doc).len();
                        black_box(&m);
                    }
                    black_box(total)
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Bulk throughput of the Elasticsearch sink: documents/s into an in-process server that
//! answers `_bulk` in Elasticsearch's shape as fast as it can (the sink's own ceiling), and
//! into noida-db when `WAFSTREAM_NOIDA` points at it (an emulator: slow, and slower as it
//! fills — a lower bound, not a cluster figure).
//!
//!   cargo bench --bench es_sink            # 100k generated Cloud WAF documents
//!   WAFSTREAM_NOIDA=$(bash tests/services/install-noida.sh) cargo bench --bench es_sink
//!
//! Under `cargo test` (no `--bench` argument) it runs a few hundred documents as a check.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wafstream::ecs::{FrameMeta, Mapper, Options};
use wafstream::generate::{self, Kind};
use wafstream::sink::elasticsearch::{self, Config, ElasticsearchSink};
use wafstream::sink::{Delivery, Output, Sink};

#[path = "../tests/support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A minimal `_bulk` endpoint: counts documents, answers 201 for each.
async fn fast_server(listener: TcpListener, docs: Arc<AtomicUsize>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let docs = docs.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    let mut chunk = vec![0u8; 1 << 16];
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let mut chunk = vec![0u8; 1 << 20];
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let raw: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                let mut body = Vec::new();
                if head.contains("content-encoding: gzip") {
                    flate2::read::GzDecoder::new(&raw[..])
                        .read_to_end(&mut body)
                        .expect("gzip");
                } else {
                    body = raw;
                }
                let n = body.iter().filter(|b| **b == b'\n').count() / 2;
                docs.fetch_add(n, Ordering::Relaxed);
                let mut json = String::from("{\"took\":1,\"errors\":false,\"items\":[");
                for i in 0..n {
                    if i > 0 {
                        json.push(',');
                    }
                    json.push_str("{\"create\":{\"status\":201}}");
                }
                json.push_str("]}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                    json.len()
                );
                if sock.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Map `lines` and push every document through a sink; returns documents/s.
async fn push(url: &str, lines: &[String], tag: &str) -> f64 {
    let cfg = Config {
        hosts: vec![url.to_string()],
        max_batch_docs: 1000,
        ..Config::default()
    };
    let sink = ElasticsearchSink::start(cfg, elasticsearch::client(None).expect("client"));
    let mapper = Mapper::new(Options::default());
    let meta = FrameMeta {
        received_ms: 1_700_000_000_000,
        input: "bench",
        ..FrameMeta::default()
    };
    let mut docs = Vec::with_capacity(lines.len());
    for l in lines {
        let mut buf = Vec::new();
        let m = mapper.map(l.as_bytes(), &meta, None, &mut buf);
        docs.push((m.dataset, format!("{tag}-{}", m.id), buf));
    }
    let t0 = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    let mut accepted = 0usize;
    for (ds, id, body) in &docs {
        acks.push_back(
            sink.send(Output {
                dataset: *ds,
                id,
                body,
                error: None,
            })
            .await
            .expect("send"),
        );
        while acks.len() > 20_000 {
            if matches!(acks.pop_front().expect("ack").await, Ok(Delivery::Accepted)) {
                accepted += 1;
            }
        }
    }
    for a in acks {
        if matches!(a.await, Ok(Delivery::Accepted)) {
            accepted += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(accepted, docs.len(), "every document acknowledged");
    eprintln!("{}", sink.stats().report());
    docs.len() as f64 / secs
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = if bench { 100_000 } else { 500 };
    let mut text = String::new();
    generate::lines(Kind::CloudWaf, n, 11, &mut text);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let count = Arc::new(AtomicUsize::new(0));
        tokio::spawn(fast_server(listener, count.clone()));
        let rate = push(&url, &lines, "fast").await;
        assert_eq!(count.load(Ordering::Relaxed), lines.len());
        println!(
            "es_sink in-process server: {} documents, {rate:.0} documents/s",
            lines.len()
        );
    });
    // The emulator only when asked for (`WAFSTREAM_NOIDA`), started as the tests start it.
    let noida = if bench && std::env::var_os("WAFSTREAM_NOIDA").is_some() {
        support::noida()
    } else {
        None
    };
    if let Some(noida) = noida {
        let few = &lines[..lines.len().min(20_000)];
        let rate = rt.block_on(push(&noida.url, few, "noida"));
        println!(
            "es_sink noida-db emulator: {} documents, {rate:.0} documents/s",
            few.len()
        );
    }
}

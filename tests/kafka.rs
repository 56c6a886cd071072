//! The Kafka pipeline against Apache Kafka 4.4.0 (one KRaft broker for this test binary,
//! `tests/support/services.rs`; installed by `tests/services/install-kafka.sh`, lib dir in
//! `WAFSTREAM_KAFKA_LIB`): syslog in over TCP/UDP/TLS → `wafstream ingress` → raw topic →
//! `wafstream worker` → dataset topics and DLQ (or OpenSearch); a worker killed mid-run and
//! replaced loses nothing; workers joining and leaving while traffic flows lose nothing; the
//! broker stopped for 30 s mid-stream and restarted on its data loses nothing; HEC into the
//! ingress is answered after the broker's acknowledgement and 503 during an outage. Each test
//! has its own topics and groups.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

mod support;

use support::services::{self, Kafka, unique};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Topics {
    raw: String,
    ss: String,
    cloud: String,
    dlq: String,
}

/// Fresh topics for one test: the raw topic with `raw_partitions`, the others with one.
fn topics(k: &Kafka, tag: &str, raw_partitions: i32) -> Topics {
    let t = Topics {
        raw: unique(&format!("raw-{tag}")),
        ss: unique(&format!("ss-{tag}")),
        cloud: unique(&format!("cloud-{tag}")),
        dlq: unique(&format!("dlq-{tag}")),
    };
    k.create_topics(&[(&t.raw, raw_partitions), (&t.ss, 1), (&t.cloud, 1), (&t.dlq, 1)]);
    t
}

/// Start a wafstream role with common broker/topic arguments; returns the process and a
/// receiver of its stderr lines.
fn wafstream(role: &str, b: &Kafka, t: &Topics, extra: &[&str]) -> (Proc, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
    cmd.arg(role).args(["--brokers", &b.addr, "--raw-topic", &t.raw]);
    if role == "worker" {
        cmd.args([
            "--topic-securesphere",
            &t.ss,
            "--topic-cloud-waf",
            &t.cloud,
            "--dlq-topic",
            &t.dlq,
        ]);
        cmd.args([
            "--kafka",
            "session.timeout.ms=6000",
            "--kafka",
            "heartbeat.interval.ms=500",
        ]);
    }
    cmd.args(extra);
    let (child, rx) = support::spawn_with_stderr(cmd);
    (Proc(child), rx)
}

fn sigterm(p: &mut Proc) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {}", p.0.id()))
        .status()
        .expect("kill");
    assert!(st.success());
    let code = p.0.wait().expect("wait");
    assert!(code.success(), "exit {code:?}");
}

/// A consumer reading topics from the start, in its own group.
struct Reader {
    c: BaseConsumer,
    got: Vec<(String, serde_json::Value)>,
}

impl Reader {
    fn new(b: &Kafka, topics: &[&str]) -> Reader {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b.addr)
            .set("group.id", unique("reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .expect("reader");
        c.subscribe(topics).expect("subscribe");
        Reader { c, got: Vec::new() }
    }

    /// Poll until `want` records in total arrived or `secs` passed.
    fn until(&mut self, want: usize, secs: u64) -> &[(String, serde_json::Value)] {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.got.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = self.c.poll(Duration::from_millis(200)) {
                let v: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("json record");
                self.got.push((m.topic().to_string(), v));
            }
        }
        &self.got
    }
}

fn read_all(b: &Kafka, topics: &[&str], want: usize, secs: u64) -> Vec<(String, serde_json::Value)> {
    Reader::new(b, topics).until(want, secs).to_vec()
}

fn ss_line(i: usize) -> String {
    format!(
        "<14>CEF:0|Imperva Inc.|SecureSphere|15.1.0|Signature|sig-{i}|High|act=block src=198.51.100.{} spt={i} dst=10.0.0.5 dpt=443 rt=Oct 05 2023 18:33:02 cat=Alert cs1=line {i} cs1Label=Seq",
        i % 250 + 1
    )
}

fn cloud_line(i: usize) -> String {
    format!(
        "CEF:0|Incapsula|SIEMintegration|1|1|Normal|0| fileId={i} start={} end={} src=203.0.113.{} cpt=44000 act=REQ_PASSED",
        1_700_000_000_000u64 + i as u64,
        1_700_000_000_001u64 + i as u64,
        i % 250 + 1
    )
}

#[test]
fn syslog_through_ingress_raw_topic_and_worker_to_dataset_topics_and_dlq() {
    let Some(b) = services::kafka() else { return };
    let t = topics(&b, "e2e", 3);
    let pki_dir = tempfile::tempdir().expect("tempdir");
    assert!(support::pki(pki_dir.path()), "openssl could not make the test PKI");
    let cert = pki_dir.path().join("server.pem").to_string_lossy().into_owned();
    let key = pki_dir.path().join("server.key").to_string_lossy().into_owned();
    // Both roles export over OTLP: traces of publish (ingress) and core (worker) batches.
    let (otlp, otlp_got) = support::otlp::start();
    let (mut ingress, irx) = wafstream(
        "ingress",
        &b,
        &t,
        &[
            "--listen-tcp",
            "127.0.0.1:0",
            "--listen-udp",
            "127.0.0.1:0",
            "--max-message-bytes",
            "4000",
            "--tz",
            "+0200",
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--metrics-addr",
            "127.0.0.1:0",
            "--otlp-endpoint",
            &otlp,
            "--otlp-interval-ms",
            "200",
        ],
    );
    let at = support::listening(&irx, &["tcp", "udp", "tls", "metrics"]);
    let (tcp, udp, tls, imetrics) = (
        at["tcp"].as_str(),
        at["udp"].as_str(),
        at["tls"].as_str(),
        at["metrics"].as_str(),
    );
    let (mut worker, wrx) = wafstream(
        "worker",
        &b,
        &t,
        &[
            "--group",
            "g-e2e",
            "--metrics-addr",
            "127.0.0.1:0",
            "--otlp-endpoint",
            &otlp,
            "--otlp-interval-ms",
            "200",
        ],
    );
    let wmetrics = support::listening(&wrx, &["metrics"])
        .remove("metrics")
        .unwrap_or_default();

    let n = 200;
    let mut s = TcpStream::connect(tcp).expect("tcp");
    for i in 0..n {
        writeln!(s, "{}", if i % 2 == 0 { ss_line(i) } else { cloud_line(i) }).expect("write");
    }
    writeln!(s, "this is not an imperva event").expect("write");
    writeln!(s, "{}", "y".repeat(5000)).expect("write");
    drop(s);
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
    for i in n..n + 20 {
        u.send_to(cloud_line(i).as_bytes(), udp).expect("send");
        std::thread::sleep(Duration::from_millis(2));
    }
    let over_tls: String = (n + 20..n + 30).map(|i| format!("{}\n", cloud_line(i))).collect();
    support::s_client(pki_dir.path(), tls, &[], &over_tls);
    let total = n + 30 + 2;
    let got = read_all(&b, &[&t.ss, &t.cloud, &t.dlq], total, 90);
    // What the processes report on /metrics agrees with what arrived.
    let w = support::scrape_until(&wmetrics, "wafstream_worker_offsets_stored_total", total as f64);
    let i = support::scrape_until(imetrics, "wafstream_raw_produced_total", total as f64);
    // The lag gauge (librdkafka statistics, every 5 s) appears and reads 0 once caught up.
    let lag = support::scrape_until(&wmetrics, "wafstream_worker_consumer_lag", 0.0);
    assert_eq!(
        support::sample(&lag, "wafstream_worker_consumer_lag"),
        Some(0.0),
        "{lag}"
    );
    // Every frame is in a batch span of each role: publish (ingress) and core (worker).
    let frames_traced = |service: &str| otlp_got.frames_traced(service);
    let deadline = Instant::now() + Duration::from_secs(20);
    while frames_traced("wafstream-ingress") != total as i64 || frames_traced("wafstream-worker") != total as i64 {
        assert!(
            Instant::now() < deadline,
            "traced frames: ingress {}, worker {}, of {total}",
            frames_traced("wafstream-ingress"),
            frames_traced("wafstream-worker")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(&mut ingress);
    sigterm(&mut worker);
    let v = |scrape: &str, series: &str| {
        support::sample(scrape, series).unwrap_or_else(|| panic!("{series} missing in\n{scrape}"))
    };
    assert_eq!(v(&w, "wafstream_worker_consumed_total"), total as f64, "{w}");
    assert_eq!(v(&w, "wafstream_worker_offsets_stored_total"), total as f64, "{w}");
    assert_eq!(
        v(&w, "wafstream_documents_total{dataset=\"imperva.securesphere\"}"),
        (n / 2) as f64
    );
    assert_eq!(
        v(&w, "wafstream_documents_total{dataset=\"imperva_cloud_waf.event\"}"),
        (n / 2 + 30) as f64
    );
    assert_eq!(v(&w, "wafstream_dead_letters_total"), 2.0);
    assert_eq!(v(&i, "wafstream_raw_produced_total"), total as f64, "{i}");
    assert_eq!(v(&i, "wafstream_ingress_frames_total"), total as f64, "{i}");
    assert_eq!(v(&i, "wafstream_ingress_truncated_total"), 1.0);
    assert!(!i.contains("wafstream_worker_") && !w.contains("wafstream_ingress_"));
    let on = |topic: &str| got.iter().filter(|(tp, _)| tp == topic).count();
    assert_eq!(on(&t.ss), n / 2, "securesphere documents");
    assert_eq!(on(&t.cloud), n / 2 + 30, "cloud waf documents");
    assert_eq!(on(&t.dlq), 2, "dead letters");
    let dlq: Vec<&serde_json::Value> = got.iter().filter(|(tp, _)| *tp == t.dlq).map(|(_, v)| v).collect();
    assert!(dlq.iter().any(|v| {
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("exceeds max_message_bytes 4000")
    }));
    assert!(
        dlq.iter()
            .any(|v| v["event"]["original"] == "this is not an imperva event")
    );
    let udp_docs = got.iter().filter(|(_, v)| v["input"]["type"] == "udp").count();
    assert_eq!(udp_docs, 20);
    let tls_docs = got.iter().filter(|(_, v)| v["input"]["type"] == "tls").count();
    assert_eq!(tls_docs, 10);
    // Every SecureSphere line arrived exactly once, content intact.
    let seqs: HashSet<String> = got
        .iter()
        .filter(|(tp, _)| *tp == t.ss)
        .filter_map(|(_, v)| {
            v["imperva"]["securesphere"]["device"]["custom_string1"]["value"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(seqs.len(), n / 2);
    // The ingress's time zone travelled in the headers and was applied by the worker.
    let ss = got
        .iter()
        .find(|(tp, _)| *tp == t.ss)
        .map(|(_, v)| v)
        .expect("a securesphere doc");
    assert_eq!(ss["@timestamp"], "2023-10-05T16:33:02.000Z");
    assert_eq!(ss["event"]["timezone"], "+0200");
}

fn produce_raw(addr: &str, topic: &str, lines: &[String]) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (i, l) in lines.iter().enumerate() {
        let key = format!("sender-{}", i % 7);
        let mut rec = BaseRecord::to(topic).payload(l.as_bytes()).key(key.as_bytes());
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn ids(got: &[(String, serde_json::Value)]) -> HashSet<String> {
    got.iter()
        .filter_map(|(_, v)| {
            v["imperva_cloud_waf"]["event"]["extensions"]["site"]["id"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{} siteid={i}", cloud_line(i))).collect()
}

#[test]
fn worker_killed_mid_run_and_restarted_loses_nothing() {
    let Some(b) = services::kafka() else { return };
    let t = topics(&b, "restart", 3);
    let n = 3000;
    produce_raw(&b.addr, &t.raw, &numbered(n));
    let (mut first, _r1) = wafstream("worker", &b, &t, &["--group", "g-restart", "--max-inflight", "50"]);
    // Let it get part of the way, then kill it without warning.
    let mut reader = Reader::new(&b, &[&t.cloud]);
    assert!(reader.until(300, 60).len() >= 300, "first worker made no progress");
    first.0.kill().expect("kill -9");
    let _ = first.0.wait();
    let (mut second, _r2) = wafstream("worker", &b, &t, &["--group", "g-restart"]);
    let mut seen = ids(reader.until(n, 5));
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < n && Instant::now() < deadline {
        let more = reader.got.len() + 500;
        seen = ids(reader.until(more, 5));
    }
    sigterm(&mut second);
    assert_eq!(seen.len(), n, "every raw record has a document (duplicates allowed)");
}

#[test]
fn workers_join_and_leave_while_traffic_flows_without_loss_or_repeats() {
    let Some(b) = services::kafka() else { return };
    let t = topics(&b, "rebalance", 4);
    let group = unique("g-reb");
    let n = 8000;
    let lines = numbered(n);
    let (mut a, arx) = wafstream("worker", &b, &t, &["--group", &group, "--max-inflight", "20"]);
    // Records keep arriving while a second worker joins and then the first one leaves, so
    // partitions move away from workers that are busy with them.
    let (addr, raw) = (b.addr.clone(), t.raw.clone());
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent2 = sent.clone();
    let feeder = std::thread::spawn(move || {
        for chunk in lines.chunks(n / 40) {
            produce_raw(&addr, &raw, chunk);
            sent2.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let (mut c, crx) = wafstream("worker", &b, &t, &["--group", &group, "--max-inflight", "20"]);
    let joined_at = sent.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    // The first worker leaves (SIGTERM: it drains, commits and leaves the group).
    let left_at = sent.load(std::sync::atomic::Ordering::SeqCst);
    sigterm(&mut a);
    feeder.join().expect("feeder");
    eprintln!("second worker joined after {joined_at} records, first left after {left_at} of {n}");
    assert!(left_at < n, "traffic was still flowing when the first worker left");
    let got = read_all(&b, &[&t.cloud], n, 120);
    let seen = ids(&got);
    sigterm(&mut c);
    assert_eq!(seen.len(), n, "nothing lost across the rebalances");
    // In-flight outputs are settled and committed before partitions move: nothing repeats.
    assert_eq!(got.len(), n, "outputs repeated across the rebalances");
    let consumed = |rx: &std::sync::mpsc::Receiver<String>| -> u64 {
        let mut last = 0;
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
            if let Some((_, rest)) = l.split_once("worker consumed ") {
                eprintln!("{l}");
                last = rest.split(',').next().and_then(|x| x.trim().parse().ok()).unwrap_or(0);
            }
        }
        last
    };
    let (ca, cc) = (consumed(&arx), consumed(&crx));
    assert!(ca > 0 && cc > 0, "both workers consumed: {ca} and {cc}");
    assert_eq!(ca + cc, n as u64, "each raw record consumed once: {ca} + {cc}");
    // Everything is committed: the group's offsets are at the raw topic's ends.
    let committed: i64 = b.committed(&group, &t.raw).values().sum();
    assert_eq!(committed, n as i64);
}

#[test]
fn worker_sends_documents_to_opensearch_data_streams_and_dead_letters_to_kafka() {
    let Some(b) = services::kafka() else { return };
    let Some(es) = services::opensearch() else { return };
    es.install_wafstream_templates();
    let t = topics(&b, "es", 2);
    let ns = services::unique_namespace();
    let n = 500;
    let mut lines: Vec<String> = (0..n)
        .map(|i| if i % 2 == 0 { ss_line(i) } else { cloud_line(i) })
        .collect();
    lines.push("not an imperva event".into());
    // The same alert sent twice is two events: two documents (ids from the raw-topic position).
    lines.push(ss_line(0));
    lines.push(cloud_line(1));
    produce_raw(&b.addr, &t.raw, &lines);
    let (mut w, wrx) = wafstream(
        "worker",
        &b,
        &t,
        &[
            "--group",
            "g-es",
            "--es-url",
            &es.url,
            "--namespace",
            &ns,
            "--es-flush-interval-ms",
            "50",
            "--exit-when-idle-ms",
            "3000",
        ],
    );
    let dead = read_all(&b, &[&t.dlq], 1, 60);
    let code = w.0.wait().expect("worker exits when idle");
    assert!(code.success(), "{code:?}");
    let summary: Vec<String> = std::iter::from_fn(|| wrx.recv_timeout(Duration::from_secs(1)).ok()).collect();
    assert_eq!(dead.len(), 1, "{summary:?}");
    assert_eq!(dead[0].1["event"]["original"], "not an imperva event");
    let (ss_ds, cw_ds) = (
        format!("logs-imperva.securesphere-{ns}"),
        format!("logs-imperva_cloud_waf.event-{ns}"),
    );
    assert_eq!(
        (es.count(&ss_ds), es.count(&cw_ds)),
        (n as u64 / 2 + 1, n as u64 / 2 + 1),
        "{summary:?}"
    );
    // They are data streams (the templates matched), with the ECS types of the templates.
    let (_, ds) = es.request("GET", &format!("/_data_stream/{ss_ds}"), None);
    assert_eq!(ds["data_streams"][0]["name"], ss_ds.as_str(), "{ds}");
    let (_, m) = es.request("GET", &format!("/{cw_ds}/_mapping/field/source.ip"), None);
    assert!(m.to_string().contains(r#""type":"ip""#), "{m}");
    // Nothing went to the dataset topics.
    assert!(read_all(&b, &[&t.ss, &t.cloud], 1, 3).is_empty());
}

#[test]
fn a_document_elasticsearch_refuses_is_dead_lettered_with_the_reason() {
    let Some(b) = services::kafka() else { return };
    let t = topics(&b, "es-refuse", 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    // The third distinct document is refused for good; everything else is written.
    let distinct = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let policy: support::ItemPolicy = std::sync::Arc::new(move |_id: &str, times: usize| {
        if times == 1 && distinct.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
            (400, "mapper_parsing_exception")
        } else {
            (201, "")
        }
    });
    let (url, seen) = rt.block_on(support::start(policy, std::sync::Arc::new(|_| None)));
    let n = 20;
    produce_raw(&b.addr, &t.raw, &(0..n).map(cloud_line).collect::<Vec<_>>());
    let (mut w, _wrx) = wafstream(
        "worker",
        &b,
        &t,
        &[
            "--group",
            "g-es-refuse",
            "--es-url",
            &url,
            "--es-flush-interval-ms",
            "20",
            "--exit-when-idle-ms",
            "2000",
        ],
    );
    let dead = read_all(&b, &[&t.dlq], 1, 60);
    assert!(w.0.wait().expect("exit").success());
    assert_eq!(dead.len(), 1);
    let msg = dead[0].1["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("mapper_parsing_exception"), "{}", dead[0].1);
    // The dead letter carries the refused document itself.
    let original: serde_json::Value =
        serde_json::from_str(dead[0].1["event"]["original"].as_str().expect("original")).expect("the document");
    assert_eq!(original["data_stream"]["dataset"], "imperva_cloud_waf.event");
    assert_eq!(seen.docs.lock().expect("lock").len(), n);
}

/// The `siteid=N` a numbered line carries, from a raw record's bytes.
fn raw_site_id(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let at = text.rfind("siteid=").expect("a numbered line");
    text[at + 7..].trim().to_string()
}

#[test]
fn broker_stopped_30s_mid_stream_and_restarted_loses_nothing() {
    // Nobody else may use the broker while it is down.
    let Some(b) = services::kafka_exclusive() else { return };
    let t = topics(&b, "outage", 3);
    let group = unique("g-outage");
    // The ingress's client gives up on a message after 5 s, far less than the outage: frames
    // whose delivery expires are produced again, never dropped.
    let (mut ingress, irx) = wafstream(
        "ingress",
        &b,
        &t,
        &[
            "--listen-tcp",
            "127.0.0.1:0",
            "--listen-udp",
            "off",
            "--kafka",
            "message.timeout.ms=5000",
        ],
    );
    let tcp = support::listening(&irx, &["tcp"]).remove("tcp").expect("tcp");
    let (mut worker, wrx) = wafstream("worker", &b, &t, &["--group", &group, "--metrics-addr", "127.0.0.1:0"]);
    let wmetrics = support::listening(&wrx, &["metrics"])
        .remove("metrics")
        .expect("metrics");
    // A sender writing ~200 lines/s to the ingress until told to stop; during the outage the
    // ingress keeps taking them (its producer queues, then TCP backpressure).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let feeder = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&tcp).expect("tcp");
        let mut i = 0;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            writeln!(s, "{} siteid={i}", cloud_line(i)).expect("write");
            i += 1;
            sent2.store(i, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let docs = "wafstream_documents_total{dataset=\"imperva_cloud_waf.event\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    while support::sample(&support::http(&wmetrics, "GET", "/metrics").1, docs).unwrap_or(0.0) < 300.0 {
        assert!(Instant::now() < deadline, "no documents before the outage");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The broker goes away for 30 s mid-stream, then comes back on its data dir.
    b.stop();
    let before = sent.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(30));
    let during = sent.load(std::sync::atomic::Ordering::SeqCst) - before;
    let took = b.start();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    feeder.join().expect("feeder");
    let n = sent.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "outage: {before} lines before, {during} during the 30 s, {n} in all; broker back in {:.1} s",
        took.as_secs_f64()
    );
    assert!(during > 0, "the sender was blocked for the whole outage");
    // Every line ends up as a document (repeats allowed, nothing missing).
    let deadline = Instant::now() + Duration::from_secs(120);
    let out = loop {
        let out = b.read_to_end(&t.cloud);
        let seen: HashSet<String> = out
            .iter()
            .filter_map(|r| {
                r.json()["imperva_cloud_waf"]["event"]["extensions"]["site"]["id"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        if seen.len() == n || Instant::now() > deadline {
            assert_eq!(seen.len(), n, "documents for every line sent");
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    sigterm(&mut ingress);
    sigterm(&mut worker);
    let ingress_report: Vec<String> = support::rest(&irx);
    assert!(
        ingress_report
            .iter()
            .any(|l| l.contains(&format!("{n} frames published, 0 failed"))),
        "{ingress_report:?}"
    );
    // The raw topic holds every line. With `message.timeout.ms=5000` a delivery can expire
    // after the broker took it; the ingress then produces it again: a repeat, never a loss.
    let raw = b.read_to_end(&t.raw);
    let raw_ids: HashSet<String> = raw.iter().map(|r| raw_site_id(&r.payload)).collect();
    assert_eq!(raw_ids.len(), n, "every line in the raw topic");
    eprintln!(
        "raw records {} for {n} lines; documents {} ({} repeated)",
        raw.len(),
        out.len(),
        out.len() - n
    );
    // Repeats can only come from offsets not yet committed; at the end everything is.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for r in &raw {
        let e = ends.entry(r.partition).or_default();
        *e = (*e).max(r.offset + 1);
    }
    assert_eq!(
        b.committed(&group, &t.raw),
        ends,
        "the group committed the whole raw topic"
    );
}

#[test]
fn a_new_consumer_group_gets_its_partitions_in_seconds() {
    let Some(b) = services::kafka() else { return };
    let topic = unique("join");
    b.create_topics(&[(&topic, 4)]);
    for round in ["first", "second"] {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b.addr)
            .set("group.id", unique("join"))
            .create()
            .expect("consumer");
        let t0 = Instant::now();
        c.subscribe(&[&topic]).expect("subscribe");
        while c.assignment().map(|a| a.count()).unwrap_or(0) < 4 {
            assert!(t0.elapsed() < Duration::from_secs(20), "no assignment in 20 s");
            let _ = c.poll(Duration::from_millis(20));
        }
        eprintln!("{round} new group joined in {:.2} s", t0.elapsed().as_secs_f64());
    }
}

/// The files `parse` maps, sent by `ingress --file` through the raw topic to a worker, give
/// the same documents: W3C columns (from a directive and from an Imperva file header), the file
/// name and line, and whole Imperva files (plain, zlib, gzip, encrypted) cross Kafka intact.
#[test]
fn ingress_files_through_kafka_give_the_documents_parse_gives() {
    let Some(k) = services::kafka() else { return };
    let t = topics(&k, "files", 3);
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, keys) = (tmp.path().join("in"), tmp.path().join("keys"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let events = support::inputs::input_files(&dir, &keys);
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    let parsed = Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(["parse", "--emit-id", "--keys-dir"])
        .arg(&keys)
        .args(&names)
        .output()
        .expect("parse");
    assert_eq!(
        parsed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let from_parse = support::inputs::by_id(
        String::from_utf8_lossy(&parsed.stdout)
            .lines()
            .map(support::inputs::json),
    );
    assert_eq!(from_parse.len(), events);

    let glob = dir.join("*").display().to_string();
    let keys_s = keys.display().to_string();
    let cp = tmp.path().join("checkpoint.json").display().to_string();
    let ingress_args = [
        "--listen-tcp",
        "off",
        "--listen-udp",
        "off",
        "--file-poll-ms",
        "100",
        "--file",
        &glob,
        "--keys-dir",
        &keys_s,
        "--checkpoint",
        &cp,
    ];
    let (mut ingress, _irx) = wafstream("ingress", &k, &t, &ingress_args);
    let group = unique("g-files");
    let (mut worker, _wrx) = wafstream("worker", &k, &t, &["--group", &group, "--emit-id", "--threads", "2"]);
    let got = read_all(&k, &[&t.ss, &t.cloud, &t.dlq], events, 90);
    sigterm(&mut ingress);
    sigterm(&mut worker);
    assert!(got.iter().all(|(topic, _)| topic != &t.dlq), "dead letters: {got:?}");
    let from_worker = support::inputs::by_id(got.into_iter().map(|(_, v)| v));
    assert_eq!(from_worker.len(), events);
    for (id, doc) in &from_parse {
        assert_eq!(
            Some(doc),
            from_worker.get(id),
            "document {id} differs between parse and ingress + worker"
        );
    }
    // The ingress's checkpoint says every whole file is done (acknowledged by the broker).
    let cp: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).expect("checkpoint")).expect("json");
    let files = cp["files"].as_object().expect("files");
    assert_eq!(files.len(), names.len(), "{cp}");
    for e in files.values() {
        if e["whole"].as_bool() == Some(true) {
            assert_eq!(e["done"], true, "{e}");
        } else {
            let path = e["path"].as_str().expect("path");
            assert_eq!(
                e["offset"].as_u64(),
                Some(std::fs::metadata(path).expect("stat").len()),
                "{e}"
            );
        }
    }
}

/// SIGTERM while Elasticsearch is down: the worker stops within its drain timeout (exit 2,
/// saying so) and commits nothing it did not deliver; a second worker then delivers it all.
#[test]
fn worker_stopped_while_elasticsearch_is_down_exits_within_the_drain_timeout_and_commits_nothing() {
    let Some(b) = services::kafka() else { return };
    let t = topics(&b, "es-down", 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d = down.clone();
    let (url, seen) = rt.block_on(support::start(
        std::sync::Arc::new(|_, _| (201, "")),
        std::sync::Arc::new(move |_| d.load(std::sync::atomic::Ordering::SeqCst).then_some(503)),
    ));
    let n = 30;
    produce_raw(&b.addr, &t.raw, &numbered(n));
    let group = unique("g-es-down");
    let args = [
        "--group",
        &group,
        "--es-url",
        &url,
        "--es-flush-interval-ms",
        "20",
        "--drain-timeout-ms",
        "1500",
    ];
    let (mut w, wrx) = wafstream("worker", &b, &t, &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.requests.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no bulk request");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    Command::new("kill")
        .args(["-TERM", &w.0.id().to_string()])
        .status()
        .expect("kill");
    let code = w.0.wait().expect("wait");
    assert_eq!(code.code(), Some(2), "exit {code:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    let log: Vec<String> = support::rest(&wrx);
    assert!(log.iter().any(|l| l.contains("drain timeout")), "{log:?}");
    assert!(
        b.committed(&group, &t.raw).is_empty(),
        "offsets committed for undelivered documents"
    );
    // Elasticsearch back: the next worker of the group delivers every document.
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let (mut w2, _w2rx) = wafstream(
        "worker",
        &b,
        &t,
        &[
            "--group",
            &group,
            "--es-url",
            &url,
            "--es-flush-interval-ms",
            "20",
            "--exit-when-idle-ms",
            "2000",
        ],
    );
    assert!(w2.0.wait().expect("exit").success());
    assert_eq!(seen.docs.lock().expect("lock").len(), n);
}

#[test]
fn one_connections_frames_reach_every_raw_partition() {
    // SecureSphere gateways send over one long-lived connection: its frames must still spread
    // over every partition, or a few gateways keep most workers idle.
    let Some(b) = services::kafka() else { return };
    let partitions = 4;
    let t = topics(&b, "spread", partitions);
    let (mut ingress, irx) = wafstream(
        "ingress",
        &b,
        &t,
        &["--listen-tcp", "127.0.0.1:0", "--listen-udp", "off"],
    );
    let at = support::listening(&irx, &["tcp"]);
    let mut s = TcpStream::connect(at["tcp"].as_str()).expect("tcp");
    let (bursts, per_burst) = (40, 50);
    for burst in 0..bursts {
        let chunk: String = (0..per_burst)
            .map(|i| format!("{}\n", ss_line(burst * per_burst + i)))
            .collect();
        s.write_all(chunk.as_bytes()).expect("write");
        std::thread::sleep(Duration::from_millis(25));
    }
    drop(s);
    sigterm(&mut ingress);
    let records = b.read_to_end(&t.raw);
    assert_eq!(
        records.len(),
        bursts * per_burst,
        "every frame is on the raw topic once"
    );
    let mut per_partition: HashMap<i32, usize> = HashMap::new();
    for r in &records {
        *per_partition.entry(r.partition).or_default() += 1;
        assert!(
            r.key.as_deref().unwrap_or_default().is_empty(),
            "raw records carry no key"
        );
    }
    for p in 0..partitions {
        assert!(
            per_partition.get(&p).copied().unwrap_or(0) > 0,
            "partition {p} got nothing from the one connection: {per_partition:?}"
        );
    }
}

/// Elasticsearch away for longer than `max.poll.interval.ms`: the worker pauses its partitions
/// and keeps polling, so it stays in its group (no rebalance, no "poll interval exceeded"), and
/// delivers everything once Elasticsearch answers.
#[test]
fn worker_waits_out_an_elasticsearch_outage_without_leaving_its_group() {
    let Some(b) = services::kafka() else { return };
    let t = topics(&b, "es-wait", 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d = down.clone();
    let (url, seen) = rt.block_on(support::start(
        std::sync::Arc::new(|_, _| (201, "")),
        std::sync::Arc::new(move |_| d.load(std::sync::atomic::Ordering::SeqCst).then_some(503)),
    ));
    // More records than the worker holds in memory (bus + in-flight outputs + the sink's queue).
    let n = 8_000;
    produce_raw(&b.addr, &t.raw, &numbered(n));
    let group = unique("g-es-wait");
    let (mut w, wrx) = wafstream(
        "worker",
        &b,
        &t,
        &[
            "--group",
            &group,
            "--es-url",
            &url,
            "--es-flush-interval-ms",
            "20",
            "--es-max-batch-docs",
            "100",
            "--es-backoff-max-ms",
            "200",
            "--max-inflight",
            "500",
            "--kafka",
            "max.poll.interval.ms=7000",
            "--exit-when-idle-ms",
            "3000",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let metrics = support::listening(&wrx, &["metrics"])
        .remove("metrics")
        .unwrap_or_default();
    // Down for twice the poll interval, with intake paused.
    std::thread::sleep(Duration::from_secs(14));
    let (_, scrape) = support::http(&metrics, "GET", "/metrics");
    assert!(
        support::sample(&scrape, "wafstream_worker_pauses_total").unwrap_or(0.0) >= 1.0,
        "{scrape}"
    );
    assert_eq!(
        support::sample(&scrape, "wafstream_es_unavailable"),
        Some(1.0),
        "{scrape}"
    );
    assert!(
        support::sample(&scrape, "wafstream_worker_consumed_total").unwrap_or(0.0) < n as f64,
        "intake did not stop: {scrape}"
    );
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let code = w.0.wait().expect("exit");
    let log: Vec<String> = support::rest(&wrx);
    assert!(code.success(), "exit {code:?}\n{}", log.join("\n"));
    assert!(
        !log.iter()
            .any(|l| l.contains("poll interval") || l.contains("MAX_POLL_EXCEEDED")),
        "the worker left its group:\n{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("0 settled on partition revocation")),
        "a rebalance happened:\n{}",
        log.join("\n")
    );
    assert_eq!(seen.docs.lock().expect("lock").len(), n, "every document delivered");
    let committed: i64 = b.committed(&group, &t.raw).values().sum();
    assert_eq!(committed, n as i64, "every offset committed");
}

/// Cloud WAF collection end to end: the ingress pulls files from a server playing Imperva's
/// log API (encrypted, compressed, plain, W3C) → raw topic → worker → output topic, every line
/// once (by id); a file is done only once the broker holds all its lines.
#[test]
fn cloud_waf_files_pulled_by_the_ingress_reach_the_output_topic_once() {
    use support::{Comp, cloud_lines, container};
    let Some(b) = services::kafka() else { return };
    let t = topics(&b, "pull", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = support::rsa_key(8);
    support::write_key(&dir.path().join("keys"), support::KEY_ID, &key);
    let public = rsa::RsaPublicKey::from(&key);
    let s = support::imperva_api::server("2398", "k3y");
    let cloud = |k: usize, n: usize| cloud_lines(n).replace("fileId=", &format!("fileId={k}0"));
    s.add(
        "77_1.log",
        container(cloud(1, 5).as_bytes(), Comp::Zlib, Some((&public, 32)), None),
    );
    s.add("77_2.log", container(cloud(2, 4).as_bytes(), Comp::Gzip, None, None));
    s.add("77_3.log", container(cloud(3, 3).as_bytes(), Comp::None, None, None));
    let mut w3c = b"format:W3C\n|==|\n".to_vec();
    w3c.extend(support::inputs::W3C.as_bytes());
    s.add("77_4.log", w3c);
    let total = 5 + 4 + 3 + 3;
    let state = dir.path().join("pull.json");
    let keys = dir.path().join("keys");
    let (mut ingress, irx) = wafstream(
        "ingress",
        &b,
        &t,
        &[
            "--listen-tcp",
            "off",
            "--listen-udp",
            "off",
            "--pull-url",
            &s.url,
            "--pull-api-id",
            "2398",
            "--pull-api-key",
            "k3y",
            "--pull-interval-ms",
            "200",
            "--pull-state",
            state.to_str().expect("path"),
            "--keys-dir",
            keys.to_str().expect("path"),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let metrics = support::listening(&irx, &["metrics"])
        .remove("metrics")
        .unwrap_or_default();
    let scrape = support::scrape_until(&metrics, "wafstream_pull_files_done_total", 4.0);
    assert_eq!(
        support::sample(&scrape, "wafstream_pull_files_done_total"),
        Some(4.0),
        "{scrape}"
    );
    assert_eq!(
        support::sample(&scrape, "wafstream_raw_produced_total"),
        Some(total as f64),
        "{scrape}"
    );
    sigterm(&mut ingress);
    let group = unique("g-pull");
    let (mut w, _wrx) = wafstream("worker", &b, &t, &["--group", &group, "--exit-when-idle-ms", "3000"]);
    assert!(w.0.wait().expect("exit").success());
    let got = read_all(&b, &[&t.cloud, &t.dlq], total, 30);
    assert_eq!(got.len(), total, "{got:?}");
    assert!(
        got.iter().all(|(topic, _)| *topic == t.cloud),
        "no dead letter: {got:?}"
    );
    let ids: HashSet<String> = got
        .iter()
        .map(|(_, d)| {
            format!(
                "{}@{}",
                d["log"]["file"]["path"].as_str().unwrap_or(""),
                d["log"]["offset"]
            )
        })
        .collect();
    assert_eq!(ids.len(), total, "every line once");
    for name in ["77_1.log", "77_2.log", "77_3.log", "77_4.log"] {
        assert_eq!(s.gets(name), 1, "{name}");
    }
    s.rt.shutdown_background();
}

/// Processors in the worker: dropped documents are counted and their offsets committed like
/// any other; nothing else is lost.
#[test]
fn documents_a_processor_drops_have_their_offsets_committed() {
    let Some(b) = services::kafka() else { return };
    let t = topics(&b, "drop", 2);
    let n = 300;
    produce_raw(&b.addr, &t.raw, &numbered(n));
    // Drop the documents whose site id ends in 0, 3, 6 or 9.
    let want: HashSet<String> = (0..n)
        .map(|i| i.to_string())
        .filter(|s| !matches!(s.as_bytes().last(), Some(b'0' | b'3' | b'6' | b'9')))
        .collect();
    let dropped = n - want.len();
    let group = unique("g-drop");
    let (mut w, wrx) = wafstream(
        "worker",
        &b,
        &t,
        &[
            "--group",
            &group,
            "--exit-when-idle-ms",
            "3000",
            "--processors",
            r#"[{"drop_event": {"when": {"regexp": {"imperva_cloud_waf.event.extensions.site.id": "[0369]$"}}}}]"#,
        ],
    );
    assert!(w.0.wait().expect("exit").success());
    let log: Vec<String> = support::rest(&wrx);
    let got = read_all(&b, &[&t.cloud, &t.dlq], want.len(), 30);
    assert_eq!(got.len(), want.len(), "{}", log.join("\n"));
    assert_eq!(ids(&got), want);
    let committed: i64 = b.committed(&group, &t.raw).values().sum();
    assert_eq!(committed, n as i64, "every offset committed, dropped ones too");
    assert!(
        log.iter().any(|l| l.contains(&format!(
            "consumed {n}, {} documents, 0 dead-lettered, {dropped} dropped by processors",
            want.len()
        ))),
        "{}",
        log.join("\n")
    );
}

/// HEC into `ingress`: a 200 only once the broker has every event (acks=all); with the broker
/// down, requests are answered 503 (first when their acknowledgement times out, then at once
/// when the bus is full) and a sender that retries them after the broker is back loses
/// nothing. The worker maps the events, JSON objects to the `imperva.siem` topic with their
/// sourcetype.
#[test]
fn hec_through_ingress_answers_after_the_broker_and_waits_out_an_outage() {
    let Some(b) = services::kafka_exclusive() else { return };
    let t = topics(&b, "hec", 2);
    let siem = unique("siem-hec");
    b.create_topics(&[(&siem, 1)]);
    let token = "hec-test-token-1";
    let (mut ingress, irx) = wafstream(
        "ingress",
        &b,
        &t,
        &[
            "--listen-tcp",
            "off",
            "--listen-udp",
            "off",
            "--listen-hec",
            "127.0.0.1:0",
            "--hec-token",
            &format!("imperva={token}"),
            "--hec-ack-timeout-ms",
            "2000",
            "--bus-capacity",
            "1024",
            "--metrics-addr",
            "127.0.0.1:0",
            "--kafka",
            "message.timeout.ms=5000",
            "--kafka",
            "queue.buffering.max.messages=500",
        ],
    );
    let mut at = support::listening(&irx, &["hec", "metrics"]);
    let (hec, metrics) = (at.remove("hec").expect("hec"), at.remove("metrics").expect("metrics"));
    let (mut worker, _wrx) = wafstream("worker", &b, &t, &["--group", &unique("g-hec"), "--topic-siem", &siem]);
    let request = |from: usize, n: usize| -> String {
        (from..from + n)
            .map(|i| {
                serde_json::json!({"event": format!("{} siteid={i}", cloud_line(i)), "sourcetype": "imperva:cef"})
                    .to_string()
            })
            .collect()
    };
    let path = "/services/collector/event";
    let (s, body) = support::hec_post(&hec, path, token, &request(0, 100));
    assert_eq!((s, &body), (200, &serde_json::json!({"text": "Success", "code": 0})));
    let abp = serde_json::json!({"event": {"kind": "ABP", "score": 3}, "sourcetype": "imperva:abp"}).to_string();
    assert_eq!(support::hec_post(&hec, path, token, &abp).0, 200);

    b.stop();
    let mut next = 100;
    let mut refused: Vec<(usize, usize)> = Vec::new();
    let busy_at = Instant::now();
    loop {
        let (s, body) = support::hec_post(&hec, path, token, &request(next, 200));
        assert_ne!(s, 200, "a 200 while the broker is down: {body}");
        assert_eq!((s, body["code"].as_u64()), (503, Some(9)), "{body}");
        refused.push((next, 200));
        next += 200;
        let scrape = support::http(&metrics, "GET", "/metrics").1;
        let busy = scrape
            .lines()
            .any(|l| l.starts_with("wafstream_hec_refused_total") && l.contains("reason=\"server_busy\""));
        if busy {
            assert!(
                scrape
                    .lines()
                    .any(|l| l.starts_with("wafstream_hec_refused_total") && l.contains("reason=\"ack_timeout\"")),
                "{scrape}"
            );
            break;
        }
        assert!(
            busy_at.elapsed() < Duration::from_secs(90),
            "the bus never filled: {scrape}"
        );
    }
    let took = b.start();
    eprintln!(
        "{} requests refused during the outage; broker back in {:.1} s",
        refused.len(),
        took.as_secs_f64()
    );
    // The sender retries what was refused until it is taken.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (from, n) in &refused {
        loop {
            let (s, body) = support::hec_post(&hec, path, token, &request(*from, *n));
            if s == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still refused after the broker came back: {s} {body}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen: HashSet<String> = b
            .read_to_end(&t.cloud)
            .iter()
            .filter_map(|r| {
                r.json()["imperva_cloud_waf"]["event"]["extensions"]["site"]["id"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        if seen.len() == next || Instant::now() > deadline {
            assert_eq!(seen.len(), next, "a document for every event sent");
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The worker may map a record again after the outage (offsets not yet committed): the
    // same document, with the same key (its id).
    let siem_docs = b.read_to_end(&siem);
    assert!(!siem_docs.is_empty());
    assert!(
        siem_docs
            .iter()
            .all(|r| r.key == siem_docs[0].key && r.payload == siem_docs[0].payload),
        "one document for the one JSON event"
    );
    let d = siem_docs[0].json();
    assert_eq!(d["event"]["provider"], "imperva:abp");
    assert_eq!(d["imperva"]["siem"], serde_json::json!({"kind": "ABP", "score": 3}));
    assert_eq!(d["input"]["type"], "hec");
    sigterm(&mut ingress);
    sigterm(&mut worker);
}

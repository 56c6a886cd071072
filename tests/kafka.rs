//! The Kafka pipeline against a real Kafka-protocol broker (tansu, installed by
//! `tests/services/install-tansu.sh`, path in `WAFSTREAM_TANSU`): syslog in over TCP/UDP →
//! `wafstream ingress` → raw topic → `wafstream worker` → dataset topics and DLQ; a worker
//! killed mid-run and replaced loses nothing; a second worker takes partitions and nothing is
//! lost. Each test starts its own broker on a free 127.0.0.1 port with fresh topics.

use std::collections::HashSet;
use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

mod support;

fn tansu() -> Option<PathBuf> {
    match std::env::var_os("WAFSTREAM_TANSU") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("WAFSTREAM_TANSU not set: run the suite with tests/suite.sh");
            }
            eprintln!("SKIPPED: WAFSTREAM_TANSU not set (tests/suite.sh installs tansu and sets it)");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Broker {
    _proc: Proc,
    addr: String,
}

fn broker(bin: &PathBuf) -> Broker {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker {
        _proc: Proc(child),
        addr,
    }
}

struct Topics {
    raw: String,
    ss: String,
    cloud: String,
    dlq: String,
}

fn topics(b: &Broker, tag: &str, raw_partitions: i32) -> Topics {
    let t = Topics {
        raw: format!("raw-{tag}"),
        ss: format!("ss-{tag}"),
        cloud: format!("cloud-{tag}"),
        dlq: format!("dlq-{tag}"),
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .create()
        .expect("admin");
    let new = [
        NewTopic::new(&t.raw, raw_partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&t.ss, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&t.cloud, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&t.dlq, 1, TopicReplication::Fixed(1)),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let res = rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .expect("create topics");
    for r in res {
        r.expect("topic created");
    }
    t
}

/// Start a wafstream role with common broker/topic arguments; returns the process and a
/// receiver of its stderr lines.
fn wafstream(role: &str, b: &Broker, t: &Topics, extra: &[&str]) -> (Proc, std::sync::mpsc::Receiver<String>) {
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
    fn new(b: &Broker, topics: &[&str]) -> Reader {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b.addr)
            .set("group.id", format!("reader-{}", free_port()))
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

fn read_all(b: &Broker, topics: &[&str], want: usize, secs: u64) -> Vec<(String, serde_json::Value)> {
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
    let Some(bin) = tansu() else { return };
    let b = broker(&bin);
    let t = topics(&b, "e2e", 3);
    let pki_dir = tempfile::tempdir().expect("tempdir");
    assert!(support::pki(pki_dir.path()), "openssl could not make the test PKI");
    let cert = pki_dir.path().join("server.pem").to_string_lossy().into_owned();
    let key = pki_dir.path().join("server.key").to_string_lossy().into_owned();
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
        ],
    );
    let at = support::listening(&irx, &["tcp", "udp", "tls", "metrics"]);
    let (tcp, udp, tls, imetrics) = (
        at["tcp"].as_str(),
        at["udp"].as_str(),
        at["tls"].as_str(),
        at["metrics"].as_str(),
    );
    let (mut worker, wrx) = wafstream("worker", &b, &t, &["--group", "g-e2e", "--metrics-addr", "127.0.0.1:0"]);
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

fn produce_raw(b: &Broker, topic: &str, lines: &[String]) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
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
    let Some(bin) = tansu() else { return };
    let b = broker(&bin);
    let t = topics(&b, "restart", 3);
    let n = 3000;
    produce_raw(&b, &t.raw, &numbered(n));
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
fn second_worker_joins_and_shares_partitions_without_loss() {
    let Some(bin) = tansu() else { return };
    let b = broker(&bin);
    let t = topics(&b, "rebalance", 4);
    let n = 8000;
    let lines = numbered(n);
    let (mut a, arx) = wafstream("worker", &b, &t, &["--group", "g-reb", "--max-inflight", "20"]);
    // Records keep arriving while the second worker joins, so partitions are revoked from a
    // worker that is busy with them.
    let (addr, raw) = (b.addr.clone(), t.raw.clone());
    let feeder = std::thread::spawn(move || {
        let b = Broker {
            _proc: Proc(Command::new("true").spawn().expect("placeholder")),
            addr,
        };
        for chunk in lines.chunks(n / 40) {
            produce_raw(&b, &raw, chunk);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let (mut c, crx) = wafstream("worker", &b, &t, &["--group", "g-reb", "--max-inflight", "20"]);
    feeder.join().expect("feeder");
    let got = read_all(&b, &[&t.cloud], n, 120);
    let seen = ids(&got);
    sigterm(&mut a);
    sigterm(&mut c);
    assert_eq!(seen.len(), n, "nothing lost across the rebalance");
    // In-flight outputs are settled and committed before partitions move: nothing repeats.
    assert_eq!(got.len(), n, "outputs repeated across the rebalance");
    let consumed = |rx: &std::sync::mpsc::Receiver<String>| -> u64 {
        let mut last = 0;
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
            if let Some(rest) = l.strip_prefix("wafstream: worker consumed ") {
                eprintln!("{l}");
                last = rest.split(',').next().and_then(|x| x.trim().parse().ok()).unwrap_or(0);
            }
        }
        last
    };
    let (ca, cc) = (consumed(&arx), consumed(&crx));
    assert!(ca > 0 && cc > 0, "both workers consumed: {ca} and {cc}");
}

#[test]
fn worker_sends_documents_to_elasticsearch_and_dead_letters_to_kafka() {
    let Some(bin) = tansu() else { return };
    let Some(es) = support::noida() else { return };
    let b = broker(&bin);
    let t = topics(&b, "es", 2);
    let n = 500;
    let mut lines: Vec<String> = (0..n)
        .map(|i| if i % 2 == 0 { ss_line(i) } else { cloud_line(i) })
        .collect();
    lines.push("not an imperva event".into());
    produce_raw(&b, &t.raw, &lines);
    let (mut w, wrx) = wafstream(
        "worker",
        &b,
        &t,
        &[
            "--group",
            "g-es",
            "--es-url",
            &es.url,
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let client = wafstream::sink::elasticsearch::client(None).expect("client");
    let (ss, cw) = rt.block_on(async {
        (
            support::count(&client, &es.url, "logs-imperva.securesphere-default").await,
            support::count(&client, &es.url, "logs-imperva_cloud_waf.event-default").await,
        )
    });
    assert_eq!((ss, cw), (n as u64 / 2, n as u64 / 2), "{summary:?}");
    // Nothing went to the dataset topics.
    assert!(read_all(&b, &[&t.ss, &t.cloud], 1, 3).is_empty());
}

#[test]
fn a_document_elasticsearch_refuses_is_dead_lettered_with_the_reason() {
    let Some(bin) = tansu() else { return };
    let b = broker(&bin);
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
    produce_raw(&b, &t.raw, &(0..n).map(cloud_line).collect::<Vec<_>>());
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

//! `wafstream run` end to end: real syslog senders (Rust sockets and util-linux `logger`) over
//! TCP (newline and octet counting) and UDP on 127.0.0.1, documents out, SIGTERM drains.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{pki, s_client};

mod support;

struct Running {
    child: Child,
    tcp: String,
    udp: String,
    tls: String,
    metrics: String,
    hec: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

fn start(out: &std::path::Path, extra: &[&str]) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
    cmd.args([
        "run",
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-udp",
        "127.0.0.1:0",
        "--output",
    ])
    .arg(out)
    .args(extra);
    let (child, rx) = support::spawn_with_stderr(cmd);
    let mut want = vec!["tcp", "udp"];
    if extra.contains(&"--listen-tls") {
        want.push("tls");
    }
    if extra.contains(&"--metrics-addr") {
        want.push("metrics");
    }
    if extra.contains(&"--listen-hec") {
        want.push("hec");
    }
    let mut at = support::listening(&rx, &want);
    let mut take = |k: &str| at.remove(k).unwrap_or_default();
    let (tcp, udp, tls, metrics, hec) = (take("tcp"), take("udp"), take("tls"), take("metrics"), take("hec"));
    Running {
        child,
        tcp,
        udp,
        tls,
        metrics,
        hec,
        stderr: rx,
    }
}

fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let docs: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if docs.len() >= n || Instant::now() > deadline {
            return docs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut r: Running) -> String {
    // The shell's own `kill` builtin: no extra package needed.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {}", r.child.id()))
        .status()
        .expect("kill");
    assert!(status.success());
    let code = r.child.wait().expect("wait");
    assert!(code.success(), "exit {code:?}");
    let mut all = String::new();
    while let Ok(l) = r.stderr.recv_timeout(Duration::from_secs(5)) {
        all.push_str(&l);
        all.push('\n');
    }
    all
}

const SS: &str = "CEF:0|Imperva Inc.|SecureSphere|15.1.0|Signature|sig|High|act=block src=198.51.100.4 spt=5 dst=10.0.0.5 dpt=443 cat=Alert";
const CLOUD: &str = "CEF:0|Incapsula|SIEMintegration|1|1|Normal|0| fileId=1 start=1700000000000 end=1700000000001 src=203.0.113.9 cpt=44000 act=REQ_PASSED";

#[test]
fn tcp_udp_and_octet_counting_round_trip_then_sigterm_drains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let r = start(&out, &["--max-message-bytes", "2000"]);

    let mut t = TcpStream::connect(&r.tcp).expect("tcp");
    write!(t, "<14>{SS}\n{CLOUD}\r\nnot an imperva line\n").expect("write");
    t.write_all(format!("{}\n", "x".repeat(3000)).as_bytes())
        .expect("write");
    drop(t);
    let mut o = TcpStream::connect(&r.tcp).expect("tcp");
    let m1 = format!("<14>{SS}");
    let m2 = CLOUD.replace("fileId=1", "fileId=2");
    write!(o, "{} {m1}{} {m2}", m1.len(), m2.len()).expect("write");
    drop(o);
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
    u.send_to(CLOUD.replace("fileId=1", "fileId=3").as_bytes(), &r.udp)
        .expect("send");
    u.send_to(format!("<14>{SS}\n").as_bytes(), &r.udp).expect("send");

    let docs = wait_for_lines(&out, 8);
    let summary = stop(r);
    let docs = if docs.len() < 8 { wait_for_lines(&out, 8) } else { docs };
    assert_eq!(docs.len(), 8, "{docs:#?}\n{summary}");
    let count = |f: &dyn Fn(&Value) -> bool| docs.iter().filter(|d| f(d)).count();
    assert_eq!(count(&|d| d["input"]["type"] == "udp"), 2);
    assert_eq!(count(&|d| d["data_stream"]["dataset"] == "imperva.securesphere"), 3);
    assert_eq!(count(&|d| d["data_stream"]["dataset"] == "imperva_cloud_waf.event"), 3);
    let dead: Vec<&Value> = docs.iter().filter(|d| d["event"]["kind"] == "pipeline_error").collect();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().any(|d| {
        d["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("exceeds max_message_bytes 2000")
    }));
    assert!(docs.iter().all(|d| {
        d["log"]["source"]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    }));
    assert!(summary.contains("6 documents, 2 dead-lettered"), "{summary}");
    assert!(summary.contains("(1 cut at the size limit)"), "{summary}");
}

#[test]
fn metrics_endpoint_counts_documents_dead_letters_and_ingress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let r = start(&out, &["--max-message-bytes", "2000", "--metrics-addr", "127.0.0.1:0"]);
    assert!(!r.metrics.is_empty(), "no metrics address announced");
    let (status, body) = support::http(&r.metrics, "GET", "/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");

    let mut t = TcpStream::connect(&r.tcp).expect("tcp");
    write!(t, "<14>{SS}\n{CLOUD}\n{CLOUD}\nnot an imperva line\n").expect("write");
    t.write_all(format!("{}\n", "x".repeat(3000)).as_bytes())
        .expect("write");
    drop(t);
    let docs = wait_for_lines(&out, 5);
    assert_eq!(docs.len(), 5);

    let (status, scrape) = support::http(&r.metrics, "GET", "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(scrape.contains("# TYPE wafstream_documents_total counter"), "{scrape}");
    let v = |series: &str| support::sample(&scrape, series).unwrap_or_else(|| panic!("{series} missing in\n{scrape}"));
    assert_eq!(v("wafstream_documents_total{dataset=\"imperva.securesphere\"}"), 1.0);
    assert_eq!(v("wafstream_documents_total{dataset=\"imperva_cloud_waf.event\"}"), 2.0);
    assert_eq!(v("wafstream_dead_letters_total"), 2.0);
    assert_eq!(v("wafstream_ingress_frames_total"), 5.0);
    assert_eq!(v("wafstream_ingress_truncated_total"), 1.0);
    assert_eq!(v("wafstream_ingress_connections_total"), 1.0);
    // Every frame's receive → written latency, documents and dead letters alike (observed just
    // after the write, so give the last one a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (_, scrape) = support::http(&r.metrics, "GET", "/metrics");
        if support::sample(&scrape, "wafstream_delivery_latency_seconds_count") == Some(5.0)
            || Instant::now() > deadline
        {
            break scrape;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        scrape.contains("# TYPE wafstream_delivery_latency_seconds histogram"),
        "{scrape}"
    );
    let v = |series: &str| support::sample(&scrape, series).unwrap_or_else(|| panic!("{series} missing in\n{scrape}"));
    assert_eq!(v("wafstream_delivery_latency_seconds_count"), 5.0);
    assert_eq!(v("wafstream_delivery_latency_seconds_bucket{le=\"+Inf\"}"), 5.0);
    // Local writes: well under the 10 s bucket on any machine.
    assert_eq!(v("wafstream_delivery_latency_seconds_bucket{le=\"10\"}"), 5.0);
    // No Kafka or Elasticsearch in this mode: their series are absent, not zero.
    assert!(
        !scrape.contains("wafstream_worker_") && !scrape.contains("wafstream_es_"),
        "{scrape}"
    );

    assert!(support::http(&r.metrics, "GET", "/nope").0.contains("404"));
    assert!(support::http(&r.metrics, "POST", "/metrics").0.contains("405"));
    let summary = stop(r);
    assert!(summary.contains("3 documents, 2 dead-lettered"), "{summary}");
}

#[test]
fn util_linux_logger_over_tcp_octet_counting_and_udp() {
    if Command::new("logger").arg("--help").output().is_err() {
        eprintln!("SKIPPED: util-linux logger not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let r = start(&out, &[]);
    let port = |a: &str| a.rsplit(':').next().unwrap_or("").to_string();
    let send = |args: &[&str], msg: &str| {
        let st = Command::new("logger").args(args).arg(msg).status().expect("logger");
        assert!(st.success(), "logger {args:?}");
    };
    let (tp, up) = (port(&r.tcp), port(&r.udp));
    send(
        &["-n", "127.0.0.1", "-P", &tp, "--tcp", "--octet-count", "--rfc3164"],
        SS,
    );
    send(&["-n", "127.0.0.1", "-P", &tp, "--tcp", "--rfc5424"], CLOUD);
    send(
        &["-n", "127.0.0.1", "-P", &up, "--udp", "--rfc3164"],
        &CLOUD.replace("fileId=1", "fileId=9"),
    );
    let docs = wait_for_lines(&out, 3);
    let summary = stop(r);
    assert_eq!(docs.len(), 3, "{docs:#?}\n{summary}");
    assert!(docs.iter().all(|d| d["event"]["kind"] != "pipeline_error"), "{docs:#?}");
    assert_eq!(docs.iter().filter(|d| d["input"]["type"] == "udp").count(), 1);
}

#[test]
fn tls_with_openssl_s_client_and_client_certificates() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(pki(dir.path()), "openssl could not make the test PKI");
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let out = dir.path().join("out.ndjson");
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
    // Server authentication only.
    let r = start(
        &out,
        &["--listen-tls", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key],
    );
    s_client(dir.path(), &r.tls, &[], &format!("<14>{SS}\n{CLOUD}\n"));
    let docs = wait_for_lines(&out, 2);
    let summary = stop(r);
    assert_eq!(docs.len(), 2, "{summary}");
    assert!(docs.iter().all(|d| d["input"]["type"] == "tls"), "{docs:#?}");

    // Client certificates required: a client without one is refused, one with one is heard.
    let out2 = dir.path().join("out2.ndjson");
    let r = start(
        &out2,
        &[
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    s_client(dir.path(), &r.tls, &[], &format!("<14>{SS}\n"));
    s_client(
        dir.path(),
        &r.tls,
        &["-cert", "client.pem", "-key", "client.key"],
        &format!("{CLOUD}\n"),
    );
    let docs = wait_for_lines(&out2, 1);
    std::thread::sleep(Duration::from_millis(300));
    let summary = stop(r);
    let docs = if docs.is_empty() {
        wait_for_lines(&out2, 1)
    } else {
        docs
    };
    assert_eq!(docs.len(), 1, "{docs:#?}\n{summary}");
    assert_eq!(docs[0]["data_stream"]["dataset"], "imperva_cloud_waf.event");
    assert!(summary.contains("1 TLS handshake failures"), "{summary}");
}

#[test]
fn files_followed_through_appends_rotation_truncation_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("waf.log");
    let cp = dir.path().join("files.json");
    let glob = dir.path().join("waf.log").to_string_lossy().into_owned();
    let cps = cp.to_string_lossy().into_owned();
    let line = |i: usize| format!("<14>{}", SS.replace("sig|", &format!("sig-{i}|")));
    let append = |path: &std::path::Path, from: usize, to: usize| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        for i in from..to {
            writeln!(f, "{}", line(i)).expect("write");
        }
    };
    let names = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .map(|d| d["message"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let args = [
        "--file",
        glob.as_str(),
        "--checkpoint",
        cps.as_str(),
        "--file-poll-ms",
        "50",
    ];

    append(&log, 0, 3);
    let out = dir.path().join("out1.ndjson");
    let r = start(&out, &args);
    assert_eq!(wait_for_lines(&out, 3).len(), 3);
    append(&log, 3, 5);
    assert_eq!(wait_for_lines(&out, 5).len(), 5);
    // Rotation: the last line lands in the renamed file after the rename; a new file starts.
    append(&log, 5, 6);
    let rotated = dir.path().join("waf.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    append(&rotated, 6, 7);
    append(&log, 7, 9);
    let docs = wait_for_lines(&out, 9);
    let summary = stop(r);
    let got = names(&docs);
    assert_eq!(got.len(), 9, "{got:#?}\n{summary}");
    for i in 0..9 {
        assert!(got.contains(&format!("sig-{i}")), "sig-{i} missing: {got:#?}");
    }
    assert!(
        docs.iter()
            .all(|d| d["input"]["type"] == "file" && d["log"]["offset"].is_u64())
    );

    // Restart from the checkpoint: only what is new is read.
    append(&log, 9, 10);
    let out2 = dir.path().join("out2.ndjson");
    let r = start(&out2, &args);
    let docs = wait_for_lines(&out2, 1);
    std::thread::sleep(Duration::from_millis(300));
    let docs = if docs.len() == 1 {
        wait_for_lines(&out2, 1)
    } else {
        docs
    };
    assert_eq!(names(&docs), vec!["sig-9".to_string()]);
    // Truncation: the file starts over and is read from its beginning.
    std::fs::write(&log, format!("{}\n", line(10))).expect("truncate");
    let docs = wait_for_lines(&out2, 2);
    stop(r);
    assert_eq!(names(&docs), vec!["sig-9".to_string(), "sig-10".to_string()]);
}

#[test]
fn run_writes_documents_to_elasticsearch_and_refusals_to_the_output() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    // The in-test server refuses the first distinct document and takes the rest.
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let policy: support::ItemPolicy = std::sync::Arc::new(move |_id: &str, times: usize| {
        if times == 1 && first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            (400, "mapper_parsing_exception")
        } else {
            (201, "")
        }
    });
    let (url, seen) = rt.block_on(support::start(policy, std::sync::Arc::new(|_| None)));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let r = start(&out, &["--es-url", &url, "--es-flush-interval-ms", "20"]);
    let mut t = TcpStream::connect(&r.tcp).expect("tcp");
    for i in 0..5 {
        writeln!(t, "{}", CLOUD.replace("fileId=1", &format!("fileId={i}"))).expect("write");
    }
    writeln!(t, "garbage").expect("write");
    drop(t);
    let lines = wait_for_lines(&out, 2);
    let summary = stop(r);
    let lines = if lines.len() < 2 {
        wait_for_lines(&out, 2)
    } else {
        lines
    };
    // The output holds only the dead letters: the garbage line and the refused document.
    assert_eq!(lines.len(), 2, "{lines:#?}\n{summary}");
    assert!(lines.iter().any(|d| d["event"]["original"] == "garbage"));
    let refused = lines
        .iter()
        .find(|d| {
            d["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("mapper_parsing_exception")
        })
        .unwrap_or_else(|| panic!("no dead letter for the refused document: {lines:#?}"));
    // The refused document is dead-lettered whole: its mapped JSON is the original.
    let original: serde_json::Value =
        serde_json::from_str(refused["event"]["original"].as_str().expect("event.original"))
            .expect("the refused document, as JSON");
    assert_eq!(
        original["data_stream"]["dataset"], "imperva_cloud_waf.event",
        "{refused}"
    );
    assert_eq!(original["source"]["ip"], "203.0.113.9", "{refused}");
    assert_eq!(seen.docs.lock().expect("lock").len(), 5);
    assert!(
        summary.contains("4 written") && summary.contains("1 refused"),
        "{summary}"
    );
}

#[test]
fn run_writes_documents_to_opensearch_data_streams() {
    let Some(os) = support::services::opensearch() else {
        return;
    };
    os.install_wafstream_templates();
    let ns = support::services::unique_namespace();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let r = start(
        &out,
        &["--es-url", &os.url, "--namespace", &ns, "--es-flush-interval-ms", "20"],
    );
    let mut t = TcpStream::connect(&r.tcp).expect("tcp");
    for i in 0..3 {
        writeln!(t, "<14>{}", SS.replace("sig|", &format!("sig-{i}|"))).expect("write");
    }
    for i in 0..4 {
        writeln!(t, "{}", CLOUD.replace("fileId=1", &format!("fileId={i}"))).expect("write");
    }
    writeln!(t, "garbage").expect("write");
    drop(t);
    let dead = wait_for_lines(&out, 1);
    let summary = stop(r);
    assert!(summary.contains("7 written"), "{summary}");
    assert_eq!(dead.len(), 1, "only the garbage line is a dead letter: {dead:?}");
    assert_eq!(os.count(&format!("logs-imperva.securesphere-{ns}")), 3);
    assert_eq!(os.count(&format!("logs-imperva_cloud_waf.event-{ns}")), 4);
    let docs = os.docs(&format!("logs-imperva.securesphere-{ns}"));
    assert!(
        docs.iter().all(|d| d["data_stream"]["namespace"] == ns.as_str()),
        "{docs:?}"
    );
}

#[test]
fn run_installs_templates_at_start_and_writes_to_opensearch() {
    let Some(os) = support::services::opensearch() else {
        return;
    };
    let ns = support::services::unique_namespace();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let r = start(
        &out,
        &[
            "--es-url",
            &os.url,
            "--es-setup",
            "--namespace",
            &ns,
            "--es-flush-interval-ms",
            "20",
        ],
    );
    let mut t = TcpStream::connect(&r.tcp).expect("tcp");
    writeln!(t, "<14>{SS}").expect("write");
    drop(t);
    std::thread::sleep(Duration::from_millis(500));
    let summary = stop(r);
    assert!(summary.contains("1 written"), "{summary}");
    assert_eq!(os.count(&format!("logs-imperva.securesphere-{ns}")), 1);
}

/// HEC into `run` with the search engine as the sink: a 200 once OpenSearch has the documents;
/// JSON events of producers with no mapping land in `logs-imperva.siem-*`, whose template maps
/// their members as one flat object, so two producers' clashing shapes both index.
#[test]
fn hec_events_reach_opensearch_json_ones_in_the_siem_data_stream() {
    let Some(os) = support::services::opensearch() else {
        return;
    };
    let ns = support::services::unique_namespace();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let r = start(
        &out,
        &[
            "--es-url",
            &os.url,
            "--es-setup",
            "--namespace",
            &ns,
            "--es-flush-interval-ms",
            "20",
            "--listen-hec",
            "127.0.0.1:0",
            "--hec-token",
            "imperva=run-hec-token",
        ],
    );
    let body = [
        serde_json::json!({"event": format!("<14>{SS}"), "sourcetype": "imperva:securesphere"}),
        serde_json::json!({"event": {"client": {"ip": "198.51.100.7"}, "score": 12}, "sourcetype": "imperva:abp"}),
        // The same member with another shape (a string where the other had an object).
        serde_json::json!({"event": {"client": "mobile-app", "score": "high"}, "sourcetype": "imperva:ato"}),
    ]
    .iter()
    .map(|e| e.to_string())
    .collect::<String>();
    let (s, b) = support::hec_post(&r.hec, "/services/collector/event", "run-hec-token", &body);
    assert_eq!((s, &b), (200, &serde_json::json!({"text": "Success", "code": 0})));
    // Acknowledged means written: no waiting needed before counting.
    assert_eq!(os.count(&format!("logs-imperva.securesphere-{ns}")), 1);
    let siem = os.docs(&format!("logs-imperva.siem-{ns}"));
    let summary = stop(r);
    assert_eq!(siem.len(), 2, "{summary}");
    let mut providers: Vec<&str> = siem.iter().filter_map(|d| d["event"]["provider"].as_str()).collect();
    providers.sort();
    assert_eq!(providers, ["imperva:abp", "imperva:ato"]);
    let (_, mapping) = os.request("GET", &format!("/logs-imperva.siem-{ns}/_mapping"), None);
    let text = mapping.to_string();
    assert!(text.contains(r#""siem":{"type":"flat_object"}"#), "{text}");
}

/// `--es-setup` as Elasticsearch 8 takes it (noida-db; `flattened` is Elasticsearch's only).
#[test]
fn run_installs_templates_at_start_and_writes_to_a_real_elasticsearch_api() {
    let Some(es) = support::noida() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let r = start(
        &out,
        &["--es-url", &es.url, "--es-setup", "--es-flush-interval-ms", "20"],
    );
    let mut t = TcpStream::connect(&r.tcp).expect("tcp");
    for i in 0..3 {
        writeln!(t, "<14>{}", SS.replace("sig|", &format!("sig-{i}|"))).expect("write");
    }
    drop(t);
    std::thread::sleep(Duration::from_millis(500));
    let summary = stop(r);
    assert!(summary.contains("3 written"), "{summary}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let client = wafstream::sink::elasticsearch::client(None).expect("client");
    let n = rt.block_on(support::count(&client, &es.url, "logs-imperva.securesphere-default"));
    assert_eq!(n, 3);
    // The templates were installed at start.
    let body = rt.block_on(async {
        let r = client
            .get(format!(
                "{}/_index_template/wafstream-logs-imperva.securesphere",
                es.url
            ))
            .send()
            .await
            .expect("get");
        r.bytes().await.expect("body")
    });
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        v["index_templates"][0]["index_template"]["composed_of"][0],
        "wafstream-ecs-mappings"
    );
}

/// Forward every connection accepted on `addr` to `upstream` (started late, to end an outage).
async fn forward(listener: tokio::net::TcpListener, upstream: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}

#[test]
fn run_holds_documents_while_opensearch_is_unreachable_then_delivers_every_one() {
    // The search engine is unreachable for longer than the old retry budget (10 attempts): every
    // document is held, intake goes on, and all arrive once it answers; none is dead-lettered.
    let Some(os) = support::services::opensearch() else {
        return;
    };
    os.install_wafstream_templates();
    let ns = support::services::unique_namespace();
    let port = support::services::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let url = format!("http://127.0.0.1:{port}");
    let r = start(
        &out,
        &[
            "--es-url",
            &url,
            "--namespace",
            &ns,
            "--es-flush-interval-ms",
            "20",
            "--es-backoff-max-ms",
            "100",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let n = 60;
    let mut t = TcpStream::connect(&r.tcp).expect("tcp");
    for i in 0..n {
        writeln!(t, "{}", CLOUD.replace("fileId=1", &format!("fileId={i}"))).expect("write");
    }
    writeln!(t, "garbage").expect("write");
    drop(t);
    // Wait until far more whole-request attempts failed than the old budget allowed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, scrape) = support::http(&r.metrics, "GET", "/metrics");
        let retried = support::sample(&scrape, "wafstream_es_retried_requests_total").unwrap_or(0.0);
        if retried >= 25.0 {
            assert_eq!(
                support::sample(&scrape, "wafstream_es_unavailable"),
                Some(1.0),
                "{scrape}"
            );
            assert_eq!(support::sample(&scrape, "wafstream_es_written_total"), Some(0.0));
            assert_eq!(support::sample(&scrape, "wafstream_es_failed_total"), Some(0.0));
            break;
        }
        assert!(Instant::now() < deadline, "too few retries: {scrape}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The search engine comes back (a forwarder to it opens on the port the run was given).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let upstream = os.url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .expect("bind the forwarder");
    rt.spawn(forward(listener, upstream));
    let scrape = support::scrape_until(&r.metrics, "wafstream_es_written_total", n as f64);
    assert_eq!(
        support::sample(&scrape, "wafstream_es_written_total"),
        Some(n as f64),
        "{scrape}"
    );
    assert_eq!(
        support::sample(&scrape, "wafstream_es_unavailable"),
        Some(0.0),
        "{scrape}"
    );
    assert_eq!(
        support::sample(&scrape, "wafstream_es_outages_total"),
        Some(1.0),
        "{scrape}"
    );
    let summary = stop(r);
    assert_eq!(os.count(&format!("logs-imperva_cloud_waf.event-{ns}")), n as u64);
    // The only dead letter is the garbage line, with its content.
    let dead = wait_for_lines(&out, 1);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["event"]["original"], "garbage");
    assert!(summary.contains("elasticsearch unavailable"), "{summary}");
    assert!(summary.contains("available again"), "{summary}");
    assert!(
        summary.contains(&format!("{n} written")) && summary.contains("0 failed"),
        "{summary}"
    );
}

/// A landing directory as Imperva's SFTP push fills it: files uploaded under a temporary name
/// are not read until renamed into place; a finished file is moved (or deleted) once every line
/// of it is acknowledged; a restart reads only what is new.
#[test]
fn landing_directory_waits_for_the_rename_and_moves_or_deletes_finished_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let landing = dir.path().join("landing");
    let done = dir.path().join("done");
    std::fs::create_dir_all(&landing).expect("mkdir");
    std::fs::create_dir_all(&done).expect("mkdir");
    let out = dir.path().join("out.ndjson");
    let glob = format!("{}/*", landing.display());
    let cp = dir.path().join("cp.json");
    let file = |k: usize, n: usize| {
        support::container(
            support::cloud_lines(n)
                .replace("fileId=", &format!("fileId={k}0"))
                .as_bytes(),
            support::Comp::Zlib,
            None,
            None,
        )
    };
    let args = |action: &'static str| -> Vec<String> {
        let mut a: Vec<String> = ["--file", &glob, "--file-poll-ms", "100", "--file-done", action]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--checkpoint".to_string(), cp.display().to_string()]);
        if action == "move" {
            a.extend(["--file-done-dir".to_string(), done.display().to_string()]);
        }
        a
    };
    let a = args("move");
    let r = start(&out, &a.iter().map(String::as_str).collect::<Vec<_>>());
    // Uploaded slowly under a temporary name, across many polls: nothing is read.
    let one = file(1, 6);
    let part = landing.join("5678_1.log.part");
    for chunk in one.chunks(one.len() / 4 + 1) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .expect("open");
        f.write_all(chunk).expect("write");
        drop(f);
        std::thread::sleep(Duration::from_millis(250));
    }
    // A second upload that never finishes stays untouched.
    let two = file(2, 4);
    std::fs::write(landing.join("5678_2.log.part"), &two[..two.len() / 2]).expect("write");
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        std::fs::read_to_string(&out).unwrap_or_default().is_empty(),
        "read before the rename"
    );
    std::fs::rename(&part, landing.join("5678_1.log")).expect("rename into place");
    let docs = wait_for_lines(&out, 6);
    assert_eq!(docs.len(), 6);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done.join("5678_1.log").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(done.join("5678_1.log").exists(), "moved once acknowledged");
    assert!(!landing.join("5678_1.log").exists());
    assert!(
        landing.join("5678_2.log.part").exists(),
        "the partial upload is left alone"
    );
    stop(r);

    // Restart deleting finished files: only the new file is read, then deleted.
    let a = args("delete");
    let r = start(&out, &a.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(landing.join("5678_3.log"), file(3, 5)).expect("write");
    let docs = wait_for_lines(&out, 11);
    let deadline = Instant::now() + Duration::from_secs(10);
    while landing.join("5678_3.log").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!landing.join("5678_3.log").exists(), "deleted once acknowledged");
    stop(r);
    let docs = if docs.len() < 11 {
        wait_for_lines(&out, 11)
    } else {
        docs
    };
    assert_eq!(docs.len(), 11, "each line once across the restart");
    assert!(docs.iter().all(|d| d["event"]["kind"] != "pipeline_error"), "{docs:?}");
}

/// `--otlp-endpoint`: the metrics and a trace per batch reach an OTLP/HTTP receiver (decoded
/// with the protocol's own types): `wafstream_documents_total` as a cumulative sum with its
/// dataset attribute, and `wafstream.batch` spans whose `wafstream.map` child ends inside them.
#[test]
fn otlp_export_sends_metrics_and_batch_traces() {
    let (url, got) = support::otlp::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let r = start(&out, &["--otlp-endpoint", &url, "--otlp-interval-ms", "200"]);
    let mut t = TcpStream::connect(&r.tcp).expect("tcp");
    for i in 0..5 {
        writeln!(t, "<14>{SS} cs2={i} cs2Label=n").expect("write");
    }
    drop(t);
    assert_eq!(wait_for_lines(&out, 5).len(), 5);
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.last_value("wafstream_documents_total", Some(("dataset", "imperva.securesphere"))) != Some(5) {
        assert!(Instant::now() < deadline, "no metrics export with the 5 documents");
        std::thread::sleep(Duration::from_millis(50));
    }
    {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let m = got.metrics.lock().expect("lock");
        let docs = m
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .find(|x| x.name == "wafstream_documents_total")
            .expect("documents metric");
        match docs.data.as_ref() {
            Some(Data::Sum(s)) => assert!(s.is_monotonic && s.aggregation_temporality == 2),
            other => panic!("a counter is a cumulative monotonic sum: {other:?}"),
        }
    }
    // The delivery latency histogram (observed just after the write, so it may take one more
    // export to count the fifth frame): per-bucket counts, one more than the bounds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let last = {
            let m = got.metrics.lock().expect("lock");
            m.iter()
                .rev()
                .flat_map(|r| &r.resource_metrics)
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .find(|x| x.name == "wafstream_delivery_latency_seconds")
                .cloned()
        };
        let h = match last.and_then(|l| l.data) {
            Some(Data::Histogram(h)) => h,
            other => panic!("the latency histogram is an OTLP histogram: {other:?}"),
        };
        assert_eq!(h.aggregation_temporality, 2);
        let p = &h.data_points[0];
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1, "{p:?}");
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count, "{p:?}");
        assert!(p.explicit_bounds.windows(2).all(|w| w[0] < w[1]), "{p:?}");
        if p.count == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "latency histogram counts {} of 5 frames",
            p.count
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = got.spans();
        let frames = support::otlp::frames_in(&spans, "wafstream-run");
        if frames == 5 {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "batch spans cover {frames} of 5 frames: {spans:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    stop(r);
    for (service, b) in spans.iter().filter(|(_, s)| s.name == "wafstream.batch") {
        assert_eq!(service, "wafstream-run");
        assert_eq!(b.trace_id.len(), 16);
        assert!(b.end_time_unix_nano >= b.start_time_unix_nano);
        let map = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == "wafstream.map" && s.parent_span_id == b.span_id)
            .expect("a map child for every batch");
        assert_eq!(map.trace_id, b.trace_id);
        assert!(map.start_time_unix_nano >= b.start_time_unix_nano && map.end_time_unix_nano <= b.end_time_unix_nano);
    }
}
